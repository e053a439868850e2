"""``eostats import-cache``: an odc-stats cache (LMDB + zstd, written here with odc-dscache itself) → SQLite cache.

The odc-stats cache is made the way odc-stats' save-tasks makes it: the datasets are persisted with
``DatasetCache.bulk_save``, assigned to tiles with odc-dscache's ``bin_dataset_stream`` (its solar offset), binned
into annual tasks here by hand, stored as ``<grid>/<period>/<x>/<y>`` groups, with the save-tasks config under
``stats/config``. The import must give exactly those tasks and the same eo3 documents.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from datacube.index.abstract import default_metadata_type_docs
from datacube.index.eo3 import prep_eo3
from datacube.model import Dataset, Product, metadata_from_doc
from odc.dscache import create_cache
from odc.dscache.tools import bin_dataset_stream
from odc.geo import resyx_, xy_
from odc.geo.gridspec import GridSpec

from eostats.cache import DatasetCache
from eostats.cli import main
from eostats.dscache_import import DscacheImportError, import_dscache
from eostats.eo3 import eo3_from_stac_items
from eostats.sources import read_items
from eostats.taskids import TaskId

GRID_NAME = "au_small"


def _gridspec() -> GridSpec:
    # the default run's grid: 512 px tiles of 30 m on odc-stats' au_30 origin
    return GridSpec(
        crs="EPSG:3577",
        tile_shape=(512, 512),
        resolution=resyx_(-30, 30),
        origin=xy_(-2688000, -5472000),
    )


def _datasets(sample_catalog: Path) -> list[Dataset]:
    products, docs = eo3_from_stac_items(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)})
    )
    eo3_type = metadata_from_doc(
        next(d for d in default_metadata_type_docs() if d["name"] == "eo3")
    )
    by_name = {name: Product(eo3_type, definition) for name, definition in products.items()}
    # prep_eo3 adds the derived extent fields, as the index does before odc-stats caches a document
    return [
        Dataset(
            by_name[d["product"]["name"]],
            prep_eo3(d),
            uri=f"file:///data/{d['label']}.odc-metadata.yaml",
        )
        for d in docs
    ]


def _make_odc_stats_cache(
    path: Path, datasets: list[Dataset], with_config: bool = True
) -> dict[TaskId, set[str]]:
    """An odc-stats cache of ``datasets``; returns its task groups as the reference."""
    gridspec = _gridspec()
    cache = create_cache(str(path), complevel=6, truncate=True)
    cache.bulk_save(datasets)
    cache.add_grid(gridspec, GRID_NAME)
    cells: dict = {}
    for _ in bin_dataset_stream(
        gridspec, datasets, cells, persist=lambda ds: (ds.id, ds.center_time)
    ):
        pass
    tasks: dict[tuple[str, int, int], list] = defaultdict(list)
    for (x, y), cell in cells.items():
        for dataset_id, t in cell.dss:
            local = t.replace(tzinfo=None) + cell.utc_offset
            tasks[(f"{local.year}--P1Y", x, y)].append(dataset_id)
    cache.add_grid_tiles(GRID_NAME, dict(tasks))
    if with_config:
        cache.append_info_dict(
            "stats/", {"config": {"grid": GRID_NAME, "freq": "annual", "temporal_range": None}}
        )
    cache.close()
    return {TaskId(p, x, y): {str(u) for u in uuids} for (p, x, y), uuids in tasks.items()}


@pytest.fixture(scope="module")
def sample_datasets(sample_catalog: Path) -> list[Dataset]:
    return _datasets(sample_catalog)


def test_import_gives_the_same_tasks_and_documents(
    tmp_path: Path, sample_datasets: list[Dataset]
) -> None:
    lmdb = tmp_path / "ls_2020--P1Y.db"
    expected = _make_odc_stats_cache(lmdb, sample_datasets)
    assert len(expected) >= 4  # the sample crosses tile edges and spans two years

    report = import_dscache(lmdb, tmp_path / "imported.sqlite", strict=True)

    assert report.differences == {}
    with DatasetCache.open(tmp_path / "imported.sqlite") as cache:
        assert {t: set(cache.dataset_ids(t)) for t in cache.task_ids()} == expected
        assert cache.grid.crs.epsg == 3577
        assert cache.grid.tile_size_xy == (512 * 30.0, 512 * 30.0)
        assert cache.grid.origin_xy == (-2688000.0, -5472000.0)
        assert cache.settings["solar_offset_rule"] == "odc-stats"
        assert set(cache.settings["odc_products"]) == {"sample_ls_ard_3"}
        originals = {str(ds.id): ds for ds in sample_datasets}
        task = cache.task_ids()[0]
        for item in cache.datasets(task):
            embedded = item["odc:eo3"]
            original = originals[item["id"]]
            assert embedded["product"] == "sample_ls_ard_3"
            assert json.loads(json.dumps(embedded["metadata"])) == json.loads(
                json.dumps(original.metadata_doc, default=str)
            )
            assert embedded["uris"] == [original.uri]
            # the STAC side reads the same files
            assert item["properties"]["title"] == original.metadata_doc["label"]
            band, spec = next(iter(original.metadata_doc["measurements"].items()))
            assert item["assets"][band]["href"].endswith(spec["path"])


def test_cache_without_config_is_binned_from_its_task_names(
    tmp_path: Path, sample_datasets
) -> None:
    lmdb = tmp_path / "noconfig.db"
    expected = _make_odc_stats_cache(lmdb, sample_datasets, with_config=False)
    report = import_dscache(lmdb, tmp_path / "out.sqlite")
    assert report.binning == {"frequency": "annual", "temporal_range": None, "years": [2020, 2021]}
    assert report.n_tasks == len(expected) and report.differences == {}


def test_differences_are_reported_and_strict_refuses(tmp_path: Path, sample_datasets) -> None:
    lmdb = tmp_path / "edited.db"
    expected = _make_odc_stats_cache(lmdb, sample_datasets)
    # move one dataset into a task odc-stats would not give it
    task = sorted(expected)[0]
    moved = sorted(expected[task])[0]
    cache = create_cache(str(lmdb))
    cache.add_grid_tile(GRID_NAME, (task.period, task.x + 7, task.y), [uuid.UUID(moved)])
    cache.close()

    report = import_dscache(lmdb, tmp_path / "lax.sqlite")
    assert set(report.differences) == {f"{task.period}/{task.x + 7}/{task.y}"}
    assert report.differences[f"{task.period}/{task.x + 7}/{task.y}"] == ([moved], [])
    with pytest.raises(DscacheImportError, match="1 task"):
        import_dscache(lmdb, tmp_path / "strict.sqlite", strict=True)
    assert not (tmp_path / "strict.sqlite").exists()


def test_cli_import_cache_writes_cache_and_task_lists(tmp_path: Path, sample_datasets) -> None:
    lmdb = tmp_path / "run_2021--P1Y.db"
    expected = _make_odc_stats_cache(lmdb, sample_datasets)
    result = CliRunner().invoke(main, ["import-cache", str(lmdb)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run_2021--P1Y.sqlite"
    assert out.is_file() and "the same tasks as" in result.output
    csv_rows = (tmp_path / "run_2021--P1Y.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(expected)
    assert {p.name for p in tmp_path.glob("run_2021--P1Y-*.geojson")} == {
        f"run_2021--P1Y-{p}.geojson" for p in {t.period for t in expected}
    }
    again = CliRunner().invoke(main, ["import-cache", str(lmdb)])
    assert again.exit_code == 1 and "exists (use --overwrite" in again.output


def test_missing_or_foreign_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["import-cache", str(tmp_path / "nope.db")])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "text.db").write_text("not lmdb")
    result = CliRunner().invoke(main, ["import-cache", str(tmp_path / "text.db")])
    assert result.exit_code == 1 and "is not an odc-stats" in result.output

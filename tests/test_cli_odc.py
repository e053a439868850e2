"""odc-stats' commands beyond ``run``: ``save-tasks`` against a real datacube index (names as odc-stats derives
them, errors and exit codes, dry-run plans of the cache it writes, in every task-id form), ``generate-cache`` and
``generate-mosaic`` on real tile outputs, ``locate-grids``, and ``run``'s odc-stats options
(``--apply_eodatasets3``, ``--dataset-filters``, ``--memory-limit``)."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import yaml
from click.testing import CliRunner
from postgres import DatacubeIndex, add_to_index, new_index, postgres_server  # noqa: F401  (fixture)
from pyproj import Transformer

from eostats.cache import DatasetCache, build_cache
from eostats.cli import main, parse_memory_limit
from eostats.cli_odc import odc_stats_short, save_tasks_base
from eostats.eo3 import eo3_from_stac_items
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.sources import read_items
from eostats.tasklists import write_period_geojson

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
TILE_M = 512 * 30.0
ORIGIN = (-2688000.0, -5472000.0)


# --------------------------------------------------------------------------------------------
# naming


@pytest.mark.parametrize(
    ("products", "period", "expected"),
    [
        ("ga_ls8c_ard_3-ga_ls9c_ard_3", "2020--P1Y", "ga_ls8c_ard_3-ga_ls9c_ard_3_2020--P1Y"),
        ("ga_ls_fc_3+ga_ls_wo_3", "2020-05--P1M", "ga_ls_fc_3+ga_ls_wo_3_2020-05--P1M"),
        (
            "a",
            "2020-07--P1Y",
            "a_2020-07-01--P1Y",
        ),  # quirk Q2: the financial year spells its start day
        ("a", "2013-03-21--P10D", "a_2013-03-21--P10D"),
        ("a", "2019--P5Y", "a_2019--P5Y"),
        ("a", None, "a_all"),
    ],
)
def test_save_tasks_output_names_follow_odc_stats(products, period, expected):
    assert save_tasks_base(products, period) == expected


def test_short_period_forms():
    assert odc_stats_short("2020-01--P3M") == "2020-01--P3M"
    assert odc_stats_short("2020-12--P3M") == "2020-12--P3M"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60Gi", 60 * 2**30),
        ("4GB", 4 * 10**9),
        ("2000MB", 2 * 10**9),
        ("1.5G", 1_500_000_000),
        (None, 0),
        ("512", 512),
    ],
)
def test_memory_limit_sizes(text, expected):
    assert parse_memory_limit(text) == expected
    with pytest.raises(ValueError, match="not a size"):
        parse_memory_limit("lots")


# --------------------------------------------------------------------------------------------
# save-tasks against an index


@pytest.fixture(scope="module")
def sample_index(postgres_server, sample_catalog: Path) -> DatacubeIndex:  # noqa: F811
    index = new_index(postgres_server)
    products, documents = eo3_from_stac_items(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)})
    )
    add_to_index(index, products, documents, uri=sample_catalog.parent.as_uri() + "/")
    return index


def _invoke(index: DatacubeIndex, args: list[str]):
    return CliRunner().invoke(main, args, env=index.env, catch_exceptions=False)


def _reference_tasks(
    catalog: Path, year: int | None
) -> dict[tuple[str, int, int], tuple[int, int]]:
    """{(period, x, y): (UTC days, datasets)} of the sample on the test grid, worked out with pyproj and shapely:
    tiles whose interior meets the footprint, annual bins of local solar time (+10 h near Canberra)."""
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
    members: dict[tuple[str, int, int], list[datetime]] = {}
    for line in (catalog.parent / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        xs, ys = to_albers.transform(*zip(*item["geometry"]["coordinates"][0], strict=True))
        footprint = shapely.Polygon(zip(xs, ys, strict=True))
        t = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", ""))
        local_year = (t + timedelta(hours=10)).year
        if year is not None and local_year != year:
            continue
        minx, miny, maxx, maxy = footprint.bounds
        for ix in range(
            math.floor((minx - ORIGIN[0]) / TILE_M), math.floor((maxx - ORIGIN[0]) / TILE_M) + 1
        ):
            for iy in range(
                math.floor((miny - ORIGIN[1]) / TILE_M), math.floor((maxy - ORIGIN[1]) / TILE_M) + 1
            ):
                x0, y0 = ORIGIN[0] + ix * TILE_M, ORIGIN[1] + iy * TILE_M
                tile = shapely.box(x0, y0, x0 + TILE_M, y0 + TILE_M)
                if footprint.intersects(tile) and not footprint.touches(tile):
                    members.setdefault((f"{local_year}--P1Y", ix, iy), []).append(t)
    return {k: (len({t.date() for t in v}), len(v)) for k, v in members.items()}


@pytest.mark.xdist_group("postgres")
def test_save_tasks_writes_odc_stats_files_and_refuses_to_overwrite(
    sample_index, sample_catalog, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "odc-stats.yaml"  # an odc-stats save-tasks YAML: its keys, nothing else
    config.write_text(
        yaml.safe_dump({"grid": GRID, "frequency": "annual", "input_products": "sample_ls_ard_3"})
    )
    result = _invoke(sample_index, ["save-tasks", "--config", str(config), "--year", "2021"])
    assert result.exit_code == 0, result.output
    base = "sample_ls_ard_3_2021--P1Y"
    assert (tmp_path / f"{base}.db").is_file()
    assert (tmp_path / f"{base}-2021--P1Y.geojson").is_file()
    expected = _reference_tasks(sample_catalog, 2021)
    rows = list(csv.reader((tmp_path / f"{base}.csv").open(), skipinitialspace=True))
    assert rows[0] == ["T", "X", "Y", "datasets", "days"]
    assert {(r[0], int(r[1]), int(r[2])): (int(r[4]), int(r[3])) for r in rows[1:]} == expected

    again = _invoke(sample_index, ["save-tasks", "--config", str(config), "--year", "2021"])
    assert again.exit_code == 1 and f"{base}.db exists (use --overwrite" in again.output
    replaced = _invoke(
        sample_index, ["save-tasks", "--config", str(config), "--year", "2021", "--overwrite"]
    )
    assert replaced.exit_code == 0, replaced.output

    # no time range: every year, "_all"; an explicit OUTPUT names all three files
    everything = _invoke(sample_index, ["save-tasks", "--config", str(config)])
    assert everything.exit_code == 0, everything.output
    with DatasetCache.open(tmp_path / "sample_ls_ard_3_all.db") as cache:
        assert {(t.period, t.x, t.y) for t in cache.task_ids()} == set(
            _reference_tasks(sample_catalog, None)
        )
    # the config's annual frequency within a financial-year range: calendar-year tasks of that range
    named = _invoke(
        sample_index,
        ["save-tasks", "mine.db", "--config", str(config), "--temporal-range", "2020-07--P1Y"],
    )
    assert named.exit_code == 0, named.output
    assert {p.name for p in tmp_path.glob("mine*")} == {
        "mine.db",
        "mine.csv",
        "mine-2020--P1Y.geojson",
        "mine-2021--P1Y.geojson",
    }
    fy = _invoke(
        sample_index, ["save-tasks", "--config", str(config), "--temporal-range", "2020-07--P1Y"]
    )
    assert fy.exit_code == 0 and (tmp_path / "sample_ls_ard_3_2020-07-01--P1Y.db").is_file()


@pytest.mark.xdist_group("postgres")
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--year", "2019"], 0, "found no datasets"),
        (
            ["--year", "2020", "--temporal-range", "2020--P1Y"],
            1,
            "give --year or --temporal-range, not both",
        ),
        (["--input-products", "nope", "--year", "2020"], 2, "'nope' is not in the datacube index"),
        (["--frequency", "weekly"], 1, "unknown frequency 'weekly'"),
        (["--dataset-filter", "[1, 2]"], 2, "is not a JSON object"),
    ],
)
def test_save_tasks_errors(sample_index, tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    base = ["save-tasks", "--grid", "au_30", "--input-products", "sample_ls_ard_3"]
    result = _invoke(sample_index, base + args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.xdist_group("postgres")
def test_dry_run_of_a_save_tasks_cache_in_every_task_id_form(
    sample_index, sample_catalog, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = _invoke(
        sample_index,
        [
            "save-tasks",
            "--grid",
            "epsg:3577;30;512",
            "--input-products",
            "sample_ls_ard_3",
            "--year",
            "2021",
        ],
    )
    assert result.exit_code == 0, result.output
    db = "sample_ls_ard_3_2021--P1Y.db"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "plugin": "pq",
                "product": {"name": "pqx", "version": "1.0.0"},
                "output_location": "out/{product}/{version}",
            }
        )
    )
    with DatasetCache.open(db) as cache:
        tasks = cache.task_ids()
        records = {t: cache.task(t) for t in tasks}
    # 'epsg:3577;30;512' has its origin at (0, 0): the sample's tiles are those containing it there
    assert all(t.period == "2021--P1Y" for t in tasks) and len(tasks) >= 2

    def line(task, flag=" (new)"):
        r = records[task]
        stac = f"out/pqx/1-0-0/x{task.x:02d}/y{task.y:02d}/2021--P1Y/pqx_x{task.x:02d}y{task.y:02d}_2021--P1Y_final.stac-item.json"
        return (
            f"{task.x}/{task.y}/2021--P1Y days={r.n_days_utc:03} ds={r.n_datasets:04} {stac}{flag}"
        )

    first, last = tasks[0], tasks[-1]
    forms = {
        f"2021--P1Y/{first.x}/{first.y}": [first],
        f"2021--P1Y,{first.x:+04d},{first.y:+04d}": [first],
        f"x{first.x:+04d}/y{first.y:+04d}/2021--P1Y": [first],
        "0": [first],
        "-1:": [last],
        "::-1": list(reversed(tasks)),
    }
    for selector, chosen in forms.items():
        result = _invoke(sample_index, ["run", db, selector, "--config", str(config), "--dryrun"])
        assert result.exit_code == 0, (selector, result.output)
        assert result.output.splitlines() == [line(t) for t in chosen], selector

    stac = Path(line(first).split(" ")[3])
    stac.parent.mkdir(parents=True)
    stac.write_text("{}")
    result = _invoke(sample_index, ["run", db, "0", "1", "--config", str(config), "--dryrun"])
    assert result.output.splitlines() == [line(first, " (skip)"), line(tasks[1])]
    result = _invoke(
        sample_index, ["run", db, "0", "--config", str(config), "--dryrun", "--overwrite"]
    )
    assert result.output.splitlines() == [line(first, " (recompute)")]
    # the days and datasets shown are the sample's own, worked out independently (the grid origin is (0, 0))
    shifted = _reference_tasks_on_origin0(sample_catalog)
    assert {(t.x, t.y): (records[t].n_days_utc, records[t].n_datasets) for t in tasks} == shifted


def _reference_tasks_on_origin0(catalog: Path) -> dict[tuple[int, int], tuple[int, int]]:
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
    members: dict[tuple[int, int], list[datetime]] = {}
    for line in (catalog.parent / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        t = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", ""))
        if (t + timedelta(hours=10)).year != 2021:
            continue
        xs, ys = to_albers.transform(*zip(*item["geometry"]["coordinates"][0], strict=True))
        footprint = shapely.Polygon(zip(xs, ys, strict=True))
        minx, miny, maxx, maxy = footprint.bounds
        for ix in range(math.floor(minx / TILE_M), math.floor(maxx / TILE_M) + 1):
            for iy in range(math.floor(miny / TILE_M), math.floor(maxy / TILE_M) + 1):
                tile = shapely.box(ix * TILE_M, iy * TILE_M, (ix + 1) * TILE_M, (iy + 1) * TILE_M)
                if footprint.intersects(tile) and not footprint.touches(tile):
                    members.setdefault((ix, iy), []).append(t)
    return {k: (len({t.date() for t in v}), len(v)) for k, v in members.items()}


# --------------------------------------------------------------------------------------------
# tile outputs as inputs: generate-cache, generate-mosaic; run's odc-stats options


@pytest.fixture(scope="module")
def pq_outputs(sample_catalog: Path, tmp_path_factory) -> Path:
    """Two real pq tiles (2021, x275 y97 and y98) run through `eostats run` with odc-stats' options."""
    root = tmp_path_factory.mktemp("pq_outputs")
    cache = root / "stac.sqlite"
    build_cache(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)}),
        parse_grid(GRID),
        make_binning("annual", years=(2021,)),
        cache,
        {"type": "stac_catalog"},
        {},
    )
    config = root / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "grid": GRID,
                "plugin": "pq",
                "product": {"name": "pq_test", "version": "1.0.0"},
                "output_location": str(root / "out/{product}/{version}"),
                "cog_opts": {"compress": "deflate", "level": 1, "blocksize": 256},
                "chunk_size": 512,
            }
        )
    )
    args = ["run", str(cache), "2021--P1Y/275/97", "2021--P1Y/275/98", "--config", str(config)]
    args += [
        "--apply_eodatasets3",
        "--memory-limit",
        "8Gi",
        "--dataset-filters",
        '{"platform": "landsat-8"}|{"platform": "landsat-9"}',
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def test_run_writes_eo3_documents_and_applies_dataset_filters(
    pq_outputs: Path, sample_catalog: Path
):
    tile_dir = pq_outputs / "out/pq_test/1-0-0/x275/y97/2021--P1Y"
    names = sorted(p.name for p in tile_dir.iterdir())
    prefix = "pq_test_x275y97_2021--P1Y_final"
    assert f"{prefix}.odc-metadata.yaml" in names and f"{prefix}.proc-info.yaml" in names
    stac = json.loads((tile_dir / f"{prefix}.stac-item.json").read_text())
    doc = yaml.safe_load((tile_dir / f"{prefix}.odc-metadata.yaml").read_text())
    assert doc["id"] == stac["id"] and doc["properties"]["odc:region_code"] == "x275y97"
    # the filter keeps only Landsat 8/9 scenes: the sample's platforms of that task
    platforms = {
        json.loads(line)["properties"]["platform"]
        for line in (sample_catalog.parent / "items.ndjson").read_text().splitlines()
    }
    kept = stac["properties"]["odc:lineage"]["inputs"]
    assert kept and platforms <= {"landsat-8", "landsat-9"}


def test_dataset_filters_drop_datasets_at_run_time(pq_outputs: Path, tmp_path: Path):
    config = yaml.safe_load((pq_outputs / "run.yaml").read_text())
    config["output_location"] = str(tmp_path / "out")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    args = [
        "run",
        str(pq_outputs / "stac.sqlite"),
        "2021--P1Y/275/97",
        "--config",
        str(tmp_path / "run.yaml"),
    ]
    result = CliRunner().invoke(main, [*args, "--dataset-filters", '{"platform": "sentinel-2a"}'])
    assert (
        result.exit_code == 1
    )  # nothing left to compute: the task fails, as a task without datasets does
    assert not list(tmp_path.rglob("*.stac-item.json"))


def test_generate_cache_from_output_items_recovers_grid_and_tiles(pq_outputs: Path, tmp_path: Path):
    pattern = str(pq_outputs / "out/**/*.stac-item.json")
    result = CliRunner().invoke(
        main, ["generate-cache", pattern, str(tmp_path / "caches")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    db = tmp_path / "caches/pq_test.db"
    with DatasetCache.open(db) as cache:
        assert [(t.period, t.x, t.y) for t in cache.task_ids()] == [
            ("2021--P1Y", 275, 97),
            ("2021--P1Y", 275, 98),
        ]
        assert cache.grid.origin_xy == ORIGIN and cache.grid.tile_size_xy == (TILE_M, TILE_M)
        item = cache.datasets(cache.task_ids()[0])[0]
        assert Path(item["assets"]["clear"]["href"]).is_file()  # hrefs made absolute
    assert (tmp_path / "caches/pq_test.csv").is_file()


def test_generate_mosaic_of_output_items(pq_outputs: Path, tmp_path: Path):
    out = tmp_path / "mosaic.tif"
    pattern = str(pq_outputs / "out/**/*.stac-item.json")
    result = CliRunner().invoke(
        main,
        ["generate-mosaic", pattern, str(out), "--bands", "total,clear"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.count == 2 and src.res == (120.0, 120.0)
        # two tiles stacked north-south: 15360 m / 120 m = 128 pixels each
        assert (src.width, src.height) == (128, 256)
        x_left = ORIGIN[0] + 275 * TILE_M
        assert src.bounds.left == x_left and src.bounds.top == ORIGIN[1] + 99 * TILE_M
        mosaic_total = src.read(1)
    tile = (
        pq_outputs
        / "out/pq_test/1-0-0/x275/y98/2021--P1Y/pq_test_x275y98_2021--P1Y_final_total.tif"
    )
    with rasterio.open(tile) as src:
        full = src.read(1).astype(float)
    blocks = full.reshape(128, 4, 128, 4)
    valid = blocks.min(axis=(1, 3)) > 0  # blocks without nodata (0): a plain mean
    assert valid.sum() > 500
    difference = mosaic_total[:128].astype(float) - blocks.mean(
        axis=(1, 3)
    )  # y98 is the northern tile
    assert np.abs(difference[valid]).max() <= 1.0


def test_locate_grids_lists_tiles_meeting_the_extent(tmp_path: Path, sample_catalog: Path):
    cache_path = tmp_path / "c.sqlite"
    build_cache(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)}),
        parse_grid(GRID),
        make_binning("annual", years=(2021,)),
        cache_path,
        {"type": "stac_catalog"},
        {},
    )
    with DatasetCache.open(cache_path) as cache:
        write_period_geojson(cache, "2021--P1Y", tmp_path / "tiles.geojson")
    to_lonlat = Transformer.from_crs("EPSG:3577", "EPSG:4326", always_xy=True)

    def centre(ix, iy):
        return to_lonlat.transform(ORIGIN[0] + (ix + 0.5) * TILE_M, ORIGIN[1] + (iy + 0.5) * TILE_M)

    def square(lon, lat, d=0.01):
        return {
            "type": "Polygon",
            "coordinates": [
                [
                    [lon - d, lat - d],
                    [lon + d, lat - d],
                    [lon + d, lat + d],
                    [lon - d, lat + d],
                    [lon - d, lat - d],
                ]
            ],
        }

    extent = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"FEAT_CODE": "land"},
                "geometry": square(*centre(275, 97)),
            },
            {
                "type": "Feature",
                "properties": {"FEAT_CODE": "sea"},
                "geometry": square(*centre(276, 98)),
            },
        ],
    }
    (tmp_path / "extent.geojson").write_text(json.dumps(extent))
    out = tmp_path / "grids.csv"
    args = [
        "locate-grids",
        str(tmp_path / "tiles.geojson"),
        str(tmp_path / "extent.geojson"),
        str(out),
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == ["275,97", "276,98"]
    result = CliRunner().invoke(
        main, [*args, "--attr-filter", "FEAT_CODE != 'sea'"], catch_exceptions=False
    )
    assert out.read_text().splitlines() == ["275,97"]


def test_memory_limit_stops_a_task_that_exceeds_it(pq_outputs: Path, tmp_path: Path):
    config = yaml.safe_load((pq_outputs / "run.yaml").read_text())
    config["output_location"] = str(tmp_path / "out")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    args = [
        "run",
        str(pq_outputs / "stac.sqlite"),
        "2021--P1Y/275/97",
        "--config",
        str(tmp_path / "run.yaml"),
    ]
    result = CliRunner().invoke(
        main, [*args, "--memory-limit", "1MB"]
    )  # a Python process alone is larger
    assert result.exit_code == 1
    assert "memory_limit 1 MiB" in result.output and "E:1" in result.output
    assert not list(tmp_path.rglob("*.stac-item.json"))
    bad = CliRunner().invoke(main, [*args, "--memory-limit", "lots"])
    assert bad.exit_code == 1 and "memory limit 'lots' is not a size" in bad.output


def test_output_product_definition_of_a_run(tmp_path: Path):
    config = {"plugin": "pq", "product": {"name": "pq_out", "version": "2.0.0"}}
    result = CliRunner().invoke(
        main, ["output-product", "--config", json.dumps(config)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    assert doc["name"] == "pq_out" and doc["metadata_type"] == "eo3"
    # the pq plugin's bands: total, clear and one clear_<filter> per cloud filter chain, uint16 with nodata 0
    names = [m["name"] for m in doc["measurements"]]
    assert names[:2] == ["total", "clear"] and all(n.startswith("clear_") for n in names[2:])
    assert {(m["dtype"], m["nodata"]) for m in doc["measurements"]} == {("uint16", 0)}

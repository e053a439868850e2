"""The datacube index as a source, against a real PostgreSQL (tests/postgres.py).

* The sample collection, indexed from eo3 documents made of its STAC items, gives a cache with exactly the task
  membership of the cache built from the STAC catalog itself.
* Scenes made for it — FC-like (pv, bs), WO-like (water) and DEM-like (elevation) products with matching and
  non-matching times and region codes — give the expected fused groups, unions, ignore-time joins and optional
  products; gqa, dataset_filter, tile ranges and odc-stats' 0.6-day search padding select the expected datasets.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from postgres import DatacubeIndex, add_to_index, new_index, postgres_server  # noqa: F401  (fixture)

from eostats.cache import DatasetCache, build_cache
from eostats.eo3 import eo3_from_stac_items
from eostats.grids import parse_grid
from eostats.odc_index import (
    DatacubeSource,
    DatacubeSourceError,
    SearchSummary,
    build_datacube_cache,
    connect,
    find_records,
)
from eostats.periods import make_binning
from eostats.sources import read_items

pytestmark = pytest.mark.xdist_group("postgres")

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
ODC_NS = uuid.UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af")
MADE_FOR_IT = uuid.UUID("0b8d2c8e-8f63-4d5e-9d51-6a0c1c1f0e11")
LOCATION = "file:///data/scenes/"

A, B = "090084", "091084"
T1, T2, T3, T4 = (
    "2021-03-01T00:10:00Z",
    "2021-04-02T00:10:00Z",
    "2021-05-04T00:10:00Z",
    "2021-06-05T00:10:00Z",
)
T3_LATE = "2021-05-04T00:10:01Z"  # one second after T3: not the same observation
JUST_BEFORE_2021 = "2020-12-31T20:00:00Z"  # 4 h before 2021: inside odc-stats' 0.6-day padding
WELL_BEFORE_2021 = "2020-12-30T12:00:00Z"  # 36 h before: outside it
DEM_TIME = "2000-01-01T00:00:00Z"


def _product(name: str, bands: list[str]) -> dict:
    return {
        "name": name,
        "description": f"{name}: made for the fusing tests",
        "metadata_type": "eo3",
        "metadata": {"product": {"name": name}},
        "measurements": [{"name": b, "dtype": "uint8", "nodata": 255, "units": "1"} for b in bands],
    }


def _scene(
    product: str,
    bands: list[str],
    when: str,
    region: str,
    gqa: float | None = None,
    x0: float = 690000,
) -> dict:
    label = f"{product}_{region}_{when[:19].replace(':', '')}"
    y1 = 6093000.0
    props = {
        "datetime": when,
        "odc:region_code": region,
        "odc:file_format": "GeoTIFF",
        "eo:platform": "landsat-8",
    }
    if gqa is not None:
        props["gqa:iterative_mean_xy"] = gqa
    return {
        "$schema": "https://schemas.opendatacube.org/dataset",
        "id": str(uuid.uuid5(MADE_FOR_IT, label)),
        "label": label,
        "product": {"name": product},
        "crs": "EPSG:32755",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [x0, y1 - 3000],
                    [x0, y1],
                    [x0 + 3000, y1],
                    [x0 + 3000, y1 - 3000],
                    [x0, y1 - 3000],
                ]
            ],
        },
        "grids": {
            "default": {
                "shape": [100, 100],
                "transform": [30.0, 0.0, x0, 0.0, -30.0, y1, 0.0, 0.0, 1.0],
            }
        },
        "properties": props,
        "measurements": {b: {"path": f"{label}_{b}.tif"} for b in bands},
        "lineage": {},
    }


FC, WO, DEM = ["pv", "bs"], ["water"], ["elevation"]
SCENES = {
    "fc_T1_A": _scene("fc", FC, T1, A, gqa=0.5),
    "wo_T1_A": _scene("wo", WO, T1, A),
    "fc_T2_A": _scene("fc", FC, T2, A, gqa=2.0),
    "wo_T2_B": _scene("wo", WO, T2, B),
    "fc_T3_A": _scene("fc", FC, T3, A),
    "wo_T3late_A": _scene("wo", WO, T3_LATE, A),
    "wo_T4_A": _scene("wo", WO, T4, A),
    "fc_before_A": _scene("fc", FC, JUST_BEFORE_2021, A),
    "fc_wellbefore_A": _scene("fc", FC, WELL_BEFORE_2021, A),
    "dem_A": _scene("dem", DEM, DEM_TIME, A),
    "dem_B": _scene("dem", DEM, DEM_TIME, B),
}
ID = {key: doc["id"] for key, doc in SCENES.items()}


@pytest.fixture(scope="module")
def scenes_index(postgres_server) -> DatacubeIndex:  # noqa: F811
    index = new_index(postgres_server)
    products = {"fc": _product("fc", FC), "wo": _product("wo", WO), "dem": _product("dem", DEM)}
    add_to_index(index, products, list(SCENES.values()), uri=LOCATION)
    return index


@pytest.fixture(scope="module")
def sample_index(postgres_server, sample_catalog: Path) -> DatacubeIndex:  # noqa: F811
    index = new_index(postgres_server)
    products, documents = eo3_from_stac_items(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)})
    )
    add_to_index(index, products, documents, uri=sample_catalog.parent.as_uri() + "/")
    return index


def _search(
    index: DatacubeIndex, monkeypatch, binning=None, tiles=None, **source
) -> tuple[list, SearchSummary]:
    for key, value in index.env.items():
        monkeypatch.setenv(key, value)
    parsed = DatacubeSource.from_mapping({"type": "datacube", **source})
    summary = SearchSummary()
    dc = connect(parsed)
    try:
        records = list(
            find_records(
                dc, parsed, binning=binning, grid=parse_grid(GRID), tiles=tiles, summary=summary
            )
        )
    finally:
        dc.close()
    return records, summary


# --------------------------------------------------------------------------------------------
# the sample: index vs STAC catalog


def test_index_cache_has_the_membership_of_the_stac_cache(
    sample_index, sample_catalog, tmp_path, monkeypatch
):
    for key, value in sample_index.env.items():
        monkeypatch.setenv(key, value)
    grid = parse_grid(GRID)
    binning = make_binning("annual", years=(2020, 2021))
    items = list(read_items({"type": "stac_catalog", "path": str(sample_catalog)}))
    build_cache(iter(items), grid, binning, tmp_path / "stac.sqlite", {"type": "stac_catalog"}, {})
    summary = build_datacube_cache(
        {"type": "datacube", "input_products": "sample_ls_ard_3"},
        grid,
        binning,
        tmp_path / "index.sqlite",
        {},
    )
    assert summary.n_datasets == len(items) == 10

    with (
        DatasetCache.open(tmp_path / "stac.sqlite") as stac,
        DatasetCache.open(tmp_path / "index.sqlite") as index,
    ):
        assert index.task_ids() == stac.task_ids()
        # the index cache holds dataset UUIDs; their labels are the STAC item ids
        by_label = {
            str(t): sorted(item["properties"]["title"] for item in index.datasets(t))
            for t in index.task_ids()
        }
        assert by_label == {str(t): stac.dataset_ids(t) for t in stac.task_ids()}
        for t in stac.task_ids():
            assert [r.n_days_utc for r in [index.task(t)]] == [stac.task(t).n_days_utc]
        # every item is loadable the same way: same pixel grids and files per band, same time
        originals = {it["id"]: it for it in items}
        for item in index.datasets(index.task_ids()[0]):
            original = originals[item["properties"]["title"]]
            assert item["collection"] == "sample_ls_ard_3"
            assert item["properties"]["datetime"] == original["properties"]["datetime"]
            assert item["odc:eo3"]["metadata"]["id"] == item["id"]
            assert item["odc:eo3"]["metadata"]["label"] == original["id"]
            for band, asset in original["assets"].items():
                assert item["assets"][band]["href"] == Path(asset["href"]).as_uri()
                assert (
                    item["assets"][band]["proj:transform"][:6]
                    == original["properties"]["proj:transform"]
                )
                assert item["assets"][band]["proj:code"] == original["properties"]["proj:code"]
        assert set(index.settings["odc_products"]) == {"sample_ls_ard_3"}
        assert index.source["input_products"] == "sample_ls_ard_3"


def test_unknown_product_names_the_known_ones(sample_index, monkeypatch):
    with pytest.raises(
        DatacubeSourceError, match="'nope' is not in the datacube index; known products: sample"
    ):
        _search(sample_index, monkeypatch, input_products="nope")


# --------------------------------------------------------------------------------------------
# product expressions on scenes made for it


def test_fuse_keeps_groups_with_every_product(scenes_index, monkeypatch):
    records, summary = _search(scenes_index, monkeypatch, input_products="fc+wo")
    assert [sorted(r.doc["lineage"].items()) for r in records] == [
        [("fc", [ID["fc_T1_A"]]), ("wo", [ID["wo_T1_A"]])]
    ]
    fused = records[0].doc
    expected_id = uuid.uuid5(
        ODC_NS, "\n".join(["fused__fc__wo", "0.0.0", *sorted([ID["fc_T1_A"], ID["wo_T1_A"]])])
    )
    assert fused["id"] == str(expected_id)
    assert fused["product"] == {"name": "fused__fc__wo"}
    assert fused["properties"]["fused"] == "True"
    assert fused["properties"]["odc:region_code"] == A
    assert fused["properties"]["eo:platform"] == "landsat-8"
    assert "gqa:iterative_mean_xy" not in fused["properties"]  # only on the FC member
    label_fc, label_wo = SCENES["fc_T1_A"]["label"], SCENES["wo_T1_A"]["label"]
    assert fused["measurements"] == {
        "pv": {"path": f"{LOCATION}{label_fc}_pv.tif"},
        "bs": {"path": f"{LOCATION}{label_fc}_bs.tif"},
        "water": {"path": f"{LOCATION}{label_wo}_water.tif"},
    }
    # groups short of a product are counted per missing product
    assert summary.fuse.dropped == {"wo": 4, "fc": 3}


def test_optional_product_may_be_missing(scenes_index, monkeypatch):
    records, _ = _search(
        scenes_index, monkeypatch, input_products="fc+wo", optional_products=["wo"]
    )
    members = sorted(sorted(ids[0] for ids in r.doc["lineage"].values()) for r in records)
    assert members == sorted(
        [
            sorted([ID["fc_T1_A"], ID["wo_T1_A"]]),
            [ID["fc_T2_A"]],
            [ID["fc_T3_A"]],
            [ID["fc_before_A"]],
            [ID["fc_wellbefore_A"]],
        ]
    )
    alone = next(r for r in records if r.doc["lineage"] == {"fc": [ID["fc_T2_A"]]})
    assert set(alone.doc["measurements"]) == {"pv", "bs"}


def test_ignore_time_product_joins_every_group_of_its_region(scenes_index, monkeypatch):
    records, _ = _search(scenes_index, monkeypatch, input_products="fc+wo+dem", ignore_time=["dem"])
    assert [r.doc["lineage"] for r in records] == [
        {"fc": [ID["fc_T1_A"]], "wo": [ID["wo_T1_A"]], "dem": [ID["dem_A"]]}
    ]
    # the DEM takes the group's time and does not widen its footprint
    assert records[0].doc["properties"]["datetime"] == T1
    assert records[0].doc["geometry"]["type"] == "Polygon"

    records, _ = _search(scenes_index, monkeypatch, input_products="fc+dem", ignore_time="dem")
    assert sorted(r.doc["lineage"]["fc"][0] for r in records) == sorted(
        ID[k] for k in ("fc_T1_A", "fc_T2_A", "fc_T3_A", "fc_before_A", "fc_wellbefore_A")
    )
    assert {r.doc["lineage"]["dem"][0] for r in records} == {ID["dem_A"]}


def test_union_takes_every_dataset_within_the_padded_years(scenes_index, monkeypatch):
    records, _ = _search(
        scenes_index,
        monkeypatch,
        binning=make_binning("annual", years=(2021,)),
        input_products="fc-wo",
    )
    assert sorted(r.id for r in records) == sorted(
        ID[k]
        for k in (
            "fc_T1_A",
            "fc_T2_A",
            "fc_T3_A",
            "fc_before_A",
            "wo_T1_A",
            "wo_T2_B",
            "wo_T3late_A",
            "wo_T4_A",
        )
    )
    assert all(not r.sources for r in records)
    # streamed in (center_time, region_code) order within the year window
    assert records[0].id == ID["fc_before_A"]


def test_padding_of_a_temporal_range(scenes_index, monkeypatch):
    binning = make_binning(
        None, "2021-03--P1M"
    )  # March 2021: T1 only, and nothing within 0.6 day of it
    records, _ = _search(scenes_index, monkeypatch, binning=binning, input_products="fc")
    assert [r.id for r in records] == [ID["fc_T1_A"]]
    binning = make_binning(None, "2021--P1Y")
    records, _ = _search(scenes_index, monkeypatch, binning=binning, input_products="fc")
    assert ID["fc_before_A"] in {r.id for r in records}
    assert ID["fc_wellbefore_A"] not in {r.id for r in records}


def test_gqa_and_dataset_filter(scenes_index, monkeypatch):
    records, summary = _search(scenes_index, monkeypatch, input_products="fc", gqa=1)
    assert [r.id for r in records] == [ID["fc_T1_A"]]  # 2.0 is too large, no gqa at all is dropped
    assert summary.gqa_dropped == 4
    records, _ = _search(
        scenes_index, monkeypatch, input_products="wo", dataset_filter='{"region_code": "091084"}'
    )
    assert [r.id for r in records] == [ID["wo_T2_B"]]


def test_tile_range_limits_the_search(scenes_index, monkeypatch):
    grid = parse_grid(GRID)
    # the tile holding the scenes' centre, computed from its Albers coordinates
    from odc.geo.geom import point

    centre = point(691500, 6091500, "EPSG:32755").to_crs("EPSG:3577").coords[0]
    ix, iy = grid.tile_index(*centre)
    inside, _ = _search(
        scenes_index, monkeypatch, tiles=f"{ix}:{ix + 1},{iy}:{iy + 1}", input_products="wo"
    )
    assert len(inside) == 4
    outside, _ = _search(
        scenes_index, monkeypatch, tiles=f"{ix + 5}:{ix + 6},{iy}:{iy + 1}", input_products="wo"
    )
    assert outside == []


def test_fused_cache_items_carry_bands_of_both_products(scenes_index, tmp_path, monkeypatch):
    for key, value in scenes_index.env.items():
        monkeypatch.setenv(key, value)
    summary = build_datacube_cache(
        {"type": "datacube", "input_products": "fc+wo", "optional_products": "wo"},
        parse_grid(GRID),
        make_binning("annual", years=(2021,)),
        tmp_path / "fused.sqlite",
        {},
    )
    assert (
        summary.n_datasets == 4
    )  # T1 fused, T2 and T3 FC alone, and the FC just before 2021 (local 2021)
    with DatasetCache.open(tmp_path / "fused.sqlite") as cache:
        items = {d["id"]: d for t in cache.task_ids() for d in cache.datasets(t)}
        fused = next(d for d in items.values() if len(d["odc:eo3"]["metadata"]["lineage"]) == 2)
        assert fused["collection"] == "fused__fc__wo"
        assert set(fused["assets"]) == {"pv", "bs", "water"}
        assert fused["assets"]["water"]["href"].endswith(SCENES["wo_T1_A"]["label"] + "_water.tif")
        assert fused["assets"]["pv"]["proj:shape"] == [100, 100]
        assert set(cache.settings["odc_products"]) == {"fc", "wo", "fused__fc__wo"}
        assert [
            m["name"] for m in cache.settings["odc_products"]["fused__fc__wo"]["measurements"]
        ] == [
            "pv",
            "bs",
            "water",
        ]


@pytest.mark.workflow
def test_workflow_cache_rule_reads_the_index(sample_index, sample_catalog, tmp_path):
    """An odc-stats YAML (input_products, no source) run through Snakemake up to the task list: the cache rule
    builds from the index with the same function as save-tasks, and the tasks equal the STAC catalog's."""
    import os
    import subprocess
    import sys

    import yaml

    from eostats.tasklists import task_csv_text

    repo = Path(__file__).resolve().parents[1]
    config = {
        "results": str(tmp_path / "results"),
        "run_name": "dc",
        "input_products": "sample_ls_ard_3",
        "grid": GRID,
        "frequency": "annual",
        "years": [2020, 2021],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [
        str(snakemake),
        "-s",
        str(repo / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
    ]
    cmd += [
        str(tmp_path / "config.yaml"),
        "--profile",
        str(repo / "profiles" / "local"),
        "--cores",
        "1",
    ]
    cmd += [str(tmp_path / "results/tasks/dc.csv")]
    env = {**sample_index.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    build_cache(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)}),
        parse_grid(GRID),
        make_binning("annual", years=(2020, 2021)),
        tmp_path / "stac.sqlite",
        {"type": "stac_catalog"},
        {},
    )
    with DatasetCache.open(tmp_path / "stac.sqlite") as stac:
        assert (tmp_path / "results/tasks/dc.csv").read_text() == task_csv_text(stac)
    with DatasetCache.open(tmp_path / "results/tasks/dc.sqlite") as cache:
        assert cache.source["type"] == "datacube" and "odc_products" in cache.settings


def test_named_environment_from_a_datacube_conf(sample_index, tmp_path, monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("ODC_", "DATACUBE_")):
            monkeypatch.delenv(key)
    conf = tmp_path / "datacube.conf"
    conf.write_text(f"statsenv:\n  index_driver: postgres\n  db_url: {sample_index.db_url}\n")
    source = DatacubeSource.from_mapping(
        {
            "type": "datacube",
            "input_products": "sample_ls_ard_3",
            "env": "statsenv",
            "config": str(conf),
        }
    )
    dc = connect(source)
    try:
        assert len(list(find_records(dc, source))) == 10
    finally:
        dc.close()
    missing = DatacubeSource.from_mapping({**source.to_mapping(), "env": "nope"})
    with pytest.raises(DatacubeSourceError, match="environment 'nope'"):
        dc = connect(missing)
        try:
            list(find_records(dc, missing))
        finally:
            dc.close()

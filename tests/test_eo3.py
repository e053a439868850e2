"""eo3 outputs: the documents' content, and (against a real PostgreSQL) indexing a run's outputs back into the
datacube it read from: ``datacube product add`` + ``datacube dataset add`` work and ``dc.load`` returns exactly
the COG pixels."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from postgres import DatacubeIndex, add_to_index, new_index, postgres_server  # noqa: F401  (fixture)

from eostats.cache import DatasetCache
from eostats.config import validate_config
from eostats.eo3 import (
    dataset_document,
    dump_yaml,
    eo3_paths,
    inherited_properties,
    output_product_definition,
    source_dataset_ids,
)
from eostats.grids import parse_grid
from eostats.layout import OutputProduct
from eostats.odc_index import build_datacube_cache
from eostats.periods import make_binning
from eostats.sources import read_items
from eostats.taskids import TaskId
from eostats.tile import run_tile
from eostats.workflow import Run

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}


# --------------------------------------------------------------------------------------------
# documents


def test_inherited_properties_keep_what_every_source_agrees_on() -> None:
    sources = [
        {
            "platform": "landsat-9",
            "instrument": "OLI",
            "custom:site": "x",
            "shared": 1,
            "eo:cloud_cover": 3,
            "landsat:wrs_path": 90,
            "odc:region_code": "090084",
            "datetime": "2021-01-01T00:00:00Z",
        },
        {
            "platform": "landsat-8",
            "instrument": "OLI_TIRS",
            "custom:site": "x",
            "shared": 2,
            "eo:cloud_cover": 3,
            "landsat:wrs_path": 90,
            "odc:region_code": "090084",
            "datetime": "2021-01-02T00:00:00Z",
        },
        {
            "eo:platform": "landsat-8",
            "eo:instrument": "OLI_TIRS",
            "custom:site": "x",
            "shared": 1,
            "eo:cloud_cover": 3,
        },
    ]
    assert inherited_properties(sources) == {
        "custom:site": "x",
        "eo:platform": "landsat-8,landsat-9",
        "eo:instrument": "OLI_OLI_TIRS",
    }
    assert inherited_properties(sources, skip=["custom:site", "eo:instrument"]) == {
        "eo:platform": "landsat-8,landsat-9"
    }
    assert inherited_properties([]) == {}


def test_output_product_definition_declares_each_band() -> None:
    class M:
        def __init__(self, name, dtype, nodata):
            self.name, self.dtype, self.nodata, self.units = name, dtype, nodata, "1"

    product = OutputProduct(
        name="ls_gm", short_name="ls_gm", version="1.0.0", product_family="geomedian"
    )
    doc = output_product_definition(
        product, [M("red", "int16", -999), M("sdev", "float32", float("nan")), M("ok", "bool", 0)]
    )
    assert doc["name"] == "ls_gm" and doc["metadata_type"] == "eo3"
    red, sdev, ok = doc["measurements"]
    assert red == {"name": "red", "dtype": "int16", "units": "1", "nodata": -999}
    assert sdev["dtype"] == "float32" and np.isnan(sdev["nodata"])
    assert ok["dtype"] == "uint8"
    assert np.isnan(
        yaml.safe_load(dump_yaml(doc))["measurements"][1]["nodata"]
    )  # YAML keeps NaN (.nan)


def test_dataset_document_describes_the_tile() -> None:
    grid = parse_grid(GRID)
    task = TaskId("2021--P1Y", 275, 97)
    geobox = grid.tile_geobox(task.x, task.y)
    product = OutputProduct(
        name="ls_gm", short_name="gm", version="1.2.3", location="out/{product}/{version}"
    )
    uuids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"s{i}")) for i in range(3)]
    doc = dataset_document(
        product=product,
        task=task,
        geobox=geobox,
        band_files={"red": "gm_x275y97_2021--P1Y_final_red.tif"},
        dataset_id="11111111-2222-3333-4444-555555555555",
        period=(datetime(2021, 1, 1), datetime(2021, 12, 31, 23, 59, 59, 999999)),
        processing_datetime=datetime(2022, 1, 2, 3, 4, 5, tzinfo=UTC),
        source_ids=[uuids[2], "not-a-uuid", uuids[0], uuids[1]],
        source_properties=[{"platform": "landsat-8"}],
    )
    # tile (275, 97): x from -2688000 + 275 * 15360, top edge -5472000 + 98 * 15360
    assert doc["grids"]["default"] == {
        "shape": [512, 512],
        "transform": [30.0, 0.0, 1536000.0, 0.0, -30.0, -3966720.0, 0.0, 0.0, 1.0],
    }
    assert doc["crs"] == "EPSG:3577"
    assert doc["id"] == "11111111-2222-3333-4444-555555555555"
    assert doc["label"] == "gm_x275y97_2021--P1Y_final"
    assert doc["lineage"] == {"level3": sorted(uuids)}
    props = doc["properties"]
    assert props["odc:region_code"] == "x275y97"
    assert props["odc:dataset_version"] == "1.2.3"
    assert props["dea:dataset_maturity"] == "final"
    assert props["eo:platform"] == "landsat-8"
    assert props["datetime"] == datetime(2021, 1, 1)
    assert eo3_paths(product, task) == (
        "out/ls_gm/1-2-3/x275/y97/2021--P1Y/gm_x275y97_2021--P1Y_final.proc-info.yaml",
        "out/ls_gm/1-2-3/x275/y97/2021--P1Y/gm_x275y97_2021--P1Y_final.odc-metadata.yaml",
    )


def test_fused_items_stand_for_their_members() -> None:
    plain = {"id": "a"}
    fused = {
        "id": "f",
        "odc:eo3": {
            "metadata": {"properties": {"fused": "True"}, "lineage": {"fc": ["m1"], "wo": ["m2"]}}
        },
    }
    assert source_dataset_ids([plain, fused]) == ["a", "m1", "m2"]


# --------------------------------------------------------------------------------------------
# index the outputs back


@pytest.mark.xdist_group("postgres")
def test_outputs_index_back_and_load_exactly(
    postgres_server,  # noqa: F811
    sample_catalog,
    tmp_path,
    monkeypatch,
):
    from eostats.eo3 import eo3_from_stac_items

    index: DatacubeIndex = new_index(postgres_server)
    products, documents = eo3_from_stac_items(
        read_items({"type": "stac_catalog", "path": str(sample_catalog)})
    )
    add_to_index(index, products, documents, uri=sample_catalog.parent.as_uri() + "/")
    for key, value in index.env.items():
        monkeypatch.setenv(key, value)

    grid = parse_grid(GRID)
    cache_path = tmp_path / "index.sqlite"
    build_datacube_cache(
        {"type": "datacube", "input_products": "sample_ls_ard_3"},
        grid,
        make_binning("annual", years=(2021,)),
        cache_path,
        {},
    )
    config = validate_config(
        {
            "grid": GRID,
            "plugin": "gm-ls",
            "product": {"name": "eo3_test_gm", "short_name": "eo3gm", "version": "1.0.0"},
            "output_location": str(tmp_path / "out/{product}/{version}"),
            "cog_opts": {"compress": "deflate", "level": 1, "blocksize": 256},
            "chunk_size": 512,
            "apply_eodatasets3": True,
        }
    )
    run = Run(config)
    with DatasetCache.open(cache_path) as cache:
        task = max(cache.task_ids(), key=lambda t: cache.task(t).n_datasets)
        inputs = cache.dataset_ids(task)
    run_tile(run, cache_path, task, threads=2)

    stac_path = Path(run.product.stac_path(task))
    proc_path, meta_path = map(Path, eo3_paths(run.product, task))
    stac = yaml.safe_load(stac_path.read_text())
    doc = yaml.safe_load(meta_path.read_text())
    assert doc["id"] == stac["id"]
    assert doc["lineage"] == {"level3": sorted(inputs)}  # the sample's dataset UUIDs, all indexed
    assert yaml.safe_load(proc_path.read_text())["input-products"] == ["sample_ls_ard_3"]
    # written before the STAC item, which stays the "done" marker
    assert meta_path.stat().st_mtime_ns <= stac_path.stat().st_mtime_ns

    product_file = tmp_path / "eo3_test_gm.product.yaml"
    product_file.write_text(
        dump_yaml(output_product_definition(run.product, run.plugin.measurements))
    )
    index.cli("product", "add", str(product_file))
    index.cli("dataset", "add", str(meta_path))

    dc = index.datacube()
    try:
        found = dc.find_datasets(product="eo3_test_gm")
        assert [str(ds.id) for ds in found] == [stac["id"]]
        geobox = grid.tile_geobox(task.x, task.y)
        loaded = dc.load(product="eo3_test_gm", like=geobox)
    finally:
        dc.close()
    assert loaded.sizes["time"] == 1
    for m in run.plugin.measurements:
        with rasterio.open(Path(run.product.band_path(task, m.name))) as src:
            cog = src.read(1)
        values = loaded[m.name].isel(time=0).values
        assert values.dtype == cog.dtype, m.name
        assert np.array_equal(values, cog, equal_nan=np.issubdtype(cog.dtype, np.floating)), m.name
    assert np.isfinite(loaded["nbart_red"].values).all() and (loaded["count"].values > 0).any()

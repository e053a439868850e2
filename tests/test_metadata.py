"""Task UUIDs, STAC items and .sha1 files (eostats.metadata)."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from datetime import UTC, datetime

import pystac
import pytest
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from pystac.errors import STACValidationError

from eostats.layout import OutputProduct
from eostats.metadata import (
    BandInfo,
    OfflineStacValidator,
    build_stac_item,
    task_uuid,
    validate_stac_item,
    verify_sha1,
    write_sha1,
)
from eostats.taskids import TaskId

SOURCES = [
    "c3a7e9a2-1f0b-4d4e-9a55-3b6f0f2e6d11",
    "0b2f5c1e-8d44-4c1a-a0e3-9d1e7f6a2b33",
    "7E1D2C3B-4A59-4B6C-8D7E-9F0A1B2C3D4E",  # upper case: the UUID is the same as lower case
]


# -- task_uuid ---------------------------------------------------------------------------------------
def test_task_uuid_known_value():
    # odc-stats' recipe written out by hand: uuid5 over the lower-cased lines
    # name, version, deployment id "", sorted tags, sorted source UUIDs
    text = "\n".join(
        [
            "ga_ls8c_nbart_gm_cyear_3",
            "3.0.0",
            "",
            "tile=(49, 24)",
            "time=2015--P1Y",
            "0b2f5c1e-8d44-4c1a-a0e3-9d1e7f6a2b33",
            "7e1d2c3b-4a59-4b6c-8d7e-9f0a1b2c3d4e",
            "c3a7e9a2-1f0b-4d4e-9a55-3b6f0f2e6d11",
        ]
    ).lower()  # every line is lower-cased, the period label too ("2015--p1y")
    expected = uuid.uuid5(uuid.UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af"), text)
    assert task_uuid("ga_ls8c_nbart_gm_cyear_3", "3.0.0", "2015--P1Y", 49, 24, SOURCES) == expected


def test_task_uuid_is_order_and_case_independent_but_input_sensitive():
    base = task_uuid("gm", "1.0.0", "2015--P1Y", 1, -2, SOURCES)
    assert task_uuid("GM", "1.0.0", "2015--P1Y", 1, -2, list(reversed(SOURCES))) == base
    assert task_uuid("gm", "1.0.0", "2015--P1Y", 1, -2, [uuid.UUID(s) for s in SOURCES]) == base
    others = {
        task_uuid("gm", "1.0.1", "2015--P1Y", 1, -2, SOURCES),
        task_uuid("gm", "1.0.0", "2016--P1Y", 1, -2, SOURCES),
        task_uuid("gm", "1.0.0", "2015--P1Y", -2, 1, SOURCES),
        task_uuid("gm", "1.0.0", "2015--P1Y", 1, -2, SOURCES[:2]),
        task_uuid("gm", "1.0.0", "2015--P1Y", 1, -2, SOURCES, deployment_id="x"),
    }
    assert base not in others and len(others) == 5


def test_task_uuid_negative_tile_tag_uses_python_tuple_repr():
    # non-UUID ids are kept as strings, sorted: item-a before item-b
    text = "\n".join(["gm", "1", "", "tile=(-3, 12)", "time=2015--p1y", "item-a", "item-b"])
    expected = uuid.uuid5(uuid.UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af"), text)
    assert task_uuid("gm", "1", "2015--P1Y", -3, 12, ["item-b", "item-a"]) == expected


# -- STAC item ---------------------------------------------------------------------------------------
@pytest.fixture
def product():
    return OutputProduct(
        name="ga_ls8c_nbart_gm_cyear_3",
        short_name="ga_ls8c_nbart_gm_cyear_3",
        version="3.0.0",
        product_family="geomedian",
        producer="ga.gov.au",
        location="/data/{product}/{version}",
        collections_site="collections.dea.ga.gov.au",
        properties={"eo:instruments": ["oli"], "odc:product": "overridden-by-eostats"},
    )


TASK = TaskId("2015--P1Y", 49, 24)
# au_30 tile (49, 24): origin (-6912000, -7488000) + index * 96000 m
GEOBOX = GeoBox.from_bbox(
    (-2208000.0, -5184000.0, -2112000.0, -5088000.0), "EPSG:3577", resolution=30
)
BANDS = {
    "nbart_red": BandInfo(
        "int16", -999, "ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final_nbart_red.tif"
    ),
    "sdev": BandInfo(
        "float32", float("nan"), "ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final_sdev.tif"
    ),
    "count": BandInfo("uint16", 0, "ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final_count.tif"),
}
PERIOD = (datetime(2015, 1, 1), datetime(2015, 12, 31, 23, 59, 59, 999999))


def make_item(product, processed=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), sources=SOURCES):
    return build_stac_item(
        product,
        TASK,
        GEOBOX,
        BANDS,
        sources,
        processed,
        PERIOD,
        extra_properties={"eostats:plugin": "gm-ls"},
    )


def test_stac_item_fields(product):
    doc = make_item(product)
    assert doc["id"] == str(task_uuid(product.name, "3.0.0", "2015--P1Y", 49, 24, SOURCES))
    assert doc["type"] == "Feature" and doc["stac_version"].startswith("1.")
    props = doc["properties"]
    assert props["datetime"] == "2015-01-01T00:00:00Z"
    assert props["start_datetime"] == props["dtr:start_datetime"] == "2015-01-01T00:00:00Z"
    assert props["end_datetime"] == props["dtr:end_datetime"] == "2015-12-31T23:59:59.999999Z"
    assert (
        props["odc:product"] == "ga_ls8c_nbart_gm_cyear_3"
    )  # computed fields win over product properties
    assert props["odc:dataset_version"] == "3.0.0"
    assert props["odc:region_code"] == "x49y24"
    assert props["odc:product_family"] == "geomedian"
    assert props["odc:producer"] == "ga.gov.au"
    assert props["odc:processing_datetime"] == "2024-05-06T07:08:09Z"
    assert props["odc:file_format"] == "GeoTIFF"
    assert props["odc:lineage"] == {"inputs": sorted(str(uuid.UUID(s)) for s in SOURCES)}
    assert props["eo:instruments"] == ["oli"] and props["eostats:plugin"] == "gm-ls"
    # projection extension (v2: proj:code), in the tile's CRS
    assert props["proj:code"] == "EPSG:3577"
    assert props["proj:shape"] == [3200, 3200]
    assert props["proj:transform"] == [30.0, 0.0, -2208000.0, 0.0, -30.0, -5088000.0]
    assert props["proj:bbox"] == [-2208000.0, -5184000.0, -2112000.0, -5088000.0]
    assert any("projection" in e for e in doc["stac_extensions"])
    assert any("raster" in e for e in doc["stac_extensions"])
    # assets: relative hrefs, COG media type, raster nodata/data type
    assert set(doc["assets"]) == set(BANDS)
    for band, info in BANDS.items():
        asset = doc["assets"][band]
        assert asset["href"] == info.path
        assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
        assert asset["roles"] == ["data"]
    assert doc["assets"]["nbart_red"]["raster:bands"] == [{"data_type": "int16", "nodata": -999}]
    assert doc["assets"]["sdev"]["raster:bands"] == [{"data_type": "float32", "nodata": "nan"}]
    assert doc["assets"]["count"]["raster:bands"] == [{"data_type": "uint16", "nodata": 0}]
    # links: self ends in .stac-item.json (odc-stats writes .json, quirk Q9), product overview
    links = {link["rel"]: link["href"] for link in doc["links"]}
    assert links["self"] == product.stac_path(TASK)
    assert links["self"].endswith(
        "x49/y24/2015--P1Y/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final.stac-item.json"
    )
    assert (
        links["product_overview"]
        == "https://collections.dea.ga.gov.au/product/ga_ls8c_nbart_gm_cyear_3"
    )
    json.dumps(doc, allow_nan=False)  # strict JSON


def test_stac_geometry_is_the_tile_in_lonlat(product):
    doc = make_item(product)
    to_lonlat = Transformer.from_crs("EPSG:3577", "EPSG:4326", always_xy=True)
    west, south, east, north = doc["bbox"]
    corners = [
        (-2208000, -5184000),
        (-2208000, -5088000),
        (-2112000, -5184000),
        (-2112000, -5088000),
    ]
    for x, y in corners:
        lon, lat = to_lonlat.transform(x, y)
        assert west - 1e-7 <= lon <= east + 1e-7 and south - 1e-7 <= lat <= north + 1e-7
    ring = doc["geometry"]["coordinates"][0]
    assert doc["geometry"]["type"] == "Polygon"
    assert len(ring) > 5  # densified edges, not just the four corners
    # every vertex lies on the tile edge: transformed back to EPSG:3577 it is on one of the four lines
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
    for lon, lat in ring:
        x, y = to_albers.transform(lon, lat)
        assert min(abs(x + 2208000), abs(x + 2112000), abs(y + 5184000), abs(y + 5088000)) < 0.5
    # the bbox is the extent of the densified ring
    assert west == min(p[0] for p in ring) and north == max(p[1] for p in ring)


def test_stac_item_validates_offline(product):
    doc = make_item(product)
    validate_stac_item(doc)
    item = pystac.Item.from_dict(copy.deepcopy(doc))
    validated = item.validate(validator=OfflineStacValidator())
    assert any("projection" in uri for uri in validated) and any(
        "raster" in uri for uri in validated
    )


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["properties"].__setitem__("proj:shape", [3200, 3200, 1]),
        lambda d: d["properties"].__setitem__("proj:epgs", 3577),  # misspelt proj field
        lambda d: d["properties"].pop("datetime"),
        lambda d: d["assets"]["sdev"]["raster:bands"][0].__setitem__("data_type", "float33"),
        lambda d: d["assets"]["sdev"]["raster:bands"][0].__setitem__("nodata", "none"),
    ],
)
def test_offline_validation_catches_broken_items(product, breakage):
    doc = make_item(product)
    breakage(doc)
    with pytest.raises((STACValidationError, ValueError)):
        validate_stac_item(doc)


def test_validation_requires_relative_assets_and_stac_item_self_link(product):
    doc = make_item(product)
    doc["assets"]["count"]["href"] = "/abs/path/count.tif"
    with pytest.raises(ValueError, match="non-relative"):
        validate_stac_item(doc)
    doc = make_item(product)
    doc["links"][0]["href"] = doc["links"][0]["href"].replace(".stac-item.json", ".json")
    with pytest.raises(ValueError, match="stac-item"):
        validate_stac_item(doc)


def test_stac_item_is_deterministic(product):
    a = make_item(product, processed=datetime(2024, 1, 1, tzinfo=UTC))
    b = make_item(
        product, processed=datetime(2025, 2, 2, tzinfo=UTC), sources=list(reversed(SOURCES))
    )
    assert a["properties"].pop("odc:processing_datetime") != b["properties"].pop(
        "odc:processing_datetime"
    )
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_period_range_defaults_to_the_task_period(product):
    doc = build_stac_item(
        product, TaskId("2020-07--P1Y", 49, 24), GEOBOX, BANDS, SOURCES, datetime(2024, 1, 1)
    )
    assert doc["properties"]["start_datetime"] == "2020-07-01T00:00:00Z"
    assert doc["properties"]["end_datetime"].startswith("2021-06-30T23:59:59")


# -- sha1 --------------------------------------------------------------------------------------------
def test_write_sha1_lines(tmp_path):
    files = {"b_red.tif": b"\x00\x01red", "a_count.tif": b"count" * 1000, "c.stac-item.json": b"{}"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    write_sha1(tmp_path / "x.sha1", [tmp_path / n for n in files])
    lines = (tmp_path / "x.sha1").read_text().splitlines()
    expected = sorted(f"{hashlib.sha1(c).hexdigest()}  {n}" for n, c in files.items())
    assert lines == sorted(lines, key=lambda line: line.split("  ")[1])
    assert sorted(lines) == expected
    assert verify_sha1(tmp_path / "x.sha1") == []
    (tmp_path / "b_red.tif").write_bytes(b"changed")
    assert verify_sha1(tmp_path / "x.sha1") == ["b_red.tif: checksum differs"]


def test_write_sha1_rejects_files_elsewhere(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "outside.tif").write_bytes(b"x")
    with pytest.raises(ValueError, match="not inside"):
        write_sha1(tmp_path / "sub" / "x.sha1", [tmp_path / "outside.tif"])
    assert not (tmp_path / "sub" / "x.sha1").exists()

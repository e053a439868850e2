"""Product expressions, fusing of eo3 records, search windows, run-time dataset filters and the odc-stats config
keys of a datacube source — the parts that need no database (tests/test_odc_index.py runs them against one)."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from eostats.config import ConfigError, validate_config
from eostats.fusing import DatasetRecord, FuseSummary, FusingError, fuse_records, parse_products
from eostats.odc_index import (
    DatacubeSource,
    DatacubeSourceError,
    dataset_filters_predicate,
    search_ranges,
    year_windows,
)
from eostats.periods import make_binning

ODC_NS = uuid.UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af")


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("ga_ls8c_ard_3", (("ga_ls8c_ard_3",),)),
        ("ga_ls8c_ard_3-ga_ls9c_ard_3", (("ga_ls8c_ard_3",), ("ga_ls9c_ard_3",))),
        ("ga_ls_fc_3+ga_ls_wo_3", (("ga_ls_fc_3", "ga_ls_wo_3"),)),
        ("--a--b-", (("a",), ("b",))),  # runs of separators count once, ends are ignored
        ("a++b", (("a", "b"),)),
        ("a+b-c+d", (("a", "b"), ("c", "d"))),
        (["a", "b", "a"], (("a",), ("b",))),
    ],
)
def test_product_expressions(text, terms):
    assert parse_products(text).terms == terms


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "names no product"), ("a+a", "fused with itself"), ("a b", "not a product name")],
)
def test_bad_product_expressions(text, message):
    with pytest.raises(ValueError, match=message):
        parse_products(text)


def _record(product: str, when: str, region: str, bands: list[str], **props) -> DatasetRecord:
    doc_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{product}{when}{region}"))
    doc = {
        "id": doc_id,
        "label": f"{product}_{region}_{when}",
        "product": {"name": product},
        "crs": "epsg:32755",
        "grids": {"default": {"shape": [10, 10], "transform": [30, 0, 0, 0, -30, 300, 0, 0, 1]}},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[0, 0], [0, 300], [300, 300], [300, 0], [0, 0]]],
        },
        "properties": {"datetime": when, "odc:region_code": region, **props},
        "measurements": {b: {"path": f"{b}.tif"} for b in bands},
    }
    return DatasetRecord(product, doc, f"s3://bucket/{product}/{region}/{when}/doc.yaml")


def test_fuse_two_products_by_time_and_region():
    fc = _record(
        "fc", "2021-01-01T00:00:00Z", "r1", ["pv", "bs"], platform="ls8", shared="x", only_fc=1
    )
    wo = _record("wo", "2021-01-01T00:00:00Z", "r1", ["water"], platform="ls8", shared="x")
    other_region = _record("wo", "2021-01-01T00:00:00Z", "r2", ["water"])
    summary = FuseSummary()
    (fused,) = fuse_records(["fc", "wo"], [fc, wo, other_region], summary=summary)
    assert fused.product == "fused__fc__wo"
    assert fused.doc["id"] == str(
        uuid.uuid5(ODC_NS, "\n".join(["fused__fc__wo", "0.0.0", *sorted([fc.id, wo.id])]))
    )
    assert fused.doc["measurements"] == {
        "pv": {"path": "s3://bucket/fc/r1/2021-01-01T00:00:00Z/pv.tif"},
        "bs": {"path": "s3://bucket/fc/r1/2021-01-01T00:00:00Z/bs.tif"},
        "water": {"path": "s3://bucket/wo/r1/2021-01-01T00:00:00Z/water.tif"},
    }
    props = fused.doc["properties"]
    assert props["platform"] == "ls8" and props["shared"] == "x" and "only_fc" not in props
    assert props["fused"] == "True" and props["odc:product"] == "fused__fc__wo"
    assert fused.doc["lineage"] == {"fc": [fc.id], "wo": [wo.id]}
    assert fused.doc["label"] == "fused__fc__wo_r1_2021-01-01T00:00:00Z"
    assert summary.fused == 1 and summary.dropped == {"fc": 1}


def test_fusing_checks_crs_band_names_and_renames_clashing_grids():
    fc = _record("fc", "2021-05-01T00:00:00Z", "r1", ["pv"])
    wo = _record("wo", "2021-05-01T00:00:00Z", "r1", ["water"])
    wo.doc["crs"] = "EPSG:32756"
    with pytest.raises(FusingError, match="different CRSs"):
        fuse_records(["fc", "wo"], [fc, wo])
    clash = _record("wo", "2021-05-01T00:00:00Z", "r1", ["pv"])
    with pytest.raises(FusingError, match="band 'pv' is in more than one"):
        fuse_records(["fc", "wo"], [fc, clash])
    wo = _record("wo", "2021-05-01T00:00:00Z", "r1", ["water"])
    wo.doc["grids"]["default"]["shape"] = [20, 20]
    (fused,) = fuse_records(["fc", "wo"], [fc, wo])
    assert fused.doc["grids"]["wo__default"]["shape"] == [20, 20]
    assert fused.doc["measurements"]["water"]["grid"] == "wo__default"
    assert "grid" not in fused.doc["measurements"]["pv"]


def test_a_reindexed_duplicate_uses_the_latest_processing():
    old = _record(
        "fc", "2021-05-01T00:00:00Z", "r1", ["pv"], **{"odc:processing_datetime": "2021-02-01"}
    )
    new = _record(
        "fc", "2021-05-01T00:00:00Z", "r1", ["pv"], **{"odc:processing_datetime": "2022-02-01"}
    )
    new.doc["id"] = str(uuid.uuid4())
    wo = _record("wo", "2021-05-01T00:00:00Z", "r1", ["water"])
    summary = FuseSummary()
    (fused,) = fuse_records(["fc", "wo"], [old, new, wo], summary=summary)
    assert fused.doc["lineage"]["fc"] == [new.id] and summary.duplicates == 1


def test_search_windows_pad_and_cut_at_years():
    ranges = search_ranges(make_binning("annual", years=(2020, 2021, 2023)))
    assert ranges == [
        (datetime(2019, 12, 31, 9, 36), datetime(2022, 1, 1, 14, 23, 59, 999999)),
        (datetime(2022, 12, 31, 9, 36), datetime(2024, 1, 1, 14, 23, 59, 999999)),
    ]
    assert year_windows(*ranges[0]) == [
        (datetime(2019, 12, 31, 9, 36), datetime(2020, 1, 1)),
        (datetime(2020, 1, 1), datetime(2021, 1, 1)),
        (datetime(2021, 1, 1), datetime(2022, 1, 1)),
        (datetime(2022, 1, 1), datetime(2022, 1, 1, 14, 23, 59, 999999)),
    ]
    assert search_ranges(make_binning("annual")) is None
    assert search_ranges(make_binning(None, "2020-07--P1Y"))[0][0] == datetime(2020, 6, 30, 9, 36)


def test_dataset_filters_or_between_objects_and_within_a_datetime_period():
    keep = dataset_filters_predicate(
        '{"platform": "landsat-8", "odc:region_code": "090084"}|{"datetime": "2021-03--P1M"}'
    )
    item = {
        "properties": {
            "platform": "landsat-8",
            "odc:region_code": "090084",
            "datetime": "2020-01-01T00:00:00Z",
        }
    }
    assert keep(item)
    assert not keep(
        {
            "properties": {
                "platform": "landsat-8",
                "odc:region_code": "091084",
                "datetime": "2020-01-01T00:00:00Z",
            }
        }
    )
    assert keep({"properties": {"platform": "landsat-9", "datetime": "2021-03-31T23:00:00Z"}})
    # eo3 property names of the embedded document count too
    embedded = {
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
        "odc:eo3": {
            "metadata": {"properties": {"platform": "landsat-8", "odc:region_code": "090084"}}
        },
    }
    assert keep(embedded)
    assert dataset_filters_predicate(None) is None
    with pytest.raises(ValueError, match="not a JSON object"):
        dataset_filters_predicate("{bad")


def test_odc_stats_yaml_keys_make_a_datacube_source():
    config = validate_config(
        {"input_products": "a+b", "gqa": 1, "ignore_time": ["dem"], "dataset_filter": '{"x": 1}'}
    )
    assert config["source"] == {
        "type": "datacube",
        "input_products": "a+b",
        "gqa": 1,
        "ignore_time": ["dem"],
        "dataset_filter": '{"x": 1}',
    }
    parsed = DatacubeSource.from_mapping(config["source"])
    assert parsed.dataset_filter == {"x": 1} and parsed.ignore_time == ("dem",)
    # keys already in the source win; a datacube source needs products; other sources refuse these keys
    config = validate_config(
        {
            "source": {"type": "datacube", "input_products": "c", "env": "prod"},
            "input_products": "a",
        }
    )
    assert config["source"] == {"type": "datacube", "input_products": "c", "env": "prod"}
    with pytest.raises(ConfigError, match="needs input_products"):
        validate_config({"source": {"type": "datacube"}})
    with pytest.raises(
        ConfigError, match="'gqa' describes a datacube source, but source type is 'sample'"
    ):
        validate_config({"source": {"type": "sample"}, "gqa": 1})
    with pytest.raises(DatacubeSourceError, match="needs input_products"):
        DatacubeSource.from_mapping({"type": "datacube"})

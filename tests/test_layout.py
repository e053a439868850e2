"""Output naming and odc-stats' directory layout (eostats.layout), and atomic writes (eostats.fileio)."""

from __future__ import annotations

import json
import os

import pytest

from eostats.fileio import atomic_directory, atomic_path, write_json_atomic, write_text_atomic
from eostats.layout import OutputProduct
from eostats.taskids import TaskId


def gm_product(**kw) -> OutputProduct:
    return OutputProduct(
        name="ga_ls8c_nbart_gm_cyear_3",
        short_name="ga_ls8c_nbart_gm_cyear_3",
        version="3.0.0",
        **kw,
    )


def test_dea_example_paths():
    # the published DEA example: s3://dea-public-data/derivative/ga_ls8c_nbart_gm_cyear_3/3-0-0/x49/y24/2015--P1Y/
    product = gm_product(location="s3://dea-public-data/derivative/{product}/{version}")
    task = TaskId("2015--P1Y", 49, 24)
    d = "s3://dea-public-data/derivative/ga_ls8c_nbart_gm_cyear_3/3-0-0/x49/y24/2015--P1Y"
    assert product.task_dir(task) == d
    assert product.file_prefix(task) == "ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final"
    assert (
        product.band_path(task, "nbart_red")
        == f"{d}/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final_nbart_red.tif"
    )
    assert (
        product.stac_path(task)
        == f"{d}/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final.stac-item.json"
    )
    assert product.sha1_path(task) == f"{d}/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final.sha1"


def test_default_location_and_version_dashing():
    product = OutputProduct(name="gm", short_name="gm", version="1.2.3")
    assert product.location == "results/gm/1-2-3"
    task = TaskId("2020-07--P1Y", 3, 7)
    assert product.task_dir(task) == "results/gm/1-2-3/x03/y07/2020-07--P1Y"
    assert product.region_code(3, 7) == "x03y07"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("out/{name}/{version_raw}/", "out/gm/1.2.3"),
        ("out/{short_name}-{version_dashed}", "out/g-1-2-3"),
        ("/data/{product}/{version}", "/data/gm/1-2-3"),
    ],
)
def test_location_templates(template, expected):
    assert OutputProduct("gm", "g", "1.2.3", location=template).location == expected


def test_unknown_location_key_is_rejected():
    with pytest.raises(ValueError, match="unknown template key"):
        OutputProduct("gm", "g", "1.2.3", location="out/{project}/{version}")


def test_three_digit_region_codes_split_before_y():
    # odc-stats halves the code by length: x123y05 -> x12/3y05 (quirk Q8); eostats cuts before the y
    product = gm_product(region_code_format="x{x:02d}y{y:02d}", location="out")
    assert product.task_dir(TaskId("2015--P1Y", 123, 5)) == "out/x123/y05/2015--P1Y"
    assert product.task_dir(TaskId("2015--P1Y", 5, 123)) == "out/x05/y123/2015--P1Y"
    africa = gm_product(region_code_format="x{x:03d}y{y:03d}", location="out")
    task = TaskId("2019--P1Y", 41, 7)
    assert africa.task_dir(task) == "out/x041/y007/2019--P1Y"
    assert africa.file_prefix(task) == "ga_ls8c_nbart_gm_cyear_3_x041y007_2019--P1Y_final"
    negative = gm_product(location="out")
    assert negative.task_dir(TaskId("2015--P1Y", -3, 12)) == "out/x-3/y12/2015--P1Y"


def test_region_code_without_y_falls_back_to_halving():
    product = gm_product(region_code_format="{x:03d}{y:03d}", location="out")
    assert product.task_dir(TaskId("2015--P1Y", 12, 34)) == "out/012/034/2015--P1Y"


def test_maturity_none_has_no_suffix():
    product = gm_product(maturity=None, location="out")
    task = TaskId("2015--P1Y", 49, 24)
    assert product.file_prefix(task) == "ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y"
    assert product.stac_path(task).endswith(
        "/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y.stac-item.json"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "../etc"),
        ("name", "a/b"),
        ("short_name", ".."),
        ("short_name", "with space"),
        ("version", "1/2"),
        ("maturity", "fi/nal"),
    ],
)
def test_names_that_escape_the_location_are_rejected(field, value):
    kw = {"name": "gm", "short_name": "gm", "version": "1.0.0", field: value}
    with pytest.raises(ValueError, match="cannot be used in output paths") as info:
        OutputProduct(**kw)
    assert repr(value) in str(info.value)


def test_region_code_and_band_and_period_are_checked():
    with pytest.raises(ValueError, match=r"region code '\.\./x0y0'"):
        OutputProduct("gm", "gm", "1.0.0", region_code_format="../x{x}y{y}")
    ok = OutputProduct("gm", "gm", "1.0.0")
    with pytest.raises(ValueError, match="band name '../red'"):
        ok.band_path(TaskId("2015--P1Y", 1, 2), "../red")
    with pytest.raises(ValueError, match="period"):
        ok.task_dir(TaskId("../2015", 1, 2))


def test_broken_region_code_format_fails_early():
    with pytest.raises(ValueError, match="region_code_format"):
        OutputProduct("gm", "gm", "1.0.0", region_code_format="x{col}y{row}")


def test_from_config_odc_stats_keys():
    cfg = {
        "name": "ga_ls8cls9c_gm_cyear_3",
        "short_name": "ga_ls8cls9c_gm_cyear_3",
        "version": "4.0.0",
        "product_family": "geomedian",
        "naming_conventions_values": "dea_c3",
        "explorer_path": "https://explorer.dea.ga.gov.au/",
        "classifier": "ard",
        "maturity": "final",
        "collection_number": 3,
        "inherit_skip_properties": ["eo:cloud_cover"],
        "collections_site": "collections.dea.ga.gov.au",
        "properties": {"odc:file_format": "GeoTIFF", "eo:platform": "landsat-8,landsat-9"},
        "location": "out/{product}/{version}",
    }
    product = OutputProduct.from_config(cfg)
    assert product.name == product.short_name == "ga_ls8cls9c_gm_cyear_3"
    assert product.version == "4.0.0"
    assert product.product_family == "geomedian"
    assert product.location == "out/ga_ls8cls9c_gm_cyear_3/4-0-0"
    assert product.properties["eo:platform"] == "landsat-8,landsat-9"
    assert (
        product.product_overview_href
        == "https://collections.dea.ga.gov.au/product/ga_ls8cls9c_gm_cyear_3"
    )


def test_from_config_defaults_and_errors():
    product = OutputProduct.from_config({"name": "gm", "version": "1.0"})
    assert (product.short_name, product.maturity, product.location) == (
        "gm",
        "final",
        "results/gm/1-0",
    )
    assert (
        OutputProduct.from_config({"name": "gm", "version": "1", "maturity": None}).maturity is None
    )

    class Plugin:
        NAME, SHORT_NAME, VERSION, PRODUCT_FAMILY = "pq", "pqs", "0.0.1", "pixel_quality"

    from_plugin = OutputProduct.from_config({}, plugin=Plugin(), location="x/{short_name}")
    assert (from_plugin.name, from_plugin.short_name, from_plugin.version) == ("pq", "pqs", "0.0.1")
    assert from_plugin.product_family == "pixel_quality"
    assert from_plugin.location == "x/pqs"
    with pytest.raises(ValueError, match="unknown product key"):
        OutputProduct.from_config({"name": "gm", "version": "1", "shortname": "g"})
    with pytest.raises(ValueError, match="product name is missing"):
        OutputProduct.from_config({"version": "1"})


# -- fileio ------------------------------------------------------------------------------------------
def test_atomic_path_success_and_failure(tmp_path):
    final = tmp_path / "a" / "b" / "out.tif"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.suffix == ".tif" and tmp != final
        tmp.write_bytes(b"new")
        assert not final.exists()
    assert final.read_bytes() == b"new"

    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert final.read_bytes() == b"new"  # the old file is untouched
    assert sorted(os.listdir(final.parent)) == ["out.tif"]  # no temporary left behind

    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "never.txt"):
        pass
    assert not (tmp_path / "never.txt").exists()


def test_write_text_and_json_atomic(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    write_json_atomic(tmp_path / "d" / "x.json", {"b": [1, 2], "a": "é"})
    assert json.loads((tmp_path / "d" / "x.json").read_text()) == {"b": [1, 2], "a": "é"}
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "nan.json", {"x": float("nan")})
    assert not (tmp_path / "nan.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["d", "t.txt"]


def test_atomic_directory_replaces_and_rolls_back(tmp_path):
    final = tmp_path / "tile"
    with atomic_directory(final) as d:
        (d / "a.tif").write_text("1")
    assert sorted(os.listdir(final)) == ["a.tif"]

    with atomic_directory(final) as d:
        (d / "b.tif").write_text("2")
    assert sorted(os.listdir(final)) == ["b.tif"]  # replaced as a whole, old content gone

    with pytest.raises(KeyError), atomic_directory(final) as d:
        (d / "c.tif").write_text("3")
        raise KeyError("boom")
    assert sorted(os.listdir(final)) == ["b.tif"]
    assert sorted(os.listdir(tmp_path)) == ["tile"]

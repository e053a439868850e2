"""COG writing (eostats.cog): structure, encoding options, values, atomicity; odc-stats style cog_opts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from eostats.cog import CogOptions, cog_problems, write_cog


def geo_array(values: np.ndarray, resolution: float = 30.0, crs: str = "EPSG:3577") -> xr.DataArray:
    height, width = values.shape
    x0, y0 = 1_500_000.0, -3_900_000.0
    geobox = GeoBox.from_bbox(
        (x0, y0, x0 + width * resolution, y0 + height * resolution), crs, resolution=resolution
    )
    assert geobox.shape == values.shape
    return xr.DataArray(values, dims=("y", "x"), coords=xr_coords(geobox))


def test_large_int_band_is_a_cog_with_overviews(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 10000, size=(700, 1000), dtype=np.int16)  # no accidental -999
    values[:10, :10] = -999
    values[200, 200] = -999  # one nodata pixel inside a 2x2 overview block
    data = geo_array(values)
    path = write_cog(
        tmp_path / "red.tif", data, nodata=-999, description="nbart_red", options=CogOptions()
    )
    assert path == tmp_path / "red.tif"
    assert cog_problems(path, blocksize=512, compress="deflate") == []
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert (
            ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        )  # horizontal differencing for integers
        assert ds.block_shapes == [(512, 512)]
        assert ds.overviews(1) == [2]  # 1000x700 -> 500x350 fits in one 512 block: one level
        assert ds.nodata == -999
        assert ds.descriptions == ("nbart_red",)
        assert ds.dtypes == ("int16",)
        assert ds.crs.to_epsg() == 3577
        expected_transform = data.odc.geobox.transform
        assert ds.transform == expected_transform
        assert (ds.width, ds.height) == (1000, 700)
        np.testing.assert_array_equal(ds.read(1), values)
        # overview = 2x2 average ignoring nodata, rounded (independent numpy computation on a nodata-free block)
        ovr = ds.read(1, out_shape=(350, 500))
    block = values[100:200, 100:200].astype(float).reshape(50, 2, 50, 2).mean(axis=(1, 3))
    assert np.abs(ovr[50:100, 50:100] - block).max() <= 0.5
    # nodata pixels are left out of the average, not averaged in
    valid_three = [values[200, 201], values[201, 200], values[201, 201]]
    assert abs(ovr[100, 100] - np.mean(valid_three)) <= 0.5
    assert ovr[0, 0] == -999  # an all-nodata block stays nodata


def test_small_float_band_has_no_overviews(tmp_path):
    values = np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(200, 300)
    values[5, 7] = np.nan
    path = write_cog(
        tmp_path / "sdev.tif",
        geo_array(values),
        nodata=np.nan,
        description="sdev",
        options=CogOptions(),
    )
    assert cog_problems(path, blocksize=512, overviews=False) == []
    assert cog_problems(path, overviews=True) == [
        "no overviews on a 300x200 image with 512px blocks"
    ]
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == []
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating-point predictor
        assert np.isnan(ds.nodata)
        np.testing.assert_array_equal(ds.read(1), values)  # NaN positions equal too


def test_zstd_explicit_levels_and_block_size(tmp_path):
    values = np.arange(256 * 384, dtype=np.float32).reshape(256, 384) / 7
    options = CogOptions(compress="zstd", level=9, blocksize=128, overview_levels=3, predictor=1)
    path = write_cog(
        tmp_path / "b.tif", geo_array(values), nodata=-1.0, description="b", options=options
    )
    assert cog_problems(path, blocksize=128, overviews=3, compress="zstd") == []
    with rasterio.open(path) as ds:
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "ZSTD"
        assert "PREDICTOR" not in structure  # predictor 1 = none
        assert ds.block_shapes == [(128, 128)]
        assert ds.overviews(1) == [2, 4, 8]
        with rasterio.open(path, overview_level=0) as ovr:
            level1 = ovr.read(1)
    np.testing.assert_allclose(level1, values.reshape(128, 2, 192, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_categorical_band_gets_nearest_overviews(tmp_path):
    # a checkerboard of classes 1 and 3: averaging would invent class 2
    values = np.where((np.add.outer(np.arange(1024), np.arange(1024)) % 2) == 0, 1, 3).astype(
        np.uint8
    )
    options = CogOptions.from_config({"compress": "deflate"}, band="fmask", categorical=True)
    assert options.overview_resampling == "nearest"
    path = write_cog(
        tmp_path / "fmask.tif", geo_array(values), nodata=0, description="fmask", options=options
    )
    assert cog_problems(path) == []
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2]
        ovr = ds.read(1, out_shape=(512, 512))
    assert set(np.unique(ovr)) <= {1, 3}

    average = write_cog(
        tmp_path / "avg.tif", geo_array(values), nodata=0, description="x", options=CogOptions()
    )
    with rasterio.open(average) as ds:
        assert set(np.unique(ds.read(1, out_shape=(512, 512)))) == {2}


def test_bool_band_is_written_as_uint8(tmp_path):
    values = np.zeros((40, 60), dtype=bool)
    values[3:9, 10:20] = True
    path = write_cog(tmp_path / "m.tif", geo_array(values), nodata=255, description="mask")
    with rasterio.open(path) as ds:
        assert ds.dtypes == ("uint8",)
        np.testing.assert_array_equal(ds.read(1), values.astype(np.uint8))


def test_bad_nodata_and_shape_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not representable"):
        write_cog(
            tmp_path / "a.tif", geo_array(np.zeros((4, 4), np.uint8)), nodata=-1, description="a"
        )
    with pytest.raises(ValueError, match="NaN"):
        write_cog(
            tmp_path / "a.tif",
            geo_array(np.zeros((4, 4), np.int16)),
            nodata=np.nan,
            description="a",
        )
    with pytest.raises(ValueError, match="2-D"):
        write_cog(tmp_path / "a.tif", xr.DataArray(np.zeros((2, 4, 4))), nodata=0, description="a")
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")

    def broken_copy(src, dst, **kw):
        with open(dst, "wb") as f:
            f.write(b"half a COG")
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.shutil, "copy", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        write_cog(target, geo_array(np.ones((8, 8), np.int16)), nodata=0, description="x")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.tif"]


def test_cog_problems_flags_a_plain_geotiff(tmp_path):
    path = tmp_path / "plain.tif"
    profile = {
        "driver": "GTiff",
        "width": 600,
        "height": 600,
        "count": 1,
        "dtype": "int16",
        "crs": "EPSG:3577",
    }
    with rasterio.open(
        path, "w", **profile
    ) as ds:  # striped, no overviews, no nodata, not COG-ordered
        ds.write(np.ones((600, 600), np.int16), 1)
    problems = " | ".join(cog_problems(path))
    assert "LAYOUT=COG" in problems
    assert "not internally tiled" in problems
    assert "nodata" in problems
    assert "no overviews" in problems


def test_options_from_odc_stats_cog_opts():
    cog_opts = {
        "compress": "zstd",
        "zstd_level": 4,
        "zlevel": 9,  # deflate's level: ignored for zstd
        "blocksize": 1024,
        "ovr_blocksize": 256,  # accepted, no effect with the COG driver
        "overview_resampling": "average",
        "overview_levels": [2, 4, 8, 16, 32],
        "overrides": {"qa": {"overview_resampling": "nearest", "compress": "deflate"}},
        "rgba": {"compress": "lzw"},  # a dict-valued key is a per-band override too
    }
    base = CogOptions.from_config(cog_opts, band="nbart_red")
    assert (base.compress, base.level, base.blocksize) == ("zstd", 4, 1024)
    assert base.overview_levels == (2, 4, 8, 16, 32)
    assert base.overview_resampling == "average"
    qa = CogOptions.for_band("qa", cog_opts)
    assert (qa.compress, qa.overview_resampling, qa.blocksize) == ("deflate", "nearest", 1024)
    assert qa.level is None  # zstd's level does not carry over to deflate
    rgba = CogOptions.for_band("rgba", cog_opts)
    assert rgba.compress == "lzw"
    # categorical bands default to nearest, but an explicit per-band setting wins
    assert (
        CogOptions.from_config(cog_opts, band="count", categorical=True).overview_resampling
        == "nearest"
    )
    forced = {"overrides": {"count": {"overview_resampling": "mode"}}}
    assert (
        CogOptions.from_config(forced, band="count", categorical=True).overview_resampling == "mode"
    )


def test_creation_options_and_validation():
    opts = CogOptions(compress="deflate", level=9)
    assert opts.creation_options("int16") == {
        "COMPRESS": "DEFLATE",
        "LEVEL": "9",
        "PREDICTOR": "STANDARD",
        "BLOCKSIZE": "512",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "1",
        "OVERVIEW_RESAMPLING": "AVERAGE",
    }
    assert opts.creation_options("float32")["PREDICTOR"] == "FLOATING_POINT"
    assert "PREDICTOR" not in CogOptions(compress="none").creation_options("int16")
    with pytest.raises(ValueError, match="compress"):
        CogOptions(compress="jpeg2000")
    with pytest.raises(ValueError, match="multiple of 16"):
        CogOptions(blocksize=500)
    with pytest.raises(ValueError, match="outside 1..22"):
        CogOptions(compress="zstd", level=30)
    with pytest.raises(ValueError, match="unknown key"):
        CogOptions.from_config({"compresion": "zstd"})

"""eostats.rasterfile: local files read through GDAL's C API agree with rasterio's reading of them, bad files raise
GDAL's message, and the EPSG code read from a GeoTIFF's keys is the CRS GDAL reads."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.crs import CRS

from eostats.rasterfile import (
    GdalRasterFile,
    RasterFileError,
    RasterioRasterFile,
    direct_gdal_available,
    geokeys_epsg,
    open_raster,
)

TRANSFORM = Affine(30, 0, 653610, 0, -30, 6128520)


def write(path: Path, data: np.ndarray, crs: str | None = "EPSG:32755", **options) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype,
        "transform": TRANSFORM,
        **options,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def pixels(dtype: str, shape=(700, 900), seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        return rng.normal(0, 1000, shape).astype(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def test_the_direct_path_is_available_here() -> None:
    """This machine's rasterio wheel: GDAL's C API is reachable (else the tests below compare rasterio with itself
    and the tile jobs read through rasterio)."""
    assert direct_gdal_available()


@pytest.mark.parametrize(
    ("dtype", "options"),
    [
        (
            "uint8",
            {
                "tiled": True,
                "blockxsize": 256,
                "blockysize": 256,
                "compress": "deflate",
                "nodata": 0,
            },
        ),
        (
            "int16",
            {
                "tiled": True,
                "blockxsize": 512,
                "blockysize": 512,
                "compress": "deflate",
                "nodata": -999,
            },
        ),
        ("uint16", {"compress": "lzw", "predictor": 2}),  # stripped, no nodata
        (
            "float32",
            {"tiled": True, "compress": "deflate", "nodata": float("nan"), "BIGTIFF": "YES"},
        ),
        ("int64", {"tiled": True, "nodata": -9999}),
    ],
)
def test_direct_reading_agrees_with_rasterio(tmp_path: Path, dtype: str, options: dict) -> None:
    data = pixels(dtype)
    path = str(write(tmp_path / f"{dtype}.tif", data, **options))
    direct, through_rasterio = GdalRasterFile(path), RasterioRasterFile(path)
    try:
        for attr in ("driver", "width", "height", "transform", "dtype", "block_shape", "crs_wkt"):
            assert getattr(direct, attr) == getattr(through_rasterio, attr), attr
        assert direct.dtype == np.dtype(dtype) and direct.width == 900 and direct.height == 700
        if options.get("nodata") is None:
            assert direct.nodata is None and through_rasterio.nodata is None
        elif np.isnan(options["nodata"]):
            assert np.isnan(direct.nodata) and np.isnan(through_rasterio.nodata)
        else:
            assert direct.nodata == options["nodata"] == through_rasterio.nodata
        assert CRS(direct.crs_wkt).epsg == 32755
        # a window crossing blocks, decoded into a view of a bigger array (rows strided)
        big = np.zeros((400, 500), dtype)
        view = big[17:317, 33:433]
        got = direct.read(slice(250, 550), slice(301, 701), view)
        assert got is view
        np.testing.assert_array_equal(view, data[250:550, 301:701])
        assert not big[:17].any() and not big[317:].any() and not big[:, :33].any()
        other = np.empty((300, 400), dtype)
        through_rasterio.read(slice(250, 550), slice(301, 701), other)
        np.testing.assert_array_equal(other, view)
        whole = direct.read(slice(0, 700), slice(0, 900), np.empty((700, 900), dtype))
        np.testing.assert_array_equal(whole, data)
    finally:
        direct.close()
        through_rasterio.close()
    direct.close()  # twice: nothing happens


def test_bad_windows_and_buffers_are_refused(tmp_path: Path) -> None:
    path = str(write(tmp_path / "a.tif", pixels("int16"), tiled=True))
    src = GdalRasterFile(path)
    try:
        with pytest.raises(ValueError, match="outside"):
            src.read(slice(600, 701), slice(0, 10), np.empty((101, 10), np.int16))
        with pytest.raises(ValueError, match="not int16"):
            src.read(slice(0, 10), slice(0, 10), np.empty((10, 10), np.uint16))
        with pytest.raises(ValueError, match="not int16"):
            src.read(slice(0, 10), slice(0, 10), np.empty((10, 11), np.int16))
        with pytest.raises(ValueError, match="adjacent"):
            src.read(slice(0, 10), slice(0, 10), np.empty((10, 20), np.int16)[:, ::2])
    finally:
        src.close()


def test_open_errors_carry_gdals_message(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(RasterFileError, match="No such file"):
        GdalRasterFile(str(tmp_path / "missing.tif"))
    text = tmp_path / "notes.tif"
    text.write_text("not an image\n")
    with pytest.raises(RasterFileError, match="not recognized as being in a supported file format"):
        GdalRasterFile(str(text))
    # GDAL's messages are raised, not printed by its default handler
    assert "ERROR" not in capfd.readouterr().err


def test_a_truncated_file_fails_on_its_pixels(tmp_path: Path) -> None:
    data = pixels("int16", (1024, 1024))
    path = write(tmp_path / "t.tif", data, tiled=True, compress="deflate")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    src = GdalRasterFile(str(path))  # the header is intact
    try:
        with pytest.raises(RasterFileError, match=str(path.name)):
            src.read(slice(0, 1024), slice(0, 1024), np.empty((1024, 1024), np.int16))
    finally:
        src.close()


def test_urls_are_opened_by_rasterio(tmp_path: Path) -> None:
    data = pixels("uint8")
    path = write(tmp_path / "u.tif", data, tiled=True)
    src = open_raster(f"file://{path}")
    try:
        assert isinstance(src, RasterioRasterFile) and src.geokeys_epsg is None
        out = src.read(slice(0, 700), slice(0, 900), np.empty((700, 900), np.uint8))
        np.testing.assert_array_equal(out, data)
    finally:
        src.close()
    local = open_raster(str(path))
    assert isinstance(local, GdalRasterFile)
    local.close()


def test_reprojection_band_is_rasterios(tmp_path: Path) -> None:
    path = str(write(tmp_path / "r.tif", pixels("int16"), tiled=True))
    src = GdalRasterFile(path)
    band = src.rasterio_band()
    assert band.bidx == 1 and band.ds.name == path and not band.ds.closed
    src.close()
    assert band.ds.closed


@pytest.mark.parametrize(
    ("crs", "options", "expected"),
    [
        ("EPSG:32755", {"tiled": True}, 32755),
        ("EPSG:32756", {"tiled": True, "BIGTIFF": "YES"}, 32756),
        ("EPSG:3577", {"ENDIANNESS": "BIG"}, 3577),
        ("EPSG:4326", {}, 4326),
        # a CRS of parameters, without an EPSG code: GDAL's reading decides
        ("+proj=utm +zone=55 +south +ellps=GRS80 +towgs84=0,0,0 +units=m", {}, None),
        (None, {}, None),
    ],
)
def test_geokeys_name_the_crs_gdal_reads(tmp_path: Path, crs, options, expected) -> None:
    path = write(tmp_path / "g.tif", pixels("uint8", (64, 64)), crs=crs, **options)
    assert geokeys_epsg(str(path)) == expected
    if expected is not None:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == expected


def test_geokeys_of_other_files_are_unknown(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"GIF89a" + bytes(100))
    assert geokeys_epsg(str(tmp_path / "x.tif")) is None
    assert geokeys_epsg(str(tmp_path / "missing.tif")) is None
    path = write(tmp_path / "p.tif", pixels("uint8", (64, 64)), crs="EPSG:32755")
    assert geokeys_epsg(str(path)) == 32755
    # a sidecar's CRS overrides the file's own in GDAL: the keys are then not trusted
    Path(f"{path}.aux.xml").write_text("<PAMDataset><SRS>EPSG:32754</SRS></PAMDataset>\n")
    assert geokeys_epsg(str(path)) is None
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32754


def test_gdal_warnings_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(write(tmp_path / "w.tif", pixels("uint8", (64, 64)), tiled=True))
    # an unknown GDAL_NUM_THREADS value draws a warning from the GTiff driver
    with rasterio.Env(GDAL_NUM_THREADS="lots"), caplog.at_level(logging.WARNING):
        src = GdalRasterFile(path)
        try:
            src.read(slice(0, 64), slice(0, 64), np.empty((64, 64), np.uint8))
        finally:
            src.close()
    assert any("NUM_THREADS" in r.getMessage() for r in caplog.records)


# --- the partial last row of blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "options"),
    [
        ("uint8", {}),
        ("int16", {}),
        ("int16", {"ENDIANNESS": "BIG"}),
        ("float32", {"BIGTIFF": "YES"}),
    ],
)
def test_last_block_row_inflated_here_reads_as_gdal(
    tmp_path: Path, dtype: str, options: dict
) -> None:
    """A DEFLATE file 700 rows high in 256-row blocks: rows 512:700 are the partial last block row, inflated here
    (not through libtiff's streaming path); every window gives rasterio's pixels."""
    data = pixels(dtype, (700, 900), seed=3)
    path = str(
        write(
            tmp_path / "d.tif",
            data,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
            **options,
        )
    )
    src = GdalRasterFile(path)
    try:
        assert src._edge_row == 512
        windows = [
            (slice(600, 700), slice(0, 900)),  # inside the last block row
            (slice(300, 700), slice(100, 800)),  # across it
            (slice(511, 513), slice(850, 900)),  # one row each side, the partial last column
            (slice(699, 700), slice(0, 1)),
        ]
        for rows, cols in windows:
            out = np.full((rows.stop - rows.start, cols.stop - cols.start), 7, dtype)
            src.read(rows, cols, out)
            np.testing.assert_array_equal(out, data[rows, cols], err_msg=f"{rows}, {cols}")
    finally:
        src.close()


@pytest.mark.parametrize(
    "options",
    [
        {"compress": "lzw"},
        {"compress": "deflate", "predictor": 2},
        {
            "compress": "deflate",
            "blockysize": 700,
        },  # no partial block row (one strip-high tile row)
    ],
    ids=["lzw", "predictor", "whole-blocks"],
)
def test_other_files_are_read_by_gdal_alone(tmp_path: Path, options: dict) -> None:
    data = pixels("int16", (700, 900), seed=4)
    opts = {"tiled": True, "blockxsize": 256, "blockysize": 256, **options}
    if opts["blockysize"] == 700:
        opts.update(tiled=False, blockysize=700)
        del opts["blockxsize"]
    path = str(write(tmp_path / "o.tif", data, **opts))
    src = GdalRasterFile(path)
    try:
        assert src._edge_row is None
        out = np.empty((400, 700), np.int16)
        src.read(slice(300, 700), slice(100, 800), out)
        np.testing.assert_array_equal(out, data[300:700, 100:800])
    finally:
        src.close()


def test_sparse_last_row_blocks_are_left_to_gdal(tmp_path: Path) -> None:
    """Blocks never written (SPARSE_OK) have no bytes to inflate: GDAL fills them with nodata."""
    data = pixels("uint8", (700, 900), seed=5)
    data[data == 0] = 1
    data[512:, 256:512] = 0  # one all-nodata block of the last row: not written
    path = str(
        write(
            tmp_path / "s.tif",
            data,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
            nodata=0,
            SPARSE_OK=True,
        )
    )
    with rasterio.open(path) as check:
        assert check.get_tag_item("BLOCK_OFFSET_1_2", "TIFF", bidx=1) in (None, "0", "")
    src = GdalRasterFile(path)
    try:
        out = np.full((188, 900), 9, np.uint8)
        src.read(slice(512, 700), slice(0, 900), out)
        np.testing.assert_array_equal(out, data[512:700])
    finally:
        src.close()


def test_a_truncated_last_block_row_fails_with_gdals_message(tmp_path: Path) -> None:
    data = pixels("int16", (700, 900), seed=6)
    path = write(
        tmp_path / "tr.tif", data, tiled=True, blockxsize=256, blockysize=256, compress="deflate"
    )
    with rasterio.open(path) as check:
        last = int(check.get_tag_item("BLOCK_OFFSET_3_2", "TIFF", bidx=1))
    path.write_bytes(path.read_bytes()[: last + 10])  # the file ends inside a block of the last row
    src = GdalRasterFile(str(path))
    try:
        with pytest.raises(RasterFileError, match="tr.tif"):
            src.read(slice(512, 700), slice(0, 900), np.empty((188, 900), np.int16))
    finally:
        src.close()


def test_a_gdal_virtual_path_reads_its_last_block_row_through_gdal(tmp_path: Path) -> None:
    """A path the OS cannot open (/vsizip/...) is still GDAL's to read, the last block row included."""
    import zipfile

    data = pixels("uint8", (700, 900), seed=7)
    path = write(
        tmp_path / "z.tif", data, tiled=True, blockxsize=256, blockysize=256, compress="deflate"
    )
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        archive.write(path, "z.tif")
    src = open_raster(f"/vsizip/{tmp_path / 'z.zip'}/z.tif")
    try:
        assert isinstance(src, GdalRasterFile) and src._edge_row == 512
        out = np.empty((400, 900), np.uint8)
        src.read(slice(300, 700), slice(0, 900), out)
        np.testing.assert_array_equal(out, data[300:700])
    finally:
        src.close()

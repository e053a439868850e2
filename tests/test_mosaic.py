"""Overview mosaics from tile outputs (eostats.mosaic).

The tile COGs and STAC items are made here with rasterio and json directly, so the inputs do not depend on
eostats.cog / eostats.metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from eostats.cog import cog_problems
from eostats.mosaic import build_mosaic

TILE_PX = 256  # tile size in pixels
RES = 30.0  # tile pixel size, metres
TILE_M = TILE_PX * RES  # 7680 m
ORIGIN = (1_000_000.0, -2_000_000.0)  # grid origin (lower left), EPSG:3577


def tile_bounds(x: int, y: int) -> tuple[float, float]:
    """Left and top of tile (x, y); y increases northwards as in odc-stats grids."""
    return ORIGIN[0] + x * TILE_M, ORIGIN[1] + (y + 1) * TILE_M


def write_tile_cog(
    path: Path, values: np.ndarray, left: float, top: float, nodata, description: str
) -> None:
    profile = {
        "driver": "MEM",
        "width": TILE_PX,
        "height": TILE_PX,
        "count": 1,
        "dtype": values.dtype.name,
        "crs": "EPSG:3577",
        "transform": from_origin(left, top, RES, RES),
        "nodata": nodata,
    }
    with rasterio.open("mem", "w", **profile) as src:
        src.write(values, 1)
        src.set_band_description(1, description)
        # 128 px blocks: the 256 px tile gets one overview level (factor 2), as tile outputs do at scale
        rasterio.shutil.copy(
            src,
            path,
            driver="COG",
            BLOCKSIZE=128,
            COMPRESS="DEFLATE",
            OVERVIEW_RESAMPLING="AVERAGE",
        )


def write_item(path: Path, hrefs: dict[str, str]) -> None:
    assets = {
        band: {"href": href, "type": "image/tiff; application=geotiff"}
        for band, href in hrefs.items()
    }
    path.write_text(json.dumps({"type": "Feature", "id": path.stem, "assets": assets}))


@pytest.fixture
def tiles(tmp_path):
    """A 2x2 block of tiles with tile (1, 0) missing; float32 'sdev' and int16 'red' bands per tile."""
    rng = np.random.default_rng(42)
    items, values = [], {}
    for x, y in [(0, 0), (0, 1), (1, 1)]:
        tdir = tmp_path / "tiles" / f"x{x}" / f"y{y}"
        tdir.mkdir(parents=True)
        left, top = tile_bounds(x, y)
        sdev = rng.random((TILE_PX, TILE_PX), dtype=np.float32) * 100
        red = rng.integers(0, 3000, size=(TILE_PX, TILE_PX), dtype=np.int16)
        write_tile_cog(tdir / "t_sdev.tif", sdev, left, top, np.nan, "sdev")
        write_tile_cog(tdir / "t_red.tif", red, left, top, -999, "red")
        item = tdir / "t.stac-item.json"
        write_item(item, {"sdev": "t_sdev.tif", "red": "t_red.tif"})  # relative hrefs
        items.append(item)
        values[(x, y)] = {"sdev": sdev, "red": red}
    return items, values


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    h, w = a.shape
    return a.astype(np.float64).reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def expected_mosaic(values, band: str, fill: float) -> np.ndarray:
    """The 2x2-tile mosaic at 120 m: 4x4 block means, north (y=1) on top, the missing tile filled."""
    n = TILE_PX // 4
    out = np.full((2 * n, 2 * n), fill, dtype=np.float64)
    for (x, y), bands in values.items():
        row = (1 - y) * n
        out[row : row + n, x * n : (x + 1) * n] = block_mean(bands[band], 4)
    return out


def test_per_band_mosaic(tiles, tmp_path):
    items, values = tiles
    paths = build_mosaic(items, ["sdev", "red"], tmp_path / "mosaic", resolution=120, threads=2)
    assert paths == [tmp_path / "mosaic" / "sdev.tif", tmp_path / "mosaic" / "red.tif"]
    left, top = tile_bounds(0, 1)

    with rasterio.open(paths[0]) as ds:
        assert ds.crs.to_epsg() == 3577
        assert ds.transform == from_origin(left, top, 120, 120)
        assert (ds.width, ds.height) == (128, 128)  # two tiles of 7680 m at 120 m each way
        assert ds.dtypes == ("float32",) and np.isnan(ds.nodata)
        assert ds.descriptions == ("sdev",)
        assert len(ds.overviews(1)) == 7
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        sdev = ds.read(1)
    expected = expected_mosaic(values, "sdev", np.nan)
    assert np.isnan(sdev[64:, 64:]).all()  # tile (1, 0), south-east, is absent
    np.testing.assert_allclose(sdev, expected, rtol=1e-5)

    with rasterio.open(paths[1]) as ds:
        assert ds.dtypes == ("int16",) and ds.nodata == -999
        red = ds.read(1)
    expected = expected_mosaic(values, "red", -999)
    assert (red[64:, 64:] == -999).all()
    # integers: GDAL rounds each of the two averaging steps, so allow one unit
    assert np.abs(red.astype(float) - expected).max() <= 1.0
    for p in paths:
        assert cog_problems(p, blocksize=512, overviews=7, compress="zstd") == []
    assert sorted(f.name for f in (tmp_path / "mosaic").iterdir()) == [
        "red.tif",
        "sdev.tif",
    ]  # no temporaries


def test_multiband_mosaic_and_explicit_path(tiles, tmp_path):
    items, values = tiles
    out = tmp_path / "m" / "all.tif"
    paths = build_mosaic(
        items[:2], ["sdev"], out, per_band=False, overview_levels=3, blocksize=256, threads=1
    )
    assert paths == [out]
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.descriptions == ("sdev",)
        assert (ds.width, ds.height) == (64, 128)  # only column x=0 remains
        assert len(ds.overviews(1)) == 3
        data = ds.read(1)
    np.testing.assert_allclose(data, expected_mosaic(values, "sdev", np.nan)[:, :64], rtol=1e-5)
    assert cog_problems(out, blocksize=256, overviews=3) == []


def test_multiband_needs_one_nodata(tiles, tmp_path):
    items, _ = tiles
    with pytest.raises(ValueError, match="one nodata"):
        build_mosaic(items, ["sdev", "red"], tmp_path / "m", per_band=False)


def test_decimated_reads_use_the_tile_overviews(tmp_path):
    # a tile whose overview deliberately differs from its full resolution pixels: the mosaic must show the
    # overview values, proving it read the overview instead of averaging 4x4 full-resolution pixels
    left, top = tile_bounds(0, 0)
    tif = tmp_path / "t_b.tif"
    profile = {
        "driver": "GTiff",
        "width": TILE_PX,
        "height": TILE_PX,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:3577",
        "transform": from_origin(left, top, RES, RES),
        "nodata": -1.0,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
    }
    with rasterio.open(tif, "w", **profile) as ds:
        ds.write(np.full((TILE_PX, TILE_PX), 7.0, np.float32), 1)
        ds.build_overviews([2], Resampling.average)
        ds.write(np.full((TILE_PX, TILE_PX), 1.0, np.float32), 1)
    write_item(tmp_path / "t.stac-item.json", {"b": "t_b.tif"})
    (path,) = build_mosaic(
        [tmp_path / "t.stac-item.json"], ["b"], tmp_path / "out", overview_levels=1
    )
    with rasterio.open(path) as ds:
        assert np.unique(ds.read(1)).tolist() == [7.0]


def test_resolution_must_divide_the_tile_size(tiles, tmp_path):
    items, _ = tiles
    with pytest.raises(ValueError, match="resolution must divide the tile size"):
        build_mosaic(items, ["sdev"], tmp_path / "m", resolution=100)
    assert not (tmp_path / "m").exists() or list((tmp_path / "m").iterdir()) == []


def test_missing_band_asset_is_named(tiles, tmp_path):
    items, _ = tiles
    with pytest.raises(ValueError, match=r"no asset for band\(s\) \['blue'\]"):
        build_mosaic(items, ["sdev", "blue"], tmp_path / "m")

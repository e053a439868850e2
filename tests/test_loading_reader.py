"""eostats.loading.TaskReader against the straightforward odc-stac + GDAL pipeline, and the warp kernels vs GDAL.

The reference pipeline (written out below) loads each native grid's datasets with ``odc.stac.load`` on the
datasets' own pixels over the whole tile, masks and fuses them lazily with the plugin, and reprojects with odc-geo's
``xr_reproject`` (GDAL's warper). The reader must give the same observations block by block. GDAL's default
coordinate transformer is approximate (destination pixel centres placed up to 1/8 pixel off), which moves noisy
bands by 1-3 DN; the reference therefore runs GDAL with its exact transformer (``tolerance=0``), and then
agreement is required on all but a handful of pixels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import odc.stac
import pystac
import pytest
import xarray as xr
from affine import Affine
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.xr import xr_reproject
from rasterio.warp import Resampling, reproject

from eostats.grids import parse_grid
from eostats.kernels.warp import (
    nearest_index,
    pixel_map,
    warp_bilinear,
    warp_bilinear_bands,
    warp_nearest,
)
from eostats.loading import TaskReader, load_task, native_geobox, solar_day
from eostats.plugins import resolve_plugin
from eostats.plugins.tools import stacked_bands
from eostats.sources import read_items

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 256, "origin": [-2688000, -5472000]}


# ----------------------------------------------------------------------------------------------------------------
# GDAL's warper vs the warp kernels


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, GeoBox, GeoBox]:
    """A noisy int16 UTM raster with a nodata disc and scattered nodata, and an Albers grid over it."""
    rng = np.random.default_rng(0)
    h = w = 300
    src = rng.integers(100, 3000, (h, w)).astype(np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    src[(yy - 120) ** 2 + (xx - 90) ** 2 < 40**2] = -999
    src[rng.random((h, w)) < 0.02] = -999
    src_box = GeoBox((h, w), Affine(30, 0, 690000, 0, -30, 6100000), "EPSG:32755")
    dst_box = GeoBox.from_bbox(
        src_box.extent.to_crs("EPSG:3577").boundingbox, "EPSG:3577", resolution=30
    )
    return src, src_box, dst_box


def gdal_warp(src, src_box, dst_box, resampling, nodata):
    out = np.full(dst_box.shape.yx, nodata if nodata is not None else 0, dtype=src.dtype)
    reproject(
        src,
        out,
        src_transform=src_box.transform,
        src_crs=src_box.crs.to_wkt(),
        dst_transform=dst_box.transform,
        dst_crs=dst_box.crs.to_wkt(),
        resampling=resampling,
        src_nodata=nodata,
        dst_nodata=nodata,
        tolerance=0,  # GDAL's exact transformer: no approximation on its side
    )
    return out


def test_nearest_matches_gdal(scene) -> None:
    src, src_box, dst_box = scene
    ours = warp_nearest(src, pixel_map(src_box, dst_box), dst_box.shape.yx, -999)
    ref = gdal_warp(src, src_box, dst_box, Resampling.nearest, -999)
    assert np.mean(ours == ref) >= 0.9999
    np.testing.assert_array_equal(ours == -999, ref == -999)


@pytest.mark.parametrize("stride_pad", [0, 37])
def test_nearest_index_is_the_pixel_maps_centre(scene, stride_pad) -> None:
    """nearest_index picks exactly PixelMap.centre's pixels (same lattice, same arithmetic), in rows of the
    given stride; -1 outside the source (the Albers grid's corners lie outside the UTM raster)."""
    _, src_box, dst_box = scene
    h, w = src_box.shape.yx
    stride = w + stride_pad
    got = nearest_index(src_box, dst_box, stride)
    centre = pixel_map(src_box, dst_box).centre.reshape(dst_box.shape.yx)
    assert got.shape == centre.shape and got.dtype == np.int32  # the indices fit
    outside = centre < 0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(got < 0, outside)
    np.testing.assert_array_equal(
        got[~outside], centre[~outside] // w * stride + centre[~outside] % w
    )
    with pytest.raises(ValueError, match="row stride"):
        nearest_index(src_box, dst_box, w - 1)
    # rows too long for int32 indices: int64, the same pixels
    wide = nearest_index(src_box, dst_box, 2**31 // h + 1)
    assert wide.dtype == np.int64
    np.testing.assert_array_equal(wide < 0, outside)
    np.testing.assert_array_equal(wide[~outside] % (2**31 // h + 1), centre[~outside] % w)


def test_bilinear_matches_gdal_rule(scene) -> None:
    """Same nodata pattern (centre-pixel rule, renormalised weights) and values within 1 DN (rounding of values
    within ~1e-3 of a half, from the lattice interpolation of coordinates)."""
    src, src_box, dst_box = scene
    ours = warp_bilinear(src, pixel_map(src_box, dst_box), dst_box.shape.yx, -999)
    ref = gdal_warp(src, src_box, dst_box, Resampling.bilinear, -999)
    np.testing.assert_array_equal(ours == -999, ref == -999)
    diff = np.abs(ours.astype(np.int32) - ref)
    assert diff.max() <= 1
    assert np.mean(diff == 0) >= 0.98


def bilinear_rule(src: np.ndarray, sx: np.ndarray, sy: np.ndarray, nodata) -> np.ndarray:
    """The module docstring's bilinear rule, pixel by pixel in Python, on the map's source coordinates."""
    h, w = src.shape
    is_int = src.dtype.kind in "iu"
    has_nodata = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
    out = np.full(sx.shape, nodata if has_nodata else (np.nan if not is_int else 0), src.dtype)

    def valid(v) -> bool:
        return v == v and not (has_nodata and v == nodata)

    for index in np.ndindex(sx.shape):
        x, y = float(sx[index]), float(sy[index])
        if x + 1e-10 < 0 or y + 1e-10 < 0:
            continue
        cx, cy = int(x + 1e-10), int(y + 1e-10)
        if cx >= w or cy >= h or not valid(src[cy, cx]):
            continue
        ix, iy = math.floor(x - 0.5), math.floor(y - 0.5)
        fx, fy = 1.5 - (x - ix), 1.5 - (y - iy)
        acc = total = 0.0
        samples = (
            (ix, iy, fx * fy),
            (ix + 1, iy, (1.0 - fx) * fy),
            (ix + 1, iy + 1, (1.0 - fx) * (1.0 - fy)),
            (ix, iy + 1, fx * (1.0 - fy)),
        )
        for jx, jy, weight in samples:
            if 0 <= jx < w and 0 <= jy < h and weight > 0.0 and valid(src[jy, jx]):
                acc += weight * float(src[jy, jx])
                total += weight
        if total < 1e-5:
            continue
        value = acc if total == 1.0 else acc / total
        if is_int:
            info = np.iinfo(src.dtype)
            value = min(max(math.floor(value + 0.5), info.min), info.max)
            if has_nodata and value == nodata:
                value = nodata + 1 if nodata == info.min else nodata - 1
        out[index] = value
    return out


@pytest.mark.parametrize("kind", ["int16", "uint8", "float32"])
def test_bilinear_is_the_rule_exactly(scene, kind: str) -> None:
    """Every value of the kernel (its branch-free path for four valid samples and its general path) equals the
    rule computed pixel by pixel: nodata holes, the source's edges, and a part of the grid outside the source."""
    src, src_box, _ = scene
    src, src_box = src[:70, :60], src_box[:70, :60]
    dst_box = GeoBox.from_bbox(
        src_box.extent.to_crs("EPSG:3577").boundingbox.buffered(45), "EPSG:3577", resolution=25
    )
    nodata = {"int16": -999, "uint8": None, "float32": np.nan}[kind]
    if kind == "uint8":
        src = (src % 256).astype(np.uint8)
    elif kind == "float32":
        src = np.where(src == -999, np.nan, src / 1e4).astype(np.float32)
    mapping = pixel_map(src_box, dst_box)
    ours = warp_bilinear(src, mapping, dst_box.shape.yx, nodata)
    expected = bilinear_rule(src, mapping.sx, mapping.sy, nodata)
    np.testing.assert_array_equal(ours, expected)
    holes = np.isnan(ours) | (ours == (0 if nodata is None else nodata))
    assert 0.05 < np.mean(holes) < 0.8  # both values and holes are tested


@pytest.mark.parametrize("kind", ["int16", "float32"])
def test_bands_warped_together_are_the_rule_exactly(scene, kind: str) -> None:
    """:func:`warp_bilinear_bands`: bands of observations lying in one buffer (a band axis with a gap, as the
    reader's decode buffers) get exactly the rule, band by band, into views of another buffer; bands with
    different holes at the same pixel (one band missing where the others have data) included."""
    src, src_box, _ = scene
    src, src_box = src[:70, :60], src_box[:70, :60]
    dst_box = GeoBox.from_bbox(
        src_box.extent.to_crs("EPSG:3577").boundingbox.buffered(45), "EPSG:3577", resolution=25
    )
    nodata = -999 if kind == "int16" else np.nan
    rng = np.random.default_rng(3)
    buffer = np.empty((3, 4, *src.shape), np.int16)  # (band, room for 4 observations, y, x)
    for b in range(3):
        for k in range(4):
            layer = np.roll(src, (k * 3, b * 2), axis=(0, 1)).astype(np.int16)
            layer[rng.random(src.shape) < 0.1 * b] = -999  # band 0 keeps the scene's holes only
            buffer[b, k] = layer
    if kind == "float32":
        buffer = np.where(buffer == -999, np.nan, buffer / 1e4).astype(np.float32)
    bands = buffer[:, :3]  # three observations of four: the band axis strides over a gap
    out_buffer = np.zeros((3, 5, *dst_box.shape.yx), buffer.dtype)
    out = out_buffer[:, 1:4]
    mapping = pixel_map(src_box, dst_box)
    returned = warp_bilinear_bands(bands, mapping, nodata, out)
    assert returned is out
    for b in range(3):
        for k in range(3):
            expected = bilinear_rule(bands[b, k], mapping.sx, mapping.sy, nodata)
            np.testing.assert_array_equal(out[b, k], expected)
    assert (
        not out_buffer[:, 0].any() and not out_buffer[:, 4].any()
    )  # nothing written outside the views
    # pixels where one band has data and another not, both ways; both values and holes
    holes = np.isnan(out) if kind == "float32" else out == nodata
    assert (~holes[0] & holes[2]).any() and (holes[0] & ~holes[2]).any()
    assert 0.05 < holes.mean() < 0.8


def test_bands_view_only_of_evenly_spaced_arrays() -> None:
    """The reader warps variables together only when their arrays are evenly spaced in one buffer."""
    from eostats.loading import _bands_view

    buffer = np.arange(2 * 5 * 3 * 4, dtype=np.int16).reshape(2, 5, 3, 4)
    views = [buffer[0, 1:4], buffer[1, 1:4]]
    together = _bands_view(views)
    np.testing.assert_array_equal(together, buffer[:, 1:4])
    assert np.shares_memory(together, buffer)
    assert _bands_view([buffer[1, 1:4], buffer[0, 1:4]]) is None  # out of order
    assert _bands_view([buffer[0, 1:4], buffer[0, 1:4].copy()]) is None  # another buffer
    assert _bands_view([buffer[0, 1:4], buffer[0, 2:5]]) is None  # overlapping
    assert _bands_view([buffer[0, 1:4], buffer[1, 1:4, :, ::-1]]) is None  # not C-contiguous
    other = np.arange(3 * 3 * 4, dtype=np.int16).reshape(3, 3, 4)
    assert _bands_view([other[0:1], other[1:2], other[2:3]]) is not None
    assert _bands_view([other[0:1], other[1:2], other[1:2]]) is None  # unevenly spaced


def test_bilinear_float_and_no_nodata(scene) -> None:
    src, src_box, dst_box = scene
    floats = np.where(src == -999, np.nan, src / 1e4).astype(np.float32)
    ours = warp_bilinear(floats, pixel_map(src_box, dst_box), dst_box.shape.yx, np.nan)
    ref = gdal_warp(floats, src_box, dst_box, Resampling.bilinear, np.nan)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, atol=2e-5, equal_nan=True)
    # uint8 0/255 masks without nodata: outside the source is 0
    mask = (src == -999).astype(np.uint8) * 255
    ours_m = warp_bilinear(mask, pixel_map(src_box, dst_box), dst_box.shape.yx, None)
    ref_m = gdal_warp(mask, src_box, dst_box, Resampling.bilinear, None)
    assert np.mean((ours_m > 127) == (ref_m > 127)) >= 0.999


def test_warps_write_into_a_given_array(scene) -> None:
    """``out=``: the result lands in the caller's array (a slice of a block's stack), the same as without it;
    an array that cannot take it is refused rather than written to a copy."""
    src, src_box, dst_box = scene
    mapping = pixel_map(src_box, dst_box)
    stack = np.stack([src, src[::-1].copy()])
    block = np.zeros((4, *dst_box.shape.yx), dtype=src.dtype)
    for warp in (warp_bilinear, warp_nearest):
        returned = warp(stack, mapping, dst_box.shape.yx, -999, out=block[1:3])
        np.testing.assert_array_equal(block[1:3], warp(stack, mapping, dst_box.shape.yx, -999))
        assert np.shares_memory(returned, block) and not block[0].any() and not block[3].any()
        with pytest.raises(ValueError, match="C-contiguous"):
            warp(stack, mapping, dst_box.shape.yx, -999, out=block[1:3, :, ::-1])
        with pytest.raises(ValueError, match="shape"):
            warp(stack, mapping, dst_box.shape.yx, -999, out=block)


@pytest.mark.parametrize("what", ["centre", "taps"])
def test_a_map_shared_by_threads_is_complete_for_each(what) -> None:
    """The reading threads warp with one pixel map: a thread asking for its lazily built indices while another
    builds them must get them complete (a half-built index array reads outside the source)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    src_box = GeoBox.from_bbox((600000, 6900000, 660000, 6960000), "EPSG:32755", resolution=30)
    dst_box = GeoBox.from_bbox(
        src_box.extent.to_crs("EPSG:3577").boundingbox, "EPSG:3577", resolution=30
    )[100:1900, 100:1900]
    expected = getattr(pixel_map(src_box, dst_box), what)
    expected = expected if what == "taps" else (expected,)
    for _ in range(3):
        mapping = pixel_map(src_box, dst_box)
        start = Barrier(2)

        def grab(_: int, mapping=mapping, start=start) -> tuple[np.ndarray, ...]:
            start.wait()
            value = getattr(mapping, what)
            return tuple(np.copy(v) for v in (value if what == "taps" else (value,)))

        with ThreadPoolExecutor(2) as pool:
            for got in pool.map(grab, range(2)):
                for a, b in zip(got, expected, strict=True):
                    np.testing.assert_array_equal(a, b)


def test_whole_pixel_shift_is_a_copy() -> None:
    src = np.arange(20, dtype=np.int16).reshape(4, 5)
    src_box = GeoBox((4, 5), Affine(30, 0, 600000, 0, -30, 7000000), "EPSG:32755")
    dst_box = GeoBox((3, 3), Affine(30, 0, 600030, 0, -30, 6999970), "EPSG:32755")
    mapping = pixel_map(src_box, dst_box)
    assert mapping.shift == (1, 1)
    expected = np.array([[6, 7, 8], [11, 12, 13], [16, 17, 18]], dtype=np.int16)
    np.testing.assert_array_equal(warp_bilinear(src, mapping, (3, 3), -999), expected)
    np.testing.assert_array_equal(warp_nearest(src, mapping, (3, 3), -999), expected)
    beyond = GeoBox((2, 2), Affine(30, 0, 600120, 0, -30, 6999910), "EPSG:32755")
    np.testing.assert_array_equal(
        warp_nearest(src, pixel_map(src_box, beyond), (2, 2), -999), [[19, -999], [-999, -999]]
    )


# ----------------------------------------------------------------------------------------------------------------
# the reference pipeline


def _native_grid(item: pystac.Item, band: str):
    props = {**item.properties, **item.assets[band].extra_fields}
    t = props["proj:transform"]
    res = float(t[0])
    return CRS(props["proj:code"]), res, ((t[2] / res) % 1.0, (t[5] / abs(t[4])) % 1.0)


def _fuse_days(xx: xr.Dataset, plugin) -> xr.Dataset:
    days = xx["solar_day"].values
    groups = []
    for day in np.unique(days):
        fused = plugin.fuse(xx.drop_vars("solar_day").isel(time=np.nonzero(days == day)[0]))
        groups.append(fused.expand_dims(time=[day]))
    return xr.concat(groups, dim="time", combine_attrs="override")


def reference_load(items: list[dict], tile: GeoBox, plugin) -> xr.Dataset:
    """odc-stac per native grid → plugin masks → fuse by solar day → xr_reproject; several grids fused on the tile."""
    parsed = [pystac.Item.from_dict(dict(it)) for it in items]
    by_grid = defaultdict(list)
    for item in parsed:
        crs, res, phase = _native_grid(item, plugin.input_bands[0])
        by_grid[(str(crs), res, round(phase[0], 6), round(phase[1], 6))].append(item)
    per_crs = []
    for (crs, res, px, py), group in sorted(by_grid.items()):
        gbox = native_geobox(tile, CRS(crs), res, (px, py), plugin.native_buffer_pixels)
        xx = odc.stac.load(
            group,
            bands=plugin.input_bands,
            geobox=gbox,
            groupby="id",
            resampling="nearest",
            chunks={},
        )
        lons = [Geometry(it.geometry, "EPSG:4326").centroid.coords[0][0] for it in group]
        times = [it.datetime.replace(tzinfo=None) for it in group]
        order = np.argsort(np.array(times, dtype="datetime64[us]"), kind="stable")
        days = np.array([solar_day(times[i], lons[i]) for i in order])
        xx = xx.assign_coords(solar_day=("time", days))
        masked = plugin.native_transform(xx)
        masked["solar_day"] = xx["solar_day"]
        fused = _fuse_days(masked, plugin)
        bools = [n for n, v in fused.data_vars.items() if v.dtype == bool]
        for n in bools:
            fused[n] = (fused[n].astype("uint8") * 255).assign_attrs(nodata=None)
        # tolerance=0: GDAL's exact transformer, so that only the reader's logic is compared
        on_tile = xr_reproject(fused, tile, resampling=plugin.resampling, tolerance=0)
        for n in bools:
            on_tile[n] = on_tile[n] > 127
        per_crs.append(on_tile)
    if len(per_crs) == 1:
        return per_crs[0].compute()
    stacked = xr.concat(per_crs, dim="time", combine_attrs="override").sortby("time")
    stacked = stacked.assign_coords(solar_day=("time", stacked["time"].values))
    return _fuse_days(stacked, plugin).compute()


@pytest.fixture(scope="module")
def task_items(sample_catalog: Path) -> tuple[list[dict], GeoBox]:
    """Every dataset touching one 256-px tile of the tiny sample (two UTM zones, two-row passes), year 2020."""
    grid = parse_grid(GRID)
    items = [it for it in read_items({"type": "stac_catalog", "path": str(sample_catalog)})]
    tiles: dict[tuple[int, int], int] = defaultdict(int)
    for it in items:
        for t in grid.tiles_for_geometry(Geometry(it["geometry"], "EPSG:4326")):
            tiles[t] += 1
    tile = max(tiles, key=tiles.get)
    box = grid.tile_geobox(*tile)
    mine = [
        it
        for it in items
        if tile in grid.tiles_for_geometry(Geometry(it["geometry"], "EPSG:4326"))
        and it["properties"]["datetime"].startswith("2020")
    ]
    assert len({it["properties"]["proj:code"] for it in mine}) == 2  # both UTM zones
    return mine, box


def first_name(ds: xr.Dataset) -> str:
    return next(iter(ds.data_vars))


def _nodata(var: xr.DataArray):
    return False if var.dtype == bool else var.attrs.get("nodata")


@pytest.mark.parametrize(
    "plugin_name,config",
    [
        ("pq", {}),
        (
            "gm-ls",
            {
                "cloud_filters": {
                    "cloud": [["opening", 3], ["dilation", 6]],
                    "shadow": [["dilation", 6]],
                }
            },
        ),
    ],
)
def test_reader_matches_reference_pipeline(task_items, plugin_name, config) -> None:
    items, tile = task_items
    plugin = resolve_plugin(plugin_name, config)
    ref = reference_load(items, tile, plugin)
    with TaskReader(items, tile, plugin, threads=2) as reader:
        np.testing.assert_array_equal(reader.days.astype("datetime64[ns]"), ref["time"].values)
        half = tile.shape.y // 2
        # two blocks of different shapes, stitched: block edges must not show
        top, bottom = (
            reader.read(slice(0, half), slice(0, None)),
            reader.read(slice(half, None), slice(0, None)),
        )
    # the variables of one dtype come in one buffer, which a plugin can take as its stack without a copy
    same = [v.values for v in top.data_vars.values() if v.dtype == top[first_name(top)].dtype]
    assert np.shares_memory(stacked_bands(same), same[0])
    # some days have no data over one of the blocks: they hold nodata (filled by the reading threads)
    assert any(
        not np.any(block[name].values[k] != _nodata(block[name]))
        for block in (top, bottom)
        for name in block.data_vars
        for k in range(block.sizes["time"])
    )
    ours = xr.concat([top, bottom], dim="y")
    assert set(ours.data_vars) == set(ref.data_vars)
    for name in ref.data_vars:
        a, b = ours[name].values, ref[name].values
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, name
        if a.dtype.kind in "iu" and plugin.resampling == "bilinear":
            nodata = ref[name].attrs.get("nodata")
            np.testing.assert_array_equal(a == nodata, b == nodata, err_msg=name)
            diff = np.abs(a.astype(np.int32) - b)[(a != nodata) & (b != nodata)]
            # the lattice of exact transforms vs GDAL's per-pixel ones: a value within ~1e-3 of a half may round
            # the other way
            assert diff.max() <= 1 and np.mean(diff == 0) >= 0.998, name
        else:
            assert np.mean(a == b) >= 0.9999, name
        assert np.any(a != (False if a.dtype == bool else ref[name].attrs.get("nodata"))), name


def test_lazy_load_task_equals_blocks(task_items) -> None:
    items, tile = task_items
    plugin = resolve_plugin("pq", {})
    lazy = load_task(items, tile, plugin, chunk_size=100)
    assert lazy["valid"].data.chunks[1:] == ((100, 100, 56), (100, 100, 56))
    whole = lazy.compute(scheduler="threads")
    with TaskReader(items, tile, plugin) as reader:
        block = reader.read(slice(100, 200), slice(0, 256))
    for name in block.data_vars:
        np.testing.assert_array_equal(whole[name].values[:, 100:200], block[name].values)
    assert math.isclose(float(whole["valid"].sum()), float(whole["valid"].values.sum()))


def test_bands_without_context_are_decoded_around_the_tile_only(task_items) -> None:
    """gm-ls buffers only its fmask clouds: the reader decodes its other bands on a window a few pixels around the
    tile instead of the whole buffered one, and the observations are identical to decoding everything."""
    items, tile = task_items
    config = {
        "cloud_filters": {"cloud": [["opening", 3], ["dilation", 6]], "shadow": [["dilation", 6]]}
    }
    plugin = resolve_plugin("gm-ls", config)
    assert plugin.context_bands == ["oa_fmask"]
    everything = resolve_plugin(
        "gm-ls", config
    )  # its reader decodes every band on the whole window
    with TaskReader(items, tile, plugin, threads=2) as reader:
        native = reader.groups[0]
        gbox = native_geobox(
            tile, native.crs, native.resolution, native.phase, plugin.native_buffer_pixels
        )
        ys, xs = reader._inner_window("nbart_red", gbox)
        assert ys.start == xs.start == plugin.native_buffer_pixels - 4
        assert reader._inner_window("oa_fmask", gbox) is None
        inner = reader.read(slice(0, None), slice(0, None))
    with TaskReader(items, tile, everything, threads=2) as reader:
        reader._context_bands = set(everything.input_bands)
        whole = reader.read(slice(0, None), slice(0, None))
    for name in whole.data_vars:
        np.testing.assert_array_equal(inner[name].values, whole[name].values, err_msg=name)
    assert (inner["nbart_red"].values != -999).sum() > 10_000  # not a comparison of nodata only


def test_blocks_the_mask_erases_are_not_decoded(task_items, monkeypatch) -> None:
    """gm-ls's early mask: the reader decodes fmask and contiguity first and skips the blocks of the other bands
    in which the mask keeps no pixel (left nodata, which the mask writes there anyway). The observations are
    identical to decoding every block, and blocks were skipped."""
    import eostats.loading

    items, tile = task_items
    config = {
        "cloud_filters": {"cloud": [["opening", 3], ["dilation", 6]], "shadow": [["dilation", 6]]}
    }
    plugin = resolve_plugin("gm-ls", config)
    assert plugin.mask_bands == ["oa_fmask", "oa_nbart_contiguity"]
    plans = []

    def planned(*args):
        runs = _kept_block_runs(*args)
        plans.append(runs)
        return runs

    _kept_block_runs = eostats.loading._kept_block_runs
    monkeypatch.setattr(eostats.loading, "_kept_block_runs", planned)
    with TaskReader(items, tile, plugin, threads=2) as reader:
        skipping = reader.read(slice(0, None), slice(0, None))
    asked = [p for p in plans if p is not None]
    assert asked, "no block was skipped: the test compares nothing"
    plans.clear()
    with TaskReader(items, tile, plugin, threads=2) as reader:
        reader._mask_bands = set()  # no early mask: every block decoded
        every = reader.read(slice(0, None), slice(0, None))
    assert plans == [None] * len(plans)
    for name in every.data_vars:
        np.testing.assert_array_equal(skipping[name].values, every[name].values, err_msg=name)
    assert (every["nbart_red"].values != -999).sum() > 10_000  # not a comparison of nodata only


def test_native_counts_equal_the_reduced_observations(task_items) -> None:
    """pq on one native grid: counts summed on native pixels and reprojected once equal the plugin's reduction of
    the reprojected observations, on two blocks of different shapes; with two UTM zones the reader does not
    count natively (days seen in both zones are fused on the tile first)."""
    items, tile = task_items
    plugin = resolve_plugin("pq", {})
    with TaskReader(items, tile, plugin, threads=2) as reader:
        assert reader.counts_natively is None
    seen = 0
    for zone in sorted({it["properties"]["proj:code"] for it in items}):
        one_zone = [it for it in items if it["properties"]["proj:code"] == zone]
        with TaskReader(one_zone, tile, plugin, threads=2) as reader:
            assert reader.counts_natively is not None
            for ys, xs in [(slice(0, 100), slice(0, 256)), (slice(100, 256), slice(37, 200))]:
                counts = reader.count(ys, xs)
                reduced = plugin.reduce(reader.read(ys, xs))
                assert list(counts) == [m.name for m in plugin.measurements]
                for name, values in counts.items():
                    assert values.dtype == np.uint16
                    np.testing.assert_array_equal(values, reduced[name].values, err_msg=name)
                seen += bool(counts["total"].max() >= 2)
                seen += bool((counts["clear_2_5"] < counts["clear"]).any())
    assert seen >= 3  # not only empty blocks: several days, pixels next to cloud
    bilinear = resolve_plugin("pq", {"resampling": "bilinear"})
    with TaskReader(one_zone, tile, bilinear, threads=2) as reader:
        assert reader.counts_natively is None


def test_days_of_one_observation_skip_the_fuse_and_match_the_reference(task_items) -> None:
    """gm-ls on one UTM zone with one scene per solar day: the reader hands the masked stacks on as the fused days
    (the default fuse returns a lone observation as it is); the result still equals the reference pipeline."""
    items, tile = task_items
    zones = sorted({it["properties"]["proj:code"] for it in items})
    plugin = resolve_plugin(
        "gm-ls", {"cloud_filters": {"cloud": [["opening", 3], ["dilation", 6]]}}
    )
    for zone in zones:
        seen_days: set = set()
        single = []
        for it in items:
            day = it["properties"]["datetime"][:10]
            if it["properties"]["proj:code"] == zone and day not in seen_days:
                seen_days.add(day)
                single.append(it)
        ref = reference_load(single, tile, plugin)
        with TaskReader(single, tile, plugin, threads=2) as reader:
            assert reader._fuse_keeps_single
            _ = reader.variables
            fused_days = []
            fuse = reader._fuse
            reader._fuse = lambda xx, seen=fused_days, fuse=fuse: seen.append(xx) or fuse(xx)
            ours = reader.read(slice(0, None), slice(0, None))
            assert not fused_days  # the per-day fuse was skipped
        for name in ref.data_vars:
            a, b = ours[name].values, ref[name].values
            nodata = ref[name].attrs.get("nodata")
            np.testing.assert_array_equal(a == nodata, b == nodata, err_msg=name)
            diff = np.abs(a.astype(np.int32) - b)[(a != nodata) & (b != nodata)]
            assert diff.max() <= 1 and np.mean(diff == 0) >= 0.998, name
        assert (ours["nbart_red"].values != -999).sum() > 1000


def _item_dict(version: str, extensions: list[str], properties: dict) -> dict:
    return {
        "type": "Feature",
        "stac_version": version,
        "stac_extensions": extensions,
        "id": "scene",
        "geometry": {"type": "Point", "coordinates": [149.0, -35.0]},
        "bbox": [149.0, -35.0, 149.0, -35.0],
        "properties": {"datetime": "2021-01-01T00:00:00Z", **properties},
        "assets": {"red": {"href": "/data/red.tif", "roles": ["data"]}},
        "links": [],
    }


def test_items_already_current_are_not_migrated_and_parse_the_same() -> None:
    import copy

    from eostats.loading import _needs_migration, _parse_item

    current = _item_dict(
        "1.1.0",
        [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        {"proj:code": "EPSG:32755", "proj:shape": [10, 10]},
    )
    older = _item_dict(
        "1.0.0",
        ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
        {"proj:epsg": 32755},
    )
    unknown = {**current, "stac_extensions": ["https://example.com/other/v1.0.0/schema.json"]}
    assert not _needs_migration(current)
    assert _needs_migration(older) and _needs_migration(unknown)
    assert _needs_migration({**current, "stac_version": "1.0.0"})
    for doc in (current, older, unknown):
        expected = pystac.Item.from_dict(copy.deepcopy(doc)).to_dict()
        assert _parse_item(doc).to_dict() == expected
    # the older item is migrated: its EPSG code becomes proj:code
    assert _parse_item(older).properties["proj:code"] == "EPSG:32755"

"""Water observation summaries (wofs-summary, wofs-summary-fh) on hand-built cubes with counts worked out here."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eostats.plugins import PluginConfigError, resolve_plugin

NODATA_BIT, NONCONTIG, LOW_SUN, TERRAIN, SLOPE, SHADOW, CLOUD, WET = 1, 2, 4, 8, 16, 32, 64, 128
DRY = 0


def cube(water: np.ndarray, chunk: int = 8) -> xr.Dataset:
    data = da.from_array(water.astype(np.uint8), chunks=(1, chunk, chunk))
    return xr.Dataset({"water": xr.DataArray(data, dims=("time", "y", "x"), attrs={"nodata": 1})})


def run_days(plugin, water: np.ndarray, groups: list[list[int]]) -> xr.Dataset:
    native = plugin.native_transform(cube(water))
    return xr.concat([plugin.fuse(native.isel(time=g)).compute() for g in groups], dim="time")


def test_wofs_summary_declarations():
    plugin = resolve_plugin("wofs-summary")
    assert plugin.input_bands == ["water"]
    assert [(m.name, m.dtype) for m in plugin.measurements] == [
        ("count_wet", "int16"),
        ("count_clear", "int16"),
        ("frequency", "float32"),
    ]
    assert plugin.measurements[0].nodata == -999
    with pytest.raises(PluginConfigError, match="unknown key 'snow'"):
        resolve_plugin("wofs-summary", {"cloud_filters": {"snow": [["dilation", 1]]}})


def test_wofs_summary_counts_per_pixel():
    # observations (scenes) x pixels; scenes 0 and 1 are the same solar day
    pixels = {
        "wet_wet_dry": [
            WET,
            NODATA_BIT,
            WET,
            DRY,
        ],  # day 1 wet (the other scene has no data), day 2 wet, day 3 dry
        "never": [NODATA_BIT, NODATA_BIT, NODATA_BIT, NODATA_BIT],
        "cloud_only": [CLOUD, NODATA_BIT, CLOUD | WET, SHADOW],
        "slope_is_bad": [WET | SLOPE, NODATA_BIT, DRY, LOW_SUN],
        "wet_and_dry_same_day": [WET, DRY, DRY, NODATA_BIT],  # day 1 is neither
        "bad_beats_wet": [WET, TERRAIN, WET, NONCONTIG | WET],
    }
    water = np.array(list(pixels.values()), np.uint8).T[:, None, :]  # (time, 1, n)
    plugin = resolve_plugin("wofs-summary")
    out = plugin.reduce(run_days(plugin, water, [[0, 1], [2], [3]]))
    wet, clear = out["count_wet"].values[0], out["count_clear"].values[0]
    expected = {
        "wet_wet_dry": (2, 3),
        "never": (-999, -999),
        "cloud_only": (0, 0),
        "slope_is_bad": (0, 1),
        "wet_and_dry_same_day": (0, 1),
        "bad_beats_wet": (1, 1),
    }
    for i, name in enumerate(pixels):
        assert (wet[i], clear[i]) == expected[name], name
    freq = out["frequency"].values[0]
    assert freq[0] == np.float32(2) / np.float32(3)
    assert np.isnan(freq[1]) and np.isnan(freq[2])
    assert freq[3] == 0 and freq[5] == 1
    assert out["count_wet"].dtype == np.int16 and out["frequency"].dtype == np.float32


def test_wofs_summary_buffers_cloud_bits_even_over_nodata():
    water = np.zeros((1, 12, 12), np.uint8)
    water[0, 5, 5] = CLOUD
    water[0, 0, 0] = TERRAIN  # on the edge: the buffer is cut by the edge
    water[0, 5:8, 7] = NODATA_BIT  # next to the cloud
    water[0, 10, 10] = SHADOW  # not buffered: no filter for cloud_shadow
    plugin = resolve_plugin(
        "wofs-summary",
        {"cloud_filters": {"cloud": [["dilation", 2]], "terrain_shadow": [["dilation", 1]]}},
    )
    out = plugin.reduce(run_days(plugin, water, [[0]]))
    yy, xx = np.mgrid[0:12, 0:12]
    cloud_buffer = (yy - 5) ** 2 + (xx - 5) ** 2 <= 4
    terrain_buffer = ndimage.binary_dilation(
        water[0] == TERRAIN, structure=ndimage.generate_binary_structure(2, 1)
    )
    bad = cloud_buffer | terrain_buffer | (water[0] == SHADOW)
    nodata = water[0] == NODATA_BIT
    expected_clear = np.where(bad, 0, 1)
    # never-observed pixels are -999, except where a buffered cloud reaches them (odc-stats counts that as seen)
    expected_clear = np.where(nodata & ~bad, -999, expected_clear)
    np.testing.assert_array_equal(out["count_clear"].values, expected_clear)
    assert out["count_clear"].values[5, 7] == 0 and out["count_clear"].values[7, 7] == -999


def test_wofs_summary_fh_sums_summaries_ignoring_nodata():
    plugin = resolve_plugin("wofs-summary-fh")
    assert plugin.input_bands == ["count_wet", "count_clear"]
    cw = np.array([[[3, -999, 0, -999]], [[1, 2, -999, -999]], [[0, 4, -999, -999]]], np.int16)
    cc = np.array([[[5, -999, 0, -999]], [[2, 6, -999, -999]], [[3, 4, -999, -999]]], np.int16)
    xx = xr.Dataset(
        {
            "count_wet": (("time", "y", "x"), cw, {"nodata": -999}),
            "count_clear": (("time", "y", "x"), cc, {"nodata": -999}),
        }
    )
    out = plugin.reduce(xx)
    np.testing.assert_array_equal(out["count_wet"].values, [[4, 6, 0, -999]])
    np.testing.assert_array_equal(out["count_clear"].values, [[10, 10, 0, -999]])
    freq = out["frequency"].values[0]
    assert freq[0] == np.float32(4) / np.float32(10) and freq[1] == np.float32(0.6)
    assert np.isnan(freq[2]) and np.isnan(freq[3])
    assert out["count_clear"].dtype == np.int16

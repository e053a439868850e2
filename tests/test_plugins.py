"""Plugins gm-ls and pq on hand-built cubes, against values worked out here with numpy/scipy."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eostats.plugins import PluginConfigError, StatsPlugin, resolve_plugin
from eostats.plugins.gm_ls import LS_BANDS

NODATA = -999


def disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def cube(values: dict[str, np.ndarray], nodata: dict[str, int] | None = None) -> xr.Dataset:
    nodata = nodata or {}
    ds = xr.Dataset(
        {
            name: xr.DataArray(da.from_array(arr, chunks=(1, 8, 8)), dims=("time", "y", "x"))
            for name, arr in values.items()
        }
    )
    for name, nd in nodata.items():
        ds[name].attrs["nodata"] = nd
    return ds


def test_resolve_by_name_and_dotted_path():
    assert resolve_plugin("gm-ls").NAME == "gm_ls_annual"
    assert type(resolve_plugin("eostats.plugins.pq.ClearCounts")).__name__ == "ClearCounts"
    with pytest.raises(PluginConfigError, match="unknown plugin 'gm-xx'"):
        resolve_plugin("gm-xx")
    with pytest.raises(PluginConfigError, match="not a subclass"):
        resolve_plugin("collections.OrderedDict")
    with pytest.raises(PluginConfigError, match="bogus"):
        resolve_plugin("gm-ls", {"bogus": 1})
    with pytest.raises(PluginConfigError, match="cloud_filters.cloud: unknown operation 'blur'"):
        resolve_plugin("gm-ls", {"cloud_filters": {"cloud": [["blur", 2]]}})
    with pytest.raises(PluginConfigError, match="unknown mask class 'haze'"):
        resolve_plugin("gm-ls", {"cloud_filters": {"haze": []}})


def test_gm_ls_outputs_declared_like_odc_stats():
    plugin = resolve_plugin("gm-ls")
    assert isinstance(plugin, StatsPlugin)
    names = [(m.name, m.dtype) for m in plugin.measurements]
    assert names == [(b, "int16") for b in LS_BANDS] + [
        ("sdev", "float32"),
        ("edev", "float32"),
        ("bcdev", "float32"),
        ("count", "uint16"),
    ]
    assert plugin.input_bands == list(LS_BANDS) + ["oa_fmask", "oa_nbart_contiguity"]


def test_gm_ls_native_transform_masks_buffered_cloud_and_contiguity():
    rng = np.random.default_rng(1)
    shape = (2, 24, 24)
    fmask = np.ones(shape, np.uint8)
    fmask[0, 10, 10] = 2  # cloud
    fmask[1, 3, 20] = 3  # shadow
    fmask[1, 20, 2] = 0  # nodata
    contiguity = np.ones(shape, np.uint8)
    contiguity[0, 0, :] = 0
    bands = {b: rng.integers(100, 3000, shape).astype(np.int16) for b in LS_BANDS}
    xx = cube(
        {**bands, "oa_fmask": fmask, "oa_nbart_contiguity": contiguity},
        {b: NODATA for b in LS_BANDS},
    )
    plugin = resolve_plugin("gm-ls", {"cloud_filters": {"cloud": [["dilation", 3]], "shadow": []}})
    out = plugin.native_transform(xx).compute()
    assert set(out.data_vars) == set(LS_BANDS)

    expected_bad = np.zeros(shape, bool)
    expected_bad[0] = ndimage.binary_dilation(fmask[0] == 2, structure=disk(3))
    expected_bad[1] = fmask[1] == 3
    expected_bad |= fmask == 0
    expected_bad |= contiguity == 0
    for b in LS_BANDS:
        got = out[b].values
        assert got.dtype == np.int16
        np.testing.assert_array_equal(got == NODATA, expected_bad)
        np.testing.assert_array_equal(got[~expected_bad], bands[b][~expected_bad])


def odc_stats_dn(value: int) -> int:
    """odc-stats' round trip of one DN: float32 (x*1e-4 - 1e-4), back as y*1e4 + 1 in float32, truncated."""
    f32 = np.float32
    scaled = f32(value) * f32(1e-4) + f32(-1e-4)
    return int(np.trunc(scaled * f32(1e4) + f32(1.0)))


def test_gm_ls_reduce_identical_and_collinear_observations():
    plugin = resolve_plugin("gm-ls")
    t, ny, nx = 3, 2, 2
    data = {b: np.full((t, ny, nx), 1000 + 100 * i, np.int16) for i, b in enumerate(LS_BANDS)}
    # pixel (0, 1): three collinear observations: the geometric median is the middle one
    for i, b in enumerate(LS_BANDS):
        data[b][:, 0, 1] = [500 + 10 * i, 800 + 10 * i, 2000 + 10 * i]
    # pixel (1, 0): one observation has a band missing: dropped from every band; (1, 1): all missing
    data[LS_BANDS[2]][0, 1, 0] = NODATA
    for b in LS_BANDS:
        data[b][:, 1, 1] = NODATA
    xx = xr.Dataset(
        {
            b: xr.DataArray(v, dims=("time", "y", "x"), attrs={"nodata": NODATA})
            for b, v in data.items()
        }
    )
    out = plugin.reduce(xx)
    for i, b in enumerate(LS_BANDS):
        assert out[b].dtype == np.int16
        # identical observations: the value itself, through odc-stats' float32 round trip (1000 -> 999)
        assert out[b].values[0, 0] == odc_stats_dn(1000 + 100 * i)
        assert abs(int(out[b].values[0, 1]) - (800 + 10 * i)) <= 1
        assert out[b].values[1, 0] == odc_stats_dn(1000 + 100 * i)
        assert out[b].values[1, 1] == NODATA
    np.testing.assert_array_equal(out["count"].values, [[3, 3], [2, 0]])
    assert out["count"].dtype == np.uint16
    assert out["edev"].values[0, 0] == pytest.approx(0.0, abs=1e-3)
    # EMAD at the collinear pixel: median of distances {d(lo, mid), 0, d(hi, mid)} in DN
    d_lo = np.sqrt(len(LS_BANDS)) * 300
    d_hi = np.sqrt(len(LS_BANDS)) * 1200
    assert out["edev"].values[0, 1] == pytest.approx(np.median([d_lo, 0.0, d_hi]), rel=1e-3)
    assert np.isnan(out["sdev"].values[1, 1]) and np.isnan(out["bcdev"].values[1, 1])


def test_pq_counts_and_filters_against_numpy_and_scipy():
    rng = np.random.default_rng(7)
    shape = (4, 32, 32)
    fmask = rng.choice([0, 1, 1, 1, 2, 3, 5], size=shape).astype(np.uint8)
    plugin = resolve_plugin("pq", {"filters": {"1_2": [["opening", 1], ["dilation", 2]]}})
    xx = plugin.native_transform(cube({"oa_fmask": fmask}))
    # observations 0 and 1 are the same solar day: fuse them, then clean
    day1 = plugin.fuse(xx.isel(time=[0, 1])).compute()
    valid = fmask != 0
    erased = np.isin(fmask, [2, 3])
    np.testing.assert_array_equal(day1["valid"].values, valid[0] | valid[1])
    np.testing.assert_array_equal(day1["erased"].values, erased[0] | erased[1])
    expected_clean = ndimage.binary_dilation(
        ndimage.binary_opening(erased[0] | erased[1], structure=disk(1)), structure=disk(2)
    )
    np.testing.assert_array_equal(day1["erased_1_2"].values, expected_clean)

    days = [plugin.fuse(xx.isel(time=[i])).compute() for i in (2, 3)]
    stacked = xr.concat([day1, *days], dim="time")
    out = plugin.reduce(stacked)
    v = np.stack([valid[0] | valid[1], valid[2], valid[3]])
    e = np.stack([erased[0] | erased[1], erased[2], erased[3]])
    ec = np.stack(
        [expected_clean]
        + [ndimage.binary_dilation(ndimage.binary_opening(e[i], disk(1)), disk(2)) for i in (1, 2)]
    )
    np.testing.assert_array_equal(out["total"].values, v.sum(0))
    np.testing.assert_array_equal(out["clear"].values, (v & ~e).sum(0))
    np.testing.assert_array_equal(out["clear_1_2"].values, (v & ~ec).sum(0))
    assert [m.name for m in plugin.measurements] == ["total", "clear", "clear_1_2"]
    assert all(out[k].dtype == np.uint16 for k in out.data_vars)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32])
def test_class_lookup_and_erase_equal_isin_and_where(dtype) -> None:
    """The lookup-table class test and the in-memory erase give isin's and where's answers on every value the
    dtype holds, codes outside the dtype never matching; dask-backed inputs take the xarray path."""
    import dask.array as da

    from eostats.plugins.tools import class_in, erase

    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    values = rng.integers(info.min, info.max, (2, 9, 11), endpoint=True).astype(dtype)
    values[0, 0, :4] = [info.min, info.max, 0, -1 if info.min < 0 else 1]
    band = xr.DataArray(values, dims=("time", "y", "x"), attrs={"nodata": 0})
    codes = [0, 1, info.min, info.max, -1, 70_000, int(values[1, 4, 4])]
    held = [c for c in codes if info.min <= c <= info.max]
    hit = class_in(band, codes)
    assert hit.dtype == bool and hit.attrs == band.isin(held).attrs
    np.testing.assert_array_equal(hit.values, np.isin(values, held))
    lazy = class_in(band.copy(data=da.from_array(values, chunks=(1, 5, 5))), held)
    np.testing.assert_array_equal(lazy.values, hit.values)

    bad = xr.DataArray(rng.random(values.shape) < 0.4, dims=band.dims)
    erased = erase(band, bad, 5)
    assert erased.dtype == dtype and erased.attrs == {"nodata": 5}
    np.testing.assert_array_equal(erased.values, np.where(bad.values, 5, values))
    assert band.values[bad.values].size and not np.array_equal(band.values, erased.values)
    # in place: the input's own values are overwritten, and they are the result's
    scratch = band.copy(deep=True)
    overwritten = erase(scratch, bad, 5, in_place=True)
    np.testing.assert_array_equal(scratch.values, erased.values)
    assert np.shares_memory(overwritten.values, scratch.values)

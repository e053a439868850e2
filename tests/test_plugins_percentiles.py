"""Percentile plugins fc-percentiles and tcw-percentiles on hand-built cubes.

Percentiles are checked against values ranked by hand and against odc-algo's ``np_percentile`` (the function
odc-stats calls); masks and indices against expressions written out here.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from odc.algo._percentile import np_percentile

from eostats.plugins import PluginConfigError, resolve_plugin

FC = ["pv", "bs", "npv"]
LS = ["nbart_blue", "nbart_green", "nbart_red", "nbart_nir", "nbart_swir_1", "nbart_swir_2"]


def cube(values: dict[str, np.ndarray], nodata: dict | None = None, chunk: int = 8) -> xr.Dataset:
    ds = xr.Dataset(
        {
            k: xr.DataArray(da.from_array(v, chunks=(1, chunk, chunk)), dims=("time", "y", "x"))
            for k, v in values.items()
        }
    )
    for k, nd in (nodata or {}).items():
        ds[k].attrs["nodata"] = nd
    return ds


def on_grid(values: dict[str, np.ndarray], nodata: dict) -> xr.Dataset:
    return xr.Dataset(
        {
            k: xr.DataArray(v, dims=("time", "y", "x"), attrs={"nodata": nodata.get(k)})
            for k, v in values.items()
        }
    )


# --------------------------------------------------------------------------------------------------
# fc-percentiles


def test_fc_percentiles_declarations():
    plugin = resolve_plugin("fc-percentiles")
    assert plugin.input_bands == ["water", "pv", "bs", "npv", "ue"]
    names = [m.name for m in plugin.measurements]
    assert names == [f"{b}_pc_{p}" for b in FC for p in (10, 50, 90)] + ["qa"]
    assert all(m.dtype == "uint8" and m.nodata == 255 for m in plugin.measurements)
    with_count = resolve_plugin("fc-percentiles", {"count_valid": True})
    assert (with_count.measurements[-1].name, with_count.measurements[-1].dtype) == (
        "count_valid",
        "int16",
    )
    with pytest.raises(PluginConfigError, match="clip_range"):
        resolve_plugin("fc-percentiles", {"clip_range": [100, 0]})


def test_fc_percentiles_native_masks():
    # one observation per pixel, along x
    water = np.array([[[0, 16, 128, 144, 64, 0, 0, 0, 0, 1]]], np.uint8)
    pv = np.array([[[30, 31, 32, 33, 34, 35, 100, 40, 255, 36]]], np.uint8)
    bs = np.array([[[20, 20, 20, 20, 20, 20, 100, 20, 20, 20]]], np.uint8)
    npv = np.array([[[10, 10, 10, 10, 10, 10, 60, 10, 10, 10]]], np.uint8)
    ue = np.array([[[5, 5, 5, 5, 5, 40, 5, 5, 5, 5]]], np.uint8)
    plugin = resolve_plugin(
        "fc-percentiles", {"ue_threshold": 30, "max_sum_limit": 120, "clip_range": [0, 35]}
    )
    out = plugin.native_transform(
        cube({"water": water, "pv": pv, "bs": bs, "npv": npv, "ue": ue}, chunk=10)
    ).compute()
    # dry (bit 4 ignored) and ue < 30 and pv+bs+npv < 120 (100+100+60 = 260: odc-stats' uint8 sum wraps to 4)
    expected_valid = [True, True, False, False, False, False, False, True, True, False]
    np.testing.assert_array_equal(out["valid"].values[0, 0], expected_valid)
    np.testing.assert_array_equal(out["wet"].values[0, 0], [False, False, True, True] + [False] * 6)
    # clipped to 35, invalid -> 255, a band's own nodata stays 255
    np.testing.assert_array_equal(
        out["pv"].values[0, 0], [30, 31, 255, 255, 255, 255, 255, 35, 255, 255]
    )
    assert out["pv"].dtype == np.uint8


def test_fc_percentiles_fuses_a_day_by_rounded_mean():
    plugin = resolve_plugin("fc-percentiles")
    pv = np.array([[[10, 10, 7, 255]], [[13, 11, 255, 255]]], np.uint8)
    zeros = np.zeros_like(pv)
    water = np.array([[[0, 0, 0, 128]], [[0, 0, 1, 0]]], np.uint8)
    xx = cube({"water": water, "pv": pv, "bs": zeros, "npv": zeros, "ue": zeros}, chunk=4)
    fused = plugin.fuse(plugin.native_transform(xx)).compute()
    # 11.5 -> 12 and 10.5 -> 10 (half to even), one valid value, none valid
    np.testing.assert_array_equal(fused["pv"].values, [[12, 10, 7, 255]])
    np.testing.assert_array_equal(fused["wet"].values, [[False, False, False, True]])
    np.testing.assert_array_equal(fused["valid"].values, [[True, True, True, True]])


def test_fc_percentiles_reduce_ranks_and_qa():
    t = 6
    pv = np.full((t, 1, 5), 255, np.uint8)
    pv[:, 0, 0] = [5, 1, 9, 3, 7, 255]  # 5 valid: sorted 1 3 5 7 9
    pv[:, 0, 1] = [
        60,
        10,
        50,
        20,
        40,
        30,
    ]  # 6 valid: p10 index 0, p50 index round(2.5)=2, p90 index round(4.5)=4
    pv[:, 0, 2] = [1, 2, 255, 255, 255, 255]  # 2 valid: nodata
    # pixels 3 and 4: never valid; pixel 3 was wet once
    bands = {"pv": pv, "bs": pv.copy(), "npv": pv.copy()}
    valid = pv != 255
    wet = np.zeros_like(valid)
    wet[2, 0, 3] = True
    wet[0, 0, 0] = True  # wet and valid the same day: counts as valid only
    plugin = resolve_plugin("fc-percentiles", {"count_valid": True})
    out = plugin.reduce(on_grid({**bands, "valid": valid, "wet": wet}, {b: 255 for b in FC}))
    np.testing.assert_array_equal(out["pv_pc_10"].values, [[1, 10, 255, 255, 255]])
    np.testing.assert_array_equal(out["pv_pc_50"].values, [[5, 30, 255, 255, 255]])
    np.testing.assert_array_equal(out["pv_pc_90"].values, [[9, 50, 255, 255, 255]])
    np.testing.assert_array_equal(out["qa"].values, [[2, 2, 1, 0, 1]])
    np.testing.assert_array_equal(out["count_valid"].values, [[5, 6, 2, 0, 0]])
    assert out["qa"].dtype == np.uint8 and out["count_valid"].dtype == np.int16


def test_fc_percentiles_match_odc_algo_np_percentile():
    rng = np.random.default_rng(4)
    pv = rng.integers(0, 101, (9, 12, 12)).astype(np.uint8)
    pv[rng.random(pv.shape) < 0.4] = 255
    bands = {b: np.roll(pv, i, axis=0) for i, b in enumerate(FC)}
    valid = pv != 255
    out = resolve_plugin("fc-percentiles").reduce(
        on_grid({**bands, "valid": valid, "wet": np.zeros_like(valid)}, {b: 255 for b in FC})
    )
    for b in FC:
        for q in (0.1, 0.5, 0.9):
            expected = np_percentile(bands[b], q, 255)
            np.testing.assert_array_equal(out[f"{b}_pc_{round(100 * q)}"].values, expected)


# --------------------------------------------------------------------------------------------------
# tcw-percentiles

CRIST = {
    "wet": [0.0315, 0.2021, 0.3102, 0.1594, -0.6806, -0.6109],
    "bright": [0.2043, 0.4158, 0.5524, 0.5741, 0.3124, 0.2303],
    "green": [-0.1603, -0.2819, -0.4934, 0.7940, -0.0002, -0.1446],
}


def index_value(weights: list[float], dn: list[int]) -> int:
    total = 0.0
    for w, v in zip(weights, dn, strict=True):
        total = total + w * v
    return int(np.trunc(total))


def test_tcw_percentiles_declarations_and_coefficients():
    plugin = resolve_plugin("tcw-percentiles")
    assert plugin.input_bands == LS + ["oa_fmask", "oa_nbart_contiguity"]
    assert [m.name for m in plugin.measurements] == [
        f"{i}_pc_{p}" for i in ("wet", "bright", "green") for p in (10, 50, 90)
    ]
    assert all(m.dtype == "int16" and m.nodata == -9999 for m in plugin.measurements)
    custom = resolve_plugin(
        "tcw-percentiles",
        {"coefficients": {"ndwi_like": {"green": 1.0, "nir": -1.0}}, "bands": {"nir": "B08"}},
    )
    assert custom.input_bands == ["nbart_green", "B08", "oa_fmask", "oa_nbart_contiguity"]
    assert [m.name for m in custom.measurements] == [
        "ndwi_like_pc_10",
        "ndwi_like_pc_50",
        "ndwi_like_pc_90",
    ]
    with pytest.raises(PluginConfigError, match="unknown band role 'thermal'"):
        resolve_plugin("tcw-percentiles", {"coefficients": {"x": {"thermal": 1.0}}})
    with pytest.raises(PluginConfigError, match="no coefficients for tcg"):
        resolve_plugin("tcw-percentiles", {"output_bands": ["tcg"]})


def test_tcw_percentiles_native_indices_and_masks():
    pixels = [
        [812, 1034, 1311, 2760, 3123, 2217],  # clear
        [300, 500, 400, 3500, 1800, 900],  # clear, vegetated
        [812, 1034, 1311, 2760, 3123, 2217],  # cloud
        [812, 1034, 1311, 2760, 3123, 2217],  # contiguity 0
        [812, 1034, -999, 2760, 3123, 2217],  # one band missing
        [812, 1034, 1311, 2760, 3123, 2217],  # fmask nodata
        [50, 60, 70, 80, 9000, 9000],  # clear, strongly negative wetness
    ]
    dn = np.array(pixels, np.int16).T[:, None, None, :]  # (band, time, y, x)
    fmask = np.array([[[1, 1, 2, 1, 1, 0, 1]]], np.uint8)
    contiguity = np.array([[[1, 1, 1, 0, 1, 1, 1]]], np.uint8)
    plugin = resolve_plugin("tcw-percentiles")
    xx = cube(
        {
            **{b: dn[i] for i, b in enumerate(LS)},
            "oa_fmask": fmask,
            "oa_nbart_contiguity": contiguity,
        },
        {b: -999 for b in LS},
        chunk=7,
    )
    out = plugin.native_transform(xx).compute()
    bad = [False, False, True, True, True, True, False]
    for index, weights in CRIST.items():
        expected = [-9999 if bad[i] else index_value(weights, p) for i, p in enumerate(pixels)]
        np.testing.assert_array_equal(out[index].values[0, 0], expected)
        assert out[index].dtype == np.int16
    assert out["wet"].values[0, 0, 6] < -9999  # a real value below the nodata value


def test_tcw_percentiles_fuse_and_reduce():
    plugin = resolve_plugin("tcw-percentiles", {"output_bands": ["wet"]})
    day = xr.Dataset(
        {
            "wet": (
                ("time", "y", "x"),
                np.array([[[-100, -9999]], [[-103, -9999]]], np.int16),
                {"nodata": -9999},
            )
        }
    )
    np.testing.assert_array_equal(
        plugin.fuse(day)["wet"].values, [[-102, -9999]]
    )  # -101.5 -> -102 (half to even)

    rng = np.random.default_rng(2)
    wet = rng.integers(-3000, 500, (8, 10, 10)).astype(np.int16)
    wet[rng.random(wet.shape) < 0.35] = -9999
    wet[:, 0, 0] = [
        -12000,
        -11000,
        100,
        200,
        -9999,
        -9999,
        -9999,
        -9999,
    ]  # values below the nodata value
    out = plugin.reduce(on_grid({"wet": wet}, {"wet": -9999}))
    # odc-algo's np_percentile needs nodata to sort to one end: compare where that holds
    for q in (0.1, 0.5, 0.9):
        got = out[f"wet_pc_{round(100 * q)}"].values
        expected = np_percentile(wet[:, 1:, :], q, -9999)
        np.testing.assert_array_equal(got[1:, :], expected)
    # pixel (0, 0): valid values -12000 -11000 100 200 -> p10 index 0, p50 index round(1.5)=2, p90 index 3
    assert [out[f"wet_pc_{p}"].values[0, 0] for p in (10, 50, 90)] == [-12000, 100, 200]


def test_numpy_fallback_ranks_like_odc_algo():
    from eostats.plugins.tools import _sorted_percentiles

    rng = np.random.default_rng(8)
    data = rng.integers(0, 200, (7, 9, 9)).astype(np.uint8)
    data[rng.random(data.shape) < 0.4] = 255
    got = _sorted_percentiles(data, [0.1, 0.5, 0.9], 255, 3)
    for q, pc in zip([0.1, 0.5, 0.9], got, strict=True):
        np.testing.assert_array_equal(pc, np_percentile(data, q, 255))
    floats = np.where(data == 255, np.nan, data).astype(np.float32)
    for q, pc in zip(
        [0.1, 0.5, 0.9], _sorted_percentiles(floats, [0.1, 0.5, 0.9], np.nan, 3), strict=True
    ):
        np.testing.assert_array_equal(pc, np_percentile(floats, q, np.nan))


# --------------------------------------------------------------------------------------------------
# workflow level: one task of the sample collections through the tile runner

from plugin_samples import (  # noqa: E402
    GRID_30,
    build_task_cache,
    busiest_task,
    check_outputs,
    make_run,
    product_samples,
    run_task,
    scene_values_by_day,
    tile_points,
)


@pytest.fixture(scope="module")
def product_sample(tmp_path_factory):
    return product_samples(tmp_path_factory)


def test_fc_percentiles_tile_on_the_fc_sample(product_sample, tmp_path):
    catalog = product_sample("fc_wo")
    cache = build_task_cache(catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    run = make_run(tmp_path / "results", GRID_30, "fc-percentiles", {"count_valid": True})
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    pcs = {k: v[0] for k, v in bands.items() if "_pc_" in k}
    all_valid = np.logical_and.reduce([v != 255 for v in pcs.values()])
    qa = bands["qa"][0]
    np.testing.assert_array_equal(qa == 2, all_valid)
    assert set(np.unique(qa)) <= {0, 1, 2} and (qa == 2).any() and (qa != 2).any()
    for b in FC:
        lo, mid, hi = (pcs[f"{b}_pc_{p}"].astype(int) for p in (10, 50, 90))
        ok = lo != 255
        assert (lo[ok] <= mid[ok]).all() and (mid[ok] <= hi[ok]).all()
    count_valid = bands["count_valid"][0]
    # the bands are resampled bilinearly and the valid flag by majority: they can part at a mask edge
    assert ((count_valid >= 3) == all_valid).mean() >= 0.97

    points = tile_points(count_valid.shape, 300, seed=3)
    transform = run.grid.tile_geobox(task.x, task.y).transform
    expected = 0
    for scenes in scene_values_by_day(catalog, "water", 2021, transform, points).values():
        expected = expected + np.logical_or.reduce(
            [inside & ((v & 0b1110_1111) == 0) for inside, v in scenes]
        )
    got = np.array([count_valid[p] for p in points])
    assert (got == expected).mean() >= 0.97
    assert expected.max() >= 3


def test_tcw_percentiles_tile_on_the_landsat_sample(sample_catalog, tmp_path):
    cache = build_task_cache(sample_catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    run = make_run(tmp_path / "results", GRID_30, "tcw-percentiles")
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    for index in ("wet", "bright", "green"):
        lo, mid, hi = (bands[f"{index}_pc_{p}"][0].astype(int) for p in (10, 50, 90))
        ok = mid != -9999
        np.testing.assert_array_equal(lo != -9999, ok)
        assert (lo[ok] <= mid[ok]).all() and (mid[ok] <= hi[ok]).all()
    have = bands["bright_pc_50"][0] != -9999
    assert have.any() and (~have).any()

    # percentiles exist exactly where at least 3 solar days were clear (fmask clear or water, contiguous)
    points = tile_points(have.shape, 300, seed=4)
    transform = run.grid.tile_geobox(task.x, task.y).transform
    fmask = scene_values_by_day(sample_catalog, "oa_fmask", 2021, transform, points)
    contiguity = scene_values_by_day(sample_catalog, "oa_nbart_contiguity", 2021, transform, points)
    clear_days = 0
    for day, scenes in fmask.items():
        clear = [
            inside & np.isin(v, [1, 4, 5]) & (c == 1)
            for (inside, v), (_, c) in zip(scenes, contiguity[day], strict=True)
        ]
        clear_days = clear_days + np.logical_or.reduce(clear)
    got = np.array([have[p] for p in points])
    assert (got == (clear_days >= 3)).mean() >= 0.97

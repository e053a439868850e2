"""Reducers ndvi-median and band-stats on hand-built cubes with values worked out here (and odc-algo's
``np_percentile`` for the percentiles)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from odc.algo._percentile import np_percentile
from scipy import ndimage

from eostats.plugins import PluginConfigError, resolve_plugin

F32 = np.float32


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
# ndvi-median


def test_ndvi_median_masks_and_medians():
    plugin = resolve_plugin("ndvi-median", {"output_bands": "ndvi"})
    assert plugin.input_bands == ["nbart_red", "nbart_nir", "oa_fmask", "oa_nbart_contiguity"]
    assert [(m.name, m.dtype) for m in plugin.measurements] == [("ndvi", "float32")]
    # time x pixels: (red, nir) pairs
    red = np.array(
        [[1000, 1000, 500, 700], [1000, 1000, 500, 700], [1000, 300, 500, 700]], np.int16
    )[:, None, :]
    nir = np.array(
        [[3000, 2000, 4500, 2100], [4000, 2000, 1500, 2100], [1500, 2700, 500, 2100]], np.int16
    )[:, None, :]
    fmask = np.ones_like(red, dtype=np.uint8)
    fmask[2, 0, 1] = 2  # cloud: pixel 1 keeps two observations
    fmask[0, 0, 2] = 3  # shadow
    fmask[:, 0, 3] = [0, 2, 3]  # nothing clear at pixel 3
    contiguity = np.ones_like(fmask)
    contiguity[1, 0, 2] = 0
    xx = cube(
        {"nbart_red": red, "nbart_nir": nir, "oa_fmask": fmask, "oa_nbart_contiguity": contiguity},
        {"nbart_red": -999, "nbart_nir": -999},
        chunk=4,
    )
    native = plugin.native_transform(xx).compute()
    out = plugin.reduce(native)["ndvi"].values[0]
    # pixel 0: NDVI 0.5, 0.6, 0.2 -> 0.5; pixel 1: 1/3, 1/3 -> 1/3; pixel 2: only obs 2: 0; pixel 3: none
    assert out[0] == F32(0.5)
    assert out[1] == pytest.approx(1 / 3, rel=1e-6)
    assert out[2] == 0
    assert np.isnan(out[3])
    assert out.dtype == np.float32


def test_ndvi_median_even_count_is_the_mean_of_the_middle_two():
    plugin = resolve_plugin("ndvi-median", {"mask_band": None, "contiguity_band": None})
    red = np.array([[[1000]], [[1000]], [[1000]], [[-999]]], np.int16)
    nir = np.array(
        [[[3000]], [[1500]], [[9000]], [[5000]]], np.int16
    )  # NDVI 0.5, 0.2, 0.8, missing
    out = plugin.reduce(
        on_grid(
            {"nbart_red": red[:3], "nbart_nir": nir[:3]}, {"nbart_red": -999, "nbart_nir": -999}
        )
    )
    assert out["ndvi_median"].values[0, 0] == F32(0.5)
    red2 = np.array([[[1000]], [[1000]], [[-999]]], np.int16)
    nir2 = np.array([[[3000]], [[1500]], [[4000]]], np.int16)
    out2 = plugin.reduce(
        on_grid({"nbart_red": red2, "nbart_nir": nir2}, {"nbart_red": -999, "nbart_nir": -999})
    )
    assert out2["ndvi_median"].values[0, 0] == pytest.approx((0.5 + 0.2) / 2, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# band-stats


def test_band_stats_declarations_and_errors():
    plugin = resolve_plugin(
        "band-stats",
        {
            "bands": ["a", "b"],
            "statistics": ["mean", "percentiles", "count"],
            "percentiles": [25, 75],
        },
    )
    assert [(m.name, m.dtype) for m in plugin.measurements] == [
        ("a_mean", "float32"),
        ("a_pc_25", "float32"),
        ("a_pc_75", "float32"),
        ("b_mean", "float32"),
        ("b_pc_25", "float32"),
        ("b_pc_75", "float32"),
        ("count", "uint16"),
    ]
    with pytest.raises(PluginConfigError, match="unknown 'mode'"):
        resolve_plugin("band-stats", {"bands": ["a"], "statistics": ["mode"]})
    with pytest.raises(PluginConfigError, match="output_nodata is required"):
        resolve_plugin("band-stats", {"bands": ["a"], "output_dtype": "int16"})
    with pytest.raises(PluginConfigError, match="needs plugin_config.bands"):
        resolve_plugin("band-stats")
    with pytest.raises(PluginConfigError, match="mask_band is needed"):
        resolve_plugin("band-stats", {"bands": ["a"], "cloud_filters": {"cloud": []}})


def test_band_stats_every_statistic():
    plugin = resolve_plugin(
        "band-stats",
        {
            "bands": ["a", "b"],
            "statistics": ["mean", "median", "min", "max", "std", "count", "percentiles", "medoid"],
            "percentiles": [50],
            "percentile_min_count": 1,
            "ddof": 1,
            "output_dtype": "int16",
            "output_nodata": -1,
        },
    )
    # time x pixels; -999 missing. pixel 0: 4 full observations; pixel 1: b missing once (that obs is dropped
    # from a too); pixel 2: nothing
    a = np.array([[1, 10, -999], [2, 20, -999], [10, 30, -999], [3, 40, -999]], np.int16)[
        :, None, :
    ]
    b = np.array([[1, 5, -999], [2, -999, -999], [10, 5, -999], [1, 7, -999]], np.int16)[:, None, :]
    out = plugin.reduce(on_grid({"a": a, "b": b}, {"a": -999, "b": -999}))
    v = lambda name: out[name].values[0]  # noqa: E731
    np.testing.assert_array_equal(v("count"), [4, 3, 0])
    np.testing.assert_allclose(v("a_mean")[:2], [4.0, (10 + 30 + 40) / 3])
    np.testing.assert_allclose(v("a_median")[:2], [2.5, 30.0])
    np.testing.assert_array_equal(v("a_min"), [1, 10, -1])
    np.testing.assert_array_equal(v("a_max"), [10, 40, -1])
    np.testing.assert_allclose(
        v("a_std")[:2], [np.std([1, 2, 10, 3], ddof=1), np.std([10, 30, 40], ddof=1)], rtol=1e-6
    )
    # nearest rank: 4 values -> index round(1.5) = 2 of 1 2 3 10; 3 values -> index 1
    np.testing.assert_array_equal(v("a_pc_50"), [3, 30, -1])
    # medoid at pixel 0: points (1,1) (2,2) (10,10) (3,1): (2,2) has the least summed distance
    np.testing.assert_array_equal(v("a_medoid"), [2, 30, -1])
    np.testing.assert_array_equal(v("b_medoid"), [2, 5, -1])
    for name in ("a_mean", "a_median", "a_std"):
        assert np.isnan(v(name)[2])
    assert out["a_min"].dtype == np.int16 and out["count"].dtype == np.uint16


def test_band_stats_medoid_ties_take_the_earliest():
    plugin = resolve_plugin("band-stats", {"bands": ["a"], "statistics": ["medoid"]})
    a = np.array([[[7]], [[3]]], np.int16)
    assert plugin.reduce(on_grid({"a": a}, {"a": -999}))["a_medoid"].values[0, 0] == 7


def test_band_stats_percentiles_match_odc_algo():
    rng = np.random.default_rng(12)
    a = rng.normal(0, 1, (9, 10, 10)).astype(np.float32)
    a[rng.random(a.shape) < 0.4] = np.nan
    plugin = resolve_plugin(
        "band-stats", {"bands": ["a"], "statistics": ["percentiles"], "percentiles": [10, 50, 90]}
    )
    out = plugin.reduce(on_grid({"a": a}, {"a": float("nan")}))
    for p in (10, 50, 90):
        np.testing.assert_array_equal(out[f"a_pc_{p}"].values, np_percentile(a, p / 100, np.nan))


def test_band_stats_class_mask_with_buffer_and_bit_mask():
    a = np.full((1, 9, 9), 100, np.int16)
    fmask = np.ones((1, 9, 9), np.uint8)
    fmask[0, 4, 4] = 2
    plugin = resolve_plugin(
        "band-stats",
        {
            "bands": ["a"],
            "statistics": ["count"],
            "mask_band": "oa_fmask",
            "cloud_filters": {"cloud": [["dilation", 1]]},
        },
    )
    assert plugin.input_bands == ["a", "oa_fmask"]
    native = plugin.native_transform(
        cube({"a": a, "oa_fmask": fmask}, {"a": -999}, chunk=5)
    ).compute()
    cross = ndimage.binary_dilation(fmask[0] == 2)
    np.testing.assert_array_equal(plugin.reduce(native)["count"].values, np.where(cross, 0, 1))

    qa = np.full((1, 1, 3), 64, np.uint16)
    qa[0, 0, 1] = 8  # cloud bit
    qa[0, 0, 2] = 1  # fill
    bits = resolve_plugin(
        "band-stats",
        {"bands": ["a"], "statistics": ["count"], "mask_type": "bits", "mask_band": "QA_PIXEL"},
    )
    a1 = np.full((1, 1, 3), 5, np.int16)
    native = bits.native_transform(cube({"a": a1, "QA_PIXEL": qa}, {"a": -999}, chunk=3)).compute()
    np.testing.assert_array_equal(bits.reduce(native)["count"].values, [[1, 0, 0]])


# --------------------------------------------------------------------------------------------------
# workflow level: the Landsat sample through the tile runner

from plugin_samples import (  # noqa: E402
    GRID_30,
    build_task_cache,
    busiest_task,
    check_outputs,
    make_run,
    run_task,
    scene_values_by_day,
    tile_points,
)


def test_ndvi_median_and_band_stats_tiles_on_the_landsat_sample(sample_catalog, tmp_path):
    cache = build_task_cache(sample_catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    ndvi_run = make_run(tmp_path / "results", GRID_30, "ndvi-median")
    report, ndvi = run_task(ndvi_run, tmp_path / "cache.sqlite", task)
    check_outputs(ndvi_run, report, ndvi)
    values = ndvi["ndvi_median"][0]
    seen = ~np.isnan(values)
    assert seen.any() and (~seen).any() and (np.abs(values[seen]) <= 1).all()
    assert values[seen].max() > 0.3  # the sample's pasture and forest

    stats_run = make_run(
        tmp_path / "results",
        GRID_30,
        "band-stats",
        {
            "bands": ["nbart_red", "nbart_nir"],
            "statistics": ["mean", "min", "max", "count", "percentiles", "medoid"],
            "percentiles": [50],
            "mask_band": "oa_fmask",
            "nodata_classes": ["nodata"],
            "contiguity_band": "oa_nbart_contiguity",
            "output_dtype": "int16",
            "output_nodata": -999,
        },
    )
    report, stats = run_task(stats_run, tmp_path / "cache.sqlite", task)
    check_outputs(stats_run, report, stats)
    count = stats["count"][0]
    np.testing.assert_array_equal(np.isnan(values), count == 0)
    for band in ("nbart_red", "nbart_nir"):
        lo, hi = stats[f"{band}_min"][0], stats[f"{band}_max"][0]
        mean, medoid = stats[f"{band}_mean"][0], stats[f"{band}_medoid"][0]
        ok = count > 0
        assert (lo[ok] <= mean[ok] + 1e-3).all() and (mean[ok] <= hi[ok] + 1e-3).all()
        assert (lo[ok] <= medoid[ok]).all() and (medoid[ok] <= hi[ok]).all()
        assert (lo[~ok] == -999).all()

    points = tile_points(count.shape, 300, seed=5)
    transform = stats_run.grid.tile_geobox(task.x, task.y).transform
    fmask = scene_values_by_day(sample_catalog, "oa_fmask", 2021, transform, points)
    contiguity = scene_values_by_day(sample_catalog, "oa_nbart_contiguity", 2021, transform, points)
    expected = 0
    for day, scenes in fmask.items():
        clear = [
            inside & np.isin(v, [1, 4, 5]) & (c == 1)
            for (inside, v), (_, c) in zip(scenes, contiguity[day], strict=True)
        ]
        expected = expected + np.logical_or.reduce(clear)
    got = np.array([count[p] for p in points])
    assert (got == expected).mean() >= 0.97


def test_user_plugin_from_the_docs_by_dotted_path(sample_catalog, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    code = re.search(r"<!-- example: my_stats.py -->\s*```python\n(.*?)```", doc, re.S).group(1)
    module_dir = tmp_path / "plugins"
    module_dir.mkdir()
    (module_dir / "my_stats.py").write_text(code)
    monkeypatch.syspath_prepend(str(module_dir))

    with pytest.raises(PluginConfigError, match="cloud_buffer"):
        resolve_plugin("my_stats.MaxNdvi", {"cloud_buffer": -1})
    cache = build_task_cache(sample_catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    run = make_run(tmp_path / "results", GRID_30, "my_stats.MaxNdvi", {"cloud_buffer": 2})
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    top, doy = bands["ndvi_max"][0], bands["ndvi_max_doy"][0]
    seen = ~np.isnan(top)
    # (NDVI may exceed 1 where the sample's red reflectance is slightly negative)
    assert seen.any() and (~seen).any() and np.median(top[seen]) > 0.2
    np.testing.assert_array_equal(doy == 0, ~seen)
    # the day of year is one of the task's solar days
    days = {d.timetuple().tm_yday for d in scene_days(sample_catalog, 2021)}
    assert set(np.unique(doy[seen]).tolist()) <= days


def scene_days(catalog, year):
    from datetime import timedelta

    import pystac

    out = set()
    for item in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True):
        lon = float(np.mean([c[0] for c in item.geometry["coordinates"][0]]))
        local = item.datetime + timedelta(hours=lon * 24 / 360)
        if local.year == year:
            out.add(local.date())
    return out

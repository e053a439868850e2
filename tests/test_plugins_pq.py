"""Clear-count plugins pq-s2 and pq-ls-bitmask on hand-built cubes, against counts worked out here with
numpy and scipy morphology (disks on a False-padded plane)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eostats.plugins import PluginConfigError, resolve_plugin


def disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def reference_cleanup(mask: np.ndarray, ops: list[tuple[str, int]]) -> np.ndarray:
    margin = 1 + sum(2 * r for _, r in ops)
    plane = np.pad(mask, margin)
    for op, r in ops:
        if r == 0:
            continue
        fp = disk(r)
        if op == "dilation":
            plane = ndimage.binary_dilation(plane, fp)
        elif op == "opening":
            plane = ndimage.binary_dilation(ndimage.binary_erosion(plane, fp), fp)
        elif op == "closing":
            plane = ndimage.binary_erosion(ndimage.binary_dilation(plane, fp), fp)
        else:
            plane = ndimage.binary_erosion(plane, fp)
    return plane[margin:-margin, margin:-margin]


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


def days(plugin, xx: xr.Dataset, groups: list[list[int]]) -> xr.Dataset:
    """What the loader does on one CRS: native_transform, then fuse each solar day, stacked along time."""
    native = plugin.native_transform(xx)
    fused = [plugin.fuse(native.isel(time=g)).compute() for g in groups]
    return xr.concat(fused, dim="time")


# --------------------------------------------------------------------------------------------------
# pq-s2


def test_pq_s2_declarations_and_odc_stats_filter_keys():
    plugin = resolve_plugin("pq-s2")
    assert plugin.NAME == "pc_s2_annual"
    assert plugin.input_bands == ["SCL"]
    assert [(m.name, m.dtype) for m in plugin.measurements] == [
        ("total", "uint16"),
        ("clear", "uint16"),
        ("clear_2_5", "uint16"),
        ("clear_0_5", "uint16"),
    ]
    assert plugin.resampling == "nearest"
    odc_style = resolve_plugin(
        "pq-s2", {"filters": {"clear_1_2": [["opening", 1], ["dilation", 2]]}}
    )
    assert [m.name for m in odc_style.measurements] == ["total", "clear", "clear_1_2"]
    with pytest.raises(PluginConfigError, match="unknown mask class 'cloud'"):
        resolve_plugin("pq-s2", {"erase_classes": ["cloud"]})


def test_pq_s2_counts_against_numpy_and_scipy():
    rng = np.random.default_rng(5)
    shape = (4, 30, 30)
    scl = rng.choice([0, 1, 3, 4, 4, 4, 5, 6, 8, 9, 10, 11], size=shape).astype(np.uint8)
    scl[:, :, 25:] = 4  # a clear strip, and
    scl[3, :, 25:] = 0  # never observed on the last day
    chain = [("opening", 1), ("dilation", 2)]
    plugin = resolve_plugin("pq-s2", {"filters": {"clear_1_2": [list(s) for s in chain]}})
    stacked = days(plugin, cube({"SCL": scl}, {"SCL": 0}, chunk=10), [[0, 1], [2], [3]])

    valid = scl != 0
    cloudy = np.isin(scl, [3, 8, 9, 10])
    v = np.stack([valid[0] | valid[1], valid[2], valid[3]])
    e = np.stack([cloudy[0] | cloudy[1], cloudy[2], cloudy[3]])
    ec = np.stack([reference_cleanup(e[i], chain) for i in range(3)])
    np.testing.assert_array_equal(stacked["erased_1_2"].values, ec)

    out = plugin.reduce(stacked)
    np.testing.assert_array_equal(out["total"].values, v.sum(0))
    np.testing.assert_array_equal(out["clear"].values, (v & ~e).sum(0))
    np.testing.assert_array_equal(out["clear_1_2"].values, (v & ~ec).sum(0))
    assert out["total"].values[0, 27] == 2 and out["clear"].values[0, 27] == 2
    assert all(out[k].dtype == np.uint16 for k in out.data_vars)


def test_pq_s2_second_fuse_on_the_tile_grid_only_ors_the_cleaned_masks():
    plugin = resolve_plugin("pq-s2", {"filters": {"0_3": [["dilation", 3]]}})
    a = np.zeros((1, 12, 12), bool)
    a[0, 2, 2] = True
    b = np.zeros((1, 12, 12), bool)
    b[0, 9, 9] = True
    # two CRS groups of one day, already fused and cleaned natively, reprojected: OR them, do not dilate again
    projected = xr.Dataset(
        {
            "valid": (("time", "y", "x"), np.ones((2, 12, 12), bool)),
            "erased": (("time", "y", "x"), np.concatenate([a, b])),
            "erased_0_3": (("time", "y", "x"), np.concatenate([a, b])),
        }
    )
    fused = plugin.fuse(projected)
    np.testing.assert_array_equal(fused["erased_0_3"].values, a[0] | b[0])


def test_pq_second_fuse_across_utm_zones_ors_the_masks_and_counts_one_day():
    """One solar day seen in two UTM zones (fmask, the `pq` plugin), on a 10 x 10 tile of 10 m pixels.

    West zone, native 20 m pixels: one cloudy native pixel (tile rows 2-3, cols 2-3), cleaned natively by
    dilation 1 into a cross of five native pixels = 20 tile pixels (rows 0-5 x cols 2-3 and rows 2-3 x cols 0-5).
    East zone: one cloudy pixel at (8, 8), cleaned into a cross of 5. On the tile the cleaned masks are only
    ORed: 25 pixels. Cleaning the OR of the raw masks again on the tile would give 12 + 5 = 17 pixels and keep
    (0, 2) clear."""
    plugin = resolve_plugin("pq", {"filters": {"0_1": [["dilation", 1]]}})
    shape = (1, 10, 10)
    west_raw, west_clean = np.zeros(shape, bool), np.zeros(shape, bool)
    west_raw[0, 2:4, 2:4] = True
    west_clean[0, 0:6, 2:4] = west_clean[0, 2:4, 0:6] = True
    east_raw, east_clean = np.zeros(shape, bool), np.zeros(shape, bool)
    east_raw[0, 8, 8] = True
    east_clean[0, 7:10, 8] = east_clean[0, 8, 7:10] = True
    valid_west, valid_east = np.zeros(shape, bool), np.zeros(shape, bool)
    valid_west[0, :, :6] = True  # the scenes overlap in columns 4-5
    valid_east[0, :, 4:] = True
    projected = xr.Dataset(
        {
            "valid": (("time", "y", "x"), np.concatenate([valid_west, valid_east])),
            "erased": (("time", "y", "x"), np.concatenate([west_raw, east_raw])),
            "erased_0_1": (("time", "y", "x"), np.concatenate([west_clean, east_clean])),
        }
    )
    fused = plugin.fuse(projected)
    assert int(fused["erased_0_1"].values.sum()) == 25
    assert fused["erased_0_1"].values[0, 2] and fused["erased_0_1"].values[9, 8]
    out = plugin.reduce(fused.expand_dims(time=1))
    # one observation everywhere: the overlap columns 4-5 are seen by both zones and still count once
    np.testing.assert_array_equal(out["total"].values, np.ones((10, 10)))
    assert int(out["clear"].values.sum()) == 100 - 5
    assert int(out["clear_0_1"].values.sum()) == 100 - 25
    assert out["clear_0_1"].values[0, 2] == 0 and out["clear_0_1"].values[1, 1] == 1


# --------------------------------------------------------------------------------------------------
# pq-ls-bitmask

FILL, DILATED, CIRRUS, CLOUD, SHADOW, CLEAR = 1, 2, 4, 8, 16, 64


def test_pq_ls_bitmask_counts_with_filters_and_qa_aerosol():
    rng = np.random.default_rng(9)
    shape = (3, 24, 24)
    qa = rng.choice([CLEAR, CLEAR, CLEAR, FILL, CLOUD, CIRRUS, SHADOW, DILATED], size=shape).astype(
        np.uint16
    )
    aerosol = rng.choice(
        [0b0000_0010, 0b0100_0010, 0b1000_0010, 0b1100_0010, 1], size=shape
    ).astype(np.uint8)
    chain = [("closing", 2), ("dilation", 1)]
    plugin = resolve_plugin(
        "pq-ls-bitmask",
        {
            "aerosol_band": "SR_QA_AEROSOL",
            "filters": {"clear_2_1": [list(s) for s in chain]},
            "aerosol_filters": {"clear_2_1_aerosol": [list(s) for s in chain]},
        },
    )
    assert plugin.input_bands == ["QA_PIXEL", "SR_QA_AEROSOL"]
    assert [m.name for m in plugin.measurements] == [
        "total",
        "clear",
        "clear_2_1",
        "clear_aerosol",
        "clear_2_1_aerosol",
    ]
    stacked = days(
        plugin, cube({"QA_PIXEL": qa, "SR_QA_AEROSOL": aerosol}, chunk=12), [[0, 1], [2]]
    )

    keeps = (qa & FILL) == 0
    cloud = (qa & (CLOUD | CIRRUS)) != 0  # shadow and dilated cloud are not in the default flags
    high_aerosol = (aerosol >> 6) == 3
    k = np.stack([keeps[0] | keeps[1], keeps[2]])
    c = np.stack([cloud[0] | cloud[1], cloud[2]])
    a = np.stack([high_aerosol[0] | high_aerosol[1], high_aerosol[2]])
    cc = np.stack([reference_cleanup(c[i], chain) for i in range(2)])
    out = plugin.reduce(stacked)
    np.testing.assert_array_equal(out["total"].values, k.sum(0))
    np.testing.assert_array_equal(out["clear"].values, (k & ~c).sum(0))
    np.testing.assert_array_equal(out["clear_2_1"].values, (k & ~cc).sum(0))
    np.testing.assert_array_equal(out["clear_aerosol"].values, (k & ~c & ~a).sum(0))
    # odc-stats' aerosol filters clean the cloud mask, then remove the unfiltered aerosol
    np.testing.assert_array_equal(out["clear_2_1_aerosol"].values, (k & ~cc & ~a).sum(0))
    assert (out["clear_2_1"].values <= out["clear"].values).all()


def test_pq_ls_bitmask_atmospheric_opacity():
    plugin = resolve_plugin(
        "pq-ls-bitmask", {"aerosol_band": "SR_ATMOS_OPACITY", "aerosol_filters": {"x": []}}
    )
    # aerosol filters only exist with SR_QA_AEROSOL in odc-stats
    assert [m.name for m in plugin.measurements] == ["total", "clear", "clear_aerosol"]
    qa = np.full((1, 1, 5), CLEAR, np.uint16)
    qa[0, 0, 4] = FILL
    opacity = np.array([[[100, 299, 301, -9999, 500]]], np.int16)
    out = plugin.reduce(
        days(plugin, cube({"QA_PIXEL": qa, "SR_ATMOS_OPACITY": opacity}, chunk=5), [[0]])
    )
    # hazy where opacity * 0.001 > 0.3; nodata (-9999) is not hazy; a fill pixel is not counted at all
    np.testing.assert_array_equal(out["total"].values, [[1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out["clear"].values, [[1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out["clear_aerosol"].values, [[1, 1, 0, 1, 0]])


def test_pq_ls_bitmask_config_errors():
    with pytest.raises(PluginConfigError, match="aerosol_type must be one of"):
        resolve_plugin("pq-ls-bitmask", {"aerosol_band": "qa_aerosol"})
    ok = resolve_plugin(
        "pq-ls-bitmask", {"aerosol_band": "qa_aerosol", "aerosol_type": "qa_aerosol"}
    )
    assert ok.input_bands == ["QA_PIXEL", "qa_aerosol"]
    with pytest.raises(PluginConfigError, match="used twice"):
        resolve_plugin("pq-ls-bitmask", {"filters": {"clear": []}})
    with pytest.raises(PluginConfigError, match=r"filters.f: unknown operation 'blur'"):
        resolve_plugin("pq-ls-bitmask", {"filters": {"f": [["blur", 1]]}})


# --------------------------------------------------------------------------------------------------
# workflow level: one task of the sample collections through the tile runner

from plugin_samples import (  # noqa: E402
    GRID_10,
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


def test_pq_s2_tile_counts_equal_an_independent_count(product_sample, tmp_path):
    catalog = product_sample("s2_l2a")
    cache = build_task_cache(catalog, GRID_10, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    run = make_run(tmp_path / "results", GRID_10, "pq-s2")
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    total, clear = bands["total"][0], bands["clear"][0]
    # a dilated mask holds the mask; an opened one may have lost specks: clear_0_5 <= clear_2_5 and clear
    assert (bands["clear_0_5"][0] <= clear).all() and (
        bands["clear_0_5"][0] <= bands["clear_2_5"][0]
    ).all()
    assert (bands["clear_2_5"][0] < clear).any()  # the buffers do remove something

    points = tile_points(total.shape, 400, seed=1)
    transform = run.grid.tile_geobox(task.x, task.y).transform
    by_day = scene_values_by_day(catalog, "SCL", 2021, transform, points)
    exp_total = exp_clear = 0
    for scenes in by_day.values():
        valid = np.logical_or.reduce([inside & (v != 0) for inside, v in scenes])
        cloudy = np.logical_or.reduce([inside & np.isin(v, [3, 8, 9, 10]) for inside, v in scenes])
        exp_total = exp_total + valid.astype(int)
        exp_clear = exp_clear + (valid & ~cloudy).astype(int)
    got_total = np.array([total[p] for p in points])
    got_clear = np.array([clear[p] for p in points])
    agree = (got_total == exp_total) & (got_clear == exp_clear)
    # nearest resampling may pick the neighbouring scene pixel within a hair of a pixel edge
    assert agree.mean() >= 0.97, f"{agree.sum()} of {len(points)} agree"
    assert exp_total.max() >= 3 and (exp_clear < exp_total).any()


def test_pq_ls_bitmask_tile_with_aerosol_on_the_usgs_sample(product_sample, tmp_path):
    catalog = product_sample("usgs_c2l2")
    cache = build_task_cache(catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    config = {
        "aerosol_band": "SR_QA_AEROSOL",
        "filters": {"clear_2_2": [["closing", 2], ["dilation", 2]]},
        "aerosol_filters": {"clear_2_2_aerosol": [["closing", 2], ["dilation", 2]]},
    }
    run = make_run(tmp_path / "results", GRID_30, "pq-ls-bitmask", config)
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    b = {k: v[0].astype(int) for k, v in bands.items()}
    assert (b["clear"] <= b["total"]).all() and (b["clear_2_2"] <= b["clear"]).all()
    assert (b["clear_aerosol"] <= b["clear"]).all() and (
        b["clear_2_2_aerosol"] <= b["clear_2_2"]
    ).all()
    # the sample's haze blob is high aerosol in every second pass: some clear observations are hazy
    assert (b["clear_aerosol"] < b["clear"]).any()
    assert b["total"].max() >= 3


def test_usgs_sample_layers(product_sample):
    import pystac
    import rasterio

    catalog = product_sample("usgs_c2l2")
    qa_seen: set[int] = set()
    aerosol_high = 0
    for item in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True):
        with rasterio.open(item.assets["QA_PIXEL"].get_absolute_href()) as src:
            qa = src.read(1)
        with rasterio.open(item.assets["red"].get_absolute_href()) as src:
            red = src.read(1)
        with rasterio.open(item.assets["SR_QA_AEROSOL"].get_absolute_href()) as src:
            aerosol = src.read(1)
        np.testing.assert_array_equal(qa == 1, aerosol == 1)  # fill in both
        assert (red[qa == 1] == 0).all()
        # surface reflectance DN: reflectance = DN * 2.75e-5 - 0.2 lies in a plausible range on clear land
        land = red[qa == 21824]
        refl = land * 2.75e-5 - 0.2
        assert -0.01 < np.median(refl) < 0.3
        qa_seen |= set(np.unique(qa).tolist())
        aerosol_high += int(((aerosol >> 6) == 3).sum())
    assert {1, 21824, 21952, 22280, 21762, 23888, 54596} <= qa_seen
    assert aerosol_high > 0

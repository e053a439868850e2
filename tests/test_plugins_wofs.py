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


# --------------------------------------------------------------------------------------------------
# workflow level: annual summaries of the WOfS sample, then the full history from those summaries

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from plugin_samples import (  # noqa: E402
    GRID_30,
    build_task_cache,
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


from eostats.periods import parse_period  # noqa: E402
from eostats.taskids import TaskId  # noqa: E402


def independent_wofs_counts(catalog, year, transform, points):
    """count_wet, count_clear at tile pixel centres from the water files: per solar day OR of bad/wet/dry."""
    wet_days = clear_days = observed = 0
    for scenes in scene_values_by_day(catalog, "water", year, transform, points).values():
        has_data = [inside & (v & 1 == 0) for inside, v in scenes]
        bad = np.logical_or.reduce(
            [d & (v & 0b0111_1110 != 0) for d, (_, v) in zip(has_data, scenes, strict=True)]
        )
        wet = np.logical_or.reduce(
            [d & (v == 128) for d, (_, v) in zip(has_data, scenes, strict=True)]
        )
        dry = np.logical_or.reduce(
            [d & (v == 0) for d, (_, v) in zip(has_data, scenes, strict=True)]
        )
        w, d = wet & ~bad & ~dry, dry & ~bad & ~wet
        wet_days = wet_days + w
        clear_days = clear_days + w + d
        observed = observed + (bad | w | d)
    return np.where(observed > 0, wet_days, -999), np.where(observed > 0, clear_days, -999)


def test_wofs_annual_summaries_then_full_history(product_sample, tmp_path):
    catalog = product_sample("wofs")
    cache = build_task_cache(catalog, GRID_30, tmp_path / "annual.sqlite")
    # a tile observed in both years, with the most days
    both = {(t.x, t.y) for t in cache.task_ids() if t.period == "2020--P1Y"} & {
        (t.x, t.y) for t in cache.task_ids() if t.period == "2021--P1Y"
    }
    x, y = max(
        both,
        key=lambda xy: sum(
            r.n_days_solar for r in cache.tasks() if (r.task_id.x, r.task_id.y) == xy
        ),
    )
    run = make_run(tmp_path / "results", GRID_30, "wofs-summary")
    annual = {}
    stac_items = []
    for year in (2020, 2021):
        report, bands = run_task(run, tmp_path / "annual.sqlite", TaskId(f"{year}--P1Y", x, y))
        check_outputs(run, report, bands)
        annual[year] = bands
        stac_items.append(json.loads(Path(report.outputs[-1]).read_text()))
    transform = run.grid.tile_geobox(x, y).transform

    points = tile_points(annual[2021]["count_clear"][0].shape, 300, seed=2)
    exp_wet, exp_clear = independent_wofs_counts(catalog, 2021, transform, points)
    got_wet = np.array([annual[2021]["count_wet"][0][p] for p in points])
    got_clear = np.array([annual[2021]["count_clear"][0][p] for p in points])
    agree = (got_wet == exp_wet) & (got_clear == exp_clear)
    assert agree.mean() >= 0.97, f"{agree.sum()} of {len(points)} agree"
    assert exp_clear.max() >= 2 and (exp_wet > 0).any() and (exp_clear == -999).any()

    # the full history over the two annual summaries (their STAC items are the source)
    items_file = tmp_path / "annual.ndjson"
    items_file.write_text("".join(json.dumps(it) + "\n" for it in stac_items))
    build_task_cache(
        None,
        GRID_30,
        tmp_path / "fh.sqlite",
        source={"type": "ndjson", "path": str(items_file)},
        temporal_range=parse_period("2020--P2Y"),
    )
    fh_run = make_run(tmp_path / "results", GRID_30, "wofs-summary-fh")
    report, fh = run_task(fh_run, tmp_path / "fh.sqlite", TaskId("2020--P2Y", x, y))
    check_outputs(fh_run, report, fh)
    wet = [annual[yr]["count_wet"][0].astype(int) for yr in (2020, 2021)]
    clear = [annual[yr]["count_clear"][0].astype(int) for yr in (2020, 2021)]
    never = (clear[0] == -999) & (clear[1] == -999)
    exp_wet = np.where(never, -999, sum(np.where(w == -999, 0, w) for w in wet))
    exp_clear = np.where(never, -999, sum(np.where(c == -999, 0, c) for c in clear))
    np.testing.assert_array_equal(fh["count_wet"][0], exp_wet)
    np.testing.assert_array_equal(fh["count_clear"][0], exp_clear)
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_freq = np.where(
            exp_clear > 0, exp_wet.astype(np.float32) / exp_clear.astype(np.float32), np.nan
        )
    np.testing.assert_array_equal(fh["frequency"][0], exp_freq.astype(np.float32))


def test_wofs_and_fc_sample_layers(product_sample):
    import pystac
    import rasterio

    seen: set[int] = set()
    for item in pystac.Catalog.from_file(str(product_sample("wofs"))).get_items(recursive=True):
        with rasterio.open(item.assets["water"].get_absolute_href()) as src:
            seen |= set(np.unique(src.read(1)).tolist())
    # nodata, non-contiguous, terrain shadow, high slope (dry and wet), cloud shadow, cloud, wet, dry
    assert {1, 2, 8, 16, 32, 64, 128, 0} <= seen

    for item in list(
        pystac.Catalog.from_file(str(product_sample("fc_wo"))).get_items(recursive=True)
    )[:3]:
        bands = {}
        for b in ("pv", "bs", "npv", "ue", "water"):
            with rasterio.open(item.assets[b].get_absolute_href()) as src:
                bands[b] = src.read(1).astype(int)
        has = bands["water"] != 1
        np.testing.assert_array_equal(bands["pv"] == 255, ~has)
        total = bands["pv"] + bands["bs"] + bands["npv"]
        assert np.abs(total[has] - 100).max() <= 6  # the cover fractions sum to ~100 %
        assert (bands["ue"][has] >= 30).any() and (bands["ue"][has] < 30).any()

"""Geomedian plugins gm-s2, gm-generic and gm-ls-bitmask on hand-built cubes.

Expected values are worked out here: masks with scipy morphology on a False-padded plane (and odc-algo's
``mask_cleanup`` for the S2 default chain), geomedians of identical or collinear observations, and odc-stats'
float32 DN round trip and uint16 rescaling written out step by step.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eostats.plugins import PluginConfigError, resolve_plugin

S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
USGS_BANDS = ["red", "green", "blue", "nir", "swir_1", "swir_2"]
F32 = np.float32


def disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def reference_cleanup(mask: np.ndarray, ops: list[tuple[str, int]]) -> np.ndarray:
    """Morphology on an image continued by False outside: pad generously, apply scipy ops, crop."""
    margin = 1 + sum(2 * r for _, r in ops)
    plane = np.pad(mask, margin)
    for op, r in ops:
        if r == 0:
            continue
        fp = disk(r)
        if op == "dilation":
            plane = ndimage.binary_dilation(plane, fp)
        elif op == "erosion":
            plane = ndimage.binary_erosion(plane, fp)
        elif op == "opening":
            plane = ndimage.binary_dilation(ndimage.binary_erosion(plane, fp), fp)
        else:
            plane = ndimage.binary_erosion(ndimage.binary_dilation(plane, fp), fp)
    return plane[margin:-margin, margin:-margin]


def cube(
    values: dict[str, np.ndarray], nodata: dict[str, int | float] | None = None, chunk: int = 8
) -> xr.Dataset:
    """A dask-backed (time, y, x) Dataset, as the loader hands it to native_transform."""
    ds = xr.Dataset(
        {
            k: xr.DataArray(da.from_array(v, chunks=(1, chunk, chunk)), dims=("time", "y", "x"))
            for k, v in values.items()
        }
    )
    for k, nd in (nodata or {}).items():
        ds[k].attrs["nodata"] = nd
    return ds


def block(values: dict[str, np.ndarray], nodata: dict[str, int | float]) -> xr.Dataset:
    """A numpy-backed block on the tile grid, as the tile runner hands it to reduce."""
    return xr.Dataset(
        {
            k: xr.DataArray(v, dims=("time", "y", "x"), attrs={"nodata": nodata.get(k)})
            for k, v in values.items()
        }
    )


def odc_dn(value: int, scale: float, offset: float) -> int:
    """odc-algo's round trip of one DN through float32: x*scale+offset, then y*(1/scale)+(-offset/scale), truncated."""
    scaled = F32(value) * F32(scale) + F32(offset)
    return int(np.trunc(scaled * F32(1 / scale) + F32(-offset / scale)))


# --------------------------------------------------------------------------------------------------
# gm-s2


def test_gm_s2_declares_odc_stats_bands():
    plugin = resolve_plugin("gm-s2")
    assert plugin.NAME == "gm_s2_annual"
    assert plugin.input_bands == S2_BANDS + ["SCL"]
    assert [(m.name, m.dtype, m.nodata) for m in plugin.measurements[:10]] == [
        (b, "uint16", 0) for b in S2_BANDS
    ]
    aux = [(m.name, m.dtype) for m in plugin.measurements[10:]]
    assert aux == [
        ("SMAD", "float32"),
        ("EMAD", "float32"),
        ("BCMAD", "float32"),
        ("COUNT", "uint16"),
    ]
    # opening 2 (context 4) + dilation 5, plus the 10-pixel resampling margin
    assert plugin.native_buffer_pixels == 10 + 4 + 5


def test_gm_s2_masks_scl_with_the_default_chain_like_odc_algo():
    from odc.algo import mask_cleanup as odc_mask_cleanup

    rng = np.random.default_rng(3)
    shape = (2, 40, 40)
    scl = np.full(shape, 4, np.uint8)  # vegetation
    scl[0, 5:12, 5:12] = 9  # a cloud (high probability) blob
    scl[0, 20, 20] = 8  # a speck of medium probability: removed by the opening
    scl[0, 0:6, 30:40] = 3  # a cloud shadow touching the top edge (buffer edge)
    scl[1, 30:36, 0:5] = 10  # thin cirrus on the left edge
    scl[1, 14, 25:31] = 1  # saturated: not masked by default
    scl[1, 38:, 38:] = 0  # no data
    bands = {b: rng.integers(1, 9000, shape).astype(np.uint16) for b in S2_BANDS}
    xx = cube({**bands, "SCL": scl}, {**dict.fromkeys(S2_BANDS, 0), "SCL": 0})
    out = resolve_plugin("gm-s2").native_transform(xx).compute()

    chain = [("opening", 2), ("dilation", 5)]
    cloudy = np.isin(scl, [3, 8, 9, 10])
    expected = np.stack([reference_cleanup(cloudy[t], chain) for t in range(2)]) | (scl == 0)
    # odc-algo's dask path with the whole image in one chunk agrees (its padding is False, like ours)
    as_xr = xr.DataArray(
        da.from_array(cloudy, chunks=(1, -1, -1)),
        dims=("time", "y", "x"),
        coords={"y": np.arange(40.0), "x": np.arange(40.0)},
    )
    odc = odc_mask_cleanup(as_xr, chain).values
    np.testing.assert_array_equal(odc | (scl == 0), expected)
    assert not expected[0, 20, 20] and expected[0, 0, 35] and expected[1, 33, 0]
    assert not expected[1, 14, 25]
    for b in S2_BANDS:
        np.testing.assert_array_equal(out[b].values == 0, expected)
        np.testing.assert_array_equal(out[b].values[~expected], bands[b][~expected])
        assert out[b].dtype == np.uint16


def test_gm_s2_reduce_values_nodata_and_count():
    plugin = resolve_plugin("gm-s2")
    t = 3
    data = {b: np.zeros((t, 1, 3), np.uint16) for b in S2_BANDS}
    for i, b in enumerate(S2_BANDS):
        data[b][:, 0, 0] = (
            1000 + 37 * i
        )  # identical observations: the geomedian is the point itself
        data[b][:, 0, 1] = [600 + i, 900 + i, 3000 + i]  # collinear: the middle one
    data["B05"][0, 0, 1] = 0  # one band missing: the whole observation is dropped at that pixel
    # pixel (0, 2): no observation at all
    out = plugin.reduce(block(data, dict.fromkeys(S2_BANDS, 0)))
    # mean start (opt-in): the Weiszfeld start, the two observations' mean, is already optimal
    by_mean = resolve_plugin("gm-s2", {"start": "mean"}).reduce(
        block(data, dict.fromkeys(S2_BANDS, 0))
    )
    # two observations left: the geometric median of two points is anywhere on the segment between them;
    # geomad's warm start (the default, as odc-stats) arrives at one point of it from pixel (0, 0)'s solution
    fraction = (int(out[S2_BANDS[0]].values[0, 1]) - 900) / 2100
    assert 0 < fraction < 1
    for i, b in enumerate(S2_BANDS):
        assert out[b].dtype == np.uint16
        assert out[b].values[0, 0] == odc_dn(1000 + 37 * i, 1e-4, -1e-4)
        assert abs(int(out[b].values[0, 1]) - (900 + i + fraction * 2100)) <= 1
        assert abs(int(by_mean[b].values[0, 1]) - (1950 + i)) <= 1
        assert out[b].values[0, 2] == 0
    np.testing.assert_array_equal(out["COUNT"].values, [[3, 2, 0]])
    assert out["EMAD"].values[0, 0] == pytest.approx(0, abs=1e-2)
    # EMAD of two points around their midpoint: both at half their distance (DN units)
    half = np.sqrt(len(S2_BANDS)) * (2100 / 2)
    assert out["EMAD"].values[0, 1] == pytest.approx(half, rel=1e-3)
    for aux in ("SMAD", "EMAD", "BCMAD"):
        assert np.isnan(out[aux].values[0, 2])


def test_gm_s2_fuses_a_solar_day_first_valid():
    plugin = resolve_plugin("gm-s2")
    a = np.array([[[0, 5]], [[7, 9]]], np.uint16)  # obs 0 has nodata at pixel 0
    xx = cube({b: a for b in S2_BANDS}, dict.fromkeys(S2_BANDS, 0), chunk=2)
    fused = plugin.fuse(xx).compute()
    np.testing.assert_array_equal(fused["B02"].values, [[7, 5]])


# --------------------------------------------------------------------------------------------------
# gm-generic


def test_gm_generic_any_class_table_and_output_type():
    classes = {"missing": 0, "ok": 1, "haze": 7, "smoke": 8}
    plugin = resolve_plugin(
        "gm-generic",
        {
            "bands": ["b1", "b2"],
            "mask_band": "qa",
            "mask_classes": classes,
            "nodata_classes": ["missing"],
            "cloud_filters": {"haze,smoke": [["dilation", 1]]},
            "aux_names": {"count": "clear_count"},
        },
    )
    assert plugin.input_bands == ["b1", "b2", "qa"]
    assert [m.name for m in plugin.measurements] == [
        "b1",
        "b2",
        "smad",
        "emad",
        "bcmad",
        "clear_count",
    ]
    qa = np.ones((1, 9, 9), np.uint8)
    qa[0, 4, 4] = 7
    qa[0, 0, 8] = 8
    qa[0, 8, 0] = 0
    b = np.full((1, 9, 9), 500, np.int16)
    out = plugin.native_transform(
        cube({"b1": b, "b2": b, "qa": qa}, {"b1": -999, "b2": -999}, chunk=4)
    ).compute()
    expected = ndimage.binary_dilation(np.isin(qa[0], [7, 8]), disk(1)) | (qa[0] == 0)
    np.testing.assert_array_equal(out["b1"].values[0] == -999, expected)


def test_gm_generic_without_mask_and_config_errors():
    plugin = resolve_plugin(
        "gm-generic", {"bands": ["p", "q"], "output_dtype": "int16", "output_nodata": -1}
    )
    assert plugin.input_bands == ["p", "q"]
    # collinear observations (p, q) = (k, 2k): the geometric median is the middle one
    p = np.array([[[100]], [[400]], [[1000]]], np.int16)
    out = plugin.reduce(block({"p": p, "q": 2 * p}, {"p": -1, "q": -1}))
    assert abs(int(out["p"].values[0, 0]) - 400) <= 1 and abs(int(out["q"].values[0, 0]) - 800) <= 1
    assert out["count"].values[0, 0] == 3
    with pytest.raises(PluginConfigError, match="needs plugin_config.bands"):
        resolve_plugin("gm-generic")
    with pytest.raises(PluginConfigError, match="unknown mask class 'cloud'"):
        resolve_plugin("gm-generic", {"bands": ["x"], "mask_band": "qa", "mask_classes": {"ok": 1}})
    with pytest.raises(PluginConfigError, match="mask_band is needed"):
        resolve_plugin("gm-generic", {"bands": ["x"], "nodata_classes": ["nodata"]})
    with pytest.raises(PluginConfigError, match="aux_names: unknown key"):
        resolve_plugin("gm-generic", {"bands": ["x"], "aux_names": {"mean": "m"}})


# --------------------------------------------------------------------------------------------------
# gm-ls-bitmask

FILL, DILATED, CIRRUS, CLOUD, SHADOW, CLEAR = 1, 2, 4, 8, 16, 64
CLOUD_CONF_HIGH = 3 << 8
CLOUD_CONF_LOW = 1 << 8


def test_gm_ls_bitmask_native_mask_and_fuse():
    plugin = resolve_plugin("gm-ls-bitmask", {"filters": [["dilation", 1]]})
    assert plugin.input_bands == USGS_BANDS + ["QA_PIXEL"]
    shape = (2, 8, 8)
    qa = np.full(shape, CLEAR | CLOUD_CONF_LOW, np.uint16)
    qa[0, 1, 1] = FILL
    qa[0, 2, 5] = CLOUD | CLOUD_CONF_HIGH | DILATED
    qa[0, 6, 6] = DILATED  # dilated cloud alone is kept by the default flags
    qa[0, 5, 2] = CLOUD_CONF_HIGH  # confidence bits alone are not the cloud flag
    qa[1, 6, 1] = CIRRUS
    bands = {b: np.full(shape, 9000 + i, np.uint16) for i, b in enumerate(USGS_BANDS)}
    bands["nir"][1, 3, 3] = 7272  # reflectance 0.2 * ... - 0.2 <= 0: invalid
    bands["nir"][1, 3, 4] = 7273  # > 0: valid
    xx = cube({**bands, "QA_PIXEL": qa}, {**dict.fromkeys(USGS_BANDS, 0), "QA_PIXEL": 1})
    native = plugin.native_transform(xx).compute()
    invalid = np.zeros(shape, bool)
    invalid[0, 1, 1] = invalid[1, 3, 3] = True
    for b in USGS_BANDS:
        np.testing.assert_array_equal(native[b].values == 0, invalid)
    raw_cloud = np.zeros(shape, bool)
    raw_cloud[0, 2, 5] = raw_cloud[1, 6, 1] = True
    np.testing.assert_array_equal(native["cloud_raw"].values, raw_cloud)

    # the two observations are one solar day: first valid for bands, OR then dilation for the cloud mask
    fused = plugin.fuse(plugin.native_transform(xx)).compute()
    assert set(fused.data_vars) == set(USGS_BANDS) | {"cloud"}
    np.testing.assert_array_equal(
        fused["cloud"].values, ndimage.binary_dilation(raw_cloud.any(0), disk(1))
    )
    assert fused["nir"].values[1, 1] == 9003  # obs 0 is fill there: obs 1's value
    assert fused["nir"].values[3, 3] == 9003  # obs 1 is invalid there: obs 0's value


def test_gm_ls_bitmask_flag_values_are_compared_not_just_their_bits():
    # odc-stats tests (QA & mask) != 0, so `cloud_confidence: high` would also catch low/medium confidence
    plugin = resolve_plugin("gm-ls-bitmask", {"flags": {"cloud_confidence": "high"}})
    qa = np.array([[[0, 1 << 8, 2 << 8, 3 << 8]]], np.uint16)
    b = np.full((1, 1, 4), 9000, np.uint16)
    native = plugin.native_transform(
        cube({**{k: b for k in USGS_BANDS}, "QA_PIXEL": qa}, chunk=4)
    ).compute()
    np.testing.assert_array_equal(native["cloud_raw"].values, [[[False, False, False, True]]])
    with pytest.raises(PluginConfigError, match="unknown flag 'clouds'"):
        resolve_plugin("gm-ls-bitmask", {"flags": {"clouds": "high_confidence"}})
    with pytest.raises(PluginConfigError, match="unknown value 'very'"):
        resolve_plugin("gm-ls-bitmask", {"flags": {"cloud_confidence": "very"}})


def rescaled(dn: int) -> int:
    """odc-stats' gm-ls-bitmask output: the DN (after the float32 round trip) times 2.75e-5 * 1e4, minus 2000,
    in float64, rounded half to even."""
    return int(np.round(float(dn) * (2.75e-5 * 10_000) + (-0.2 * 10_000)))


def test_gm_ls_bitmask_reduce_rescales_and_rounds_like_odc_stats():
    plugin = resolve_plugin("gm-ls-bitmask")
    t = 3
    data = {b: np.zeros((t, 1, 4), np.uint16) for b in USGS_BANDS}
    for i, b in enumerate(USGS_BANDS):
        data[b][:, 0, 0] = 10_000 + 1234 * i  # identical observations
        data[b][:, 0, 1] = [9000 + i, 9400 + i, 12000 + i]  # collinear
        data[b][:, 0, 2] = 11_000 + i  # identical but cloudy in every observation
        data[b][:, 0, 3] = 7300  # reflectance ~0.0075: a small output value, rounded
    cloud = np.zeros((t, 1, 4), bool)
    cloud[:, 0, 2] = True
    cloud[0, 0, 1] = True  # the low observation of pixel 1 is cloudy: two remain
    xx = block({**data, "cloud": cloud}, dict.fromkeys(USGS_BANDS, 0))
    out = plugin.reduce(xx)
    for i, b in enumerate(USGS_BANDS):
        assert out[b].dtype == np.uint16
        assert out[b].values[0, 0] == rescaled(odc_dn(10_000 + 1234 * i, 2.75e-5, -0.2))
        mid = (9400 + 12000) / 2 + i
        assert abs(int(out[b].values[0, 1]) - rescaled(int(mid))) <= 1
        assert out[b].values[0, 2] == 0
        assert out[b].values[0, 3] == rescaled(odc_dn(7300, 2.75e-5, -0.2))
    np.testing.assert_array_equal(out["count"].values, [[3, 2, 0, 3]])
    assert out["emad"].dtype == np.uint16
    # EMAD: both remaining observations are half their distance from the median, in DN, then x 0.275
    half_dn = np.sqrt(6) * (12000 - 9400) / 2
    assert abs(int(out["emad"].values[0, 1]) - round(half_dn * 0.275)) <= 1
    assert out["emad"].values[0, 0] == 0 and out["emad"].values[0, 2] == 0
    assert np.isnan(out["smad"].values[0, 2]) and np.isnan(out["bcmad"].values[0, 2])


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_gm_ls_bitmask_matches_odc_algo_geomedian_with_odc_stats_rescaling():
    from odc.algo import geomedian_with_mads

    rng = np.random.default_rng(11)
    t, ny, nx = 7, 6, 6
    base = rng.integers(8000, 20000, (len(USGS_BANDS), 1, ny, nx))
    data = (base + rng.integers(-800, 800, (len(USGS_BANDS), t, ny, nx))).astype(np.uint16)
    data[:, 2, 1, 1] = 0  # a missing observation
    data[:, :, 4, 4] = 0  # a pixel never observed
    values = {b: data[i] for i, b in enumerate(USGS_BANDS)}
    cloud = np.zeros((t, ny, nx), bool)
    out = resolve_plugin("gm-ls-bitmask").reduce(
        block({**values, "cloud": cloud}, dict.fromkeys(USGS_BANDS, 0))
    )

    coords = {"spec": np.arange(t), "y": 30.0 * np.arange(ny), "x": 30.0 * np.arange(nx)}
    src = xr.Dataset(
        {
            b: xr.DataArray(
                da.from_array(v, chunks=(1, -1, -1)),
                dims=("spec", "y", "x"),
                coords=coords,
                attrs={"nodata": 0},
            )
            for b, v in values.items()
        }
    )
    ref = geomedian_with_mads(
        src,
        scale=2.75e-5,
        offset=-0.2,
        maxiters=1000,
        num_threads=1,
        work_chunks=(ny, nx),
        reshape_strategy="yxbt",
    ).compute()
    for b in USGS_BANDS:
        dn = ref[b].values
        expected = np.where(dn == 0, 0, np.round(dn.astype(np.float64) * 0.275 - 2000))
        assert np.abs(out[b].values.astype(int) - expected.astype(int)).max() <= 1
        assert out[b].values[4, 4] == 0
    emad = ref["emad"].values
    expected_emad = np.where(np.isnan(emad), 0, np.round(emad * F32(0.275)))
    assert np.abs(out["emad"].values.astype(int) - expected_emad.astype(int)).max() <= 1
    np.testing.assert_array_equal(out["count"].values, ref["count"].values)


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


S2_CLOUDS = "cloud shadows,cloud medium probability,cloud high probability,thin cirrus"


def test_gm_s2_tile_on_the_sentinel2_sample(product_sample, tmp_path):
    catalog = product_sample("s2_l2a")
    cache = build_task_cache(catalog, GRID_10, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    # unbuffered cloud classes, so the clear count can be checked pixel by pixel against the SCL files
    run = make_run(tmp_path / "results", GRID_10, "gm-s2", {"cloud_filters": {S2_CLOUDS: []}})
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    count = bands["COUNT"][0]
    empty = count == 0
    assert 0 < empty.sum() < empty.size  # the tile holds observed and unobserved pixels
    for band in S2_BANDS:
        values = bands[band][0]
        np.testing.assert_array_equal(values == 0, empty)
        assert values[~empty].max() < 15_000
    assert np.isnan(bands["SMAD"][0][empty]).all() and not np.isnan(bands["EMAD"][0][~empty]).any()
    assert count.max() <= report.observations

    points = tile_points(count.shape, 400)
    transform = run.grid.tile_geobox(task.x, task.y).transform
    by_day = scene_values_by_day(catalog, "SCL", 2021, transform, points)
    expected = sum(
        np.logical_or.reduce(
            [inside & ~np.isin(v, [0, 3, 8, 9, 10]) for inside, v in scenes]
        ).astype(int)
        for scenes in by_day.values()
    )
    got = np.array([count[p] for p in points])
    # bilinear resampling of the masked bands can move a mask edge by a pixel; everything else must agree
    assert (got == expected).mean() >= 0.95, f"{(got == expected).sum()} of {len(points)} agree"
    assert expected.max() >= 3


def test_gm_ls_bitmask_tile_on_the_usgs_sample(product_sample, tmp_path):
    catalog = product_sample("usgs_c2l2")
    cache = build_task_cache(catalog, GRID_30, tmp_path / "cache.sqlite")
    task = busiest_task(cache, "2021--P1Y")
    run = make_run(tmp_path / "results", GRID_30, "gm-ls-bitmask", {"filters": [["dilation", 1]]})
    report, bands = run_task(run, tmp_path / "cache.sqlite", task)
    check_outputs(run, report, bands)
    count = bands["count"][0]
    seen = count > 0
    assert seen.any() and (~seen).any()
    for band in USGS_BANDS:
        values = bands[band][0]
        # reflectance x 10 000 like the Landsat sample it was made from: roughly 0 .. 6000 on the ground
        assert values[~seen].max() == 0 and 50 < np.median(values[seen]) < 6000
    assert bands["emad"][0][~seen].max() == 0 and bands["emad"][0][seen].max() > 0


def test_sentinel2_sample_layers(product_sample):
    import pystac
    import rasterio

    catalog = product_sample("s2_l2a")
    items = list(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))
    assert len(items) >= 8
    scl_seen: set[int] = set()
    for item in items:
        with (
            rasterio.open(item.assets["B02"].get_absolute_href()) as b02,
            rasterio.open(item.assets["SCL"].get_absolute_href()) as scl,
        ):
            assert b02.res == (10.0, 10.0) and scl.res == (20.0, 20.0)
            assert (b02.transform.c, b02.transform.f) == (scl.transform.c, scl.transform.f)
            assert (b02.width, b02.height) == (2 * scl.width, 2 * scl.height)
            classes = scl.read(1)
            reflectance = b02.read(1)[::2, ::2]
            # no data exactly where the SCL says so
            np.testing.assert_array_equal(reflectance == 0, classes == 0)
            scl_seen |= set(np.unique(classes).tolist())
        assert item.assets["B11"].extra_fields["proj:shape"] == [scl.height, scl.width]
    # cloud shadows, cloud medium/high probability, thin cirrus, water, land classes all occur
    assert {0, 3, 4, 5, 6, 8, 9, 10} <= scl_seen


# --------------------------------------------------------------------------------------------------
# RGBA preview and thumbnail


def test_rgba_preview_matches_odc_algo_and_hand_values(tmp_path):
    import rasterio
    from odc.algo._rgba import to_rgba_np
    from odc.geo.geobox import GeoBox

    from eostats.plugins.preview import rgb_bands_of, to_rgba, write_rgba, write_thumbnail

    rng = np.random.default_rng(6)
    r, g, b = (rng.integers(-50, 4000, (40, 60)).astype(np.int16) for _ in range(3))
    r[0, :5] = -999
    ours = to_rgba(r, g, b, nodata=-999, clamp=(1, 3000))
    theirs = to_rgba_np(r, g, b, -999, (1, 3000))  # (y, x, 4)
    np.testing.assert_array_equal(ours, np.moveaxis(theirs, -1, 0))
    # by hand: 1 -> 0, 3000 and above -> 255, 1500 -> (1499 * 255) // 2999 = 127; alpha from red's nodata
    px = to_rgba(
        np.array([[1, 1500, 5000, -999]], np.int16),
        *(np.full((1, 4), 1500, np.int16),) * 2,
        nodata=-999,
    )
    np.testing.assert_array_equal(px[0], [[0, 127, 255, 0]])
    np.testing.assert_array_equal(px[3], [[255, 255, 255, 0]])
    f = to_rgba(
        np.array([[np.nan, 0.5]], np.float32),
        *(np.full((1, 2), 0.25, np.float32),) * 2,
        nodata=None,
        clamp=(0, 1),
    )
    np.testing.assert_array_equal(f[:, 0, 1], [127, 63, 63, 255])
    assert f[3, 0, 0] == 0

    assert rgb_bands_of(resolve_plugin("gm-s2")) == ("B04", "B03", "B02")
    assert rgb_bands_of(resolve_plugin("pq-s2")) is None
    gbox = GeoBox.from_bbox((0, 0, 60 * 30, 40 * 30), "EPSG:3577", resolution=30)
    cog = write_rgba(tmp_path / "x_rgba.tif", ours, gbox)
    with rasterio.open(cog) as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 3577
        np.testing.assert_array_equal(src.read(), ours)
    thumb = write_thumbnail(tmp_path / "x_thumbnail.jpg", ours, max_size=20)
    with rasterio.open(thumb) as src:
        assert src.driver == "JPEG" and (src.height, src.width) == (14, 20) and src.count == 3


def test_rgba_preview_is_switched_on_by_the_odc_stats_override(tmp_path):
    import rasterio
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from eostats.plugins.preview import rgba_options, write_previews

    assert rgba_options(None) is None and rgba_options({"blocksize": 256}) is None
    assert rgba_options({"blocksize": 256, "overrides": {"rgba": {"compress": "JPEG"}}}) == {
        "compress": "jpeg",
        "blocksize": 256,
    }
    assert rgba_options({"rgba": {"zlevel": 9}}) == {"compress": "deflate", "blocksize": 512}
    with pytest.raises(ValueError, match="colour"):
        rgba_options({"overrides": {"rgba": {"colour": "red"}}})
    # a plugin without RGB bands writes no preview, whatever cog_opts says
    gbox = GeoBox((4, 4), Affine(30, 0, 0, 0, -30, 120), "EPSG:3577")
    opts = {"overrides": {"rgba": {}}}
    assert write_previews(tmp_path, "t", {}, resolve_plugin("pq"), gbox, opts) == {}
    gm = resolve_plugin("gm-ls")
    red = np.tile(np.array([[-999, 1], [3000, 1500]], np.int16), (2, 2))
    data = {b: red for b in ("nbart_red", "nbart_green", "nbart_blue")}
    written = write_previews(tmp_path, "t", data, gm, gbox, opts)
    assert sorted(p.name for p in written.values()) == ["t_rgba.tif", "t_thumbnail.jpg"]
    with rasterio.open(written["rgba"]) as src:
        rgba = src.read()
    # (v - 1) * 255 // 2999, alpha 0 at nodata -999
    np.testing.assert_array_equal(rgba[0, :2, :2], [[0, 0], [255, 127]])
    np.testing.assert_array_equal(rgba[3, :2, :2], [[0, 255], [255, 255]])


def test_stacked_bands_takes_the_readers_buffer_without_a_copy() -> None:
    from eostats.plugins.tools import stacked_bands

    buffer = np.empty((4, 3, 2, 5), dtype=np.int16)  # owns its memory, as the reader's buffers do
    buffer[...] = np.arange(buffer.size).reshape(buffer.shape)
    view = stacked_bands([buffer[1], buffer[2], buffer[3]])
    assert view.base is buffer and np.shares_memory(view, buffer)
    np.testing.assert_array_equal(view, buffer[1:])
    # out of order, a gap, or arrays of their own: a stacked copy, equal to np.stack's
    for layers in ([buffer[2], buffer[1]], [buffer[0], buffer[2]], [buffer[0].copy(), buffer[1]]):
        stacked = stacked_bands(layers)
        assert not np.shares_memory(stacked, buffer)
        np.testing.assert_array_equal(stacked, np.stack(layers))

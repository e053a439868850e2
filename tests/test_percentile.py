"""Tests for eostats.kernels.percentile against a plain-Python nearest-rank rule and odc-algo's np_percentile."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from odc.algo._percentile import np_percentile

from eostats.kernels.percentile import nearest_rank_percentiles, percentile, rank_table

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def reference_pixel(values, quantiles, nodata, min_valid=3):
    """Nearest rank of one pixel's values in plain Python: sorted valid values, Python's round (half to even)."""
    valid = sorted(v for v in values if v != nodata and v == v)
    if len(valid) < min_valid:
        return [nodata] * len(quantiles)
    return [valid[round(q * (len(valid) - 1))] for q in quantiles]


def reference(data, quantiles, nodata, min_valid=3):
    """(time, y, x) → (quantile, y, x) by looping over pixels."""
    _, ny, nx = data.shape
    out = np.empty((len(quantiles), ny, nx), dtype=data.dtype)
    for iy, ix in itertools.product(range(ny), range(nx)):
        out[:, iy, ix] = reference_pixel(data[:, iy, ix].tolist(), quantiles, nodata, min_valid)
    return out


def odc(data, quantiles, nodata):
    return np.stack([np_percentile(data, q, nodata) for q in quantiles])


def random_stack(rng, n_time, ny, nx, dtype, nodata, missing=0.3, span=50):
    """Small value range so that ties are common; ``missing`` of the observations are nodata."""
    data = rng.integers(100, 100 + span, size=(n_time, ny, nx)).astype(dtype)
    data[rng.random(data.shape) < missing] = nodata
    return data


def test_rank_rule_uses_half_to_even_rounding() -> None:
    # 6 valid values: q=0.5 → 2.5 → rank 2, q=0.1 → 0.5 → rank 0, q=0.9 → 4.5 → rank 4; 5 values: 0.1 → 0.4 → 0
    table = rank_table([0.1, 0.5, 0.9], 10)
    assert table[:, 6].tolist() == [0, 2, 4]
    assert table[:, 5].tolist() == [0, 2, 4]
    assert table[:, 4].tolist() == [0, 2, 3]  # 0.5 * 3 = 1.5 → 2, 0.9 * 3 = 2.7 → 3
    values = np.array([6, 1, 5, 2, 4, 3], dtype=np.int16)[:, None, None]
    got = nearest_rank_percentiles(values, [0.1, 0.5, 0.9], nodata=-999)
    assert got[:, 0, 0].tolist() == [1, 3, 5]


@pytest.mark.parametrize(
    "dtype,nodata", [("int16", -999), ("uint16", 0), ("uint8", 255), ("int32", -1)]
)
def test_matches_reference_and_odc_on_random_stacks(dtype, nodata) -> None:
    rng = np.random.default_rng(7)
    data = random_stack(rng, 23, 9, 11, dtype, nodata)
    ours = nearest_rank_percentiles(data, QUANTILES, nodata=nodata)
    assert ours.dtype == np.dtype(dtype) and ours.shape == (len(QUANTILES), 9, 11)
    np.testing.assert_array_equal(ours, reference(data, QUANTILES, nodata))
    np.testing.assert_array_equal(ours, odc(data, QUANTILES, nodata))


def test_too_few_valid_observations_give_nodata() -> None:
    nodata = -999
    data = np.full((5, 1, 4), nodata, dtype=np.int16)
    data[0, 0, 1] = 10  # one valid
    data[[1, 3], 0, 2] = [10, 20]  # two valid
    data[[0, 2, 4], 0, 3] = [30, 10, 20]  # three valid: enough
    ours = nearest_rank_percentiles(data, [0.0, 0.5, 1.0], nodata=nodata)
    assert ours[:, 0, :3].tolist() == [[nodata] * 3] * 3
    assert ours[:, 0, 3].tolist() == [10, 20, 30]
    np.testing.assert_array_equal(ours, odc(data, [0.0, 0.5, 1.0], nodata))
    # min_valid=1 keeps single observations
    single = nearest_rank_percentiles(data, [0.5], nodata=nodata, min_valid=1)
    assert single[0, 0].tolist() == [nodata, 10, 10, 20]


def test_nodata_at_every_position() -> None:
    """One missing observation at each time step in turn; the valid values are always 1..6 shuffled."""
    nodata = -999
    n_time = 7
    rng = np.random.default_rng(1)
    data = np.empty((n_time, 1, n_time), dtype=np.int16)
    for pos in range(n_time):
        values = rng.permutation(np.arange(1, n_time)).tolist()
        values.insert(pos, nodata)
        data[:, 0, pos] = values
    ours = nearest_rank_percentiles(data, [0.0, 0.1, 0.5, 0.9, 1.0], nodata=nodata)
    # ranks among 6 values: 0, round(0.5)=0, round(2.5)=2, round(4.5)=4, 5
    expected = np.array([1, 1, 3, 5, 6])
    np.testing.assert_array_equal(ours[:, 0, :], np.repeat(expected[:, None], n_time, axis=1))
    np.testing.assert_array_equal(ours, odc(data, [0.0, 0.1, 0.5, 0.9, 1.0], nodata))


def test_ties_and_constant_pixels() -> None:
    data = np.array(
        [[5, 5, 5, 5], [3, 5, 3, 5], [5, 3, 5, 3], [7, 7, 3, 3], [5, 5, 5, 5]], dtype=np.uint16
    )
    data = data[:, None, :].copy()  # (time=5, 1, 4): rows are time steps
    ours = nearest_rank_percentiles(data, [0.0, 0.25, 0.5, 0.75, 1.0], nodata=0)
    np.testing.assert_array_equal(ours, reference(data, [0.0, 0.25, 0.5, 0.75, 1.0], 0))
    assert ours[:, 0, 0].tolist() == [3, 5, 5, 5, 7]
    np.testing.assert_array_equal(ours, odc(data, [0.0, 0.25, 0.5, 0.75, 1.0], 0))


def test_float_data_with_nan_nodata() -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 20, size=(12, 6, 5)).astype(np.float32) / 4
    data[rng.random(data.shape) < 0.4] = np.nan
    data[:, 0, 0] = np.nan  # all missing
    ours = nearest_rank_percentiles(data, QUANTILES, nodata=np.nan)
    ref = reference(data, QUANTILES, np.nan)
    np.testing.assert_array_equal(ours, ref)  # NaN compares equal position-wise here
    assert np.isnan(ours[:, 0, 0]).all()
    np.testing.assert_array_equal(ours, odc(data, QUANTILES, np.nan))


def test_band_time_layout_and_long_stacks() -> None:
    """(band, time, y, x) with time_axis=1, and stacks long enough to take the sorting path."""
    rng = np.random.default_rng(11)
    nodata = -999
    data = rng.integers(-50, 3000, size=(2, 150, 4, 3)).astype(np.int16)
    data[rng.random(data.shape) < 0.2] = nodata
    data[0, :140, 0, 0] = nodata  # 10 left: counting path next to sorting ones
    ours = nearest_rank_percentiles(data, QUANTILES, nodata=nodata, time_axis=1)
    assert ours.shape == (2, len(QUANTILES), 4, 3)
    for b in range(2):
        np.testing.assert_array_equal(ours[b], reference(data[b], QUANTILES, nodata))
    floats = np.where(data == nodata, np.nan, data).astype(np.float64)
    ours_f = nearest_rank_percentiles(floats, QUANTILES, nodata=np.nan, time_axis=1)
    np.testing.assert_array_equal(np.nan_to_num(ours_f, nan=nodata), ours)


def test_odc_agreement_on_realistic_stack() -> None:
    """Reflectance-like int16 stack (band, time, y, x) with coherent cloud gaps and odc-stats' quantiles."""
    rng = np.random.default_rng(5)
    n_band, n_time, ny, nx = 3, 31, 40, 40
    surface = rng.uniform(200, 4000, size=(n_band, 1, ny, nx))
    stack = np.rint(
        surface * rng.uniform(0.9, 1.1, size=(1, n_time, 1, 1))
        + rng.normal(0, 60, (n_band, n_time, ny, nx))
    )
    stack = stack.astype(np.int16)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for t in range(n_time):  # one round cloud per scene, all bands masked
        cy, cx, r = rng.integers(0, ny), rng.integers(0, nx), rng.integers(3, 25)
        stack[:, t, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = -999
    ours = nearest_rank_percentiles(stack, [0.1, 0.5, 0.9], nodata=-999, time_axis=1)
    for b in range(n_band):
        np.testing.assert_array_equal(ours[b], odc(stack[b], [0.1, 0.5, 0.9], -999))
        np.testing.assert_array_equal(
            ours[b, :, ::7, ::7], reference(stack[b, :, ::7, ::7], [0.1, 0.5, 0.9], -999)
        )


def test_nodata_inside_the_value_range_is_still_excluded() -> None:
    """odc-algo needs nodata at one end of the value range (it sorts nodata among the data); we do not."""
    data = np.array([[-5], [0], [7], [9], [-3]], dtype=np.int16)[
        :, :, None
    ]  # nodata 0 between valid values
    ours = nearest_rank_percentiles(data, [0.0, 0.5, 1.0], nodata=0)
    # valid values sorted: -5, -3, 7, 9; ranks 0, round(1.5) = 2, 3
    assert ours[:, 0, 0].tolist() == [-5, 7, 9]
    assert odc(data, [0.0, 0.5, 1.0], 0)[:, 0, 0].tolist() != [-5, 7, 9]


def test_input_validation() -> None:
    data = np.zeros((4, 2, 2), np.int16)
    with pytest.raises(ValueError, match="quantiles"):
        nearest_rank_percentiles(data, [1.5], nodata=-999)
    with pytest.raises(ValueError, match="no quantiles"):
        nearest_rank_percentiles(data, [], nodata=-999)
    with pytest.raises(TypeError, match="bool"):
        nearest_rank_percentiles(data.astype(bool), [0.5], nodata=0)
    with pytest.raises(ValueError, match="nodata"):
        nearest_rank_percentiles(data.astype(np.uint8), [0.5], nodata=-999)


def test_list_form_per_quantile() -> None:
    rng = np.random.default_rng(9)
    data = random_stack(rng, 9, 4, 5, "int16", -999)
    parts = percentile(data, [0.1, 0.9], -999, min_count=2)
    assert len(parts) == 2 and parts[0].shape == (4, 5)
    np.testing.assert_array_equal(np.stack(parts), reference(data, [0.1, 0.9], -999, min_valid=2))

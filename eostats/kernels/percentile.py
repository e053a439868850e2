"""Nearest-rank percentiles along time, every requested quantile from one pass over the data.

The rule is odc-algo's ``np_percentile`` (used by odc-stats' percentile plugins through ``xr_quantile_bands``):

* at each pixel the valid observations (not ``nodata``; for float data also not NaN) are ranked;
* quantile ``q`` (in [0, 1]) is the valid value of rank ``round(q * (n - 1))`` (0-based), where ``n`` is the
  number of valid observations and ``round`` is numpy's round-half-to-even (with 6 values, q = 0.5 gives rank 2
  and q = 0.1 gives rank 0): no interpolation, the result is always one of the observations;
* fewer than ``min_valid`` (3) valid observations give ``nodata``.

The result has the input's dtype. odc-algo sorts the whole array once per quantile and relies on ``nodata``
sorting to one end (it must be the smallest or largest value, or NaN); here each pixel's valid values are ranked
once for all quantiles, and ``nodata`` is excluded wherever it lies in the value range. Both give the same values
whenever odc-algo's precondition holds (see docs/quirks.md).

Pixels are processed independently, so spatial dims carry no CRS meaning here; parallelism is over pixels with
numba's thread pool (``numba.set_num_threads``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["MIN_VALID", "nearest_rank_percentiles", "percentile", "rank_table"]

MIN_VALID = 3
"""Fewer valid observations than this give nodata (odc-algo's threshold)."""

# Ranking by counting is O(n^2) but branch-free and vectorised: faster than sorting a few dozen values. Longer
# stacks are sorted instead.
_COUNT_RANK_MAX = 96
_PIXELS_PER_TASK = 512
# packed keys (value << 8 | position) stay distinct and ordered for integers of up to 16 bits
_PACKED_DTYPES = tuple(np.dtype(t) for t in ("int8", "uint8", "int16", "uint16"))
_SUPPORTED = (*_PACKED_DTYPES, *(np.dtype(t) for t in ("int32", "uint32", "float32", "float64")))


def rank_table(quantiles: Sequence[float], n_time: int) -> np.ndarray:
    """``table[k, n]`` = 0-based rank of quantile ``k`` among ``n`` valid values, ``n`` in ``0..n_time``.

    Computed with numpy exactly as odc-algo does it (float64 product, ``np.round``), so the rounding of every
    half-way case is the same. Entries for ``n == 0`` are unused.
    """
    counts = np.arange(n_time + 1, dtype=np.int64)
    table = np.stack([np.round(float(q) * (counts - 1)) for q in quantiles]).astype(np.int64)
    return np.clip(table, 0, max(n_time - 1, 0))


@numba.njit(cache=True, nogil=True, inline="always")
def _scatter_by_packed_rank(keys: np.ndarray, m: int, ranked: np.ndarray) -> None:
    """ranked[r] = value of rank r among keys[:m] (distinct packed keys)."""
    for i in range(m):
        ki = keys[i]
        r = 0
        for j in range(m):
            r += keys[j] < ki
        ranked[r] = ki >> 8


@numba.njit(parallel=True, cache=True, nogil=True)
def _percentiles_packed(data, nodata, table, min_valid, out):
    """Integer data of <= 16 bits: data (outer, time, pixels) → out (outer, quantile, pixels)."""
    n_outer, n_time, n_pix = data.shape
    n_q = table.shape[0]
    n_chunks = (n_pix + _PIXELS_PER_TASK - 1) // _PIXELS_PER_TASK
    for task in numba.prange(n_outer * n_chunks):
        o = task // n_chunks
        p0 = (task % n_chunks) * _PIXELS_PER_TASK
        p1 = min(p0 + _PIXELS_PER_TASK, n_pix)
        keys = np.empty(n_time, dtype=np.int32)
        ranked = np.empty(n_time, dtype=np.int32)
        for p in range(p0, p1):
            m = 0
            for t in range(n_time):
                v = data[o, t, p]
                if v != nodata:
                    keys[m] = (np.int32(v) << 8) | m
                    m += 1
            if m < min_valid:
                for k in range(n_q):
                    out[o, k, p] = nodata
                continue
            if m <= _COUNT_RANK_MAX and m < 256:
                _scatter_by_packed_rank(keys, m, ranked)
                for k in range(n_q):
                    out[o, k, p] = ranked[table[k, m]]
            else:
                chosen = np.sort(keys[:m])
                for k in range(n_q):
                    out[o, k, p] = chosen[table[k, m]] >> 8


@numba.njit(parallel=True, cache=True, nogil=True)
def _percentiles_generic(data, nodata, table, min_valid, out):
    """Any supported dtype; NaN (float data) is never valid."""
    n_outer, n_time, n_pix = data.shape
    n_q = table.shape[0]
    n_chunks = (n_pix + _PIXELS_PER_TASK - 1) // _PIXELS_PER_TASK
    for task in numba.prange(n_outer * n_chunks):
        o = task // n_chunks
        p0 = (task % n_chunks) * _PIXELS_PER_TASK
        p1 = min(p0 + _PIXELS_PER_TASK, n_pix)
        values = np.empty(n_time, dtype=data.dtype)
        ranked = np.empty(n_time, dtype=data.dtype)
        for p in range(p0, p1):
            m = 0
            for t in range(n_time):
                v = data[o, t, p]
                if v != nodata and v == v:
                    values[m] = v
                    m += 1
            if m < min_valid:
                for k in range(n_q):
                    out[o, k, p] = nodata
                continue
            if m <= _COUNT_RANK_MAX:
                for i in range(m):
                    vi = values[i]
                    r = 0
                    for j in range(m):
                        # ties ranked by position, so the ranks are a permutation
                        r += (values[j] < vi) | ((values[j] == vi) & (j < i))
                    ranked[r] = vi
                for k in range(n_q):
                    out[o, k, p] = ranked[table[k, m]]
            else:
                chosen = np.sort(values[:m])
                for k in range(n_q):
                    out[o, k, p] = chosen[table[k, m]]


def nearest_rank_percentiles(
    data: np.ndarray,
    quantiles: Sequence[float],
    *,
    nodata: float | int,
    time_axis: int = 0,
    min_valid: int = MIN_VALID,
) -> np.ndarray:
    """Nearest-rank percentiles of ``data`` along ``time_axis`` (odc-algo's ``np_percentile`` rule).

    :param data: int8/uint8/int16/uint16/int32/uint32/float32/float64 observations; e.g. ``(time, y, x)``, or
        ``(band, time, y, x)`` with ``time_axis=1``. Values equal to ``nodata`` (and NaN for float data) are
        missing.
    :param quantiles: fractions in [0, 1] (0.1 for the 10th percentile), all computed from one ranking.
    :param nodata: the missing-data value; also the output where fewer than ``min_valid`` observations are valid.
        NaN is allowed for float data.
    :param min_valid: odc-algo's threshold, 3.
    :returns: an array of ``data``'s dtype, shaped like ``data`` with the time axis replaced by one entry per
        quantile (``(quantile, y, x)``, or ``(band, quantile, y, x)``).
    """
    data = np.asarray(data)
    if data.dtype not in _SUPPORTED:
        raise TypeError(
            f"unsupported dtype {data.dtype}; expected one of {', '.join(map(str, _SUPPORTED))}"
        )
    if data.ndim < 1:
        raise ValueError("data needs a time axis")
    axis = time_axis % data.ndim
    qs = [float(q) for q in quantiles]
    if not qs:
        raise ValueError("no quantiles requested")
    bad = [q for q in qs if not 0.0 <= q <= 1.0]
    if bad:
        raise ValueError(f"quantiles must lie in [0, 1], got {bad}")
    if min_valid < 1:
        raise ValueError(f"min_valid must be >= 1, got {min_valid}")
    is_float = data.dtype.kind == "f"
    if not is_float and (nodata is None or not np.can_cast(np.min_scalar_type(nodata), data.dtype)):
        raise ValueError(f"nodata {nodata!r} is not a value of {data.dtype}")

    shape = data.shape
    n_time = shape[axis]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    cube = np.ascontiguousarray(data).reshape(outer, n_time, inner)
    out = np.empty((outer, len(qs), inner), dtype=data.dtype)
    table = rank_table(qs, n_time)
    fill = data.dtype.type(np.nan if nodata is None else nodata)
    if data.dtype in _PACKED_DTYPES:
        _percentiles_packed(cube, fill, table, int(min_valid), out)
    else:
        _percentiles_generic(cube, fill, table, int(min_valid), out)
    return out.reshape(*shape[:axis], len(qs), *shape[axis + 1 :])


def percentile(
    data: np.ndarray, quantiles: Sequence[float], nodata: float | int, *, min_count: int = MIN_VALID
) -> list[np.ndarray]:
    """:func:`nearest_rank_percentiles` of ``(time, ...)`` data as one array per quantile (the form
    ``eostats.plugins.tools.nearest_rank_percentiles`` returns)."""
    result = nearest_rank_percentiles(
        data, quantiles, nodata=nodata, time_axis=0, min_valid=min_count
    )
    return list(result)

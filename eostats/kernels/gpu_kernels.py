"""CUDA twins of the geomedian and percentile kernels, written with ``numba.cuda``: one GPU thread per pixel.

Each thread works through its own pixel exactly as the CPU kernels do (:mod:`eostats.kernels.geomedian`,
:mod:`eostats.kernels.percentile`) and retires as soon as that pixel has converged, so a few slow pixels do not
hold the others back (a batched array formulation iterates every pixel until the slowest one stops):

* geomedian: an observation is kept where no band is ``nodata`` (nor NaN) — ``count``; DN → ``float32(DN) *
  scale + offset`` with the product rounded to float32 on its own (``fmul_rn``: a fused multiply-add would round
  differently from odc-algo's numpy); Weiszfeld with the Vardi–Zhang step in float64 from the mean of the kept
  observations, stopped when the step is shorter than ``eps`` or after ``maxiters`` iterations; EMAD, SMAD and
  BCMAD against the float32 geomedian, medians like ``np.nanmedian`` using the CPU kernel's own selection routine
  (compiled for the device from the same Python source).
* percentiles: the valid values ranked by counting (ties by position), the value of rank ``round(q * (n - 1))``
  picked from odc-algo's rank table; fewer than ``min_valid`` valid values give ``nodata``.

The observations are read from the integer stack in device memory on every iteration (neighbouring threads read
neighbouring pixels, so the reads coalesce) instead of being copied into per-thread storage; the per-pixel
distances for the medians live in a thread-local array sized at compile time from the number of observations
(a power of two, at least 32, at most :data:`MAX_OBSERVATIONS`).

What can differ from the CPU kernel: the CUDA compiler may contract float64 multiply-adds of the iteration into
FMAs, and the CPU kernel lets LLVM reassociate its sums; both change float64 roundings, so the point where the
iteration stops can move by a tiny fraction of ``eps``. ``count`` and the percentiles are exact.

Host ↔ device copies happen in :func:`_upload` / :func:`_download` only; ``timings`` (a dict, optional) receives
``upload``, ``kernel`` and ``download`` seconds per call. Pixel values are in the data's own grid; nothing here is
spatial.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import numba
import numpy as np
from numba import cuda
from numba.core import config as numba_config

from eostats.kernels import geomedian as cpu_geomedian
from eostats.kernels import percentile as cpu_percentile

__all__ = ["MAX_BANDS", "MAX_OBSERVATIONS", "geomedian_mads_gpu", "nearest_rank_percentiles_gpu"]

MAX_BANDS = 32
"""Bands per geomedian; the per-thread estimate vectors have this compile-time size."""
MAX_OBSERVATIONS = 4096
"""Observations per pixel the GPU kernels take (thread-local arrays of this size cost 32 KiB per thread)."""
THREADS_PER_BLOCK = (32, 8)
"""(x, y) threads of a block: 32 neighbouring columns of 8 rows, so a warp reads one contiguous run of a row."""

_RANK_SELECT_MAX = 64  # as the CPU kernel: rank counting up to this many values, selection beyond

# -- device helpers --------------------------------------------------------------------------------------------

_SIMULATED = bool(numba_config.ENABLE_CUDASIM)

if _SIMULATED:

    @cuda.jit(device=True)
    def _mul_rn32(a, b):
        return np.float32(a) * np.float32(b)

else:  # pragma: no cover - needs a CUDA device
    from numba.cuda import libdevice

    # a float32 product rounded on its own: without it NVVM contracts `x * scale + offset` into an FMA
    _mul_rn32 = libdevice.fmul_rn

# the CPU kernel's selection routines, compiled for the device from the same Python source
_middle_by_rank = cuda.jit(device=True)(cpu_geomedian._middle_by_rank.py_func)
_middle_by_selection = cuda.jit(device=True)(cpu_geomedian._middle_by_selection.py_func)


@cuda.jit(device=True)
def _median_of_valid(values, n):
    """Median of the non-NaN entries of ``values[:n]`` like ``np.nanmedian``; NaN if none. Reorders ``values``."""
    m = 0
    for i in range(n):
        v = values[i]
        if v == v:
            values[m] = v
            m += 1
    if m == 0:
        return math.nan
    k = m // 2
    if m <= _RANK_SELECT_MAX:
        lower, upper = _middle_by_rank(values, m, k)
    else:
        lower, upper = _middle_by_selection(values, m, k)
    if m % 2 == 1:
        return upper
    return 0.5 * (lower + upper)


@cuda.jit(device=True)
def _read_observation(data, t, row, col, n_band, nodata, scale32, offset32, x):
    """Scaled values of observation ``t`` into ``x``; False when a band is nodata or NaN."""
    for b in range(n_band):
        v = data[b, t, row, col]
        if v == nodata or v != v:
            return False
        x[b] = np.float64(_mul_rn32(np.float32(v), scale32) + offset32)
    return True


@cuda.jit(device=True)
def _mad_distance(kind, x, gm, n_band, gm_norm):
    """Distance of one observation to the geomedian: 0 Euclidean, 1 cosine (``1 - cos``), 2 Bray-Curtis;
    IEEE results for zero denominators, as the CPU kernel's numpy error model gives."""
    if kind == 0:
        d2 = 0.0
        for b in range(n_band):
            diff = x[b] - gm[b]
            d2 += diff * diff
        return math.sqrt(d2)
    if kind == 1:
        dot = 0.0
        x2 = 0.0
        for b in range(n_band):
            dot += x[b] * gm[b]
            x2 += x[b] * x[b]
        denominator = math.sqrt(x2) * gm_norm
        if denominator == 0.0:
            return math.nan  # x or gm is the zero vector, so dot is 0 too: 0/0
        return 1.0 - dot / denominator
    abs_diff = 0.0
    abs_sum = 0.0
    for b in range(n_band):
        abs_diff += abs(x[b] - gm[b])
        abs_sum += abs(x[b] + gm[b])
    if abs_sum == 0.0:
        return math.nan if abs_diff == 0.0 else math.inf
    return abs_diff / abs_sum


# -- kernels ---------------------------------------------------------------------------------------------------


@functools.cache
def _geomedian_kernel(capacity: int):
    """The geomedian kernel for up to ``capacity`` observations per pixel (a compile-time array size)."""

    @cuda.jit
    def kernel(
        data, nodata, scale32, offset32, scale, eps, maxiters, median, emad, smad, bcmad, count
    ):
        col, row = cuda.grid(2)
        n_band, n_time, n_rows, n_cols = data.shape
        if row >= n_rows or col >= n_cols:
            return
        est = cuda.local.array(MAX_BANDS, numba.float64)
        target = cuda.local.array(MAX_BANDS, numba.float64)
        x = cuda.local.array(MAX_BANDS, numba.float64)
        dist = cuda.local.array(capacity, numba.float64)

        # 1. count and mean of the observations with every band valid
        for b in range(n_band):
            est[b] = 0.0
        n = 0
        for t in range(n_time):
            if _read_observation(data, t, row, col, n_band, nodata, scale32, offset32, x):
                for b in range(n_band):
                    est[b] += x[b]
                n += 1
        count[row, col] = n
        if n == 0:
            for b in range(n_band):
                median[b, row, col] = math.nan
            emad[row, col] = math.nan
            smad[row, col] = math.nan
            bcmad[row, col] = math.nan
            return
        for b in range(n_band):
            est[b] = est[b] / n

        # 2. Weiszfeld + Vardi–Zhang until this pixel's own step is shorter than eps
        for _ in range(maxiters):
            for b in range(n_band):
                target[b] = 0.0
            inv_dist_sum = 0.0
            n_coincident = 0
            for t in range(n_time):
                if not _read_observation(data, t, row, col, n_band, nodata, scale32, offset32, x):
                    continue
                d2 = 0.0
                for b in range(n_band):
                    diff = x[b] - est[b]
                    d2 += diff * diff
                if d2 > 0.0:
                    weight = 1.0 / math.sqrt(d2)
                    inv_dist_sum += weight
                    for b in range(n_band):
                        target[b] += weight * x[b]
                else:
                    n_coincident += 1
            if inv_dist_sum == 0.0:
                break  # every observation sits on the estimate: it is the median
            for b in range(n_band):
                target[b] = target[b] / inv_dist_sum
            # a point coinciding with the estimate pulls it back by min(1, eta/r)
            pull = 0.0
            if n_coincident > 0:
                r2 = 0.0
                for b in range(n_band):
                    rb = (target[b] - est[b]) * inv_dist_sum
                    r2 += rb * rb
                r = math.sqrt(r2)
                pull = min(1.0, n_coincident / r) if r > 0.0 else 1.0
            step2 = 0.0
            for b in range(n_band):
                new = (1.0 - pull) * target[b] + pull * est[b]
                diff = new - est[b]
                step2 += diff * diff
                est[b] = new
            if math.sqrt(step2) < eps:
                break

        # 3. MADs against the float32 geomedian that is reported
        gm_norm2 = 0.0
        for b in range(n_band):
            g32 = np.float32(est[b])
            median[b, row, col] = g32
            target[b] = np.float64(g32)  # target now holds the reported geomedian
            gm_norm2 += target[b] * target[b]
        gm_norm = math.sqrt(gm_norm2)
        for kind in range(3):
            i = 0
            for t in range(n_time):
                if _read_observation(data, t, row, col, n_band, nodata, scale32, offset32, x):
                    dist[i] = _mad_distance(kind, x, target, n_band, gm_norm)
                    i += 1
            value = _median_of_valid(dist, n)
            if kind == 0:
                emad[row, col] = value / scale
            elif kind == 1:
                smad[row, col] = value
            else:
                bcmad[row, col] = value

    return kernel


@functools.cache
def _percentile_kernel(capacity: int, dtype_name: str):
    """The percentile kernel for ``dtype_name`` data and up to ``capacity`` observations per pixel."""
    value_type = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def kernel(data, nodata, table, min_valid, out):
        p, o = cuda.grid(2)
        n_outer, n_time, n_pix = data.shape
        if p >= n_pix or o >= n_outer:
            return
        n_q = table.shape[0]
        values = cuda.local.array(capacity, value_type)
        ranked = cuda.local.array(capacity, value_type)
        m = 0
        for t in range(n_time):
            v = data[o, t, p]
            if v != nodata and v == v:
                values[m] = v
                m += 1
        if m < min_valid:
            for k in range(n_q):
                out[o, k, p] = nodata
            return
        for i in range(m):
            vi = values[i]
            r = 0
            for j in range(m):
                # ties ranked by position, so the ranks are a permutation
                r += (values[j] < vi) or (values[j] == vi and j < i)
            ranked[r] = vi
        for k in range(n_q):
            out[o, k, p] = ranked[table[k, m]]

    return kernel


# -- host side -------------------------------------------------------------------------------------------------


def _capacity(n_time: int) -> int:
    if n_time > MAX_OBSERVATIONS:
        raise ValueError(
            f"{n_time} observations per pixel exceed the GPU kernels' limit of {MAX_OBSERVATIONS}; "
            "use backend: cpu"
        )
    return max(32, 1 << max(0, n_time - 1).bit_length())


def _grid(n_x: int, n_y: int) -> tuple[tuple[int, int], tuple[int, int]]:
    tx, ty = THREADS_PER_BLOCK
    return ((n_x + tx - 1) // tx, (n_y + ty - 1) // ty), (tx, ty)


def _add(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


def _upload(timings: dict[str, float] | None, *arrays: np.ndarray):
    """Host arrays → device arrays (the only host-to-device copies)."""
    t0 = time.perf_counter()
    on_device = [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]
    cuda.synchronize()
    _add(timings, "upload", time.perf_counter() - t0)
    return on_device


def _download(timings: dict[str, float] | None, *device_arrays) -> list[np.ndarray]:
    """Device arrays → host arrays (the only device-to-host copies)."""
    t0 = time.perf_counter()
    on_host = [d.copy_to_host() for d in device_arrays]
    _add(timings, "download", time.perf_counter() - t0)
    return on_host


def _run(kernel, grid, timings: dict[str, float] | None, *args) -> None:
    t0 = time.perf_counter()
    blocks, threads = grid
    kernel[blocks, threads](*args)
    cuda.synchronize()
    _add(timings, "kernel", time.perf_counter() - t0)


def geomedian_mads_gpu(
    data: np.ndarray,
    *,
    nodata: int | float | None,
    scale: float,
    offset: float,
    eps: float = 1e-5,
    maxiters: int = 1000,
    timings: dict[str, float] | None = None,
) -> cpu_geomedian.GeomedianResult:
    """:func:`eostats.kernels.geomedian.geomedian_mads` (``start="mean"``) on the GPU: same arguments and dtypes,
    same :class:`~eostats.kernels.geomedian.GeomedianResult` (median float32 ``(band, y, x)`` in scaled units, EMAD
    in DN, SMAD and BCMAD unitless, NaN where ``count`` is 0; count uint16)."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"data must be (band, time, y, x); got shape {data.shape}")
    if data.dtype not in cpu_geomedian._SUPPORTED_DTYPES:
        raise TypeError(f"unsupported dtype {data.dtype}; expected int16, uint16 or float32")
    if scale == 0:
        raise ValueError("scale must be non-zero")
    if maxiters < 1:
        raise ValueError(f"maxiters must be >= 1, got {maxiters}")
    n_band, n_time, ny, nx = data.shape
    if n_band > MAX_BANDS:
        raise ValueError(
            f"{n_band} bands exceed the GPU geomedian's limit of {MAX_BANDS}; use backend: cpu"
        )
    if n_time > np.iinfo(np.uint16).max:
        raise ValueError(f"{n_time} observations do not fit the uint16 count")
    capacity = _capacity(n_time)
    result = cpu_geomedian.GeomedianResult(
        median=np.full((n_band, ny, nx), np.nan, dtype=np.float32),
        emad=np.full((ny, nx), np.nan, dtype=np.float32),
        smad=np.full((ny, nx), np.nan, dtype=np.float32),
        bcmad=np.full((ny, nx), np.nan, dtype=np.float32),
        count=np.zeros((ny, nx), dtype=np.uint16),
    )
    if ny == 0 or nx == 0 or n_band == 0:
        return result
    nodata_value = np.nan if nodata is None else float(nodata)
    (d_data,) = _upload(timings, data)
    d_median = cuda.device_array((n_band, ny, nx), dtype=np.float32)
    d_emad, d_smad, d_bcmad = (cuda.device_array((ny, nx), dtype=np.float32) for _ in range(3))
    d_count = cuda.device_array((ny, nx), dtype=np.uint16)
    _run(
        _geomedian_kernel(capacity),
        _grid(nx, ny),
        timings,
        d_data,
        np.float64(nodata_value),
        np.float32(scale),
        np.float32(offset),
        np.float64(scale),
        np.float64(eps),
        np.int64(maxiters),
        d_median,
        d_emad,
        d_smad,
        d_bcmad,
        d_count,
    )
    result.median, result.emad, result.smad, result.bcmad, result.count = _download(
        timings, d_median, d_emad, d_smad, d_bcmad, d_count
    )
    return result


def nearest_rank_percentiles_gpu(
    data: np.ndarray,
    quantiles: Sequence[float],
    *,
    nodata: float | int,
    time_axis: int = 0,
    min_valid: int = cpu_percentile.MIN_VALID,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """:func:`eostats.kernels.percentile.nearest_rank_percentiles` on the GPU: same arguments, same result."""
    data = np.asarray(data)
    if data.dtype not in cpu_percentile._SUPPORTED:
        supported = ", ".join(map(str, cpu_percentile._SUPPORTED))
        raise TypeError(f"unsupported dtype {data.dtype}; expected one of {supported}")
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
    if data.dtype.kind != "f" and (
        nodata is None or not np.can_cast(np.min_scalar_type(nodata), data.dtype)
    ):
        raise ValueError(f"nodata {nodata!r} is not a value of {data.dtype}")
    shape = data.shape
    n_time = shape[axis]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    out_shape = (*shape[:axis], len(qs), *shape[axis + 1 :])
    fill = data.dtype.type(np.nan if nodata is None else nodata)
    if outer == 0 or inner == 0:
        return np.full(out_shape, fill, dtype=data.dtype)
    capacity = _capacity(n_time)
    cube = data.reshape(outer, n_time, inner)
    table = cpu_percentile.rank_table(qs, n_time)
    d_cube, d_table = _upload(timings, cube, table)
    d_out = cuda.device_array((outer, len(qs), inner), dtype=data.dtype)
    _run(
        _percentile_kernel(capacity, data.dtype.name),
        _grid(inner, outer),
        timings,
        d_cube,
        fill,
        d_table,
        np.int64(min_valid),
        d_out,
    )
    (out,) = _download(timings, d_out)
    return out.reshape(out_shape)

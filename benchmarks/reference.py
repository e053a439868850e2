"""odc-stats' own computations, configured as odc-stats configures them: the references we compare against.

Nothing here is copied from odc-stats; these functions call odc-algo (a test/benchmark dependency) the way
odc-stats' plugins call it (see docs in /work/shared/reference/odc-stats.md §4.2-4.3).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# Stacks handed to the in-process dask worker by reference: embedding a large numpy array in the task graph
# would make dask pickle and ship it, a cost odc-stats never pays (its graph reads files).
_REGISTRY: dict[int, np.ndarray] = {}
_KEYS = itertools.count()


def _registered_slice(key: int, band: int, time: int) -> np.ndarray:
    return _REGISTRY[key][band, time]


def odc_work_chunk(size: int) -> int:
    """odc-stats' default work chunk (400) when it divides the tile, else the largest power of two that does.

    odc-algo's ``yxbt_sink`` fails when the tile is not a multiple of the work chunk.
    """
    if size % 400 == 0:
        return 400
    chunk = 256
    while chunk > 8 and size % chunk:
        chunk //= 2
    return min(chunk, size)


def odc_dask_client(threads: int = 2):
    """The dask client odc-stats runs with: one in-process worker (``reshape_strategy="mem"`` needs it)."""
    import distributed

    return distributed.Client(
        processes=False, n_workers=1, threads_per_worker=threads, dashboard_address=None
    )


def odc_geomedian_with_mads(stack: np.ndarray, *, nodata: int, scale: float, offset: float):
    """odc-algo's ``geomedian_with_mads`` on a ``(band, time, y, x)`` int stack, as odc-stats' gm plugins call it.

    scale/offset as given, eps None (0.1 x scale for integer input), maxiters 1000, num_threads 1,
    ``reshape_strategy="mem"``, whole-tile output chunks, a single in-process dask worker with ``threads``
    threads (call it inside ``with odc_dask_client(threads):``, started once per process as odc-stats does).
    Returns the computed ``xr.Dataset`` (bands ``b0..``, ``smad``, ``emad``, ``bcmad``, ``count``).
    """
    import dask
    import dask.array as da
    import odc.algo
    import xarray as xr

    n_band, n_time, ny, nx = stack.shape
    coords = {
        "time": np.arange(n_time).astype("datetime64[D]"),
        "y": 1000.0 - 30.0 * np.arange(ny),
        "x": 2000.0 + 30.0 * np.arange(nx),
    }
    key = next(_KEYS)
    _REGISTRY[key] = stack

    def band_array(b: int) -> da.Array:
        slices = [
            da.from_delayed(dask.delayed(_registered_slice)(key, b, t), (ny, nx), dtype=stack.dtype)
            for t in range(n_time)
        ]
        return da.stack(slices)

    ds = xr.Dataset(
        {
            f"b{b}": xr.DataArray(
                band_array(b), dims=("time", "y", "x"), coords=coords, attrs={"nodata": nodata}
            )
            for b in range(n_band)
        }
    )
    work = odc_work_chunk(ny if ny == nx else min(ny, nx))
    try:
        return odc.algo.geomedian_with_mads(
            ds,
            scale=scale,
            offset=offset,
            eps=None,
            maxiters=1000,
            num_threads=1,
            reshape_strategy="mem",
            work_chunks=(work, work),
            out_chunks=(-1, -1, -1),
        ).compute()
    finally:
        del _REGISTRY[key]


def odc_percentiles(stack: np.ndarray, quantiles: Sequence[float], *, nodata) -> np.ndarray:
    """odc-algo's ``np_percentile`` per band and quantile, as ``xr_quantile_bands`` does on one block.

    ``stack``: ``(band, time, y, x)``; returns ``(band, quantile, y, x)`` of the input dtype.
    """
    from odc.algo._percentile import np_percentile

    return np.stack(
        [
            np.stack([np_percentile(stack[b], q, nodata) for q in quantiles])
            for b in range(stack.shape[0])
        ]
    )

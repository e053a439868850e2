"""Time and memory limits of one tile: a pre-flight memory estimate, and a watched child process for the rest.

Both limits come from the run's config, as in odc-stats: ``max_processing_time`` (seconds, 0: none) and
``memory_limit`` (``60Gi``, ``4GB``, bytes; none by default). A Snakemake tile job without ``memory_limit`` is bounded
by its rule's ``mem_mb`` resource (see ``scripts/tile.py``).

* Before reading any pixel, :func:`check_tile_memory` estimates the tile's peak memory from the task's solar days,
  its variables' dtypes and ``chunk_size`` (:func:`estimate_tile_memory`) and refuses a tile that cannot fit with a
  :class:`TileMemoryError` naming the task, the estimate, the limit and the fix.
* While the tile runs, :func:`run_tile_within_limits` keeps it in a child process watched by
  :func:`eostats.queue.run_supervised` (the queue worker's supervisor): the child is stopped once the time limit
  has passed or its resident memory exceeds the limit, and the failure is a :class:`TileLimitError` with one line
  naming the task and the limit, never a silent kill by the system's out-of-memory killer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eostats.loading import DAYS_PER_BATCH, GDAL_CACHE_BYTES
from eostats.taskids import TaskId

log = logging.getLogger("eostats.limits")

BASELINE_BYTES = 300 * 2**20
"""Resident memory of a tile process before its first block: Python, numpy, numba, GDAL and the plugin's code
(measured: 310-335 MB peak for a whole 512² gm-ls or pq tile of the sample), on top of GDAL's block cache."""

BLOCK_COPIES = 3
"""Blocks of the observation stack in memory at once: the one being reduced, the next one being read, and the
plugin's working copy of the block (the geomedian converts the stack to float32)."""


class TileLimitError(RuntimeError):
    """A tile stopped by its time or memory limit; the message names the task, the limit and what to change."""


class TileMemoryError(TileLimitError):
    """A tile whose estimated peak memory exceeds the limit: refused before reading any pixel."""


def parse_memory_limit(value: Any) -> int:
    """Bytes of ``memory_limit`` (``60Gi``, ``4GB``, ``2000MB``, a number of bytes; 0/None: no limit)."""
    from eostats.cli import (
        parse_memory_limit as parse,
    )  # the command line's parser: one syntax everywhere

    return parse(value)


def memory_limit_of(config: Mapping[str, Any], mem_mb: float | None = None) -> int:
    """The tile's memory limit in bytes: the config's ``memory_limit``, else ``mem_mb`` megabytes (Snakemake's
    resource, 10^6 bytes), else 0 (none). ValueError naming the key when ``memory_limit`` is not a size."""
    configured = config.get("memory_limit")
    if configured not in (None, "", 0, "0"):
        try:
            return parse_memory_limit(configured)
        except ValueError as err:
            raise ValueError(f"config key 'memory_limit': {err}") from None
    return int(float(mem_mb) * 1e6) if mem_mb else 0


def estimate_tile_memory(
    n_observations: int,
    variable_bytes: int,
    block_shape: tuple[int, int],
    tile_shape: tuple[int, int],
    output_bytes: int,
    threads: int = 1,
) -> int:
    """Estimated peak resident memory (bytes) of one tile.

    ``n_observations``: solar days of the task; ``variable_bytes``: bytes per pixel of one observation summed over
    the variables the reader hands the plugin; ``block_shape``: ``chunk_size`` block (pixels, y x);
    ``tile_shape``: the tile (pixels); ``output_bytes``: bytes per pixel of all output bands.

    Sum of :data:`BASELINE_BYTES`, GDAL's block cache, :data:`BLOCK_COPIES` block stacks
    (observations × block pixels × variable bytes), the whole-tile output arrays, and the reading threads' native
    windows (``DAYS_PER_BATCH`` days per thread, about one block each).
    """
    block_pixels = int(block_shape[0]) * int(block_shape[1])
    stack = int(n_observations) * block_pixels * int(variable_bytes)
    outputs = int(tile_shape[0]) * int(tile_shape[1]) * int(output_bytes)
    reading = max(1, int(threads)) * DAYS_PER_BATCH * block_pixels * int(variable_bytes)
    return BASELINE_BYTES + GDAL_CACHE_BYTES + BLOCK_COPIES * stack + outputs + reading


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def check_tile_memory(
    task: TaskId | str,
    *,
    n_observations: int,
    variables: Mapping[str, Any],
    outputs: Mapping[str, Any],
    tile_shape: tuple[int, int],
    chunk_size: int,
    threads: int,
    limit: int,
) -> int:
    """Refuse a tile whose :func:`estimate_tile_memory` exceeds ``limit`` bytes (0: no limit) with a
    :class:`TileMemoryError` naming the task, the estimate, the limit and the fix; returns the estimate.

    ``variables``: the reader's variables (name → dtype); ``outputs``: the plugin's output bands (name → dtype).
    """
    block = (min(chunk_size, tile_shape[0]), min(chunk_size, tile_shape[1]))
    variable_bytes = sum(np.dtype(d).itemsize for d in variables.values())
    output_bytes = sum(np.dtype(d).itemsize for d in outputs.values())
    estimate = estimate_tile_memory(
        n_observations, variable_bytes, block, tile_shape, output_bytes, threads
    )
    if limit and estimate > limit:
        raise TileMemoryError(
            f"task {task}: needs about {_size(estimate)} ({n_observations} observations × {len(variables)} "
            f"variables × {block[0]}×{block[1]} px blocks), more than its memory limit {_size(limit)}; "
            f"set a smaller chunk_size (now {chunk_size}) or give the tile more memory "
            f"(memory_limit, or resources.tile.mem_mb)"
        )
    return estimate


def run_tile_within_limits(
    run: Any,
    cache_path: str | Path,
    task: TaskId,
    *,
    threads: int = 1,
    max_processing_time: float = 0,
    memory_limit: int = 0,
) -> Any:
    """:func:`eostats.tile.run_tile` in a child process stopped at ``max_processing_time`` seconds or
    ``memory_limit`` resident bytes (0: none); returns its :class:`~eostats.tile.TileReport`.

    Without either limit the tile runs in this process. A failure of the tile raises :class:`TileLimitError`
    (a limit) or :class:`eostats.tile.TileFailure` (anything else, with the child's ``bad_datasets`` and traceback).
    """
    from eostats.queue import TileJob, run_supervised
    from eostats.tile import TileFailure, TileReport, run_tile

    if not max_processing_time and not memory_limit:
        return run_tile(run, cache_path, task, threads=threads)
    config = dict(run.config)
    if memory_limit:
        config["memory_limit"] = int(
            memory_limit
        )  # the child's pre-flight estimate checks the same limit
    job = TileJob(config, str(cache_path), task, threads)
    outcome = run_supervised(
        job, max_processing_time=max_processing_time, memory_limit=memory_limit
    )
    if outcome.status == "done":
        return TileReport(**outcome.report)
    if outcome.limit == "time":
        raise TileLimitError(
            f"stopped after {outcome.seconds:.0f} s, over its time limit "
            f"(max_processing_time {max_processing_time:g} s)"
        )
    if outcome.limit == "memory":
        raise TileLimitError(
            f"{outcome.error}; set a smaller chunk_size (now {run.config['chunk_size']}) or give the "
            f"tile more memory (memory_limit, or resources.tile.mem_mb)"
        )
    raise TileFailure(
        outcome.message or outcome.error or "failed",
        bad_datasets=outcome.bad_datasets,
        detail=outcome.traceback,
        error_type=outcome.error_type,
    )

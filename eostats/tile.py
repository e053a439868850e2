"""Run one task end to end: its datasets from the cache → statistic on the tile → COGs, ``.sha1``, STAC item.

The tile is computed one spatial block at a time (``chunk_size`` pixels square): a :class:`TaskReader` reads, masks
and reprojects the block's inputs with the job's threads, the plugin reduces it, and the result goes into the output
arrays. The next block is read while the current one is reduced, so at most two blocks of inputs are in memory. Outputs are
built in a temporary sibling directory and renamed into place as a whole; the STAC item is the last file written, so
its presence means the tile is complete (as in odc-stats).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import numpy as np
import xarray as xr
from odc.geo.xr import xr_coords

from eostats.cache import DatasetCache
from eostats.cog import CogOptions, write_cog
from eostats.eo3 import source_dataset_ids, write_tile_documents
from eostats.fileio import atomic_directory, write_json_atomic
from eostats.kernels.gpu import describe, use_backend
from eostats.limits import check_tile_memory, memory_limit_of
from eostats.loading import TaskReader
from eostats.metadata import BandInfo, build_stac_item, write_sha1
from eostats.odc_index import task_items
from eostats.periods import parse_period
from eostats.plugins.preview import PREVIEW_ASSETS, write_previews
from eostats.taskids import TaskId
from eostats.workflow import Run

log = logging.getLogger("eostats.tile")


@dataclass
class TileReport:
    """What a tile job did; logged as one JSON line at the end of the job (:func:`report_line`).

    ``datasets``: how many datasets the task read (``dataset_ids``: which, after exclusions and filters);
    ``observations``: solar days; ``seconds``: wall time per stage; ``peak_rss_mb``: the process's peak resident
    memory (MiB).
    """

    task: str
    datasets: int
    observations: int
    blocks: int
    output_dir: str
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    outputs: list[str] = field(default_factory=list)
    dataset_ids: list[str] = field(default_factory=list)


class TileFailure(RuntimeError):
    """A tile that failed in a child process (:func:`eostats.limits.run_tile_within_limits`): the child's message,
    its unusable datasets (``{"id", "asset", "href", "reason"}``), exception class name and traceback."""

    def __init__(
        self,
        message: str,
        *,
        bad_datasets: list[dict] | None = None,
        detail: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.bad_datasets = list(bad_datasets or [])
        self.detail = detail
        self.error_type = error_type


def _blocks(shape: tuple[int, int], size: int, column_alignment: int = 1):
    """Spatial blocks of about ``size`` pixels square; block columns start at multiples of ``column_alignment``
    (a tile no wider than ``size`` is one block column: it starts at column 0)."""
    ny, nx = shape
    width = nx if nx <= size else max(column_alignment, size // column_alignment * column_alignment)
    for y0 in range(0, ny, size):
        for x0 in range(0, nx, width):
            yield slice(y0, min(y0 + size, ny)), slice(x0, min(x0 + width, nx))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def compute_tile(
    run: Run,
    cache: DatasetCache,
    task: TaskId,
    threads: int,
    items: list[Mapping[str, Any]] | None = None,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """The plugin's measurements on the tile of ``task`` as an in-memory Dataset (dims y, x).

    ``items``: the task's :func:`~eostats.odc_index.task_items`, when the caller has them already.
    """
    plugin = run.plugin
    geobox = run.grid.tile_geobox(task.x, task.y)
    chunk = int(run.config["chunk_size"])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if items is None:
        items = task_items(run, cache, task)
    if not items and set(cache.dataset_ids(task)) - run.excluded_datasets:
        # datasets left after the exclusions, all dropped by odc-stats' dataset_filters: nothing to compute, the task
        # fails as in odc-stats
        raise ValueError(
            f"task {task}: no dataset passes dataset_filters {run.config.get('dataset_filters')!r}"
        )
    if not items:
        # every dataset of the task excluded (exclude_datasets): the tile is written all nodata, with no sources,
        # so that the run stays complete and its mosaics cover the tile
        log.warning("task %s: every dataset is excluded; writing the tile as all nodata", task)
        return _empty_tile(plugin, geobox), {
            "datasets": 0,
            "observations": 0,
            "blocks": 0,
            "timings": {},
        }
    threads = max(1, int(threads))
    blocks = list(_blocks(geobox.shape.yx, chunk, plugin.column_alignment))
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    with (
        use_backend(run.config.get("backend", "cpu")) as backend,
        TaskReader(items, geobox, plugin, threads=threads, single_pass=len(blocks) == 1) as reader,
        ThreadPoolExecutor(1) as prefetch,
    ):
        # the kernels run on `backend` in this thread; the prefetch thread decodes the next block meanwhile
        log.info("task %s: kernels on %s", task, describe(backend))
        timings["plan"] = time.perf_counter() - t0
        limit = memory_limit_of(run.config)
        # clear counts summed on native pixels by the reading threads hold no observations (nothing to reduce)
        counting = reader.counts_natively is not None
        estimate = check_tile_memory(
            task,
            n_observations=len(reader.days),
            variables={}
            if counting
            else {name: dtype for name, (dtype, _) in reader.variables.items()},
            outputs={m.name: m.dtype for m in plugin.measurements},
            tile_shape=geobox.shape.yx,
            chunk_size=chunk,
            threads=threads,
            limit=limit,
        )
        log.info(
            "task %s: %d datasets, %d observations; estimated peak memory %.0f MiB (limit %s)",
            task,
            len(items),
            len(reader.days),
            estimate / 2**20,
            f"{limit / 2**20:.0f} MiB" if limit else "none",
        )
        # a tile of one block is its block's reduction as it is (no tile-sized copy, ~3 ms per 1024² tile)
        outputs = plugin.empty_outputs(geobox.shape.yx) if len(blocks) > 1 else {}
        t_load = t_reduce = 0.0
        load = reader.count if counting else reader.read
        pending = None
        for i, (ys, xs) in enumerate(blocks, start=1):
            t1 = time.perf_counter()
            # the first block is read in this thread, which has nothing else to do yet and whose coordinate
            # transformations are set up by the planning (a thread's first use of a PROJ transformation costs
            # ~20 ms); each later one was decoded by the prefetch thread while the block before was reduced
            block = pending.result() if pending else load(ys, xs)
            # decode the next block while this one is reduced
            pending = prefetch.submit(load, *blocks[i]) if i < len(blocks) else None
            t2 = time.perf_counter()
            reduced = block if counting else plugin.reduce(block)
            del block
            if len(blocks) > 1:
                for name in outputs:
                    outputs[name][ys, xs] = np.asarray(reduced[name])
            else:
                outputs = _whole_tile_outputs(plugin, reduced, geobox.shape.yx)
            t3 = time.perf_counter()
            t_load += t2 - t1
            t_reduce += t3 - t2
            # progress, chunks done of total
            log.info("task %s: block %d of %d done", task, i, len(blocks))
        n_obs = len(reader.days)
        read_cpu = {stage: round(seconds, 3) for stage, seconds in reader.cpu_seconds.items()}
    # "load": time spent waiting for inputs (reading overlaps reducing); "reduce": the plugin's reductions
    timings["load"] = t_load
    timings["reduce"] = t_reduce
    ds = _tile_dataset(outputs, geobox)
    info = {
        "datasets": len(items),
        "observations": n_obs,
        "blocks": len(blocks),
        "timings": timings,
        "read_cpu_seconds": read_cpu,
        "backend": backend,
    }
    return ds, info


def _whole_tile_outputs(
    plugin: Any, reduced: Mapping[str, Any], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The measurements of a tile computed as one block: the reduction's arrays in the measurements' dtypes."""
    outputs = {}
    for m in plugin.measurements:
        array = np.asarray(reduced[m.name], dtype=m.dtype)
        if array.shape != tuple(shape):
            raise ValueError(
                f"measurement {m.name}: reduced to {array.shape}, the tile is {tuple(shape)}"
            )
        outputs[m.name] = array
    return outputs


def _tile_dataset(outputs: Mapping[str, np.ndarray], geobox: Any) -> xr.Dataset:
    """The tile's measurements as a Dataset on ``geobox``."""
    # variables as (dims, array): one DataArray per measurement, each aligned on its own, costs 2 ms more
    return xr.Dataset(
        {name: (("y", "x"), arr) for name, arr in outputs.items()}, coords=xr_coords(geobox)
    )


def _empty_tile(plugin: Any, geobox: Any) -> xr.Dataset:
    return _tile_dataset(plugin.empty_outputs(geobox.shape.yx), geobox)


def write_tile(
    run: Run,
    task: TaskId,
    data: xr.Dataset,
    source_ids: list[str],
    source_items: list[dict] | None = None,
) -> list[Path]:
    """Write one COG per measurement, the ``.sha1`` and the STAC item (last) into the task directory, atomically.

    With ``cog_opts.overrides.rgba`` (odc-stats' switch) and a plugin with RGB bands, also the ``_rgba.tif``
    preview and a ``_thumbnail.jpg``, listed in the ``.sha1`` and as the item's assets ``rgba`` and ``thumbnail``.
    """
    product = run.product
    plugin = run.plugin
    geobox = run.grid.tile_geobox(task.x, task.y)
    final_dir = Path(product.task_dir(task))
    cog_opts = dict(run.config.get("cog_opts") or {})
    period = parse_period(task.period)
    with atomic_directory(final_dir) as tmp_dir:
        bands: dict[str, BandInfo] = {}
        written: list[Path] = []
        for m in plugin.measurements:
            name = Path(product.band_path(task, m.name)).name
            options = CogOptions.from_config(cog_opts, band=m.name, categorical=m.categorical)
            da = data[m.name].astype(m.dtype)
            da.attrs["nodata"] = m.nodata
            written.append(
                write_cog(tmp_dir / name, da, nodata=m.nodata, description=m.name, options=options)
            )
            bands[m.name] = BandInfo(dtype=m.dtype, nodata=m.nodata, path=name)
        previews = write_previews(
            tmp_dir, product.file_prefix(task), data, plugin, geobox, cog_opts
        )
        written += previews.values()
        sha1_name = Path(product.sha1_path(task)).name
        write_sha1(tmp_dir / sha1_name, written)
        item = build_stac_item(
            product=product,
            task=task,
            geobox=geobox,
            bands=bands,
            source_ids=source_ids,
            processing_datetime=datetime.now(UTC),
            period_range=(period.start, period.end),
        )
        for key, path in previews.items():
            item["assets"][key] = {"href": path.name, "title": key, **PREVIEW_ASSETS[key]}
        if run.config.get("apply_eodatasets3"):
            # eo3 documents for `datacube dataset add`, written before the STAC item
            written += write_tile_documents(
                tmp_dir, run, task, geobox, bands, item, source_ids, source_items or [], sha1_name
            )
        write_json_atomic(tmp_dir / Path(product.stac_path(task)).name, item)
    return [final_dir / p.name for p in written] + [
        final_dir / sha1_name,
        Path(product.stac_path(task)),
    ]


def run_tile(run: Run, cache_path: str | Path, task: TaskId, threads: int = 1) -> TileReport:
    """Compute and write one task; returns the report that the job logs as a JSON line."""
    t0 = time.perf_counter()
    cache = DatasetCache.open(cache_path)
    if not cache.has_task(task):
        raise KeyError(f"task {task} is not in the cache {cache_path}")
    items = task_items(run, cache, task)
    data, info = compute_tile(run, cache, task, threads, items)
    t1 = time.perf_counter()
    source_ids = source_dataset_ids(items)
    files = write_tile(run, task, data, source_ids, items)
    timings = dict(info["timings"], write=time.perf_counter() - t1, total=time.perf_counter() - t0)
    return TileReport(
        task=str(task),
        datasets=info["datasets"],
        observations=info["observations"],
        blocks=info["blocks"],
        output_dir=str(Path(run.product.task_dir(task))),
        seconds={k: round(v, 3) for k, v in timings.items()},
        peak_rss_mb=round(peak_rss_mb(), 1),
        outputs=[str(p) for p in files],
        dataset_ids=sorted(str(item.get("id")) for item in items),
    )


def report_line(report: TileReport) -> str:
    """The job's last log line: ``{"event": "tile_done", ...}``, one JSON object on one line (log systems such as
    Loki parse it)."""
    return json.dumps({"event": "tile_done", **asdict(report)}, sort_keys=True)


def emit_json_line(line: str) -> None:
    """Log ``line`` (a JSON document) as a line of its own, without the time/level prefix of the other lines, to
    every handler of the root logger: the line is then valid JSON by itself for log systems (Loki's ``json`` stage)."""
    record = logging.makeLogRecord(
        {"name": log.name, "msg": line, "levelno": logging.INFO, "levelname": "INFO"}
    )
    plain = logging.Formatter("%(message)s")
    for handler in logging.getLogger().handlers:
        previous = handler.formatter
        handler.setFormatter(plain)
        try:
            handler.handle(record)
        finally:
            handler.setFormatter(previous)


def failure_line(
    task: TaskId | str,
    reason: str,
    dataset_ids: list[str],
    bad_datasets: list[dict],
    seconds: float,
    record: str | Path | None,
) -> str:
    """A failed job's last log line: ``{"event": "tile_failed", ...}`` with the task, its datasets, the one-line
    reason, the unusable datasets, the wall time (s), the peak resident memory (MiB) and the failure record's path."""
    return json.dumps(
        {
            "event": "tile_failed",
            "task": str(task),
            "reason": " ".join(str(reason).split()),
            "datasets": len(dataset_ids),
            "dataset_ids": sorted(dataset_ids),
            "bad_datasets": bad_datasets,
            "seconds": {"total": round(seconds, 3)},
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "failure_record": str(record) if record else None,
        },
        sort_keys=True,
    )

"""Full-history tiles from a run's own period tiles (odc-stats' ``wofs-summary-fh`` over ``wofs-summary``).

A run with ``full_history: {plugin, plugin_config, product, period}`` makes, besides its period tiles (e.g. the
annual water summaries), one more tile per x/y: the ``full_history.plugin`` (default ``wofs-summary-fh``) reduced
over the period tiles of that x/y. In Snakemake it is an aggregation rule whose inputs are those period tiles'
STAC items, so adding a year or changing one year's datasets re-runs only the period tiles that changed and the
full-history tiles of their x/y.

- The full-history product is the run's config with ``plugin``, ``plugin_config`` and ``product`` replaced by those
  of ``full_history`` (same grid, same ``output_location`` template, so it must be another product name).
- Its period is ``full_history.period`` when given, else odc-stats' ``all`` frequency over the run's tasks:
  ``{first year}--P{n}Y`` from the first period's start to the last period's end (``2020-07--P2Y`` when the
  periods start in July; months ``--P<n>M`` when they are not whole years). Period tiles wholly inside it are its
  inputs.
- Inputs are read straight from the period tiles' COGs (the bands the plugin's ``input_bands`` name, assets of
  each STAC item), which lie on the same tile grid: no reprojection. Each band's nodata is the COG's own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from odc.geo.xr import xr_coords
from rasterio.windows import Window

from eostats.config import ConfigError
from eostats.periods import parse_period
from eostats.taskids import TaskId
from eostats.workflow import Run

log = logging.getLogger("eostats.fullhistory")


def full_history_run(run: Run) -> Run | None:
    """The run of the full-history product (None when the config has no ``full_history``)."""
    settings = run.config.get("full_history")
    if not settings:
        return None
    config = dict(run.config)
    config["plugin"] = settings.get("plugin") or "wofs-summary-fh"
    config["plugin_config"] = dict(settings.get("plugin_config") or {})
    config["product"] = dict(settings.get("product") or {})
    config["full_history"] = None
    fh_run = Run(config)
    if fh_run.product.location == run.product.location:
        raise ConfigError(
            f"config key 'full_history.product': the full-history product writes to {fh_run.product.location}, "
            "where the period tiles are; give it another name"
        )
    missing = [
        b for b in fh_run.plugin.input_bands if b not in {m.name for m in run.plugin.measurements}
    ]
    if missing:
        raise ConfigError(
            f"config key 'full_history.plugin': {config['plugin']} reads {', '.join(missing)}, which plugin "
            f"{run.config['plugin']} does not write"
        )
    return fh_run


def all_tasks(run: Run, csv_path: Path | str) -> list[TaskId]:
    """Every task of the run's task list, whatever the config's ``tasks`` selectors pick: a full-history tile
    needs all periods of its x/y."""
    return Run({**run.config, "tasks": []}).read_task_csv(Path(csv_path))


def _months(start: datetime, end: datetime) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


def full_history_period(periods: Iterable[str], configured: str | None = None) -> str:
    """The full-history period label: ``configured``, else the span of ``periods`` in odc-stats' label form."""
    if configured:
        parse_period(configured)  # a bad label fails here, naming it
        return configured
    ranges = [parse_period(p) for p in periods]
    if not ranges:
        raise ValueError("no periods to make a full history of")
    start = min(r.start for r in ranges)
    end = max(r.end for r in ranges)
    months = _months(start, end)
    head = f"{start.year}" if start.month == 1 else f"{start.year}-{start.month:02d}"
    return f"{head}--P{months // 12}Y" if months % 12 == 0 else f"{head}--P{months}M"


def period_inputs(tasks: Sequence[TaskId], full_period: str, x: int, y: int) -> list[TaskId]:
    """The period tasks at tile (x, y) that lie wholly inside ``full_period``, sorted by period."""
    full = parse_period(full_period)
    inside = []
    for task in tasks:
        if (task.x, task.y) != (x, y):
            continue
        period = parse_period(task.period)
        if full.start <= period.start and period.end <= full.end:
            inside.append(task)
    return sorted(inside)


def full_history_tasks(tasks: Sequence[TaskId], full_period: str) -> list[TaskId]:
    """One full-history task per x/y that has a period task inside ``full_period``."""
    tiles = {(t.x, t.y) for t in tasks if period_inputs([t], full_period, t.x, t.y)}
    return [TaskId(full_period, x, y) for x, y in sorted(tiles)]


@dataclass
class _Input:
    item_id: str
    files: dict[str, Path | str]  # band → COG path or URL


def _read_input(item_path: Path, bands: Sequence[str]) -> _Input:
    """A period tile's STAC item: its id and the COGs of ``bands`` (hrefs relative to the item)."""
    try:
        item = json.loads(Path(item_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"period tile {item_path} cannot be read: {err}") from None
    # under object storage the COGs stay where the item's self link says; locally they lie beside the item
    self_href = next((lk["href"] for lk in item.get("links", []) if lk.get("rel") == "self"), "")
    base: Path | str = self_href.rsplit("/", 1)[0] if "://" in self_href else Path(item_path).parent
    files: dict[str, Path | str] = {}
    for band in bands:
        asset = item.get("assets", {}).get(band)
        if asset is None:
            raise ValueError(f"period tile {item_path} has no band {band!r}")
        href = asset["href"]
        if "://" in href or href.startswith("/"):
            files[band] = href
        elif isinstance(base, Path):
            files[band] = base / href
        else:
            files[band] = f"{base}/{href}"
    return _Input(item_id=str(item["id"]), files=files)


def _gdal_path(path: Path | str) -> str:
    text = str(path)
    return "/vsis3/" + text[len("s3://") :] if text.startswith("s3://") else text


def compute_full_history(
    fh_run: Run, task: TaskId, item_paths: Sequence[Path | str]
) -> tuple[xr.Dataset, list[str]]:
    """The full-history plugin's outputs on tile ``task`` from the period tiles' items (dims y, x, tile grid
    CRS), and the period tiles' ids (its lineage). Read and reduced one ``chunk_size`` block at a time."""
    plugin = fh_run.plugin
    geobox = fh_run.grid.tile_geobox(task.x, task.y)
    bands = list(plugin.input_bands)
    inputs = [_read_input(Path(p), bands) for p in item_paths]
    if not inputs:
        raise ValueError(f"full-history task {task} has no period tiles")
    outputs = plugin.empty_outputs(geobox.shape.yx)
    chunk = int(fh_run.config["chunk_size"])
    ny, nx = geobox.shape.yx
    sources = {band: [rasterio.open(_gdal_path(i.files[band])) for i in inputs] for band in bands}
    try:
        for files in sources.values():
            for src in files:
                if (src.height, src.width) != (ny, nx) or not src.transform.almost_equals(
                    geobox.transform
                ):
                    raise ValueError(
                        f"period tile COG {src.name} is not on the grid of tile {task.x}/{task.y} "
                        f"({src.width}x{src.height} {src.transform}, expected {nx}x{ny} {geobox.transform})"
                    )
        for y0 in range(0, ny, chunk):
            for x0 in range(0, nx, chunk):
                window = Window(x0, y0, min(chunk, nx - x0), min(chunk, ny - y0))
                ys, xs = slice(y0, y0 + window.height), slice(x0, x0 + window.width)
                block = xr.Dataset(
                    {
                        band: xr.DataArray(
                            np.stack([src.read(1, window=window) for src in files]),
                            dims=("time", "y", "x"),
                            attrs={"nodata": files[0].nodata},
                        )
                        for band, files in sources.items()
                    }
                )
                reduced = plugin.reduce(block)
                for name in outputs:
                    outputs[name][ys, xs] = reduced[name].values
    finally:
        for files in sources.values():
            for src in files:
                src.close()
    coords = xr_coords(geobox)
    data = xr.Dataset(
        {name: xr.DataArray(arr, dims=("y", "x"), coords=coords) for name, arr in outputs.items()}
    )
    return data, [i.item_id for i in inputs]


def run_full_history_tile(fh_run: Run, task: TaskId, item_paths: Sequence[Path | str]) -> dict:
    """Compute and write one full-history tile; returns the job's report (logged as one JSON line)."""
    from eostats.tile import (  # the tile writer's imports are heavy: only in the job
        peak_rss_mb,
        write_tile,
    )

    t0 = time.perf_counter()
    data, source_ids = compute_full_history(fh_run, task, item_paths)
    files = write_tile(fh_run, task, data, source_ids)
    return {
        "event": "full_history_done",
        "task": str(task),
        "period_tiles": len(source_ids),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": [str(p) for p in files],
    }

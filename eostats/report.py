"""The run report: what a run made, what failed, and what it cost, as files for ``snakemake --report``.

:func:`write_run_report` reads the state of a run *when it is called* (it depends on no tile output, so it also
runs after a ``--keep-going`` run where some tiles failed) and writes, under ``<results>/report/``:

- ``maps/<period>/observations.png``: the period's tiles in grid index space (x to the right, y upwards), coloured
  by their number of observation days (the task list's ``days``) on a dark-blue → yellow ramp, white where the grid
  has no task;
- ``maps/<period>/status.png``: the same tiles coloured by status (:data:`STATUS_COLOURS`): *done* (the STAC item
  exists), *failed* (a failure record of :mod:`eostats.failures` and no item), *skipped* (in the task list, not
  chosen by the config's ``tasks`` selectors), *pending* (chosen, neither done nor failed: not run yet, or killed);
- ``quicklooks/<period>/<name>.png``: the period's mosaics read at low resolution from their overviews — ``rgb``
  in true colour for products with red, green and blue bands (the plugin's ``rgb_bands``/``rgb_clamp``, as
  odc-stats' previews), every other band on the same colour ramp between its 2nd and 98th percentile (counts from
  0); a grey image when the mosaic was not made (its tiles did not all finish);
- ``tables/<period>/tiles.html``: per tile its status, datasets, observation days, observations used, wall time
  (s) and peak resident memory (MB) from the tile log's last JSON line (``{"event": "tile_done", ...}``, or
  ``tile_failed`` for a failed attempt; the tile rule keeps no benchmark file, see rules/tiles.smk), and the mosaic
  job's from its benchmark file;
- ``failures/failures.html``: every failure record (task, reason, bad datasets, log).

PNGs are written by :func:`write_png` (numpy + zlib, no imaging library). Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from eostats.fileio import atomic_path, write_text_atomic
from eostats.plugins.preview import DEFAULT_CLAMP, rgb_bands_of, to_rgba
from eostats.taskids import TaskId
from eostats.workflow import Run

__all__ = [
    "STATUS_COLOURS",
    "TileRow",
    "colour_ramp",
    "report_paths",
    "status_fingerprint",
    "tile_rows",
    "write_png",
    "write_run_report",
]

#: RGB of each tile status on the status map
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "done": (46, 139, 87),
    "failed": (214, 39, 40),
    "skipped": (170, 170, 170),
    "pending": (255, 187, 34),
}
#: no task at this grid position, and no data in a quicklook
BACKGROUND = (255, 255, 255)
NO_DATA = (224, 224, 224)
#: the colour ramp's anchors, low to high (dark blue → teal → yellow, readable in grey)
RAMP_ANCHORS = np.array([(48, 18, 130), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=float)
#: longest side of a quicklook, pixels
QUICKLOOK_SIZE = 512


# -- PNG ------------------------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB (``(rows, cols, 3)``) or RGBA (``(rows, cols, 4)``) image as PNG bytes."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected a (rows, cols, 3|4) image, got shape {image.shape}")
    rows, cols, channels = image.shape
    # filter type 0 (none) before every row
    raw = np.concatenate(
        [np.zeros((rows, 1), np.uint8), image.reshape(rows, cols * channels)], axis=1
    )
    header = struct.pack(">IIBBBBB", cols, rows, 8, 6 if channels == 4 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def write_png(path: Path | str, rgb: np.ndarray) -> Path:
    """Write ``rgb`` (see :func:`png_bytes`) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(rgb))
    return Path(path)


def colour_ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` (any shape) as RGB uint8 on :data:`RAMP_ANCHORS`, ``low`` → first anchor, ``high`` → last;
    NaN → :data:`NO_DATA`."""
    values = np.asarray(values, dtype=float)
    span = high - low if high > low else 1.0
    position = np.clip((np.nan_to_num(values, nan=low) - low) / span, 0.0, 1.0) * (
        len(RAMP_ANCHORS) - 1
    )
    index = np.minimum(position.astype(int), len(RAMP_ANCHORS) - 2)
    frac = (position - index)[..., None]
    rgb = RAMP_ANCHORS[index] * (1 - frac) + RAMP_ANCHORS[index + 1] * frac
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[np.isnan(values)] = NO_DATA
    return rgb


# -- tile status ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileRow:
    """One task of the task list, as the report shows it."""

    task: TaskId
    status: str  # done | failed | skipped | pending
    datasets: int  # datasets in the task list
    days: int  # observation days in the task list
    observations: int | None = None  # observations the tile job used (its log)
    seconds: float | None = None  # tile job wall time, s (its log)
    peak_rss_mb: float | None = None  # tile job peak resident memory, MB (its log)
    reason: str = ""  # why it failed (its failure record)


def read_task_list(path: Path | str) -> dict[TaskId, tuple[int, int]]:
    """Every task of an odc-stats task CSV with its (datasets, days)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    return {
        TaskId(r[0].strip(), int(r[1]), int(r[2])): (int(r[3]), int(r[4])) for r in rows[1:] if r
    }


def tile_log_path(run: Run, task: TaskId) -> Path:
    """The tile job's log (``log:`` of the tile rule)."""
    return run.results / "logs" / "tile" / task.period / f"x{task.x}_y{task.y}.log"


def last_tile_event(log_path: Path, event_name: str = "tile_done") -> dict[str, Any] | None:
    """The last ``{"event": event_name, ...}`` JSON object in a tile log (``tile_done``, or ``tile_failed`` with the
    failed attempt's ``seconds.total`` and ``peak_rss_mb``); None without one."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        start = line.find('{"')
        if start < 0 or event_name not in line:
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == event_name:
            return event
    return None


def load_failure_records(run: Run) -> list[dict[str, Any]]:
    """The run's failure records (:func:`eostats.failures.load_failures`) as dicts, sorted by task."""
    try:
        from eostats.failures import load_failures
    except ImportError:  # an eostats without failure records: read the files where they would be
        records = []
        for path in sorted((run.results / "logs" / "failures").glob("*/x*_y*.json")):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: str(r.get("task", "")))
    return [record.to_dict() for record in load_failures(run)]


def tile_rows(run: Run, task_list: Path | str | None = None) -> list[TileRow]:
    """Every task of the run's task list with its status and costs, sorted by task."""
    listed = read_task_list(task_list or run.task_csv)
    chosen = set(run.read_task_csv(Path(task_list) if task_list else None))
    failures = {r["task"]: r for r in load_failure_records(run)}
    rows = []
    for task, (datasets, days) in sorted(listed.items()):
        event = None
        if Path(run.tile_item(task)).exists():
            status = "done"
            event = last_tile_event(tile_log_path(run, task), "tile_done")
        elif str(task) in failures:
            status = "failed"
            event = last_tile_event(tile_log_path(run, task), "tile_failed")
        elif task not in chosen:
            status = "skipped"
        else:
            status = "pending"
        seconds = (event or {}).get("seconds", {}).get("total")
        rows.append(
            TileRow(
                task=task,
                status=status,
                datasets=datasets,
                days=days,
                observations=(event or {}).get("observations"),
                seconds=float(seconds) if seconds is not None else None,
                peak_rss_mb=(event or {}).get("peak_rss_mb"),
                reason=failures[str(task)]["reason"] if status == "failed" else "",
            )
        )
    return rows


def status_fingerprint(run: Run) -> str:
    """A digest of everything the report shows that changes while a run goes on: the tiles' STAC items, the
    failure records, the mosaics and the logs (names and modification times). The report rule takes it as a
    parameter, so that it runs again exactly when the report would change."""
    # not the report rule's own log: the digest must not change because the report was made
    roots = [
        Path(run.product.location),
        run.results / "logs" / "tile",
        run.results / "logs" / "failures",
        run.results / "benchmarks" / "mosaic",
    ]
    entries = []
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if name.endswith((".json", ".log", ".tif", ".tsv")) and not name.startswith("."):
                    path = os.path.join(folder, name)
                    try:
                        entries.append(f"{path} {os.stat(path).st_mtime_ns}")
                    except FileNotFoundError:
                        continue
    return hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()


# -- maps ---------------------------------------------------------------------------------------------------------
def tile_map(rows: Sequence[TileRow], colour_of, cell: int | None = None) -> np.ndarray:
    """An RGB image of ``rows`` in grid index space: one ``cell``-pixel square per tile (1-pixel white gaps), x to
    the right, y upwards; ``colour_of(row)`` gives each tile's RGB."""
    xs = [r.task.x for r in rows]
    ys = [r.task.y for r in rows]
    nx, ny = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
    cell = cell or int(np.clip(480 // max(nx, ny), 4, 64))
    image = np.full((ny * cell, nx * cell, 3), BACKGROUND, dtype=np.uint8)
    for row in rows:
        col = (row.task.x - min(xs)) * cell
        top = (max(ys) - row.task.y) * cell  # north up
        image[top : top + cell - 1, col : col + cell - 1] = colour_of(row)
    return image


# -- quicklooks ---------------------------------------------------------------------------------------------------
def read_overview(path: Path | str, size: int = QUICKLOOK_SIZE) -> tuple[np.ndarray, Any]:
    """Band 1 of a mosaic at most ``size`` pixels a side (GDAL reads the nearest overview), and its nodata."""
    with rasterio.open(path) as src:
        scale = max(src.width, src.height) / size
        shape = (
            (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            if scale > 1
            else src.shape
        )
        return src.read(1, out_shape=shape, resampling=Resampling.nearest), src.nodata


def _valid(values: np.ndarray, nodata: Any) -> np.ndarray:
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= values != nodata
    return valid


def ramp_quicklook(path: Path | str, *, counts: bool) -> np.ndarray:
    """One mosaic band on the colour ramp: from 0 (``counts``) or its 2nd percentile to its 98th percentile."""
    values, nodata = read_overview(path)
    valid = _valid(values, nodata)
    data = np.where(valid, values.astype(float), np.nan)
    if valid.any():
        low = 0.0 if counts else float(np.percentile(data[valid], 2))
        high = float(np.percentile(data[valid], 98))
    else:
        low, high = 0.0, 1.0
    return colour_ramp(data, low, high)


def rgb_quicklook(paths: Sequence[Path | str], clamp: Sequence[float]) -> np.ndarray:
    """True colour from the red, green and blue mosaics (odc-stats' preview scaling); no data → light grey."""
    bands = [read_overview(p) for p in paths]
    rgba = np.moveaxis(
        to_rgba(*(b[0] for b in bands), nodata=bands[0][1], clamp=clamp), 0, -1
    )  # (y, x, 4)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = NO_DATA
    return rgb


def placeholder(size: int = 64) -> np.ndarray:
    """A plain grey image standing for a mosaic that was not made."""
    return np.full((size, size, 3), NO_DATA, dtype=np.uint8)


# -- tables -------------------------------------------------------------------------------------------------------
_STYLE = (
    "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} td.l,th.l{text-align:left} "
    ".swatch{display:inline-block;width:10px;height:10px;margin-right:4px}"
)


def _html_page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body><h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )


def _number(value: Any, digits: int = 1) -> str:
    return (
        "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    )


def read_benchmark(path: Path) -> dict[str, float] | None:
    """Wall time ``s`` and peak memory ``max_rss`` (MB) of a Snakemake benchmark file (its last row)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError:
        return None
    if not rows:
        return None

    def number(key: str) -> float | None:
        try:
            return float(rows[-1][key])
        except (KeyError, TypeError, ValueError):
            return None

    return {"s": number("s"), "max_rss": number("max_rss")}


def tiles_table(period: str, rows: Sequence[TileRow], mosaic_benchmark: dict | None) -> str:
    """The period's tiles (and its mosaic job) as an HTML page."""
    counts = {s: sum(r.status == s for r in rows) for s in STATUS_COLOURS}
    legend = " ".join(
        f"<span class='swatch' style='background:rgb{STATUS_COLOURS[s]}'></span>{s}: {n}"
        for s, n in counts.items()
    )
    head = (
        "<tr><th class='l'>task</th><th class='l'>status</th><th>datasets</th><th>days</th>"
        "<th>observations</th><th>wall time (s)</th><th>peak memory (MiB)</th><th class='l'>reason</th></tr>"
    )
    lines = [
        f"<tr class='tile' data-task='{r.task}' data-status='{r.status}'><td class='l'>{r.task}</td>"
        f"<td class='l'><span class='swatch' style='background:rgb{STATUS_COLOURS[r.status]}'></span>{r.status}</td>"
        f"<td>{r.datasets}</td><td>{r.days}</td><td>{_number(r.observations)}</td><td>{_number(r.seconds)}</td>"
        f"<td>{_number(r.peak_rss_mb)}</td><td class='l'>{html.escape(r.reason)}</td></tr>"
        for r in rows
    ]
    timed = [r.seconds for r in rows if r.seconds is not None]
    peaks = [r.peak_rss_mb for r in rows if r.peak_rss_mb is not None]
    summary = (
        f"<p>{len(rows)} tiles. {legend}. Tile wall time: total {sum(timed):.1f} s, longest "
        f"{max(timed):.1f} s; largest peak memory {max(peaks):.1f} MiB.</p>"
        if timed
        else f"<p>{len(rows)} tiles. {legend}.</p>"
    )
    mosaic = (
        f"<p>Mosaic job: wall time {_number(mosaic_benchmark['s'])} s, peak memory "
        f"{_number(mosaic_benchmark['max_rss'])} MiB (its benchmark file).</p>"
        if mosaic_benchmark
        else "<p>Mosaic job: not run (yet).</p>"
    )
    body = f"{summary}\n{mosaic}\n<table>\n{head}\n" + "\n".join(lines) + "\n</table>"
    return _html_page(f"Tiles of {period}", body)


def failures_table(records: Iterable[dict[str, Any]]) -> str:
    """Every failure record as an HTML page."""
    records = list(records)
    if not records:
        return _html_page("Failures", "<p>No task failed.</p>")
    head = "<tr><th class='l'>task</th><th class='l'>reason</th><th class='l'>bad datasets</th><th class='l'>log</th><th class='l'>time</th></tr>"
    lines = []
    for r in records:
        bad = "<br>".join(
            html.escape(f"{d.get('id')} ({d.get('asset')}): {d.get('reason')}")
            for d in r.get("bad_datasets") or []
        )
        lines.append(
            f"<tr class='failure' data-task='{html.escape(r['task'])}'><td class='l'>{html.escape(r['task'])}</td>"
            f"<td class='l'>{html.escape(r.get('reason', ''))}</td><td class='l'>{bad}</td>"
            f"<td class='l'>{html.escape(r.get('log', ''))}</td><td class='l'>{html.escape(r.get('time', ''))}</td></tr>"
        )
    body = (
        f"<p>{len(records)} task(s) failed.</p>\n<table>\n{head}\n"
        + "\n".join(lines)
        + "\n</table>"
    )
    return _html_page("Failures", body)


# -- the whole report ---------------------------------------------------------------------------------------------
def report_dir(run: Run) -> Path:
    return run.results / "report"


def report_paths(run: Run) -> dict[str, Path]:
    """The report's folders (each a ``report()`` output of the report rule) and its failures page."""
    root = report_dir(run)
    return {
        "maps": root / "maps",
        "quicklooks": root / "quicklooks",
        "tables": root / "tables",
        "failures": root / "failures",
    }


def quicklook_names(run: Run) -> list[str]:
    """``rgb`` when the product has red, green and blue mosaics, then every other mosaic band."""
    rgb = rgb_bands_of(run.plugin)
    bands = run.mosaic_bands
    names = (
        ["rgb"] if rgb and all(b in bands for b in rgb) and run.config["mosaic"]["per_band"] else []
    )
    return names + [b for b in bands if not (names and b in rgb)]


def write_run_report(run: Run, task_list: Path | str | None = None) -> list[Path]:
    """Write every report file (see the module docstring) for the run's current state; returns their paths."""
    paths = report_paths(run)
    rows = tile_rows(run, task_list)
    written: list[Path] = []
    max_days = max((r.days for r in rows), default=1)
    measurements = {m.name: m for m in run.plugin.measurements}
    rgb = rgb_bands_of(run.plugin)
    clamp = getattr(run.plugin, "rgb_clamp", None) or DEFAULT_CLAMP
    for period in sorted({r.task.period for r in rows}):
        period_rows = [r for r in rows if r.task.period == period]
        written.append(
            write_png(
                paths["maps"] / period / "observations.png",
                tile_map(
                    period_rows, lambda r: tuple(colour_ramp(np.array([r.days]), 0, max_days)[0])
                ),
            )
        )
        written.append(
            write_png(
                paths["maps"] / period / "status.png",
                tile_map(period_rows, lambda r: STATUS_COLOURS[r.status]),
            )
        )
        mosaics = dict(zip(run.mosaic_bands, run.mosaic_paths(period), strict=False))
        for name in quicklook_names(run):
            sources = [mosaics.get(b) for b in rgb] if name == "rgb" else [mosaics.get(name)]
            if run.config["mosaic"]["enabled"] and all(
                p is not None and p.exists() for p in sources
            ):
                if name == "rgb":
                    image = rgb_quicklook(sources, clamp)
                else:
                    counting = (
                        measurements[name].dtype.startswith("uint")
                        if name in measurements
                        else False
                    )
                    image = ramp_quicklook(sources[0], counts=counting)
            else:
                image = placeholder()
            written.append(write_png(paths["quicklooks"] / period / f"{name}.png", image))
        benchmark = read_benchmark(run.results / "benchmarks" / "mosaic" / f"{period}.tsv")
        written.append(
            write_text_atomic(
                paths["tables"] / period / "tiles.html", tiles_table(period, period_rows, benchmark)
            )
        )
    written.append(
        write_text_atomic(
            paths["failures"] / "failures.html", failures_table(load_failure_records(run))
        )
    )
    return written

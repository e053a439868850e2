"""Task lists in odc-stats' ``save-tasks`` formats, written from a dataset cache.

* :func:`write_task_csv`: one CSV of every task, exactly as odc-stats writes it::

      "T","X","Y","datasets","days"
      "2015--P1Y", +0041, +0013,   12,    9

  rows sorted by (period, x, y); ``X``/``Y`` with sign and zero padding to 5 characters,
  ``datasets`` and ``days`` right-aligned in 4 characters; ``days`` counts distinct **UTC**
  dates.
* :func:`write_period_geojson`: one GeoJSON FeatureCollection per period, one feature per tile,
  geometry = the tile extent in EPSG:4326 (densified every quarter tile, split at the
  antimeridian when the tile's solar offset is 11 h or more either way), properties ``title``
  (``"x,y"``), ``region_code`` (``x{x}y{y}``), ``ix``, ``iy``, ``utc_offset`` (hours, float),
  ``total`` (datasets) and ``days`` (distinct **solar** dates: UTC time plus the offset).
  Indices in ``title`` and ``region_code`` are zero-padded to the number of digits of the
  largest absolute tile index of the whole cache (all periods), as odc-stats pads over all
  cells of a run.

Every file is written atomically (temporary sibling, then rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eostats.cache import DatasetCache, TaskRecord
from eostats.fileio import write_json_atomic, write_text_atomic

__all__ = [
    "CSV_HEADER",
    "index_width",
    "period_feature_collection",
    "periods",
    "task_csv_line",
    "task_csv_text",
    "write_period_geojson",
    "write_task_csv",
]

CSV_HEADER = '"T","X","Y","datasets","days"'


def periods(cache: DatasetCache) -> list[str]:
    """Distinct task periods of the cache, sorted."""
    return cache.periods()


def task_csv_line(record: TaskRecord) -> str:
    """One CSV row (no newline): ``"<period>", <x:+05d>, <y:+05d>, <n:4d>, <days_utc:4d>``."""
    t = record.task_id
    return f'"{t.period}", {t.x:+05d}, {t.y:+05d}, {record.n_datasets:4d}, {record.n_days_utc:4d}'


def task_csv_text(cache: DatasetCache) -> str:
    """The whole CSV as text (header and one line per task, each ending in a newline)."""
    lines = [CSV_HEADER] + [task_csv_line(r) for r in cache.tasks()]
    return "\n".join(lines) + "\n"


def write_task_csv(cache: DatasetCache, path: Path | str) -> Path:
    """Write odc-stats' task CSV of every task in ``cache`` to ``path`` (atomically)."""
    return write_text_atomic(path, task_csv_text(cache))


def index_width(cache: DatasetCache) -> int:
    """Digits of the largest absolute tile index over all tasks (odc-stats' title padding)."""
    return len(str(max((max(abs(x), abs(y)) for x, y in cache.tiles()), default=0)))


def period_feature_collection(cache: DatasetCache, period: str) -> dict[str, Any]:
    """GeoJSON FeatureCollection (a dict) of the tiles of ``period``, sorted by (x, y).

    Raises ValueError naming the period when the cache has no task for it.
    """
    records = cache.tasks(period)
    if not records:
        known = ", ".join(cache.periods()) or "none"
        raise ValueError(
            f"no task of period {period!r} in the dataset cache {cache.path} (periods: {known})"
        )
    grid = cache.grid
    width = index_width(cache)
    # odc-stats densifies at a quarter of the larger tile side (in grid-CRS units)
    densify = max(grid.tile_size_xy) / 4
    features = []
    for record in records:
        x, y = record.task_id.x, record.task_id.y
        extent = grid.tile_geobox(x, y).extent
        wrap = abs(record.utc_offset) >= 11
        geometry = extent.to_crs("EPSG:4326", resolution=densify, wrapdateline=wrap)
        features.append(
            {
                "type": "Feature",
                "geometry": geometry.json,
                "properties": {
                    "title": f"{x:0{width}d},{y:0{width}d}",
                    "region_code": f"x{x:0{width}d}y{y:0{width}d}",
                    "ix": x,
                    "iy": y,
                    "utc_offset": float(record.utc_offset),
                    "total": record.n_datasets,
                    "days": record.n_days_solar,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_period_geojson(cache: DatasetCache, period: str, path: Path | str) -> Path:
    """Write the GeoJSON of ``period``'s tiles to ``path`` (atomically); see the module docs."""
    return write_json_atomic(path, period_feature_collection(cache, period), indent=None)

"""The dataset cache: one SQLite file holding everything a tile job needs to know about its inputs.

A cache is an immutable snapshot made by :func:`build_cache` from a stream of STAC items:

* how it was made: the source description, the settings, the tile grid (:meth:`TileGrid.to_dict`)
  and the time binning (:meth:`PeriodBinning.to_dict`);
* every dataset that belongs to at least one task, with its full STAC item document, stored once;
* every task ``(period, x, y)``: its datasets, counts of distinct UTC and solar days, the tile's
  solar offset (whole hours) and a fingerprint of its dataset list.

Reading a task (:class:`DatasetCache`) needs nothing but the file, which makes runs reproducible
(odc-stats' LMDB cache plays the same role). The schema is documented in ``docs/cache.md``.

Times: every datetime is UTC. A tile's local solar time is ``t_utc + utc_offset`` hours, with the
offset from the longitude of the tile centre (:func:`eostats.periods.solar_offset_hours`).
Footprints: STAC item geometries are GeoJSON in EPSG:4326 (lon, lat); they are reprojected
vertex by vertex to the grid CRS and assigned to every tile whose interior they intersect, exactly
as :meth:`TileGrid.tiles_for_geometry` does (a vectorised path handles plain polygons in batches).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import os
import queue
import re
import sqlite3
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, compress, islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
import zstandard
from odc.geo.crs import CRS
from odc.geo.geom import Geometry

from eostats.doccodec import DocCodec
from eostats.fileio import atomic_path
from eostats.grids import TileGrid
from eostats.periods import (
    ALL_PLACEHOLDER,
    PeriodBinning,
    finalize_all_label,
    make_binning,
    solar_offset_hours,
)
from eostats.taskids import TaskId

__all__ = [
    "CACHE_FORMAT",
    "SCHEMA_VERSION",
    "CacheSummary",
    "DatasetCache",
    "NdjsonItems",
    "SkippedItem",
    "TaskRecord",
    "UnknownTaskError",
    "build_cache",
    "dataset_list_hash",
    "parse_tile_range",
]

CACHE_FORMAT = "eostats-dataset-cache"
"""Value of the ``format`` key in the ``meta`` table."""
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of caches written and read by this module. Version 2: documents zstd-compressed with a
trained dictionary (:mod:`eostats.doccodec`), each task's dataset ids one compressed list in ``tasks`` (version 1
had zlib documents, about 4x larger, and a ``task_datasets`` row per membership: 9 million rows for a continental
annual cache)."""

_SECONDS_PER_DAY = 86_400
_UNPACK = zstandard.ZstdDecompressor().decompress  # thread-safe for one-shot calls
_EPOCH = datetime(1970, 1, 1)  # item times are naive UTC
_BATCH = 2048  # items per vectorised footprint batch and per executemany
_MAX_CANDIDATE_TILES = 4096  # bigger footprints (bad geometries) take the per-item path

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE datasets (
    id       TEXT NOT NULL,
    product  TEXT,
    datetime TEXT NOT NULL,
    doc      BLOB NOT NULL
);
CREATE TABLE tasks (
    period       TEXT    NOT NULL,
    x            INTEGER NOT NULL,
    y            INTEGER NOT NULL,
    n_datasets   INTEGER NOT NULL,
    n_days_utc   INTEGER NOT NULL,
    n_days_solar INTEGER NOT NULL,
    utc_offset   INTEGER NOT NULL,
    dataset_hash TEXT    NOT NULL,
    dataset_ids  BLOB    NOT NULL,
    PRIMARY KEY (period, x, y)
) WITHOUT ROWID;
"""
# Built after loading: one sort instead of a million random B-tree inserts.
_POST_LOAD_INDEXES = "CREATE UNIQUE INDEX datasets_id ON datasets (id);"


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class TaskRecord:
    """One task of a cache.

    ``n_days_utc`` counts distinct UTC dates (odc-stats' CSV ``days``), ``n_days_solar``
    distinct local solar dates (its GeoJSON ``days``); ``utc_offset`` is in whole hours;
    ``dataset_hash`` is the sha1 hex digest of ``"\\n".join(sorted dataset ids)``.
    """

    task_id: TaskId
    n_datasets: int
    n_days_utc: int
    n_days_solar: int
    utc_offset: int
    dataset_hash: str


@dataclass(frozen=True)
class SkippedItem:
    """An item left out of the cache because it could not be used (``invalid_items: skip``)."""

    id: str | None
    reason: str


@dataclass(frozen=True)
class CacheSummary:
    """What :func:`build_cache` did.

    ``n_items``: items read from the stream. ``n_datasets``: datasets stored (those in at least
    one task). ``n_outside``: usable items in no task (outside the tiles, the time range or the
    season). ``n_duplicates``: repeated item ids (the first one is kept). ``n_excluded``: items
    listed in ``exclude_datasets``. ``seconds``: wall-clock build time.
    """

    path: Path
    n_items: int
    n_datasets: int
    n_tasks: int
    periods: tuple[str, ...]
    n_outside: int = 0
    n_duplicates: int = 0
    n_excluded: int = 0
    skipped: tuple[SkippedItem, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (also stored in the cache's ``meta`` table under ``summary``)."""
        d = asdict(self)
        d["path"] = str(self.path)
        d["periods"] = list(self.periods)
        d["skipped"] = [asdict(s) for s in self.skipped]
        return d

    def __str__(self) -> str:
        return (
            f"{self.n_datasets} datasets in {self.n_tasks} tasks over {len(self.periods)} "
            f"period(s) from {self.n_items} items ({self.n_outside} outside, "
            f"{self.n_duplicates} duplicates, {self.n_excluded} excluded, "
            f"{len(self.skipped)} skipped) in {self.seconds:.1f} s"
        )


class UnknownTaskError(KeyError):
    """A task that is not in the cache (a KeyError with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


# --------------------------------------------------------------------------------------------
# Settings


TileRange = tuple[int | None, int | None, int | None, int | None]


def parse_tile_range(text: str) -> TileRange:
    """Parse odc-stats' ``--tiles`` form ``"x0:x1,y0:y1"``: half-open index ranges.

    A missing bound is open (``":5,3:"``). Returns ``(x0, x1, y0, y1)`` with ``None`` for open
    bounds. Raises ValueError naming the text.
    """
    parts = text.replace(" ", "").split(",") if isinstance(text, str) else []
    bounds: list[int | None] = []
    if len(parts) == 2:
        for part in parts:
            ends = part.split(":")
            if len(ends) != 2:
                break
            try:
                bounds += [int(e) if e else None for e in ends]
            except ValueError:
                break
    if len(bounds) != 4:
        raise ValueError(f"bad tile range {text!r}: expected 'x0:x1,y0:y1', e.g. '40:45,10:13'")
    return (bounds[0], bounds[1], bounds[2], bounds[3])


def _in_tile_range(tiles: TileRange, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Whether each tile (xs[i], ys[i]) is inside the half-open ranges (None: open)."""
    x0, x1, y0, y1 = tiles
    keep = np.ones(xs.shape, dtype=bool)
    if x0 is not None:
        keep &= xs >= x0
    if x1 is not None:
        keep &= xs < x1
    if y0 is not None:
        keep &= ys >= y0
    if y1 is not None:
        keep &= ys < y1
    return keep


@dataclass(frozen=True)
class _Options:
    solar_offset_rule: str = "round"
    tiles: TileRange | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    skip_invalid: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> _Options:
        rule = settings.get("solar_offset_rule") or "round"
        solar_offset_hours(0.0, rule)  # validates the rule name
        tiles = settings.get("tiles")
        invalid = settings.get("invalid_items") or "error"
        if invalid not in ("error", "skip"):
            raise ValueError(f"settings: invalid_items must be 'error' or 'skip', got {invalid!r}")
        return cls(
            solar_offset_rule=rule,
            tiles=parse_tile_range(tiles) if tiles else None,
            exclude=frozenset(str(i) for i in settings.get("exclude_datasets") or ()),
            skip_invalid=invalid == "skip",
        )


# --------------------------------------------------------------------------------------------
# Item parsing


class _InvalidItem(ValueError):
    pass


class _SourceLineError(Exception):
    """A worker's source error at a line of its chunk (the building process knows the chunk's first line)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _item_time_utc(item: Mapping[str, Any]) -> datetime:
    """The item's time as a naive UTC datetime.

    ``properties.datetime``; when it is null (a STAC time range), the midpoint of
    ``start_datetime`` and ``end_datetime``, which is what datacube calls ``center_time``.
    """
    props = item.get("properties") or {}
    text = props.get("datetime")
    try:
        if text:
            return _naive_utc(datetime.fromisoformat(text))
        start, end = props.get("start_datetime"), props.get("end_datetime")
        if start and end:
            t0 = _naive_utc(datetime.fromisoformat(start))
            t1 = _naive_utc(datetime.fromisoformat(end))
            return t0 + (t1 - t0) / 2
    except (TypeError, ValueError) as err:
        raise _InvalidItem(f"unreadable datetime: {err}") from None
    raise _InvalidItem("no properties.datetime (nor start_datetime and end_datetime)")


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


# --------------------------------------------------------------------------------------------
# Footprints → tiles


class _FootprintTiler:
    """Tiles of many footprints at once, with the result of :meth:`TileGrid.tiles_for_geometry`.

    Single-ring polygons are reprojected in one pyproj call per batch and tested against candidate
    tile boxes with vectorised shapely predicates, using the same transformer, the same box
    arithmetic and the same predicate (intersects and not only touches) as the grid, so the tiles
    are identical. Everything unusual (multi-polygons, holes, invalid or degenerate rings,
    unprojectable vertices, no tile hit) goes through the grid's own per-geometry method.
    """

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid
        self.crs4326 = CRS("EPSG:4326")
        self.transform = (
            None if grid.crs == self.crs4326 else self.crs4326.transformer_to_crs(grid.crs)
        )
        self.origin = grid.origin_xy
        self.size = grid.tile_size_xy

    def slow(self, geometry: Mapping[str, Any]) -> list[tuple[int, int]]:
        """The grid's own per-geometry method; _InvalidItem when the geometry is unusable."""
        try:
            geom = Geometry(dict(geometry), self.crs4326)
        except Exception as err:  # shapely raises several types for malformed GeoJSON
            raise _InvalidItem(f"unreadable geometry: {err}") from None
        try:
            return self.grid.tiles_for_geometry(geom)
        except ValueError as err:
            raise _InvalidItem(f"unusable geometry: {err}") from None

    def tile_arrays(
        self, geometries: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """Tiles of GeoJSON geometries (EPSG:4326) as parallel arrays.

        Returns ``(owner, x, y, errors)``: geometry number and tile index of every
        (geometry, tile) pair, sorted by owner then (x, y); ``errors`` maps the number of each
        unusable geometry to the reason.
        """
        fast: list[int] = []
        rings: list[Any] = []
        slow: list[int] = []
        for i, g in enumerate(geometries):
            coords = g.get("coordinates") if g.get("type") == "Polygon" else None
            if coords and len(coords) == 1 and len(coords[0]) >= 4:
                fast.append(i)
                rings.append(coords[0])
            else:
                slow.append(i)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if fast:
            fast_index = np.asarray(fast, dtype=np.int64)
            owner, xs, ys, fallback = self._fast(rings)
            parts.append((fast_index[owner], xs, ys))
            slow += fast_index[fallback].tolist()
        errors: dict[int, str] = {}
        for i in slow:
            try:
                tiles = self.slow(geometries[i])
            except _InvalidItem as err:
                errors[i] = str(err)
                continue
            tx = np.fromiter((t[0] for t in tiles), dtype=np.int64, count=len(tiles))
            ty = np.fromiter((t[1] for t in tiles), dtype=np.int64, count=len(tiles))
            parts.append((np.full(len(tiles), i, dtype=np.int64), tx, ty))
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty, errors
        owner, xs, ys = (np.concatenate(c) for c in zip(*parts, strict=True))
        # each part lists a geometry's tiles in (x, y) order, and a geometry is in one part only
        order = np.argsort(owner, kind="stable")
        return owner[order], xs[order], ys[order], errors

    def tiles(self, geometries: Sequence[Mapping[str, Any]]) -> list[list[tuple[int, int]]]:
        """Tiles of each geometry, sorted by (x, y); raises _InvalidItem for an unusable one."""
        owner, xs, ys, errors = self.tile_arrays(geometries)
        if errors:
            raise _InvalidItem(next(iter(errors.values())))
        out: list[list[tuple[int, int]]] = [[] for _ in geometries]
        for i, x, y in zip(owner.tolist(), xs.tolist(), ys.tolist(), strict=True):
            out[i].append((x, y))
        return out

    def _fast(self, rings: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(owner, x, y) of tiles hit by plain rings, and the rings the grid must handle."""
        n = len(rings)
        none = np.empty(0, dtype=np.int64)
        everything = (none, none, none, np.arange(n))
        lengths = np.fromiter(map(len, rings), dtype=np.int64, count=n)
        positions = list(chain.from_iterable(rings))
        try:
            if set(map(len, positions)) != {2}:
                raise ValueError("not (x, y) pairs")
            flat = np.fromiter(chain.from_iterable(positions), np.float64, 2 * len(positions))
            xy = flat.reshape(-1, 2)
        except (ValueError, TypeError):  # ragged (some positions carry a height) or not numbers
            xy = None
        if xy is None:
            try:
                xy = np.array(positions, dtype=np.float64)
            except ValueError:
                try:
                    xy = np.array([p[:2] for p in positions], dtype=np.float64)
                except (ValueError, TypeError):
                    return everything
        if xy.ndim != 2 or xy.shape[1] < 2:
            return everything
        x, y = xy[:, 0], xy[:, 1]
        if self.transform is not None:
            x, y = self.transform(x, y)
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        finite = np.logical_and.reduceat(np.isfinite(x) & np.isfinite(y), starts)

        (ox, oy), (tx, ty) = self.origin, self.size
        with np.errstate(invalid="ignore"):
            # the polygon's bounds (what shapely.bounds gives for a ring's polygon)
            ix0 = np.floor((np.minimum.reduceat(x, starts) - ox) / tx)
            iy0 = np.floor((np.minimum.reduceat(y, starts) - oy) / ty)
            ix1 = np.floor((np.maximum.reduceat(x, starts) - ox) / tx)
            iy1 = np.floor((np.maximum.reduceat(y, starts) - oy) / ty)
            nx, ny = ix1 - ix0 + 1, iy1 - iy0 + 1
            fits = finite & np.isfinite(nx * ny) & (nx * ny <= _MAX_CANDIDATE_TILES)
        convex = _ConvexRings(x, y, starts, lengths)
        usable = fits & convex.convex

        # the other rings: shapely polygons, checked for validity as the grid checks them
        other = np.flatnonzero(~convex.convex)
        polys = np.empty(0, dtype=object)
        if other.size:
            vertices = np.repeat(~convex.convex, lengths)
            index = np.repeat(np.arange(other.size), lengths[other])
            polys = shapely.polygons(
                shapely.linearrings(np.column_stack([x[vertices], y[vertices]]), indices=index)
            )
            usable[other] = fits[other] & shapely.is_valid(polys) & (shapely.area(polys) > 0)

        # one tile: a bounding box inside a half-open tile, as the grid's shortcut
        one = (nx == 1) & (ny == 1)
        single = np.flatnonzero(usable & one)
        multi = usable & ~one
        ix0[~usable], iy0[~usable], nx[~usable], ny[~usable] = 0, 0, 1, 1
        ix0, iy0, nx, ny = (
            ix0.astype(np.int64),
            iy0.astype(np.int64),
            nx.astype(np.int64),
            ny.astype(np.int64),
        )
        hits = [(single, ix0[single], iy0[single])]
        multi_convex = np.flatnonzero(multi & convex.convex)
        if multi_convex.size:
            hits.append(convex.hits(multi_convex, ix0, iy0, nx, ny, self.origin, self.size))
        multi_other = np.flatnonzero(multi[other])  # positions in polys
        if multi_other.size:
            rings_other = other[multi_other]
            owner, xs, ys = self._interior_hits(
                polys[multi_other],
                ix0[rings_other],
                iy0[rings_other],
                nx[rings_other],
                ny[rings_other],
            )
            hits.append((rings_other[owner], xs, ys))
        owner, xs, ys = (np.concatenate(c) for c in zip(*hits, strict=True))
        # a polygon whose interior meets no tile gets the grid's representative-point rule
        no_hit = np.setdiff1d(np.flatnonzero(multi), owner)
        fallback = np.concatenate([np.flatnonzero(~usable), no_hit])
        return owner, xs, ys, fallback

    def _interior_hits(
        self, polys: np.ndarray, ix0: np.ndarray, iy0: np.ndarray, nx: np.ndarray, ny: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(polygon number, tile x, tile y) of every tile whose interior meets a polygon's.

        Candidates are the tiles of each polygon's bounding box, in (x, y) order. The exact test
        (intersects and not only touches) is costly, so two sufficient tests settle most
        candidates first: a tile corner strictly inside the polygon, or a polygon vertex
        strictly inside the tile (either way the interiors overlap near that point).
        """
        (ox, oy), (tx, ty) = self.origin, self.size
        if polys.size == 0:
            none = np.empty(0, dtype=np.int64)
            return none, none, none
        shapely.prepare(polys)
        ix0, iy0 = ix0.astype(np.int64), iy0.astype(np.int64)
        nx, ny = nx.astype(np.int64), ny.astype(np.int64)
        first = np.arange(polys.size)

        # every candidate tile, x-major inside each polygon's block
        counts = nx * ny
        cand_start = np.cumsum(counts) - counts
        owner = np.repeat(first, counts)
        local = np.arange(counts.sum()) - cand_start[owner]
        a, b = local // ny[owner], local % ny[owner]
        ixs, iys = ix0[owner] + a, iy0[owner] + b

        # the (nx + 1) x (ny + 1) tile corners of each polygon, with the tile boxes' arithmetic
        ccounts = (nx + 1) * (ny + 1)
        corner_start = np.cumsum(ccounts) - ccounts
        cowner = np.repeat(first, ccounts)
        clocal = np.arange(ccounts.sum()) - corner_start[cowner]
        cx = ox + (ix0[cowner] + clocal // (ny[cowner] + 1)) * tx
        cy = oy + (iy0[cowner] + clocal % (ny[cowner] + 1)) * ty
        inside = shapely.contains_xy(polys[cowner], cx, cy)
        c = corner_start[owner] + a * (ny[owner] + 1) + b
        step = ny[owner] + 1
        sure = inside[c] | inside[c + 1] | inside[c + step] | inside[c + step + 1]

        # polygon vertices strictly inside a candidate tile
        coords, vowner = shapely.get_coordinates(polys, return_index=True)
        vx, vy = coords[:, 0], coords[:, 1]
        vix = np.floor((vx - ox) / tx).astype(np.int64)
        viy = np.floor((vy - oy) / ty).astype(np.int64)
        da, db = vix - ix0[vowner], viy - iy0[vowner]
        strict = (
            (ox + vix * tx < vx)
            & (vx < ox + (vix + 1) * tx)
            & (oy + viy * ty < vy)
            & (vy < oy + (viy + 1) * ty)
            & (da >= 0)
            & (da < nx[vowner])
            & (db >= 0)
            & (db < ny[vowner])
        )
        sure[(cand_start[vowner] + da * ny[vowner] + db)[strict]] = True

        # the rest: the exact test, as TileGrid.tiles_for_geometry does it
        rest = np.flatnonzero(~sure)
        if rest.size:
            rx, ry = ixs[rest], iys[rest]
            boxes = shapely.box(ox + rx * tx, oy + ry * ty, ox + (rx + 1) * tx, oy + (ry + 1) * ty)
            shapes = polys[owner[rest]]
            hit = shapely.intersects(shapes, boxes)
            hit[hit] = ~shapely.touches(shapes[hit], boxes[hit])
            sure[rest[hit]] = True
        return owner[sure], ixs[sure], iys[sure]


_TURN = 1e-9  # sine of the smallest turn of a convex ring's vertex (flatter ones: the shapely path)
_ROUNDING = 1e-10  # relative margin of the separating-axis tests (double rounding is ~1e-16)


class _ConvexRings:
    """Which closed rings are strictly convex, and their tiles by separating-axis tests.

    A ring is convex here when it is closed (last point == first), every vertex turns the same way by more than
    ``_TURN`` (so no repeated or collinear points) and the turns add up to one full turn: such a ring is a valid
    polygon with an area, so it needs no shapely validity check. A convex polygon and a tile box have
    intersecting interiors exactly when no axis among x, y and the polygon's edge normals separates their
    projections (touching counts as separated). Tests on x and y are exact comparisons; those on an edge normal
    decide only outside a margin of ``_ROUNDING`` times the coordinates' magnitude, and the few candidates
    inside it take shapely's exact predicates, as every candidate of a non-convex ring does.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, starts: np.ndarray, lengths: np.ndarray
    ) -> None:
        n = starts.size
        ends = starts + lengths - 1
        self.x, self.y = x, y
        # distinct vertices (each ring without its closing point), and edge j from vertex j to the next point
        keep = np.ones(x.size, dtype=bool)
        keep[ends] = False
        self.pos = np.flatnonzero(keep)
        self.m = lengths - 1
        self.first = starts - np.arange(n)  # ring's first edge
        ex, ey = x[self.pos + 1] - x[self.pos], y[self.pos + 1] - y[self.pos]
        following = np.arange(self.pos.size) + 1
        following[self.first + self.m - 1] = self.first
        fx, fy = ex[following], ey[following]
        with np.errstate(invalid="ignore"):
            cross = ex * fy - ey * fx
            margin = _TURN * np.hypot(ex, ey) * np.hypot(fx, fy)
            left = np.logical_and.reduceat(cross > margin, self.first)
            right = np.logical_and.reduceat(cross < -margin, self.first)
            turns = np.add.reduceat(np.arctan2(cross, ex * fx + ey * fy), self.first)
            closed = (x[starts] == x[ends]) & (y[starts] == y[ends])
            self.convex = closed & (left | right) & (np.abs(np.abs(turns) - 2 * np.pi) < 1e-6)
        # outward edge normals (left-turning rings run anticlockwise) and the polygon's extent along them
        side = np.where(np.repeat(left, self.m), 1.0, -1.0)
        self.normal_x, self.normal_y = side * ey, -side * ex
        self.extent = np.maximum(
            self.normal_x * x[self.pos] + self.normal_y * y[self.pos],
            self.normal_x * x[self.pos + 1] + self.normal_y * y[self.pos + 1],
        )
        with np.errstate(invalid="ignore"):
            self.low_x, self.high_x = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
            self.low_y, self.high_y = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)

    def hits(
        self,
        rings: np.ndarray,
        ix0: np.ndarray,
        iy0: np.ndarray,
        nx: np.ndarray,
        ny: np.ndarray,
        origin: tuple[float, float],
        size: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ring, tile x, tile y) of the tiles whose interior meets convex ``rings``', in (ring, x, y) order."""
        (ox, oy), (tx, ty) = origin, size
        # every candidate tile, x-major inside each ring's bounding box
        counts = nx[rings] * ny[rings]
        owner = np.repeat(rings, counts)
        local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ixs = ix0[owner] + local // ny[owner]
        iys = iy0[owner] + local % ny[owner]
        x0, x1 = ox + ixs * tx, ox + (ixs + 1) * tx  # the tile boxes' arithmetic of the exact test
        y0, y1 = oy + iys * ty, oy + (iys + 1) * ty
        apart = (np.minimum(self.high_x[owner], x1) <= np.maximum(self.low_x[owner], x0)) | (
            np.minimum(self.high_y[owner], y1) <= np.maximum(self.low_y[owner], y0)
        )
        # every (candidate, edge of its ring) pair: the box's lowest projection against the polygon's highest
        m = self.m[owner]
        pair = np.repeat(np.arange(owner.size), m)
        pair_start = np.cumsum(m) - m
        edge = np.repeat(self.first[owner], m) + (np.arange(pair.size) - np.repeat(pair_start, m))
        ux, uy = self.normal_x[edge], self.normal_y[edge]
        low = np.where(ux >= 0, ux * x0[pair], ux * x1[pair]) + np.where(
            uy >= 0, uy * y0[pair], uy * y1[pair]
        )
        gap = low - self.extent[edge]
        scale = 1.0 + max(  # of every coordinate involved (all finite: the rings are usable)
            float(np.abs(np.concatenate([self.low_x[rings], self.high_x[rings], x0, x1])).max()),
            float(np.abs(np.concatenate([self.low_y[rings], self.high_y[rings], y0, y1])).max()),
        )
        margin = _ROUNDING * scale * (np.abs(ux) + np.abs(uy))
        separated = apart | np.logical_or.reduceat(gap > margin, pair_start)
        overlapping = ~apart & np.logical_and.reduceat(gap < -margin, pair_start)
        unsure = np.flatnonzero(~separated & ~overlapping)
        if unsure.size:
            shapes = _ring_polygons(self.x, self.y, self.pos, self.first, self.m, owner[unsure])
            boxes = shapely.box(x0[unsure], y0[unsure], x1[unsure], y1[unsure])
            hit = shapely.intersects(shapes, boxes)
            hit[hit] = ~shapely.touches(shapes[hit], boxes[hit])
            overlapping[unsure[hit]] = True
        return owner[overlapping], ixs[overlapping], iys[overlapping]


def _ring_polygons(
    x: np.ndarray,
    y: np.ndarray,
    pos: np.ndarray,
    first: np.ndarray,
    m: np.ndarray,
    rings: np.ndarray,
) -> np.ndarray:
    """Shapely polygons of ``rings`` (may repeat) from their distinct vertices (closed by shapely)."""
    counts = m[rings]
    vertex = pos[
        np.repeat(first[rings], counts)
        + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    ]
    index = np.repeat(np.arange(rings.size), counts)
    return shapely.polygons(
        shapely.linearrings(np.column_stack([x[vertex], y[vertex]]), indices=index)
    )


# --------------------------------------------------------------------------------------------
# Building


class _TaskBinner:
    """Accumulates (task, dataset) memberships while batches of items stream past.

    Memory: per stored dataset its UTF-8 id and UTC day; per membership three 32-bit integers (task number,
    dataset number, local solar day). Every period boundary is a local midnight, so a dataset's periods depend
    only on its local date: ``binning.labels`` runs once per distinct local date of the whole build (about 14 000
    for 38 years), a tile's solar offset once per tile, and everything else is vectorised (look-up tables by day
    and by tile). Tasks are numbered as they first appear; they are sorted, counted and hashed once in
    :meth:`task_rows`.
    """

    def __init__(self, grid: TileGrid, binning: PeriodBinning, options: _Options) -> None:
        self.grid = grid
        self.binning = binning
        self.options = options
        self.offsets: dict[tuple[int, int], int] = {}
        self.to_lonlat = grid.crs.transformer_to_crs(CRS("EPSG:4326"))
        self.ids: list[
            bytes
        ] = []  # UTF-8 (byte order is code-point order, i.e. Python's str order)
        self.utc_days: list[np.ndarray] = []  # per dataset
        self.labels: dict[str, int] = {}  # period label -> code
        self.day_codes: dict[int, tuple[int, ...]] = {}  # local day number -> period codes
        # tasks: sorted keys (_task_key of period code, x, y) and the task number of each, numbered as they appear
        self.task_keys = np.empty(0, dtype=np.int64)
        self.task_numbers = np.empty(0, dtype=np.int64)
        self.member_task: list[np.ndarray] = []
        self.member_dataset: list[np.ndarray] = []
        self.member_day: list[np.ndarray] = []  # local solar day
        self.local_years: set[int] = set()
        # look-up tables of what the dicts above hold: sorted tile keys and their offsets; per day since
        # day0 the start and count of its codes in day_flat (count -1: not computed yet)
        self.tile_keys = np.empty(0, dtype=np.int64)
        self.tile_offsets = np.empty(0, dtype=np.int64)
        self.day0 = 0
        self.day_start = np.empty(0, dtype=np.int64)
        self.day_count = np.empty(0, dtype=np.int64)
        self.day_flat = np.empty(0, dtype=np.int64)

    def tile_offset(self, tile: tuple[int, int]) -> int:
        """Solar offset (whole hours) of the tile: from the longitude of its centre."""
        offset = self.offsets.get(tile)
        if offset is None:
            # odc-geo's mid_longitude, without its deprecated shapely.ops path
            centre = self.grid.tile_geobox(*tile).extent.centroid.points[0]
            lon, _ = self.to_lonlat(*centre)
            offset = solar_offset_hours(float(lon), self.options.solar_offset_rule)
            self.offsets[tile] = offset
        return offset

    def codes_of_day(self, day: int) -> tuple[int, ...]:
        """Period codes of a dataset observed on local day ``day`` (days since 1970-01-01)."""
        codes = self.day_codes.get(day)
        if codes is None:
            noon = _EPOCH + timedelta(days=day, hours=12)
            labels = list(dict.fromkeys(self.binning.labels(noon, 0)))
            if ALL_PLACEHOLDER in labels:
                self.local_years.add(noon.year)
            codes = tuple(self.labels.setdefault(label, len(self.labels)) for label in labels)
            self.day_codes[day] = codes
        return codes

    def offsets_of(self, tile_x: np.ndarray, tile_y: np.ndarray) -> np.ndarray:
        """Solar offset (whole hours) of each tile ``(tile_x[i], tile_y[i])``."""
        key = _tile_key(tile_x, tile_y)
        pos, known = _find_sorted(self.tile_keys, key)
        if not known.all():
            for k in np.unique(key[~known]).tolist():
                self.tile_offset((k >> 32, (k & 0xFFFFFFFF) - 2**31))
            tiles = list(self.offsets)
            keys = _tile_key(
                np.array([t[0] for t in tiles], dtype=np.int64),
                np.array([t[1] for t in tiles], dtype=np.int64),
            )
            order = np.argsort(keys)
            self.tile_keys = keys[order]
            self.tile_offsets = np.array(list(self.offsets.values()), dtype=np.int64)[order]
            pos = np.searchsorted(self.tile_keys, key)
        return self.tile_offsets[pos]

    def codes_of_days(self, local_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) in ``day_flat`` of the period codes of each local day."""
        index = local_day - self.day0
        size = self.day_count.size
        known = (index >= 0) & (index < size)
        known[known] = self.day_count[index[known]] >= 0
        if not known.all():
            for day in np.unique(local_day[~known]).tolist():
                self.codes_of_day(day)
            days = sorted(self.day_codes)
            self.day0 = days[0]
            self.day_count = np.full(days[-1] - days[0] + 1, -1, dtype=np.int64)
            self.day_start = np.zeros(self.day_count.size, dtype=np.int64)
            at = np.asarray(days, dtype=np.int64) - self.day0
            lengths = np.fromiter((len(self.day_codes[d]) for d in days), np.int64, len(days))
            self.day_count[at] = lengths
            self.day_start[at] = np.cumsum(lengths) - lengths
            self.day_flat = np.fromiter(
                chain.from_iterable(self.day_codes[d] for d in days), np.int64, int(lengths.sum())
            )
            index = local_day - self.day0
        return self.day_start[index], self.day_count[index]

    def task_numbers_of(self, key: np.ndarray) -> np.ndarray:
        """Task number of each task key, numbering new tasks."""
        pos, known = _find_sorted(self.task_keys, key)
        if not known.all():
            new = np.unique(key[~known])
            numbers = np.arange(self.task_keys.size, self.task_keys.size + new.size)
            at = np.searchsorted(self.task_keys, new)
            self.task_keys = np.insert(self.task_keys, at, new)
            self.task_numbers = np.insert(self.task_numbers, at, numbers)
            pos = np.searchsorted(self.task_keys, key)
        return self.task_numbers[pos]

    def add_batch(
        self,
        ids: list[str],
        epochs: np.ndarray,
        owner: np.ndarray,
        tile_x: np.ndarray,
        tile_y: np.ndarray,
    ) -> np.ndarray:
        """Bin a batch of datasets (ids, UTC times in seconds since 1970) and their (dataset number, tile) pairs.

        Returns a boolean per dataset: True when it landed in at least one task (store it).
        """
        stored = np.zeros(len(ids), dtype=bool)
        if owner.size == 0:
            return stored
        offset_s = self.offsets_of(tile_x, tile_y) * 3600
        local_day = np.floor((epochs[owner] + offset_s) / _SECONDS_PER_DAY).astype(np.int64)
        start, repeat = self.codes_of_days(local_day)
        total = int(repeat.sum())
        if total == 0:
            return stored
        within = np.arange(total) - np.repeat(np.cumsum(repeat) - repeat, repeat)
        m_owner = np.repeat(owner, repeat)

        stored[m_owner] = True
        dataset_number = np.cumsum(stored) - 1 + len(self.ids)
        key = _task_key(
            self.day_flat[np.repeat(start, repeat) + within],
            np.repeat(tile_x, repeat),
            np.repeat(tile_y, repeat),
        )
        self.member_task.append(self.task_numbers_of(key).astype(np.int32))
        self.member_dataset.append(dataset_number[m_owner].astype(np.int32))
        self.member_day.append(np.repeat(local_day, repeat).astype(np.int32))
        kept = np.flatnonzero(stored)
        self.ids += [ids[i].encode("utf-8") for i in kept.tolist()]
        self.utc_days.append(np.floor(epochs[kept] / _SECONDS_PER_DAY).astype(np.int32))
        return stored

    def task_rows(self, threads: int = 2) -> list[tuple]:
        """Every task's ``tasks`` row, in (period, x, y) order: the dataset ids sorted, hashed and compressed.

        The ids are joined by slices of tasks; ``threads`` threads hash and compress them (both release the GIL).
        """
        if not self.member_task:
            return []
        label_of = list(self.labels)
        if ALL_PLACEHOLDER in self.labels:
            final = finalize_all_label(self.local_years)
            label_of = [final if label == ALL_PLACEHOLDER else label for label in label_of]
        by_number = self.task_keys[np.argsort(self.task_numbers)]
        codes = (by_number >> _TASK_X_BITS + _TASK_Y_BITS).tolist()
        xs = ((by_number >> _TASK_Y_BITS) % 2**_TASK_X_BITS - 2 ** (_TASK_X_BITS - 1)).tolist()
        ys = (by_number % 2**_TASK_Y_BITS - 2 ** (_TASK_Y_BITS - 1)).tolist()
        keys = [(label_of[c], x, y) for c, x, y in zip(codes, xs, ys, strict=True)]
        n_tasks, n_ids = len(keys), len(self.ids)
        # rank of each task in (period, x, y) order and of each dataset in id order
        order = sorted(range(n_tasks), key=keys.__getitem__)
        task_rank = np.empty(n_tasks, dtype=np.int64)
        task_rank[order] = np.arange(n_tasks)
        id_order = np.array(sorted(range(n_ids), key=self.ids.__getitem__), dtype=np.int64)
        id_rank = np.empty(n_ids, dtype=np.int64)
        id_rank[id_order] = np.arange(n_ids)

        # memberships sorted by (task rank, id rank) in one int64 sort, carrying their solar day in the low digits
        # (a task holds a dataset once, so the day never decides the order)
        m_data = np.concatenate(self.member_dataset)
        m_day = np.concatenate(self.member_day).astype(np.int64)
        day0 = int(m_day.min())
        day_span = int(m_day.max()) - day0 + 1
        if n_tasks * n_ids * day_span < 2**62:
            packed = task_rank[np.concatenate(self.member_task)] * n_ids + id_rank[m_data]
            packed = packed * day_span + (m_day - day0)
            del m_data, m_day
            packed.sort()
            packed, m_day = np.divmod(packed, day_span)
            m_task, m_rank = np.divmod(packed, n_ids)
            del packed
        else:  # too many digits for one int64: an index sort
            m_task = task_rank[np.concatenate(self.member_task)]
            sort = np.lexsort((id_rank[m_data], m_task))
            m_task, m_rank, m_day = m_task[sort], id_rank[m_data][sort], m_day[sort] - day0
            del sort
        m_data = id_order[m_rank]
        del m_rank

        offsets = np.array([self.offsets[(x, y)] for _, x, y in keys], dtype=np.int64)[order]
        bounds = np.searchsorted(m_task, np.arange(n_tasks + 1))
        days_utc = _distinct_per_task(m_task, np.concatenate(self.utc_days)[m_data], bounds)
        days_solar = _distinct_per_task(m_task, m_day, bounds)
        del m_task, m_day
        id_bytes = self.ids
        lengths = np.fromiter(map(len, id_bytes), np.int64, n_ids)
        digests, blobs = _hash_and_pack(id_bytes, lengths, m_data, bounds, threads)
        return [
            (keys[number][0], keys[number][1], keys[number][2], n, utc, sol, offset, digest, blob)
            for number, n, utc, sol, offset, digest, blob in zip(
                order,
                np.diff(bounds).tolist(),
                days_utc.tolist(),
                days_solar.tolist(),
                offsets.tolist(),
                digests,
                blobs,
                strict=True,
            )
        ]


_TASK_X_BITS = _TASK_Y_BITS = 22  # tile indices from -2**21 to 2**21 - 1; period codes below 2**19


def _task_key(code: np.ndarray, tile_x: np.ndarray, tile_y: np.ndarray) -> np.ndarray:
    """One int64 per (period code, tile x, tile y); ValueError for a tile index or period count beyond it."""
    half_x, half_y = 2 ** (_TASK_X_BITS - 1), 2 ** (_TASK_Y_BITS - 1)
    if code.size and (
        int(code.max()) >= 2 ** (63 - _TASK_X_BITS - _TASK_Y_BITS)
        or not -half_x <= int(tile_x.min()) <= int(tile_x.max()) < half_x
        or not -half_y <= int(tile_y.min()) <= int(tile_y.max()) < half_y
    ):
        raise ValueError(
            f"tile indices must be between {-half_x} and {half_x - 1} (got x {int(tile_x.min())}..{int(tile_x.max())}, "
            f"y {int(tile_y.min())}..{int(tile_y.max())}), with fewer than {2 ** (63 - _TASK_X_BITS - _TASK_Y_BITS)} "
            "periods: is the grid's tile size in the units of its CRS?"
        )
    return (
        (code.astype(np.int64) << _TASK_X_BITS + _TASK_Y_BITS)
        + ((tile_x.astype(np.int64) + half_x) << _TASK_Y_BITS)
        + (tile_y.astype(np.int64) + half_y)
    )


def _find_sorted(sorted_keys: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insertion positions of ``key`` in ``sorted_keys`` and whether each key is there."""
    pos = np.searchsorted(sorted_keys, key)
    if not sorted_keys.size:
        return pos, np.zeros(key.shape, dtype=bool)
    return pos, sorted_keys[np.minimum(pos, sorted_keys.size - 1)] == key


def _tile_key(tile_x: np.ndarray, tile_y: np.ndarray) -> np.ndarray:
    """One int64 per tile index (32 bits each); Python's ``(x << 32) + y + 2**31`` gives the same number."""
    return (tile_x.astype(np.int64) << 32) + (tile_y.astype(np.int64) + 2**31)


_TASKS_PER_SLICE = 1024
# zstd's fast strategy (that of level 1) sized for id lists of a few KB: a 16 KiB window, small tables and
# 7-byte matches (ids share long prefixes); a third less CPU than level 1, and as small
_ID_LIST_PARAMETERS = zstandard.ZstdCompressionParameters(
    write_content_size=True,
    window_log=14,
    hash_log=12,
    chain_log=12,
    search_log=1,
    min_match=7,
    target_length=0,
    strategy=zstandard.STRATEGY_FAST,
)


def _hash_and_pack(
    id_bytes: list[bytes], lengths: np.ndarray, m_data: np.ndarray, bounds: np.ndarray, threads: int
) -> tuple[list[str], list[bytes]]:
    """Each task's sha1 hex digest and zstd blob of its ``\n``-joined ids (``id_bytes[m_data[b0:b1]]``, with
    ``(b0, b1)`` consecutive ``bounds``).

    This thread joins the ids of a slice of tasks into one text; ``threads`` threads hash and compress the tasks'
    parts of it (hashlib and zstd release the GIL), a few slices at a time.
    """

    def work(text: bytes, cuts: list[int]) -> tuple[list[str], list[bytes]]:
        view = memoryview(text)
        pack = zstandard.ZstdCompressor(compression_params=_ID_LIST_PARAMETERS).compress
        digests, blobs = [], []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            part = view[a : b - 1]  # without the newline after the task's last id
            digests.append(hashlib.sha1(part).hexdigest())
            blobs.append(pack(part))
        return digests, blobs

    n_tasks = len(bounds) - 1
    digests: list[str] = []
    blobs: list[bytes] = []
    pending: deque[Future] = deque()

    def collect() -> None:
        d, b = pending.popleft().result()
        digests.extend(d)
        blobs.extend(b)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="eostats-tasks") as pool:
        for lo in range(0, n_tasks, _TASKS_PER_SLICE):
            hi = min(n_tasks, lo + _TASKS_PER_SLICE)
            first = int(bounds[lo])
            members = m_data[first : bounds[hi]]
            text = b"\n".join(map(id_bytes.__getitem__, members.tolist()))
            ends = np.concatenate([[0], np.cumsum(lengths[members] + 1)])
            pending.append(pool.submit(work, text, ends[bounds[lo : hi + 1] - first].tolist()))
            if len(pending) > 2 * threads:
                collect()
        while pending:
            collect()
    return digests, blobs


def _unique_rows(*columns: np.ndarray) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Distinct rows of integer columns (as tuples, sorted) and each row's position among them.

    Rows are packed into one int64 (mixed radix over the column ranges) because ``np.unique``
    with ``axis=0`` sorts a structured view, which is an order of magnitude slower.
    """
    lows = [int(c.min()) for c in columns]
    spans = [int(c.max()) - low + 1 for c, low in zip(columns, lows, strict=True)]
    if math.prod(spans) >= 2**62:
        rows, inverse = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
        return [tuple(r) for r in rows.tolist()], inverse.ravel()
    packed = np.zeros(columns[0].size, dtype=np.int64)
    for column, low, span in zip(columns, lows, spans, strict=True):
        packed = packed * span + (column - low)
    keys, inverse = np.unique(packed, return_inverse=True)
    parts = []
    for low, span in zip(reversed(lows), reversed(spans), strict=True):
        keys, part = np.divmod(keys, span)
        parts.append((part + low).tolist())
    return list(zip(*reversed(parts), strict=True)), inverse.ravel()


_DENSE_CELLS = 2**26


def _distinct_per_task(task: np.ndarray, value: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Number of distinct ``value`` (whole numbers) of each task 0..n-1; ``task`` sorted, every task present,
    task i at ``bounds[i]:bounds[i + 1]``.

    A task's values (days) usually span less than a period, so one flag per task and day since the task's first
    one (a table of tasks x widest span) counts them without sorting.
    """
    n = bounds.size - 1
    if value.size == 0:
        return np.zeros(n, dtype=np.int64)
    value = value.astype(np.int64)
    low = np.minimum.reduceat(value, bounds[:-1])
    width = int((np.maximum.reduceat(value, bounds[:-1]) - low).max()) + 1
    if n * width > _DENSE_CELLS:
        return _distinct_per_group(task, value, n)
    seen = np.zeros(n * width, dtype=bool)
    seen[task * width + (value - low[task])] = True
    return seen.reshape(n, width).sum(axis=1)


def _distinct_per_group(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct ``value`` (whole numbers) in each group 0..n_groups-1."""
    if value.size == 0:
        return np.zeros(n_groups, dtype=np.int64)
    v = value.astype(np.int64)
    span = int(v.max() - v.min()) + 1
    # sort, then keep first occurrences: numpy 2's hash-based np.unique is ~100x slower on 10^6 int64
    packed = np.sort(group * span + (v - v.min()))
    pairs = packed[np.r_[True, packed[1:] != packed[:-1]]]
    return np.bincount(pairs // span, minlength=n_groups)


def _sha1_lines(sorted_ids: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted_ids).encode("utf-8")).hexdigest()


def dataset_list_hash(dataset_ids: Iterable[str]) -> str:
    """sha1 hex digest of ``"\\n".join(sorted(dataset_ids))``: a task's dataset fingerprint."""
    return _sha1_lines(sorted(dataset_ids))


def _batches(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# check_circular=False saves a third of the encoding time; STAC items are trees.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False, allow_nan=False)


def _json_bytes(item: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(item).encode("ascii")


@dataclass(frozen=True)
class NdjsonItems:
    """The STAC items of an NDJSON file (one item per line), for :func:`build_cache` to parse in parallel.

    Iterating yields exactly what ``eostats.sources.read_items({"type": "ndjson", "path": path})`` yields.
    Given to :func:`build_cache`, a plain (not gzipped) file of at least ``parallel_min_bytes`` is split into
    line-aligned byte ranges that ``workers`` processes (default: one per CPU) parse, validate, tile and compress;
    the building process only bins the results and writes them, in file order, so the cache is the one the
    sequential path builds (same tasks, memberships, counts, errors and skipped items). A stored document is the
    item's own line when reading it changed nothing (no relative href to resolve, ASCII, no NaN), else the
    compact ASCII JSON of the item as read; both decode to the same item.
    """

    path: Path | str
    workers: int | None = None
    parallel_min_bytes: int = 32 * 2**20

    def __iter__(self) -> Iterator[dict]:
        from eostats.sources import read_items

        return iter(read_items({"type": "ndjson", "path": str(self.path)}))

    def use_processes(self) -> bool:
        path = Path(self.path)
        if path.suffix == ".gz" or not path.is_file():
            return False
        return path.stat().st_size >= self.parallel_min_bytes and self.worker_count() > 1

    def worker_count(self) -> int:
        return max(1, self.workers if self.workers is not None else (os.cpu_count() or 1))


_CHUNK_BYTES = (
    8 * 2**20
)  # per worker task: ~2 500 items of 3 KB (fewer per-chunk numpy calls in both processes)
_WHERE = "\x00where\x00"  # placeholder for "file:line" in a worker's error message
_worker_tiler: _FootprintTiler | None = None
_worker_codec: DocCodec | None = None


@dataclass
class _ParsedChunk:
    """What a worker made of one byte range of the NDJSON file, in columns (one entry per item, in line order).

    ``ids``: item ids (None for an id that is not a string); ``reasons``: item number -> why the item is rejected;
    ``epochs``: UTC times, seconds since 1970 (NaN for rejected items); ``isos``: the same times as stored
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``); ``products``; ``docs``: compressed documents. ``tiles``: ``(item number,
    tile x, tile y)`` arrays of the items that are not rejected, and item number -> reason for unusable
    footprints. ``error``: a source error ``(message, local line)`` that ended the chunk after these items.
    """

    n_lines: int
    ids: list[str | None]
    reasons: dict[int, str]
    epochs: np.ndarray
    isos: list[str | None]
    products: list[Any]
    docs: list[bytes | None]
    tiles: tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]
    error: tuple[str, int] | None = None


def _line_ranges(path: Path, chunk_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of ``path`` of about ``chunk_bytes``, each starting at a line start and ending after a newline."""
    size = path.stat().st_size
    ranges = []
    with open(path, "rb") as fh:
        start = 0
        while start < size:
            fh.seek(min(start + chunk_bytes, size))
            fh.readline()
            end = min(fh.tell(), size) if start + chunk_bytes < size else size
            ranges.append((start, end))
            start = end
    return ranges


def _worker_pool(source: NdjsonItems, grid: TileGrid, codec: DocCodec) -> ProcessPoolExecutor:
    """Started worker processes for :func:`_parse_chunk`.

    fork, not spawn: spawned workers would re-run the caller's main module (a Snakemake script, say). The pool
    is created (and its processes forked) before the building process starts any thread of its own.
    """
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        source.worker_count(),
        mp_context=context,
        initializer=_init_worker,
        initargs=(grid.to_dict(), codec.encoding, codec.dictionary),
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # "multi-threaded, use of fork()": not ours
        pool.submit(int).result()  # forks every worker now
    return pool


def _init_worker(grid: dict, encoding: str, dictionary: bytes | None) -> None:
    global _worker_tiler, _worker_codec
    # Parsed JSON holds no reference cycles, and the collector's passes over every dict and list of a chunk's
    # items cost more than parsing them (orjson: 40 µs per 3 KB item with it, 14 µs without)
    gc.disable()
    _worker_tiler = _FootprintTiler(TileGrid.from_dict(grid))
    _worker_codec = DocCodec(encoding, dictionary)


def _training_lines(path: Path, n: int = 1000) -> list[bytes]:
    """The first ``n`` non-empty lines of an NDJSON file: the documents the compression dictionary learns from."""
    lines: list[bytes] = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                lines.append(line.strip())
                if len(lines) >= n:
                    break
    return lines


_ABSOLUTE_PREFIXES = ("/", "s3://", "https://", "http://", "gs://", "file://")


def _read_as_is(item: Any) -> bool:
    """Whether ``eostats.sources`` leaves the item's JSON as it is: it has ``links`` and every href is absolute."""
    from eostats.sources import _is_url

    if not isinstance(item, dict) or not isinstance(links := item.get("links"), list):
        return False
    for entries in (links, (item.get("assets") or {}).values()):
        for entry in entries:
            if isinstance(entry, dict) and (href := entry.get("href", _NO_HREF)) is not _NO_HREF:
                if not isinstance(href, str):
                    return False
                # the common schemes by prefix (a tuple startswith is ~10x cheaper than the URL pattern)
                if not (href.startswith(_ABSOLUTE_PREFIXES) or _is_url(href)):
                    return False
    return True


_NO_HREF = object()

# an "href" key whose value is not a string starting like an absolute href: a path from the root or a URL scheme
# (what eostats.sources._is_url matches); the possessive \s*+ keeps the look-ahead from starting inside the spaces
_NOT_ABSOLUTE_HREF_TEXT = re.compile(rb'"href"\s*:\s*+(?!"(?:/|[A-Za-z][A-Za-z0-9+.-]+:))')


def _hrefs_absolute_in_text(line: bytes) -> bool:
    """Whether every ``href`` key in a JSON line has an absolute href, judged on the text.

    A sufficient test for :func:`_read_as_is`'s href check, about 6x cheaper than walking the parsed item. In
    JSON text without backslashes, every ``href`` key is written ``"href"`` followed by ``:``, and a value
    string's first characters are its text; a line with a backslash (an escape could spell a key or a scheme)
    gets False, and the caller walks the item instead.
    """
    return b"\\" not in line and _NOT_ABSOLUTE_HREF_TEXT.search(line) is None


def _read_as_is_line(item: Any, line: bytes) -> bool:
    """:func:`_read_as_is` of ``item``, parsed from ``line``: on the text when it is certain, else on the item."""
    if (
        type(item) is dict
        and type(item.get("links")) is list
        and type(item.get("assets", {})) is dict
        and _hrefs_absolute_in_text(line)
    ):
        return True
    return _read_as_is(item)


_YEAR_ONE = np.datetime64("0001-01-01T00:00:00", "us")


def _fixed_width(text: Any) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` of a time written ``...SS.ffffffZ`` or ``...SSZ``, else None."""
    if type(text) is str and text[-1:] == "Z":
        if len(text) == 27:
            return text[:26]
        if len(text) == 20:
            return text[:19] + ".000000"
    return None


def _vector_times(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, exact) of naive ISO times ``YYYY-MM-DDTHH:MM:SS.ffffff``, parsed by numpy at once.

    ``exact`` is False where numpy's reading is not certainly ``datetime.fromisoformat``'s: unless the time
    prints back to the same text (which rules out any out-of-range field) and its year is at least 1.
    """
    epochs = np.full(len(texts), np.nan)
    exact = np.zeros(len(texts), dtype=bool)
    if not texts:
        return epochs, exact
    try:
        parsed = np.array(texts, dtype="datetime64[us]")
    except ValueError:  # one bad time: every one takes the per-item path
        return epochs, exact
    exact = (np.datetime_as_string(parsed, unit="us") == np.array(texts)) & (parsed >= _YEAR_ONE)
    # microseconds / 1e6: exact int -> float (|value| < 2**53), then one rounding, like timedelta.total_seconds()
    epochs[exact] = parsed[exact].astype(np.int64) / 1e6
    return epochs, exact


def _parse_chunk(path: str, start: int, end: int) -> _ParsedChunk:
    """Worker: parse, check (as ``eostats.sources`` does), time, compress and tile the items of one byte range."""
    from eostats.sources import SourceError, _checked, _loads

    assert _worker_tiler is not None and _worker_codec is not None
    base = str(Path(path).parent)
    with open(path, "rb") as fh:
        fh.seek(start)
        lines = fh.read(end - start).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    compress = _worker_codec.compress
    strict = _loads is orjson.loads
    ids: list[str | None] = []
    reasons: dict[int, str] = {}
    items: list[dict] = []
    products: list[Any] = []
    docs: list[bytes | None] = []
    shared: dict[str, str] = {}  # one object per distinct product name: pickled once per chunk
    error: tuple[str, int] | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            item = _loads(line)
        except ValueError as err:
            error = (f"{_WHERE}: invalid JSON: {err}", number)
            break
        as_is = _read_as_is_line(item, line)
        properties = item.get("properties") if as_is else None
        if not (  # what _checked checks, when it would leave the item as it is
            type(properties) is dict
            and item.get("type") == "Feature"
            and item.get("id")
            and properties.get("datetime")
            and item.get("geometry")
        ):
            try:
                item = _checked(item, where=_WHERE, base=base, hrefs_absolute=as_is)
            except SourceError as err:
                error = (str(err), number)
                break
        k = len(ids)
        item_id = item["id"]
        product = item.get("collection")
        if type(product) is str:
            product = shared.setdefault(product, product)
        items.append(item)
        products.append(product)
        if not isinstance(item_id, str):
            ids.append(None)
            reasons[k] = "no id"
            docs.append(None)
            continue
        ids.append(item_id)
        if type(geometry := item.get("geometry")) is not dict and not isinstance(geometry, Mapping):
            reasons[k] = "no geometry"
            docs.append(None)
            continue
        # orjson refuses NaN and infinities, json.loads reads them (and json.dumps would refuse them)
        unchanged = (
            as_is
            and line.isascii()
            and (strict or (b"NaN" not in line and b"Infinity" not in line))
        )
        try:
            docs.append(compress(bytes(line) if unchanged else _json_bytes(item)))
        except (
            ValueError
        ) as err:  # NaN or infinity: not JSON (a time error, checked first, may replace this)
            reasons[k] = f"not storable as JSON: {err}"
            docs.append(None)

    # times: the usual fixed-width UTC form by numpy for the whole chunk, anything else item by item
    n = len(ids)
    isos: list[str | None] = [None] * n
    timed = [k for k in range(n) if reasons.get(k) not in ("no id", "no geometry")]
    texts = [_fixed_width(items[k]["properties"]["datetime"]) for k in timed]
    quick = [k for k, text in zip(timed, texts, strict=True) if text is not None]
    epochs = np.full(n, np.nan)
    vector_epochs, exact = _vector_times([text for text in texts if text is not None])
    epochs[quick] = vector_epochs
    for k, ok in zip(quick, exact.tolist(), strict=True):
        if ok:
            text = items[k]["properties"]["datetime"]
            isos[k] = text if len(text) == 27 else text[:19] + ".000000Z"
    for k in timed:
        if isos[k] is None:
            try:
                t_utc = _item_time_utc(items[k])
            except _InvalidItem as err:
                reasons[k] = str(err)  # the time is checked before the document
                epochs[k] = np.nan
                continue
            epochs[k] = (t_utc - _EPOCH).total_seconds()
            isos[k] = _iso_utc(t_utc)
    reasons = dict(sorted(reasons.items()))

    tiled = [k for k in range(n) if k not in reasons]
    owner, xs, ys, errors = _worker_tiler.tile_arrays([items[k]["geometry"] for k in tiled])
    number = np.asarray(tiled, dtype=np.int64)
    tiles = (number[owner], xs, ys, {tiled[i]: reason for i, reason in errors.items()})
    return _ParsedChunk(len(lines), ids, reasons, epochs, isos, products, docs, tiles, error)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Cyclic garbage collection off while a build streams millions of acyclic records (dicts, tuples, lists),
    which the collector would otherwise scan over and over; reference counting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_collector_paused()
def build_cache(
    items: Iterable[dict],
    grid: TileGrid,
    binning: PeriodBinning,
    path: Path,
    source: dict,
    settings: dict,
) -> CacheSummary:
    """Build the dataset cache at ``path`` from STAC item dicts; returns a :class:`CacheSummary`.

    Each item needs an ``id``, a GeoJSON ``geometry`` in EPSG:4326 and a UTC time
    (``properties.datetime``, or ``start_datetime``/``end_datetime``). Its footprint goes to every
    tile whose interior it intersects; for each tile, with ``utc_offset`` = the solar offset of
    the tile centre's longitude, ``binning.labels(t_utc, utc_offset)`` gives its periods. Items in
    no task are not stored. The first of several items with the same id wins.

    ``settings`` (other keys are kept in the cache but ignored here):

    * ``solar_offset_rule``: ``"round"`` (default) or ``"odc-stats"``;
    * ``tiles``: ``"x0:x1,y0:y1"``, half-open tile index ranges (odc-stats ``--tiles``);
    * ``exclude_datasets``: item ids to leave out;
    * ``invalid_items``: ``"error"`` (default: ValueError naming the item) or ``"skip"`` (listed
      in :attr:`CacheSummary.skipped`).

    ``items`` may be an :class:`NdjsonItems`: its file is then parsed by worker processes (same result, faster).

    The file is written under a temporary name in the same directory and renamed into place only
    when complete, so a failed or interrupted build never leaves a partial cache at ``path``; an
    existing cache is replaced. ``source`` and ``settings`` are stored as given (JSON-able).
    """
    started = time.perf_counter()
    path = Path(path)
    options = _Options.from_settings(settings)
    # Fail before streaming (perhaps for minutes) if the descriptions cannot be stored.
    described = {
        "grid": grid.to_dict(),
        "binning": binning.to_dict(),
        "source": source,
        "settings": settings,
    }
    json.dumps(described, allow_nan=False)
    with atomic_path(path, fsync=True) as tmp:
        db = sqlite3.connect(tmp, isolation_level=None, check_same_thread=False)
        try:
            _initialise(db)
            db.execute("BEGIN")
            stream = _ItemStream(grid, binning, options)
            # worker processes first: they are forked before this process starts its writer thread
            parallel = isinstance(items, NdjsonItems) and items.use_processes()
            # workers compress with a dictionary trained on the file's first lines; the one-process path trains
            # on its first batch of documents (in the writer)
            codec = DocCodec.trained(_training_lines(Path(items.path))) if parallel else None
            pool = _worker_pool(items, grid, codec) if parallel else None
            writer = _DatasetWriter(db, codec)
            try:
                if pool is not None:
                    with pool:
                        stream.run_parallel(items, pool, writer)
                else:
                    stream.run(items, writer)
            except BaseException:
                writer.close(raise_error=False)
                raise
            writer.close()
            stream.seen.clear()
            # SQLite sorts the ids into their index (releasing the GIL) while the tasks are computed here
            indexing = _in_background(db.execute, _POST_LOAD_INDEXES)
            try:
                rows = stream.binner.task_rows(threads=min(4, os.cpu_count() or 1))
            finally:
                _joined(indexing)
            n_tasks, periods = _write_tasks(db, rows)
            del rows
            summary = CacheSummary(
                path=path,
                n_items=stream.n_items,
                n_datasets=len(stream.binner.ids),
                n_tasks=n_tasks,
                periods=periods,
                n_outside=stream.n_outside,
                n_duplicates=stream.n_duplicates,
                n_excluded=stream.n_excluded,
                skipped=tuple(stream.skipped),
                seconds=round(time.perf_counter() - started, 3),
            )
            meta = {
                "format": CACHE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                **writer.codec.to_meta(),
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                **described,
                "summary": summary.to_dict(),
            }
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [(k, json.dumps(v, sort_keys=True)) for k, v in meta.items()],
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        finally:
            db.close()
    return summary


_Usable = tuple[dict, str, datetime, Mapping[str, Any]]  # item, id, t_utc, geometry


class _ItemStream:
    """Validates items, assigns them to tasks and hands the stored ones to the writer.

    Footprints of batch k+1 are computed on a helper thread (shapely and pyproj release the GIL)
    while batch k is binned and serialised here.
    """

    def __init__(self, grid: TileGrid, binning: PeriodBinning, options: _Options) -> None:
        self.options = options
        self.tiler = _FootprintTiler(grid)
        self.binner = _TaskBinner(grid, binning, options)
        self.seen: set[str] = set()
        self.skipped: list[SkippedItem] = []
        self.n_items = self.n_outside = self.n_duplicates = self.n_excluded = 0

    def run(self, items: Iterable[dict], writer: _DatasetWriter) -> None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eostats-tiles") as pool:
            pending: deque[tuple[list[_Usable], Future]] = deque()
            for batch in _batches(items, _BATCH):
                usable = self.validate(batch)
                pending.append((usable, pool.submit(self.tiles, usable)))
                if len(pending) > 1:
                    usable, future = pending.popleft()
                    writer.put(self.bin(usable, future.result()))
            while pending:
                usable, future = pending.popleft()
                writer.put(self.bin(usable, future.result()))

    def run_parallel(
        self, source: NdjsonItems, pool: ProcessPoolExecutor, writer: _DatasetWriter
    ) -> None:
        """Parse the file in worker processes (:func:`_parse_chunk`), bin and write here, in file order."""
        from eostats.sources import SourceError

        path = Path(source.path).absolute()
        ranges = iter(_line_ranges(path, _CHUNK_BYTES))
        # a few chunks per worker in flight: workers stay busy, memory stays bounded
        pending: deque[Future] = deque(
            pool.submit(_parse_chunk, str(path), a, b)
            for a, b in islice(ranges, 3 * source.worker_count())
        )
        first_line = 0
        while pending:
            chunk = pending.popleft().result()
            following = next(ranges, None)
            if following is not None:
                pending.append(pool.submit(_parse_chunk, str(path), *following))
            try:
                self.consume(chunk, writer)
            except _SourceLineError as err:
                for future in pending:
                    future.cancel()
                where = f"{path}:{first_line + err.line}"
                raise SourceError(err.message.replace(_WHERE, where)) from None
            first_line += chunk.n_lines

    def consume(self, chunk: _ParsedChunk, writer: _DatasetWriter) -> None:
        """One worker chunk, with the bookkeeping of :meth:`validate` and :meth:`bin` in the same order."""
        ids, reasons = chunk.ids, chunk.reasons
        n = len(ids)
        exclude = self.options.exclude
        fresh = set(ids)
        use: list[int] | None = None  # None: every item
        if (
            len(fresh) == n
            and None not in fresh
            and self.seen.isdisjoint(fresh)
            and (not exclude or exclude.isdisjoint(fresh))
        ):
            # the usual case: no id missing, excluded or seen before; only the rejected items are left out
            self.n_items += n
            self.seen |= fresh
            for k, reason in reasons.items():
                self.reject(ids[k], reason)
            if reasons:
                use = [k for k in range(n) if k not in reasons]
        else:
            use = []
            for k, item_id in enumerate(ids):
                self.n_items += 1
                if item_id is None:
                    self.reject(None, "no id")
                    continue
                if item_id in exclude:
                    self.n_excluded += 1
                    continue
                if item_id in self.seen:
                    self.n_duplicates += 1
                    continue
                self.seen.add(item_id)
                reason = reasons.get(k)
                if reason is not None:
                    self.reject(item_id, reason)
                    continue
                use.append(k)
        if chunk.error is not None:
            raise _SourceLineError(*chunk.error)

        owner, xs, ys, tile_errors = chunk.tiles
        epochs, isos, products, docs = chunk.epochs, chunk.isos, chunk.products, chunk.docs
        if use is not None:
            position = np.full(n, -1, dtype=np.int64)
            position[use] = np.arange(len(use))
            if owner.size:
                mine = position[owner]
                keep = mine >= 0
                owner, xs, ys = mine[keep], xs[keep], ys[keep]
            tile_errors = {
                int(position[k]): reason for k, reason in tile_errors.items() if position[k] >= 0
            }
            ids = [ids[k] for k in use]
            epochs = epochs[use]
            isos = [isos[k] for k in use]
            products = [products[k] for k in use]
            docs = [docs[k] for k in use]
        if self.options.tiles is not None:
            keep = _in_tile_range(self.options.tiles, xs, ys)
            owner, xs, ys = owner[keep], xs[keep], ys[keep]
        for i, reason in sorted(tile_errors.items()):
            self.reject(ids[i], reason)
        stored = self.binner.add_batch(ids, epochs, owner, xs, ys)
        n_stored = int(stored.sum())
        self.n_outside += len(ids) - len(tile_errors) - n_stored
        rows = zip(ids, products, isos, docs, strict=True)
        writer.put(
            list(rows) if n_stored == len(ids) else list(compress(rows, stored.tolist())),
            compressed=True,
        )

    def reject(self, item_id: str | None, reason: str) -> None:
        if not self.options.skip_invalid:
            name = f"item {item_id!r}" if item_id else f"item number {self.n_items} (no id)"
            raise ValueError(f"{name}: {reason}")
        self.skipped.append(SkippedItem(item_id, reason))

    def validate(self, batch: list[dict]) -> list[_Usable]:
        usable: list[_Usable] = []
        for item in batch:
            self.n_items += 1
            item_id = item.get("id") if isinstance(item, Mapping) else None
            if not isinstance(item_id, str) or not item_id:
                self.reject(None, "no id")
                continue
            if item_id in self.options.exclude:
                self.n_excluded += 1
                continue
            if item_id in self.seen:
                self.n_duplicates += 1
                continue
            self.seen.add(item_id)
            geometry = item.get("geometry")
            if not isinstance(geometry, Mapping):
                self.reject(item_id, "no geometry")
                continue
            try:
                t_utc = _item_time_utc(item)
            except _InvalidItem as err:
                self.reject(item_id, str(err))
                continue
            usable.append((item, item_id, t_utc, geometry))
        return usable

    def tiles(self, usable: list[_Usable]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """(item number, tile x, tile y) pairs inside the tile range, and unusable geometries."""
        owner, xs, ys, errors = self.tiler.tile_arrays([u[3] for u in usable])
        if self.options.tiles is not None:
            keep = _in_tile_range(self.options.tiles, xs, ys)
            owner, xs, ys = owner[keep], xs[keep], ys[keep]
        return owner, xs, ys, errors

    def bin(self, usable: list[_Usable], tiles: tuple) -> list[tuple]:
        """Bin the batch; rows (id, product, datetime, json bytes) of datasets to store."""
        owner, xs, ys, errors = tiles
        for i, reason in errors.items():
            self.reject(usable[i][1], reason)
        epochs = np.fromiter(
            ((u[2] - _EPOCH).total_seconds() for u in usable), np.float64, len(usable)
        )
        stored = self.binner.add_batch([u[1] for u in usable], epochs, owner, xs, ys)
        self.n_outside += len(usable) - len(errors) - int(stored.sum())
        rows = []
        for i in np.flatnonzero(stored).tolist():
            item, item_id, t_utc, _ = usable[i]
            rows.append((item_id, item.get("collection"), _iso_utc(t_utc), _json_bytes(item)))
        return rows


class _DatasetWriter:
    """Compresses documents and inserts dataset rows on a background thread.

    zstd and SQLite release the GIL, so this overlaps with the footprint and binning work.
    Only this thread touches the connection until :meth:`close` returns. Without a ``codec``, the writer
    trains one on the first batch of documents it is given.
    """

    def __init__(self, db: sqlite3.Connection, codec: DocCodec | None = None) -> None:
        self.db = db
        self._codec = codec
        self.queue: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="eostats-cache-writer", daemon=True)
        self.thread.start()

    @property
    def codec(self) -> DocCodec:
        """The documents' codec (plain zstd when no document was written)."""
        return self._codec or DocCodec()

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            rows, compressed = batch
            if self.error is not None:
                continue  # keep draining so that put() never blocks forever
            try:
                if not compressed:
                    if self._codec is None:
                        self._codec = DocCodec.trained([doc for _, _, _, doc in rows])
                    compress = self._codec.compress
                    rows = [(i, p, t, compress(doc)) for i, p, t, doc in rows]
                self.db.executemany("INSERT INTO datasets VALUES (?, ?, ?, ?)", rows)
            except BaseException as err:  # re-raised in the building thread
                self.error = err

    def put(self, rows: list[tuple], compressed: bool = False) -> None:
        """Queue dataset rows ``(id, product, datetime, doc)``; ``doc`` JSON bytes, compressed with this writer's
        codec already when ``compressed``."""
        if self.error is not None:
            raise self.error
        self.queue.put((rows, compressed))

    def close(self, raise_error: bool = True) -> None:
        """Wait until every queued row is written; re-raise the writer's error, if any."""
        self.queue.put(None)
        self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


def _write_tasks(db: sqlite3.Connection, rows: list[tuple]) -> tuple[int, tuple[str, ...]]:
    """Insert the task rows (:meth:`_TaskBinner.task_rows`); returns (count, periods)."""
    db.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows), tuple(sorted({row[0] for row in rows}))


def _in_background(call: Any, *args: Any) -> threading.Thread:
    """``call(*args)`` on a thread; join it with :func:`_joined` (which re-raises its error)."""
    thread = threading.Thread(target=_capture, args=(call, args), daemon=True)
    thread.error = None  # type: ignore[attr-defined]
    thread.start()
    return thread


def _capture(call: Any, args: tuple) -> None:
    try:
        call(*args)
    except BaseException as err:  # re-raised by _joined
        threading.current_thread().error = err  # type: ignore[attr-defined]


def _joined(thread: threading.Thread) -> None:
    thread.join()
    if thread.error is not None:  # type: ignore[attr-defined]
        raise thread.error  # type: ignore[attr-defined]


def _unpack_ids(blob: bytes) -> list[str]:
    """A task's dataset ids from ``tasks.dataset_ids``: zstd of the sorted ids, UTF-8, one per line."""
    text = _UNPACK(blob).decode("utf-8")
    return text.split("\n") if text else []


def _iso_utc(t: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``: fixed width, so text order is time order."""
    return t.isoformat(timespec="microseconds") + "Z"


def _initialise(db: sqlite3.Connection) -> None:
    # The file is private until renamed into place: no journal, no fsync per page.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # KiB: 256 MiB for the index build
    db.execute("PRAGMA temp_store = MEMORY")
    db.executescript(_SCHEMA)


# --------------------------------------------------------------------------------------------
# Reading


class DatasetCache:
    """Read-only access to a cache written by :func:`build_cache`.

    Open it with :meth:`open`. Safe to share between threads (one SQLite connection, serialised
    by SQLite) and picklable (re-opened from its path).
    """

    def __init__(self, path: Path, db: sqlite3.Connection, meta: dict[str, Any]) -> None:
        self.path = path
        self._db = db
        self._meta = meta
        self._codec = DocCodec.from_meta(meta)

    @classmethod
    def open(cls, path: Path | str) -> DatasetCache:
        """Open the cache at ``path`` read-only.

        Raises FileNotFoundError when there is no file, ValueError when it is not an eostats
        dataset cache or has another schema version (both name the file).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset cache {path} does not exist")
        uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as err:
            db.close()
            raise ValueError(f"{path} is not an eostats dataset cache ({err})") from None
        if meta.get("format") != CACHE_FORMAT:
            db.close()
            raise ValueError(f"{path} is not an eostats dataset cache (no format={CACHE_FORMAT})")
        if version != SCHEMA_VERSION:
            db.close()
            raise ValueError(
                f"dataset cache {path} has schema version {version}; this eostats reads "
                f"version {SCHEMA_VERSION}: rebuild the cache"
            )
        return cls(path, db, meta)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DatasetCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = DatasetCache.open(state["path"])
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        return f"DatasetCache({str(self.path)!r})"

    # -- how the cache was made

    @property
    def grid(self) -> TileGrid:
        """The tile grid the tasks refer to."""
        return TileGrid.from_dict(self._meta["grid"])

    @property
    def binning(self) -> PeriodBinning:
        """The time binning used (for ``all`` without a range, task periods hold the final label)."""
        return make_binning(**self._meta["binning"])

    @property
    def source(self) -> dict:
        """The source description given to :func:`build_cache`."""
        return self._meta["source"]

    @property
    def settings(self) -> dict:
        """The settings given to :func:`build_cache`."""
        return self._meta["settings"]

    @property
    def summary(self) -> dict:
        """:meth:`CacheSummary.to_dict` of the build."""
        return self._meta["summary"]

    @property
    def meta(self) -> dict[str, Any]:
        """Every ``meta`` key (decoded JSON)."""
        return dict(self._meta)

    # -- tasks

    def task_ids(self) -> list[TaskId]:
        """Every task, sorted by (period, x, y)."""
        rows = self._db.execute("SELECT period, x, y FROM tasks ORDER BY period, x, y")
        return [TaskId(p, x, y) for p, x, y in rows]

    def periods(self) -> list[str]:
        """Distinct task periods, sorted."""
        rows = self._db.execute("SELECT DISTINCT period FROM tasks ORDER BY period")
        return [p for (p,) in rows]

    def tiles(self) -> list[tuple[int, int]]:
        """Distinct tile indices (x, y) over all tasks, sorted."""
        rows = self._db.execute("SELECT DISTINCT x, y FROM tasks ORDER BY x, y")
        return [(x, y) for x, y in rows]

    def tasks(self, period: str | None = None) -> list[TaskRecord]:
        """Every task's record (or those of one period), sorted by (period, x, y)."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM tasks"
        args: tuple = ()
        if period is not None:
            sql += " WHERE period = ?"
            args = (period,)
        rows = self._db.execute(sql + " ORDER BY period, x, y", args)
        return [_record(row) for row in rows]

    def task(self, task: TaskId) -> TaskRecord:
        """The record of one task; UnknownTaskError (a KeyError) when it is not in the cache."""
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM tasks WHERE period = ? AND x = ? AND y = ?", _key(task)
        ).fetchone()
        if row is None:
            raise self._unknown(task)
        return _record(row)

    def has_task(self, task: TaskId) -> bool:
        """Whether ``task`` is in the cache."""
        row = self._db.execute(
            "SELECT 1 FROM tasks WHERE period = ? AND x = ? AND y = ?", _key(task)
        ).fetchone()
        return row is not None

    def dataset_ids(self, task: TaskId) -> list[str]:
        """Ids of the task's datasets, sorted; UnknownTaskError when the task is not in the cache."""
        row = self._db.execute(
            "SELECT dataset_ids FROM tasks WHERE period = ? AND x = ? AND y = ?", _key(task)
        ).fetchone()
        if row is None:
            raise self._unknown(task)
        return _unpack_ids(row[0])

    def datasets(self, task: TaskId) -> list[dict]:
        """The task's full STAC item documents, sorted by id; UnknownTaskError for unknown tasks."""
        ids = self.dataset_ids(task)
        rows = self._db.execute(
            "SELECT doc FROM datasets WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ids),),
        ).fetchall()
        decompress = self._codec.decompress
        with _collector_paused():
            return [orjson.loads(decompress(doc)) for (doc,) in rows]

    def dataset(self, dataset_id: str) -> dict:
        """One dataset's STAC item document; KeyError when it is not stored."""
        row = self._db.execute("SELECT doc FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        if row is None:
            raise KeyError(f"dataset {dataset_id!r} is not in the dataset cache {self.path}")
        return orjson.loads(self._codec.decompress(row[0]))

    def dataset_hashes(self, exclude: Iterable[str] = ()) -> dict[TaskId, str]:
        """Every task's dataset fingerprint (sha1 of its sorted dataset ids), in one query.

        ``exclude``: dataset ids left out at tile time; the tasks holding one of them get the fingerprint of their
        remaining ids (of no id: ``dataset_list_hash([])``), the others keep the stored one.
        """
        rows = self._db.execute("SELECT period, x, y, dataset_hash FROM tasks")
        hashes = {TaskId(p, x, y): h for p, x, y, h in rows}
        excluded = sorted({str(i) for i in exclude})
        if not excluded:
            return hashes
        left_out = set(excluded)
        for task, ids in self.tasks_holding(left_out).items():
            hashes[task] = dataset_list_hash(i for i in ids if i not in left_out)
        return hashes

    def tasks_holding(self, dataset_ids: Iterable[str]) -> dict[TaskId, list[str]]:
        """The tasks holding at least one of ``dataset_ids``, each with all its dataset ids (one pass over the
        tasks: about a second for a continental annual cache)."""
        wanted = {str(i) for i in dataset_ids}
        found: dict[TaskId, list[str]] = {}
        if not wanted:
            return found
        for p, x, y, blob in self._db.execute("SELECT period, x, y, dataset_ids FROM tasks"):
            ids = _unpack_ids(blob)
            if not wanted.isdisjoint(ids):
                found[TaskId(p, x, y)] = ids
        return found

    def _unknown(self, task: TaskId) -> UnknownTaskError:
        return UnknownTaskError(f"task {task} is not in the dataset cache {self.path}")


def _key(task: TaskId) -> tuple[str, int, int]:
    return (task.period, int(task.x), int(task.y))


_RECORD_COLUMNS = "period, x, y, n_datasets, n_days_utc, n_days_solar, utc_offset, dataset_hash"


def _record(row: Sequence[Any]) -> TaskRecord:
    period, x, y, n, days_utc, days_solar, offset, digest = row
    return TaskRecord(TaskId(period, x, y), n, days_utc, days_solar, offset, digest)

"""Load one task's observations onto its tile, in odc-stats' order: mask natively, fuse by solar day, reproject.

For each native grid (CRS, pixel size, pixel phase) among the task's datasets, and for each spatial block of the
tile, the datasets' bands are read on a window of their own pixels (no resampling) that covers the block plus a
buffer; the plugin masks them there (morphology radii are native pixels), observations of the same solar day are
fused, and only then is the result reprojected to the block of the tile GeoBox. With datasets in several CRSs
(UTM-zone overlap), the per-CRS results are fused once more on the tile.

:class:`TaskReader` does this block by block with a pool of threads, one solar day per job: COG windows are
decoded through :mod:`eostats.rasterfile` (GDAL's C API for local files, rasterio for URLs; GDAL runs without the
GIL; every thread keeps its own open datasets, so GDAL's block cache serves the tiles shared by neighbouring
blocks), masking and fusing run on small numpy arrays, and the reprojection
uses :mod:`eostats.kernels.warp` (GDAL's nearest and bilinear rules, the pixel mapping computed once per block and
native grid) or odc-geo's ``xr_reproject`` for other resampling methods. :func:`load_task` wraps the reader as a
lazy dask-backed Dataset (one dask task per block).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import itertools
import marshal
import math
import operator
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.errors
import shapely.geometry
import xarray as xr
from odc.geo import xy_
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords, xr_reproject
from rasterio._err import CPLE_BaseError  # GDAL errors raised while reading pixels
from rasterio.env import set_gdal_config
from rasterio.warp import Resampling, reproject

from eostats.kernels.clearcount import ClearCounter, ClearCountRecipe, gather_counts
from eostats.kernels.warp import (
    PixelMap,
    nearest_index,
    pixel_map,
    warp_bilinear,
    warp_bilinear_bands,
    warp_nearest,
)
from eostats.plugins.base import StatsPlugin
from eostats.plugins.tools import EARLY_MASK, SCRATCH_INPUTS, EarlyMask
from eostats.rasterfile import RasterFile, RasterFileError, one_line_message, open_raster

DAYS_PER_BATCH = 4
"""Solar days decoded and masked together by one reading thread."""

RESAMPLING_MARGIN = 4
"""Native pixels decoded beyond the tile's footprint for bands whose neighbourhood does not enter the masking."""

GDAL_CACHE_BYTES = 256 * 2**20
"""GDAL's block cache while a :class:`TaskReader` runs, unless ``GDAL_CACHEMAX`` is set in the environment."""

SINGLE_PASS_GDAL_CACHE_BYTES = 16 * 2**20
"""GDAL's block cache for a reader that reads every file once (a tile of one block): no COG block is read twice,
so a big cache would only hold memory (new memory costs page faults: ~5 s of system time per GiB measured here)."""


class DatasetError(RuntimeError):
    """A dataset that cannot be used; the message names the dataset id and the reason.

    ``bad_datasets``: what went wrong, per dataset, as ``{"id", "asset", "href", "reason"}`` mappings (empty when
    the error concerns no single dataset); the tile job's failure record lists them.
    """

    bad_datasets: list[dict[str, str | None]] = []


class InputDataError(DatasetError):
    """One dataset's asset (or metadata) that cannot be used as declared: missing, truncated or not a GeoTIFF file,
    a CRS or dtype other than its STAC metadata and the task's other scenes say, malformed metadata.

    The message names the dataset id, the asset (band), its href and the reason, on one line. ``asset`` and ``href``
    are None for a problem of the item's metadata as a whole.
    """

    def __init__(self, dataset_id: str, asset: str | None, href: str | None, reason: str) -> None:
        self.dataset_id, self.asset, self.href, self.reason = dataset_id, asset, href, reason
        where = (
            f"asset {asset} ({href})"
            if asset and href
            else f"asset {asset}"
            if asset
            else "metadata"
        )
        super().__init__(f"dataset {dataset_id}: {where}: {reason}")
        self.bad_datasets = [{"id": dataset_id, "asset": asset, "href": href, "reason": reason}]


def _native_grid(item: pystac.Item, band: str) -> tuple[CRS, float, tuple[float, float]]:
    """CRS, pixel size (CRS units) and pixel-edge phase (x, y in [0, 1)) of a band's native grid."""
    asset = item.assets.get(band)
    props = {**item.properties, **(asset.extra_fields if asset else {})}
    code = props.get("proj:code") or (
        f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None
    )
    transform = props.get("proj:transform")
    if code is None or transform is None:
        raise InputDataError(
            item.id, band, None, "malformed metadata: no proj:code/proj:epsg or proj:transform"
        )
    try:
        res = float(transform[0])
        phase = ((transform[2] / res) % 1.0, (transform[5] / abs(transform[4])) % 1.0)
        return CRS(code), res, phase
    except Exception as err:  # a wrong type or length, a zero pixel size, an unknown CRS code
        raise InputDataError(
            item.id,
            band,
            None,
            f"malformed metadata: proj:code {code!r} / proj:transform {transform!r}: {err}",
        ) from None


def solar_day(time: datetime, lon: float) -> np.datetime64:
    """The local solar date of an observation at longitude ``lon`` (degrees east), as odc-stats groups by it."""
    local = time + timedelta(hours=lon * 24.0 / 360.0)
    return np.datetime64(local.date(), "D")


def _utc_naive(item: pystac.Item) -> datetime:
    when = item.datetime
    if when is None:
        raise InputDataError(item.id, None, None, "malformed metadata: no datetime")
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def native_geobox(
    tile: GeoBox, crs: CRS, resolution: float, phase: tuple[float, float], buffer_pixels: int
) -> GeoBox:
    """A GeoBox in ``crs`` on the datasets' own pixel grid that covers ``tile`` plus ``buffer_pixels``."""
    footprint = tile.extent.to_crs(crs).buffer(buffer_pixels * resolution)
    bbox = footprint.boundingbox
    return GeoBox.from_bbox(bbox, crs, resolution=resolution, anchor=xy_(*phase))


# ------------------------------------------------------------------------------------------------------------------
# Block reader


@dataclass(frozen=True)
class _Observation:
    """One dataset: its item, solar day, acquisition time (naive UTC) and the href of each band."""

    item: pystac.Item
    day: np.datetime64
    time: datetime
    hrefs: dict[str, str]


@dataclass
class _Group:
    """Datasets sharing one native pixel grid, by solar day (each day's datasets in acquisition order)."""

    crs: CRS
    resolution: float
    phase: tuple[float, float]
    days: dict[np.datetime64, list[_Observation]]


@dataclass(frozen=True)
class _BandInfo:
    dtype: np.dtype
    nodata: Any


class _Handles(threading.local):
    """Open rasterio datasets of one thread (rasterio handles must not be shared between threads), and the
    thread's decode buffers (:meth:`TaskReader._decode_buffers`)."""

    def __init__(self) -> None:
        self.open: dict[str, Any] = {}
        self.buffers: dict[np.dtype, np.ndarray] = {}


_MMAP_THRESHOLD_BYTES = 128 * 2**10
_COUNTING_MMAP_THRESHOLD_BYTES = 2**20


def _return_large_blocks_to_the_os(threshold: int = _MMAP_THRESHOLD_BYTES) -> None:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own mmap (returned to the OS when
    freed).

    By default glibc raises that threshold (up to 32 MiB) after the first large free, so the megabyte-sized
    per-observation arrays of the reading threads then come from per-thread arenas that keep the memory: a 3200²
    tile's peak RSS grew by about a gigabyte that way, and by 450 MiB with a threshold of 1 MiB instead of 128 KiB.
    A reader that only counts (:meth:`TaskReader.count`) holds no such arrays but decodes hundreds of COG blocks
    (256 KiB for 512² uint8), which GDAL's block cache allocates and frees one by one: each a fresh mmap, its
    pages faulted in and zeroed, under 128 KiB (~100 MiB and 20 ms of a 1024² pq tile's wall); it uses 1 MiB.
    Other C libraries: nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        # M_MMAP_THRESHOLD; a fixed value also stops the adjustment
        libc.mallopt(-3, int(threshold))
    except (OSError, AttributeError):
        pass


def _ordinary_pages_for_arrays() -> None:
    """Stop numpy asking Linux for transparent huge pages on its large arrays, unless ``NUMPY_MADVISE_HUGEPAGE``
    says otherwise.

    A tile job fills hundreds of MiB of new arrays at once. With huge pages each first touch zeroes 2 MiB and may
    first compact memory to find them: measured here at 1.1-3.4 s of system time per fresh 512 MiB, against a
    steady 0.25-0.33 s with ordinary pages.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    setter = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


def _href(asset: pystac.Asset) -> str:
    return asset.get_absolute_href() or asset.href


def _crs_name(crs: CRS) -> str:
    return f"EPSG:{crs.epsg}" if crs.epsg else str(crs.to_wkt())[:80]


_CURRENT_EXTENSIONS = (  # pystac's extensions whose current schema URI an item may declare as it is
    ("eo", "EOExtension"),
    ("projection", "ProjectionExtension"),
    ("raster", "RasterExtension"),
    ("view", "ViewExtension"),
    ("sat", "SatExtension"),
    ("file", "FileExtension"),
    ("timestamps", "TimestampsExtension"),
    ("storage", "StorageExtension"),
    ("version", "VersionExtension"),
    ("grid", "GridExtension"),
    ("mgrs", "MgrsExtension"),
    ("classification", "ClassificationExtension"),
)


@functools.cache
def _current_extension_schemas() -> frozenset[str]:
    return frozenset(
        getattr(importlib.import_module(f"pystac.extensions.{module}"), name).get_schema_uri()
        for module, name in _CURRENT_EXTENSIONS
    )


def _needs_migration(item: Mapping[str, Any]) -> bool:
    """Whether pystac's migration could change the item: unless it is of pystac's STAC version and declares only
    the current schema of extensions pystac knows. (The migration deep-copies the item first: ~1 ms per scene.)"""
    if item.get("stac_version") != pystac.get_stac_version():
        return True
    extensions = item.get("stac_extensions")
    return not isinstance(extensions, list) or not _current_extension_schemas().issuperset(
        extensions
    )


def _parse_item(item: Mapping | pystac.Item) -> pystac.Item:
    if isinstance(item, pystac.Item):
        return item
    try:
        # pystac deep-copies the dict it is given unless told it may consume it; a marshal round trip is a copy
        # several times cheaper (0.03 ms an item, a JSON one 0.11), keeping every value as it is (NaN included)
        own_copy = marshal.loads(marshal.dumps(item))
    except ValueError:
        own_copy = (
            None  # values marshal cannot hold (datetimes, dict subclasses): pystac copies the item
        )
    try:
        if own_copy is not None:
            return pystac.Item.from_dict(
                own_copy, preserve_dict=False, migrate=_needs_migration(own_copy)
            )
        return pystac.Item.from_dict(dict(item))
    except Exception as err:
        item_id = item.get("id") if isinstance(item, Mapping) else None
        raise InputDataError(
            str(item_id), None, None, f"malformed STAC item: {one_line_message(err)}"
        ) from None


@functools.lru_cache(maxsize=256)
def _parsed_file_crs(wkt: str, declared: str) -> tuple[CRS, bool]:
    crs = CRS(wkt)
    return crs, crs == CRS(declared)


def _file_crs(wkt: str, declared: CRS) -> tuple[CRS, bool]:
    """A file's CRS from its WKT and whether it is the ``declared`` one, worked out once per pair (the task's
    files share a few CRSs; a comparison can cost 0.1 ms, in every reading thread)."""
    return _parsed_file_crs(wkt, str(declared))


def _checked_open(
    item: pystac.Item, band: str, href: str, expected_dtype: np.dtype | None
) -> tuple[RasterFile, CRS]:
    """Open one asset, making sure it is what its item says: a raster GDAL reads, in the CRS of the item's
    ``proj:code``/``proj:epsg``, of the dtype of its ``raster:bands`` ``data_type`` and of the task's other scenes
    (``expected_dtype``, None for the first). Any other asset is an :class:`InputDataError` naming it.

    A scene in another CRS than declared would otherwise be warped silently onto a wrong grid (its pixels
    misplaced), and one of another dtype cast silently (a float band into int16); both are broken data.
    """
    if "://" not in href and not os.path.exists(href):
        raise InputDataError(item.id, band, href, "missing file (no such file or directory)")
    try:
        src = open_raster(href)
    except RasterFileError as err:
        reason = one_line_message(err)
        if "not recognized as" in reason or "not recognised as" in reason:
            reason = f"not a GeoTIFF (GDAL cannot read it as a raster): {reason}"
        elif "No such file" in reason or "does not exist" in reason:
            reason = f"missing file: {reason}"
        else:
            reason = f"cannot open: {reason}"
        raise InputDataError(item.id, band, href, reason) from None
    try:
        if src.driver not in ("GTiff", "COG"):
            raise InputDataError(
                item.id, band, href, f"not a GeoTIFF (GDAL reads it as {src.driver})"
            )
        declared_crs = _native_grid(item, band)[0]
        if declared_crs.epsg is not None and src.geokeys_epsg == declared_crs.epsg:
            # the file's GeoTIFF keys name the declared EPSG code: the CRS GDAL would build from them (through
            # PROJ, ~0.5 ms a file and 7-16 ms on a reading thread's first) is the declared one
            crs, as_declared = declared_crs, True
        elif not src.crs_wkt:
            raise InputDataError(
                item.id,
                band,
                href,
                f"the file has no CRS (the item declares {_crs_name(declared_crs)})",
            )
        else:
            crs, as_declared = _file_crs(src.crs_wkt, declared_crs)
        if not as_declared:
            raise InputDataError(
                item.id,
                band,
                href,
                f"unexpected CRS: the file is in {_crs_name(crs)}, the item declares {_crs_name(declared_crs)}",
            )
        dtype = src.dtype
        bands_meta = item.assets[band].extra_fields.get("raster:bands") or [{}]
        declared_dtype = (
            bands_meta[0].get("data_type") if isinstance(bands_meta[0], Mapping) else None
        )
        if declared_dtype and dtype != np.dtype(declared_dtype):
            raise InputDataError(
                item.id,
                band,
                href,
                f"unexpected dtype: the file holds {dtype}, the item declares {declared_dtype}",
            )
        if expected_dtype is not None and dtype != expected_dtype:
            raise InputDataError(
                item.id,
                band,
                href,
                f"unexpected dtype: the file holds {dtype}, the task's other scenes {expected_dtype}",
            )
    except BaseException:
        src.close()
        raise
    return src, crs


class TaskReader:
    """A task's masked, fused, reprojected observations on any block of its tile (see the module docstring).

    :param items: the task's STAC items (dicts or pystac Items).
    :param tile: the tile's GeoBox; blocks are given as row/column slices of it.
    :param plugin: supplies ``input_bands``, ``native_transform``, ``fuse``, ``resampling`` and
        ``native_buffer_pixels``.
    :param threads: solar days decoded and processed at the same time.
    :param single_pass: the tile is read as one block (GDAL's block cache is then kept small).

    ``days`` are the solar dates of the observations (the ``time`` coordinate), ``variables`` the name, dtype and
    attrs of every variable :meth:`read` returns. Close the reader (or use it as a context manager) to close its
    files and threads.
    """

    def __init__(
        self,
        items: Iterable[Mapping | pystac.Item],
        tile: GeoBox,
        plugin: StatsPlugin,
        *,
        threads: int = 2,
        single_pass: bool = False,
    ) -> None:
        self.tile = tile
        self.plugin = plugin
        self.bands = list(plugin.input_bands)
        self._context_bands = set(plugin.context_bands)
        self._mask_bands = set(plugin.mask_bands)
        # the default fuse (first valid value) returns a lone observation as it is
        self._fuse_keeps_single = type(plugin).fuse is StatsPlugin.fuse
        self._single_pass = bool(single_pass)
        self.groups = self._group(items)
        self.days = np.array(
            sorted({d for g in self.groups for d in g.days}), dtype="datetime64[D]"
        )
        self._day_index = {d: i for i, d in enumerate(self.days)}
        self._handles = _Handles()
        self._all_handles: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        _ordinary_pages_for_arrays()
        if "GDAL_CACHEMAX" not in os.environ:
            # GDAL's default block cache (5 % of RAM) would hold every decoded COG tile of a block; neighbouring
            # blocks are mostly read by other threads' handles, so a big cache buys little and costs memory
            set_gdal_config(
                "GDAL_CACHEMAX", SINGLE_PASS_GDAL_CACHE_BYTES if single_pass else GDAL_CACHE_BYTES
            )
        #: CPU seconds spent per stage (decode, mask, fuse, warp) by the reading threads, summed over blocks
        self.cpu_seconds: dict[str, float] = {}
        self._threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="eostats-read")
        self.band_info = self._probe_bands()
        _return_large_blocks_to_the_os(
            _COUNTING_MMAP_THRESHOLD_BYTES
            if self.counts_natively is not None
            else _MMAP_THRESHOLD_BYTES
        )

    # -- set-up -------------------------------------------------------------------------------------------------
    def _group(self, items: Iterable[Mapping | pystac.Item]) -> list[_Group]:
        parsed = [_parse_item(it) for it in items]
        if not parsed:
            raise DatasetError("task has no datasets")
        by_grid: dict[tuple, list[tuple[int, pystac.Item]]] = defaultdict(list)
        for order, item in enumerate(parsed):
            missing = [b for b in self.bands if b not in item.assets]
            if missing:
                raise InputDataError(
                    item.id,
                    missing[0],
                    None,
                    f"missing band(s) {', '.join(missing)} in the item's assets",
                )
            # every band's grid metadata must be readable, not only the first's (which decides the group)
            crs, res, phase = [_native_grid(item, band) for band in self.bands][0]
            by_grid[(str(crs), res, round(phase[0], 6), round(phase[1], 6))].append((order, item))
        groups = []
        for (crs, res, px, py), members in sorted(by_grid.items()):
            days: dict[np.datetime64, list[_Observation]] = defaultdict(list)
            # a day's datasets in acquisition order (odc-stac's order), ties in input order
            for _, item in sorted(members, key=lambda m: (_utc_naive(m[1]), m[0])):
                try:
                    # shapely directly: odc-geo's Geometry walks every vertex in Python first (~0.15 ms/item)
                    lon = shapely.geometry.shape(item.geometry).centroid.x
                except Exception as err:
                    raise InputDataError(
                        item.id, None, None, f"malformed geometry: {err}"
                    ) from None
                when = _utc_naive(item)
                day = solar_day(when, lon)
                hrefs = {b: _href(item.assets[b]) for b in self.bands}
                days[day].append(_Observation(item, day, when, hrefs))
            groups.append(_Group(CRS(crs), res, (px, py), dict(days)))
        return groups

    def _probe_bands(self) -> dict[str, _BandInfo]:
        """dtype and nodata of every band, from the first dataset's files (then its raster:bands metadata)."""
        first = next(iter(self.groups[0].days.values()))[0]
        info = {}
        for band in self.bands:
            src, _ = self._dataset(first, band)
            nodata = src.nodata
            if nodata is None:
                bands_meta = first.item.assets[band].extra_fields.get("raster:bands") or [{}]
                nodata = bands_meta[0].get("nodata")
            dtype = src.dtype
            if nodata is not None and dtype.kind in "iu":
                nodata = int(nodata)
            info[band] = _BandInfo(dtype, nodata)
        return info

    @functools.cached_property
    def variables(self) -> dict[str, tuple[np.dtype, dict]]:
        """Names, dtypes and attrs of the plugin's fused variables, from a tiny all-nodata stack (worked out on
        first use: counting natively needs none)."""
        group = self.groups[0]
        gbox = native_geobox(self.tile, group.crs, group.resolution, group.phase, 0)[:8, :8]
        fake = {}
        for band, info in self.bands_info_items():
            fill = info.nodata if info.nodata is not None else 0
            data = np.full((1, *gbox.shape.yx), fill, dtype=info.dtype)
            fake[band] = xr.DataArray(data, dims=("time", "y", "x"), attrs={"nodata": info.nodata})
        fused = self._mask_and_fuse(self._as_dataset(fake, gbox, [self.days[0]]))
        return {name: (var.dtype, dict(var.attrs)) for name, var in fused.data_vars.items()}

    def bands_info_items(self):
        return [(b, self.band_info[b]) for b in self.bands]

    # -- reading ------------------------------------------------------------------------------------------------
    def _dataset(self, obs: _Observation, band: str) -> tuple[RasterFile, CRS]:
        """This thread's open dataset of the observation's ``band`` and its CRS, checked against the metadata on
        first opening (:func:`_checked_open`)."""
        handles = self._handles.open
        if not handles:
            with self._lock:
                self._all_handles.append(handles)
        href = obs.hrefs[band]
        entry = handles.get(href)
        if entry is None:
            probed = getattr(self, "band_info", None)
            expected = probed[band].dtype if probed else None
            entry = _checked_open(obs.item, band, href, expected)
            handles[href] = entry
        return entry

    def _read_band(
        self,
        obs: _Observation,
        band: str,
        gbox: GeoBox,
        out: np.ndarray | None = None,
        kept: Callable[[slice, slice], bool] | None = None,
    ) -> np.ndarray:
        """One band of one dataset on ``gbox`` (the dataset's own pixel grid), into ``out`` if given; nodata
        outside its raster. ``kept(ys, xs)``: whether the masking keeps a pixel of ``gbox[ys, xs]``; the file's
        blocks where it does not are left nodata instead of decoded."""
        href = obs.hrefs[band]
        info = self.band_info[band]
        fill = info.nodata if info.nodata is not None else 0
        if out is None:
            out = np.empty(gbox.shape.yx, dtype=info.dtype)
        src, crs = self._dataset(obs, band)
        try:
            t, g = src.transform, gbox.transform
            col = (g.c - t.c) / t.a
            row = (g.f - t.f) / t.e
            aligned = (
                t.b == 0
                and t.d == 0
                and math.isclose(t.a, g.a, rel_tol=1e-9)
                and math.isclose(t.e, g.e, rel_tol=1e-9)
                and abs(col - round(col)) < 1e-6
                and abs(row - round(row)) < 1e-6
                and crs == gbox.crs
            )
            if not aligned:
                # another pixel grid (e.g. a 20 m band among 10 m ones): nearest, as odc-stac reads it
                out[...] = fill
                warped = np.full(gbox.shape.yx, fill, dtype=info.dtype)
                reproject(
                    src.rasterio_band(),
                    warped,
                    dst_transform=g,
                    dst_crs=gbox.crs.to_wkt(),
                    dst_nodata=fill,
                    resampling=Resampling.nearest,
                )
                out[...] = warped
                return out
            col, row = int(round(col)), int(round(row))
            ny, nx = out.shape
            c0, r0 = max(0, col), max(0, row)
            c1, r1 = min(src.width, col + nx), min(src.height, row + ny)
            if not (c0 == col and r0 == row and c1 == col + nx and r1 == row + ny):
                out[...] = fill  # the window reaches beyond the raster
            if c1 > c0 and r1 > r0:
                runs = _kept_block_runs(src, row, col, r0, r1, c0, c1, kept)
                if runs is None:
                    # decoded straight into the stack (the dtype was checked when the file was opened)
                    src.read(
                        slice(r0, r1), slice(c0, c1), out[r0 - row : r1 - row, c0 - col : c1 - col]
                    )
                else:
                    out[r0 - row : r1 - row, c0 - col : c1 - col] = fill
                    for ra, rb, ca, cb in runs:
                        src.read(
                            slice(ra, rb),
                            slice(ca, cb),
                            out[ra - row : rb - row, ca - col : cb - col],
                        )
        except (RasterFileError, rasterio.errors.RasterioError, CPLE_BaseError) as err:
            # a truncated or corrupt file opens (its header is intact) and fails on the pixels
            raise InputDataError(
                obs.item.id,
                band,
                href,
                f"cannot read pixels (truncated or corrupt file?): {one_line_message(err)}",
            ) from None
        return out

    def _fill(self, band: str) -> Any:
        nodata = self.band_info[band].nodata
        return nodata if nodata is not None else 0

    def _inner_window(self, band: str, gbox: GeoBox) -> tuple[slice, slice] | None:
        """The part of the native window worth decoding for a band outside the plugin's ``context_bands``: the
        tile plus :data:`RESAMPLING_MARGIN` pixels (GDAL's nearest and bilinear rules reach one pixel beyond the
        footprint of the destination pixel centres). None: decode the whole window."""
        inset = self.plugin.native_buffer_pixels - RESAMPLING_MARGIN
        if (
            band in self._context_bands
            or self.plugin.resampling not in ("nearest", "bilinear")
            or inset <= 0
            or min(gbox.shape.yx) <= 2 * inset
        ):
            return None
        ny, nx = gbox.shape.yx
        return slice(inset, ny - inset), slice(inset, nx - inset)

    def _as_dataset(self, arrays: dict[str, xr.DataArray], gbox: GeoBox, times) -> xr.Dataset:
        coords = dict(xr_coords(gbox))
        coords["time"] = np.asarray(times)
        return xr.Dataset({k: v.assign_coords(coords) for k, v in arrays.items()})

    def _fuse(self, xx: xr.Dataset) -> xr.Dataset:
        """The plugin's fuse of one day's observations (dim ``time``), computed, without a ``time`` dim."""
        fused = self.plugin.fuse(xx)
        if "time" in fused.dims:
            fused = fused.isel(time=0, drop=True)
        return fused.compute(scheduler="synchronous")

    def _mask_and_fuse(self, xx: xr.Dataset) -> xr.Dataset:
        """The plugin's native_transform, then its fuse, on one solar day's datasets (computed, numpy-backed)."""
        return self._fuse(self.plugin.native_transform(xx).compute(scheduler="synchronous"))

    def _native_days(
        self, group: _Group, days: list[np.datetime64], gbox: GeoBox
    ) -> tuple[list[np.datetime64], dict[str, np.ndarray], dict[str, dict]]:
        """The fused observations of ``days`` in ``group`` on the native window ``gbox``.

        Returns the days with data there, and each variable as a ``(day, y, x)`` stack with its attrs. The
        datasets of all the days are decoded and masked together: the plugin's masking builds a small dask graph
        per call, whose cost is then paid once per batch of days rather than per day.
        """

        window = gbox.boundingbox
        present = {
            day: [obs for obs in group.days[day] if _may_overlap(obs.item, self.bands[0], window)]
            for day in days
        }
        observations = [obs for day in days for obs in present[day]]
        if not observations:
            return [], {}, {}
        t0 = time.thread_time()
        arrays = {}
        buffers = self._decode_buffers(len(observations), gbox.shape.yx)
        # the plugin's mask bands first: with their early mask, the other bands' blocks that the mask erases
        # entirely (clouds, a scene's empty corner) are not decoded
        mask_bands = [band for band in self.bands if band in self._mask_bands]
        others = [band for band in self.bands if band not in self._mask_bands]

        def decode(band: str, early: EarlyMask | None) -> xr.DataArray:
            stack = buffers[band]
            inner = self._inner_window(band, gbox)
            ys, xs = inner or (slice(0, gbox.shape.y), slice(0, gbox.shape.x))
            window = gbox if inner is None else gbox[ys, xs]
            for i, obs in enumerate(observations):
                if inner is not None:
                    _fill_ring(stack[i], ys, xs, self._fill(band))
                kept = (
                    None
                    if early is None
                    else functools.partial(_kept, early, i, ys.start, xs.start)
                )
                self._read_band(obs, band, window, out=stack[i][ys, xs], kept=kept)
            return xr.DataArray(
                stack, dims=("time", "y", "x"), attrs={"nodata": self.band_info[band].nodata}
            )

        for band in mask_bands:
            arrays[band] = decode(band, None)
        early = (
            self.plugin.early_mask({band: buffers[band] for band in mask_bands})
            if mask_bands and others
            else None
        )
        for band in others:
            arrays[band] = decode(band, early)
        t1 = time.thread_time()
        times = np.array([np.datetime64(obs.time, "ns") for obs in observations])
        decoded = self._as_dataset({band: arrays[band] for band in self.bands}, gbox, times)
        decoded.attrs[SCRATCH_INPUTS] = True  # dropped after masking: the plugin may overwrite them
        if early is not None:
            decoded.attrs[EARLY_MASK] = early
        masked = self.plugin.native_transform(decoded)
        del decoded
        masked = masked.compute(scheduler="synchronous")
        del arrays
        t2 = time.thread_time()
        fused_days = [day for day in days if present[day]]
        if self._fuse_keeps_single and len(fused_days) == len(observations):
            # one observation per day and the default fuse: the masked stacks are the fused days already
            stacks = {n: np.ascontiguousarray(v.values) for n, v in masked.data_vars.items()}
            attrs = {n: dict(v.attrs) for n, v in masked.data_vars.items()}
            self._count(decode=t1 - t0, mask=t2 - t1, fuse=time.thread_time() - t2)
            return fused_days, stacks, attrs
        fused = []
        start = 0
        for day in fused_days:
            n = len(present[day])
            fused.append(self._fuse(masked.isel(time=slice(start, start + n))))
            start += n
        del masked
        stacks = {name: np.stack([f[name].values for f in fused]) for name in fused[0].data_vars}
        attrs = {name: dict(var.attrs) for name, var in fused[0].data_vars.items()}
        self._count(decode=t1 - t0, mask=t2 - t1, fuse=time.thread_time() - t2)
        return fused_days, stacks, attrs

    def _decode_buffers(self, n: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """This thread's ``(n, *shape)`` array of every band for a batch's decoded observations, reused from batch
        to batch: a batch's arrays are done with when it is warped, and fresh ones would cost a page fault per 4 KiB
        (some 900 MiB of them for a 1024² gm-ls tile). The bands of one dtype are views of one ``(band, n, y, x)``
        buffer, so that they warp together (:func:`~eostats.kernels.warp.warp_bilinear_bands`); one buffer per dtype
        and thread is kept, grown as needed."""
        by_dtype: dict[np.dtype, list[str]] = {}
        for band in self.bands:
            by_dtype.setdefault(self.band_info[band].dtype, []).append(band)
        views = {}
        for dtype, bands in by_dtype.items():
            held = self._handles.buffers.get(dtype)
            if held is None or held.shape[2:] != tuple(shape) or held.shape[1] < n:
                self._handles.buffers.pop(dtype, None)  # freed before its successor is allocated
                held = self._handles.buffers[dtype] = np.empty((len(bands), n, *shape), dtype)
            views.update(zip(bands, held[:, :n], strict=True))
        return views

    def _count(self, **seconds: float) -> None:
        with self._lock:
            for stage, value in seconds.items():
                self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + value

    def _warp(
        self,
        stacks: dict[str, np.ndarray],
        attrs: dict[str, dict],
        mapping: PixelMap,
        native: GeoBox,
        block: GeoBox,
        outs: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every variable's ``(day, y, x)`` stack from the native window onto the block, into ``outs[name]`` when
        given. Nearest resampling moves booleans as they are; other methods take them through uint8 0/255 and back
        as ``> 127``, so a bilinear mask keeps its majority."""
        out = {}
        method = self.plugin.resampling
        outs = outs or {}
        if method == "bilinear":
            out.update(self._warp_bands_together(stacks, attrs, mapping, outs))
        for name, data in stacks.items():
            if name in out:
                continue
            is_bool = data.dtype == bool
            dest = outs.get(name)
            if method == "nearest":
                if is_bool:
                    target = None if dest is None else dest.view(np.uint8)
                    warped = warp_nearest(
                        data.view(np.uint8), mapping, block.shape.yx, None, target
                    )
                    out[name] = warped.view(bool)
                else:
                    out[name] = warp_nearest(
                        data, mapping, block.shape.yx, attrs[name].get("nodata"), dest
                    )
                continue
            if is_bool:
                data = data.view(np.uint8) * np.uint8(255)
                nodata = None
            else:
                nodata = attrs[name].get("nodata")
            if method == "bilinear":
                warped = warp_bilinear(
                    data, mapping, block.shape.yx, nodata, None if is_bool else dest
                )
            else:
                src = xr.DataArray(
                    data,
                    dims=("time", "y", "x"),
                    coords=xr_coords(native),
                    attrs={"nodata": nodata},
                )
                warped = xr_reproject(src, block, resampling=method).values
            warped = warped > 127 if is_bool else warped
            if dest is not None and warped is not dest:
                dest[...] = warped
            out[name] = warped
        return out

    def _warp_bands_together(
        self,
        stacks: dict[str, np.ndarray],
        attrs: dict[str, dict],
        mapping: PixelMap,
        outs: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Bilinear warps of the variables that share a dtype and nodata and lie evenly spaced in one buffer, both
        the native stacks (:meth:`_decode_buffers`) and their destinations (the block's buffer), as one
        :func:`~eostats.kernels.warp.warp_bilinear_bands` call each; returns what was warped."""
        groups: dict[tuple, list[str]] = defaultdict(list)
        for name, data in stacks.items():
            nodata = attrs[name].get("nodata")
            if data.dtype != bool and name in outs and not _is_nan(nodata):
                groups[(data.dtype, nodata)].append(name)
        done = {}
        for (_, nodata), names in groups.items():
            if len(names) < 2:
                continue
            src = _bands_view([stacks[name] for name in names])
            dest = _bands_view([outs[name] for name in names])
            if src is None or dest is None or src.shape[:2] != dest.shape[:2]:
                continue
            warp_bilinear_bands(src, mapping, nodata, dest)
            done.update((name, outs[name]) for name in names)
        return done

    def _days_on_block(
        self,
        days: list[np.datetime64],
        block: GeoBox,
        natives: list[tuple[GeoBox, Future[PixelMap]]],
        arrays: dict,
    ) -> None:
        """Write the variables of ``days`` on ``block`` into ``arrays`` (``(time, y, x)`` per variable); days without
        data over the block get each variable's nodata (False for masks). ``natives``: each group's native window
        and the future of its pixel map (worked out by :meth:`read`'s caller while these days decode)."""
        per_group = []
        written: set[np.datetime64] = set()
        for group, (native, mapping_ready) in zip(self.groups, natives, strict=True):
            mine = [day for day in days if day in group.days]
            if not mine:
                continue
            found, stacks, attrs = self._native_days(group, mine, native)
            if found:
                mapping = mapping_ready.result()
                t0 = time.thread_time()
                outs = None
                index = [self._day_index[day] for day in found]
                if len(self.groups) == 1 and index == list(range(index[0], index[-1] + 1)):
                    # consecutive days of the only grid: straight into the block's arrays
                    outs = {name: arrays[name][index[0] : index[-1] + 1] for name in stacks}
                warped = self._warp(stacks, attrs, mapping, native, block, outs)
                if len(self.groups) == 1 and outs is None:
                    for name, values in warped.items():
                        arrays[name][index] = values
                per_group.append((found, warped))
                written.update(found)
                self._count(warp=time.thread_time() - t0)
        for day in days:
            if day not in written:
                for name, (dtype, attrs) in self.variables.items():
                    arrays[name][self._day_index[day]] = _fill_value(dtype, attrs)
        if len(self.groups) == 1:
            return
        # several native grids: fuse each day's reprojected observations on the tile, as odc-stats does
        coords = dict(xr_coords(block))
        for day in days:
            results = [(found.index(day), warped) for found, warped in per_group if day in found]
            if not results:
                continue
            stack = {
                name: xr.DataArray(
                    np.stack([warped[name][k] for k, warped in results]),
                    dims=("time", "y", "x"),
                    attrs=self.variables[name][1],
                )
                for name in self.variables
            }
            fused = self._fuse(xr.Dataset(stack, coords=coords))
            i = self._day_index[day]
            for name in self.variables:
                arrays[name][i] = fused[name].values

    def _batches(self) -> list[list[np.datetime64]]:
        """Consecutive solar days in batches: at least two per thread, at most ``DAYS_PER_BATCH`` days each (a
        batch's native windows and their masked copies are in memory at once)."""
        days = list(self.days)
        n_jobs = max(2 * self._threads, math.ceil(len(days) / DAYS_PER_BATCH))
        size = max(1, math.ceil(len(days) / n_jobs))
        return [days[i : i + size] for i in range(0, len(days), size)]

    def read(self, ys: slice, xs: slice) -> xr.Dataset:
        """The block ``tile[ys, xs]``: numpy-backed Dataset with dims ``(time, y, x)``, one time per solar day.

        Days without data over the block hold the variables' nodata (False for masks).
        """
        block = self.tile[ys, xs]
        natives: list[tuple[GeoBox, Future[PixelMap]]] = [
            (
                native_geobox(
                    block,
                    group.crs,
                    group.resolution,
                    group.phase,
                    self.plugin.native_buffer_pixels,
                ),
                Future(),
            )
            for group in self.groups
        ]
        shape = (len(self.days), *block.shape.yx)
        # the variables of one dtype share one (variable, time, y, x) buffer, in the variables' order: a plugin that
        # reduces them together takes the buffer as its stack instead of copying them into one (stacked_bands).
        # Left unfilled here: the reading threads write every pixel of the days they read, and fill the others.
        by_dtype: dict[np.dtype, list[str]] = {}
        for name, (dtype, _) in self.variables.items():
            by_dtype.setdefault(np.dtype(dtype), []).append(name)
        arrays = {}
        for dtype, names in by_dtype.items():
            buffer = np.empty((len(names), *shape), dtype=dtype)
            arrays.update(zip(names, buffer, strict=True))

        jobs = [
            self._pool.submit(self._days_on_block, batch, block, natives, arrays)
            for batch in self._batches()
        ]
        # the pixel maps, in this thread while the reading threads decode the first days (they wait for a map only
        # when they come to warp)
        try:
            for native, mapping_ready in natives:
                mapping = pixel_map(native, block)
                if self.plugin.resampling == "bilinear":
                    _ = mapping.taps
                elif self.plugin.resampling == "nearest":
                    _ = mapping.centre
                mapping_ready.set_result(mapping)
        except BaseException as err:
            for _, mapping_ready in natives:  # the reading threads stop at their warp
                if not mapping_ready.done():
                    mapping_ready.set_exception(err)
            raise
        for future in jobs:
            future.result()
        coords = dict(xr_coords(block))
        coords["time"] = self.days.astype("datetime64[ns]")
        data_vars = {
            name: xr.DataArray(arrays[name], dims=("time", "y", "x"), attrs=self.variables[name][1])
            for name in self.variables
        }
        return xr.Dataset(data_vars, coords=coords)

    @property
    def counts_natively(self) -> ClearCountRecipe | None:
        """The plugin's :attr:`~eostats.plugins.base.StatsPlugin.clear_count_recipe` when its counts can be summed
        on the native pixels and reprojected once (:meth:`count`): one native grid, nearest resampling (a sum of
        gathered values is the gathered sum; a day seen in several grids would be fused on the tile first) and an
        8- or 16-bit integer class band. None otherwise."""
        recipe = self.plugin.clear_count_recipe
        if recipe is None or len(self.groups) != 1 or self.plugin.resampling != "nearest":
            return None
        dtype = self.band_info[recipe.band].dtype
        return recipe if dtype.kind in "iu" and dtype.itemsize <= 2 else None

    def count(self, ys: slice, xs: slice) -> dict[str, np.ndarray]:
        """The plugin's clear counts on the block ``tile[ys, xs]`` (requires :attr:`counts_natively`): every day
        classified, fused, cleaned and counted on the native window by the reading threads (one counter each),
        the summed counts then reprojected. Returns ``{name: uint16 (y, x)}``."""
        recipe = self.counts_natively
        if recipe is None:
            raise ValueError("this task's counts cannot be summed on native pixels")
        block = self.tile[ys, xs]
        (group,) = self.groups
        native = native_geobox(
            block, group.crs, group.resolution, group.phase, self.plugin.native_buffer_pixels
        )
        dtype = self.band_info[recipe.band].dtype
        window = native.boundingbox
        days = iter(sorted(group.days))
        take = threading.Lock()

        def next_day() -> np.datetime64 | None:
            with take:
                return next(days, None)

        def count_days() -> ClearCounter:
            counter = ClearCounter(recipe, native.shape.yx, dtype)
            scratch = np.empty(native.shape.yx, dtype=dtype)
            decode = classify = 0.0
            while (day := next_day()) is not None:
                for obs in group.days[day]:
                    if not _may_overlap(obs.item, recipe.band, window):
                        continue
                    t0 = time.thread_time()
                    self._read_band(obs, recipe.band, native, out=scratch)
                    t1 = time.thread_time()
                    counter.add_observation(scratch)
                    decode += t1 - t0
                    classify += time.thread_time() - t1
                t0 = time.thread_time()
                counter.end_day()
                classify += time.thread_time() - t0
            self._count(decode=decode, count=classify)
            if self._single_pass:
                # nothing is read again: each thread closes its files now, side by side, not the caller at the end
                self._close_thread_handles()
            return counter

        # this thread reads too, as one of the job's threads: its GDAL and PROJ state is set up already (a new
        # thread's first GeoTIFF costs ~8 ms of CPU, holding the GIL); first, while the other threads set up and
        # start counting, the native pixel under each block pixel, in the counters' rows
        jobs = [self._pool.submit(count_days) for _ in range(self._threads - 1)]
        t0 = time.thread_time()
        index = nearest_index(native, block, ClearCounter.row_stride(native.shape.x))
        self._count(warp=time.thread_time() - t0)
        counters = [count_days(), *(job.result() for job in jobs)]
        t0 = time.thread_time()
        warped = gather_counts(counters, index, self._pool, self._threads)
        self._count(warp=time.thread_time() - t0)
        return dict(zip(recipe.names, warped, strict=True))

    def lazy(self, chunk_size: int) -> xr.Dataset:
        """Every block as one dask task: a lazy Dataset of the whole tile, chunked ``chunk_size`` pixels."""
        import dask.array as da
        from dask.base import tokenize

        ny, nx = self.tile.shape.yx
        y_chunks = tuple(min(chunk_size, ny - y) for y in range(0, ny, chunk_size))
        x_chunks = tuple(min(chunk_size, nx - x) for x in range(0, nx, chunk_size))
        token = tokenize(id(self), chunk_size, str(self.tile))
        block_name = f"eostats-read-{token}"
        graph: dict = {}
        for i, y0 in enumerate(range(0, ny, chunk_size)):
            for j, x0 in enumerate(range(0, nx, chunk_size)):
                ys, xs = slice(y0, y0 + y_chunks[i]), slice(x0, x0 + x_chunks[j])
                graph[(block_name, i, j)] = (_read_arrays, self, ys, xs)
        data_vars = {}
        for name, (dtype, attrs) in self.variables.items():
            var_name = f"{name}-{token}"
            var_graph = dict(graph)
            for i in range(len(y_chunks)):
                for j in range(len(x_chunks)):
                    var_graph[(var_name, 0, i, j)] = (operator.getitem, (block_name, i, j), name)
            array = da.Array(
                var_graph, var_name, ((len(self.days),), y_chunks, x_chunks), dtype=dtype
            )
            data_vars[name] = xr.DataArray(array, dims=("time", "y", "x"), attrs=attrs)
        coords = dict(xr_coords(self.tile))
        coords["time"] = self.days.astype("datetime64[ns]")
        return xr.Dataset(data_vars, coords=coords)

    def _close_thread_handles(self) -> None:
        """Close the files this thread opened (it opens them again if it reads again)."""
        handles = self._handles.open
        for src, _ in handles.values():
            src.close()
        handles.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for handles in self._all_handles:
                for src, _ in handles.values():
                    src.close()
                handles.clear()
            self._all_handles.clear()
        # a new one drops every thread's decode buffers (dask's threads outlive the reader)
        self._handles = _Handles()

    def __enter__(self) -> TaskReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kept(early: EarlyMask, t: int, y0: int, x0: int, ys: slice, xs: slice) -> bool:
    """``early.any_kept`` of observation ``t`` for a window given relative to ``(y0, x0)`` of its native window."""
    return early.any_kept(t, slice(y0 + ys.start, y0 + ys.stop), slice(x0 + xs.start, x0 + xs.stop))


def _kept_block_runs(
    src: RasterFile,
    row: int,
    col: int,
    r0: int,
    r1: int,
    c0: int,
    c1: int,
    kept: Callable[[slice, slice], bool] | None,
) -> list[tuple[int, int, int, int]] | None:
    """The parts of the file window ``[r0, r1) x [c0, c1)`` (file pixels; ``row, col``: the file pixel at the
    output's origin) worth decoding: runs of consecutive file blocks of a block row that hold a kept pixel, as
    ``(r0, r1, c0, c1)``. None: the whole window (no ``kept``, or every block keeps a pixel)."""
    if kept is None:
        return None
    bh, bw = src.block_shape
    runs = []
    every = True
    for block_row in range(r0 // bh, (r1 - 1) // bh + 1):
        ra, rb = max(r0, block_row * bh), min(r1, (block_row + 1) * bh)
        start = None
        for block_col in range(c0 // bw, (c1 - 1) // bw + 1):
            ca, cb = max(c0, block_col * bw), min(c1, (block_col + 1) * bw)
            if kept(slice(ra - row, rb - row), slice(ca - col, cb - col)):
                start = ca if start is None else start
                end = cb
                continue
            every = False
            if start is not None:
                runs.append((ra, rb, start, end))
                start = None
        if start is not None:
            runs.append((ra, rb, start, end))
    return None if every else runs


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _bands_view(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The arrays as one ``(m, ...)`` view when they are evenly spaced, in order, in one buffer (equal shapes,
    dtypes and strides, each C-contiguous); None otherwise."""
    first = arrays[0]
    if any(
        a.shape != first.shape or a.dtype != first.dtype or not a.flags.c_contiguous for a in arrays
    ):
        return None
    owner = _owner(first)
    if any(_owner(a) is not owner for a in arrays):
        return None
    starts = [a.__array_interface__["data"][0] for a in arrays]
    step = starts[1] - starts[0] if len(starts) > 1 else first.nbytes
    if step < first.nbytes or any(b - a != step for a, b in itertools.pairwise(starts)):
        return None
    return np.lib.stride_tricks.as_strided(
        first,
        shape=(len(arrays), *first.shape),
        strides=(step, *first.strides),
        writeable=all(a.flags.writeable for a in arrays),
    )


def _owner(array: np.ndarray) -> Any:
    """The object that owns an array's memory (the end of its chain of bases)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


def _fill_value(dtype: Any, attrs: Mapping[str, Any]) -> Any:
    """What a variable holds where no observation has data: its nodata, False for a mask, else 0."""
    nodata = attrs.get("nodata")
    return False if np.dtype(dtype).kind == "b" else (nodata if nodata is not None else 0)


def _fill_ring(image: np.ndarray, ys: slice, xs: slice, fill: Any) -> None:
    """``fill`` in ``image`` outside ``image[ys, xs]``."""
    image[: ys.start] = fill
    image[ys.stop :] = fill
    image[ys, : xs.start] = fill
    image[ys, xs.stop :] = fill


def _may_overlap(item: pystac.Item, band: str, window: Any) -> bool:
    """Whether the dataset's raster (``proj:shape`` and ``proj:transform``, native CRS) can overlap ``window``;
    True when the item does not say."""
    asset = item.assets.get(band)
    props = {**item.properties, **(asset.extra_fields if asset else {})}
    shape, transform = props.get("proj:shape"), props.get("proj:transform")
    if not shape or not transform or transform[1] or transform[3]:
        return True
    x0, y0 = transform[2], transform[5]
    x1, y1 = x0 + transform[0] * shape[1], y0 + transform[4] * shape[0]
    left, right, bottom, top = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    return (
        left < window.right and right > window.left and bottom < window.top and top > window.bottom
    )


def _read_arrays(reader: TaskReader, ys: slice, xs: slice) -> dict[str, np.ndarray]:
    block = reader.read(ys, xs)
    return {name: block[name].values for name in block.data_vars}


def load_task(
    items: Iterable[Mapping | pystac.Item],
    tile: GeoBox,
    plugin: StatsPlugin,
    *,
    chunk_size: int = 1024,
) -> xr.Dataset:
    """Lazy observations of a task on ``tile``: dims ``(time, y, x)``, one ``time`` per solar day, masked by ``plugin``.

    ``time`` values are solar dates. Spatial chunks are ``chunk_size`` pixels of the tile grid; computing a chunk
    reads, masks, fuses and reprojects that block (:class:`TaskReader`, two reading threads).
    """
    return TaskReader(items, tile, plugin).lazy(chunk_size)

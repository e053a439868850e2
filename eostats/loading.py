"""Load one task's observations onto its tile, in odc-stats' order: mask natively, fuse by solar day, reproject.

For each native CRS among the task's datasets, the datasets are read with odc-stac on a pixel grid aligned with
their own pixels (no resampling) that covers the tile plus a buffer; the plugin masks them there (morphology radii
are native pixels), observations of the same solar day are fused, and only then is the result reprojected to the
tile GeoBox. With datasets in several CRSs (UTM-zone overlap), the per-CRS results are fused once more on the tile.
Everything is lazy (dask), chunked spatially, so the caller computes one block of the tile at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import odc.stac
import pystac
import xarray as xr
from odc.geo import xy_
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.xr import xr_reproject

from eostats.plugins.base import StatsPlugin


class DatasetError(RuntimeError):
    """A dataset that cannot be used; the message names the dataset id and the reason."""


def _native_grid(item: pystac.Item, band: str) -> tuple[CRS, float, tuple[float, float]]:
    """CRS, pixel size (CRS units) and pixel-edge phase (x, y in [0, 1)) of a band's native grid."""
    asset = item.assets.get(band)
    props = {**item.properties, **(asset.extra_fields if asset else {})}
    code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
    transform = props.get("proj:transform")
    if code is None or transform is None:
        raise DatasetError(f"dataset {item.id}: band {band} has no proj:code/proj:epsg or proj:transform")
    res = float(transform[0])
    phase = ((transform[2] / res) % 1.0, (transform[5] / abs(transform[4])) % 1.0)
    return CRS(code), res, phase


def solar_day(time: datetime, lon: float) -> np.datetime64:
    """The local solar date of an observation at longitude ``lon`` (degrees east), as odc-stats groups by it."""
    local = time + timedelta(hours=lon * 24.0 / 360.0)
    return np.datetime64(local.date(), "D")


def _utc_naive(item: pystac.Item) -> datetime:
    when = item.datetime
    if when is None:
        raise DatasetError(f"dataset {item.id}: no datetime")
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def native_geobox(tile: GeoBox, crs: CRS, resolution: float, phase: tuple[float, float], buffer_pixels: int) -> GeoBox:
    """A GeoBox in ``crs`` on the datasets' own pixel grid that covers ``tile`` plus ``buffer_pixels``."""
    footprint = tile.extent.to_crs(crs).buffer(buffer_pixels * resolution)
    bbox = footprint.boundingbox
    return GeoBox.from_bbox(bbox, crs, resolution=resolution, anchor=xy_(*phase))


def _fuse_by_solar_day(xx: xr.Dataset, plugin: StatsPlugin) -> xr.Dataset:
    groups = []
    days = xx["solar_day"].values
    for day in np.unique(days):
        index = np.nonzero(days == day)[0]
        fused = plugin.fuse(xx.drop_vars("solar_day").isel(time=index))
        groups.append(fused.expand_dims(time=[day]))
    out = xr.concat(groups, dim="time", combine_attrs="override")
    return out


def _bool_to_uint8(xx: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    bools = [name for name, var in xx.data_vars.items() if var.dtype == bool]
    for name in bools:
        xx[name] = (xx[name].astype("uint8") * 255).assign_attrs(nodata=None)
    return xx, bools


def _uint8_to_bool(xx: xr.Dataset, bools: Iterable[str]) -> xr.Dataset:
    for name in bools:
        xx[name] = xx[name] > 127
    return xx


def load_task(
    items: Iterable[Mapping | pystac.Item],
    tile: GeoBox,
    plugin: StatsPlugin,
    *,
    chunk_size: int = 1024,
) -> xr.Dataset:
    """Lazy observations of a task on ``tile``: dims ``(time, y, x)``, one ``time`` per solar day, masked by ``plugin``.

    ``time`` values are solar dates. Spatial chunks are ``chunk_size`` pixels of the tile grid.
    """
    items = [it if isinstance(it, pystac.Item) else pystac.Item.from_dict(dict(it)) for it in items]
    bands = plugin.input_bands
    by_grid: dict[tuple, list[pystac.Item]] = defaultdict(list)
    for item in items:
        missing = [b for b in bands if b not in item.assets]
        if missing:
            raise DatasetError(f"dataset {item.id}: missing band(s) {', '.join(missing)}")
        crs, res, phase = _native_grid(item, bands[0])
        by_grid[(str(crs), res, round(phase[0], 6), round(phase[1], 6))].append(item)

    per_crs = []
    for (crs, res, px, py), group in sorted(by_grid.items()):
        gbox = native_geobox(tile, CRS(crs), res, (px, py), plugin.native_buffer_pixels)
        native_chunks = max(256, int(math.ceil(chunk_size * tile.resolution.x / res)))
        try:
            xx = odc.stac.load(
                group,
                bands=bands,
                geobox=gbox,
                groupby="id",
                chunks={"x": native_chunks, "y": native_chunks},
                resampling="nearest",
                preserve_original_order=True,
            )
        except Exception as err:  # odc-stac errors do not always name the item
            ids = ", ".join(it.id for it in group)
            raise DatasetError(f"cannot load datasets {ids}: {err}") from err
        lons = [Geometry(it.geometry, "EPSG:4326").centroid.coords[0][0] for it in group]
        days = [solar_day(_utc_naive(it), lon) for it, lon in zip(group, lons, strict=True)]
        xx = xx.assign_coords(solar_day=("time", np.array(days)))
        masked = plugin.native_transform(xx)
        masked["solar_day"] = xx["solar_day"]
        fused = _fuse_by_solar_day(masked, plugin)
        fused, bools = _bool_to_uint8(fused)
        on_tile = xr_reproject(fused, tile, resampling=plugin.resampling, chunks=(chunk_size, chunk_size))
        per_crs.append(_uint8_to_bool(on_tile, bools))

    if not per_crs:
        raise DatasetError("task has no datasets")
    if len(per_crs) == 1:
        out = per_crs[0]
    else:
        stacked = xr.concat(per_crs, dim="time", combine_attrs="override").sortby("time")
        stacked = stacked.assign_coords(solar_day=("time", stacked["time"].values))
        out = _fuse_by_solar_day(stacked, plugin)
    return out.chunk({"time": -1, "y": chunk_size, "x": chunk_size})

"""Deterministic task UUIDs, STAC items and ``.sha1`` checksum files of task outputs.

The STAC item of a task follows odc-stats' default (pystac) metadata, with these differences (docs/quirks.md):

- the ``self`` link ends in ``.stac-item.json``, the name the file is written under (odc-stats writes ``.json``);
- STAC 1.1 with the projection extension v2, so the CRS is ``proj:code`` (``"EPSG:3577"``) instead of
  ``proj:epsg``; ``proj:bbox`` is added and every asset carries the raster extension (``nodata``, ``data_type``);
- ``start_datetime``/``end_datetime`` (STAC common metadata) are written next to odc-stats' ``dtr:`` pair;
- assets are typed as cloud-optimized GeoTIFFs.

STAC extension schemas live on the web. :class:`OfflineStacValidator` validates the core item schema with the
copy shipped inside pystac and the projection/raster fields with small structural schemas written here, so
validation works without network access.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pystac.validation
from odc.geo.geobox import GeoBox
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from eostats.fileio import write_text_atomic
from eostats.layout import OutputProduct
from eostats.taskids import TaskId

__all__ = [
    "ODC_NAMESPACE",
    "BandInfo",
    "OfflineStacValidator",
    "build_stac_item",
    "task_uuid",
    "validate_stac_item",
    "verify_sha1",
    "write_sha1",
]

#: odc-stats' (odc-index's) namespace for deterministic dataset UUIDs
ODC_NAMESPACE = uuid.UUID("6f34c6f4-13d6-43c0-8e4e-42b6c13203af")

COG_MEDIA_TYPE = str(
    pystac.MediaType.COG
)  # image/tiff; application=geotiff; profile=cloud-optimized

#: decimal places of longitude/latitude in the item geometry (1e-9 degree is well below a millimetre)
_LONLAT_DECIMALS = 9


@dataclass(frozen=True)
class BandInfo:
    """One written measurement: numpy ``dtype`` name, ``nodata`` value, ``path`` relative to the STAC item."""

    dtype: str
    nodata: float | int | None
    path: str


def _normalised_source(source_id: Any) -> Any:
    """A dataset id as odc-stats sorts it: a ``uuid.UUID`` when it is one, else the string itself."""
    if isinstance(source_id, uuid.UUID):
        return source_id
    try:
        return uuid.UUID(str(source_id))
    except ValueError:
        return str(source_id)


def task_uuid(
    product_name: str,
    version: str,
    period: str,
    x: int,
    y: int,
    source_ids: Iterable[Any],
    *,
    deployment_id: str = "",
) -> uuid.UUID:
    """The output dataset UUID of a task, computed exactly as odc-stats does.

    ``uuid5(ODC_NAMESPACE, "\\n".join(lower-cased parts))`` with parts: product name, version, deployment id
    (empty), the sorted tags ``tile=(x, y)`` and ``time=<period>``, then the sorted source dataset UUIDs. The
    result does not depend on the order of ``source_ids`` nor on the case of the name (quirk Q10). Ids that are
    not UUIDs (e.g. plain STAC item ids) are used as strings, after the UUIDs.
    """
    tags = sorted([f"time={period}", f"tile={(int(x), int(y))}"])
    normalised = [_normalised_source(s) for s in source_ids]
    uuids = sorted(s for s in normalised if isinstance(s, uuid.UUID))
    others = sorted(s for s in normalised if not isinstance(s, uuid.UUID))
    parts = [str(product_name), str(version), str(deployment_id), *tags, *map(str, uuids), *others]
    return uuid.uuid5(ODC_NAMESPACE, "\n".join(p.lower() for p in parts))


# -- STAC item ---------------------------------------------------------------------------------------
def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    return _utc(t).isoformat().replace("+00:00", "Z")


def _json_nodata(nodata: float | int | None) -> float | int | str | None:
    """Raster-extension nodata: numbers as they are, NaN/±inf as the strings the extension defines."""
    if nodata is None:
        return None
    if isinstance(nodata, float | np.floating):
        if math.isnan(nodata):
            return "nan"
        if math.isinf(nodata):
            return "inf" if nodata > 0 else "-inf"
        return int(nodata) if float(nodata).is_integer() else float(nodata)
    return int(nodata)


def _round_coords(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, _LONLAT_DECIMALS)
    if isinstance(obj, list | tuple):
        return [_round_coords(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _round_coords(v) for k, v in obj.items()}
    return obj


def _period_bounds(period_range: Any, task: TaskId) -> tuple[datetime, datetime]:
    if period_range is None:
        from eostats.periods import parse_period

        period_range = parse_period(task.period)
    if hasattr(period_range, "start") and hasattr(period_range, "end"):
        return period_range.start, period_range.end
    start, end = period_range
    return start, end


def build_stac_item(
    product: OutputProduct,
    task: TaskId,
    geobox: GeoBox,
    bands: Mapping[str, BandInfo],
    source_ids: Sequence[Any],
    processing_datetime: datetime,
    period_range: Any = None,
    extra_properties: Mapping[str, Any] | None = None,
    *,
    self_href: str | None = None,
    deployment_id: str = "",
) -> dict[str, Any]:
    """The STAC 1.1 item of one task's outputs, as a JSON-able dict.

    - ``id``: :func:`task_uuid`; ``geometry``/``bbox``: the tile extent in EPSG:4326 (edges densified, split at
      the antimeridian if needed);
    - ``datetime``: period start; ``start_datetime``/``end_datetime`` and ``dtr:start_datetime``/
      ``dtr:end_datetime``: the period (``period_range``: a ``DateTimeRange``, a ``(start, end)`` pair of UTC
      datetimes, or None to parse ``task.period``);
    - properties: ``product.properties``, then ``extra_properties``, then the ``odc:`` fields (which win):
      product, dataset_version, region_code, product_family, producer, processing_datetime, file_format,
      lineage ``{"inputs": sorted source ids}``; projection fields of the tile grid (CRS units);
    - one asset per band: relative href ``BandInfo.path``, COG media type, role ``data``, raster nodata/data_type;
    - links: ``self`` (``self_href``, default ``product.stac_path(task)``, made absolute) and ``product_overview`` when
      ``product.collections_site`` is set.

    The same inputs give the same item, except ``odc:processing_datetime``.
    """
    start, end = _period_bounds(period_range, task)
    sources = sorted(str(_normalised_source(s)) for s in source_ids)
    item_id = task_uuid(
        product.name,
        product.version,
        task.period,
        task.x,
        task.y,
        sources,
        deployment_id=deployment_id,
    )

    footprint = geobox.footprint("epsg:4326", npoints=20, wrapdateline=True)
    geometry = _round_coords(footprint.json)
    bbox = _round_coords(list(footprint.boundingbox.bbox))

    properties: dict[str, Any] = {**dict(product.properties), **dict(extra_properties or {})}
    properties.update(
        {
            "start_datetime": _iso(start),
            "end_datetime": _iso(end),
            "dtr:start_datetime": _iso(start),
            "dtr:end_datetime": _iso(end),
            "odc:product": product.name,
            "odc:dataset_version": product.version,
            "odc:region_code": product.region_code(task.x, task.y),
            "odc:product_family": product.product_family,
            "odc:producer": product.producer,
            "odc:processing_datetime": _iso(processing_datetime),
            "odc:file_format": "GeoTIFF",
            "odc:lineage": {"inputs": sources},
        }
    )
    item = pystac.Item(
        id=str(item_id),
        geometry=geometry,
        bbox=bbox,
        datetime=_utc(start),
        properties=properties,
    )

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = geobox.crs
    epsg = crs.epsg if crs is not None else None
    affine = geobox.transform
    proj.apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        wkt2=crs.to_wkt() if crs is not None and epsg is None else None,
        shape=[int(geobox.shape.y), int(geobox.shape.x)],
        transform=[affine.a, affine.b, affine.c, affine.d, affine.e, affine.f],
        bbox=list(geobox.extent.boundingbox.bbox),
    )
    RasterExtension.add_to(item)
    for band, info in bands.items():
        item.add_asset(
            band,
            pystac.Asset(href=info.path, media_type=COG_MEDIA_TYPE, roles=["data"], title=band),
        )

    # pystac writes a self link as an absolute path (relative names are resolved against the working
    # directory); a location given as a URL stays as it is
    self_target = self_href if self_href is not None else product.stac_path(task)
    item.add_link(
        pystac.Link(rel=pystac.RelType.SELF, target=self_target, media_type=pystac.MediaType.JSON)
    )
    if product.product_overview_href:
        item.add_link(
            pystac.Link(
                rel="product_overview", target=product.product_overview_href, media_type="text/html"
            )
        )

    doc = item.to_dict(include_self_link=True, transform_hrefs=False)
    for band, info in bands.items():
        # written directly: pystac's RasterBand would keep NaN nodata as a float, which is not valid JSON
        dtype = np.dtype(info.dtype)
        data_type = "uint8" if dtype == np.bool_ else dtype.name
        raster_band: dict[str, Any] = {"data_type": data_type}
        if info.nodata is not None:
            raster_band["nodata"] = _json_nodata(info.nodata)
        doc["assets"][band]["raster:bands"] = [raster_band]
    return doc


# -- validation --------------------------------------------------------------------------------------
def _proj_schema() -> dict[str, Any]:
    number_array = {"type": "array", "items": {"type": "number"}}
    fields = {
        "type": "object",
        "properties": {
            "proj:code": {"type": ["string", "null"]},
            "proj:wkt2": {"type": ["string", "null"]},
            "proj:projjson": {"type": ["object", "null"]},
            "proj:geometry": {"type": "object", "required": ["type"]},
            "proj:bbox": {**number_array, "minItems": 4, "maxItems": 6},
            "proj:centroid": {"type": "object", "required": ["lat", "lon"]},
            "proj:shape": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 2,
                "maxItems": 2,
            },
            "proj:transform": {**number_array, "minItems": 6, "maxItems": 9},
        },
        # a misspelt proj: field is an error; other prefixes are other extensions' business
        "patternProperties": {"^(?!proj:)": {}},
        "additionalProperties": False,
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["properties", "assets"],
        "properties": {
            "properties": {
                "allOf": [fields, {"required": ["proj:code", "proj:shape", "proj:transform"]}]
            },
            "assets": {"type": "object", "additionalProperties": fields},
        },
    }


def _raster_schema() -> dict[str, Any]:
    data_types = [str(t) for t in pystac.extensions.raster.DataType]
    band = {
        "type": "object",
        "properties": {
            "nodata": {"oneOf": [{"type": "number"}, {"enum": ["nan", "inf", "-inf"]}]},
            "data_type": {"enum": data_types},
            "scale": {"type": "number"},
            "offset": {"type": "number"},
            "unit": {"type": "string"},
            "spatial_resolution": {"type": "number"},
            "bits_per_sample": {"type": "integer"},
            "sampling": {"enum": ["area", "point"]},
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["assets"],
        "properties": {
            "assets": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"raster:bands": {"type": "array", "minItems": 1, "items": band}},
                },
            }
        },
    }


class OfflineStacValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with no network access for the items eostats writes.

    The core STAC schemas come from pystac's bundled copies; the projection (v2) and raster (v1.1) extension
    URIs are answered with structural schemas defined in this module (field names and types, required
    projection fields), not the official ones, which are only published online.
    """

    def __init__(self) -> None:
        super().__init__()
        self.schema_cache[ProjectionExtension.get_schema_uri()] = _proj_schema()
        self.schema_cache[RasterExtension.get_schema_uri()] = _raster_schema()


def validate_stac_item(doc: Mapping[str, Any]) -> None:
    """Validate an item dict offline (core schema + projection/raster structure); raises on problems.

    Raises ``pystac.errors.STACValidationError`` for schema violations and ``ValueError`` for a self link or
    asset href that is not what eostats writes (relative asset hrefs, ``.stac-item.json`` self link).
    """
    # the raw dict is validated (pystac.Item.from_dict would silently repair e.g. a missing datetime)
    pystac.validation.validate_dict(copy.deepcopy(dict(doc)), validator=OfflineStacValidator())
    pystac.Item.from_dict(copy.deepcopy(dict(doc)), migrate=False)  # and it must parse as an item
    for name, asset in doc["assets"].items():
        href = asset["href"]
        if "://" in href or href.startswith("/"):
            raise ValueError(f"asset {name!r} has a non-relative href {href!r}")
    selfs = [link["href"] for link in doc.get("links", []) if link.get("rel") == "self"]
    if selfs and not selfs[0].endswith(".stac-item.json"):
        raise ValueError(f"self link {selfs[0]!r} does not end in .stac-item.json")


# -- checksums ---------------------------------------------------------------------------------------
def _sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sha1(path: Path | str, files: Iterable[Path | str]) -> None:
    """Write ``sha1  name`` lines (two spaces, ``sha1sum -c`` format) for ``files`` to ``path``, atomically.

    Names are relative to the directory of ``path`` (odc-stats lists bare file names); files outside it are a
    ``ValueError``. Lines are sorted by name so the file does not depend on the order of writing.
    """
    path = Path(path)
    base = path.parent.resolve()
    lines = []
    for file in files:
        full = Path(file).resolve()
        try:
            name = full.relative_to(base).as_posix()
        except ValueError:
            raise ValueError(f"{file} is not inside {base}, the directory of {path.name}") from None
        lines.append((name, _sha1_of(full)))
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(lines))
    write_text_atomic(path, text)


def verify_sha1(path: Path | str) -> list[str]:
    """Problems found checking a ``.sha1`` file against the files it lists (empty list = all match)."""
    path = Path(path)
    problems = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        target = path.parent / name
        if not sep:
            problems.append(f"malformed line {line!r}")
        elif not os.path.exists(target):
            problems.append(f"{name}: missing")
        elif _sha1_of(target) != digest:
            problems.append(f"{name}: checksum differs")
    return problems

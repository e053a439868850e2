"""odc-stats' product expressions, and fusing datasets of several products into one observation.

**Expressions** (``input_products``): ``a`` one product; ``a-b-c`` the union of several products (all their
datasets go into the same tasks: LS8 + LS9); ``a+b`` the fusion of products (FC + WO: one observation with the
bands of both). Runs of separators count as one and leading/trailing separators are ignored, as in odc-stats.
Mixed forms mean a union of fusions: ``a+b-c+d`` is (a fused with b) together with (c fused with d) — odc-stats
treats such mixtures inconsistently (docs/quirks.md).

**Fusing** (:func:`fuse_records`): datasets of the products of one ``+`` term are grouped by
``(center_time, region_code)``. A group becomes one fused dataset when every product is present, except

- ``optional`` products, which may be missing;
- ``ignore_time`` products (a DEM), which are matched by region code alone and join every time group of their
  region.

A fused dataset (product ``fused__a__b``) has:

- ``id``: ``uuid5(ODC_NAMESPACE, "fused__a__b\\n0.0.0\\n<sorted member ids>")`` — deterministic;
- the union of the members' measurements, with absolute paths (band names must not clash);
- the members' grids; a grid name used by two members for different grids is renamed ``<product>__<grid>``;
- ``crs``, ``datetime`` and ``odc:region_code`` of the group (members must share the CRS);
- the properties on which all time-bound members agree, and ``fused: "True"``;
- ``geometry``: the union of the time-bound members' footprints (an ignore-time DEM does not widen it);
- ``lineage``: ``{member product: [member id]}``, so outputs trace back to the indexed datasets.

When a product has two datasets in one group (a reprocessed scene indexed twice), the one processed last
(``odc:processing_datetime``, then id) is used.

Records are plain mappings so that fusing works the same for datasets from an index, an odc-stats cache or tests:
``DatasetRecord(product, doc, uri)`` with the eo3 ``doc``.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eostats.metadata import ODC_NAMESPACE

_SEPARATORS = re.compile(r"[-+]+")


class FusingError(ValueError):
    """Datasets that cannot be fused; the message names them."""


@dataclass(frozen=True)
class ProductExpression:
    """A parsed ``input_products`` expression: a union of terms, each a fusion of one or more products."""

    terms: tuple[tuple[str, ...], ...]
    text: str = ""

    @property
    def products(self) -> tuple[str, ...]:
        """Every product named, in order of first appearance."""
        return tuple(dict.fromkeys(p for term in self.terms for p in term))

    @property
    def is_fused(self) -> bool:
        return any(len(term) > 1 for term in self.terms)

    def term_name(self, term: Sequence[str]) -> str:
        """The product name of a term's datasets: the product itself, or ``fused__a__b``."""
        return term[0] if len(term) == 1 else fused_product_name(term)

    def __str__(self) -> str:
        return "-".join("+".join(term) for term in self.terms)


def fused_product_name(products: Sequence[str]) -> str:
    return "fused__" + "__".join(products)


def parse_products(text: str | Sequence[str]) -> ProductExpression:
    """Parse ``a``, ``a+b``, ``a-b-c`` (odc-stats) or a list of product names (a union).

    Raises ValueError for an empty expression or a product repeated within a fusion.
    """
    if not isinstance(text, str):
        names = [str(t).strip() for t in text if str(t).strip()]
        if not names:
            raise ValueError("input_products is empty")
        return ProductExpression(tuple((n,) for n in dict.fromkeys(names)), "-".join(names))
    stripped = text.strip().strip("+-")
    if not stripped:
        raise ValueError(f"input_products {text!r} names no product")
    terms: list[tuple[str, ...]] = []
    # '-' separates union terms; within a term '+' fuses (runs of separators count as one)
    for raw_term in re.split(r"-+", stripped):
        names = tuple(n for n in (s.strip() for s in re.split(r"\++", raw_term)) if n)
        if not names:
            continue
        if len(set(names)) != len(names):
            raise ValueError(f"input_products {text!r}: a product is fused with itself")
        if names not in terms:
            terms.append(names)
    for name in (n for term in terms for n in term):
        if not re.fullmatch(r"[A-Za-z0-9_.:]+", name):
            raise ValueError(f"input_products {text!r}: {name!r} is not a product name")
    return ProductExpression(tuple(terms), text)


@dataclass
class DatasetRecord:
    """One dataset: its product name, eo3 document and location (URI of the document, for relative paths)."""

    product: str
    doc: dict
    uri: str | None = None
    sources: list[DatasetRecord] = field(default_factory=list)  # members, for a fused record

    @property
    def id(self) -> str:
        return str(self.doc["id"])


@dataclass
class FuseSummary:
    """How many groups were fused, and how many dropped for a missing product (by product name)."""

    fused: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T", 1))
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def center_time(doc: Mapping[str, Any]) -> datetime:
    """datacube's ``center_time`` of an eo3 document: ``datetime``, else the middle of ``dtr:`` start/end (UTC)."""
    props = doc.get("properties") or {}
    if props.get("datetime"):
        return _parse_time(props["datetime"])
    start, end = props.get("dtr:start_datetime"), props.get("dtr:end_datetime")
    if start and end:
        t0, t1 = _parse_time(start), _parse_time(end)
        return t0 + (t1 - t0) / 2
    raise FusingError(f"dataset {doc.get('id')}: no datetime")


def region_code(doc: Mapping[str, Any]) -> str | None:
    return (doc.get("properties") or {}).get("odc:region_code")


def _absolute(path: str, uri: str | None) -> str:
    if uri is None or "://" in path or path.startswith("/"):
        return path
    from datacube.utils.uris import uri_resolve

    return uri_resolve(uri, path)


def _same_grid(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if list(a.get("shape", [])) != list(b.get("shape", [])):
        return False
    ta, tb = list(a.get("transform", []))[:6], list(b.get("transform", []))[:6]
    return len(ta) == len(tb) and all(
        abs(float(x) - float(y)) < 1e-9 for x, y in zip(ta, tb, strict=True)
    )


def _union_geometry(docs: Sequence[Mapping[str, Any]]) -> dict | None:
    geoms = [d["geometry"] for d in docs if d.get("geometry")]
    if not geoms:
        return None
    if len(geoms) == 1:
        return geoms[0]
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    return mapping(unary_union([shape(g) for g in geoms]))


def fuse_group(
    products: Sequence[str], members: Sequence[DatasetRecord], time_bound: Sequence[DatasetRecord]
) -> DatasetRecord:
    """One fused record of ``members`` (in ``products`` order); ``time_bound``: members that carry the time."""
    name = fused_product_name(products)
    crs = {str(m.doc.get("crs", "")).lower() for m in members}
    if len(crs) != 1:
        raise FusingError(
            f"cannot fuse datasets {', '.join(m.id for m in members)}: different CRSs {sorted(crs)}"
        )
    formats = {(m.doc.get("properties") or {}).get("odc:file_format") for m in members} - {None}
    if len(formats) > 1:
        raise FusingError(
            f"cannot fuse datasets {', '.join(m.id for m in members)}: file formats {sorted(formats)}"
        )
    grids: dict[str, dict] = {}
    measurements: dict[str, dict] = {}
    for member in members:
        renamed: dict[str, str] = {}
        for grid_name, grid in (member.doc.get("grids") or {}).items():
            if grid_name in grids and not _same_grid(grids[grid_name], grid):
                new_name = f"{member.product}__{grid_name}"
                renamed[grid_name] = new_name
                grids[new_name] = dict(grid)
            else:
                grids.setdefault(grid_name, dict(grid))
        for band, spec in (member.doc.get("measurements") or {}).items():
            if band in measurements:
                raise FusingError(
                    f"cannot fuse products {' + '.join(products)}: band {band!r} is in more than one of them"
                )
            spec = dict(spec)
            spec["path"] = _absolute(spec["path"], member.uri)
            if spec.get("grid", "default") in renamed:
                spec["grid"] = renamed[spec.get("grid", "default")]
            measurements[band] = spec
    anchor_props = [dict(m.doc.get("properties") or {}) for m in time_bound]
    properties = {
        key: value
        for key, value in anchor_props[0].items()
        if all(p.get(key) == value for p in anchor_props[1:])
    }
    properties["datetime"] = (
        time_bound[0].doc["properties"].get("datetime")
        or center_time(time_bound[0].doc).isoformat()
    )
    properties["odc:product"] = name
    properties["fused"] = "True"
    member_ids = sorted(m.id for m in members)
    fused_id = uuid.uuid5(ODC_NAMESPACE, "\n".join([name, "0.0.0", *member_ids]))
    label = str(time_bound[0].doc.get("label") or time_bound[0].id)
    doc = {
        "$schema": time_bound[0].doc.get("$schema", "https://schemas.opendatacube.org/dataset"),
        "id": str(fused_id),
        "label": label.replace(time_bound[0].product, name)
        if time_bound[0].product in label
        else f"{name}_{label}",
        "product": {"name": name},
        "crs": members[0].doc.get("crs"),
        "geometry": _union_geometry([m.doc for m in time_bound]),
        "grids": grids,
        "properties": properties,
        "measurements": measurements,
        "accessories": {},
        "lineage": {m.product: [m.id] for m in members},
    }
    if doc["geometry"] is None:
        del doc["geometry"]
    return DatasetRecord(name, doc, None, list(members))


def _latest(records: Sequence[DatasetRecord]) -> DatasetRecord:
    def key(r: DatasetRecord) -> tuple[str, str]:
        return (str((r.doc.get("properties") or {}).get("odc:processing_datetime") or ""), r.id)

    return max(records, key=key)


def fuse_records(
    products: Sequence[str],
    records: Iterable[DatasetRecord],
    *,
    optional: Iterable[str] = (),
    ignore_time: Iterable[str] = (),
    summary: FuseSummary | None = None,
) -> list[DatasetRecord]:
    """Fuse the datasets of ``products`` (one ``+`` term) by ``(center_time, region_code)``.

    Returns fused records sorted by (time, region code). ``summary`` (if given) counts fused and dropped groups.
    """
    products = list(products)
    optional = set(optional)
    ignore_time = set(ignore_time) & set(products)
    timed = [p for p in products if p not in ignore_time]
    if not timed:
        raise FusingError(f"cannot fuse {' + '.join(products)}: every product ignores time")
    summary = summary if summary is not None else FuseSummary()
    groups: dict[tuple[datetime, str | None], dict[str, list[DatasetRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    timeless: dict[str | None, dict[str, list[DatasetRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        if record.product in ignore_time:
            timeless[region_code(record.doc)][record.product].append(record)
        elif record.product in products:
            groups[(center_time(record.doc), region_code(record.doc))][record.product].append(
                record
            )
    out: list[DatasetRecord] = []
    for (_, region), by_product in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        members: list[DatasetRecord] = []
        missing: list[str] = []
        for product in products:
            found = (
                (timeless.get(region) or {}).get(product)
                if product in ignore_time
                else by_product.get(product)
            )
            if found:
                if len(found) > 1:
                    summary.duplicates += len(found) - 1
                members.append(_latest(found))
            elif product not in optional:
                missing.append(product)
        if missing:
            for product in missing:
                summary.dropped[product] = summary.dropped.get(product, 0) + 1
            continue
        time_bound = [m for m in members if m.product not in ignore_time]
        out.append(fuse_group(products, members, time_bound))
        summary.fused += 1
    return out

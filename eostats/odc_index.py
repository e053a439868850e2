"""The Open Data Cube index as a source: datasets found with the datacube API, stored as STAC items in the cache.

Source mapping (``source:`` in the config; odc-stats' top-level save-tasks keys fill in what it lacks)::

    source:
      type: datacube
      input_products: ga_ls8c_ard_3-ga_ls9c_ard_3     # a | a+b (fuse) | a-b-c (union), see eostats.fusing
      env: default              # datacube environment name (else $ODC_ENVIRONMENT, else "default")
      config: /path/datacube.conf   # else datacube's own search: $ODC_CONFIG, $ODC_CONFIG_PATH, ~/.datacube.conf, ...
      gqa: 1                    # keep datasets with gqa:iterative_mean_xy <= 1
      dataset_filter: {dataset_maturity: final}   # extra datacube search terms (a mapping or JSON text)
      ignore_time: [dem_product]                  # matched by region code only (fusing)
      optional_products: [wo_product]             # may be missing from a fused group

The connection is chosen the datacube way: ``datacube.conf`` files, ``$ODC_<ENV>_DB_URL`` and friends, a named
environment. Nothing else is stored about it.

**Search** (:func:`find_records`), as odc-stats' save-tasks: one ``dc.find_datasets`` per product and per calendar
year window, over the temporal range (or the configured years) padded by 0.6 day on each side, so datasets that
fall into the period only after the solar-day shift are found; without a range, over the product's whole time
extent, year by year. Datasets on a window boundary come back twice and are kept once. ``tiles`` limits the search
to the polygon of the tile range. Within a window, datasets are ordered by ``(center_time, region_code)``.
``ignore_time`` products are searched once over 1970–2038.

**Filters**: ``gqa`` (a dataset without ``gqa:iterative_mean_xy`` is dropped; odc-stats fails on it),
``dataset_filter`` (datacube search terms, applied by the index), the tile range, the time range; at run time
:func:`dataset_filters_predicate` (odc-stats' ``dataset_filters``).

**Storage**: each dataset (fused or not) becomes a STAC item with datacube's ``ds2stac`` (geometry in EPSG:4326,
assets with absolute hrefs and per-asset projection, id = the dataset UUID, ``collection`` = product, ``title`` =
label), so the cache and the tile jobs stay STAC-based. The item also carries the full eo3 record as a foreign
member ``"odc:eo3": {"product", "uris", "metadata"}`` (odc-dscache's layout), and the cache's settings hold the
product definitions (``odc_products``), so tile jobs never need the database and eo3 lineage is exact.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eostats.fusing import (
    DatasetRecord,
    FuseSummary,
    ProductExpression,
    center_time,
    fuse_records,
    fused_product_name,
    parse_products,
    region_code,
)
from eostats.grids import TileGrid
from eostats.periods import PeriodBinning, parse_period

log = logging.getLogger("eostats.odc_index")

#: odc-stats pads the temporal range by this much on each side before searching
SEARCH_PADDING = timedelta(days=0.6)
#: the search window of ignore-time products (odc-stats: 1970–2038)
TIMELESS_RANGE = (datetime(1970, 1, 1), datetime(2038, 1, 1))
#: odc-stats' save-tasks keys that describe a datacube source (top-level keys of its YAML)
SAVE_TASKS_SOURCE_KEYS = (
    "input_products",
    "gqa",
    "dataset_filter",
    "ignore_time",
    "optional_products",
)
EMBEDDED_KEY = "odc:eo3"


class DatacubeSourceError(ValueError):
    """A datacube source that cannot be used; the message names the product, option or environment."""


# --------------------------------------------------------------------------------------------
# source description


@dataclass(frozen=True)
class DatacubeSource:
    """A validated ``{type: datacube, ...}`` source."""

    products: ProductExpression
    env: str | None = None
    config: str | tuple[str, ...] | None = None
    gqa: float | None = None
    dataset_filter: Mapping[str, Any] = field(default_factory=dict)
    ignore_time: tuple[str, ...] = ()
    optional_products: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, source: Mapping[str, Any]) -> DatacubeSource:
        products = source.get("input_products", source.get("products"))
        if not products:
            raise DatacubeSourceError(
                "a datacube source needs input_products (a, a+b to fuse, a-b-c for a union)"
            )
        try:
            expression = parse_products(products)
        except ValueError as err:
            raise DatacubeSourceError(str(err)) from None
        config = source.get("config")
        if isinstance(config, list):
            config = tuple(str(c) for c in config)
        return cls(
            products=expression,
            env=source.get("env"),
            config=config,
            gqa=float(source["gqa"]) if source.get("gqa") is not None else None,
            dataset_filter=parse_dataset_filter(source.get("dataset_filter")),
            ignore_time=tuple(_names(source.get("ignore_time"))),
            optional_products=tuple(_names(source.get("optional_products"))),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The JSON-able source mapping (stored in the cache)."""
        out: dict[str, Any] = {"type": "datacube", "input_products": str(self.products)}
        if self.env:
            out["env"] = self.env
        if self.config:
            out["config"] = list(self.config) if isinstance(self.config, tuple) else self.config
        if self.gqa is not None:
            out["gqa"] = self.gqa
        if self.dataset_filter:
            out["dataset_filter"] = dict(self.dataset_filter)
        if self.ignore_time:
            out["ignore_time"] = list(self.ignore_time)
        if self.optional_products:
            out["optional_products"] = list(self.optional_products)
        return out


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    return [str(v) for v in value]


def parse_dataset_filter(value: Any) -> dict[str, Any]:
    """``dataset_filter`` as a mapping: given as one, or as JSON text (odc-stats' ``--dataset-filter``)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError) as err:
        raise DatacubeSourceError(f"dataset_filter {value!r} is not a JSON object: {err}") from None
    if not isinstance(parsed, dict):
        raise DatacubeSourceError(f"dataset_filter {value!r} is not a JSON object")
    return parsed


def merge_save_tasks_keys(source: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The source mapping with odc-stats' top-level save-tasks keys of ``config`` filled in where it has none."""
    merged = dict(source)
    for key in SAVE_TASKS_SOURCE_KEYS:
        if merged.get(key) in (None, "", [], {}) and config.get(key) not in (None, "", [], {}):
            merged[key] = config[key]
    return merged


# --------------------------------------------------------------------------------------------
# connection


def connect(source: DatacubeSource, app: str = "eostats"):
    """A ``datacube.Datacube`` for the source's environment (datacube's own config search when unset)."""
    from datacube import Datacube

    try:
        config = list(source.config) if isinstance(source.config, tuple) else source.config
        return Datacube(config=config or None, env=source.env or None, app=app)
    except Exception as err:  # datacube raises several config and connection errors
        where = f"environment {source.env!r}" if source.env else "the default datacube environment"
        raise DatacubeSourceError(
            f"cannot connect to {where}: {type(err).__name__}: {err}"
        ) from None


def product_definitions(dc: Any, source: DatacubeSource) -> dict[str, dict]:
    """Definitions of every product of the expression, plus the synthetic ``fused__a__b`` ones."""
    out: dict[str, dict] = {}
    for name in source.products.products:
        product = dc.index.products.get_by_name(name)
        if product is None:
            known = sorted(p.name for p in dc.index.products.get_all())
            raise DatacubeSourceError(
                f"product {name!r} is not in the datacube index; known products: {', '.join(known) or 'none'}"
            )
        out[name] = dict(product.definition)
    for term in source.products.terms:
        if len(term) > 1:
            out[fused_product_name(term)] = fused_product_definition(term, [out[p] for p in term])
    return out


def fused_product_definition(
    products: Sequence[str], definitions: Sequence[Mapping[str, Any]]
) -> dict:
    """The eo3 product definition of fused datasets: the union of the members' measurements."""
    measurements: list[dict] = []
    seen: set[str] = set()
    for definition in definitions:
        for m in definition.get("measurements") or []:
            if m["name"] in seen:
                raise DatacubeSourceError(
                    f"cannot fuse products {' + '.join(products)}: band {m['name']!r} is in more than one of them"
                )
            seen.add(m["name"])
            measurements.append(dict(m))
    name = fused_product_name(products)
    return {
        "name": name,
        "description": f"datasets of {' + '.join(products)} fused by time and region code",
        "metadata_type": "eo3",
        "metadata": {"product": {"name": name}},
        "measurements": measurements,
    }


# --------------------------------------------------------------------------------------------
# search


def _padded(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    return start - SEARCH_PADDING, end + SEARCH_PADDING


def search_ranges(binning: PeriodBinning | None) -> list[tuple[datetime, datetime]] | None:
    """The padded time ranges to search (naive UTC), merged when they overlap; None: the whole time extent."""
    if binning is None:
        return None
    if binning.temporal_range is not None:
        ranges = [_padded(binning.temporal_range.start, binning.temporal_range.end)]
    elif binning.years:
        ranges = [
            _padded(parse_period(f"{y:04d}--P1Y").start, parse_period(f"{y:04d}--P1Y").end)
            for y in binning.years
        ]
    else:
        return None
    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def year_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut at calendar-year boundaries (each window closed; neighbours share the boundary)."""
    windows = []
    t = start
    while t < end:
        boundary = datetime(t.year + 1, 1, 1)
        windows.append((t, min(boundary, end)))
        t = boundary
    return windows or [(start, end)]


def tile_range_polygon(grid: TileGrid, tiles: str | None):
    """The polygon (grid CRS) of a closed ``x0:x1,y0:y1`` tile range; None when unset or open on a side."""
    if not tiles:
        return None
    from odc.geo.geom import box

    from eostats.cache import parse_tile_range

    x0, x1, y0, y1 = parse_tile_range(tiles)
    if None in (x0, x1, y0, y1):
        return None
    (ox, oy), (tx, ty) = grid.origin_xy, grid.tile_size_xy
    return box(ox + x0 * tx, oy + y0 * ty, ox + x1 * tx, oy + y1 * ty, grid.crs)


def _record(ds: Any) -> DatasetRecord:
    from eostats.eo3 import _plain

    return DatasetRecord(ds.product.name, _plain(ds.metadata_doc), ds.uri)


def _gqa_ok(record: DatasetRecord, gqa: float | None) -> bool:
    if gqa is None:
        return True
    value = (record.doc.get("properties") or {}).get("gqa:iterative_mean_xy")
    try:
        return value is not None and float(value) <= gqa
    except (TypeError, ValueError):
        return False


@dataclass
class SearchSummary:
    """Counts of one search: datasets found per product, dropped by gqa, fused groups."""

    found: dict[str, int] = field(default_factory=dict)
    gqa_dropped: int = 0
    fuse: FuseSummary = field(default_factory=FuseSummary)


def find_records(
    dc: Any,
    source: DatacubeSource,
    *,
    binning: PeriodBinning | None = None,
    grid: TileGrid | None = None,
    tiles: str | None = None,
    summary: SearchSummary | None = None,
) -> Iterator[DatasetRecord]:
    """The source's datasets (fused where the expression says so), one year window at a time.

    Each dataset is yielded once. See the module docstring for windows, padding and filters.
    """
    summary = summary if summary is not None else SearchSummary()
    product_definitions(dc, source)  # an unknown product is an error, not an empty search
    query: dict[str, Any] = dict(source.dataset_filter)
    polygon = tile_range_polygon(grid, tiles) if grid is not None else None
    if polygon is not None:
        query["geopolygon"] = polygon
    ignore_time = set(source.ignore_time)
    timeless_records: list[DatasetRecord] = []
    for product in sorted(ignore_time & set(source.products.products)):
        found = dc.find_datasets(product=product, time=TIMELESS_RANGE, **query)
        summary.found[product] = summary.found.get(product, 0) + len(found)
        timeless_records += [_record(ds) for ds in found]

    ranges = search_ranges(binning)
    timed_products = [p for p in source.products.products if p not in ignore_time]
    if ranges is None:
        ranges = []
        for product in timed_products:
            try:
                first, last = dc.index.products.temporal_extent(product)
            except (KeyError, RuntimeError, ValueError):
                continue  # no datasets
            ranges.append((_naive(first), _naive(last)))
        if not ranges:
            return
        ranges = [(min(r[0] for r in ranges), max(r[1] for r in ranges))]
    windows = [w for start, end in ranges for w in year_windows(start, end)]

    seen: set[str] = set()
    for start, end in windows:
        per_product: dict[str, list[DatasetRecord]] = {}
        for product in timed_products:
            found = dc.find_datasets(product=product, time=(start, end), **query)
            records = [_record(ds) for ds in found]
            kept = [r for r in records if _gqa_ok(r, source.gqa)]
            summary.gqa_dropped += len(records) - len(kept)
            per_product[product] = kept
        window_records: list[DatasetRecord] = []
        for term in source.products.terms:
            if len(term) == 1:
                window_records += per_product.get(term[0], []) if term[0] not in ignore_time else []
                continue
            members = [r for p in term if p not in ignore_time for r in per_product.get(p, [])]
            window_records += fuse_records(
                term,
                members + [r for r in timeless_records if r.product in term],
                optional=source.optional_products,
                ignore_time=ignore_time,
                summary=summary.fuse,
            )
        window_records.sort(key=lambda r: (center_time(r.doc), region_code(r.doc) or "", r.id))
        for record in window_records:
            if record.id in seen:
                continue
            seen.add(record.id)
            if not record.sources:
                summary.found[record.product] = summary.found.get(record.product, 0) + 1
            yield record


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# --------------------------------------------------------------------------------------------
# eo3 → STAC


def _metadata_type(dc: Any | None = None):
    from datacube.index.abstract import default_metadata_type_docs
    from datacube.model import metadata_from_doc

    if dc is not None:
        found = dc.index.metadata_types.get_by_name("eo3")
        if found is not None:
            return found
    doc = next(d for d in default_metadata_type_docs() if d["name"] == "eo3")
    return metadata_from_doc(doc)


def record_to_stac(
    record: DatasetRecord, definition: Mapping[str, Any], metadata_type: Any
) -> dict:
    """The STAC item (dict) of an eo3 record, with the record embedded under ``"odc:eo3"``."""
    from datacube.index.eo3 import prep_eo3
    from datacube.metadata import ds2stac
    from datacube.model import Dataset, Product

    product = Product(metadata_type, dict(definition))
    doc = dict(record.doc)
    if (
        "grid_spatial" not in doc
    ):  # documents made here (fused ones) lack the fields the index derives
        doc = prep_eo3(doc)
    dataset = Dataset(product, doc, uri=record.uri)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # ds2stac warns about the links it cannot make without a web address
        item = ds2stac(dataset).to_dict(include_self_link=False, transform_hrefs=False)
    item["collection"] = record.product
    item.setdefault("links", [])
    item[EMBEDDED_KEY] = {
        "product": record.product,
        "uris": [record.uri] if record.uri else [],
        "metadata": record.doc,
    }
    return item


def embedded_record(item: Mapping[str, Any]) -> DatasetRecord | None:
    """The eo3 record a cache item carries (None for items from STAC sources)."""
    embedded = item.get(EMBEDDED_KEY)
    if not embedded:
        return None
    uris = embedded.get("uris") or []
    return DatasetRecord(embedded["product"], embedded["metadata"], uris[0] if uris else None)


# --------------------------------------------------------------------------------------------
# the source, end to end


@dataclass
class DatacubeItems:
    """STAC items of a datacube source, streamed; ``products`` and ``summary`` are filled while streaming."""

    source: DatacubeSource
    binning: PeriodBinning | None = None
    grid: TileGrid | None = None
    tiles: str | None = None
    products: dict[str, dict] = field(default_factory=dict)
    summary: SearchSummary = field(default_factory=SearchSummary)

    def __iter__(self) -> Iterator[dict]:
        dc = connect(self.source)
        try:
            self.products.update(product_definitions(dc, self.source))
            metadata_type = _metadata_type(dc)
            for record in find_records(
                dc,
                self.source,
                binning=self.binning,
                grid=self.grid,
                tiles=self.tiles,
                summary=self.summary,
            ):
                yield record_to_stac(record, self.products[record.product], metadata_type)
        finally:
            dc.close()


def read_datacube_items(source: Mapping[str, Any]) -> Iterator[dict]:
    """``eostats.sources.read_items`` for ``{type: datacube}``: every dataset over the products' time extent.

    The source is checked at once; the index is contacted when iteration starts.
    """
    return iter(DatacubeItems(DatacubeSource.from_mapping(source)))


def build_datacube_cache(
    source: Mapping[str, Any],
    grid: TileGrid,
    binning: PeriodBinning,
    path: Path | str,
    settings: Mapping[str, Any],
):
    """Build the dataset cache of a datacube source (the cache rule and ``eostats save-tasks`` both call this).

    The search is limited to the binning's padded time range and the settings' ``tiles``; the product definitions
    go into the cache's settings as ``odc_products``. Returns the :class:`eostats.cache.CacheSummary`.
    """
    from eostats.cache import build_cache

    parsed = DatacubeSource.from_mapping(source)
    items = DatacubeItems(parsed, binning=binning, grid=grid, tiles=settings.get("tiles"))
    # definitions are needed in the settings before the build starts: fetch them first
    dc = connect(parsed)
    try:
        items.products.update(product_definitions(dc, parsed))
    finally:
        dc.close()
    stored_settings = {**dict(settings), "odc_products": dict(items.products)}
    summary = build_cache(
        iter(items), grid, binning, Path(path), parsed.to_mapping(), stored_settings
    )
    log.info(
        "datacube search: %s found, %d dropped by gqa, %d fused groups, dropped groups %s",
        items.summary.found,
        items.summary.gqa_dropped,
        items.summary.fuse.fused,
        items.summary.fuse.dropped or "none",
    )
    return summary


# --------------------------------------------------------------------------------------------
# run-time filters (odc-stats' dataset_filters)


def dataset_filters_predicate(value: Any) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate on STAC items from odc-stats' ``dataset_filters``; None when there is no filter.

    ``value``: one JSON object or several joined by ``|`` (a string), a mapping, or a list of mappings. An item
    passes when it matches any object; it matches an object when every key matches: ``datetime`` takes a period
    label (``2020-01--P3M``) that must contain the item's time, other keys need an equal property value (the
    property as in the STAC item, or its eo3 name in the embedded document).
    """
    if value in (None, "", [], {}):
        return None
    if isinstance(value, Mapping):
        alternatives = [dict(value)]
    elif isinstance(value, list):
        alternatives = [dict(v) for v in value]
    else:
        alternatives = []
        for part in str(value).split("|"):
            try:
                parsed = json.loads(part)
            except ValueError as err:
                raise ValueError(f"dataset_filters {part!r} is not a JSON object: {err}") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"dataset_filters {part!r} is not a JSON object")
            alternatives.append(parsed)
    periods = {}
    for alt in alternatives:
        if "datetime" in alt:
            periods[alt["datetime"]] = parse_period(str(alt["datetime"]))

    def matches(item: Mapping[str, Any], alt: Mapping[str, Any]) -> bool:
        props = item.get("properties") or {}
        eo3_props = ((item.get(EMBEDDED_KEY) or {}).get("metadata") or {}).get("properties") or {}
        for key, wanted in alt.items():
            if key == "datetime":
                t = center_time({"id": item.get("id"), "properties": props})
                if t not in periods[wanted]:
                    return False
            elif props.get(key, eo3_props.get(key)) != wanted:
                return False
        return True

    return lambda item: any(matches(item, alt) for alt in alternatives)


def filter_items(
    items: Iterable[Mapping[str, Any]], dataset_filters: Any
) -> list[Mapping[str, Any]]:
    """``items`` that pass ``dataset_filters`` (all of them when there is no filter)."""
    keep = dataset_filters_predicate(dataset_filters)
    items = list(items)
    return items if keep is None else [it for it in items if keep(it)]


def task_items(run: Any, cache: Any, task: Any) -> list[Mapping[str, Any]]:
    """A task's items from the cache that pass the run's ``dataset_filters`` and are not among its excluded
    datasets (``exclude_datasets``, ``exclude_datasets_file``): the tile job's input list."""
    excluded = run.excluded_datasets
    items = [doc for doc in cache.datasets(task) if str(doc.get("id")) not in excluded]
    return filter_items(items, run.config.get("dataset_filters"))

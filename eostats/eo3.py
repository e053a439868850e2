"""eo3 documents: the Open Data Cube's dataset format, in both directions.

**Outputs** (``apply_eodatasets3: true``, odc-stats' option name): beside a task's STAC item, two YAML files make
the tile indexable with ``datacube dataset add``:

``{prefix}.proc-info.yaml``
    how it was made: software versions (eostats, the plugin), input products, the product settings and the plugin
    config.
``{prefix}.odc-metadata.yaml``
    the eo3 dataset document. Its ``id`` is the STAC item's id (the deterministic task UUID); ``crs`` and the
    ``default`` grid are the tile's pixel grid (grid CRS units); ``geometry`` is the whole tile in the grid CRS;
    measurement paths are the COG file names (relative to the document); ``lineage`` lists the source dataset
    UUIDs under the product's ``classifier`` (default ``level3``, as odc-stats). Properties: the period
    (``datetime`` = period start, ``dtr:start_datetime``/``dtr:end_datetime``), ``odc:`` naming fields,
    ``dea:dataset_maturity`` when the product has a maturity, and the properties every source agrees on (minus
    per-scene fields and ``inherit_skip_properties``); ``eo:platform`` is the sorted distinct platforms joined
    by ``,`` and ``eo:instrument`` the sorted distinct instruments joined by ``_``, as odc-stats does.

:func:`output_product_definition` is the matching product definition (``datacube product add``): one measurement
per plugin output band with its dtype and nodata, so ``dc.load`` returns exactly the COG values.

Write order inside the task directory, as odc-stats: COGs, ``.sha1``, proc-info, odc-metadata, STAC item last.

**Inputs**: :func:`eo3_from_stac_items` turns STAC items (a static catalog, the sample) into product definitions
and eo3 dataset documents with datacube's own converter (``datacube.metadata.stac2ds``), so a STAC collection can
be indexed into a datacube; each document's ``label`` is the STAC item id.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from odc.geo.geobox import GeoBox

from eostats.fileio import write_text_atomic
from eostats.layout import OutputProduct
from eostats.taskids import TaskId

EO3_SCHEMA = "https://schemas.opendatacube.org/dataset"

#: per-scene properties that a statistic over many scenes does not inherit (prefixes end in ":")
NOT_INHERITED = (
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "title",
    "odc:",
    "dtr:",
    "proj:",
    "eo:cloud_cover",
    "eo:gsd",
    "gsd",
    "fmask:",
    "gqa:",
    "landsat:",
    "sentinel:",
    "s2:",
    "sat:",
    "view:",
    "dea:",
    "eostats:",
    "fused",
    "platform",
    "instrument",
    "instruments",
    "constellation",
    "eo:platform",
    "eo:instrument",
    "eo:constellation",
)


# --------------------------------------------------------------------------------------------
# paths


def eo3_paths(product: OutputProduct, task: TaskId) -> tuple[str, str]:
    """``(proc-info, odc-metadata)`` paths of a task: ``{task_dir}/{prefix}.proc-info.yaml`` and ``.odc-metadata.yaml``."""
    base = f"{product.task_dir(task)}/{product.file_prefix(task)}"
    return f"{base}.proc-info.yaml", f"{base}.odc-metadata.yaml"


# --------------------------------------------------------------------------------------------
# YAML


def _plain(obj: Any) -> Any:
    """A YAML/JSON-safe copy: datetimes as ISO strings (UTC ``Z``), UUIDs and numpy scalars as Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, datetime):
        t = obj.astimezone(UTC) if obj.tzinfo else obj.replace(tzinfo=UTC)
        return t.isoformat().replace("+00:00", "Z")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class _Dumper(yaml.SafeDumper):
    """Mappings in block style; lists of plain values (coordinates, transforms) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    """Block-style YAML in key order (``$schema`` and ``id`` first as written); NaN as ``.nan``."""
    return yaml.dump(
        _plain(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120
    )


# --------------------------------------------------------------------------------------------
# outputs


def _nodata(value: float | int | None) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isnan(value) or not value.is_integer() else int(value)
    return int(value)


def output_product_definition(
    product: OutputProduct, measurements: Sequence[Any], *, description: str = ""
) -> dict:
    """The eo3 product definition of an output product.

    ``measurements``: the plugin's (objects with ``name``, ``dtype``, ``nodata``, ``units``). Booleans are stored
    as uint8 COGs, so they are declared uint8.
    """
    bands = []
    for m in measurements:
        dtype = "uint8" if np.dtype(m.dtype) == np.bool_ else np.dtype(m.dtype).name
        band: dict[str, Any] = {
            "name": m.name,
            "dtype": dtype,
            "units": getattr(m, "units", "1") or "1",
        }
        band["nodata"] = _nodata(m.nodata)
        bands.append(band)
    doc: dict[str, Any] = {
        "name": product.name,
        "description": description
        or f"{product.name} {product.version}: statistics made by eostats",
        "metadata_type": "eo3",
        "license": "CC-BY-4.0",
        "metadata": {
            "product": {"name": product.name},
            "properties": {"odc:product_family": product.product_family},
        },
        "measurements": bands,
    }
    return doc


def _split_values(values: Iterable[Any]) -> list[str]:
    out: set[str] = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, list | tuple):
            out.update(str(x) for x in v)
        else:
            out.add(str(v))
    return sorted(out)


def inherited_properties(
    source_properties: Sequence[Mapping[str, Any]], skip: Iterable[str] = ()
) -> dict:
    """Properties of the output taken from its sources.

    A property is inherited when every source has it with the same value and it is not per-scene
    (:data:`NOT_INHERITED`, prefixes ending in ``:``) nor in ``skip``. ``eo:platform`` and ``eo:instrument`` are
    the sorted distinct values over the sources joined by ``,`` and ``_`` (odc-stats' rule).
    """
    skip = set(skip)
    out: dict[str, Any] = {}

    def excluded(key: str) -> bool:
        if key in skip:
            return True
        return any(key == p or (p.endswith(":") and key.startswith(p)) for p in NOT_INHERITED)

    if source_properties:
        first = source_properties[0]
        for key, value in first.items():
            if excluded(key):
                continue
            if all(key in p and p[key] == value for p in source_properties[1:]):
                out[key] = value
    platforms = _split_values(p.get("platform", p.get("eo:platform")) for p in source_properties)
    instruments = _split_values(
        p.get("instrument", p.get("eo:instrument")) for p in source_properties
    )
    if platforms and "eo:platform" not in skip:
        out["eo:platform"] = ",".join(platforms)
    if instruments and "eo:instrument" not in skip:
        out["eo:instrument"] = "_".join(instruments)
    return out


def lineage_uuids(source_ids: Iterable[Any]) -> list[str]:
    """The source ids that are UUIDs, sorted (eo3 lineage holds UUIDs only)."""
    out = []
    for s in source_ids:
        try:
            out.append(str(uuid.UUID(str(s))))
        except ValueError:
            continue
    return sorted(set(out))


def source_dataset_ids(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The real source datasets of a task's cache items: a fused item stands for its members (its eo3 lineage).

    odc-stats derives the output UUID and lineage from the members of fused datasets, which exist in the index;
    an item that is not fused stands for itself.
    """
    out: set[str] = set()
    for item in items:
        embedded = (item.get("odc:eo3") or {}) if isinstance(item, Mapping) else {}
        doc = embedded.get("metadata") or {}
        if (doc.get("properties") or {}).get("fused") in ("True", True) and doc.get("lineage"):
            for ids in doc["lineage"].values():
                out.update(str(i) for i in ids)
        else:
            out.add(str(item["id"]))
    return sorted(out)


def _software_versions(plugin: Any) -> list[dict[str, str]]:
    def version_of(package: str) -> str:
        try:
            return importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            return "unknown"

    return [
        {"name": "eostats", "version": version_of("eostats")},
        {"name": f"plugin:{plugin.NAME}", "version": str(plugin.VERSION)},
        {"name": "datacube", "version": version_of("datacube")},
    ]


def proc_info_document(
    product: OutputProduct,
    plugin: Any,
    plugin_config: Mapping[str, Any],
    input_products: Sequence[str],
    source_ids: Sequence[str],
) -> dict:
    """The ``proc-info.yaml`` document (odc-stats' user metadata, plus the plugin config and every source id)."""
    return {
        "software_versions": _software_versions(plugin),
        "input-products": sorted(set(input_products)),
        "odc-stats-config": {
            "name": product.name,
            "short_name": product.short_name,
            "version": product.version,
            "product_family": product.product_family,
            "producer": product.producer,
            "region_code_format": product.region_code_format,
            "maturity": product.maturity,
            "properties": dict(product.properties),
        },
        "plugin": {"name": plugin.NAME, "config": dict(plugin_config)},
        "source_datasets": sorted(str(s) for s in source_ids),
    }


def dataset_document(
    *,
    product: OutputProduct,
    task: TaskId,
    geobox: GeoBox,
    band_files: Mapping[str, str],
    dataset_id: str,
    period: tuple[datetime, datetime],
    processing_datetime: datetime,
    source_ids: Sequence[str],
    source_properties: Sequence[Mapping[str, Any]] = (),
    accessories: Mapping[str, str] | None = None,
    classifier: str = "level3",
    inherit_skip: Iterable[str] = (),
    collection_number: int | None = None,
) -> dict:
    """The eo3 dataset document of one task's outputs (see the module docstring).

    ``band_files``: band → file name relative to the document. ``period``: UTC start and end of the period.
    ``dataset_id``: the task UUID (the STAC item's id).
    """
    crs = geobox.crs
    epsg = crs.epsg if crs is not None else None
    a = geobox.transform
    start, end = period
    properties: dict[str, Any] = inherited_properties(source_properties, inherit_skip)
    properties.update(dict(product.properties))
    properties.update(
        {
            "datetime": start,
            "dtr:start_datetime": start,
            "dtr:end_datetime": end,
            "odc:product": product.name,
            "odc:dataset_version": product.version,
            "odc:region_code": product.region_code(task.x, task.y),
            "odc:product_family": product.product_family,
            "odc:producer": product.producer,
            "odc:processing_datetime": processing_datetime,
            "odc:file_format": "GeoTIFF",
        }
    )
    if product.maturity:
        properties["dea:dataset_maturity"] = product.maturity
    if collection_number is not None:
        properties["odc:collection_number"] = int(collection_number)
    doc: dict[str, Any] = {
        "$schema": EO3_SCHEMA,
        "id": str(dataset_id),
        "label": product.file_prefix(task),
        "product": {"name": product.name},
        "crs": f"EPSG:{epsg}" if epsg is not None else crs.to_wkt(),
        "geometry": geobox.extent.json,
        "grids": {
            "default": {
                "shape": [int(geobox.shape.y), int(geobox.shape.x)],
                "transform": [a.a, a.b, a.c, a.d, a.e, a.f, 0.0, 0.0, 1.0],
            }
        },
        "properties": properties,
        "measurements": {band: {"path": path} for band, path in band_files.items()},
        "accessories": {name: {"path": path} for name, path in (accessories or {}).items()},
        "lineage": {classifier: lineage_uuids(source_ids)} if lineage_uuids(source_ids) else {},
    }
    if product.product_overview_href:
        doc["product"]["href"] = product.product_overview_href
    return doc


def write_task_documents(
    directory: Path,
    *,
    product: OutputProduct,
    plugin: Any,
    product_config: Mapping[str, Any],
    plugin_config: Mapping[str, Any],
    task: TaskId,
    geobox: GeoBox,
    band_files: Mapping[str, str],
    dataset_id: str,
    period: tuple[datetime, datetime],
    processing_datetime: datetime,
    source_ids: Sequence[str],
    source_items: Sequence[Mapping[str, Any]],
    sha1_name: str,
) -> list[Path]:
    """Write ``proc-info.yaml`` then ``odc-metadata.yaml`` into ``directory``; returns both paths.

    ``product_config``: the config's ``product`` mapping, for odc-stats' eodatasets3 keys ``classifier``,
    ``inherit_skip_properties`` and ``collection_number``.
    """
    proc_name, meta_name = (Path(p).name for p in eo3_paths(product, task))
    input_products = [
        str(it.get("collection") or "") for it in source_items if it.get("collection")
    ]
    proc = proc_info_document(product, plugin, plugin_config, input_products, source_ids)
    proc_path = write_text_atomic(directory / proc_name, dump_yaml(proc))
    doc = dataset_document(
        product=product,
        task=task,
        geobox=geobox,
        band_files=band_files,
        dataset_id=dataset_id,
        period=period,
        processing_datetime=processing_datetime,
        source_ids=source_ids,
        source_properties=[dict(it.get("properties") or {}) for it in source_items],
        accessories={"checksum:sha1": sha1_name, "metadata:processor": proc_name},
        classifier=str(product_config.get("classifier") or "level3"),
        inherit_skip=product_config.get("inherit_skip_properties") or (),
        collection_number=product_config.get("collection_number"),
    )
    meta_path = write_text_atomic(directory / meta_name, dump_yaml(doc))
    return [proc_path, meta_path]


# --------------------------------------------------------------------------------------------
# inputs: STAC items → product definitions + eo3 dataset documents


def eo3_from_stac_items(items: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict], list[dict]]:
    """Product definitions (by name) and eo3 dataset documents of STAC items, via ``datacube.metadata.stac2ds``.

    Items need absolute asset hrefs (as :func:`eostats.sources.read_items` yields them). A product is named by
    the items' ``collection`` (else ``odc:product``). Dataset ids are datacube's: the item id when it is a UUID,
    else a UUID derived from it; ``label`` is the item id. Measurement paths are the absolute asset hrefs.
    """
    import pystac
    from datacube.metadata import stac2ds

    stac_items = []
    for raw in items:
        doc = dict(raw)
        if not doc.get("collection"):
            doc["collection"] = (doc.get("properties") or {}).get("odc:product")
        stac_items.append(pystac.Item.from_dict(doc))
    products: dict[str, dict] = {}
    documents: list[dict] = []
    for item, ds in zip(stac_items, stac2ds(stac_items), strict=True):
        definition = dict(ds.product.definition)
        definition.setdefault(
            "description", f"{definition['name']}: converted from STAC items by eostats"
        )
        products.setdefault(definition["name"], definition)
        doc = _plain(ds.metadata_doc)
        doc["label"] = item.id
        doc.pop("extent", None)  # datacube derives it; "grid_spatial" is the legacy form
        doc.pop("grid_spatial", None)
        documents.append(doc)
    return products, documents


def write_eo3_from_stac(
    items: Iterable[Mapping[str, Any]], out_dir: Path | str
) -> tuple[list[Path], list[Path]]:
    """Write ``{product}.product.yaml`` and one ``{label}.odc-metadata.yaml`` per item into ``out_dir``.

    Returns (product files, dataset files): ``datacube product add`` the first, ``datacube dataset add`` the second.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    products, documents = eo3_from_stac_items(items)
    product_files = [
        write_text_atomic(out / f"{name}.product.yaml", dump_yaml(definition))
        for name, definition in products.items()
    ]
    dataset_files = [
        # one file per item in one folder: no listing of the folder per file
        write_text_atomic(
            out / f"{doc['label']}.odc-metadata.yaml", dump_yaml(doc), clean_stale=False
        )
        for doc in documents
    ]
    return product_files, dataset_files


def write_tile_documents(
    directory: Path,
    run: Any,
    task: TaskId,
    geobox: GeoBox,
    bands: Mapping[str, Any],
    stac_item: Mapping[str, Any],
    source_ids: Sequence[str],
    source_items: Sequence[Mapping[str, Any]],
    sha1_name: str,
) -> list[Path]:
    """The tile writer's hook: the eo3 documents of one task (``run.config['apply_eodatasets3']``).

    ``bands``: band → object with ``path`` (file name); ``stac_item``: the task's STAC item, not yet written (its
    id, period and processing time are reused so that both documents describe the same dataset).
    """
    props = stac_item["properties"]

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return write_task_documents(
        directory,
        product=run.product,
        plugin=run.plugin,
        product_config=run.config.get("product") or {},
        plugin_config=run.config.get("plugin_config") or {},
        task=task,
        geobox=geobox,
        band_files={band: info.path for band, info in bands.items()},
        dataset_id=str(stac_item["id"]),
        period=(parse(props["dtr:start_datetime"]), parse(props["dtr:end_datetime"])),
        processing_datetime=parse(props["odc:processing_datetime"]),
        source_ids=source_ids,
        source_items=source_items,
        sha1_name=sha1_name,
    )

"""Reading STAC items from the workflow's input sources.

A source is a mapping with a ``type`` key:

``{type: stac_catalog, path: .../catalog.json}``
    a static catalog (local path or URL); every child catalog/collection is walked with pystac.
``{type: item_collection, path: items.json}``
    a GeoJSON FeatureCollection of items in one file.
``{type: ndjson, path: items.ndjson}``
    one item per line (``.gz`` compressed too), streamed line by line; blank lines are skipped.
``{type: stac_api, url: ..., collections: [...], bbox: [...], datetime: "2020/2021", ...}``
    a STAC API item search (pystac-client); optional ``query``, ``filter``, ``filter_lang``,
    ``intersects``, ``ids``, ``limit`` (page size), ``method`` and ``headers``.
``{type: datacube, input_products: a+b, env: ..., gqa: ..., dataset_filter: {...}, ...}``
    an Open Data Cube index (:mod:`eostats.odc_index`): every dataset of the products, as STAC items that
    carry their eo3 documents.
``{type: sample, path: dir, spec: {...}}``
    the synthetic sample collection (:mod:`eostats.sample`) in ``dir``, generated first if
    ``dir/catalog.json`` does not exist yet (``spec``, alias ``sample``: ``SampleSpec`` fields;
    default spec if absent). An existing collection made from another spec is an error.

Every type also accepts ``max_items`` (stop after that many items).

Items are yielded as plain STAC item dicts whose asset (and link) hrefs are absolute. Relative
hrefs are resolved against the item's own location: its ``self`` link when it has one, else
the file it was read from (the item JSON for catalogs, the ``items.json``/``.ndjson`` file
for item lists, whose relative hrefs are therefore relative to that file's directory).
Errors name what is wrong: the missing file, the file and line of invalid JSON, the id of an
item without ``datetime`` or ``geometry``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import pystac

try:  # orjson parses item lines several times faster when it is installed
    import orjson

    _loads: Callable[[str | bytes], Any] = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads
    _JSONError = (ValueError,)

SOURCE_TYPES = ("stac_catalog", "item_collection", "ndjson", "stac_api", "sample", "datacube")


class SourceError(ValueError):
    """A source, or an item in it, is unusable; the message names the culprit."""


def read_items(source: Mapping) -> Iterator[dict]:
    """Yield the STAC item dicts of ``source`` (see the module docstring for source types).

    Asset and link hrefs of the yielded items are absolute (paths or URLs).
    Raises ``FileNotFoundError`` for a missing file and :class:`SourceError` (a ``ValueError``)
    for a bad source, bad JSON or an item without ``datetime``/``geometry``.
    """
    if not isinstance(source, Mapping):
        raise SourceError(f"a source must be a mapping with a 'type', got {source!r}")
    kind = source.get("type")
    readers: dict[str, Callable[[Mapping], Iterator[dict]]] = {
        "stac_catalog": _read_catalog,
        "item_collection": _read_item_collection,
        "ndjson": _read_ndjson,
        "stac_api": _read_stac_api,
        "sample": _read_sample,
        "datacube": _read_datacube,
    }
    if kind not in readers:
        raise SourceError(
            f"unknown source type {kind!r} in {dict(source)!r}; expected one of "
            + ", ".join(SOURCE_TYPES)
        )
    items = readers[kind](source)
    max_items = source.get("max_items")
    if max_items is not None:
        items = itertools.islice(items, int(max_items))
    return items


# --------------------------------------------------------------------------------------------
# source types


# Each reader checks its source at once (missing keys and files fail when ``read_items`` is
# called) and returns a generator that reads lazily.


def _read_catalog(source: Mapping) -> Iterator[dict]:
    href = _required(source, "path")
    if not _is_url(href):
        if not Path(href).is_file():
            raise FileNotFoundError(f"stac_catalog source: no such file: {href}")
        href = str(Path(href).absolute())
    try:
        root = pystac.Catalog.from_file(href)
    except (ValueError, pystac.STACError) as err:
        raise SourceError(f"{href}: not a readable STAC catalog: {err}") from None
    return _walk_catalog(root)


def _walk_catalog(catalog: pystac.Catalog) -> Iterator[dict]:
    stac_io = pystac.StacIO.default()
    where = catalog.get_self_href()
    for link in catalog.get_links(pystac.RelType.ITEM):
        href = link.get_absolute_href()
        if href is None:
            raise SourceError(f"catalog {where}: item link without an href")
        try:
            item = stac_io.read_json(href)
        except FileNotFoundError:
            raise FileNotFoundError(f"catalog {where} links to a missing item: {href}") from None
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            raise SourceError(f"{href}: invalid JSON: {err}") from None
        yield _checked(item, where=href, base=_dirname(href), self_href=href)
    for child in catalog.get_children():
        yield from _walk_catalog(child)


def _read_item_collection(source: Mapping) -> Iterator[dict]:
    path = _existing_path(source, "item_collection")
    return _item_collection_items(path)


def _item_collection_items(path: Path) -> Iterator[dict]:
    with _open_text(path) as fh:
        try:
            doc = _loads(fh.read())
        except _JSONError as err:
            raise SourceError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise SourceError(f"{path}: not a STAC ItemCollection (a GeoJSON FeatureCollection)")
    base = str(path.parent)
    for n, item in enumerate(doc.get("features") or []):
        yield _checked(item, where=f"{path} (feature {n})", base=base)


def _read_ndjson(source: Mapping) -> Iterator[dict]:
    path = _existing_path(source, "ndjson")
    return _ndjson_items(path)


def _ndjson_items(path: Path) -> Iterator[dict]:
    base = str(path.parent)
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = _loads(line)
            except _JSONError as err:
                raise SourceError(f"{path}:{lineno}: invalid JSON: {err}") from None
            yield _checked(item, where=f"{path}:{lineno}", base=base)


def _read_stac_api(source: Mapping) -> Iterator[dict]:
    from pystac_client import Client  # imported late: only this source type needs it

    url = _required(source, "url")
    client = Client.open(url, headers=source.get("headers"))
    search_keys = ("collections", "bbox", "intersects", "datetime", "ids", "query", "filter")
    params = {k: source[k] for k in (*search_keys, "filter_lang", "limit") if k in source}
    if "max_items" in source:
        params["max_items"] = source["max_items"]
    search = client.search(method=source.get("method", "POST"), **params)
    return (_checked(item, where=url, base=None) for item in search.items_as_dicts())


def _read_sample(source: Mapping) -> Iterator[dict]:
    """The sample collection at ``path``; generated from ``spec`` (alias ``sample``) if missing.

    An existing collection made from a different spec is an error rather than regenerated,
    because other jobs may be reading its files.
    """
    from eostats.sample import CATALOG_FILE, SampleSpec, generate_sample_collection

    path = Path(_required(source, "path"))
    catalog = path if path.name == CATALOG_FILE else path / CATALOG_FILE
    wanted = source.get("spec", source.get("sample"))
    spec = SampleSpec.from_mapping(wanted) if wanted else SampleSpec()
    if not catalog.is_file():
        generate_sample_collection(catalog.parent, spec)
    else:
        stored = _stored_sample_spec(catalog)
        if stored is not None and stored != spec.to_dict():
            differing = sorted(k for k in stored if stored[k] != spec.to_dict().get(k))
            raise SourceError(
                f"the sample collection at {catalog.parent} was generated with another spec "
                f"(differs in {', '.join(differing)}); remove it or point 'path' elsewhere"
            )
    return _read_catalog({"path": str(catalog)})


def _read_datacube(source: Mapping) -> Iterator[dict]:
    """An Open Data Cube index (:mod:`eostats.odc_index`): items converted from its eo3 datasets."""
    from eostats.odc_index import DatacubeSourceError, read_datacube_items

    try:
        return read_datacube_items(source)
    except DatacubeSourceError as err:
        raise SourceError(str(err)) from None


def _stored_sample_spec(catalog: Path) -> dict | None:
    """The ``eostats:sample_spec`` recorded in the sample's collection, if any."""
    root = json.loads(catalog.read_text())
    for link in root.get("links", []):
        if link.get("rel") == "child":
            child = json.loads((catalog.parent / link["href"]).read_text())
            if "eostats:sample_spec" in child:
                return child["eostats:sample_spec"]
    return None


# --------------------------------------------------------------------------------------------
# helpers


def _required(source: Mapping, key: str) -> str:
    value = source.get(key)
    if not value:
        raise SourceError(f"a {source.get('type')} source needs '{key}': {dict(source)!r}")
    return str(value)


def _existing_path(source: Mapping, kind: str) -> Path:
    path = Path(_required(source, "path")).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{kind} source: no such file: {path}")
    return path


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


# A URL scheme has two or more characters (a single letter before ":" is a Windows drive).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _is_url(href: str) -> bool:
    return _URL.match(href) is not None


def _dirname(href: str) -> str:
    if _is_url(href):
        return href.rsplit("/", 1)[0]
    return os.path.dirname(href)


def _absolute(href: str, base: str | None) -> str:
    # Called for every asset of every item: cheap string tests first, normpath only when needed.
    if base is None or href.startswith("/") or _is_url(href):
        return href
    if _is_url(base):
        return urljoin(base + "/", href)
    if href.startswith("./"):
        href = href[2:]
    if "./" in href or href.startswith("."):
        return os.path.normpath(os.path.join(base, href))
    return f"{base}/{href}"


def _checked(
    item: Any,
    *,
    where: str,
    base: str | None,
    self_href: str | None = None,
    hrefs_absolute: bool = False,
) -> dict:
    """Validate one item and make its hrefs absolute (in place; the dict is fresh JSON).

    ``self_href``: where the item was read from, added as its ``self`` link if it has none.
    ``hrefs_absolute``: the caller knows every href is absolute already (validation only).
    """
    if not isinstance(item, dict) or item.get("type") != "Feature":
        raise SourceError(f"{where}: not a STAC item (a GeoJSON Feature)")
    item_id = item.get("id")
    if not item_id:
        raise SourceError(f"{where}: item without an id")
    properties = item.get("properties") or {}
    if not properties.get("datetime"):
        raise SourceError(f"item {item_id!r} ({where}) has no properties.datetime")
    if not item.get("geometry"):
        raise SourceError(f"item {item_id!r} ({where}) has no geometry")

    links = item.setdefault("links", [])
    if hrefs_absolute and (self_href is None or any(link.get("rel") == "self" for link in links)):
        return item
    own = next((link.get("href") for link in links if link.get("rel") == "self"), None)
    if own:
        base = _dirname(_absolute(own, base))
    elif self_href:
        links.append({"rel": "self", "href": self_href, "type": "application/json"})
    for link in links:
        if "href" in link:
            link["href"] = _absolute(link["href"], base)
    for asset in (item.get("assets") or {}).values():
        if "href" in asset:
            asset["href"] = _absolute(asset["href"], base)
    return item

"""Tests of eostats.sources: every source type on the tiny sample, errors, a local STAC API.

Expected ids and filters are computed here from the sample's files with plain json.
"""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from eostats.sample import SampleSpec
from eostats.sources import SourceError, read_items

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


def ndjson_docs(catalog: Path) -> list[dict]:
    lines = (catalog.parent / "items.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def all_ids(catalog: Path) -> list[str]:
    """Ids of the item JSON files on disk (layout collection/item/item.json)."""
    return sorted(p.stem for p in catalog.parent.glob("*/*/*.json"))


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------
# a tiny STAC API: /, /conformance, /search (GET and POST, paged with a token)


class _StacApi(BaseHTTPRequestHandler):
    items: list[dict] = []
    requests: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @property
    def base(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/":
            self._send(
                {
                    "type": "Catalog",
                    "id": "test-api",
                    "stac_version": "1.0.0",
                    "description": "test",
                    "conformsTo": CONFORMANCE,
                    "links": [
                        {"rel": "self", "href": f"{self.base}/", "type": "application/json"},
                        {"rel": "root", "href": f"{self.base}/", "type": "application/json"},
                        {"rel": "conformance", "href": f"{self.base}/conformance"},
                        {
                            "rel": "search",
                            "href": f"{self.base}/search",
                            "type": "application/geo+json",
                            "method": "GET",
                        },
                        {
                            "rel": "search",
                            "href": f"{self.base}/search",
                            "type": "application/geo+json",
                            "method": "POST",
                        },
                    ],
                }
            )
        elif url.path == "/conformance":
            self._send({"conformsTo": CONFORMANCE})
        elif url.path == "/search":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            params: dict = {}
            if "collections" in query:
                params["collections"] = query["collections"].split(",")
            if "bbox" in query:
                params["bbox"] = [float(v) for v in query["bbox"].split(",")]
            for key in ("datetime", "limit", "token"):
                if key in query:
                    params[key] = query[key]
            self._search(params, "GET")
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/search":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._search(body, "POST")

    def _search(self, params: dict, method: str) -> None:
        type(self).requests.append((method, params))
        matches = [item for item in self.items if _matches(item, params)]
        start = int(params.get("token", 0))
        limit = int(params.get("limit", 10))
        page = matches[start : start + limit]
        links = []
        if start + limit < len(matches):
            if method == "POST":
                next_body = {**params, "token": start + limit}
                links.append(
                    {"rel": "next", "href": f"{self.base}/search", "method": "POST",
                     "body": next_body, "merge": False}
                )  # fmt: skip
            else:
                url = urlparse(self.path)
                rest = "&".join(p for p in url.query.split("&") if not p.startswith("token="))
                links.append(
                    {"rel": "next", "href": f"{self.base}/search?{rest}&token={start + limit}"}
                )
        self._send({"type": "FeatureCollection", "features": page, "links": links})


def _matches(item: dict, params: dict) -> bool:
    if "collections" in params and item.get("collection") not in params["collections"]:
        return False
    if "bbox" in params:
        x0, y0, x1, y1 = params["bbox"]
        ix0, iy0, ix1, iy1 = item["bbox"]
        if ix0 > x1 or ix1 < x0 or iy0 > y1 or iy1 < y0:
            return False
    if "datetime" in params:
        start, _, end = params["datetime"].partition("/")
        t = parse_time(item["properties"]["datetime"])
        if start not in ("", "..") and t < parse_time(start):
            return False
        if end not in ("", "..") and t > parse_time(end):
            return False
    return True


@pytest.fixture(scope="module")
def stac_api(sample_catalog: Path) -> Iterator[str]:
    """URL of a local STAC API serving the tiny sample's items (absolute asset hrefs)."""
    root = sample_catalog.parent
    docs = ndjson_docs(sample_catalog)
    for doc in docs:
        for asset in doc["assets"].values():
            asset["href"] = str(root / asset["href"])
    handler = type("Handler", (_StacApi,), {"items": docs, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# every source type gives the same items


def test_all_source_types_give_the_same_items(sample_catalog: Path, stac_api: str) -> None:
    root = sample_catalog.parent
    expected = all_ids(sample_catalog)
    assert len(expected) == 10
    sources = {
        "stac_catalog": {"type": "stac_catalog", "path": str(sample_catalog)},
        "item_collection": {"type": "item_collection", "path": str(root / "items.json")},
        "ndjson": {"type": "ndjson", "path": str(root / "items.ndjson")},
        "sample": {"type": "sample", "path": str(root), "spec": SampleSpec.tiny().to_dict()},
        "stac_api": {"type": "stac_api", "url": stac_api, "collections": ["sample_ls_ard_3"]},
    }
    hrefs: dict[str, dict[str, str]] = {}
    for name, source in sources.items():
        items = list(read_items(source))
        assert sorted(i["id"] for i in items) == expected, name
        hrefs[name] = {f"{i['id']}/{k}": a["href"] for i in items for k, a in i["assets"].items()}
    # the same absolute asset paths everywhere, and they exist
    for name in sources:
        assert hrefs[name] == hrefs["ndjson"], name
    for href in hrefs["ndjson"].values():
        assert Path(href).is_absolute() and Path(href).is_file()
    expected_red = root / "sample_ls_ard_3" / expected[0] / f"{expected[0]}_nbart_red.tif"
    assert hrefs["stac_catalog"][f"{expected[0]}/nbart_red"] == str(expected_red)


def test_catalog_items_get_absolute_links(sample_catalog: Path) -> None:
    item = next(iter(read_items({"type": "stac_catalog", "path": str(sample_catalog)})))
    links = {link["rel"]: link["href"] for link in item["links"]}
    assert links["self"] == str(
        sample_catalog.parent / "sample_ls_ard_3" / item["id"] / f"{item['id']}.json"
    )
    assert links["root"] == str(sample_catalog)
    assert links["collection"] == str(sample_catalog.parent / "sample_ls_ard_3" / "collection.json")


def test_relative_path_and_gzip_and_max_items(
    sample_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sample_catalog.parent / "items.ndjson"
    gz = tmp_path / "copy" / "items.ndjson.gz"
    gz.parent.mkdir()
    with gzip.open(gz, "wt") as fh:
        fh.write(src.read_text())
    # relative hrefs resolve against the file's directory, wherever that is
    items = list(read_items({"type": "ndjson", "path": str(gz)}))
    first_asset = items[0]["assets"]["nbart_red"]["href"]
    assert first_asset.startswith(str(gz.parent) + "/sample_ls_ard_3/")
    # a relative source path is relative to the working directory
    monkeypatch.chdir(sample_catalog.parent)
    items = list(read_items({"type": "ndjson", "path": "items.ndjson", "max_items": 3}))
    assert [i["id"] for i in items] == [d["id"] for d in ndjson_docs(sample_catalog)[:3]]
    assert Path(items[0]["assets"]["oa_fmask"]["href"]).is_file()


def test_self_link_sets_the_base_of_relative_hrefs(tmp_path: Path) -> None:
    doc = {
        "type": "Feature",
        "id": "x",
        "geometry": {"type": "Point", "coordinates": [149.0, -35.0]},
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
        "links": [{"rel": "self", "href": "https://example.com/stac/x/x.json"}],
        "assets": {
            "a": {"href": "a.tif"},
            "b": {"href": "../b.tif"},
            "c": {"href": "s3://bucket/c.tif"},
            "d": {"href": "/data/d.tif"},
        },
    }
    path = tmp_path / "items.ndjson"
    path.write_text(json.dumps(doc) + "\n")
    (item,) = read_items({"type": "ndjson", "path": str(path)})
    hrefs = {k: v["href"] for k, v in item["assets"].items()}
    assert hrefs == {
        "a": "https://example.com/stac/x/a.tif",
        "b": "https://example.com/stac/b.tif",
        "c": "s3://bucket/c.tif",
        "d": "/data/d.tif",
    }
    # a relative self link is itself relative to the file
    doc["links"] = [{"rel": "self", "href": "sub/x.json"}]
    doc["assets"] = {"a": {"href": "./a.tif"}, "b": {"href": "../b.tif"}}
    path.write_text(json.dumps(doc) + "\n")
    (item,) = read_items({"type": "ndjson", "path": str(path)})
    assert item["assets"]["a"]["href"] == str(tmp_path / "sub" / "a.tif")
    assert item["assets"]["b"]["href"] == str(tmp_path / "b.tif")


# --------------------------------------------------------------------------------------------
# STAC API


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_stac_api_filters_and_pages(sample_catalog: Path, stac_api: str, method: str) -> None:
    docs = ndjson_docs(sample_catalog)
    expected_2021 = sorted(d["id"] for d in docs if d["properties"]["datetime"].startswith("2021"))
    assert 0 < len(expected_2021) < len(docs)
    source = {
        "type": "stac_api",
        "url": stac_api,
        "collections": ["sample_ls_ard_3"],
        "datetime": "2021",
        "limit": 2,  # forces several pages
        "method": method,
    }
    items = list(read_items(source))
    assert sorted(i["id"] for i in items) == expected_2021

    # bbox: only items whose bbox intersects a small box in the east of the sample
    box = [149.185, -35.36, 149.19, -35.355]
    expected_box = sorted(
        d["id"]
        for d in docs
        if d["bbox"][0] <= box[2] and d["bbox"][2] >= box[0] and d["bbox"][1] <= box[3]
        and d["bbox"][3] >= box[1]
    )  # fmt: skip
    assert 0 < len(expected_box) < len(docs)
    items = list(read_items({**source, "datetime": "2020/2021", "bbox": box}))
    assert sorted(i["id"] for i in items) == expected_box

    assert len(list(read_items({**source, "datetime": "2020/2021", "max_items": 3}))) == 3
    assert list(read_items({**source, "collections": ["nothing"]})) == []


# --------------------------------------------------------------------------------------------
# sample source generates on demand


def test_sample_source_generates_when_missing(tmp_path: Path) -> None:
    spec = {
        "paths": [90],
        "years": [2021],
        "dates_per_year": 1,
        "bbox": [149.12, -35.38, 149.16, -35.35],
    }
    out = tmp_path / "made"
    items = list(read_items({"type": "sample", "path": str(out), "spec": spec}))
    assert (out / "catalog.json").is_file()
    assert [i["id"] for i in items] == all_ids(out / "catalog.json")
    assert len(items) == 1 and items[0]["properties"]["datetime"].startswith("2021-12-")
    # read again: the existing collection is used; another spec is refused
    again = list(read_items({"type": "sample", "path": str(out / "catalog.json"), "sample": spec}))
    assert again == items
    with pytest.raises(SourceError, match="differs in dates_per_year, years"):
        read_items(
            {
                "type": "sample",
                "path": str(out),
                "spec": {**spec, "years": [2020], "dates_per_year": 2},
            }
        )


# --------------------------------------------------------------------------------------------
# errors


def test_missing_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "items.ndjson"
    for kind in ("ndjson", "item_collection", "stac_catalog"):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            read_items({"type": kind, "path": str(missing)})  # fails before any iteration


def test_catalog_with_a_missing_item_is_named(sample_catalog: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cat"
    shutil.copytree(sample_catalog.parent, copy, ignore=shutil.ignore_patterns("*.tif"))
    victim = sorted(copy.glob("*/*/*.json"))[3]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        list(read_items({"type": "stac_catalog", "path": str(copy / "catalog.json")}))


def test_bad_sources_are_rejected() -> None:
    with pytest.raises(SourceError, match="unknown source type 'ftp'"):
        read_items({"type": "ftp", "path": "x"})
    with pytest.raises(SourceError, match="needs 'path'"):
        list(read_items({"type": "ndjson"}))
    with pytest.raises(SourceError, match="needs 'url'"):
        list(read_items({"type": "stac_api"}))
    with pytest.raises(SourceError, match="mapping"):
        read_items("items.ndjson")  # type: ignore[arg-type]


def test_ndjson_errors_name_file_and_line(sample_catalog: Path, tmp_path: Path) -> None:
    lines = (sample_catalog.parent / "items.ndjson").read_text().splitlines()
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join([lines[0], "", lines[1], '{"type": "Feature", "id": ', lines[2]]))
    items = read_items({"type": "ndjson", "path": str(path)})
    # streamed: the items before the bad line arrive before the error
    assert next(items)["id"] == json.loads(lines[0])["id"]
    assert next(items)["id"] == json.loads(lines[1])["id"]
    with pytest.raises(SourceError, match=rf"{path}:4: invalid JSON"):
        next(items)

    path.write_text(lines[0] + "\n[1, 2]\n")
    with pytest.raises(SourceError, match=rf"{path}:2: not a STAC item"):
        list(read_items({"type": "ndjson", "path": str(path)}))

    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(SourceError, match=rf"{bad}: invalid JSON"):
        list(read_items({"type": "item_collection", "path": str(bad)}))
    bad.write_text(lines[0])
    with pytest.raises(SourceError, match="not a STAC ItemCollection"):
        list(read_items({"type": "item_collection", "path": str(bad)}))


@pytest.mark.parametrize("kind", ["ndjson", "item_collection", "stac_catalog"])
@pytest.mark.parametrize("missing", ["datetime", "geometry"])
def test_items_without_datetime_or_geometry_are_named(
    sample_catalog: Path, tmp_path: Path, kind: str, missing: str
) -> None:
    docs = ndjson_docs(sample_catalog)
    victim = docs[4]["id"]
    if missing == "datetime":
        docs[4]["properties"]["datetime"] = None
    else:
        del docs[4]["geometry"]
    if kind == "ndjson":
        path = tmp_path / "items.ndjson"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    elif kind == "item_collection":
        path = tmp_path / "items.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": docs}))
    else:
        shutil.copytree(
            sample_catalog.parent, tmp_path / "cat", ignore=shutil.ignore_patterns("*.tif")
        )
        item_file = tmp_path / "cat" / "sample_ls_ard_3" / victim / f"{victim}.json"
        doc = json.loads(item_file.read_text())
        if missing == "datetime":
            doc["properties"]["datetime"] = None
        else:
            doc["geometry"] = None
        item_file.write_text(json.dumps(doc))
        path = tmp_path / "cat" / "catalog.json"
    with pytest.raises(SourceError, match=rf"item '{victim}'.*no (properties\.)?{missing}"):
        list(read_items({"type": kind, "path": str(path)}))


def test_ndjson_streams_many_lines_quickly(sample_catalog: Path, tmp_path: Path) -> None:
    docs = ndjson_docs(sample_catalog)
    path = tmp_path / "many.ndjson"
    n = 10_000
    with open(path, "w") as fh:
        for k in range(n):
            doc = docs[k % len(docs)]
            fh.write(json.dumps({**doc, "id": f"{doc['id']}_{k}"}, separators=(",", ":")) + "\n")
    t0 = time.perf_counter()
    count = 0
    for item in read_items({"type": "ndjson", "path": str(path)}):
        count += 1
        last = item
    elapsed = time.perf_counter() - t0
    assert count == n and last["id"].endswith(f"_{n - 1}")
    assert last["assets"]["nbart_red"]["href"].startswith(str(tmp_path) + "/sample_ls_ard_3/")
    # ~60 us per 3.6 kB line on a busy 2-core box (0.6 s here); pystac.Item.from_dict per line
    # costs ~450 us (4.5 s)
    assert elapsed < 4, elapsed


def test_datetimes_are_utc_strings(sample_catalog: Path) -> None:
    for item in read_items({"type": "ndjson", "path": str(sample_catalog.parent / "items.ndjson")}):
        t = parse_time(item["properties"]["datetime"])
        assert t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None)

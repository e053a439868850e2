"""build_cache from an NDJSON file parsed by worker processes (NdjsonItems) must build the cache that the
sequential path builds from ``eostats.sources.read_items`` of the same file: same tasks, memberships, counts,
documents, duplicates, skipped items and error messages. Chunks are made tiny so that items, duplicates and
errors fall on both sides of chunk boundaries."""

from __future__ import annotations

import base64
import json
import random
import sqlite3
from pathlib import Path

import pytest
import zstandard

import eostats.cache as cache_module
from eostats.cache import DatasetCache, NdjsonItems, build_cache
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.sources import SourceError, read_items

GRID = {
    "crs": "EPSG:3577",
    "resolution": 1000,
    "tile_size": 20,
    "origin": [1_400_000.0, -4_100_000.0],
}


def item(k: int, rng: random.Random, **extra) -> dict:
    """A tilted ~30 km footprint near Canberra (a few 20-km tiles), a time in 2020-2021."""
    lon, lat = rng.uniform(148.0, 150.0), rng.uniform(-36.5, -34.5)
    ring = [
        [lon, lat],
        [lon + 0.3, lat + 0.05],
        [lon + 0.25, lat + 0.3],
        [lon - 0.05, lat + 0.25],
        [lon, lat],
    ]
    doc = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"item-{k:05d}",
        "collection": "c",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "datetime": f"202{rng.randrange(2)}-{rng.randrange(1, 13):02d}-15T23:50:00Z"
        },
        "assets": {"red": {"href": f"s3://bucket/{k}/red.tif"}},
        "links": [],
    }
    doc.update(extra)
    return doc


def write_ndjson(path: Path, docs: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(d, separators=(",", ":")) for d in docs]
    for index, text in (raw_lines or {}).items():
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def both(tmp_path: Path, path: Path, settings: dict | None = None):
    """(parallel summary, parallel cache, sequential summary, sequential cache) of one file."""
    grid, binning = parse_grid(GRID), make_binning(frequency="annual")
    source = {"type": "ndjson", "path": str(path)}
    fast = build_cache(
        NdjsonItems(path, workers=2, parallel_min_bytes=0),
        grid,
        binning,
        tmp_path / "fast.sqlite",
        source,
        settings or {},
    )
    slow = build_cache(
        read_items(source), grid, binning, tmp_path / "slow.sqlite", source, settings or {}
    )
    return (
        fast,
        DatasetCache.open(tmp_path / "fast.sqlite"),
        slow,
        DatasetCache.open(tmp_path / "slow.sqlite"),
    )


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_CHUNK_BYTES", 2000)  # about three items per worker task


def test_same_cache_as_the_sequential_path(tmp_path: Path) -> None:
    rng = random.Random(1)
    docs = [item(k, rng) for k in range(300)]
    docs[10]["assets"]["red"]["href"] = (
        "relative/red.tif"  # rewritten by the source: re-encoded, not raw
    )
    docs[11]["properties"]["title"] = "Ünïcødé"  # not ASCII: re-encoded
    docs[50] = dict(docs[20])  # a duplicate id, later in the file (another chunk)
    path = write_ndjson(tmp_path / "items.ndjson", docs, raw_lines={100: "", 200: "   "})
    fast, a, slow, b = both(tmp_path, path, {"exclude_datasets": ["item-00007"]})
    keep = (
        "n_items",
        "n_datasets",
        "n_tasks",
        "periods",
        "n_outside",
        "n_duplicates",
        "n_excluded",
        "skipped",
    )
    assert {k: getattr(fast, k) for k in keep} == {k: getattr(slow, k) for k in keep}
    assert (fast.n_items, fast.n_duplicates, fast.n_excluded) == (300, 1, 1)
    assert a.tasks() == b.tasks() and len(a.tasks()) > 20
    for task in a.task_ids():
        assert a.dataset_ids(task) == b.dataset_ids(task)
        assert a.datasets(task) == b.datasets(task)
    assert a.dataset("item-00010")["assets"]["red"]["href"] == f"{tmp_path}/relative/red.tif"
    assert a.dataset("item-00011")["properties"]["title"] == "Ünïcødé"

    # untouched items are stored as their own line; rewritten ones as compact ASCII JSON
    db = sqlite3.connect(tmp_path / "fast.sqlite")
    blob = dict(
        db.execute(
            "SELECT id, doc FROM datasets WHERE id IN ('item-00003', 'item-00011')"
        ).fetchall()
    )
    lines = path.read_text().splitlines()
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    assert meta["doc_encoding"] == "json+zstd"
    zstd = zstandard.ZstdDecompressor(
        dict_data=zstandard.ZstdCompressionDict(base64.b64decode(meta["doc_dictionary"]))
    )
    assert zstd.decompress(blob["item-00003"]).decode() == next(
        x for x in lines if '"item-00003"' in x
    )
    assert zstd.decompress(blob["item-00011"]).isascii()


def test_invalid_items_are_named_or_skipped_in_file_order(tmp_path: Path) -> None:
    rng = random.Random(2)
    docs = [item(k, rng) for k in range(60)]
    docs[25]["properties"]["datetime"] = "not a date"
    docs[40]["geometry"] = {"type": "Polygon", "coordinates": "junk"}
    path = write_ndjson(tmp_path / "items.ndjson", docs)
    with pytest.raises(ValueError, match="item-00025.*datetime"):
        build_cache(
            NdjsonItems(path, workers=2, parallel_min_bytes=0),
            parse_grid(GRID),
            make_binning(frequency="annual"),
            tmp_path / "x.sqlite",
            {},
            {},
        )
    assert not (tmp_path / "x.sqlite").exists()
    fast, a, slow, b = both(tmp_path, path, {"invalid_items": "skip"})
    assert [s.id for s in fast.skipped] == ["item-00025", "item-00040"]
    assert fast.skipped == slow.skipped
    assert a.tasks() == b.tasks()


def test_source_errors_name_the_file_and_line(tmp_path: Path) -> None:
    rng = random.Random(3)
    docs = [item(k, rng) for k in range(40)]
    path = write_ndjson(tmp_path / "items.ndjson", docs, raw_lines={31: "{not json"})
    for items in (
        NdjsonItems(path, workers=2, parallel_min_bytes=0),
        read_items({"type": "ndjson", "path": str(path)}),
    ):
        with pytest.raises(SourceError, match=r"items.ndjson:32: invalid JSON"):
            build_cache(
                items,
                parse_grid(GRID),
                make_binning(frequency="annual"),
                tmp_path / "y.sqlite",
                {},
                {},
            )
    no_time = item(99, rng)
    del no_time["properties"]["datetime"]
    path = write_ndjson(tmp_path / "items.ndjson", docs[:12] + [no_time] + docs[12:])
    with pytest.raises(
        SourceError, match=r"item 'item-00099' \(.*items.ndjson:13\) has no properties.datetime"
    ):
        build_cache(
            NdjsonItems(path, workers=2, parallel_min_bytes=0),
            parse_grid(GRID),
            make_binning(frequency="annual"),
            tmp_path / "z.sqlite",
            {},
            {},
        )


def test_small_or_gzipped_files_take_the_sequential_path(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "items.ndjson", [item(0, random.Random(4))])
    assert not NdjsonItems(path).use_processes()  # below parallel_min_bytes
    assert NdjsonItems(path, workers=2, parallel_min_bytes=0).use_processes()
    assert not NdjsonItems(path, workers=1, parallel_min_bytes=0).use_processes()
    assert not NdjsonItems(
        tmp_path / "items.ndjson.gz", workers=2, parallel_min_bytes=0
    ).use_processes()
    assert [d["id"] for d in NdjsonItems(path)] == ["item-00000"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"assets":{"a":{"href":"s3://b/a.tif"}},"links":[{"href":"/abs"}]}', True),
        ('{"assets":{"a":{"href" : "https://x/a.tif"}},"links":[]}', True),
        ('{"assets":{"a":{"href":"a.tif"}},"links":[]}', False),  # relative
        ('{"assets":{"a":{"href":"./s3://a.tif"}},"links":[]}', False),
        ('{"assets":{"a":{"href":"C:a.tif"}},"links":[]}', False),  # one letter: not a scheme
        ('{"assets":{"a":{"href":5}},"links":[]}', False),  # not a string
        ('{"assets":{"a":{"href":null}},"links":[]}', False),
        ('{"assets":{"a":{"hr\\u0065f":"a.tif"}},"links":[]}', False),  # an escaped key
        ('{"assets":{"a":{"href":"s3:\\/\\/b\\/a.tif"}},"links":[]}', False),  # escapes: walked
        ('{"title":"href","assets":{"a":{"href":"/a.tif"}},"links":[]}', True),  # "href" as a value
        ('{"assets":{"a":{"href":"/a.tif","alternate":{"href":"rel"}}},"links":[]}', False),
    ],
)
def test_href_text_check_never_contradicts_the_walk(text: str, expected: bool) -> None:
    """The text check is sufficient, never wrong: True only where walking the parsed item also says True."""
    line = text.encode()
    item = json.loads(text)
    assert cache_module._hrefs_absolute_in_text(line) is expected
    if expected:
        assert cache_module._read_as_is(item)
    assert cache_module._read_as_is_line(item, line) is cache_module._read_as_is(item)

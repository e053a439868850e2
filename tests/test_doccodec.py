"""The cache's document codec: zstd with a trained dictionary, and version-1 (zlib) caches still readable."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest
import zstandard

from eostats.cache import DatasetCache, build_cache
from eostats.doccodec import MIN_TRAINING_SAMPLES, ZSTD_ENCODING, DocCodec
from eostats.grids import parse_grid
from eostats.periods import make_binning


def _doc(k: int) -> bytes:
    item = {
        "type": "Feature",
        "id": f"scene-{k:05d}",
        "properties": {"datetime": f"2021-{1 + k % 12:02d}-{1 + k % 28:02d}T00:00:00Z", "gsd": 30},
        "assets": {
            band: {"href": f"s3://bucket/path/{k:05d}/scene-{k:05d}_{band}.tif", "roles": ["data"]}
            for band in ("red", "green", "blue", "nir", "swir_1", "swir_2")
        },
    }
    return json.dumps(item, separators=(",", ":")).encode()


def test_trained_codec_round_trips_and_is_smaller_than_zlib() -> None:
    docs = [_doc(k) for k in range(600)]
    codec = DocCodec.trained(docs)
    assert codec.encoding == ZSTD_ENCODING and codec.dictionary
    blobs = [codec.compress(d) for d in docs]
    assert [codec.decompress(b) for b in blobs] == docs
    # the dictionary holds the repeated structure: far smaller than each document compressed alone
    assert sum(map(len, blobs)) < 0.5 * sum(len(zlib.compress(d, 1)) for d in docs)
    # what the cache's meta table stores rebuilds the same codec, which reads the same blobs
    again = DocCodec.from_meta(json.loads(json.dumps(codec.to_meta())))
    assert again.dictionary == codec.dictionary
    assert again.decompress(blobs[17]) == docs[17]
    # a decoder without the dictionary cannot read them: the dictionary really is used
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(blobs[17])


def test_few_documents_give_plain_zstd() -> None:
    docs = [_doc(k) for k in range(MIN_TRAINING_SAMPLES - 1)]
    codec = DocCodec.trained(docs)
    assert codec.dictionary is None and codec.to_meta() == {
        "doc_encoding": ZSTD_ENCODING,
        "doc_dictionary": None,
    }
    assert zstandard.ZstdDecompressor().decompress(codec.compress(docs[3])) == docs[3]


def test_unknown_encoding_is_named() -> None:
    with pytest.raises(ValueError, match="'json\\+lz4'"):
        DocCodec.from_meta({"doc_encoding": "json+lz4"})


def _item(k: int) -> dict:
    x0, y0 = 148.0 + 0.01 * k, -35.0
    ring = [[x0, y0], [x0 + 0.2, y0], [x0 + 0.2, y0 + 0.2], [x0, y0 + 0.2], [x0, y0]]
    return {
        "type": "Feature",
        "id": f"item-{k:03d}",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": f"2021-03-{1 + k % 28:02d}T00:00:00Z"},
        "assets": {"red": {"href": f"/data/{k}/red.tif"}},
        "links": [],
    }


def test_cache_stores_compressed_documents_and_id_lists(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    items = [_item(k) for k in range(5)]
    build_cache(items, parse_grid("au_30"), make_binning("annual"), path, {"type": "test"}, {})
    with sqlite3.connect(path) as db:
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        (blob,) = db.execute("SELECT doc FROM datasets WHERE id = 'item-003'").fetchone()
        (ids,) = db.execute("SELECT dataset_ids FROM tasks").fetchone()
    assert (
        meta["doc_encoding"] == "json+zstd" and meta["doc_dictionary"] is None
    )  # 5 items: too few to train
    assert json.loads(zstandard.ZstdDecompressor().decompress(blob)) == items[3]
    expected = "\n".join(f"item-{k:03d}" for k in range(5))
    assert zstandard.ZstdDecompressor().decompress(ids).decode() == expected
    cache = DatasetCache.open(path)
    (task,) = cache.task_ids()
    assert [d["id"] for d in cache.datasets(task)] == [f"item-{k:03d}" for k in range(5)]
    assert cache.tasks_holding(["item-002", "nope"]) == {task: [f"item-{k:03d}" for k in range(5)]}
    assert cache.tasks_holding(["nope"]) == {}


def test_version_1_cache_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    build_cache([_item(1)], parse_grid("au_30"), make_binning("annual"), path, {"type": "test"}, {})
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 1")
    with pytest.raises(ValueError, match=r"old\.sqlite has schema version 1.*rebuild the cache"):
        DatasetCache.open(path)

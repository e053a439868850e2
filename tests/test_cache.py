"""Tests for eostats.cache: building the SQLite dataset cache and reading tasks back.

Expected memberships, offsets, day counts and hashes are computed here independently: pyproj for
reprojection, tile boxes from the grid's origin and size by hand, shapely intersection areas,
``hashlib`` for fingerprints, and calendar arithmetic written out in each test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from odc.geo.geom import Geometry
from pyproj import Transformer

import eostats.cache as cache_module
from eostats.cache import (
    SCHEMA_VERSION,
    DatasetCache,
    _FootprintTiler,
    build_cache,
    parse_tile_range,
)
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.taskids import TaskId

# 20 km tiles of 1 km pixels in Australian Albers, origin near Canberra.
ORIGIN = (1_400_000.0, -4_100_000.0)
TILE = 20_000.0
ALBERS = {"crs": "EPSG:3577", "resolution": 1000, "tile_size": 20, "origin": list(ORIGIN)}
TO_ALBERS = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
TO_LONLAT = Transformer.from_crs("EPSG:3577", "EPSG:4326", always_xy=True)

# 1-degree tiles in EPSG:4326 (no reprojection: vertices can sit exactly on tile edges).
LONLAT = {"crs": "EPSG:4326", "resolution": 0.01, "tile_size": 100, "origin": [140.0, -40.0]}


def stac_item(item_id: str, ring: list[list[float]], when: str, **extra) -> dict:
    """A minimal STAC item with a polygon footprint (lon, lat) and a datetime."""
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "test-collection",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [
            min(p[0] for p in ring),
            min(p[1] for p in ring),
            max(p[0] for p in ring),
            max(p[1] for p in ring),
        ],
        "properties": {"datetime": when, "eo:cloud_cover": 10.5},
        "assets": {"red": {"href": f"https://example.com/{item_id}/red.tif", "roles": ["data"]}},
        "links": [],
    }
    item.update(extra)
    return item


def lonlat_square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y1], [x1, y1], [x1, y0], [x0, y0], [x0, y1]]


def random_albers_items(n: int, seed: int) -> list[dict]:
    """Rotated quadrilaterals 5..60 km across around the origin area, over three years."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        cx = ORIGIN[0] + rng.uniform(10_000, 110_000)
        cy = ORIGIN[1] + rng.uniform(10_000, 110_000)
        half = rng.uniform(2_500, 30_000)
        angle = rng.uniform(0, math.pi / 2)
        ring = []
        for k in range(4):
            a = angle + k * math.pi / 2 + rng.uniform(-0.2, 0.2)
            lon, lat = TO_LONLAT.transform(cx + half * math.cos(a), cy + half * math.sin(a))
            ring.append([lon, lat])
        ring.append(ring[0])
        when = datetime(2018, 1, 1) + timedelta(seconds=rng.uniform(0, 3 * 365 * 86400))
        items.append(stac_item(f"ds-{i:04d}", ring, when.isoformat() + "Z"))
    return items


def footprint_in_albers(geometry: dict) -> shapely.Geometry:
    """The footprint reprojected vertex by vertex with pyproj (no densification)."""
    return shapely.transform(
        shapely.geometry.shape(geometry),
        lambda xy: __import__("numpy").column_stack(TO_ALBERS.transform(xy[:, 0], xy[:, 1])),
    )


def brute_force_tiles(geometry: dict, x_range: range, y_range: range) -> set[tuple[int, int]]:
    """Tiles whose hand-computed box shares a positive area with the footprint."""
    shape = footprint_in_albers(geometry)
    hits = set()
    for x in x_range:
        for y in y_range:
            tile = shapely.box(
                ORIGIN[0] + x * TILE,
                ORIGIN[1] + y * TILE,
                ORIGIN[0] + (x + 1) * TILE,
                ORIGIN[1] + (y + 1) * TILE,
            )
            if shape.intersection(tile).area > 0:
                hits.add((x, y))
    return hits


def tile_offset_by_hand(x: int, y: int) -> int:
    """Solar offset of an Albers test tile: centre → lon → nearest whole hour."""
    lon, _ = TO_LONLAT.transform(ORIGIN[0] + (x + 0.5) * TILE, ORIGIN[1] + (y + 0.5) * TILE)
    return math.floor(lon / 15 + 0.5)


def sha1_of(ids) -> str:
    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()


def build(tmp_path: Path, items, grid=ALBERS, binning=None, settings=None, name="c.sqlite"):
    path = tmp_path / name
    summary = build_cache(
        items,
        parse_grid(grid),
        binning or make_binning("annual"),
        path,
        {"type": "test"},
        settings or {},
    )
    return summary, DatasetCache.open(path)


# ---------------------------------------------------------------------------------------------
# membership


def test_membership_matches_brute_force(tmp_path: Path) -> None:
    items = random_albers_items(60, seed=3)
    # a multipolygon, a polygon with a hole and 3-D coordinates take the per-item path
    a = items[0]["geometry"]["coordinates"][0]
    b = items[1]["geometry"]["coordinates"][0]
    items.append(
        {**items[2], "id": "multi", "geometry": {"type": "MultiPolygon", "coordinates": [[a], [b]]}}
    )
    items.append(
        {
            **items[3],
            "id": "with-height",
            "geometry": {"type": "Polygon", "coordinates": [[[*p, 500.0] for p in a]]},
        }
    )
    summary, cache = build(tmp_path, items)

    expected: dict[tuple[int, int], set[str]] = {}
    for item in items:
        geometry = item["geometry"]
        if geometry["type"] == "MultiPolygon":
            parts = [
                brute_force_tiles(
                    {"type": "Polygon", "coordinates": p}, range(-2, 10), range(-2, 10)
                )
                for p in geometry["coordinates"]
            ]
            tiles = set().union(*parts)
        elif len(geometry["coordinates"][0][0]) == 3:
            ring = [p[:2] for p in geometry["coordinates"][0]]
            tiles = brute_force_tiles(
                {"type": "Polygon", "coordinates": [ring]}, range(-2, 10), range(-2, 10)
            )
        else:
            tiles = brute_force_tiles(geometry, range(-2, 10), range(-2, 10))
        assert tiles, item["id"]
        for tile in tiles:
            expected.setdefault(tile, set()).add(item["id"])

    got: dict[tuple[int, int], set[str]] = {}
    for task in cache.task_ids():
        got.setdefault((task.x, task.y), set()).update(cache.dataset_ids(task))
    assert got == expected
    assert summary.n_datasets == len(items)


def test_vectorised_footprints_equal_the_grid_method() -> None:
    """The batch path returns what TileGrid.tiles_for_geometry returns, edge cases included."""
    grid = parse_grid(LONLAT)
    geometries = [
        # exactly one tile: edges on tile edges must not leak into the neighbours (quirk Q14)
        {"type": "Polygon", "coordinates": [lonlat_square(141, -38, 142, -37)]},
        # two tiles exactly, sharing the vertical edge at lon 142
        {"type": "Polygon", "coordinates": [lonlat_square(141, -38, 143, -37)]},
        # a thin strip crossing tile (2, 2) without a vertex in it or a corner of it inside
        {
            "type": "Polygon",
            "coordinates": [
                [[141.5, -37.9], [143.5, -37.8], [143.5, -37.7], [141.5, -37.8], [141.5, -37.9]]
            ],
        },
        # a triangle whose tip touches the corner (142, -37) of four tiles
        {
            "type": "Polygon",
            "coordinates": [[[141.2, -37.8], [142.0, -37.0], [141.2, -37.2], [141.2, -37.8]]],
        },
        # unclosed ring, and a ring listed clockwise
        {
            "type": "Polygon",
            "coordinates": [[[140.5, -39.5], [142.5, -39.5], [142.5, -38.5], [140.5, -38.5]]],
        },
        {"type": "Polygon", "coordinates": [lonlat_square(144.25, -35.75, 146.75, -33.25)[::-1]]},
    ]
    rng = random.Random(7)
    for _ in range(200):
        x, y = rng.uniform(140, 150), rng.uniform(-39, -30)
        w, h = (
            rng.choice([0.5, 1.0, 2.0, rng.uniform(0.1, 3)]),
            rng.choice([1.0, rng.uniform(0.1, 3)]),
        )
        x, y = (round(x), round(y)) if rng.random() < 0.3 else (x, y)
        geometries.append({"type": "Polygon", "coordinates": [lonlat_square(x, y, x + w, y + h)]})
    fast = _FootprintTiler(grid).tiles(geometries)
    slow = [grid.tiles_for_geometry(Geometry(g, "EPSG:4326")) for g in geometries]
    assert fast == slow
    assert fast[0] == [(1, 2)]
    assert fast[1] == [(1, 2), (2, 2)]
    assert fast[2] == [(1, 2), (2, 2), (3, 2)]
    assert fast[3] == [(1, 2)]


def test_convex_footprints_equal_the_grid_method() -> None:
    """Convex rings (decided by separating axes) and the rest (shapely) give the grid's tiles, on a grid where
    vertices sit exactly on tile edges and corners and on a reprojected one."""
    rng = random.Random(11)

    def polygon(cx: float, cy: float, radius: float, k: int, snap: bool) -> list[list[float]]:
        start = rng.uniform(0, 2 * math.pi)
        ring = []
        for j in range(k):
            angle = start + 2 * math.pi * j / k
            x, y = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
            if (
                snap and rng.random() < 0.5
            ):  # onto a tile edge (whole degrees), so edges can lie along one
                x, y = (round(x), y) if rng.random() < 0.5 else (x, round(y))
            ring.append([x, y])
        if rng.random() < 0.5:
            ring.reverse()  # clockwise
        return [*ring, ring[0]]

    geometries = [
        # a tile exactly, a tile's corner touched by a diamond's tip, a quad along a tile edge
        {"type": "Polygon", "coordinates": [lonlat_square(142, -37, 143, -36)]},
        {
            "type": "Polygon",
            "coordinates": [
                [[141.5, -37.5], [142, -37], [141.5, -36.5], [141, -37], [141.5, -37.5]]
            ],
        },
        {
            "type": "Polygon",
            "coordinates": [
                [[141.2, -37.0], [143.7, -37.0], [143.2, -36.4], [141.5, -36.5], [141.2, -37.0]]
            ],
        },
        # collinear and repeated points, a bow tie, a concave arrow: not convex
        {
            "type": "Polygon",
            "coordinates": [
                [[141.2, -37.5], [142.0, -37.5], [143.5, -37.5], [143.5, -36.2], [141.2, -37.5]]
            ],
        },
        {
            "type": "Polygon",
            "coordinates": [
                [[141.2, -37.5], [143.5, -37.5], [143.5, -37.5], [143.5, -36.2], [141.2, -37.5]]
            ],
        },
        {
            "type": "Polygon",
            "coordinates": [
                [[141.2, -37.5], [143.5, -36.2], [143.5, -37.5], [141.2, -36.2], [141.2, -37.5]]
            ],
        },
        {
            "type": "Polygon",
            "coordinates": [
                [[141.2, -37.5], [144.5, -36.9], [141.2, -36.2], [142.3, -36.9], [141.2, -37.5]]
            ],
        },
    ]
    for _ in range(300):
        k = rng.choice([3, 4, 4, 5, 6, 12])
        geometries.append(
            {
                "type": "Polygon",
                "coordinates": [
                    polygon(
                        rng.uniform(141, 149),
                        rng.uniform(-39, -31),
                        rng.choice([0.3, 0.7, 1.0, 1.5, rng.uniform(0.1, 3)]),
                        k,
                        snap=rng.random() < 0.4,
                    )
                ],
            }
        )
    for spec in (LONLAT, ALBERS):
        grid = parse_grid(spec)
        fast = _FootprintTiler(grid).tiles(geometries)
        slow = [grid.tiles_for_geometry(Geometry(g, "EPSG:4326")) for g in geometries]
        assert fast == slow, spec
        assert sum(len(t) for t in fast) > 1000
    assert fast[3] == slow[3] and len(fast[3]) > 1


def test_distinct_days_per_task_by_table_and_by_sorting(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    values = [[rng.randrange(1000, 1400) for _ in range(rng.randrange(1, 30))] for _ in range(200)]
    values[7] = [5, 5, 5]
    values[8] = [-3, 9000, -3, 12]  # a wide span
    task = np.repeat(np.arange(len(values)), [len(v) for v in values])
    flat = np.array([d for v in values for d in v])
    bounds = np.searchsorted(task, np.arange(len(values) + 1))
    expected = [len(set(v)) for v in values]
    assert cache_module._distinct_per_task(task, flat, bounds).tolist() == expected
    monkeypatch.setattr(cache_module, "_DENSE_CELLS", 0)  # the sorting path
    assert cache_module._distinct_per_task(task, flat, bounds).tolist() == expected


def test_tile_range_setting_restricts_tasks(tmp_path: Path) -> None:
    items = random_albers_items(40, seed=5)
    summary, cache = build(tmp_path, items, settings={"tiles": "1:3,0:2"})
    tiles = {(t.x, t.y) for t in cache.task_ids()}
    expected_tiles = set()
    kept = set()
    for item in items:
        inside = {
            t
            for t in brute_force_tiles(item["geometry"], range(-2, 10), range(-2, 10))
            if 1 <= t[0] < 3 and 0 <= t[1] < 2
        }
        expected_tiles |= inside
        if inside:
            kept.add(item["id"])
    assert tiles == expected_tiles
    stored = {i for t in cache.task_ids() for i in cache.dataset_ids(t)}
    assert stored == kept
    assert summary.n_outside == len(items) - len(kept)
    # datasets outside every task are not stored at all
    outside = sorted({i["id"] for i in items} - kept)
    assert outside
    with pytest.raises(KeyError, match=outside[0]):
        cache.dataset(outside[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:3,0:2", (1, 3, 0, 2)), ("-4:-1, 7:9", (-4, -1, 7, 9)), (":5,3:", (None, 5, 3, None))],
)
def test_parse_tile_range(text: str, expected) -> None:
    assert parse_tile_range(text) == expected


@pytest.mark.parametrize("text", ["1:3", "1:3,0", "a:b,1:2", "1:2:3,4:5"])
def test_parse_tile_range_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_tile_range(text)


# ---------------------------------------------------------------------------------------------
# binning, offsets, days


def test_plus_ten_hours_solar_offset_moves_the_new_year(tmp_path: Path) -> None:
    # A small footprint inside tile (2, 2) of the Albers grid, near lon 149.5 (offset +10 h).
    cx, cy = ORIGIN[0] + 2.5 * TILE, ORIGIN[1] + 2.5 * TILE
    ring = [
        list(TO_LONLAT.transform(cx + dx, cy + dy))
        for dx, dy in [(-5e3, 5e3), (5e3, 5e3), (5e3, -5e3), (-5e3, -5e3), (-5e3, 5e3)]
    ]
    assert tile_offset_by_hand(2, 2) == 10
    items = [
        # 14:30 UTC on 31 Dec is 00:30 local on 1 Jan: the 2020 task
        stac_item("new-year", ring, "2019-12-31T14:30:00Z"),
        # 13:30 UTC is still 23:30 local on 31 Dec: the 2019 task
        stac_item("old-year", ring, "2019-12-31T13:30:00Z"),
        # 1 Mar 2020 13:00 and 15:00 UTC: one UTC date, two solar dates (23:00 and 01:00 local)
        stac_item("march-a", ring, "2020-03-01T13:00:00Z"),
        stac_item("march-b", ring, "2020-03-01T15:00:00+00:00"),
        # the same instant written with a +10:00 zone: 2020-03-02T00:30 local = 14:30 UTC
        stac_item("zoned", ring, "2020-03-02T00:30:00+10:00"),
    ]
    summary, cache = build(tmp_path, items)
    assert cache.task_ids() == [TaskId("2019--P1Y", 2, 2), TaskId("2020--P1Y", 2, 2)]
    assert cache.dataset_ids(TaskId("2019--P1Y", 2, 2)) == ["old-year"]
    record = cache.task(TaskId("2020--P1Y", 2, 2))
    assert cache.dataset_ids(record.task_id) == ["march-a", "march-b", "new-year", "zoned"]
    assert record.utc_offset == 10
    # UTC dates: 2019-12-31, 2020-03-01 (a, b, zoned)            -> 2
    # solar dates: 2020-01-01, 2020-03-01 (a), 2020-03-02 (b, zoned) -> 3
    assert (record.n_days_utc, record.n_days_solar) == (2, 3)
    assert record.n_datasets == 4
    assert summary.periods == ("2019--P1Y", "2020--P1Y")
    # the stored time column is UTC
    row = cache._db.execute("SELECT datetime FROM datasets WHERE id = 'zoned'").fetchone()
    assert row == ("2020-03-01T14:30:00.000000Z",)


def test_offsets_follow_the_tile_centres(tmp_path: Path) -> None:
    items = random_albers_items(30, seed=11)
    _, cache = build(tmp_path, items)
    for record in cache.tasks():
        assert record.utc_offset == tile_offset_by_hand(record.task_id.x, record.task_id.y)


def test_solar_offset_rule_setting(tmp_path: Path) -> None:
    # Tile 0 of a lon/lat grid starting at 76 W has its centre at 75.5 W:
    # nearest hour -5, odc-stats' int(lon/15 + 0.5) gives -4 (quirk Q4).
    grid = {**LONLAT, "origin": [-76.0, 40.0]}
    items = [stac_item("a", lonlat_square(-75.9, 40.1, -75.1, 40.9), "2020-06-01T12:00:00Z")]
    _, default = build(tmp_path, items, grid=grid, name="round.sqlite")
    _, compat = build(
        tmp_path, items, grid=grid, settings={"solar_offset_rule": "odc-stats"}, name="odc.sqlite"
    )
    assert default.tasks()[0].utc_offset == -5
    assert compat.tasks()[0].utc_offset == -4


def test_all_frequency_without_range_is_labelled_after_streaming(tmp_path: Path) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)  # tile (1, 2), centre lon 141.5: +9 h
    items = [
        # 2016-12-31T16:00Z is 2017-01-01T01:00 local: the local years run 2017..2021
        stac_item("first", square, "2016-12-31T16:00:00Z"),
        stac_item("middle", square, "2019-05-01T00:00:00Z"),
        stac_item("last", square, "2021-12-31T10:00:00Z"),
    ]
    summary, cache = build(tmp_path, items, grid=LONLAT, binning=make_binning("all"))
    assert cache.task_ids() == [TaskId("2017--P5Y", 1, 2)]
    assert summary.periods == ("2017--P5Y",)
    assert cache.dataset_ids(TaskId("2017--P5Y", 1, 2)) == ["first", "last", "middle"]


def test_temporal_range_drops_items_outside_in_local_time(tmp_path: Path) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)  # +9 h
    items = [
        stac_item("in", square, "2020-02-10T00:00:00Z"),
        stac_item("late", square, "2020-02-29T15:30:00Z"),  # 2020-03-01T00:30 local
        stac_item("early", square, "2020-01-31T15:30:00Z"),  # 2020-02-01T00:30 local: in
    ]
    summary, cache = build(
        tmp_path, items, grid=LONLAT, binning=make_binning(temporal_range="2020-02--P1M")
    )
    assert cache.task_ids() == [TaskId("2020-02--P1M", 1, 2)]
    assert cache.dataset_ids(TaskId("2020-02--P1M", 1, 2)) == ["early", "in"]
    assert summary.n_outside == 1
    with pytest.raises(KeyError):
        cache.dataset("late")


def test_rolling_frequency_puts_one_dataset_in_several_tasks(tmp_path: Path) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)
    items = [stac_item("mar", square, "2020-03-15T00:00:00Z")]
    _, cache = build(
        tmp_path, items, grid=LONLAT, binning=make_binning("rolling-3months", "2020--P1Y")
    )
    # windows starting Jan, Feb and Mar hold 15 March
    assert [t.period for t in cache.task_ids()] == ["2020-01--P3M", "2020-02--P3M", "2020-03--P3M"]
    assert cache.summary["n_datasets"] == 1


# ---------------------------------------------------------------------------------------------
# documents, hashes, items


def test_documents_round_trip(tmp_path: Path) -> None:
    items = random_albers_items(25, seed=1)
    items[0]["properties"]["title"] = "Ünïcødé ✓"
    items[1]["properties"]["nested"] = {"list": [1, 2.5, None, True], "empty": {}}
    _, cache = build(tmp_path, items)
    by_id = {i["id"]: i for i in items}
    seen = set()
    for task in cache.task_ids():
        docs = cache.datasets(task)
        assert [d["id"] for d in docs] == cache.dataset_ids(task)
        for doc in docs:
            assert doc == by_id[doc["id"]]
            seen.add(doc["id"])
    assert seen == set(by_id)
    assert cache.dataset(items[0]["id"])["properties"]["title"] == "Ünïcødé ✓"


def test_dataset_hash_is_sha1_of_sorted_ids_and_stable(tmp_path: Path) -> None:
    items = random_albers_items(40, seed=2)
    _, cache = build(tmp_path, items, name="a.sqlite")
    hashes = cache.dataset_hashes()
    assert set(hashes) == set(cache.task_ids())
    for task, digest in hashes.items():
        assert digest == sha1_of(cache.dataset_ids(task))
        assert cache.task(task).dataset_hash == digest

    shuffled = list(items)
    random.Random(0).shuffle(shuffled)
    _, again = build(tmp_path, shuffled, name="b.sqlite")
    assert again.dataset_hashes() == hashes

    # dropping one dataset changes exactly the hashes of the tasks that held it
    dropped = items[0]["id"]
    _, fewer = build(tmp_path, items, settings={"exclude_datasets": [dropped]}, name="c.sqlite")
    changed = {t for t, h in hashes.items() if fewer.dataset_hashes().get(t) != h}
    holding = {t for t in cache.task_ids() if dropped in cache.dataset_ids(t)}
    assert changed == holding and holding


def test_duplicates_and_exclusions(tmp_path: Path) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)
    first = stac_item("dup", square, "2020-01-10T00:00:00Z", note="first")
    items = [
        first,
        stac_item("dup", square, "2020-01-11T00:00:00Z", note="second"),
        stac_item("gone", square, "2020-01-12T00:00:00Z"),
        stac_item("kept", square, "2020-01-13T00:00:00Z"),
    ]
    summary, cache = build(tmp_path, items, grid=LONLAT, settings={"exclude_datasets": ["gone"]})
    task = TaskId("2020--P1Y", 1, 2)
    assert cache.dataset_ids(task) == ["dup", "kept"]
    assert cache.dataset("dup")["note"] == "first"
    assert (summary.n_items, summary.n_duplicates, summary.n_excluded) == (4, 1, 1)


def test_time_range_items_use_the_midpoint(tmp_path: Path) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)
    item = stac_item("range", square, None)
    item["properties"].update(
        {"start_datetime": "2020-12-31T00:00:00Z", "end_datetime": "2021-01-02T00:00:00Z"}
    )
    _, cache = build(tmp_path, [item], grid=LONLAT)
    # midpoint 2021-01-01T00:00Z (+9 h local): the 2021 task
    assert cache.task_ids() == [TaskId("2021--P1Y", 1, 2)]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda i: i.pop("geometry"), "no geometry"),
        (lambda i: i.update(geometry=None), "no geometry"),
        (lambda i: i["properties"].pop("datetime"), "datetime"),
        (lambda i: i["properties"].update(datetime="not a date"), "datetime"),
        (lambda i: i.update(geometry={"type": "Polygon", "coordinates": "junk"}), "geometry"),
    ],
)
def test_invalid_items_name_the_item(tmp_path: Path, change, reason: str) -> None:
    square = lonlat_square(141.2, -37.8, 141.8, -37.2)
    good = stac_item("good", square, "2020-01-10T00:00:00Z")
    bad = stac_item("bad-item-42", square, "2020-01-10T00:00:00Z")
    change(bad)
    with pytest.raises(ValueError, match=f"bad-item-42.*{reason}"):
        build(tmp_path, [good, bad], grid=LONLAT)
    assert os.listdir(tmp_path) == []

    summary, cache = build(tmp_path, [good, bad], grid=LONLAT, settings={"invalid_items": "skip"})
    assert [s.id for s in summary.skipped] == ["bad-item-42"]
    assert reason in summary.skipped[0].reason
    assert cache.dataset_ids(TaskId("2020--P1Y", 1, 2)) == ["good"]
    assert cache.summary["skipped"][0]["id"] == "bad-item-42"


def test_item_without_id_is_rejected(tmp_path: Path) -> None:
    item = stac_item("x", lonlat_square(141.2, -37.8, 141.8, -37.2), "2020-01-10T00:00:00Z")
    del item["id"]
    with pytest.raises(ValueError, match="item number 1 .no id"):
        build(tmp_path, [item], grid=LONLAT)


# ---------------------------------------------------------------------------------------------
# file: atomicity, schema, opening


def test_failed_build_leaves_no_file(tmp_path: Path) -> None:
    items = random_albers_items(30, seed=4)

    def stream():
        yield from items[:20]
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        build(tmp_path, stream())
    assert os.listdir(tmp_path) == []

    # a failed rebuild keeps the previous cache intact
    _, cache = build(tmp_path, items)
    before = cache.dataset_hashes()
    cache.close()
    with pytest.raises(RuntimeError):
        build(tmp_path, stream())
    assert os.listdir(tmp_path) == ["c.sqlite"]
    assert DatasetCache.open(tmp_path / "c.sqlite").dataset_hashes() == before


def test_schema_and_metadata(tmp_path: Path) -> None:
    items = random_albers_items(10, seed=9)
    settings = {"tiles": "0:8,0:8", "exclude_datasets": [], "extra": {"kept": True}}
    binning = make_binning("seasonal")
    _, cache = build(tmp_path, items, binning=binning, settings=settings)
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"meta", "datasets", "tasks"}
    columns = {r[1] for r in db.execute("PRAGMA table_info(tasks)")}
    assert columns == {
        "period",
        "x",
        "y",
        "n_datasets",
        "n_days_utc",
        "n_days_solar",
        "utc_offset",
        "dataset_hash",
        "dataset_ids",
    }
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["format"]) == "eostats-dataset-cache"
    assert json.loads(meta["grid"]) == parse_grid(ALBERS).to_dict()
    # the per-task look-ups use the primary key and the id index, not a scan
    for sql, args in (
        (
            "SELECT dataset_ids FROM tasks WHERE period = ? AND x = ? AND y = ?",
            ("2018-12--P3M", 1, 1),
        ),
        (
            "SELECT doc FROM datasets WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            ('["a","b"]',),
        ),
    ):
        plan = " ".join(str(r) for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "SCAN datasets" not in plan and "SCAN tasks" not in plan, plan

    assert cache.grid.to_dict() == parse_grid(ALBERS).to_dict()
    assert cache.binning == binning
    assert cache.source == {"type": "test"}
    assert cache.settings == settings


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        DatasetCache.open(missing)
    text = tmp_path / "notes.sqlite"
    text.write_text("this is not a database, just some text that is long enough" * 20)
    with pytest.raises(ValueError, match="notes.sqlite"):
        DatasetCache.open(text)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE meta (key TEXT, value TEXT)").connection.commit()
    with pytest.raises(ValueError, match="other.sqlite.*not an eostats dataset cache"):
        DatasetCache.open(other)


def test_unknown_task_is_named(tmp_path: Path) -> None:
    _, cache = build(tmp_path, random_albers_items(5, seed=1))
    task = TaskId("1999--P1Y", 3, 4)
    assert not cache.has_task(task)
    for method in (cache.dataset_ids, cache.datasets, cache.task):
        with pytest.raises(KeyError, match=r"1999--P1Y/03/04"):
            method(task)
    assert cache.has_task(cache.task_ids()[0])


def test_cache_is_read_only_and_picklable(tmp_path: Path) -> None:
    _, cache = build(tmp_path, random_albers_items(8, seed=6))
    with pytest.raises(sqlite3.OperationalError):
        cache._db.execute("DELETE FROM tasks")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.task_ids() == cache.task_ids()
    assert clone.dataset_hashes() == cache.dataset_hashes()


def test_empty_source_makes_an_empty_cache(tmp_path: Path) -> None:
    summary, cache = build(tmp_path, [])
    assert (summary.n_items, summary.n_tasks) == (0, 0)
    assert cache.task_ids() == [] and cache.dataset_hashes() == {}


# ---------------------------------------------------------------------------------------------
# integration with the sample collection


def test_sample_catalog_round_trip(sample_catalog: Path, tmp_path: Path) -> None:
    from eostats.sources import read_items

    source = {"type": "stac_catalog", "path": str(sample_catalog)}
    items = list(read_items(source))
    grid = {
        "crs": "EPSG:3577",
        "resolution": 30,
        "tile_size": 512,
        "origin": [-2_688_000, -5_472_000],
    }
    binning = make_binning("annual", years=[2020, 2021])
    path = tmp_path / "sample.sqlite"
    summary = build_cache(read_items(source), parse_grid(grid), binning, path, source, {})
    cache = DatasetCache.open(path)
    assert summary.n_items == len(items) > 0
    assert cache.source == source

    size = 512 * 30.0
    expected: dict[TaskId, set[str]] = {}
    for item in items:
        shape = footprint_in_albers(item["geometry"])
        minx, miny, maxx, maxy = shape.bounds
        t_utc = datetime.fromisoformat(item["properties"]["datetime"]).replace(tzinfo=None)
        for x in range(
            math.floor((minx + 2_688_000) / size) - 1, math.floor((maxx + 2_688_000) / size) + 2
        ):
            for y in range(
                math.floor((miny + 5_472_000) / size) - 1, math.floor((maxy + 5_472_000) / size) + 2
            ):
                tile = shapely.box(
                    -2_688_000 + x * size,
                    -5_472_000 + y * size,
                    -2_688_000 + (x + 1) * size,
                    -5_472_000 + (y + 1) * size,
                )
                if shape.intersection(tile).area <= 0:
                    continue
                cx, cy = -2_688_000 + (x + 0.5) * size, -5_472_000 + (y + 0.5) * size
                lon, _ = TO_LONLAT.transform(cx, cy)
                local = t_utc + timedelta(hours=math.floor(lon / 15 + 0.5))
                if local.year in (2020, 2021):
                    expected.setdefault(TaskId(f"{local.year}--P1Y", x, y), set()).add(item["id"])
    assert len(expected) >= 4  # the sample crosses tile edges and years
    assert {t: set(cache.dataset_ids(t)) for t in cache.task_ids()} == expected
    by_id = {i["id"]: i for i in items}
    for task in cache.task_ids():
        assert cache.datasets(task) == [by_id[i] for i in cache.dataset_ids(task)]

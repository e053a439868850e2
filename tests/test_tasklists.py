"""Tests for eostats.tasklists: odc-stats' task CSV and per-period GeoJSON.

Expected text and properties are written out by hand from odc-stats' formats; tile extents are
computed here from the grid's origin and tile size (and pyproj for a projected grid).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from eostats.cache import DatasetCache, build_cache
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.tasklists import (
    periods,
    write_period_geojson,
    write_task_csv,
)

# 1-degree tiles in EPSG:4326: tile (x, y) spans lon 140+x..141+x, lat -40+y..-39+y.
LONLAT = {"crs": "EPSG:4326", "resolution": 0.01, "tile_size": 100, "origin": [140.0, -40.0]}


def item(item_id: str, lon0: float, lat0: float, lon1: float, lat1: float, when: str) -> dict:
    ring = [[lon0, lat1], [lon1, lat1], [lon1, lat0], [lon0, lat0], [lon0, lat1]]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": when},
        "assets": {},
        "links": [],
    }


# Tile (1, 2): lon 141..142, centre 141.5 -> +9 h. Tile (2, 2): centre 142.5 -> +10 h (9.5 rounds
# up). Tile (-3, 12): lon 137..138, lat -28..-27, centre 137.5 -> +9 h.
ITEMS = [
    item("a", 141.2, -37.8, 141.8, -37.2, "2020-01-05T03:00:00Z"),
    # same UTC date as "a", next solar date (20:00 UTC + 9 h = 05:00 on 6 Jan)
    item("b", 141.2, -37.8, 141.8, -37.2, "2020-01-05T20:00:00Z"),
    # spans tiles (1, 2) and (2, 2)
    item("c", 141.5, -37.8, 142.5, -37.2, "2020-02-01T00:00:00Z"),
    item("d", 137.2, -27.8, 137.8, -27.2, "2020-07-01T00:00:00Z"),
    item("e", 141.2, -37.8, 141.8, -37.2, "2021-03-01T00:00:00Z"),
]


@pytest.fixture
def cache(tmp_path: Path) -> DatasetCache:
    path = tmp_path / "run.sqlite"
    build_cache(ITEMS, parse_grid(LONLAT), make_binning("annual"), path, {"type": "test"}, {})
    return DatasetCache.open(path)


def test_csv_exact_text(cache: DatasetCache, tmp_path: Path) -> None:
    out = write_task_csv(cache, tmp_path / "out" / "run.csv")
    expected = (
        '"T","X","Y","datasets","days"\n'
        '"2020--P1Y", -0003, +0012,    1,    1\n'
        '"2020--P1Y", +0001, +0002,    3,    2\n'
        '"2020--P1Y", +0002, +0002,    1,    1\n'
        '"2021--P1Y", +0001, +0002,    1,    1\n'
    )
    assert Path(out).read_text() == expected
    assert sorted(os.listdir(tmp_path / "out")) == ["run.csv"]


def test_csv_is_readable_by_the_workflow_reader(cache: DatasetCache, tmp_path: Path) -> None:
    import csv

    path = write_task_csv(cache, tmp_path / "run.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    assert rows[0] == ["T", "X", "Y", "datasets", "days"]
    assert [(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows[1:]] == [
        ("2020--P1Y", -3, 12, 1, 1),
        ("2020--P1Y", 1, 2, 3, 2),
        ("2020--P1Y", 2, 2, 1, 1),
        ("2021--P1Y", 1, 2, 1, 1),
    ]


def test_periods(cache: DatasetCache) -> None:
    assert periods(cache) == ["2020--P1Y", "2021--P1Y"]


def test_geojson_properties_and_geometry(cache: DatasetCache, tmp_path: Path) -> None:
    path = write_period_geojson(cache, "2020--P1Y", tmp_path / "run-2020--P1Y.geojson")
    doc = json.loads(Path(path).read_text())
    assert doc["type"] == "FeatureCollection"
    props = [f["properties"] for f in doc["features"]]
    # padding: largest |index| over the cache is 12 -> 2 digits ("-3" already has 2 characters)
    assert props == [
        {
            "title": "-3,12",
            "region_code": "x-3y12",
            "ix": -3,
            "iy": 12,
            "utc_offset": 9.0,
            "total": 1,
            "days": 1,
        },
        {
            "title": "01,02",
            "region_code": "x01y02",
            "ix": 1,
            "iy": 2,
            "utc_offset": 9.0,
            "total": 3,
            "days": 3,
        },
        {
            "title": "02,02",
            "region_code": "x02y02",
            "ix": 2,
            "iy": 2,
            "utc_offset": 10.0,
            "total": 1,
            "days": 1,
        },
    ]
    assert all(isinstance(p["utc_offset"], float) for p in props)
    for feature in doc["features"]:
        x, y = feature["properties"]["ix"], feature["properties"]["iy"]
        bounds = shapely.geometry.shape(feature["geometry"]).bounds
        assert bounds == pytest.approx((140 + x, -40 + y, 141 + x, -39 + y), abs=1e-9)


def test_geojson_of_other_period_and_unknown_period(cache: DatasetCache, tmp_path: Path) -> None:
    path = write_period_geojson(cache, "2021--P1Y", tmp_path / "g.geojson")
    doc = json.loads(Path(path).read_text())
    assert [f["properties"]["title"] for f in doc["features"]] == ["01,02"]
    with pytest.raises(ValueError, match="1999--P1Y"):
        write_period_geojson(cache, "1999--P1Y", tmp_path / "none.geojson")
    assert not (tmp_path / "none.geojson").exists()


def test_geopandas_reads_the_geojson(cache: DatasetCache, tmp_path: Path) -> None:
    path = write_period_geojson(cache, "2020--P1Y", tmp_path / "run-2020--P1Y.geojson")
    frame = geopandas.read_file(path)
    assert len(frame) == 3
    assert frame.crs.to_epsg() == 4326
    assert list(frame["region_code"]) == ["x-3y12", "x01y02", "x02y02"]
    assert list(frame["total"]) == [1, 3, 1]
    assert frame.geometry.iloc[1].area == pytest.approx(1.0)


def test_projected_tile_is_densified_in_lonlat(tmp_path: Path) -> None:
    # 96 km Albers tiles (au_30 layout); x49y24-like tiles are far from any pole, so the
    # lon/lat outline is close to, but not exactly, the 4 reprojected corners.
    grid = parse_grid("au_30")
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
    to_lonlat = Transformer.from_crs("EPSG:3577", "EPSG:4326", always_xy=True)
    x0, y0 = -2_688_000 + 49 * 96_000, -5_472_000 + 24 * 96_000
    cx, cy = to_lonlat.transform(x0 + 48_000, y0 + 48_000)
    items = [item("z", cx - 0.1, cy - 0.1, cx + 0.1, cy + 0.1, "2020-01-01T12:00:00Z")]
    path = tmp_path / "au.sqlite"
    build_cache(items, grid, make_binning("annual"), path, {"type": "test"}, {})
    cache = DatasetCache.open(path)
    out = write_period_geojson(cache, "2020--P1Y", tmp_path / "au.geojson")
    feature = json.loads(Path(out).read_text())["features"][0]
    assert (feature["properties"]["ix"], feature["properties"]["iy"]) == (49, 24)
    ring = np.array(feature["geometry"]["coordinates"][0])
    # a quarter-tile densification: at least 4 points per side
    assert len(ring) >= 17
    # every vertex maps back onto the tile boundary in Albers
    bx, by = to_albers.transform(ring[:, 0], ring[:, 1])
    on_edge = np.minimum.reduce(
        [np.abs(bx - x0), np.abs(bx - x0 - 96_000), np.abs(by - y0), np.abs(by - y0 - 96_000)]
    )
    assert on_edge.max() < 0.01
    # the corners are there
    corners = np.column_stack(to_lonlat.transform([x0, x0 + 96_000], [y0, y0 + 96_000]))
    for corner in corners:
        assert np.min(np.hypot(*(ring - corner).T)) < 1e-9


def test_tile_across_the_antimeridian_is_split(tmp_path: Path) -> None:
    # PDC Mercator (EPSG:3832) is centred on 150 E, so x = +3 339 585 m is the antimeridian;
    # the tile spans x 3 150 000..3 350 000 m (lon 178.3..180.1), centre lon 179.2: +12 h.
    grid = parse_grid(
        {
            "crs": "EPSG:3832",
            "resolution": 1000,
            "tile_size": 200,
            "origin": [3_150_000, -2_000_000],
        }
    )
    items = [item("fiji", 178.6, -17.5, 179.6, -16.5, "2020-05-01T00:00:00Z")]
    path = tmp_path / "pacific.sqlite"
    build_cache(items, grid, make_binning("annual"), path, {"type": "test"}, {})
    cache = DatasetCache.open(path)
    (record,) = cache.tasks()
    assert (record.task_id.x, record.task_id.y, record.utc_offset) == (0, 0, 12)
    out = write_period_geojson(cache, "2020--P1Y", tmp_path / "pacific.geojson")
    geometry = json.loads(Path(out).read_text())["features"][0]["geometry"]
    assert geometry["type"] == "MultiPolygon"
    lons = [p[0] for poly in geometry["coordinates"] for ring in poly for p in ring]
    assert min(lons) == pytest.approx(-180, abs=1e-6)
    assert max(lons) == pytest.approx(180, abs=1e-6)

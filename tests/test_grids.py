"""Tests for eostats.grids: odc-stats' named grids, custom forms, tile indexing and footprints.

Expected values are written out by hand (origins and tile sizes from odc-stats' grid table) or
computed here with pyproj and floor arithmetic, never with the code under test.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import shapely
from affine import Affine
from odc.geo.geom import Geometry, box, line, point, polygon
from pyproj import Transformer

from eostats.grids import KNOWN_GRID_NAMES, TileGrid, parse_grid

AU_ORIGIN = (-2_688_000.0, -5_472_000.0)
AU_EXTENDED_ORIGIN = (-4_416_000.0, -6_912_000.0)
GLOBAL_ORIGIN = (-17_376_000.0, -7_392_000.0)

# name -> (EPSG code, origin x, origin y, tile size in m, resolution in m)
NAMED = {
    "au_10": (3577, *AU_ORIGIN, 96_000, 10),
    "au_20": (3577, *AU_ORIGIN, 96_000, 20),
    "au_30": (3577, *AU_ORIGIN, 96_000, 30),
    "au_60": (3577, *AU_ORIGIN, 96_000, 60),
    "au": (3577, *AU_ORIGIN, 96_000, 96_000),
    "au_extended_10": (3577, *AU_EXTENDED_ORIGIN, 96_000, 10),
    "au_extended_30": (3577, *AU_EXTENDED_ORIGIN, 96_000, 30),
    "au_extended_60": (3577, *AU_EXTENDED_ORIGIN, 96_000, 60),
    "au_extended": (3577, *AU_EXTENDED_ORIGIN, 96_000, 96_000),
    "au_extended_s2_10": (3577, *AU_EXTENDED_ORIGIN, 32_000, 10),
    "au_extended_s2_40": (3577, *AU_EXTENDED_ORIGIN, 32_000, 40),
    "global_10": (6933, *GLOBAL_ORIGIN, 96_000, 10),
    "global_20": (6933, *GLOBAL_ORIGIN, 96_000, 20),
    "global_30": (6933, *GLOBAL_ORIGIN, 96_000, 30),
    "global_60": (6933, *GLOBAL_ORIGIN, 96_000, 60),
    "global": (6933, *GLOBAL_ORIGIN, 96_000, 96_000),
    "africa_10": (6933, *GLOBAL_ORIGIN, 96_000, 10),
    "africa_30": (6933, *GLOBAL_ORIGIN, 96_000, 30),
    "africa": (6933, *GLOBAL_ORIGIN, 96_000, 96_000),
    "albers_au_25": (3577, 0.0, 0.0, 100_000, 25),
}


def lonlat_to(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_grid_definition(name: str) -> None:
    epsg, ox, oy, tile, res = NAMED[name]
    grid = parse_grid(name)
    assert grid.name == name
    assert grid.crs.epsg == epsg
    assert grid.origin_xy == (ox, oy)
    assert grid.tile_size_xy == (tile, tile)
    assert grid.resolution_xy == (res, res)
    n = tile // res
    gbox = grid.tile_geobox(0, 0)
    assert gbox.shape == (n, n)
    # Tile (0, 0): lower-left corner at the origin, pixel (0, 0) at its north-west corner.
    assert gbox.affine == Affine(res, 0, ox, 0, -res, oy + tile)


def test_known_names_match_odc_stats_table() -> None:
    expected = set(NAMED) | {"au_extended_20", "au_extended_s2", "au_extended_s2_20"}
    expected |= {"au_extended_s2_80", "africa_20", "africa_60"}
    assert set(KNOWN_GRID_NAMES) == expected


def test_sydney_and_canberra_tiles_au_30() -> None:
    grid = parse_grid("au_30")
    tile = 96_000.0
    for (lon, lat), expected in [((151.2093, -33.8688), (46, 17)), ((149.13, -35.2809), (44, 15))]:
        X, Y = lonlat_to(3577, lon, lat)
        by_hand = (math.floor((X + 2_688_000) / tile), math.floor((Y + 5_472_000) / tile))
        assert by_hand == expected
        assert grid.tile_index(X, Y) == expected
        assert _tile_box(grid, *expected).contains(shapely.Point(X, Y))


def test_dea_tile_x49y24_is_near_brisbane() -> None:
    """x49y24 (often quoted in odc-stats docs) lies off Brisbane, not Sydney."""
    grid = parse_grid("au_30")
    gbox = grid.tile_geobox(49, 24)
    assert gbox.shape == (3200, 3200)
    assert str(gbox.crs) == "EPSG:3577"
    assert gbox.affine == Affine(30, 0, 2_016_000, 0, -30, -3_072_000)
    centre = Transformer.from_crs(3577, 4326, always_xy=True).transform(2_064_000, -3_120_000)
    assert centre == pytest.approx((153.19, -27.19), abs=0.01)


def test_global_grid_tile_for_nairobi() -> None:
    grid = parse_grid("global_10")
    X, Y = lonlat_to(6933, 36.8219, -1.2921)
    ix = math.floor((X + 17_376_000) / 96_000)
    iy = math.floor((Y + 7_392_000) / 96_000)
    assert (ix, iy) == (218, 75)
    assert grid.tile_index(X, Y) == (218, 75)
    gbox = grid.tile_geobox(218, 75)
    assert gbox.shape == (9600, 9600)
    assert gbox.crs.epsg == 6933
    assert gbox.affine == Affine(
        10, 0, -17_376_000 + 218 * 96_000, 0, -10, -7_392_000 + 76 * 96_000
    )


def test_points_on_tile_edges_belong_to_the_upper_right_tile() -> None:
    grid = parse_grid("au_30")
    x0, y0 = -2_688_000 + 49 * 96_000, -5_472_000 + 24 * 96_000  # lower-left corner of x49y24
    assert grid.tile_index(x0, y0) == (49, 24)
    assert grid.tile_index(x0 - 0.001, y0) == (48, 24)
    assert grid.tile_index(x0, y0 - 0.001) == (49, 23)
    assert grid.tile_index(x0 + 96_000, y0 + 96_000) == (50, 25)
    assert grid.tile_index(x0 + 95_999.999, y0 + 95_999.999) == (49, 24)
    # Negative indices west/south of the origin still use floor, not truncation.
    assert grid.tile_index(-2_688_000 - 1, -5_472_000 - 1) == (-1, -1)
    assert grid.tile_index(-2_688_000 - 96_000, -5_472_000 - 96_001) == (-1, -2)


def test_y_index_increases_northwards() -> None:
    grid = parse_grid("au_30")
    X, Y = lonlat_to(3577, 151.0, -33.0)
    assert grid.tile_index(X, Y + 96_000)[1] == grid.tile_index(X, Y)[1] + 1
    north = grid.tile_geobox(10, 11).affine.f
    south = grid.tile_geobox(10, 10).affine.f
    assert north - south == 96_000


@pytest.mark.parametrize(
    ("spec", "name", "res_yx", "shape_yx"),
    [
        ("epsg:6933;10;9600", "epsg_6933_10_9600", (10, 10), (9600, 9600)),
        ("EPSG:6933;-10x10;9600x9600", "epsg_6933_-10x10_9600x9600", (10, 10), (9600, 9600)),
        ("epsg:3577;-10x20;100x200", "epsg_3577_-10x20_100x200", (10, 20), (100, 200)),
        ("epsg:32755;2.5;400", "epsg_32755_2.5_400", (2.5, 2.5), (400, 400)),
    ],
)
def test_custom_string_grids(spec: str, name: str, res_yx, shape_yx) -> None:
    grid = parse_grid(spec)
    assert grid.name == name
    assert grid.origin_xy == (0.0, 0.0)
    assert grid.resolution_xy == (res_yx[1], res_yx[0])
    tile_x, tile_y = shape_yx[1] * res_yx[1], shape_yx[0] * res_yx[0]
    assert grid.tile_size_xy == (tile_x, tile_y)
    gbox = grid.tile_geobox(3, -2)
    assert gbox.shape == shape_yx
    assert gbox.affine == Affine(res_yx[1], 0, 3 * tile_x, 0, -res_yx[0], -1 * tile_y)
    assert grid.tile_index(3 * tile_x, -2 * tile_y) == (3, -2)
    assert grid.tile_index(3 * tile_x - 0.01, -2 * tile_y - 0.01) == (2, -3)


def test_custom_string_with_positive_y_resolution_is_still_north_up() -> None:
    grid = parse_grid("epsg:6933;10x10;100")
    assert grid.tile_geobox(0, 0).affine == Affine(10, 0, 0, 0, -10, 1000)


@pytest.mark.parametrize("spec", ["au-30", "AU_30", " Au-30 ", "au_30"])
def test_dashes_and_case_are_normalised(spec: str) -> None:
    grid = parse_grid(spec)
    assert grid.name == "au_30"
    assert grid == parse_grid("au_30")


def test_africa_is_an_alias_of_global() -> None:
    africa, glob = parse_grid("africa-30"), parse_grid("global_30")
    assert africa.name == "africa_30"
    assert africa.gridspec == glob.gridspec
    assert africa.tile_geobox(200, 80) == glob.tile_geobox(200, 80)


def test_mapping_form() -> None:
    grid = parse_grid(
        {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [1000, -2000]}
    )
    assert grid.name == "custom"
    assert grid.tile_size_xy == (15_360.0, 15_360.0)
    assert grid.tile_geobox(2, 1).affine == Affine(
        30, 0, 1000 + 2 * 15_360, 0, -30, -2000 + 2 * 15_360
    )
    assert grid.tile_index(1000 + 15_360, -2000 - 0.5) == (1, -1)

    rect = parse_grid({"crs": 3577, "resolution": [20, 10], "tile_size": [50, 100]})
    assert rect.origin_xy == (0.0, 0.0)
    assert rect.resolution_xy == (10.0, 20.0)
    assert rect.tile_size_xy == (1000.0, 1000.0)
    assert rect.tile_geobox(0, 0).shape == (50, 100)


@pytest.mark.parametrize(
    "spec",
    [
        "au_30",
        "AU-10",
        "au",
        "albers_au_25",
        "africa_20",
        "epsg:6933;-10x20;100x50",
        {"crs": "EPSG:32756", "resolution": 2.5, "tile_size": [40, 80], "origin": [5.5, -7.25]},
    ],
)
def test_dict_round_trip(spec) -> None:
    grid = parse_grid(spec)
    d = json.loads(json.dumps(grid.to_dict()))
    back = TileGrid.from_dict(d)
    assert back == grid
    assert back.name == grid.name
    assert back.tile_geobox(-3, 7) == grid.tile_geobox(-3, 7)


def test_to_dict_of_au_30() -> None:
    assert parse_grid("au_30").to_dict() == {
        "name": "au_30",
        "crs": "EPSG:3577",
        "resolution": 30.0,
        "tile_size": 3200,
        "origin": [-2_688_000.0, -5_472_000.0],
    }


def test_with_resolution_keeps_tiles() -> None:
    au30 = parse_grid("au_30")
    au10 = au30.with_resolution(10)
    assert au10.name == "au_10"
    assert au10 == parse_grid("au_10")
    gb10, gb30 = au10.tile_geobox(49, 24), au30.tile_geobox(49, 24)
    assert gb10.shape == (9600, 9600)
    assert gb10.extent.boundingbox == gb30.extent.boundingbox

    assert parse_grid("africa_30").with_resolution(20).name == "africa_20"
    odd = au30.with_resolution(15)
    assert odd.name == "custom"
    assert odd.tile_geobox(1, 1).shape == (6400, 6400)
    assert odd.origin_xy == AU_ORIGIN
    # 100 km tiles of albers_au_25 at 50 m.
    assert parse_grid("albers_au_25").with_resolution(50).tile_geobox(0, 0).shape == (2000, 2000)


@pytest.mark.parametrize(("spec", "res"), [("au_30", 7), ("albers_au_25", 30), ("au_30", 0)])
def test_with_resolution_must_divide_tile(spec: str, res: float) -> None:
    with pytest.raises(ValueError, match=f"resolution {res}"):
        parse_grid(spec).with_resolution(res)


def test_unknown_grid_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown grid 'au_25'") as info:
        parse_grid("au_25")
    message = str(info.value)
    for name in ("au_30", "au_extended_10", "global_60", "africa", "albers_au_25"):
        assert name in message


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("epsg:6933;10", "must have the form"),
        ("epsg:6933;ten;9600", "expected 'crs;res;shape'"),
        ("epsg:6933;10;96.5", "expected 'crs;res;shape'"),
        ("epsg:6933;0;9600", "non-zero"),
        ("epsg:6933;10;0", "positive"),
        ("nonsense:1;10;100", "cannot understand CRS"),
        ({"crs": "EPSG:3577", "resolution": 30}, "lacks \\['tile_size'\\]"),
        ({"crs": "EPSG:3577", "resolution": 30, "tile_size": 5, "tilesize": 5}, "unknown keys"),
        ({"crs": "EPSG:3577", "resolution": 30, "tile_size": 5.5}, "whole pixels"),
        ({"crs": "EPSG:3577", "resolution": 30, "tile_size": 5, "origin": [1]}, "origin"),
        (42, "must be a name"),
    ],
)
def test_bad_specs(spec, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_grid(spec)


# --- tiles_for_geometry ----------------------------------------------------------------------------


def _tile_box(grid: TileGrid, ix: int, iy: int) -> shapely.Polygon:
    """Tile (ix, iy) as a shapely box, built from the odc-stats definition by hand."""
    (ox, oy), (tx, ty) = grid.origin_xy, grid.tile_size_xy
    return shapely.box(ox + ix * tx, oy + iy * ty, ox + (ix + 1) * tx, oy + (iy + 1) * ty)


def _brute_force(
    grid: TileGrid, shape: shapely.Geometry, xs: range, ys: range | None = None
) -> list[tuple[int, int]]:
    """Tiles of ``xs`` x ``ys`` whose interior shares positive area with ``shape``."""
    return [
        (ix, iy)
        for ix in xs
        for iy in ys or xs
        if shapely.intersection(_tile_box(grid, ix, iy), shape).area > 0
    ]


def test_tiles_for_random_polygons_match_brute_force() -> None:
    grid = parse_grid("epsg:3577;100;10")  # 1 km tiles, origin (0, 0)
    rng = random.Random(20240601)
    for _ in range(60):
        cx, cy = rng.uniform(2_000, 8_000), rng.uniform(2_000, 8_000)
        vertices = [
            (cx + rng.uniform(500, 2_500) * math.cos(a), cy + rng.uniform(500, 2_500) * math.sin(a))
            for a in sorted(rng.uniform(0, 2 * math.pi) for _ in range(7))
        ]
        shape = shapely.Polygon(vertices)
        if not shape.is_valid:
            continue
        found = grid.tiles_for_geometry(Geometry(shape, "EPSG:3577"))
        assert found == _brute_force(grid, shape, range(-1, 12))


def test_footprint_touching_edges_is_not_in_the_neighbours() -> None:
    grid = parse_grid("epsg:3577;100;10")
    # Exactly tiles (2..3, 5..6): edges on grid lines, so the eight neighbours are only touched.
    assert grid.tiles_for_geometry(box(2_000, 5_000, 4_000, 7_000, "EPSG:3577")) == [
        (2, 5),
        (2, 6),
        (3, 5),
        (3, 6),
    ]
    # A triangle touching tile (4, 4) only at its corner (4000, 5000).
    tri = polygon([(3_500, 5_000), (4_000, 5_000), (3_500, 5_800), (3_500, 5_000)], "EPSG:3577")
    assert grid.tiles_for_geometry(tri) == [(3, 5)]


def test_degenerate_geometries_use_the_floor_rule() -> None:
    grid = parse_grid("epsg:3577;100;10")
    assert grid.tiles_for_geometry(point(2_000, 5_000, "EPSG:3577")) == [(2, 5)]
    assert grid.tiles_for_geometry(point(2_500, 5_500, "EPSG:3577")) == [(2, 5)]
    # A line crossing three tiles, and a line lying on the grid line x = 2000.
    assert grid.tiles_for_geometry(line([(1_500, 5_500), (3_500, 5_500)], "EPSG:3577")) == [
        (1, 5),
        (2, 5),
        (3, 5),
    ]
    on_edge = grid.tiles_for_geometry(line([(2_000, 5_200), (2_000, 5_700)], "EPSG:3577"))
    assert on_edge == [(2, 5)]


def test_tiles_for_geometry_reprojects() -> None:
    grid = parse_grid("au_30")
    corners = [(150.2, -33.2), (151.8, -33.4), (151.6, -34.6), (150.0, -34.4), (150.2, -33.2)]
    footprint = polygon(corners, "EPSG:4326")
    projected = shapely.Polygon([lonlat_to(3577, lon, lat) for lon, lat in corners])
    expected = _brute_force(grid, projected, range(40, 52), range(10, 25))
    assert expected  # the footprint lies inside the searched span
    assert 1 < len(expected) < 12
    assert grid.tiles_for_geometry(footprint) == expected


def test_tiles_for_utm_footprint_in_global_grid() -> None:
    grid = parse_grid("global_30")
    ring = [(300_000, 9_900_000), (485_000, 9_870_000), (520_000, 9_700_000), (335_000, 9_730_000)]
    footprint = polygon([*ring, ring[0]], "EPSG:32737")
    to6933 = Transformer.from_crs(32737, 6933, always_xy=True)
    projected = shapely.Polygon([to6933.transform(x, y) for x, y in ring])
    minx, miny, maxx, maxy = projected.bounds
    ixs = range(
        math.floor((minx + 17_376_000) / 96_000) - 1, math.floor((maxx + 17_376_000) / 96_000) + 2
    )
    iys = range(
        math.floor((miny + 7_392_000) / 96_000) - 1, math.floor((maxy + 7_392_000) / 96_000) + 2
    )
    expected = [
        (ix, iy)
        for ix in ixs
        for iy in iys
        if shapely.intersection(_tile_box(grid, ix, iy), projected).area > 0
    ]
    assert len(expected) >= 4
    assert grid.tiles_for_geometry(footprint) == expected


def test_empty_geometry_has_no_tiles() -> None:
    grid = parse_grid("au_30")
    assert grid.tiles_for_geometry(Geometry(shapely.Polygon(), "EPSG:3577")) == []


def test_tiles_for_geometry_on_a_fine_grid_tests_only_candidate_tiles() -> None:
    """A 40 m square on a 10 m tile grid: exactly its 16 tiles (cost follows the footprint, not the grid)."""
    grid = parse_grid("epsg:3577;1;10")
    scene = polygon([(0, 0), (40, 0), (40, 40), (0, 40), (0, 0)], "EPSG:3577")
    assert sorted(grid.tiles_for_geometry(scene)) == [(x, y) for x in range(4) for y in range(4)]

"""Tile grids: odc-stats' named grids, the ``epsg:XXXX;res;shape`` form and config mappings.

A :class:`TileGrid` wraps an odc-geo :class:`~odc.geo.gridspec.GridSpec`. Tile indices equal
odc-stats' (``odc.dscache.tools.tiling``)::

    x = floor((X - origin_x) / tile_width)      # X, origin_x in grid-CRS units
    y = floor((Y - origin_y) / tile_height)     # y increases northwards

so a point exactly on a tile's lower or left edge belongs to that tile. Tile pixel grids
(:meth:`TileGrid.tile_geobox`) are always north-up: pixel (0, 0) is the north-west corner.

Accepted grid specifications (:func:`parse_grid`):

* Named grids, all with square tiles (sizes in metres of the grid CRS):

  ==========================  ==========  ===================  =========  ==================
  name(s)                     CRS         origin (x, y)        tile       resolutions
  ==========================  ==========  ===================  =========  ==================
  ``au``, ``au_N``            EPSG:3577   −2 688 000, −5 472 000  96 km   N = 10, 20, 30, 60
  ``au_extended[_N]``         EPSG:3577   −4 416 000, −6 912 000  96 km   N = 10, 20, 30, 60
  ``au_extended_s2[_N]``      EPSG:3577   −4 416 000, −6 912 000  32 km   N = 10, 20, 40, 80
  ``global[_N]``              EPSG:6933   −17 376 000, −7 392 000 96 km   N = 10, 20, 30, 60
  ``africa[_N]`` (= global)   EPSG:6933   −17 376 000, −7 392 000 96 km   N = 10, 20, 30, 60
  ``albers_au_25``            EPSG:3577   0, 0                 100 km     25
  ==========================  ==========  ===================  =========  ==================

  The bare family name (``au``, ``global`` ...) has one pixel per tile (a "tile index" grid).
  Names are case-insensitive and ``-`` may stand for ``_`` (``AU-30``); the stored name is the
  normalised one (``au_30``). ``africa*`` keeps its own name but is the same grid as ``global*``.
* Custom strings ``"<crs>;<res>;<shape>"`` with origin (0, 0): ``"epsg:6933;10;9600"`` or
  ``"epsg:6933;-10x10;9600x9600"`` (resolution and shape in ``y x`` order, like odc-stats).
  Pixels are always north-up; the sign of the y resolution is ignored. The name is the string
  lower-cased with ``:`` and ``;`` replaced by ``_`` (``epsg_6933_10_9600``).
* Config mappings ``{crs, resolution, tile_size, origin, name}``: ``resolution`` in CRS units,
  a number or ``[res_y, res_x]``; ``tile_size`` in pixels, an int or ``[ny, nx]``; ``origin``
  in CRS units as ``[x, y]`` (default ``[0, 0]``); ``name`` optional (default ``"custom"``).
  Sizes are ``(y, x)`` like numpy shapes, coordinates are ``(x, y)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from odc.geo import Resolution, xy_
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.gridspec import GridSpec

__all__ = ["KNOWN_GRID_NAMES", "TileGrid", "parse_grid"]


@dataclass(frozen=True)
class _GridFamily:
    crs: str
    origin_xy: tuple[float, float]  # CRS units
    tile_metres: float  # square tiles, CRS units
    resolutions: tuple[int, ...]  # CRS units; the bare family name uses one pixel per tile
    has_bare_name: bool = True


_AU_ORIGIN = (-2_688_000.0, -5_472_000.0)
_AU_EXTENDED_ORIGIN = (-4_416_000.0, -6_912_000.0)
_GLOBAL_ORIGIN = (-17_376_000.0, -7_392_000.0)

_FAMILIES: dict[str, _GridFamily] = {
    "au": _GridFamily("EPSG:3577", _AU_ORIGIN, 96_000.0, (10, 20, 30, 60)),
    "au_extended": _GridFamily("EPSG:3577", _AU_EXTENDED_ORIGIN, 96_000.0, (10, 20, 30, 60)),
    "au_extended_s2": _GridFamily("EPSG:3577", _AU_EXTENDED_ORIGIN, 32_000.0, (10, 20, 40, 80)),
    "global": _GridFamily("EPSG:6933", _GLOBAL_ORIGIN, 96_000.0, (10, 20, 30, 60)),
    # odc-stats defines africa_* as aliases of global_*.
    "africa": _GridFamily("EPSG:6933", _GLOBAL_ORIGIN, 96_000.0, (10, 20, 30, 60)),
    "albers_au": _GridFamily("EPSG:3577", (0.0, 0.0), 100_000.0, (25,), has_bare_name=False),
}


def _named_grids() -> dict[str, tuple[str, float]]:
    """Map every named grid to (family, resolution in CRS units)."""
    names: dict[str, tuple[str, float]] = {}
    for family_name, family in _FAMILIES.items():
        if family.has_bare_name:
            names[family_name] = (family_name, family.tile_metres)
        for res in family.resolutions:
            names[f"{family_name}_{res}"] = (family_name, float(res))
    return names


_NAMED_GRIDS = _named_grids()
KNOWN_GRID_NAMES: tuple[str, ...] = tuple(sorted(_NAMED_GRIDS))

_MAPPING_KEYS = {"crs", "resolution", "tile_size", "origin", "name"}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RES_RE = re.compile(rf"^\s*(?:(?P<ry>{_NUMBER})\s*x\s*(?P<rx>{_NUMBER})|(?P<r>{_NUMBER}))\s*$")
_SHAPE_RE = re.compile(r"^\s*(?:(?P<ny>\+?\d+)\s*x\s*(?P<nx>\+?\d+)|(?P<n>\+?\d+))\s*$")


@dataclass(frozen=True)
class TileGrid:
    """A named tile grid: an odc-geo ``GridSpec`` with north-up pixels and odc-stats indexing.

    ``name`` is the normalised name (``"au_30"``, ``"epsg_6933_10_9600"``, ``"custom"``).
    """

    name: str
    gridspec: GridSpec

    @property
    def crs(self) -> CRS:
        """CRS of the grid."""
        return self.gridspec.crs

    @property
    def tile_size_xy(self) -> tuple[float, float]:
        """Tile width and height in CRS units."""
        return (float(self.gridspec.tile_size.x), float(self.gridspec.tile_size.y))

    @property
    def origin_xy(self) -> tuple[float, float]:
        """Lower-left corner of tile (0, 0) in CRS units."""
        return (float(self.gridspec.origin.x), float(self.gridspec.origin.y))

    @property
    def resolution_xy(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (both positive)."""
        res = self.gridspec.resolution
        return (abs(float(res.x)), abs(float(res.y)))

    def tile_geobox(self, x: int, y: int) -> GeoBox:
        """Pixel grid of tile (x, y): north-up, shape ``(ny, nx)`` pixels, in the grid CRS."""
        return self.gridspec.tile_geobox((int(x), int(y)))

    def tile_index(self, x: float, y: float) -> tuple[int, int]:
        """Index (ix, iy) of the tile holding point (x, y) given in grid-CRS units (floor)."""
        (ox, oy), (tx, ty) = self.origin_xy, self.tile_size_xy
        return (math.floor((x - ox) / tx), math.floor((y - oy) / ty))

    def tiles_for_geometry(
        self, geom: Geometry, *, densify: float | None = None
    ) -> list[tuple[int, int]]:
        """Every tile (x, y) whose interior intersects ``geom``, sorted by (x, y).

        ``geom`` may be in any CRS; it is reprojected to the grid CRS vertex by vertex, as
        odc-stats does (pass ``densify``, a maximum segment length in the units of ``geom``'s
        CRS, to add vertices first). A footprint that only touches a tile's edge or corner is not
        in that tile. A geometry with no area (a point, a line) that lies only on tile edges goes
        to the tile of one of its points by the floor rule of :meth:`tile_index`.
        Cost: one intersection test per tile of the geometry's bounding box.
        """
        if geom.crs is None:
            raise ValueError("tiles_for_geometry needs a geometry with a CRS")
        shape = geom.geom
        if shape is None or shape.is_empty:
            return []
        if geom.crs != self.crs:
            shape = _reproject(shape, geom.crs, self.crs, densify)
            if shape.is_empty:
                return []
        minx, miny, maxx, maxy = shape.bounds
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise ValueError(f"geometry does not project cleanly to {self.crs}")
        ix0, iy0 = self.tile_index(minx, miny)
        ix1, iy1 = self.tile_index(maxx, maxy)
        # A bounding box inside one half-open tile: any geometry with area meets its interior.
        if ix0 == ix1 and iy0 == iy1 and shape.area > 0:
            return [(ix0, iy0)]

        (ox, oy), (tx, ty) = self.origin_xy, self.tile_size_xy
        ny = iy1 - iy0 + 1
        ixs, iys = np.divmod(np.arange((ix1 - ix0 + 1) * ny), ny)
        ixs += ix0
        iys += iy0
        boxes = shapely.box(ox + ixs * tx, oy + iys * ty, ox + (ixs + 1) * tx, oy + (iys + 1) * ty)
        shapely.prepare(shape)
        # "intersects but does not only touch" is "interiors intersect" (DE-9IM T********).
        hit = shapely.intersects(shape, boxes) & ~shapely.touches(shape, boxes)
        tiles = sorted(zip(ixs[hit].tolist(), iys[hit].tolist(), strict=True))
        if not tiles:
            point = shape.representative_point()
            tiles = [self.tile_index(point.x, point.y)]
        return tiles

    def with_resolution(self, resolution: float) -> TileGrid:
        """The same tiles with square pixels of ``resolution`` CRS units.

        Raises ValueError when ``resolution`` does not divide the tile width and height.
        """
        resolution = float(resolution)
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution {resolution:g} must be a positive number")
        shape_yx = []
        for size in (self.tile_size_xy[1], self.tile_size_xy[0]):
            n = round(size / resolution)
            if n < 1 or not math.isclose(n * resolution, size, rel_tol=1e-9, abs_tol=0.0):
                raise ValueError(
                    f"resolution {resolution:g} does not divide the tile size "
                    f"{self.tile_size_xy[0]:g} x {self.tile_size_xy[1]:g} of grid {self.name!r}"
                )
            shape_yx.append(n)
        gridspec = _make_gridspec(self.crs, (resolution, resolution), shape_yx, self.origin_xy)
        family = _NAMED_GRIDS[self.name][0] if self.name in _NAMED_GRIDS else None
        return TileGrid(_name_for(gridspec, family), gridspec)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able mapping accepted by :meth:`from_dict` and :func:`parse_grid`."""
        res_x, res_y = self.resolution_xy
        ny, nx = (int(n) for n in self.gridspec.tile_shape.yx)
        return {
            "name": self.name,
            "crs": str(self.crs),
            "resolution": res_x if res_x == res_y else [res_y, res_x],
            "tile_size": nx if nx == ny else [ny, nx],
            "origin": list(self.origin_xy),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileGrid:
        """Inverse of :meth:`to_dict`."""
        return _grid_from_mapping(d)


def parse_grid(spec: str | Mapping[str, Any]) -> TileGrid:
    """Grid from a name (``"au_30"``), a custom string (``"epsg:6933;10;9600"``) or a mapping.

    See the module docstring for the accepted forms. Raises ValueError on anything else.
    """
    if isinstance(spec, Mapping):
        return _grid_from_mapping(spec)
    if not isinstance(spec, str):
        raise ValueError(f"grid must be a name, a custom string or a mapping, got {spec!r}")
    if ";" in spec:
        return _grid_from_custom_string(spec)
    name = spec.strip().lower().replace("-", "_")
    if name not in _NAMED_GRIDS:
        raise ValueError(
            f"unknown grid {spec!r}; known grids: {', '.join(KNOWN_GRID_NAMES)}, "
            "or a custom 'epsg:XXXX;res;shape' string, or a mapping"
        )
    family_name, res = _NAMED_GRIDS[name]
    family = _FAMILIES[family_name]
    n = round(family.tile_metres / res)
    gridspec = _make_gridspec(CRS(family.crs), (res, res), (n, n), family.origin_xy)
    return TileGrid(name, gridspec)


def _make_gridspec(
    crs: CRS,
    resolution_yx: tuple[float, float],
    shape_yx: tuple[int, int] | list[int],
    origin_xy: tuple[float, float],
) -> GridSpec:
    res_y, res_x = (abs(float(r)) for r in resolution_yx)
    # Negative y resolution makes odc-geo's tile geoboxes north-up; indices stay y-northwards.
    return GridSpec(
        crs,
        tile_shape=(int(shape_yx[0]), int(shape_yx[1])),
        resolution=Resolution(res_x, -res_y),
        origin=xy_(float(origin_xy[0]), float(origin_xy[1])),
    )


def _name_for(gridspec: GridSpec, family: str | None) -> str:
    """A named grid equal to ``gridspec``, else ``"custom"``.

    Names of ``family`` (the family of the grid being changed) come first, so ``africa_30`` at
    10 m stays ``africa_10``; other aliases are not used.
    """
    candidates = [n for n in KNOWN_GRID_NAMES if _NAMED_GRIDS[n][0] == family]
    candidates += [n for n in KNOWN_GRID_NAMES if not n.startswith("africa")]
    for name in candidates:
        if parse_grid(name).gridspec == gridspec:
            return name
    return "custom"


def _reproject(
    shape: shapely.Geometry, src: CRS, dst: CRS, densify: float | None
) -> shapely.Geometry:
    """``shape`` from ``src`` to ``dst``, vertex by vertex (after optional densification).

    Vertices that do not project (outside the CRS's domain) are dropped and an invalid polygon is
    repaired with ``buffer(0)``, as odc-geo's ``to_crs(check_and_fix=True)`` does; vectorised
    because this runs once per dataset.
    """
    if densify is not None:
        shape = shapely.segmentize(shape, densify)
    transform = src.transformer_to_crs(dst)

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(shape, project)
    if not np.isfinite(shapely.get_coordinates(out)).all():
        # Rare: fall back to odc-geo's slower path, which drops the bad vertices.
        fixed = Geometry(shape, src).to_crs(dst, check_and_fix=True).geom
        return shapely.Polygon() if fixed is None else fixed
    if not out.is_valid and out.geom_type in ("Polygon", "MultiPolygon"):
        out = out.buffer(0)
    return out


def _grid_from_custom_string(spec: str) -> TileGrid:
    parts = spec.split(";")
    if len(parts) != 3:
        raise ValueError(f"custom grid {spec!r} must have the form 'epsg:XXXX;res;shape'")
    crs_text, res_text, shape_text = parts
    res_match, shape_match = _RES_RE.match(res_text), _SHAPE_RE.match(shape_text)
    if res_match is None or shape_match is None:
        raise ValueError(
            f"custom grid {spec!r}: expected 'crs;res;shape' like 'epsg:6933;10;9600' "
            "or 'epsg:6933;-10x10;9600x9600'"
        )
    if res_match["r"] is not None:
        res_yx = (float(res_match["r"]), float(res_match["r"]))
    else:
        res_yx = (float(res_match["ry"]), float(res_match["rx"]))
    if shape_match["n"] is not None:
        shape_yx = (int(shape_match["n"]), int(shape_match["n"]))
    else:
        shape_yx = (int(shape_match["ny"]), int(shape_match["nx"]))
    crs = _parse_crs(crs_text.strip(), spec)
    _check_sizes(res_yx, shape_yx, spec)
    gridspec = _make_gridspec(crs, res_yx, shape_yx, (0.0, 0.0))
    name = spec.strip().lower().replace(":", "_").replace(";", "_")
    return TileGrid(name, gridspec)


def _grid_from_mapping(spec: Mapping[str, Any]) -> TileGrid:
    unknown = set(spec) - _MAPPING_KEYS
    if unknown:
        raise ValueError(
            f"grid mapping has unknown keys {sorted(unknown)}; allowed: {sorted(_MAPPING_KEYS)}"
        )
    missing = {"crs", "resolution", "tile_size"} - set(spec)
    if missing:
        raise ValueError(f"grid mapping {dict(spec)!r} lacks {sorted(missing)}")
    res_yx = _pair(spec["resolution"], "resolution", float)
    shape_yx = _pair(spec["tile_size"], "tile_size", int)
    origin = spec.get("origin", (0.0, 0.0))
    if not (isinstance(origin, list | tuple) and len(origin) == 2):
        raise ValueError(f"grid origin must be [x, y] in CRS units, got {origin!r}")
    origin_xy = (float(origin[0]), float(origin[1]))
    if not all(math.isfinite(v) for v in origin_xy):
        raise ValueError(f"grid origin must be finite, got {origin!r}")
    crs = _parse_crs(spec["crs"], dict(spec))
    _check_sizes(res_yx, shape_yx, dict(spec))
    name = spec.get("name", "custom")
    if not isinstance(name, str) or not name:
        raise ValueError(f"grid name must be a non-empty string, got {name!r}")
    return TileGrid(name, _make_gridspec(crs, res_yx, shape_yx, origin_xy))


def _pair(value: Any, what: str, kind: type) -> tuple[Any, Any]:
    """A scalar or a 2-sequence as a (y, x) pair of ``kind``."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"grid {what} must be a number or [y, x], got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"grid {what} must be a number or [y, x], got {value!r}")
        if kind is int and item != int(item):
            raise ValueError(f"grid {what} must be whole pixels, got {value!r}")
        out.append(kind(item))
    return (out[0], out[1])


def _check_sizes(res_yx: tuple[float, float], shape_yx: tuple[int, int], spec: Any) -> None:
    if not all(math.isfinite(r) and r != 0 for r in res_yx):
        raise ValueError(f"grid {spec!r}: resolution must be finite and non-zero")
    if not all(n > 0 for n in shape_yx):
        raise ValueError(f"grid {spec!r}: tile shape must be positive")


def _parse_crs(text: Any, spec: Any) -> CRS:
    try:
        return CRS(text)
    except Exception as err:  # odc-geo/pyproj raise several types for bad CRS text
        raise ValueError(f"grid {spec!r}: cannot understand CRS {text!r}") from err

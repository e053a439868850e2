"""Low-resolution overview mosaics of a product's tile outputs.

The counterpart of odc-stats' ``generate-mosaic``: from the STAC items of the tiles of one period, build one COG
per band (or one multi-band COG) at a coarse resolution (120 CRS units by default) covering every tile, in the
tiles' own CRS. Where the grid has no tile the mosaic holds nodata.

Differences from odc-stats (see docs/quirks.md): each tile is read with a **decimated read** that uses the tile
COG's overviews and ``average`` resampling (odc-stats loads at 120 m with nearest), and the result gets exactly
``overview_levels`` internal overviews (odc-stats leaves the count to the COG writer, although its README promises 7).

Tiles are processed in parallel (one reader per thread); the finished windows go into a temporary GeoTIFF through
a lock, because a GDAL dataset must not be written from two threads at once. The temporary file is then converted
into the final COG, under a temporary name renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from eostats.cog import CogOptions, copy_to_cog
from eostats.fileio import remove_stale_temporaries, temporary_sibling

__all__ = ["build_mosaic", "mosaic_paths"]

#: relative tolerance, in mosaic pixels, when checking that tile edges fall on mosaic pixel edges
_ALIGN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Tile:
    item: Path
    hrefs: dict[str, str]  # band -> path/URL of its COG
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the tiles' CRS


@dataclass(frozen=True)
class _Output:
    path: Path
    bands: tuple[str, ...]


def _resolve_href(item_path: Path, href: str) -> str:
    if href.startswith("file://"):
        return href[len("file://") :]
    if "://" in href or href.startswith("/"):
        return href
    return str(item_path.parent / href)


def _read_tiles(
    stac_item_paths: Sequence[Path | str], bands: Sequence[str]
) -> tuple[list[_Tile], Any]:
    tiles: list[_Tile] = []
    crs = None
    for p in stac_item_paths:
        item_path = Path(p)
        doc = json.loads(item_path.read_text())
        assets = doc.get("assets", {})
        missing = [b for b in bands if b not in assets]
        if missing:
            raise ValueError(f"STAC item {item_path} has no asset for band(s) {missing}")
        hrefs = {b: _resolve_href(item_path, assets[b]["href"]) for b in bands}
        with rasterio.open(hrefs[bands[0]]) as src:
            tile_crs, bounds = src.crs, tuple(src.bounds)
        if crs is None:
            crs = tile_crs
        elif tile_crs != crs:
            raise ValueError(
                f"tile {item_path} is in {tile_crs}, other tiles in {crs}: one CRS per mosaic"
            )
        tiles.append(_Tile(item_path, hrefs, bounds))
    return tiles, crs


def mosaic_paths(out_dir_or_paths: Any, bands: Sequence[str], per_band: bool) -> list[Path]:
    """Where :func:`build_mosaic` writes: ``{dir}/{band}.tif`` per band or ``{dir}/mosaic.tif``, unless given.

    ``out_dir_or_paths``: a directory; a ``.tif`` path (one output); a sequence of paths (one per output,
    in band order); or a mapping band → path (per-band mosaics).
    """
    n_out = len(bands) if per_band else 1
    if isinstance(out_dir_or_paths, Mapping):
        if not per_band:
            raise ValueError("a band -> path mapping needs per_band=True")
        return [Path(out_dir_or_paths[b]) for b in bands]
    if isinstance(out_dir_or_paths, str | Path):
        target = Path(out_dir_or_paths)
        if target.suffix.lower() in (".tif", ".tiff"):
            if n_out != 1:
                raise ValueError(f"one path {target} given for {n_out} per-band mosaics")
            return [target]
        return [target / f"{b}.tif" for b in bands] if per_band else [target / "mosaic.tif"]
    paths = [Path(p) for p in out_dir_or_paths]
    if len(paths) != n_out:
        raise ValueError(f"{len(paths)} output paths given for {n_out} mosaic file(s)")
    return paths


def _mosaic_grid(
    tiles: Sequence[_Tile], resolution: float
) -> tuple[Affine, int, int, dict[Path, Window]]:
    """Transform, width, height of the mosaic and each tile's window in it (tile edges on pixel edges)."""
    left = min(t.bounds[0] for t in tiles)
    top = max(t.bounds[3] for t in tiles)
    right = max(t.bounds[2] for t in tiles)
    bottom = min(t.bounds[1] for t in tiles)

    def pixels(distance: float, what: str, tile: _Tile) -> int:
        n = distance / resolution
        if abs(n - round(n)) > _ALIGN_TOLERANCE * max(1.0, abs(n)):
            raise ValueError(
                f"the {what} of tile {tile.item} is not a multiple of the mosaic resolution {resolution}: "
                "the resolution must divide the tile size"
            )
        return round(n)

    windows = {}
    for t in tiles:
        col = pixels(t.bounds[0] - left, "x offset", t)
        row = pixels(top - t.bounds[3], "y offset", t)
        width = pixels(t.bounds[2] - t.bounds[0], "width", t)
        height = pixels(t.bounds[3] - t.bounds[1], "height", t)
        windows[t.item] = Window(col, row, width, height)
    width = round((right - left) / resolution)
    height = round((top - bottom) / resolution)
    return Affine(resolution, 0.0, left, 0.0, -resolution, top), width, height, windows


def _band_profiles(tile: _Tile, bands: Sequence[str]) -> dict[str, tuple[np.dtype, Any]]:
    out = {}
    for b in bands:
        with rasterio.open(tile.hrefs[b]) as src:
            out[b] = (np.dtype(src.dtypes[0]), src.nodata)
    return out


def _same_nodata(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def build_mosaic(
    stac_item_paths: Sequence[Path | str],
    bands: Sequence[str],
    out_dir_or_paths: Any,
    *,
    resolution: float = 120,
    per_band: bool = True,
    overview_levels: int = 7,
    threads: int = 2,
    compress: str = "zstd",
    blocksize: int = 512,
    level: int | None = None,
    resampling: str | Mapping[str, str] = "average",
) -> list[Path]:
    """Mosaic ``bands`` of the tiles described by ``stac_item_paths`` at ``resolution``; returns the COG paths.

    - ``resolution``: mosaic pixel size in units of the tiles' CRS (metres for EPSG:3577/6933); it must divide
      the tile size, so tile edges fall on mosaic pixel edges; the mosaic spans the bounding box of the tiles;
    - ``per_band``: one single-band COG per band (default), else one multi-band COG (the bands must then share
      one nodata value; the dtype is their common type);
    - dtype and nodata of each band come from the tile COGs;
    - ``resampling``: used both for the decimated reads and for the overviews (``average``; a mapping gives a
      resampling per band, e.g. ``nearest`` for categorical bands);
    - ``overview_levels``: exact number of internal overviews (factors 2..2**n);
    - ``threads``: tiles read in parallel, and GDAL compression threads;
    - ``compress``/``level``/``blocksize``: COG encoding (:class:`eostats.cog.CogOptions`).
    """
    if not stac_item_paths:
        raise ValueError("no STAC items to mosaic")
    bands = list(bands)
    if not bands:
        raise ValueError("no bands to mosaic")
    if resolution <= 0:
        raise ValueError(f"mosaic resolution must be positive, got {resolution}")
    tiles, crs = _read_tiles(stac_item_paths, bands)
    transform, width, height, windows = _mosaic_grid(tiles, float(resolution))
    profiles = _band_profiles(tiles[0], bands)

    def band_resampling(band: str) -> str:
        return resampling.get(band, "average") if isinstance(resampling, Mapping) else resampling

    paths = mosaic_paths(out_dir_or_paths, bands, per_band)
    outputs = (
        [_Output(p, (b,)) for p, b in zip(paths, bands, strict=True)]
        if per_band
        else [_Output(paths[0], tuple(bands))]
    )
    if not per_band:
        nodatas = [profiles[b][1] for b in bands]
        if not all(_same_nodata(nodatas[0], n) for n in nodatas):
            raise ValueError(
                f"a multi-band mosaic needs one nodata value; the bands have {nodatas}"
            )
        if len({band_resampling(b) for b in bands}) > 1:
            raise ValueError("a multi-band mosaic needs one resampling for every band")

    temps: dict[Path, Path] = {}
    try:
        with contextlib.ExitStack() as stack:
            targets: dict[
                str, tuple[Any, int, np.dtype]
            ] = {}  # band -> (dataset, band index, dtype)
            for out in outputs:
                dtype = np.result_type(*(profiles[b][0] for b in out.bands))
                remove_stale_temporaries(out.path)  # left by a killed job
                temps[out.path] = tmp = temporary_sibling(out.path, kind="build")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                dst = stack.enter_context(
                    rasterio.open(
                        tmp,
                        "w",
                        driver="GTiff",
                        width=width,
                        height=height,
                        count=len(out.bands),
                        dtype=dtype.name,
                        crs=crs,
                        transform=transform,
                        nodata=profiles[out.bands[0]][1],
                        tiled=True,
                        blockxsize=blocksize,
                        blockysize=blocksize,
                        # never-written blocks (no tile there) are not stored and read back as nodata
                        sparse_ok=True,
                        compress="zstd",
                        zstd_level=1,
                        bigtiff="IF_SAFER",
                    )
                )
                for i, b in enumerate(out.bands, start=1):
                    dst.set_band_description(i, b)
                    targets[b] = (dst, i, dtype)

            lock = threading.Lock()

            def mosaic_tile(tile: _Tile) -> None:
                window = windows[tile.item]
                shape = (int(window.height), int(window.width))
                for band in bands:
                    with rasterio.open(tile.hrefs[band]) as src:
                        # a decimated read: GDAL picks the overview nearest the target resolution
                        pixels = src.read(
                            1, out_shape=shape, resampling=Resampling[band_resampling(band)]
                        )
                    dst, index, dtype = targets[band]
                    with lock:
                        dst.write(pixels.astype(dtype, copy=False), index, window=window)

            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                for _ in pool.map(mosaic_tile, tiles):
                    pass

        for out in outputs:
            options = CogOptions(
                compress=compress,
                level=level,
                blocksize=blocksize,
                overview_levels=overview_levels,
                overview_resampling=band_resampling(out.bands[0]),
                num_threads=max(1, threads),
            )
            with rasterio.open(temps[out.path], "r+") as src:
                copy_to_cog(src, out.path, options)
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return [out.path for out in outputs]

"""RGBA previews and thumbnails of a tile's outputs (odc-stats' ``rgba`` aux band and ``_thumbnail.jpg``).

``to_rgba`` follows odc-algo's ``to_rgba_np``: each of the red, green and blue bands is clamped to
``clamp = (low, high)`` (odc-stats' default ``(1, 3000)``) and scaled to 0-255 — integers as
``(v - low) * 255 // (high - low)`` in uint32, floats as ``(v - low) * (255 / (high - low))`` truncated — and alpha is
255 where the *red* band holds data (not nodata, not NaN), else 0.

``write_rgba`` writes the four channels as one uint8 COG (``..._rgba.tif`` in odc-stats' layout);
``write_thumbnail`` a JPEG of at most ``max_size`` pixels a side (pixels without data black), as eodatasets3
does for odc-stats. Both take the tile's GeoBox (any CRS; the thumbnail carries no georeferencing).

Which bands: a plugin's ``rgb_bands`` attribute if it has one, else :data:`DEFAULT_RGB_BANDS` by registered
plugin, e.g. ``gm-s2`` → ``B04 B03 B02``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

DEFAULT_CLAMP = (1.0, 3000.0)
DEFAULT_RGB_BANDS: dict[str, tuple[str, str, str]] = {
    "gm_ls_annual": ("nbart_red", "nbart_green", "nbart_blue"),
    "gm_s2_annual": ("B04", "B03", "B02"),
    "gm_ls_bitmask": ("red", "green", "blue"),
}


def rgb_bands_of(plugin: Any) -> tuple[str, str, str] | None:
    """The plugin's RGB bands: its ``rgb_bands`` attribute, else the default for its ``NAME``, else None."""
    bands = getattr(plugin, "rgb_bands", None) or DEFAULT_RGB_BANDS.get(getattr(plugin, "NAME", ""))
    if bands is None:
        return None
    if len(bands) != 3:
        raise ValueError(f"rgb_bands must name three bands (red, green, blue), got {bands!r}")
    return tuple(bands)  # type: ignore[return-value]


def _to_u8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        raise ValueError(f"clamp must be (low, high) with low < high, got {(low, high)}")
    clipped = np.clip(values, low, high)
    if values.dtype.kind == "f":
        return ((clipped - low) * (255.0 / (high - low))).astype(np.uint8)
    return ((clipped - int(low)).astype(np.uint32) * 255 // int(high - low)).astype(np.uint8)


def to_rgba(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    nodata: float | int | None,
    clamp: Sequence[float] = DEFAULT_CLAMP,
) -> np.ndarray:
    """uint8 ``(4, y, x)``: R, G, B scaled from ``clamp`` and alpha from the red band's validity."""
    low, high = float(clamp[0]), float(clamp[1])
    if red.dtype.kind == "f":
        valid = ~np.isnan(red)
        if nodata is not None and not np.isnan(nodata):
            valid &= red != nodata
    elif nodata is not None:
        valid = red != nodata
    else:
        valid = np.ones(red.shape, bool)
    channels = [_to_u8(np.asarray(b), low, high) for b in (red, green, blue)]
    return np.stack([*channels, valid.astype(np.uint8) * np.uint8(255)])


def tile_rgba(
    data: Mapping[str, Any], bands: Sequence[str], nodata: float | int | None, clamp=DEFAULT_CLAMP
) -> np.ndarray:
    """:func:`to_rgba` of three variables of a tile's outputs (xarray or numpy)."""
    r, g, b = (np.asarray(getattr(data[name], "values", data[name])) for name in bands)
    return to_rgba(r, g, b, nodata=nodata, clamp=clamp)


def write_rgba(
    path: Path | str,
    rgba: np.ndarray,
    geobox: GeoBox,
    *,
    compress: str = "deflate",
    blocksize: int = 512,
) -> Path:
    """The RGBA preview as a 4-band uint8 COG on ``geobox`` (alpha as the 4th band)."""
    path = Path(path)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=rgba.shape[2],
        height=rgba.shape[1],
        count=4,
        dtype="uint8",
        crs=geobox.crs.to_wkt(),
        transform=geobox.transform,
        compress=compress,
        blocksize=blocksize,
        overview_resampling="average",
    ) as dst:
        dst.write(rgba)
        for i, name in enumerate(("red", "green", "blue", "alpha"), start=1):
            dst.set_band_description(i, name)
    return path


def write_thumbnail(
    path: Path | str, rgba: np.ndarray, *, max_size: int = 512, quality: int = 85
) -> Path:
    """A JPEG of the preview, at most ``max_size`` pixels a side; pixels without data are black."""
    path = Path(path)
    _, ny, nx = rgba.shape
    step = max(1, int(np.ceil(max(ny, nx) / max_size)))
    out_shape = (3, -(-ny // step), -(-nx // step))
    rgb = np.where(rgba[3:4] > 0, rgba[:3], 0).astype(np.uint8)
    with (
        rasterio.MemoryFile() as mem,
        mem.open(driver="GTiff", width=nx, height=ny, count=3, dtype="uint8") as src,
    ):
        src.write(rgb)
        small = src.read(out_shape=out_shape, resampling=Resampling.average)
    with rasterio.open(
        path,
        "w",
        driver="JPEG",
        width=out_shape[2],
        height=out_shape[1],
        count=3,
        dtype="uint8",
        quality=quality,
    ) as dst:
        dst.write(small)
    return path

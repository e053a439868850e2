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


#: the odc-stats name of the preview: ``cog_opts.overrides.rgba`` switches it on, the file ends in ``_rgba.tif``
RGBA_BAND = "rgba"
_RGBA_KEYS = ("compress", "blocksize")
#: odc-stats' rgba overrides also name keys of its own COG writer; they do not change the preview here
_RGBA_IGNORED_KEYS = (
    "zlevel",
    "level",
    "quality",
    "overview_resampling",
    "ovr_blocksize",
    "overview_levels",
)


def rgba_options(cog_opts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The preview's settings from an odc-stats ``cog_opts``: ``overrides.rgba`` or a mapping ``rgba``; None
    (no preview) when neither is given. Keys ``compress`` (deflate, jpeg, webp, ...) and ``blocksize``."""
    cog_opts = cog_opts or {}
    settings = (cog_opts.get("overrides") or {}).get(RGBA_BAND, cog_opts.get(RGBA_BAND))
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise ValueError(f"cog_opts.overrides.rgba must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(_RGBA_KEYS) - set(_RGBA_IGNORED_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in cog_opts.overrides.rgba; allowed: {', '.join(_RGBA_KEYS)}"
        )
    return {
        "compress": str(settings.get("compress", "deflate")).lower(),
        "blocksize": int(settings.get("blocksize", cog_opts.get("blocksize", 512))),
    }


def write_previews(
    out_dir: Path | str,
    file_prefix: str,
    data: Mapping[str, Any],
    plugin: Any,
    geobox: GeoBox,
    cog_opts: Mapping[str, Any] | None,
) -> dict[str, Path]:
    """The tile's ``{file_prefix}_rgba.tif`` and ``{file_prefix}_thumbnail.jpg`` in ``out_dir``, when
    ``cog_opts`` asks for the preview and the plugin has RGB bands (else nothing).

    Bands: the plugin's ``rgb_bands`` (red, green, blue output measurements), scaled from its ``rgb_clamp``
    (default (1, 3000), in the bands' own units); alpha from the red measurement's declared nodata. Returns
    {STAC asset key: path}: ``rgba`` and ``thumbnail``.
    """
    options = rgba_options(cog_opts)
    bands = rgb_bands_of(plugin)
    if options is None or bands is None:
        return {}
    nodata = {m.name: m.nodata for m in plugin.measurements}
    missing = [b for b in bands if b not in nodata]
    if missing:
        raise ValueError(f"rgb_bands {', '.join(missing)} are not outputs of plugin {plugin.NAME}")
    clamp = getattr(plugin, "rgb_clamp", None) or DEFAULT_CLAMP
    rgba = tile_rgba(data, bands, nodata[bands[0]], clamp)
    out_dir = Path(out_dir)
    return {
        RGBA_BAND: write_rgba(out_dir / f"{file_prefix}_{RGBA_BAND}.tif", rgba, geobox, **options),
        "thumbnail": write_thumbnail(out_dir / f"{file_prefix}_thumbnail.jpg", rgba),
    }


#: STAC asset fields of the preview files (the item lists them beside the measurements)
PREVIEW_ASSETS = {
    RGBA_BAND: {
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["visual"],
    },
    "thumbnail": {"type": "image/jpeg", "roles": ["thumbnail"]},
}

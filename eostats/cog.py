"""Atomic Cloud Optimized GeoTIFF writing, and COG structure checks.

Files are written with GDAL's ``COG`` driver (through rasterio), not with odc-geo's ``write_cog``: odc-geo builds
a plain GTiff with copied overviews, which lacks the COG layout marker (``LAYOUT=COG``, ghost header with the IFDs
first and the smallest overview's data first) and gives no control over band descriptions; the COG driver does
both and takes every option below directly.

Options follow odc-stats' ``cog_opts`` (``compress``, ``zlevel``/``zstd_level``, ``blocksize``, ``predictor``,
``overview_resampling``, ``overview_levels``, per-band ``overrides``), see :meth:`CogOptions.from_config`.
Pixels are written in the CRS and on the pixel grid of ``data.odc.geobox``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.enums import Resampling

from eostats.fileio import atomic_path

__all__ = ["CogOptions", "cog_problems", "copy_to_cog", "overview_factors", "write_cog"]

_COMPRESSIONS = {"deflate": "DEFLATE", "zstd": "ZSTD", "lzw": "LZW", "none": "NONE"}
_LEVEL_RANGE = {"deflate": (1, 12), "zstd": (1, 22)}
_PREDICTOR_NAMES = {"none": 1, "no": 1, "standard": 2, "horizontal": 2, "floating_point": 3}
#: accepted for odc-stats compatibility but without effect: the COG driver tiles overviews with ``blocksize``
_IGNORED_KEYS = frozenset({"ovr_blocksize"})
_LEVEL_KEYS = ("level", "zlevel", "zstd_level")


def _resampling(name: str) -> Resampling:
    try:
        return Resampling[name.lower()]
    except KeyError:
        raise ValueError(f"unknown resampling {name!r}") from None


@dataclass(frozen=True)
class CogOptions:
    """How a COG is encoded.

    - ``compress``: ``deflate`` | ``zstd`` | ``lzw`` | ``none``; ``level``: its level (deflate 1-12, zstd 1-22;
      None = GDAL's default);
    - ``predictor``: ``"auto"`` (2 = horizontal differencing for integers, 3 = floating point for floats), or
      1 / 2 / 3 explicitly; ignored without compression;
    - ``blocksize``: internal tile size in pixels (multiple of 16), also used for the overviews;
    - ``overview_resampling``: GDAL resampling used to build overviews (``nearest`` for categorical bands);
    - ``overview_levels``: None = automatic (halve until the overview fits in one block; no overviews when the
      image fits in one block), an int = exactly that many levels (factors 2, 4, ..., 2**n), or a sequence of
      factors;
    - ``bigtiff``: GDAL ``BIGTIFF`` (``IF_SAFER``, ``YES``, ``NO``, ``IF_NEEDED``);
    - ``num_threads``: GDAL ``NUM_THREADS`` for compression (an int or ``"ALL_CPUS"``).
    """

    compress: str = "deflate"
    level: int | None = 6
    predictor: int | str = "auto"
    blocksize: int = 512
    overview_resampling: str = "average"
    overview_levels: int | tuple[int, ...] | None = None
    bigtiff: str = "IF_SAFER"
    num_threads: int | str = 1

    def __post_init__(self) -> None:
        compress = "none" if self.compress in (None, False) else str(self.compress).lower()
        if compress not in _COMPRESSIONS:
            raise ValueError(
                f"cog compress {self.compress!r} is not one of {sorted(_COMPRESSIONS)}"
            )
        object.__setattr__(self, "compress", compress)
        if self.level is not None:
            lo, hi = _LEVEL_RANGE.get(compress, (None, None))
            if lo is not None and not lo <= int(self.level) <= hi:
                raise ValueError(f"cog level {self.level} is outside {lo}..{hi} for {compress}")
        predictor = self.predictor
        if predictor is True:
            predictor = "auto"
        elif predictor is False or predictor is None:
            predictor = 1
        elif isinstance(predictor, str) and predictor.lower() != "auto":
            key = predictor.lower()
            if key.isdigit():
                predictor = int(key)
            elif key in _PREDICTOR_NAMES:
                predictor = _PREDICTOR_NAMES[key]
            else:
                raise ValueError(f"cog predictor {self.predictor!r} is not auto, 1, 2 or 3")
        elif isinstance(predictor, str):
            predictor = "auto"
        if predictor != "auto" and predictor not in (1, 2, 3):
            raise ValueError(f"cog predictor {self.predictor!r} is not auto, 1, 2 or 3")
        object.__setattr__(self, "predictor", predictor)
        if int(self.blocksize) <= 0 or int(self.blocksize) % 16:
            raise ValueError(f"cog blocksize {self.blocksize} must be a positive multiple of 16")
        _resampling(self.overview_resampling)
        levels = self.overview_levels
        if isinstance(levels, Sequence) and not isinstance(levels, str):
            levels = tuple(int(f) for f in levels)
            if any(f < 2 for f in levels) or list(levels) != sorted(set(levels)):
                raise ValueError(
                    f"cog overview_levels {self.overview_levels!r} must be increasing factors >= 2"
                )
        elif levels is not None:
            levels = int(levels)
            if levels < 0:
                raise ValueError(f"cog overview_levels {self.overview_levels!r} must be >= 0")
        object.__setattr__(self, "overview_levels", levels)

    # -- configuration -------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        cog_opts: Mapping[str, Any] | None = None,
        *,
        band: str | None = None,
        categorical: bool = False,
        defaults: CogOptions | None = None,
    ) -> CogOptions:
        """Options for ``band`` from an odc-stats style ``cog_opts`` mapping.

        Precedence, lowest first: ``defaults`` (or the class defaults) → the scalar keys of ``cog_opts`` →
        ``nearest`` overview resampling if ``categorical`` → the band's own mapping, taken from
        ``cog_opts["overrides"][band]`` or from a dict-valued ``cog_opts[band]`` (odc-stats accepts both).
        Keys: ``compress``, ``level``/``zlevel``/``zstd_level``, ``predictor``, ``blocksize``,
        ``overview_resampling``, ``overview_levels``, ``bigtiff``, ``num_threads``; ``ovr_blocksize`` is accepted
        and ignored. Any other key raises ``ValueError`` naming it.
        """
        opts = defaults or cls()
        cog_opts = dict(cog_opts or {})
        overrides = cog_opts.pop("overrides", None) or {}
        band_specific = {
            k: cog_opts.pop(k) for k in list(cog_opts) if isinstance(cog_opts[k], Mapping)
        }
        band_specific.update(overrides)
        opts = opts._updated(cog_opts, "cog_opts")
        if categorical:
            opts = replace(opts, overview_resampling="nearest")
        if band is not None and band in band_specific:
            opts = opts._updated(band_specific[band], f"cog_opts for band {band!r}")
        return opts

    @classmethod
    def for_band(cls, band: str, overrides: Mapping[str, Any] | None = None) -> CogOptions:
        """Options for ``band`` from an odc-stats ``cog_opts`` mapping (with ``overrides``/per-band dicts).

        Same as ``CogOptions.from_config(overrides, band=band)``.
        """
        return cls.from_config(overrides, band=band)

    def _updated(self, settings: Mapping[str, Any], where: str) -> CogOptions:
        changes: dict[str, Any] = {}
        settings = dict(settings)
        unknown = sorted(
            set(settings)
            - {f for f in self.__dataclass_fields__}
            - set(_LEVEL_KEYS)
            - _IGNORED_KEYS
            - {"threads"}
        )
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {where}")
        compress = settings.get("compress", self.compress)
        compress = "none" if compress in (None, False) else str(compress).lower()
        for key in (
            "compress",
            "predictor",
            "blocksize",
            "overview_resampling",
            "overview_levels",
            "bigtiff",
        ):
            if key in settings:
                changes[key] = settings[key]
        if "num_threads" in settings or "threads" in settings:
            changes["num_threads"] = settings.get("num_threads", settings.get("threads"))
        # odc-stats spells the level per codec; the one matching the codec wins over the generic `level`
        specific = {"deflate": "zlevel", "zstd": "zstd_level"}.get(compress)
        if specific and specific in settings:
            changes["level"] = settings[specific]
        elif "level" in settings:
            changes["level"] = settings["level"]
        elif "compress" in settings and compress != self.compress:
            changes["level"] = None  # a level of another codec makes no sense
        return replace(self, **changes)

    # -- GDAL ----------------------------------------------------------------------------------------
    def predictor_for(self, dtype: Any) -> int:
        """The TIFF predictor used for ``dtype`` (1 = none)."""
        if self.compress == "none":
            return 1
        if self.predictor == "auto":
            kind = np.dtype(dtype).kind
            return 3 if kind == "f" else 2 if kind in "iu" else 1
        return int(self.predictor)

    def creation_options(self, dtype: Any) -> dict[str, str]:
        """GDAL COG driver creation options for a raster of ``dtype`` (overview options excluded)."""
        opts = {
            "COMPRESS": _COMPRESSIONS[self.compress],
            "BLOCKSIZE": str(int(self.blocksize)),
            "BIGTIFF": str(self.bigtiff).upper(),
            "NUM_THREADS": str(self.num_threads),
            "OVERVIEW_RESAMPLING": self.overview_resampling.upper(),
        }
        if self.compress != "none":
            opts["PREDICTOR"] = {1: "NO", 2: "STANDARD", 3: "FLOATING_POINT"}[
                self.predictor_for(dtype)
            ]
        if self.level is not None and self.compress in _LEVEL_RANGE:
            opts["LEVEL"] = str(int(self.level))
        return opts


def overview_factors(
    width: int, height: int, levels: int | Sequence[int] | None, blocksize: int
) -> list[int]:
    """Decimation factors of the overviews of a ``width`` x ``height`` raster.

    ``None``: GDAL's automatic rule (halve while the image is larger than one block). An int ``n``: 2, 4, ...,
    2**n, except that levels after the first 1x1 level are dropped with a warning (GDAL refuses several 1x1
    levels). A sequence: those factors.
    """
    if levels is None:
        factors, f = [], 1
        while math.ceil(width / f) > blocksize or math.ceil(height / f) > blocksize:
            f *= 2
            factors.append(f)
        return factors
    if isinstance(levels, Sequence):
        return [int(f) for f in levels]
    factors = []
    for i in range(1, int(levels) + 1):
        factors.append(2**i)
        if math.ceil(width / 2**i) == 1 and math.ceil(height / 2**i) == 1:
            break
    if len(factors) < int(levels):
        warnings.warn(
            f"a {width}x{height} raster supports only {len(factors)} overview levels, not {levels}",
            stacklevel=2,
        )
    return factors


def copy_to_cog(
    src: rasterio.io.DatasetReader | rasterio.io.DatasetWriter,
    path: Path | str,
    options: CogOptions,
    *,
    build_overviews: bool = True,
) -> Path:
    """Convert the open dataset ``src`` into a COG at ``path`` (atomically) with ``options``.

    With explicit ``overview_levels`` the overviews are built on ``src`` first (so ``src`` must be writable:
    an in-memory or a temporary dataset) and copied as they are; otherwise the COG driver builds them with its
    automatic rule. ``build_overviews=False`` uses overviews ``src`` already has.
    """
    opts = options.creation_options(src.dtypes[0])
    if not build_overviews:
        opts["OVERVIEWS"] = "FORCE_USE_EXISTING" if src.overviews(1) else "NONE"
    elif options.overview_levels is not None:
        factors = overview_factors(
            src.width, src.height, options.overview_levels, options.blocksize
        )
        if factors:
            src.build_overviews(factors, _resampling(options.overview_resampling))
            opts["OVERVIEWS"] = "FORCE_USE_EXISTING"
        else:
            opts["OVERVIEWS"] = "NONE"
    path = Path(path)
    with atomic_path(path) as tmp:
        rasterio.shutil.copy(src, tmp, driver="COG", **opts)
    return path


def _check_nodata(nodata: float | int | None, dtype: np.dtype) -> None:
    if nodata is None:
        return
    if np.isnan(nodata):
        if dtype.kind != "f":
            raise ValueError(f"nodata NaN is not possible for {dtype} data")
        return
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            raise ValueError(f"nodata {nodata} is not representable in {dtype}")


def write_cog(
    path: Path | str,
    data: xr.DataArray,
    *,
    nodata: float | int | None,
    description: str | None,
    options: CogOptions | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write the 2-D ``data`` (dims y, x, with ``data.odc.geobox``) as a COG at ``path``; returns ``path``.

    CRS and affine transform come from the geobox. ``nodata`` is stored as the band's nodata value and
    ``description`` as its description (GDAL band description = band name in odc-stats outputs). The file is
    written under a temporary name next to ``path`` and renamed into place when complete.
    """
    options = options or CogOptions()
    if data.ndim != 2:
        raise ValueError(f"write_cog needs 2-D data (y, x), got dims {data.dims}")
    geobox = data.odc.geobox
    if geobox is None:
        raise ValueError("write_cog needs data with a geobox (data.odc.geobox is None)")
    pixels = np.asarray(data.values)
    dtype = pixels.dtype
    if dtype == np.bool_:
        pixels, dtype = pixels.astype("uint8"), np.dtype("uint8")
    _check_nodata(nodata, dtype)
    height, width = pixels.shape
    profile = {
        "driver": "MEM",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": dtype.name,
        "crs": geobox.crs.to_wkt() if geobox.crs is not None else None,
        "transform": geobox.transform,
        "nodata": nodata,
    }
    # the MEM driver ignores the name; overviews (if explicit) are built in memory, then copied
    with rasterio.open("eostats-cog-source", "w", **profile) as src:
        src.write(pixels, 1)
        if description:
            src.set_band_description(1, description)
        if tags:
            src.update_tags(**{k: str(v) for k, v in tags.items()})
        return copy_to_cog(src, path, options)


def cog_problems(
    path: Path | str,
    *,
    blocksize: int | None = None,
    overviews: bool | int | None = None,
    compress: str | None = None,
) -> list[str]:
    """Structural problems of the COG at ``path``; an empty list means it is a well-formed COG.

    Checked: GTiff driver with ``LAYOUT=COG`` in the IMAGE_STRUCTURE metadata; internally tiled (square blocks
    of ``blocksize`` if given); nodata set on every band; overviews present when the image is larger than one
    block (``overviews``: True = required, False = none allowed, an int = exactly that many levels; the default
    None only requires them on images larger than a block, extra levels are no structural problem); each overview
    smaller than the previous one and tiled like the full image; IFDs of the full image and its overviews at
    the start of the file in that order, and the tile data in the reverse order (smallest overview first), so
    a reader gets every header with its first request. ``compress``: the expected codec (e.g. ``"deflate"``).
    """
    problems: list[str] = []
    with rasterio.open(path) as ds:
        if ds.driver != "GTiff":
            return [f"driver is {ds.driver}, not GTiff"]
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        if structure.get("LAYOUT") != "COG":
            problems.append("IMAGE_STRUCTURE has no LAYOUT=COG (not written as a COG)")
        if (
            compress is not None
            and structure.get("COMPRESSION", "NONE").lower() != compress.lower()
        ):
            problems.append(
                f"compression is {structure.get('COMPRESSION', 'NONE')}, expected {compress}"
            )
        block_y, block_x = ds.block_shapes[0]
        if not ds.profile.get("tiled", False) or block_y != block_x:
            problems.append(
                f"not internally tiled with square blocks (block shape {block_y}x{block_x})"
            )
        if blocksize is not None and (block_y, block_x) != (blocksize, blocksize):
            problems.append(f"block size is {block_y}x{block_x}, expected {blocksize}x{blocksize}")
        if any(v is None for v in ds.nodatavals):
            problems.append("nodata is not set on every band")

        factors = ds.overviews(1)
        larger_than_a_block = ds.width > block_x or ds.height > block_y
        expected: bool | int | None = (
            True if overviews is None and larger_than_a_block else overviews
        )
        if expected is True and not factors:
            problems.append(
                f"no overviews on a {ds.width}x{ds.height} image with {block_x}px blocks"
            )
        elif expected is False and factors:
            problems.append(f"{len(factors)} overviews where none are expected")
        elif (
            isinstance(expected, int)
            and not isinstance(expected, bool)
            and len(factors) != expected
        ):
            problems.append(f"{len(factors)} overview levels, expected {expected}")

        def tiff_item(name: str, ovr: int | None) -> int | None:
            value = ds.get_tag_item(name, "TIFF", bidx=1, ovr=ovr)
            return int(value) if value not in (None, "") else None

        levels: list[int | None] = [None, *range(len(factors))]
        ifds = [tiff_item("IFD_OFFSET", lvl) for lvl in levels]
        first_blocks = [tiff_item("BLOCK_OFFSET_0_0", lvl) for lvl in levels]
        if None in ifds:
            problems.append("IFD offsets are not readable")
        else:
            if ifds != sorted(ifds):
                problems.append(
                    "IFDs are not ordered full image first, then overviews by decreasing size"
                )
            data_starts = [b for b in first_blocks if b]
            if data_starts and max(ifds) > min(data_starts):
                problems.append("an IFD lies after tile data (headers are not all at the start)")
        present = [b for b in first_blocks if b]
        if len(present) == len(first_blocks) and present != sorted(present, reverse=True):
            problems.append("tile data are not ordered smallest overview first, full image last")
        previous = (ds.width, ds.height)
        for i in range(len(factors)):
            with rasterio.open(path, overview_level=i) as ovr:
                size = (ovr.width, ovr.height)
                if ovr.block_shapes[0] != (block_y, block_x):
                    problems.append(
                        f"overview {i} has blocks {ovr.block_shapes[0]}, not {block_y}x{block_x}"
                    )
            if size == previous or size[0] > previous[0] or size[1] > previous[1]:
                problems.append(
                    f"overview {i} ({size[0]}x{size[1]}) is not smaller than the level before it"
                )
            previous = size
    return problems

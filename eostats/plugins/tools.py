"""Building blocks shared by the statistics plugins: mask definitions, pixel-quality masks, fusers, percentiles.

Mask definitions
    Enumerated class bands (Landsat fmask, Sentinel-2 SCL) map class names to codes; bit-field bands (USGS
    Collection 2 ``QA_PIXEL``, the WOfS water byte) map flag names to ``(first bit, number of bits, values)``.
    STAC items carry no datacube ``flags_definition``, so the definitions odc-stats reads from its product
    documents are spelled out here with the same names.

Masks on native pixels
    :class:`ClassMask` and :class:`BitMask` turn a loaded dataset (dims ``time, y, x``, dask-backed) into a bool
    "bad" array: nodata classes or flags, non-contiguous pixels, and cloud classes or flags buffered by their
    morphological chains (radii in native pixels, :func:`eostats.masking.mask_cleanup_dask`).

Fusers
    Several observations of one solar day (dim ``time``) into one: :func:`fuse_mean` (mean of the valid values,
    rounded half to even, odc-algo's ``_fuse_mean_np``); :func:`eostats.plugins.base.first_valid` (first valid
    value; bool bands OR) is the default.

Percentiles
    :func:`nearest_rank_percentiles`: odc-algo's rule (sort the valid values, take index
    ``round_half_even(q * (n - 1))``, nodata where fewer than ``min_count`` valid values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import xarray as xr

from eostats.masking import FMASK_CLASSES, class_slots, cleanup_depth, mask_cleanup_dask
from eostats.plugins.base import PluginConfigError, check_mapping, nodata_of, parse_filter_chain

# ------------------------------------------------------------------------------------------------
# mask definitions

#: Sentinel-2 L2A scene classification (SCL) codes, with the class names of the DEA/DE Africa product definitions
SCL_CLASSES: dict[str, int] = {
    "no data": 0,
    "saturated or defective": 1,
    "dark area pixels": 2,
    "cloud shadows": 3,
    "vegetation": 4,
    "bare soils": 5,
    "water": 6,
    "unclassified": 7,
    "cloud medium probability": 8,
    "cloud high probability": 9,
    "thin cirrus": 10,
    "snow or ice": 11,
}

#: SCL classes odc-stats treats as cloud (gm-s2's default cloud filter, pq's erased classes)
SCL_CLOUD_CLASSES: tuple[str, ...] = (
    "cloud shadows",
    "cloud medium probability",
    "cloud high probability",
    "thin cirrus",
)

CLASS_PRESETS: dict[str, dict[str, int]] = {"fmask": dict(FMASK_CLASSES), "scl": SCL_CLASSES}


@dataclass(frozen=True)
class BitFlag:
    """A flag of a bit-field band: ``bits`` starting at ``first_bit``; ``values`` names its codes."""

    first_bit: int
    bits: int
    values: Mapping[Any, int]

    def code(self, value: Any, key: str) -> int:
        """The integer code of ``value`` (a value name, a bool, or the integer itself)."""
        for name, code in self.values.items():
            if value == name and type(value) is type(name):
                return code
        if isinstance(value, bool) and self.bits == 1:
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << self.bits):
            return value
        names = ", ".join(repr(v) for v in self.values)
        raise PluginConfigError(
            f"{key}: unknown value {value!r}; allowed: {names} or an integer code"
        )


def _confidence(first_bit: int) -> BitFlag:
    return BitFlag(first_bit, 2, {"none": 0, "low": 1, "medium": 2, "high": 3})


def _single(first_bit: int, off: str, on: str) -> BitFlag:
    return BitFlag(first_bit, 1, {off: 0, on: 1})


#: USGS Landsat Collection 2 Level-2 ``QA_PIXEL``, with the flag names of the datacube product definitions
QA_PIXEL_FLAGS: dict[str, BitFlag] = {
    "nodata": BitFlag(0, 1, {False: 0, True: 1}),
    "dilated_cloud": _single(1, "not_dilated", "dilated"),
    "cirrus": _single(2, "not_high_confidence", "high_confidence"),
    "cloud": _single(3, "not_high_confidence", "high_confidence"),
    "cloud_shadow": _single(4, "not_high_confidence", "high_confidence"),
    "snow": _single(5, "not_high_confidence", "high_confidence"),
    "clear": BitFlag(6, 1, {False: 0, True: 1}),
    "water": _single(7, "land_or_cloud", "water"),
    "cloud_confidence": _confidence(8),
    "cloud_shadow_confidence": _confidence(10),
    "snow_ice_confidence": _confidence(12),
    "cirrus_confidence": _confidence(14),
}

#: WOfS water observation byte (``water`` band of ga_ls_wo_3): bit values
WOFS_NODATA = 1 << 0
WOFS_NONCONTIGUOUS = 1 << 1
WOFS_LOW_SOLAR_ANGLE = 1 << 2
WOFS_TERRAIN_SHADOW = 1 << 3
WOFS_HIGH_SLOPE = 1 << 4
WOFS_CLOUD_SHADOW = 1 << 5
WOFS_CLOUD = 1 << 6
WOFS_WET = 1 << 7
#: the WOfS bits that ``cloud_filters`` may buffer, by odc-stats' key names
WOFS_BUFFERABLE = {
    "cloud": WOFS_CLOUD,
    "cloud_shadow": WOFS_CLOUD_SHADOW,
    "terrain_shadow": WOFS_TERRAIN_SHADOW,
}


def resolve_classes(
    value: Mapping[str, int] | str | None, key: str, default: str = "fmask"
) -> dict[str, int]:
    """A class table from a preset name (``fmask``, ``scl``) or a ``{name: code}`` mapping."""
    if value is None:
        value = default
    if isinstance(value, str):
        if value not in CLASS_PRESETS:
            raise PluginConfigError(
                f"{key}: unknown preset {value!r}; allowed: {', '.join(CLASS_PRESETS)} or a mapping"
            )
        return dict(CLASS_PRESETS[value])
    table = check_mapping(value, key)
    out = {}
    for name, code in table.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise PluginConfigError(f"{key}.{name}: class code must be an integer, got {code!r}")
        out[str(name)] = code
    return out


def class_codes(names: str | Sequence[str], classes: Mapping[str, int], key: str) -> list[int]:
    """Codes of class names (``"cloud,shadow"`` or a list); errors name ``key`` and the allowed names."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    codes = []
    for name in names:
        if name not in classes:
            raise PluginConfigError(
                f"{key}: unknown mask class {name!r}; allowed: {', '.join(classes)}"
            )
        codes.append(classes[name])
    return codes


def flag_matches(band: Any, flag: BitFlag, code: int) -> Any:
    """True where ``flag`` of the bit-field ``band`` holds ``code`` (numpy, dask or xarray)."""
    field_mask = ((1 << flag.bits) - 1) << flag.first_bit
    return (band & field_mask) == (code << flag.first_bit)


def parse_flags(
    flags: Mapping[str, Any] | None, definition: Mapping[str, BitFlag], key: str
) -> list[tuple[BitFlag, int]]:
    """``{flag name: value}`` → ``[(flag, code), ...]``, naming ``key`` and the allowed flags on error."""
    out = []
    for name, value in check_mapping(flags or {}, key).items():
        if name not in definition:
            raise PluginConfigError(
                f"{key}: unknown flag {name!r}; allowed: {', '.join(definition)}"
            )
        out.append((definition[name], definition[name].code(value, f"{key}.{name}")))
    return out


def any_flag(band: Any, flags: Sequence[tuple[BitFlag, int]]) -> Any:
    """True where at least one of ``flags`` holds its code; all False without flags."""
    hit = (band & 0) != 0
    for flag, code in flags:
        hit = hit | flag_matches(band, flag, code)
    return hit


def all_flags(band: Any, flags: Sequence[tuple[BitFlag, int]]) -> Any:
    """True where every one of ``flags`` holds its code; all True without flags."""
    hit = (band & 0) == 0
    for flag, code in flags:
        hit = hit & flag_matches(band, flag, code)
    return hit


def buffered(mask: xr.DataArray, chain: Sequence[tuple[str, int]]) -> xr.DataArray:
    """``mask`` cleaned by the morphology ``chain`` (native pixels), chunk-independent; a no-op without a chain."""
    if not chain:
        return mask
    return mask.copy(data=mask_cleanup_dask(mask.data, chain))


# ------------------------------------------------------------------------------------------------
# masks on native pixels


@dataclass
class ClassMask:
    """Bad pixels from an enumerated class band (fmask, SCL, any ``{name: code}`` table).

    bad = class in ``nodata_codes`` ∪ (``contiguity_band`` == 0) ∪ ⋃ cleanup(class in codes, chain) over
    ``cloud_filters``. Each entry's classes are combined before its chain is applied, as odc-stats does for a
    tuple of classes.
    """

    band: str
    classes: dict[str, int]
    nodata_codes: list[int]
    cloud_filters: list[tuple[list[int], list[tuple[str, int]]]]
    contiguity_band: str | None = None

    @classmethod
    def from_config(
        cls,
        *,
        mask_band: str,
        mask_classes: Mapping[str, int] | str | None,
        nodata_classes: Sequence[str] | None,
        cloud_filters: Mapping[str, Any] | None,
        contiguity_band: str | None,
        default_classes: str = "fmask",
        default_cloud_filters: Mapping[str, Any] | None = None,
    ) -> ClassMask:
        classes = resolve_classes(mask_classes, "plugin_config.mask_classes", default_classes)
        nodata_codes = class_codes(
            list(nodata_classes or []), classes, "plugin_config.nodata_classes"
        )
        if cloud_filters is None:
            # odc-stats' default: cloud and shadow classes removed, unbuffered
            cloud_filters = (
                default_cloud_filters
                if default_cloud_filters is not None
                else {"cloud": [], "shadow": []}
            )
        check_mapping(cloud_filters, "plugin_config.cloud_filters")
        filters = [
            (
                class_codes(name, classes, f"plugin_config.cloud_filters.{name}"),
                parse_filter_chain(chain, f"plugin_config.cloud_filters.{name}"),
            )
            for name, chain in cloud_filters.items()
        ]
        return cls(mask_band, classes, nodata_codes, filters, contiguity_band)

    @property
    def input_bands(self) -> list[str]:
        return [self.band] + ([self.contiguity_band] if self.contiguity_band else [])

    @property
    def buffer_pixels(self) -> int:
        return max((cleanup_depth(chain) for _, chain in self.cloud_filters), default=0)

    def nodata(self, xx: xr.Dataset) -> xr.DataArray:
        """Pixels without data: nodata classes and non-contiguous pixels (no clouds)."""
        bad = class_in(xx[self.band], self.nodata_codes)
        if self.contiguity_band:
            bad = bad | (xx[self.contiguity_band] == 0)
        return bad

    def clouds(self, xx: xr.Dataset) -> xr.DataArray:
        """Buffered cloud classes."""
        band = xx[self.band]
        bad = xr.zeros_like(band, dtype=bool)
        for codes, chain in self.cloud_filters:
            bad = bad | buffered(class_in(band, codes), chain)
        return bad

    def bad(self, xx: xr.Dataset) -> xr.DataArray:
        return self.nodata(xx) | self.clouds(xx)


@dataclass
class BitMask:
    """Bad pixels from a bit-field band (USGS ``QA_PIXEL`` by default).

    keep = every ``nodata_flags`` entry holds its value (default: the ``nodata`` flag is False);
    cloud = any ``flags`` entry holds its value (default: ``cloud`` or ``cirrus`` high confidence), cleaned
    by ``filters``; bad = ¬keep ∪ cloud.
    """

    band: str
    definition: dict[str, BitFlag]
    keep_flags: list[tuple[BitFlag, int]]
    cloud_flags: list[tuple[BitFlag, int]]
    filters: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def from_config(
        cls,
        *,
        mask_band: str,
        flags: Mapping[str, Any] | None,
        nodata_flags: Mapping[str, Any] | None,
        filters: Any = None,
        definition: Mapping[str, BitFlag] | None = None,
    ) -> BitMask:
        definition = dict(definition or QA_PIXEL_FLAGS)
        if flags is None:
            flags = {"cloud": "high_confidence", "cirrus": "high_confidence"}
        if nodata_flags is None:
            nodata_flags = {"nodata": False}
        return cls(
            mask_band,
            definition,
            parse_flags(nodata_flags, definition, "plugin_config.nodata_flags"),
            parse_flags(flags, definition, "plugin_config.flags"),
            parse_filter_chain(filters, "plugin_config.filters"),
        )

    @property
    def input_bands(self) -> list[str]:
        return [self.band]

    @property
    def buffer_pixels(self) -> int:
        return cleanup_depth(self.filters)

    def keep(self, xx: xr.Dataset) -> xr.DataArray:
        return all_flags(xx[self.band], self.keep_flags)

    def clouds(self, xx: xr.Dataset, *, apply_filters: bool = True) -> xr.DataArray:
        cloud = any_flag(xx[self.band], self.cloud_flags)
        return buffered(cloud, self.filters) if apply_filters else cloud

    def bad(self, xx: xr.Dataset) -> xr.DataArray:
        return ~self.keep(xx) | self.clouds(xx)


SCRATCH_INPUTS = "eostats:scratch_inputs"
"""Dataset attribute set by the tile reader on the freshly decoded observations it hands to ``native_transform``
and then drops: a plugin may overwrite them (:func:`erase` with ``in_place``) instead of copying."""


EARLY_MASK = "eostats:early_mask"
"""Dataset attribute set by the tile reader on the decoded observations it hands to ``native_transform`` when the
plugin's :meth:`~eostats.plugins.base.StatsPlugin.early_mask` gave one: the :class:`EarlyMask` it decoded the
other bands by (their blocks without a kept pixel left as nodata), for the plugin to erase with."""


class EarlyMask:
    """Bad pixels of a batch's observations worked out from the plugin's ``mask_bands`` alone, before the other
    bands are decoded: the class mask's packed planes (:meth:`~eostats.kernels.classmask.PackedClassMask.bad`).
    The reader decodes a block of another band only where :meth:`any_kept`; the plugin then erases with the same
    planes, so a block left undecoded is one the mask erases entirely."""

    def __init__(self, packed: Any, bad: np.ndarray) -> None:
        self.packed = packed
        self.bad = bad

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(time, y, x)`` of the observations the planes are for."""
        return (self.bad.shape[0], self.packed.layout.ny, self.packed.layout.nx)

    def any_kept(self, t: int, ys: slice, xs: slice) -> bool:
        """Whether observation ``t`` keeps any pixel of the window ``[ys, xs]`` (bounded slices)."""
        return self.packed.any_kept(self.bad[t], ys, xs)


def erase(
    var: xr.DataArray, bad: xr.DataArray, nodata: Any, *, in_place: bool = False
) -> xr.DataArray:
    """``var`` with ``nodata`` where ``bad``; dtype and attrs kept, ``attrs["nodata"]`` set. ``in_place``: ``var``'s
    own in-memory values are overwritten (only for inputs nobody else reads: :data:`SCRATCH_INPUTS`)."""
    if _in_memory(var) and _in_memory(bad) and var.shape == bad.shape and var.dims == bad.dims:
        # a tile block's observations: one masked fill instead of where's broadcast and cast
        values = np.ascontiguousarray(var.values)
        flags = np.ascontiguousarray(bad.values, dtype=bool)
        reuse = in_place and values is var.values and values.flags.writeable
        erased = values if reuse else np.empty_like(values)
        fill = np.asarray(nodata).astype(values.dtype)[()]
        _fill_where(values.reshape(-1), flags.reshape(-1), fill, erased.reshape(-1))
        return var.copy(data=erased).assign_attrs(nodata=nodata)
    out = var.where(~bad, nodata).astype(var.dtype)
    out.attrs = {**var.attrs, "nodata": nodata}
    return out


def stacked_bands(layers: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(layers)``, without the copy when the layers are consecutive slices of one C-contiguous array (the
    tile reader keeps the variables of one dtype in one ``(variable, time, y, x)`` buffer): then that array's
    slice, a view."""
    first = layers[0]
    base = first.base
    if (
        isinstance(base, np.ndarray)
        and base.flags.c_contiguous
        and base.ndim == first.ndim + 1
        and base.shape[1:] == first.shape
        and base.dtype == first.dtype
        and all(layer.base is base and layer.flags.c_contiguous for layer in layers)
    ):
        start, step = _address(base), first.nbytes
        offset, remainder = divmod(_address(first) - start, step)
        if remainder == 0 and all(
            _address(layer) == start + (offset + k) * step for k, layer in enumerate(layers)
        ):
            return base[offset : offset + len(layers)]
    return np.stack(layers)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _in_memory(var: xr.DataArray) -> bool:
    return isinstance(var.variable._data, np.ndarray)


def class_in(band: xr.DataArray, codes: Sequence[int]) -> xr.DataArray:
    """True where ``band`` holds one of ``codes`` (``band.isin(codes)``). An in-memory 8- or 16-bit integer band
    goes through a lookup table indexed by its values (~10x faster than ``isin`` on a tile block)."""
    dtype = band.dtype
    if not (_in_memory(band) and dtype.kind in "iu" and dtype.itemsize <= 2):
        return band.isin(codes)
    table = np.zeros(2 ** (8 * dtype.itemsize), dtype=bool)
    table[class_slots(codes, dtype)] = True
    values = np.ascontiguousarray(band.values).view(f"u{dtype.itemsize}")
    hit = np.empty(values.shape, dtype=bool)
    _lookup(values.reshape(-1), table, hit.reshape(-1))
    return band.copy(data=hit)  # name, coords and attrs as isin keeps them


@numba.njit(cache=True, nogil=True)
def _lookup(values, table, out):
    for i in range(values.size):
        out[i] = table[values[i]]


@numba.njit(cache=True, nogil=True)
def _fill_where(values, bad, fill, out):
    for i in range(values.size):
        out[i] = fill if bad[i] else values[i]


def band_nodata(var: xr.DataArray, default: Any) -> Any:
    """The band's nodata from its attributes (as loaded from the STAC raster extension), else ``default``."""
    nodata = nodata_of(var)
    return default if nodata is None else nodata


# ------------------------------------------------------------------------------------------------
# fusers


def fuse_mean(var: xr.DataArray, nodata: Any) -> xr.DataArray:
    """Mean over ``time`` of the values that are not ``nodata`` (nor NaN), rounded half to even into the
    band's dtype; ``nodata`` where no observation is valid (odc-algo ``_fuse_mean_np``)."""
    if var.sizes["time"] == 1:
        return var.isel(time=0, drop=True)
    valid = var != nodata
    if np.issubdtype(var.dtype, np.floating):
        valid = valid & ~np.isnan(var)
    total = var.where(valid, 0).astype(np.float64).sum("time")
    count = valid.sum("time")
    mean = np.round(total / count.where(count > 0, 1))
    out = mean.where(count > 0, nodata).astype(var.dtype)
    out.attrs = {**var.attrs, "nodata": nodata}
    return out


# ------------------------------------------------------------------------------------------------
# percentiles


def nearest_rank_percentiles(
    data: np.ndarray, quantiles: Sequence[float], nodata: Any, *, min_count: int = 3
) -> list[np.ndarray]:
    """Per-pixel percentiles of ``data`` (``time, ...``) by odc-algo's nearest-rank rule, one array per quantile.

    Among the valid values (not ``nodata``, not NaN) of a pixel, sorted ascending, quantile ``q`` is the value at
    index ``round(q * (n - 1))`` with numpy's half-to-even rounding (6 values: p50 → index 2). Pixels with fewer
    than ``min_count`` valid values get ``nodata``. Unlike odc-algo, which decides once per array whether nodata
    sorts first or last, validity is tracked per value, so nodata may lie anywhere in the value range.

    Uses the numba kernel :func:`eostats.kernels.percentile.nearest_rank_percentiles` (or its GPU twin, as the
    tile's backend says: :mod:`eostats.kernels.gpu`) when it handles the dtype, else a numpy sort.
    """
    data = np.asarray(data)
    try:
        from eostats.kernels.gpu import nearest_rank_percentiles as kernel
    except ImportError:  # pragma: no cover - the kernel ships with the package
        kernel = None
    if kernel is not None and nodata is not None:
        try:
            result = kernel(data, list(quantiles), nodata=nodata, min_valid=min_count)
        except TypeError:  # a dtype the kernel does not take: the numpy path below
            pass
        else:
            return list(result)
    return _sorted_percentiles(data, quantiles, nodata, min_count)


def _sorted_percentiles(
    data: np.ndarray, quantiles: Sequence[float], nodata: Any, min_count: int
) -> list[np.ndarray]:
    is_float = np.issubdtype(data.dtype, np.floating)
    valid = ~np.isnan(data) if is_float else np.ones(data.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= data != nodata
    count = valid.sum(axis=0)
    # invalid values go to the end of the sort: NaN for floats, the dtype's maximum for integers (a valid
    # maximum sorts together with them, which changes nothing among the first `count` values)
    filler = np.nan if is_float else np.iinfo(data.dtype).max
    ordered = np.sort(np.where(valid, data, filler), axis=0)
    out = []
    fill = np.nan if nodata is None else nodata
    for q in quantiles:
        index = np.round(q * (count - 1)).astype(np.int64)
        index = np.clip(index, 0, max(data.shape[0] - 1, 0))
        value = np.take_along_axis(ordered, index[None], axis=0)[0]
        out.append(np.where(count >= min_count, value, fill).astype(data.dtype))
    return out


def percentile_name(band: str, percent: float) -> str:
    """``{band}_pc_{p}`` with ``p`` the percent rounded to an integer (odc-stats truncates ``100*q``,
    which turns 0.29 into ``_pc_28``; the usual 10/50/90 give the same names either way)."""
    return f"{band}_pc_{round(percent)}"

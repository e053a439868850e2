"""The plugin contract: what a statistic declares and the four steps the tile runner calls.

A plugin turns the observations of one task into output bands:

1. ``input_bands`` are loaded from every dataset on its **native** pixel grid (dims ``time, y, x``);
2. ``native_transform`` masks them there (morphology radii are in native pixels);
3. ``fuse`` merges the observations of one solar day into one (several scenes of a path, UTM-zone overlap);
4. the fused observations are reprojected to the tile grid with ``resampling``;
5. ``reduce`` collapses ``time`` into the output ``measurements`` on one spatial block of the tile.

Steps 2-3 see dask-backed data (lazy), step 5 sees numpy-backed data for one block, so peak memory follows the
block size, not the tile size. Subclasses are registered by name with :func:`eostats.plugins.register`, or named
by dotted path (``mypackage.module.MyPlugin``) in the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from eostats.kernels.clearcount import ClearCountRecipe
    from eostats.plugins.tools import EarlyMask


@dataclass(frozen=True)
class Measurement:
    """One output band: its name (used in file names), numpy dtype and nodata value."""

    name: str
    dtype: str
    nodata: float | int
    units: str = "1"
    #: categorical bands get nearest-neighbour overviews
    categorical: bool = False


class PluginConfigError(ValueError):
    """A bad ``plugin_config``; the message names the key."""


class StatsPlugin:
    """Base class of every statistic. Subclasses set the class attributes and implement ``reduce``."""

    NAME: ClassVar[str] = "base"
    VERSION: ClassVar[str] = "0.0.0"
    PRODUCT_FAMILY: ClassVar[str] = "statistics"

    def __init__(self, *, resampling: str = "bilinear", **unknown: Any) -> None:
        if unknown:
            raise PluginConfigError(
                f"plugin '{self.NAME}' does not accept plugin_config key(s) {', '.join(sorted(unknown))}"
            )
        self.resampling = resampling

    # -- what to load ---------------------------------------------------------------------------------
    @property
    def input_bands(self) -> list[str]:
        raise NotImplementedError

    @property
    def measurements(self) -> list[Measurement]:
        raise NotImplementedError

    @property
    def column_alignment(self) -> int:
        """Tile columns at which the tile runner may start a spatial block (1: anywhere). A plugin whose result
        depends on where blocks start (gm-*'s odc-stats-identical geomad start) asks for its block width."""
        return 1

    @property
    def native_buffer_pixels(self) -> int:
        """Native pixels loaded around the tile so masking and resampling see their neighbourhood."""
        return 10

    @property
    def context_bands(self) -> list[str]:
        """Input bands whose neighbourhood (``native_buffer_pixels``) enters the masking, e.g. through morphology.
        With nearest or bilinear resampling, the reader decodes the other bands only a few pixels around the tile
        (nodata beyond): their pixels there cannot reach the result. Default: every input band."""
        return list(self.input_bands)

    @property
    def mask_bands(self) -> list[str]:
        """Input bands from which :meth:`early_mask` works out the bad pixels before the others are decoded (none:
        no early mask)."""
        return []

    def early_mask(self, context: Mapping[str, np.ndarray]) -> EarlyMask | None:
        """The bad pixels of the tile reader's decoded ``mask_bands`` (``(time, y, x)`` arrays of a batch's
        observations on their native window), for the reader to skip decoding the blocks of the other bands that
        ``native_transform`` erases entirely; that call then receives the mask as ``attrs[EARLY_MASK]`` and must
        erase with it. None (default): every block is decoded."""
        return None

    @property
    def clear_count_recipe(self) -> ClearCountRecipe | None:
        """For plugins whose result is clear-observation counts of one class band: what to count, so that the
        tile reader may sum the counts on native pixels and reproject them once (exactly what ``native_transform``,
        ``fuse`` and ``reduce`` give; see :mod:`eostats.kernels.clearcount`). None: the plugin reduces observations."""
        return None

    # -- the steps ------------------------------------------------------------------------------------
    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        """Mask on native pixels; the default keeps the data as loaded."""
        return xx

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        """Merge observations of one solar day (dim ``time``): first valid value per pixel."""
        return first_valid(xx)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        """Collapse ``time`` of one numpy-backed block into the output measurements (dims ``y, x``)."""
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------------
    def empty_outputs(self, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return {m.name: np.full(shape, m.nodata, dtype=m.dtype) for m in self.measurements}


def nodata_of(var: xr.DataArray) -> Any:
    nodata = var.attrs.get("nodata", var.encoding.get("_FillValue"))
    if nodata is None and np.issubdtype(var.dtype, np.floating):
        return np.nan
    return nodata


def is_valid(var: xr.DataArray) -> xr.DataArray:
    nodata = nodata_of(var)
    if var.dtype == bool:
        return xr.ones_like(var, dtype=bool)
    if nodata is None:
        return xr.ones_like(var, dtype=bool)
    if isinstance(nodata, float) and np.isnan(nodata):
        return ~np.isnan(var)
    return var != nodata


def first_valid(xx: xr.Dataset) -> xr.Dataset:
    """Per pixel, the first observation along ``time`` that is not nodata (bool bands: any)."""
    if xx.sizes["time"] == 1:
        return xx.isel(time=0, drop=True)
    fused = {}
    for name, var in xx.data_vars.items():
        if var.dtype == bool:
            fused[name] = var.any("time")
            continue
        out = var.isel(time=0, drop=True)
        for i in range(1, var.sizes["time"]):
            out = out.where(is_valid(out), var.isel(time=i, drop=True))
        fused[name] = out.astype(var.dtype)
        fused[name].attrs = dict(var.attrs)
    return xr.Dataset(fused, attrs=xx.attrs)


def parse_filter_chain(value: Any, key: str) -> list[tuple[str, int]]:
    """``[[opening, 3], [dilation, 6]]`` → ``[("opening", 3), ("dilation", 6)]``, naming ``key`` on error."""
    allowed = ("opening", "closing", "dilation", "erosion")
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise PluginConfigError(f"{key} must be a list of [operation, radius] pairs, got {value!r}")
    chain = []
    for step in value:
        if not isinstance(step, Sequence) or isinstance(step, str) or len(step) != 2:
            raise PluginConfigError(f"{key}: each step must be [operation, radius], got {step!r}")
        op, radius = step
        if op not in allowed:
            raise PluginConfigError(
                f"{key}: unknown operation {op!r}; allowed: {', '.join(allowed)}"
            )
        if not isinstance(radius, int) or radius < 0:
            raise PluginConfigError(
                f"{key}: radius must be a non-negative integer (native pixels), got {radius!r}"
            )
        chain.append((op, radius))
    return chain


def check_mapping(value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise PluginConfigError(f"{key} must be a mapping, got {value!r}")
    return value

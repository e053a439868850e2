"""Water observation summaries: ``wofs-summary`` from WOfS water bitmasks, ``wofs-summary-fh`` from summaries.

``wofs-summary`` (odc-stats' ``StatsWofs``). Input: the WOfS ``water`` byte (uint8, nodata 1): bit 0 nodata,
1 non-contiguous, 2 low solar angle, 3 terrain shadow, 4 high slope, 5 cloud shadow, 6 cloud, 7 water. On
native pixels an observation is *bad* where it has data and any of bits 1-6 is set; each ``cloud_filters``
entry (``cloud``, ``cloud_shadow``, ``terrain_shadow``) buffers that bit by its morphological chain and adds it
to *bad*. *wet* = water byte exactly 128 and not bad, *dry* = water byte 0 and not bad. A solar day is fused
with OR, so a day bad anywhere among its scenes is bad, and a day both wet and dry is neither.
Outputs: ``count_wet``, ``count_clear`` (wet + dry days; int16, -999 where the pixel never had a wet, dry or
bad day) and ``frequency`` = count_wet / count_clear (float32, NaN where count_clear is 0).

``wofs-summary-fh`` (``StatsWofsFullHistory``). Input: ``count_wet`` and ``count_clear`` of summaries over
shorter periods (e.g. the annual tiles written by ``wofs-summary``), int16 nodata -999. Outputs: their sums
ignoring nodata, -999 where every input is nodata, and the frequency of the sums (NaN where the clear sum is
0). Counts stay int16, as in odc-stats.

Resampling defaults to ``nearest`` for both: the inputs are classes and counts (odc-stats' default is bilinear,
harmless there because DEA's water observations already lie on the output grid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from eostats.masking import cleanup_depth
from eostats.plugins import register
from eostats.plugins.base import (
    Measurement,
    PluginConfigError,
    StatsPlugin,
    check_mapping,
    parse_filter_chain,
)
from eostats.plugins.tools import WOFS_BUFFERABLE, WOFS_NODATA, WOFS_WET, buffered

COUNT_NODATA = -999
#: bits 1-6: every flag but nodata and water
_NOT_CLEAR_BITS = 0b0111_1110


def _measurements() -> list[Measurement]:
    return [
        Measurement("count_wet", "int16", COUNT_NODATA),
        Measurement("count_clear", "int16", COUNT_NODATA),
        Measurement("frequency", "float32", float("nan")),
    ]


def frequency(count_wet: np.ndarray, count_clear: np.ndarray) -> np.ndarray:
    """count_wet / count_clear in float32, NaN where count_clear is 0 (odc-algo ``safe_div``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = count_wet.astype(np.float32) / count_clear.astype(np.float32)
    return np.where(count_clear == 0, np.float32(np.nan), ratio).astype(np.float32)


@register("wofs-summary")
class WaterSummary(StatsPlugin):
    NAME = "ga_ls_wo_summary"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "wo_summary"

    def __init__(
        self,
        *,
        water_band: str = "water",
        cloud_filters: Mapping[str, Any] | None = None,
        resampling: str = "nearest",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.water_band = water_band
        self.cloud_filters = {}
        for key, chain in check_mapping(cloud_filters or {}, "plugin_config.cloud_filters").items():
            if key not in WOFS_BUFFERABLE:
                raise PluginConfigError(
                    f"plugin_config.cloud_filters: unknown key {key!r}; allowed: {', '.join(WOFS_BUFFERABLE)}"
                )
            self.cloud_filters[key] = parse_filter_chain(
                chain, f"plugin_config.cloud_filters.{key}"
            )

    @property
    def input_bands(self) -> list[str]:
        return [self.water_band]

    @property
    def measurements(self) -> list[Measurement]:
        return _measurements()

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + max((cleanup_depth(c) for c in self.cloud_filters.values()), default=0)

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        water = xx[self.water_band]
        has_data = (water & WOFS_NODATA) == 0
        bad = has_data & ((water & _NOT_CLEAR_BITS) != 0)
        for key, chain in self.cloud_filters.items():
            # buffered bits count even where the neighbour has no data, as in odc-stats
            bad = bad | buffered((water & WOFS_BUFFERABLE[key]) != 0, chain)
        wet = (water == WOFS_WET) & ~bad
        dry = (water == 0) & ~bad
        return xr.Dataset({"bad": bad, "wet": wet, "dry": dry}, attrs=xx.attrs)

    # fuse: the default (first_valid) ORs bool bands

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        bad = np.asarray(xx["bad"].values, dtype=bool)
        wet = np.asarray(xx["wet"].values, dtype=bool)
        dry = np.asarray(xx["dry"].values, dtype=bool)
        only_wet = wet & ~bad & ~dry
        only_dry = dry & ~bad & ~wet
        count_wet = only_wet.sum(axis=0, dtype=np.int16)
        count_clear = count_wet + only_dry.sum(axis=0, dtype=np.int16)
        observed = (bad | only_wet | only_dry).any(axis=0)
        out = {
            "count_wet": np.where(observed, count_wet, COUNT_NODATA).astype(np.int16),
            "count_clear": np.where(observed, count_clear, COUNT_NODATA).astype(np.int16),
            "frequency": frequency(count_wet, count_clear),
        }
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {k: xr.DataArray(v, dims=("y", "x"), coords=coords) for k, v in out.items()}
        )


@register("wofs-summary-fh")
class WaterSummaryFullHistory(StatsPlugin):
    NAME = "ga_ls_wo_fq_myear_3"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "wo_summary"

    def __init__(self, *, resampling: str = "nearest", **unknown: Any) -> None:
        super().__init__(resampling=resampling, **unknown)

    @property
    def input_bands(self) -> list[str]:
        return ["count_wet", "count_clear"]

    @property
    def measurements(self) -> list[Measurement]:
        return _measurements()

    # fuse: summaries of one solar day do not happen (one per period); first valid if they did

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        cc = np.asarray(xx["count_clear"].values)
        cw = np.asarray(xx["count_wet"].values)
        nodata_cc = xx["count_clear"].attrs.get("nodata", COUNT_NODATA)
        nodata_cw = xx["count_wet"].attrs.get("nodata", COUNT_NODATA)
        missing = (cc == nodata_cc).all(axis=0)
        clear = np.where(cc == nodata_cc, 0, cc).sum(axis=0, dtype=np.int16)
        wet = np.where(cw == nodata_cw, 0, cw).sum(axis=0, dtype=np.int16)
        out = {
            "count_wet": np.where(missing, COUNT_NODATA, wet).astype(np.int16),
            "count_clear": np.where(missing, COUNT_NODATA, clear).astype(np.int16),
            "frequency": frequency(wet, clear),
        }
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {k: xr.DataArray(v, dims=("y", "x"), coords=coords) for k, v in out.items()}
        )

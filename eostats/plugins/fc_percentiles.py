"""``fc-percentiles``: 10th/50th/90th percentiles of fractional cover on clear dry observations (odc-stats'
``StatsFCP`` 0.0.3).

Input: one item per scene holding the fractional cover bands ``pv``, ``bs``, ``npv``, ``ue`` (uint8 percent,
nodata 255) and the WOfS ``water`` byte of the same scene (odc-stats loads the fused product
``ga_ls_fc_3+ga_ls_wo_3``). On native pixels, ignoring the high-slope bit (4) of the water byte: *valid* = the
byte is 0 (clear and dry), *wet* = it is 128; each ``cloud_filters`` entry (``cloud``, ``cloud_shadow``,
``terrain_shadow``) buffers that bit and removes it from both; ``ue_threshold`` keeps only ue below it;
``max_sum_limit`` keeps only pv + bs + npv below it; ``clip_range`` clips the three bands. Cover values of
invalid observations become 255. A solar day is fused by the mean of its valid values (rounded half to even),
and OR for *wet* and *valid*.

Outputs: ``{pv,bs,npv}_pc_{10,50,90}`` (uint8, nodata 255 where fewer than 3 valid observations; odc-algo's
nearest-rank rule), ``qa`` (uint8: 2 = every percentile valid, 0 = not and the pixel was ever wet while not
valid, 1 = otherwise) and, with ``count_valid: true``, ``count_valid`` (int16, number of valid days).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from eostats.plugins.tools import (
    WOFS_BUFFERABLE,
    WOFS_HIGH_SLOPE,
    WOFS_WET,
    buffered,
    erase,
    fuse_mean,
    nearest_rank_percentiles,
    percentile_name,
)

NODATA = 255
FC_BANDS = ("pv", "bs", "npv")
QUANTILES = (0.1, 0.5, 0.9)


def parse_wofs_filters(value: Any) -> dict[str, list[tuple[str, int]]]:
    filters = {}
    for key, chain in check_mapping(value or {}, "plugin_config.cloud_filters").items():
        if key not in WOFS_BUFFERABLE:
            raise PluginConfigError(
                f"plugin_config.cloud_filters: unknown key {key!r}; allowed: {', '.join(WOFS_BUFFERABLE)}"
            )
        filters[key] = parse_filter_chain(chain, f"plugin_config.cloud_filters.{key}")
    return filters


@register("fc-percentiles")
class FractionalCoverPercentiles(StatsPlugin):
    NAME = "ga_fc_percentiles"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "fc_percentiles"

    def __init__(
        self,
        *,
        max_sum_limit: int | None = None,
        clip_range: Sequence[int] | None = None,
        ue_threshold: int | None = None,
        count_valid: bool = False,
        cloud_filters: Mapping[str, Any] | None = None,
        water_band: str = "water",
        ue_band: str = "ue",
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.max_sum_limit = max_sum_limit
        if clip_range is not None and (len(clip_range) != 2 or clip_range[0] > clip_range[1]):
            raise PluginConfigError(
                f"plugin_config.clip_range must be [min, max], got {clip_range!r}"
            )
        self.clip_range = None if clip_range is None else (int(clip_range[0]), int(clip_range[1]))
        self.ue_threshold = ue_threshold
        self.count_valid = bool(count_valid)
        self.cloud_filters = parse_wofs_filters(cloud_filters)
        self.water_band = water_band
        self.ue_band = ue_band

    @property
    def input_bands(self) -> list[str]:
        return [self.water_band, *FC_BANDS, self.ue_band]

    @property
    def measurements(self) -> list[Measurement]:
        out = [
            Measurement(percentile_name(b, 100 * q), "uint8", NODATA)
            for b in FC_BANDS
            for q in QUANTILES
        ]
        out.append(Measurement("qa", "uint8", NODATA, categorical=True))
        if self.count_valid:
            out.append(Measurement("count_valid", "int16", -999))
        return out

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + max((cleanup_depth(c) for c in self.cloud_filters.values()), default=0)

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        water = xx[self.water_band]
        flags = water & (0xFF ^ WOFS_HIGH_SLOPE)
        valid = flags == 0
        wet = flags == WOFS_WET
        for key, chain in self.cloud_filters.items():
            near_cloud = buffered((water & WOFS_BUFFERABLE[key]) != 0, chain)
            valid = valid & ~near_cloud
            wet = wet & ~near_cloud
        if self.ue_threshold is not None:
            valid = valid & (xx[self.ue_band] < self.ue_threshold)
        bands = {b: xx[b] for b in FC_BANDS}
        if self.max_sum_limit is not None:
            # summed in int32: odc-stats adds the uint8 bands in uint8 and wraps above 255
            total = sum(v.where(v != NODATA, 0).astype(np.int32) for v in bands.values())
            valid = valid & (total < self.max_sum_limit)
        if self.clip_range is not None:
            lo, hi = self.clip_range
            bands = {
                b: v.where(v == NODATA, v.clip(lo, hi)).astype(v.dtype).assign_attrs(v.attrs)
                for b, v in bands.items()
            }
        out = {b: erase(v, ~valid, NODATA) for b, v in bands.items()}
        out["wet"] = wet
        out["valid"] = valid
        return xr.Dataset(out, attrs=xx.attrs)

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        if xx.sizes["time"] == 1:
            return xx.isel(time=0, drop=True)
        fused = {b: fuse_mean(xx[b], NODATA) for b in FC_BANDS}
        fused["wet"] = xx["wet"].any("time")
        fused["valid"] = xx["valid"].any("time")
        return xr.Dataset(fused, attrs=xx.attrs)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        out = {}
        all_valid = None
        for band in FC_BANDS:
            values = np.asarray(xx[band].values)
            for q, pc in zip(
                QUANTILES, nearest_rank_percentiles(values, QUANTILES, NODATA), strict=True
            ):
                out[percentile_name(band, 100 * q)] = pc
                ok = pc != NODATA
                all_valid = ok if all_valid is None else all_valid & ok
        valid = np.asarray(xx["valid"].values, dtype=bool)
        # a day both valid and wet (scenes of one day disagreeing) counts as valid only
        ever_wet = (np.asarray(xx["wet"].values, dtype=bool) & ~valid).any(axis=0)
        out["qa"] = np.where(all_valid, 2, np.where(ever_wet, 0, 1)).astype(np.uint8)
        if self.count_valid:
            out["count_valid"] = valid.sum(axis=0, dtype=np.int16)
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {k: xr.DataArray(v, dims=("y", "x"), coords=coords) for k, v in out.items()}
        )

"""``tcw-percentiles``: 10th/50th/90th percentiles of the tasseled cap indices (odc-stats' ``StatsTCWPC`` 1.0.1).

Input: six surface reflectance bands (int16 reflectance x 10 000, nodata -999; ``bands`` maps the roles
``blue green red nir swir1 swir2`` to the dataset's band names, default DEA's ``nbart_*``), the fmask band and
the contiguity band. On native pixels an observation is bad where fmask is ``nodata``, contiguity is 0, a
``cloud_filters`` class holds after its chain (default: ``cloud`` and ``shadow`` unbuffered) or any band is
-999. Each index is ``Σ coefficient x band`` in float64 (the coefficients' order), truncated to int16, and
-9999 where bad. Default coefficients are Crist (1985)'s for wetness, brightness and greenness; ``coefficients``
replaces them (``{index: {role: coefficient}}``) and ``output_bands`` picks the indices. A solar day is fused by
the mean of its valid values (rounded half to even).

Outputs: ``{index}_pc_{10,50,90}``, int16, nodata -9999 where fewer than 3 valid observations (odc-algo's
nearest-rank rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.plugins import register
from eostats.plugins.base import Measurement, PluginConfigError, StatsPlugin, check_mapping
from eostats.plugins.tools import (
    ClassMask,
    erase,
    fuse_mean,
    nearest_rank_percentiles,
    percentile_name,
)

NODATA = -9999
INPUT_NODATA = -999
QUANTILES = (0.1, 0.5, 0.9)
ROLES = ("blue", "green", "red", "nir", "swir1", "swir2")
DEA_BANDS = {
    "blue": "nbart_blue",
    "green": "nbart_green",
    "red": "nbart_red",
    "nir": "nbart_nir",
    "swir1": "nbart_swir_1",
    "swir2": "nbart_swir_2",
}
#: Crist (1985) tasseled cap coefficients for surface reflectance, as odc-stats uses them
TC_COEFFICIENTS: dict[str, dict[str, float]] = {
    "wet": {
        "blue": 0.0315,
        "green": 0.2021,
        "red": 0.3102,
        "nir": 0.1594,
        "swir1": -0.6806,
        "swir2": -0.6109,
    },
    "bright": {
        "blue": 0.2043,
        "green": 0.4158,
        "red": 0.5524,
        "nir": 0.5741,
        "swir1": 0.3124,
        "swir2": 0.2303,
    },
    "green": {
        "blue": -0.1603,
        "green": -0.2819,
        "red": -0.4934,
        "nir": 0.7940,
        "swir1": -0.0002,
        "swir2": -0.1446,
    },
}


@register("tcw-percentiles")
class TasseledCapPercentiles(StatsPlugin):
    NAME = "ga_tc_percentiles"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "tci"

    def __init__(
        self,
        *,
        coefficients: Mapping[str, Mapping[str, float]] | None = None,
        output_bands: Sequence[str] | None = None,
        bands: Mapping[str, str] | None = None,
        mask_band: str = "oa_fmask",
        contiguity_band: str | None = "oa_nbart_contiguity",
        mask_classes: Mapping[str, int] | str | None = None,
        nodata_classes: Sequence[str] = ("nodata",),
        cloud_filters: Mapping[str, Any] | None = None,
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.bands = {**DEA_BANDS, **dict(check_mapping(bands or {}, "plugin_config.bands"))}
        coeffs = check_mapping(
            coefficients if coefficients is not None else TC_COEFFICIENTS,
            "plugin_config.coefficients",
        )
        self.coefficients: dict[str, dict[str, float]] = {}
        for index, weights in coeffs.items():
            for role in check_mapping(weights, f"plugin_config.coefficients.{index}"):
                if role not in self.bands:
                    raise PluginConfigError(
                        f"plugin_config.coefficients.{index}: unknown band role {role!r}; allowed: {', '.join(self.bands)}"
                    )
            self.coefficients[str(index)] = {str(r): float(c) for r, c in weights.items()}
        self.output_bands = (
            list(output_bands) if output_bands is not None else list(self.coefficients)
        )
        missing = [b for b in self.output_bands if b not in self.coefficients]
        if missing:
            raise PluginConfigError(
                f"plugin_config.output_bands: no coefficients for {', '.join(missing)}; known: {', '.join(self.coefficients)}"
            )
        self.mask = ClassMask.from_config(
            mask_band=mask_band,
            mask_classes=mask_classes,
            nodata_classes=nodata_classes,
            cloud_filters=cloud_filters,
            contiguity_band=contiguity_band,
        )

    @property
    def used_roles(self) -> list[str]:
        used = {r for b in self.output_bands for r in self.coefficients[b]}
        return [r for r in self.bands if r in used]

    @property
    def input_bands(self) -> list[str]:
        return [self.bands[r] for r in self.used_roles] + self.mask.input_bands

    @property
    def measurements(self) -> list[Measurement]:
        return [
            Measurement(percentile_name(b, 100 * q), "int16", NODATA)
            for b in self.output_bands
            for q in QUANTILES
        ]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + self.mask.buffer_pixels

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        bad = self.mask.bad(xx)
        for role in self.used_roles:
            bad = bad | (xx[self.bands[role]] == INPUT_NODATA)
        info = np.iinfo(np.int16)
        out = {}
        for index in self.output_bands:
            total: Any = 0.0
            for role, coeff in self.coefficients[index].items():
                total = total + coeff * xx[self.bands[role]].astype(np.float64)
            # truncation toward zero as numpy's astype does (clipped first: out-of-range casts are undefined)
            value = np.trunc(total).clip(info.min, info.max).astype(np.int16)
            out[index] = erase(value, bad, NODATA)
        return xr.Dataset(out, attrs=xx.attrs)

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        return xr.Dataset({b: fuse_mean(xx[b], NODATA) for b in self.output_bands}, attrs=xx.attrs)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        out = {}
        for index in self.output_bands:
            values = np.asarray(xx[index].values)
            for q, pc in zip(
                QUANTILES, nearest_rank_percentiles(values, QUANTILES, NODATA), strict=True
            ):
                out[percentile_name(index, 100 * q)] = pc
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {k: xr.DataArray(v, dims=("y", "x"), coords=coords) for k, v in out.items()}
        )

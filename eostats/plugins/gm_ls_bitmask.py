"""``gm-ls-bitmask``: the geometric median of USGS Landsat Collection 2 Level-2 surface reflectance, masked with
the ``QA_PIXEL`` bits, rescaled to reflectance x 10 000 as odc-stats' ``StatsGMLSBitmask`` does.

Input: ``red green blue nir swir_1 swir_2`` (uint16 DN, reflectance = DN x 2.75e-5 - 0.2, nodata 0) and
``QA_PIXEL``. On native pixels an observation is kept where every band has positive reflectance
(DN > 0.2 / 2.75e-5) and the ``nodata_flags`` hold (default: fill bit clear); its cloud mask is where any of
``flags`` holds (default: ``cloud`` or ``cirrus`` high confidence). A solar day is fused first-valid for the
bands and OR for the cloud mask, which is then cleaned by ``filters`` (e.g. ``[[closing, 10], [opening, 2],
[dilation, 2]]``; radii in native pixels). Cloudy observations are removed and the geomedian computed with
scale 2.75e-5, offset -0.2 and eps 2.75e-6 (a tenth of a DN).

Outputs, as odc-stats writes them: the geomedian first converted back to DN (float32, truncated, uint16), then
``round(DN x scale x output_scale + offset x output_scale)`` (float64, half to even) as uint16 with nodata 0;
EMAD likewise ``round(EMAD_DN x scale x output_scale)`` (float32 arithmetic) as uint16, 0 where there was no
observation; SMAD and BCMAD float32 (NaN); count uint16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.kernels.geomedian import GeomedianResult, median_to_dn
from eostats.plugins import register
from eostats.plugins.base import Measurement, first_valid
from eostats.plugins.gm_generic import GeomedianGeneric
from eostats.plugins.tools import BitMask, band_nodata, buffered, erase

USGS_BANDS = ("red", "green", "blue", "nir", "swir_1", "swir_2")
NODATA = 0


@register("gm-ls-bitmask")
class GeomedianLandsatBitmask(GeomedianGeneric):
    NAME = "gm_ls_bitmask"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "geomedian"

    def __init__(
        self,
        *,
        bands: Sequence[str] = USGS_BANDS,
        mask_band: str = "QA_PIXEL",
        flags: Mapping[str, Any] | None = None,
        nodata_flags: Mapping[str, Any] | None = None,
        filters: Any = None,
        aux_names: Mapping[str, str] | None = None,
        scale: float = 2.75e-5,
        offset: float = -0.2,
        output_scale: float = 10_000,
        output_dtype: str = "uint16",
        eps: float | None = None,
        maxiters: int = 1000,
        rgb_bands: Sequence[str] | None = ("red", "green", "blue"),
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(
            bands=bands,
            rgb_bands=rgb_bands
            if rgb_bands is None or all(b in bands for b in rgb_bands)
            else None,
            aux_names=aux_names,
            output_dtype=output_dtype,
            output_nodata=NODATA,
            scale=scale,
            offset=offset,
            eps=eps,
            maxiters=maxiters,
            resampling=resampling,
            **unknown,
        )
        self.bitmask = BitMask.from_config(
            mask_band=mask_band, flags=flags, nodata_flags=nodata_flags, filters=filters
        )
        self.output_scale = float(output_scale)
        # reflectance > 0, as a DN threshold
        self.min_dn = -self.offset / self.scale

    @property
    def input_bands(self) -> list[str]:
        return self.bands + self.bitmask.input_bands

    @property
    def measurements(self) -> list[Measurement]:
        aux = self.aux_names
        dtype = self.output_dtype.name
        return [Measurement(b, dtype, NODATA) for b in self.bands] + [
            Measurement(aux["smad"], "float32", float("nan")),
            Measurement(aux["emad"], dtype, NODATA),
            Measurement(aux["bcmad"], "float32", float("nan")),
            Measurement(aux["count"], "uint16", 0),
        ]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + self.bitmask.buffer_pixels

    @property
    def context_bands(self) -> list[str]:
        return list(self.bitmask.input_bands)  # the cloud flags are cleaned by morphology

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        good = self.bitmask.keep(xx)
        for band in self.bands:
            good = good & (xx[band] > self.min_dn)
        out = {b: erase(xx[b], ~good, band_nodata(xx[b], NODATA)) for b in self.bands}
        out["cloud_raw"] = self.bitmask.clouds(xx, apply_filters=False)
        return xr.Dataset(out, attrs=xx.attrs)

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        fused = first_valid(xx)  # bands: first valid; the cloud mask: OR
        if "cloud_raw" in fused:  # the native (first) fusing: clean the day's cloud mask here, once
            fused["cloud"] = buffered(fused["cloud_raw"], self.bitmask.filters)
            fused = fused.drop_vars("cloud_raw")
        return fused

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        cloud = np.asarray(xx["cloud"].values, dtype=bool)
        clear = {}
        for band in self.bands:
            var = xx[band]
            nodata = band_nodata(var, NODATA)
            clear[band] = xr.DataArray(
                np.where(cloud, nodata, var.values).astype(var.dtype),
                dims=var.dims,
                attrs={"nodata": nodata},
            )
        return super().reduce(xr.Dataset(clear, coords=xx.coords))

    def outputs(self, result: GeomedianResult, xx: xr.Dataset) -> xr.Dataset:
        dims = ("y", "x")
        coords = {k: xx.coords[k] for k in dims if k in xx.coords}
        input_dtype = xx[self.bands[0]].dtype
        # odc-algo first converts back to the input dtype (truncating), odc-stats then rescales that
        dn = median_to_dn(
            result.median,
            scale=self.scale,
            offset=self.offset,
            nodata=NODATA,
            dtype=input_dtype,
            rounding="truncate",
        )
        gain = self.scale * self.output_scale
        bias = self.offset * self.output_scale
        info = np.iinfo(self.output_dtype)
        out = {}
        for i, band in enumerate(self.bands):
            value = np.round(dn[i].astype(np.float64) * gain + bias)
            value = np.where(dn[i] == NODATA, NODATA, np.clip(value, info.min, info.max))
            out[band] = xr.DataArray(value.astype(self.output_dtype), dims=dims, coords=coords)
        emad = np.round(result.emad * np.float32(gain))  # float32 x float, as in odc-stats
        emad = np.where(np.isnan(emad), NODATA, np.clip(emad, info.min, info.max))
        aux = self.aux_names
        out[aux["smad"]] = xr.DataArray(result.smad, dims=dims, coords=coords)
        out[aux["emad"]] = xr.DataArray(emad.astype(self.output_dtype), dims=dims, coords=coords)
        out[aux["bcmad"]] = xr.DataArray(result.bcmad, dims=dims, coords=coords)
        out[aux["count"]] = xr.DataArray(result.count.astype(np.uint16), dims=dims, coords=coords)
        return xr.Dataset(out)

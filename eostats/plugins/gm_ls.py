"""``gm-ls``: the geometric median of Landsat surface reflectance with SMAD, EMAD, BCMAD and count.

odc-stats' recipe (StatsGMLS): int16 reflectance x 10 000 (nodata -999) becomes float32 ``x * 1e-4 - 1e-4`` with
nodata as missing; an observation is dropped at a pixel when any band is missing there; Weiszfeld with eps 1e-5 in
scaled units and at most 1000 iterations; bands back to int16 DN (truncated, as odc-stats' ``astype`` does; ``rounding:
round`` rounds instead), EMAD in DN, SMAD and BCMAD unitless float32, count uint16.
Masking happens on native pixels from the fmask band: ``nodata_classes`` and contiguity 0 are always removed, and each
``cloud_filters`` entry (fmask class name, or several joined by ``,``) is buffered by its filter chain and removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.kernels.geomedian import geomedian_mads, median_to_dn
from eostats.masking import FMASK_CLASSES, cleanup_depth, mask_cleanup_dask
from eostats.plugins import register
from eostats.plugins.base import (
    Measurement,
    PluginConfigError,
    StatsPlugin,
    check_mapping,
    parse_filter_chain,
)

LS_BANDS = ("nbart_blue", "nbart_green", "nbart_red", "nbart_nir", "nbart_swir_1", "nbart_swir_2")
DEFAULT_AUX_NAMES = {"smad": "sdev", "emad": "edev", "bcmad": "bcdev", "count": "count"}


def class_codes(names: str | Sequence[str], classes: Mapping[str, int], key: str) -> list[int]:
    """Codes of mask class names (``"cloud,shadow"`` or a list), naming ``key`` and the allowed names on error."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    codes = []
    for name in names:
        if name not in classes:
            raise PluginConfigError(f"{key}: unknown mask class {name!r}; allowed: {', '.join(classes)}")
        codes.append(classes[name])
    return codes


@register("gm-ls")
class GeomedianLandsat(StatsPlugin):
    NAME = "gm_ls_annual"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "geomedian"

    def __init__(
        self,
        *,
        bands: Sequence[str] = LS_BANDS,
        mask_band: str = "oa_fmask",
        contiguity_band: str | None = "oa_nbart_contiguity",
        nodata_classes: Sequence[str] = ("nodata",),
        cloud_filters: Mapping[str, Any] | None = None,
        mask_classes: Mapping[str, int] | None = None,
        aux_names: Mapping[str, str] | None = None,
        scale: float = 1e-4,
        offset: float = -1e-4,
        eps: float | None = None,
        maxiters: int = 1000,
        rounding: str = "truncate",
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.bands = list(bands)
        self.mask_band = mask_band
        self.contiguity_band = contiguity_band
        self.classes = dict(mask_classes or FMASK_CLASSES)
        self.nodata_codes = class_codes(list(nodata_classes), self.classes, "plugin_config.nodata_classes")
        if cloud_filters is None:
            # odc-stats' default: cloud and shadow removed, unbuffered
            cloud_filters = {"cloud": [], "shadow": []}
        check_mapping(cloud_filters, "plugin_config.cloud_filters")
        self.cloud_filters = [
            (
                class_codes(name, self.classes, f"plugin_config.cloud_filters.{name}"),
                parse_filter_chain(chain, f"plugin_config.cloud_filters.{name}"),
            )
            for name, chain in cloud_filters.items()
        ]
        self.aux_names = {**DEFAULT_AUX_NAMES, **dict(aux_names or {})}
        if rounding not in ("truncate", "round"):
            raise PluginConfigError(f"plugin_config.rounding must be 'truncate' or 'round', got {rounding!r}")
        self.rounding = rounding
        self.scale, self.offset = float(scale), float(offset)
        self.eps = 0.1 * self.scale if eps is None else float(eps)
        self.maxiters = int(maxiters)
        self.nodata = -999

    @property
    def input_bands(self) -> list[str]:
        extra = [self.mask_band] + ([self.contiguity_band] if self.contiguity_band else [])
        return self.bands + extra

    @property
    def measurements(self) -> list[Measurement]:
        aux = self.aux_names
        return [Measurement(b, "int16", self.nodata) for b in self.bands] + [
            Measurement(aux["smad"], "float32", float("nan")),
            Measurement(aux["emad"], "float32", float("nan")),
            Measurement(aux["bcmad"], "float32", float("nan")),
            Measurement(aux["count"], "uint16", 0),
        ]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + max((cleanup_depth(chain) for _, chain in self.cloud_filters), default=0)

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        fmask = xx[self.mask_band]
        bad = fmask.isin(self.nodata_codes)
        if self.contiguity_band:
            bad = bad | (xx[self.contiguity_band] == 0)
        for codes, chain in self.cloud_filters:
            cloud = fmask.isin(codes)
            if chain:
                cloud = cloud.copy(data=mask_cleanup_dask(cloud.data, chain))
            bad = bad | cloud
        out = {}
        for band in self.bands:
            var = xx[band]
            nodata = var.attrs.get("nodata", self.nodata)
            out[band] = var.where(~bad, nodata).astype(var.dtype)
            out[band].attrs = {**var.attrs, "nodata": nodata}
        return xr.Dataset(out, attrs=xx.attrs)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        stack = np.stack([np.asarray(xx[b].values) for b in self.bands])  # (band, time, y, x)
        nodata = xx[self.bands[0]].attrs.get("nodata", self.nodata)
        result = geomedian_mads(
            stack, nodata=nodata, scale=self.scale, offset=self.offset, eps=self.eps, maxiters=self.maxiters
        )
        dims = ("y", "x")
        coords = {k: xx.coords[k] for k in dims if k in xx.coords}
        dn = median_to_dn(
            result.median,
            scale=self.scale,
            offset=self.offset,
            nodata=self.nodata,
            dtype=np.int16,
            rounding=self.rounding,
        )
        out = {b: xr.DataArray(dn[i], dims=dims, coords=coords) for i, b in enumerate(self.bands)}
        aux = self.aux_names
        out[aux["smad"]] = xr.DataArray(result.smad, dims=dims, coords=coords)
        out[aux["emad"]] = xr.DataArray(result.emad, dims=dims, coords=coords)
        out[aux["bcmad"]] = xr.DataArray(result.bcmad, dims=dims, coords=coords)
        out[aux["count"]] = xr.DataArray(result.count.astype(np.uint16), dims=dims, coords=coords)
        return xr.Dataset(out)

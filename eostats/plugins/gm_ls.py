"""``gm-ls``: the geometric median of Landsat surface reflectance with SMAD, EMAD, BCMAD and count.

odc-stats' ``StatsGMLS``: ``gm-generic`` with DEA Collection 3 defaults — the six ``nbart_*`` bands (int16
reflectance x 10 000, nodata -999), fmask classes from ``oa_fmask`` (``nodata`` removed, and each
``cloud_filters`` entry buffered by its chain on native pixels; without ``cloud_filters`` cloud and shadow are
removed unbuffered), ``oa_nbart_contiguity`` 0 removed, and the auxiliary bands named ``sdev`` (SMAD), ``edev``
(EMAD, DN), ``bcdev`` (BCMAD) and ``count``. The numerical recipe is gm-generic's: ``x * 1e-4 - 1e-4`` in
float32, eps 1e-5 in scaled units, at most 1000 iterations, back to int16 DN truncated as odc-stats' ``astype``
does (``rounding: round`` rounds instead). Every ``gm-generic`` key may be overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eostats.plugins import register
from eostats.plugins.gm_generic import GeomedianGeneric

LS_BANDS = ("nbart_blue", "nbart_green", "nbart_red", "nbart_nir", "nbart_swir_1", "nbart_swir_2")


@register("gm-ls")
class GeomedianLandsat(GeomedianGeneric):
    NAME = "gm_ls_annual"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "geomedian"
    DEFAULT_AUX: Mapping[str, str] = {
        "smad": "sdev",
        "emad": "edev",
        "bcmad": "bcdev",
        "count": "count",
    }

    def __init__(
        self,
        *,
        bands: Sequence[str] = LS_BANDS,
        mask_band: str | None = "oa_fmask",
        mask_classes: Mapping[str, int] | str | None = "fmask",
        nodata_classes: Sequence[str] | None = ("nodata",),
        contiguity_band: str | None = "oa_nbart_contiguity",
        rgb_bands: Sequence[str] | None = ("nbart_red", "nbart_green", "nbart_blue"),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            bands=bands,
            mask_band=mask_band,
            mask_classes=mask_classes,
            nodata_classes=nodata_classes,
            contiguity_band=contiguity_band,
            rgb_bands=rgb_bands
            if rgb_bands is None or all(b in bands for b in rgb_bands)
            else None,
            **kwargs,
        )

"""``gm-s2``: the annual geometric median of Sentinel-2 L2A, masked with the scene classification (SCL).

odc-stats' ``StatsGMS2``: bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 (uint16 reflectance x 10 000, nodata 0),
SCL class ``no data`` removed, and the four cloud classes (cloud shadows, cloud medium probability, cloud high
probability, thin cirrus) removed after ``[opening 2, dilation 5]`` — radii in the pixels the data are loaded
on, i.e. B02's 10 m grid (the SCL's 20 m pixels are read onto it nearest-neighbour, as odc-stats' ``basis``
band does). Outputs: the bands (uint16, nodata 0, DN truncated), ``SMAD``, ``EMAD`` (DN), ``BCMAD`` (float32,
NaN) and ``COUNT`` (uint16). Every ``gm-generic`` key may be overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eostats.plugins import register
from eostats.plugins.gm_generic import GeomedianGeneric
from eostats.plugins.tools import SCL_CLOUD_CLASSES

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S2_CLOUD_FILTER = [["opening", 2], ["dilation", 5]]


@register("gm-s2")
class GeomedianS2(GeomedianGeneric):
    NAME = "gm_s2_annual"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "geomedian"
    DEFAULT_AUX = {"smad": "SMAD", "emad": "EMAD", "bcmad": "BCMAD", "count": "COUNT"}

    def __init__(
        self,
        *,
        bands: Sequence[str] = S2_BANDS,
        mask_band: str | None = "SCL",
        mask_classes: Mapping[str, int] | str | None = "scl",
        nodata_classes: Sequence[str] | None = ("no data",),
        output_dtype: str = "uint16",
        output_nodata: int | float = 0,
        rgb_bands: Sequence[str] | None = ("B04", "B03", "B02"),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            rgb_bands=rgb_bands
            if rgb_bands is None or all(b in bands for b in rgb_bands)
            else None,
            bands=bands,
            mask_band=mask_band,
            mask_classes=mask_classes,
            nodata_classes=nodata_classes,
            output_dtype=output_dtype,
            output_nodata=output_nodata,
            **kwargs,
        )

    def _mask_defaults(self) -> dict[str, Any]:
        return {"default_cloud_filters": {",".join(SCL_CLOUD_CLASSES): S2_CLOUD_FILTER}}

"""``pq-s2``: clear-observation counts of Sentinel-2 L2A from the scene classification (SCL), as odc-stats' ``pq``.

Per pixel and period: ``total`` = observations whose SCL is not ``no data``; ``clear`` = those not in the cloud
classes (cloud shadows, cloud medium probability, cloud high probability, thin cirrus); one ``clear_<name>`` per
``filters`` entry, where the day's cloud mask is first cleaned by that morphological chain on the SCL's native
20 m pixels after same-day fusing (OR). Default filters ``clear_2_5: [opening 2, dilation 5]`` and
``clear_0_5: [opening 0, dilation 5]``. All counts uint16. Filter keys may be given with or without the
``clear_`` prefix (odc-stats' configs use it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eostats.plugins import register
from eostats.plugins.base import check_mapping
from eostats.plugins.pq import ClearCounts
from eostats.plugins.tools import SCL_CLOUD_CLASSES, resolve_classes

DEFAULT_S2_FILTERS = {
    "2_5": [["opening", 2], ["dilation", 5]],
    "0_5": [["opening", 0], ["dilation", 5]],
}


@register("pq-s2")
class ClearCountsS2(ClearCounts):
    NAME = "pc_s2_annual"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "pixel_quality_statistics"

    def __init__(
        self,
        *,
        mask_band: str = "SCL",
        nodata_classes: Sequence[str] = ("no data",),
        erase_classes: Sequence[str] = SCL_CLOUD_CLASSES,
        filters: Mapping[str, Any] | None = None,
        mask_classes: Mapping[str, int] | str | None = None,
        resampling: str = "nearest",
        **unknown: Any,
    ) -> None:
        if filters is None:
            filters = DEFAULT_S2_FILTERS
        check_mapping(filters, "plugin_config.filters")
        filters = {str(k).removeprefix("clear_"): v for k, v in filters.items()}
        super().__init__(
            mask_band=mask_band,
            nodata_classes=nodata_classes,
            erase_classes=erase_classes,
            filters=filters,
            mask_classes=resolve_classes(mask_classes, "plugin_config.mask_classes", "scl"),
            resampling=resampling,
            **unknown,
        )

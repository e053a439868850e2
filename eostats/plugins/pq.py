"""``pq``: clear-observation counts from a pixel-quality class band (Landsat fmask by default).

Per pixel and period: ``total`` = observations with data, ``clear`` = those not in ``erase_classes``, and one
``clear_<name>`` per entry of ``filters``, where the erased mask is first cleaned by that morphological chain on
native pixels after same-day fusing (as odc-stats' pq plugin does). A day seen in several CRSs is fused once
more on the tile grid, where the already cleaned masks are only ORed. All counts uint16, nodata 0 never occurs
(a pixel never observed has total 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.kernels.clearcount import ClearCountRecipe
from eostats.masking import FMASK_CLASSES, cleanup_depth, mask_cleanup_dask
from eostats.plugins import register
from eostats.plugins.base import (
    Measurement,
    StatsPlugin,
    check_mapping,
    first_valid,
    parse_filter_chain,
)
from eostats.plugins.tools import class_codes, class_in

DEFAULT_FILTERS = {
    "2_5": [["opening", 2], ["dilation", 5]],
    "0_5": [["opening", 0], ["dilation", 5]],
}


@register("pq")
class ClearCounts(StatsPlugin):
    NAME = "pq_ls_annual"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "pixel_quality"

    def __init__(
        self,
        *,
        mask_band: str = "oa_fmask",
        nodata_classes: Sequence[str] = ("nodata",),
        erase_classes: Sequence[str] = ("cloud", "shadow"),
        filters: Mapping[str, Any] | None = None,
        mask_classes: Mapping[str, int] | None = None,
        resampling: str = "nearest",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.mask_band = mask_band
        self.classes = dict(mask_classes or FMASK_CLASSES)
        self.nodata_codes = class_codes(
            list(nodata_classes), self.classes, "plugin_config.nodata_classes"
        )
        self.erase_codes = class_codes(
            list(erase_classes), self.classes, "plugin_config.erase_classes"
        )
        filters = (
            DEFAULT_FILTERS if filters is None else check_mapping(filters, "plugin_config.filters")
        )
        self.filters = {
            str(name): parse_filter_chain(chain, f"plugin_config.filters.{name}")
            for name, chain in filters.items()
        }

    @property
    def input_bands(self) -> list[str]:
        return [self.mask_band]

    @property
    def measurements(self) -> list[Measurement]:
        names = ["total", "clear"] + [f"clear_{name}" for name in self.filters]
        return [Measurement(n, "uint16", 0) for n in names]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + max((cleanup_depth(c) for c in self.filters.values()), default=0)

    @property
    def clear_count_recipe(self) -> ClearCountRecipe:
        return ClearCountRecipe(
            band=self.mask_band,
            nodata_codes=tuple(self.nodata_codes),
            erase_codes=tuple(self.erase_codes),
            chains=dict(self.filters),
        )

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        fmask = xx[self.mask_band]
        valid = ~class_in(fmask, self.nodata_codes)
        erased = class_in(fmask, self.erase_codes) & valid
        return xr.Dataset({"valid": valid, "erased": erased}, attrs=xx.attrs)

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        fused = first_valid(xx)  # bool bands: OR over the day's observations
        if any(f"erased_{name}" in xx for name in self.filters):
            # the second fusing, on the tile grid, of one day seen in several CRSs (UTM zones): each zone's masks
            # were cleaned on its native pixels already; cleaning the OR again would grow them twice
            return fused
        for name, chain in self.filters.items():
            erased = fused["erased"]
            fused[f"erased_{name}"] = (
                erased.copy(data=mask_cleanup_dask(erased.data, chain)) if chain else erased
            )
        return fused

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        valid = xx["valid"].values.astype(bool)
        out = {
            "total": valid.sum(axis=0),
            "clear": (valid & ~xx["erased"].values.astype(bool)).sum(axis=0),
        }
        for name in self.filters:
            out[f"clear_{name}"] = (valid & ~xx[f"erased_{name}"].values.astype(bool)).sum(axis=0)
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {
                k: xr.DataArray(v.astype(np.uint16), dims=("y", "x"), coords=coords)
                for k, v in out.items()
            }
        )

"""``pq-ls-bitmask``: clear-observation counts of USGS Landsat Collection 2 from the ``QA_PIXEL`` bits, optionally
with aerosol (odc-stats' ``StatsPQLSBitmask``).

On native pixels: ``keeps`` = the ``nodata_flags`` hold (default: fill bit clear); ``erased`` = any of ``flags``
holds (default: ``cloud`` or ``cirrus`` high confidence); with ``aerosol_band`` ``SR_QA_AEROSOL`` (uint8),
``erased_aerosol`` = aerosol level (bits 6-7) high; with ``SR_ATMOS_OPACITY`` (int16, nodata -9999),
opacity x 0.001 > 0.3. A solar day is fused with OR, then each ``filters`` entry cleans the cloud mask by its
morphological chain (native pixels). Each ``aerosol_filters`` entry (``SR_QA_AEROSOL`` only) likewise cleans the
*cloud* mask and is combined with the unfiltered aerosol mask, as odc-stats does.

Outputs (uint16): ``total`` = Σ keeps; ``clear`` = Σ keeps ∧ ¬erased; ``<filter name>`` = Σ keeps ∧
¬cleaned erased; with an aerosol band ``clear_aerosol`` = Σ keeps ∧ ¬erased ∧ ¬erased_aerosol and
``<aerosol filter name>`` = Σ keeps ∧ ¬cleaned erased ∧ ¬erased_aerosol. Filter names are the output band
names (odc-stats: ``clear_10_2_2``, ``clear_10_2_2_aerosol``).
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
    first_valid,
    parse_filter_chain,
)
from eostats.plugins.tools import BitMask, buffered

AEROSOL_TYPES = {"SR_QA_AEROSOL": "qa_aerosol", "SR_ATMOS_OPACITY": "atmos_opacity"}
AEROSOL_HIGH = 0b1100_0000  # SR_QA_AEROSOL bits 6-7: aerosol level 3 (high)
OPACITY_NODATA = -9999
OPACITY_SCALE = 0.001
OPACITY_HAZY = 0.3


def _named_chains(value: Any, key: str) -> dict[str, list[tuple[str, int]]]:
    chains = {}
    for name, chain in check_mapping(value or {}, key).items():
        chains[str(name)] = parse_filter_chain(chain, f"{key}.{name}")
    return chains


@register("pq-ls-bitmask")
class ClearCountsLandsatBitmask(StatsPlugin):
    NAME = "pc_ls_bitmask"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "pixel_quality_statistics"

    def __init__(
        self,
        *,
        pq_band: str = "QA_PIXEL",
        aerosol_band: str | None = None,
        aerosol_type: str | None = None,
        flags: Mapping[str, Any] | None = None,
        nodata_flags: Mapping[str, Any] | None = None,
        filters: Mapping[str, Any] | None = None,
        aerosol_filters: Mapping[str, Any] | None = None,
        resampling: str = "nearest",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.bitmask = BitMask.from_config(
            mask_band=pq_band, flags=flags, nodata_flags=nodata_flags
        )
        self.aerosol_band = aerosol_band
        self.aerosol_type = None
        if aerosol_band:
            self.aerosol_type = aerosol_type or AEROSOL_TYPES.get(aerosol_band)
            if self.aerosol_type not in AEROSOL_TYPES.values():
                raise PluginConfigError(
                    f"plugin_config.aerosol_type must be one of {', '.join(AEROSOL_TYPES.values())} "
                    f"for aerosol band {aerosol_band!r}, got {aerosol_type!r}"
                )
        self.filters = _named_chains(filters, "plugin_config.filters")
        # odc-stats only honours aerosol filters with the QA aerosol band
        self.aerosol_filters = (
            _named_chains(aerosol_filters, "plugin_config.aerosol_filters")
            if self.aerosol_type == "qa_aerosol"
            else {}
        )
        names = [m.name for m in self.measurements]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PluginConfigError(
                f"plugin_config.filters/aerosol_filters: output name(s) {', '.join(duplicates)} used twice"
            )

    @property
    def input_bands(self) -> list[str]:
        return self.bitmask.input_bands + ([self.aerosol_band] if self.aerosol_band else [])

    @property
    def measurements(self) -> list[Measurement]:
        names = ["total", "clear", *self.filters]
        if self.aerosol_band:
            names += ["clear_aerosol", *self.aerosol_filters]
        return [Measurement(n, "uint16", 0) for n in names]

    @property
    def native_buffer_pixels(self) -> int:
        chains = [*self.filters.values(), *self.aerosol_filters.values()]
        return 10 + max((cleanup_depth(c) for c in chains), default=0)

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        out = {
            "keeps": self.bitmask.keep(xx),
            "erased": self.bitmask.clouds(xx, apply_filters=False),
        }
        if self.aerosol_type == "qa_aerosol":
            out["erased_aerosol"] = (xx[self.aerosol_band] & AEROSOL_HIGH) == AEROSOL_HIGH
        elif self.aerosol_type == "atmos_opacity":
            band = xx[self.aerosol_band]
            out["erased_aerosol"] = (band != OPACITY_NODATA) & (band * OPACITY_SCALE > OPACITY_HAZY)
        return xr.Dataset(out, attrs=xx.attrs)

    @staticmethod
    def _cleaned(name: str) -> str:
        return f"erased__{name}"

    def fuse(self, xx: xr.Dataset) -> xr.Dataset:
        fused = first_valid(xx)  # bool bands: OR over the day
        chains = {**self.filters, **self.aerosol_filters}
        if chains and self._cleaned(next(iter(chains))) in fused:
            return (
                fused  # second fusing on the tile grid (several CRSs): masks were cleaned natively
            )
        for name, chain in chains.items():
            fused[self._cleaned(name)] = buffered(fused["erased"], chain)
        return fused

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        def mask(name: str) -> np.ndarray:
            return np.asarray(xx[name].values, dtype=bool)

        keeps, erased = mask("keeps"), mask("erased")
        counts = {"total": keeps.sum(axis=0), "clear": (keeps & ~erased).sum(axis=0)}
        for name in self.filters:
            counts[name] = (keeps & ~mask(self._cleaned(name))).sum(axis=0)
        if self.aerosol_band:
            aerosol = mask("erased_aerosol")
            counts["clear_aerosol"] = (keeps & ~erased & ~aerosol).sum(axis=0)
            for name in self.aerosol_filters:
                counts[name] = (keeps & ~mask(self._cleaned(name)) & ~aerosol).sum(axis=0)
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {
                k: xr.DataArray(v.astype(np.uint16), dims=("y", "x"), coords=coords)
                for k, v in counts.items()
            }
        )

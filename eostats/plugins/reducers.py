"""Per-band reducers: ``ndvi-median`` (odc-stats' example plugin) and ``band-stats`` (what odc-stats lacks: mean,
median, min, max, std, count, percentiles and medoid of any bands, with any mask).

``ndvi-median`` (odc-stats' ``StatsNDVI``): red and NIR (DEA ``nbart_red``/``nbart_nir`` by default) masked on
native pixels where fmask is ``nodata``, contiguity is 0 or a ``cloud_filters`` class holds (default ``cloud``
and ``shadow`` unbuffered); fused first-valid; NDVI = (nir - red) / (nir + red) of the DN values in float32 per
observation, and its median over time (NaN ignored; the mean of the two middle values for an even count), one
float32 band ``ndvi_median`` (``output_band``), NaN where no observation is clear.

``band-stats``: ``statistics`` of each of ``bands`` over the period. An observation is used at a pixel only
where every band is valid there and the mask keeps it, so all statistics share the same observations:

* ``mean``, ``median``, ``std`` (``ddof``, default 0): ``{band}_{stat}``, float32, NaN without observations;
* ``min``, ``max``: ``{band}_{stat}``; ``percentiles`` (``percentiles: [10, 50, 90]`` in percent, odc-algo's
  nearest-rank rule, nodata below ``percentile_min_count`` = 3 observations): ``{band}_pc_{p}``; ``medoid``:
  ``{band}_medoid``, the observation with the least summed Euclidean distance (over the bands, in their own
  units) to the others, earliest on ties. These keep input values, written as ``output_dtype`` (default float32)
  with ``output_nodata`` (default NaN; required for an integer dtype);
* ``count``: one uint16 band ``count``, the observations used.

Masks: ``mask_type: classes`` (default; ``mask_band`` with ``mask_classes`` — ``fmask``, ``scl`` or a
``{name: code}`` mapping — ``nodata_classes``, ``contiguity_band``, ``cloud_filters``) or ``mask_type: bits``
(USGS ``QA_PIXEL`` flags: ``flags``, ``nodata_flags``, ``filters``); no ``mask_band``: only the bands' nodata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.plugins import register
from eostats.plugins.base import Measurement, PluginConfigError, StatsPlugin
from eostats.plugins.gm_generic import check_bands
from eostats.plugins.tools import (
    BitMask,
    ClassMask,
    band_nodata,
    erase,
    nearest_rank_percentiles,
    percentile_name,
)

STATISTICS = ("mean", "median", "min", "max", "std", "count", "percentiles", "medoid")


def _nan_median(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; NaN where every value is NaN (without numpy's warning)."""
    has_any = (~np.isnan(values)).any(axis=0)
    filled = np.where(has_any[None], values, 0)
    return np.where(has_any, np.nanmedian(filled, axis=0), np.nan).astype(values.dtype)


def _as_float(var: xr.DataArray, dtype: type = np.float32) -> np.ndarray:
    """The block's values as floats with nodata → NaN (datacube's ``mask_invalid_data``; it gives float32 for
    16-bit integers, which NDVI follows)."""
    values = np.asarray(var.values)
    nodata = band_nodata(var, None)
    out = values.astype(dtype)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        out[values == nodata] = np.nan
    return out


def build_mask(
    *,
    mask_type: str,
    mask_band: str | None,
    mask_classes: Any,
    nodata_classes: Any,
    contiguity_band: str | None,
    cloud_filters: Any,
    flags: Any,
    nodata_flags: Any,
    filters: Any,
) -> ClassMask | BitMask | None:
    """The mask a reducer applies on native pixels, from its plugin_config keys."""
    if mask_type not in ("classes", "bits"):
        raise PluginConfigError(
            f"plugin_config.mask_type must be 'classes' or 'bits', got {mask_type!r}"
        )
    if not mask_band:
        return None
    if mask_type == "bits":
        return BitMask.from_config(
            mask_band=mask_band, flags=flags, nodata_flags=nodata_flags, filters=filters
        )
    return ClassMask.from_config(
        mask_band=mask_band,
        mask_classes=mask_classes,
        nodata_classes=nodata_classes,
        cloud_filters=cloud_filters,
        contiguity_band=contiguity_band,
    )


@register("ndvi-median")
class NdviMedian(StatsPlugin):
    NAME = "ndvi_median"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "ndvi"

    def __init__(
        self,
        *,
        red_band: str = "nbart_red",
        nir_band: str = "nbart_nir",
        mask_band: str | None = "oa_fmask",
        contiguity_band: str | None = "oa_nbart_contiguity",
        mask_classes: Mapping[str, int] | str | None = None,
        nodata_classes: Sequence[str] = ("nodata",),
        cloud_filters: Mapping[str, Any] | None = None,
        output_band: str | None = None,
        output_bands: str | None = None,
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        self.red_band, self.nir_band = red_band, nir_band
        # odc-stats' example names its single output `output_bands`
        self.output_band = output_band or output_bands or "ndvi_median"
        self.mask = build_mask(
            mask_type="classes",
            mask_band=mask_band,
            mask_classes=mask_classes,
            nodata_classes=nodata_classes,
            contiguity_band=contiguity_band,
            cloud_filters=cloud_filters,
            flags=None,
            nodata_flags=None,
            filters=None,
        )

    @property
    def input_bands(self) -> list[str]:
        return [self.red_band, self.nir_band] + (self.mask.input_bands if self.mask else [])

    @property
    def measurements(self) -> list[Measurement]:
        return [Measurement(self.output_band, "float32", float("nan"))]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + (self.mask.buffer_pixels if self.mask else 0)

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        bad = self.mask.bad(xx) if self.mask else None
        out = {}
        for band in (self.red_band, self.nir_band):
            nodata = band_nodata(xx[band], -999)
            out[band] = (
                erase(xx[band], bad, nodata)
                if bad is not None
                else xx[band].assign_attrs(nodata=nodata)
            )
        return xr.Dataset(out, attrs=xx.attrs)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        red = _as_float(xx[self.red_band])
        nir = _as_float(xx[self.nir_band])
        with np.errstate(divide="ignore", invalid="ignore"):
            ndvi = (nir - red) / (nir + red)
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {self.output_band: xr.DataArray(_nan_median(ndvi), dims=("y", "x"), coords=coords)}
        )


@register("band-stats")
class BandStatistics(StatsPlugin):
    NAME = "band_stats"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "statistics"

    def __init__(
        self,
        *,
        bands: Sequence[str] | None = None,
        statistics: Sequence[str] = ("mean",),
        percentiles: Sequence[float] = (10, 50, 90),
        percentile_min_count: int = 3,
        ddof: int = 0,
        output_dtype: str = "float32",
        output_nodata: float | int | None = None,
        mask_type: str = "classes",
        mask_band: str | None = None,
        mask_classes: Mapping[str, int] | str | None = None,
        nodata_classes: Sequence[str] | None = None,
        contiguity_band: str | None = None,
        cloud_filters: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        nodata_flags: Mapping[str, Any] | None = None,
        filters: Any = None,
        resampling: str = "bilinear",
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        if bands is None:
            raise PluginConfigError(
                "plugin 'band-stats' needs plugin_config.bands (the bands to summarise)"
            )
        self.bands = check_bands(bands)
        if isinstance(statistics, str):
            statistics = [statistics]
        unknown_stats = [s for s in statistics if s not in STATISTICS]
        if unknown_stats or not statistics:
            raise PluginConfigError(
                f"plugin_config.statistics: unknown {', '.join(map(repr, unknown_stats)) or 'empty list'}; "
                f"allowed: {', '.join(STATISTICS)}"
            )
        self.statistics = list(dict.fromkeys(statistics))
        bad_pcs = [p for p in percentiles if not 0 <= float(p) <= 100]
        if bad_pcs or not percentiles:
            raise PluginConfigError(
                f"plugin_config.percentiles must be numbers in [0, 100] (percent), got {list(percentiles)!r}"
            )
        self.percentiles = [float(p) for p in percentiles]
        self.percentile_min_count = int(percentile_min_count)
        self.ddof = int(ddof)
        try:
            self.output_dtype = np.dtype(output_dtype)
        except TypeError:
            raise PluginConfigError(
                f"plugin_config.output_dtype: unknown dtype {output_dtype!r}"
            ) from None
        if output_nodata is None:
            if self.output_dtype.kind != "f":
                raise PluginConfigError(
                    "plugin_config.output_nodata is required with an integer output_dtype"
                )
            output_nodata = float("nan")
        self.output_nodata = output_nodata
        if not mask_band and (
            nodata_classes or cloud_filters or contiguity_band or flags or nodata_flags or filters
        ):
            raise PluginConfigError("plugin_config.mask_band is needed for the mask settings given")
        self.mask = build_mask(
            mask_type=mask_type,
            mask_band=mask_band,
            mask_classes=mask_classes,
            nodata_classes=nodata_classes,
            contiguity_band=contiguity_band,
            cloud_filters=cloud_filters,
            flags=flags,
            nodata_flags=nodata_flags,
            filters=filters,
        )

    # -- declarations ---------------------------------------------------------------------------------
    @property
    def input_bands(self) -> list[str]:
        return self.bands + (self.mask.input_bands if self.mask else [])

    @property
    def measurements(self) -> list[Measurement]:
        nan = float("nan")
        kept = self.output_dtype.name
        out = []
        for band in self.bands:
            for stat in self.statistics:
                if stat in ("mean", "median", "std"):
                    out.append(Measurement(f"{band}_{stat}", "float32", nan))
                elif stat in ("min", "max", "medoid"):
                    out.append(Measurement(f"{band}_{stat}", kept, self.output_nodata))
                elif stat == "percentiles":
                    out += [
                        Measurement(percentile_name(band, p), kept, self.output_nodata)
                        for p in self.percentiles
                    ]
        if "count" in self.statistics:
            out.append(Measurement("count", "uint16", 0))
        return out

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + (self.mask.buffer_pixels if self.mask else 0)

    # -- steps ----------------------------------------------------------------------------------------
    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        bad = self.mask.bad(xx) if self.mask else None
        out = {}
        for band in self.bands:
            var = xx[band]
            nodata = band_nodata(var, self.output_nodata)
            out[band] = (
                erase(var, bad, nodata) if bad is not None else var.assign_attrs(nodata=nodata)
            )
        return xr.Dataset(out, attrs=xx.attrs)

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        values = {b: _as_float(xx[b], np.float64) for b in self.bands}
        used = np.logical_and.reduce([~np.isnan(v) for v in values.values()])
        count = used.sum(axis=0)
        for v in values.values():
            v[~used] = np.nan
        fill = self.output_nodata
        out: dict[str, np.ndarray] = {}
        medoid_index = self._medoid_index(values, used) if "medoid" in self.statistics else None
        for band, v in values.items():
            for stat in self.statistics:
                if stat == "mean":
                    out[f"{band}_mean"] = self._masked(
                        np.nansum(v, axis=0) / np.maximum(count, 1), count > 0
                    )
                elif stat == "median":
                    out[f"{band}_median"] = _nan_median(v.astype(np.float32))
                elif stat == "std":
                    out[f"{band}_std"] = self._std(v, count)
                elif stat in ("min", "max"):
                    pick = np.nanmin if stat == "min" else np.nanmax
                    safe = np.where(used.any(axis=0)[None], v, 0)
                    out[f"{band}_{stat}"] = self._kept(
                        np.where(count > 0, pick(safe, axis=0), np.nan), fill
                    )
                elif stat == "percentiles":
                    quantiles = [p / 100 for p in self.percentiles]
                    ranked = nearest_rank_percentiles(
                        v, quantiles, np.nan, min_count=self.percentile_min_count
                    )
                    for p, r in zip(self.percentiles, ranked, strict=True):
                        out[percentile_name(band, p)] = self._kept(r, fill)
                elif stat == "medoid":
                    chosen = np.take_along_axis(v, medoid_index[None], axis=0)[0]
                    out[f"{band}_medoid"] = self._kept(np.where(count > 0, chosen, np.nan), fill)
        if "count" in self.statistics:
            out["count"] = count.astype(np.uint16)
        coords = {k: xx.coords[k] for k in ("y", "x") if k in xx.coords}
        return xr.Dataset(
            {k: xr.DataArray(v, dims=("y", "x"), coords=coords) for k, v in out.items()}
        )

    # -- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _masked(value: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.where(ok, value, np.nan).astype(np.float32)

    def _std(self, v: np.ndarray, count: np.ndarray) -> np.ndarray:
        mean = np.nansum(v, axis=0) / np.maximum(count, 1)
        squares = np.nansum((v - mean[None]) ** 2, axis=0)
        dof = count - self.ddof
        with np.errstate(divide="ignore", invalid="ignore"):
            std = np.sqrt(squares / dof)
        return self._masked(std, dof > 0)

    def _kept(self, value: np.ndarray, fill: Any) -> np.ndarray:
        """Input-valued statistics (NaN = none) into the output dtype with its nodata."""
        missing = np.isnan(value)
        if self.output_dtype.kind == "f":
            return np.where(missing, fill, value).astype(self.output_dtype)
        return np.where(missing, fill, np.nan_to_num(value)).astype(self.output_dtype)

    @staticmethod
    def _medoid_index(values: dict[str, np.ndarray], used: np.ndarray) -> np.ndarray:
        """Per pixel, the time index of the used observation with the least summed distance to the others."""
        stack = np.stack([np.where(used, v, 0.0) for v in values.values()])  # (band, time, y, x)
        n_time = stack.shape[1]
        best_cost = np.full(stack.shape[2:], np.inf)
        best = np.zeros(stack.shape[2:], np.int64)
        for i in range(n_time):
            distance = np.sqrt(((stack - stack[:, i : i + 1]) ** 2).sum(axis=0))  # (time, y, x)
            cost = np.where(used, distance, 0.0).sum(axis=0)
            cost = np.where(used[i], cost, np.inf)
            better = cost < best_cost  # strict: the earliest wins ties
            best = np.where(better, i, best)
            best_cost = np.where(better, cost, best_cost)
        return best

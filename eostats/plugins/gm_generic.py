"""``gm-generic``: the geometric median with SMAD, EMAD, BCMAD and count of any bands, masked by any class band.

odc-stats' ``StatsGM``: each band is masked on native pixels where the class band (``mask_band``, codes from
``mask_classes``: a preset ``fmask`` / ``scl`` or a ``{name: code}`` mapping) holds one of ``nodata_classes``,
where ``contiguity_band`` is 0, and where a ``cloud_filters`` entry (class name, or several joined by ``,``)
holds after its morphological chain (radii in native pixels). Without ``cloud_filters`` the classes ``cloud``
and ``shadow`` are removed unbuffered. Observations of a solar day are fused first-valid.

The reduction is the geomedian kernel (:mod:`eostats.kernels.geomedian`): DN → ``DN * scale + offset`` (default
1e-4, -1e-4), an observation dropped at a pixel when any band is missing, Weiszfeld with eps ``0.1 * scale``
and at most 1000 iterations, back to DN truncated (``rounding: round`` rounds) into ``output_dtype`` with
``output_nodata``. EMAD is in DN, SMAD and BCMAD unitless (float32, NaN), count uint16. ``aux_names`` renames
the four auxiliary bands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from eostats.kernels.classmask import PackedClassMask
from eostats.kernels.geomedian import GeomedianResult, median_to_dn
from eostats.kernels.gpu import (  # the CPU or GPU kernel, as the tile's backend says
    active_backend,
    geomedian_mads,
)
from eostats.plugins import register
from eostats.plugins.base import Measurement, PluginConfigError, StatsPlugin, check_mapping
from eostats.plugins.tools import (
    EARLY_MASK,
    SCRATCH_INPUTS,
    ClassMask,
    EarlyMask,
    band_nodata,
    erase,
    stacked_bands,
)

DEFAULT_AUX_NAMES = {"smad": "smad", "emad": "emad", "bcmad": "bcmad", "count": "count"}
_KERNEL_DTYPES = (np.dtype("int16"), np.dtype("uint16"), np.dtype("float32"))


def _public_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset's attrs without the tile reader's notes to the plugin."""
    return {k: v for k, v in attrs.items() if k not in (SCRATCH_INPUTS, EARLY_MASK)}


def check_bands(bands: Any, key: str = "plugin_config.bands") -> list[str]:
    if isinstance(bands, str) or not isinstance(bands, Sequence) or not bands:
        raise PluginConfigError(f"{key} must be a non-empty list of band names, got {bands!r}")
    return [str(b) for b in bands]


@register("gm-generic")
class GeomedianGeneric(StatsPlugin):
    NAME = "gm"
    VERSION = "0.1.0"
    PRODUCT_FAMILY = "geomedian"

    #: defaults that subclasses (gm-s2) override
    DEFAULT_AUX: Mapping[str, str] = DEFAULT_AUX_NAMES

    def __init__(
        self,
        *,
        bands: Sequence[str] | None = None,
        mask_band: str | None = None,
        mask_classes: Mapping[str, int] | str | None = None,
        nodata_classes: Sequence[str] | None = None,
        contiguity_band: str | None = None,
        cloud_filters: Mapping[str, Any] | None = None,
        aux_names: Mapping[str, str] | None = None,
        output_dtype: str = "int16",
        output_nodata: int | float = -999,
        scale: float = 1e-4,
        offset: float = -1e-4,
        eps: float | None = None,
        maxiters: int = 1000,
        rounding: str = "truncate",
        rgb_bands: Sequence[str] | None = None,
        rgb_clamp: Sequence[float] = (1, 3000),
        resampling: str = "bilinear",
        start: str = "geomad",
        work_width: int = 400,
        **unknown: Any,
    ) -> None:
        super().__init__(resampling=resampling, **unknown)
        if bands is None:
            raise PluginConfigError(
                f"plugin '{self.NAME}' needs plugin_config.bands (the bands to summarise)"
            )
        self.bands = check_bands(bands)
        # the preview's red, green and blue bands (eostats.plugins.preview) and their display range
        if rgb_bands is not None and (
            len(rgb_bands) != 3 or any(b not in self.bands for b in rgb_bands)
        ):
            raise PluginConfigError(
                f"plugin_config.rgb_bands must be three of {', '.join(self.bands)}, got {rgb_bands!r}"
            )
        self.rgb_bands = tuple(rgb_bands) if rgb_bands is not None else None
        self.rgb_clamp = (float(rgb_clamp[0]), float(rgb_clamp[1]))
        self.mask: ClassMask | None = None
        if mask_band:
            self.mask = ClassMask.from_config(
                mask_band=mask_band,
                mask_classes=mask_classes,
                nodata_classes=nodata_classes,
                cloud_filters=cloud_filters,
                contiguity_band=contiguity_band,
                **self._mask_defaults(),
            )
        elif contiguity_band or cloud_filters or nodata_classes:
            raise PluginConfigError(
                "plugin_config.mask_band is needed for nodata_classes, cloud_filters or contiguity_band"
            )
        aux = check_mapping(aux_names or {}, "plugin_config.aux_names")
        unknown_aux = sorted(set(aux) - set(DEFAULT_AUX_NAMES))
        if unknown_aux:
            raise PluginConfigError(
                f"plugin_config.aux_names: unknown key(s) {', '.join(unknown_aux)}; allowed: smad, emad, bcmad, count"
            )
        self.aux_names = {**self.DEFAULT_AUX, **aux}
        if rounding not in ("truncate", "round"):
            raise PluginConfigError(
                f"plugin_config.rounding must be 'truncate' or 'round', got {rounding!r}"
            )
        try:
            self.output_dtype = np.dtype(output_dtype)
        except TypeError:
            raise PluginConfigError(
                f"plugin_config.output_dtype: unknown dtype {output_dtype!r}"
            ) from None
        self.output_nodata = output_nodata
        self.rounding = rounding
        self.scale, self.offset = float(scale), float(offset)
        if self.scale == 0:
            raise PluginConfigError("plugin_config.scale must be non-zero")
        # odc-algo's default for integer input: a tenth of a DN, in scaled units
        self.eps = 0.1 * abs(self.scale) if eps is None else float(eps)
        self.maxiters = int(maxiters)
        # "geomad" (default): odc-stats' own values (geomad's warm start, restarted every `work_width` columns as
        # odc-stats' work_chunks), which on pixels whose median is not unique (two observations) depend on the
        # neighbours (docs/quirks.md); "mean": every pixel from its own mean: independent of blocks and
        # neighbours, the same on the GPU, ~25 % less CPU, but SMAD/BCMAD off by up to 4e-3 relative
        if start not in ("geomad", "mean"):
            raise PluginConfigError(
                f"plugin_config.start must be 'geomad' or 'mean', got {start!r}"
            )
        if int(work_width) < 1:
            raise PluginConfigError(
                f"plugin_config.work_width must be a positive integer, got {work_width!r}"
            )
        self.start = start
        self.work_width = int(work_width)

    def _mask_defaults(self) -> dict[str, Any]:
        return {}

    # -- declarations ---------------------------------------------------------------------------------
    @property
    def input_bands(self) -> list[str]:
        return self.bands + (self.mask.input_bands if self.mask else [])

    @property
    def measurements(self) -> list[Measurement]:
        aux = self.aux_names
        return [Measurement(b, self.output_dtype.name, self.output_nodata) for b in self.bands] + [
            Measurement(aux["smad"], "float32", float("nan")),
            Measurement(aux["emad"], "float32", float("nan")),
            Measurement(aux["bcmad"], "float32", float("nan")),
            Measurement(aux["count"], "uint16", 0),
        ]

    @property
    def native_buffer_pixels(self) -> int:
        return 10 + (self.mask.buffer_pixels if self.mask else 0)

    @property
    def context_bands(self) -> list[str]:
        # only the class band's clouds are buffered by morphology; contiguity and the bands themselves are
        # masked pixel by pixel
        return [self.mask.band] if self.mask else []

    @property
    def mask_bands(self) -> list[str]:
        mask = self.mask
        if not isinstance(mask, ClassMask):
            return []
        return [mask.band, *([mask.contiguity_band] if mask.contiguity_band else [])]

    def early_mask(self, context: Mapping[str, np.ndarray]) -> EarlyMask | None:
        """The class mask on packed planes (:class:`~eostats.kernels.classmask.PackedClassMask`), when it applies."""
        mask = self.mask
        if not isinstance(mask, ClassMask):
            return None
        classes = context.get(mask.band)
        contiguity = context.get(mask.contiguity_band) if mask.contiguity_band else None
        arrays = [classes, *([contiguity] if mask.contiguity_band else [])]
        if not all(isinstance(a, np.ndarray) and a.ndim == 3 for a in arrays):
            return None
        if not PackedClassMask.supports(
            mask.cloud_filters, classes.dtype, None if contiguity is None else contiguity.dtype
        ):
            return None
        packed = PackedClassMask(
            mask.nodata_codes, mask.cloud_filters, classes.dtype, classes.shape[1:]
        )
        return EarlyMask(packed, packed.bad(classes, contiguity))

    # -- steps ----------------------------------------------------------------------------------------
    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        scratch = bool(
            xx.attrs.get(SCRATCH_INPUTS)
        )  # the tile reader's own decoded arrays: no copies
        if scratch and isinstance(self.mask, ClassMask):
            erased = self._erase_packed(xx)
            if erased is not None:
                return erased
        bad = self.mask.bad(xx) if self.mask else None
        out = {}
        for band in self.bands:
            var = xx[band]
            nodata = band_nodata(var, self.output_nodata)
            out[band] = (
                erase(var, bad, nodata, in_place=scratch)
                if bad is not None
                else var.assign_attrs(nodata=nodata)
            )
        return xr.Dataset(out, attrs=_public_attrs(xx.attrs))

    def _erase_packed(self, xx: xr.Dataset) -> xr.Dataset | None:
        """:meth:`native_transform` of the tile reader's in-memory observations, the mask worked out on bit-packed
        planes and the bands erased in place (:class:`~eostats.kernels.classmask.PackedClassMask`); None where
        that does not apply (lazy or read-only arrays, a class band that is not 8/16-bit, large radii)."""
        mask = self.mask
        names = [mask.band, *([mask.contiguity_band] if mask.contiguity_band else []), *self.bands]
        arrays = {name: xx[name].variable._data for name in names}
        if not all(
            isinstance(a, np.ndarray) and a.ndim == 3 and a.flags.c_contiguous
            for a in arrays.values()
        ) or not all(arrays[band].flags.writeable for band in self.bands):
            return None
        early = xx.attrs.get(EARLY_MASK)  # the planes the reader decoded the bands by, if it did
        if not (isinstance(early, EarlyMask) and early.shape == arrays[mask.band].shape):
            early = self.early_mask(arrays)
            if early is None:
                return None
        nodata = {band: band_nodata(xx[band], self.output_nodata) for band in self.bands}
        early.packed.erase_bad(early.bad, [(arrays[band], nodata[band]) for band in self.bands])
        out = {band: xx[band].assign_attrs(nodata=nodata[band]) for band in self.bands}
        return xr.Dataset(out, attrs=_public_attrs(xx.attrs))

    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        result = self.geomedian(xx)
        return self.outputs(result, xx)

    # -- parts of reduce, for subclasses --------------------------------------------------------------
    def geomedian(self, xx: xr.Dataset) -> GeomedianResult:
        """The kernel on the block's ``(band, time, y, x)`` stack; every band's nodata is mapped to the first's."""
        first = xx[self.bands[0]]
        nodata = band_nodata(first, self.output_nodata)
        layers = []
        for band in self.bands:
            values = np.asarray(xx[band].values)
            band_nd = band_nodata(xx[band], nodata)
            if band_nd != nodata and not (isinstance(band_nd, float) and np.isnan(band_nd)):
                values = np.where(values == band_nd, nodata, values)
            layers.append(values)
        stack = stacked_bands(layers)
        if stack.dtype not in _KERNEL_DTYPES:
            stack = stack.astype(np.float32)
        # geomad's warm start is sequential along a row: the GPU kernel runs the per-pixel mean start
        start = self.start if active_backend() != "gpu" else "mean"
        return geomedian_mads(
            stack,
            nodata=nodata,
            scale=self.scale,
            offset=self.offset,
            eps=self.eps,
            maxiters=self.maxiters,
            start=start,
            block_width=self.work_width if start == "geomad" else None,
        )

    @property
    def column_alignment(self) -> int:
        """Spatial blocks start at multiples of this many tile columns: geomad's restarts (every ``work_width``
        columns of the tile, as odc-stats' work chunks) then fall where odc-stats' do."""
        return self.work_width if self.start == "geomad" else 1

    def outputs(self, result: GeomedianResult, xx: xr.Dataset) -> xr.Dataset:
        dims = ("y", "x")
        coords = {k: xx.coords[k] for k in dims if k in xx.coords}
        dn = median_to_dn(
            result.median,
            scale=self.scale,
            offset=self.offset,
            nodata=self.output_nodata,
            dtype=self.output_dtype,
            rounding=self.rounding,
        )
        out = {b: xr.DataArray(dn[i], dims=dims, coords=coords) for i, b in enumerate(self.bands)}
        aux = self.aux_names
        out[aux["smad"]] = xr.DataArray(result.smad, dims=dims, coords=coords)
        out[aux["emad"]] = xr.DataArray(result.emad, dims=dims, coords=coords)
        out[aux["bcmad"]] = xr.DataArray(result.bcmad, dims=dims, coords=coords)
        out[aux["count"]] = xr.DataArray(result.count.astype(np.uint16), dims=dims, coords=coords)
        return xr.Dataset(out)

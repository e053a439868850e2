"""Synthetic sample collections of the other products the statistics read (static STAC catalogs + COGs).

Every product is rendered from the same synthetic world as :mod:`eostats.sample` (land cover, clouds and their
shadows, tilted scene footprints in two UTM zones, overlapping rows of one pass on the same solar day), so the
known cloud, water and cover patterns of that sample carry over:

``s2_l2a`` — Sentinel-2 L2A-like, 10 m
    ``B02 B03 B04 B08`` at 10 m and ``B05 B06 B07 B8A B11 B12`` at 20 m (uint16 reflectance x 10 000, nodata 0),
    ``SCL`` at 20 m (uint8, nodata 0): no data 0, saturated 1 (a few pixels), cloud shadows 3, vegetation 4,
    bare soils 5, water 6, cloud medium probability 8 (cloud edges), cloud high probability 9, thin cirrus 10
    (a ground-fixed stripe in every third pass). The 20 m grids are aligned to 20 m.
``usgs_c2l2`` — USGS Landsat Collection 2 Level-2-like, 30 m
    ``red green blue nir swir_1 swir_2`` (uint16, reflectance = DN x 2.75e-5 - 0.2, nodata 0), ``QA_PIXEL``
    (uint16, USGS values: fill 1, clear 21824, water 21952, high-confidence cloud 22280, dilated cloud 21762
    in a 2-pixel ring around clouds, cloud shadow 23888, high-confidence cirrus 54596 in every third pass's
    stripe) and ``SR_QA_AEROSOL`` (uint8, nodata 1: bit 1 valid retrieval, bit 2 water, bits 6-7 aerosol level
    1-3, high (3) in a haze blob of every second pass).
``wofs`` — WOfS-like water observation layers, 30 m
    ``water`` (uint8, nodata 1): 1 no data, 2 non-contiguous, 64 cloud, 32 cloud shadow, 128 water, 0 dry, plus
    ground-fixed terrain shadow (8) and high slope (16, ORed with wet/dry) patches.
``fc_wo`` — fractional cover with the water layer of the same scene in one item, 30 m
    ``pv bs npv ue`` (uint8 percent, nodata 255): pv from the scene's NDVI, bs/npv splitting the rest by the
    ground's soil and urban share, ue 5-60 growing with surface texture; plus ``water`` as in ``wofs``.

Everything is deterministic for a given spec. :func:`generate_sample` dispatches on a ``product`` key of a
sample-spec mapping (absent or ``landsat_ard``: :func:`eostats.sample.generate_sample_collection`), so a config
``source: {type: sample, sample: {product: s2_l2a}}`` can name any of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from scipy import ndimage

from eostats.fileio import remove_stale_temporaries, temporary_sibling_dir

# Private helpers of the Landsat sample: the world (ground fields, skies, scene rendering) is shared on purpose.
from eostats.sample import (  # noqa: I001
    CATALOG_FILE,
    SampleSpec,
    ScenePlan,
    _ground_grids,
    _GroundFields,
    _iso,
    _pass_sky,
    _render_scene,
    _replace_dir,
    _rounded,
    _window,
    footprint,
    generate_sample_collection,
    plan_scenes,
    save_catalog,
)

PRODUCTS = ("s2_l2a", "usgs_c2l2", "wofs", "fc_wo")
LANDSAT_ARD = "landsat_ard"

# --- Sentinel-2 ---------------------------------------------------------------------------------------------
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_BANDS = S2_10M + S2_20M
SCL = {
    "nodata": 0,
    "saturated": 1,
    "shadow": 3,
    "vegetation": 4,
    "bare": 5,
    "water": 6,
    "cloud_medium": 8,
}
SCL |= {"cloud_high": 9, "cirrus": 10}

# --- USGS Collection 2 --------------------------------------------------------------------------------------
USGS_BANDS = ("red", "green", "blue", "nir", "swir_1", "swir_2")
USGS_SCALE, USGS_OFFSET = 2.75e-5, -0.2
_LOW = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # low confidence of cloud, shadow, snow, cirrus
QA = {
    "fill": 1,
    "clear": 64 | _LOW,  # 21824
    "water": 64 | 128 | _LOW,  # 21952
    "cloud": 8 | (3 << 8) | (1 << 10) | (1 << 12) | (1 << 14),  # 22280
    "dilated": 2 | _LOW,  # 21762
    "shadow": 16
    | 64
    | (1 << 8)
    | (3 << 10)
    | (1 << 12)
    | (1 << 14),  # 23888 (USGS sets "clear" on shadows)
    "cirrus": 4 | 64 | (1 << 8) | (1 << 10) | (1 << 12) | (3 << 14),  # 54596
}

# --- WOfS / FC ----------------------------------------------------------------------------------------------
WO = {
    "nodata": 1,
    "noncontiguous": 2,
    "terrain_shadow": 8,
    "high_slope": 16,
    "shadow": 32,
    "cloud": 64,
    "wet": 128,
}
FC_BANDS = ("pv", "bs", "npv", "ue")
FC_NODATA = 255

# Landsat sample band order: blue green red nir swir_1 swir_2
_LS = ("nbart_blue", "nbart_green", "nbart_red", "nbart_nir", "nbart_swir_1", "nbart_swir_2")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One asset of a scene: the raster, its nodata, grid and dtype metadata."""

    data: np.ndarray
    nodata: int
    geobox: GeoBox
    categorical: bool = False
    scale: float | None = None
    offset: float | None = None


def default_spec(product: str, **overrides: Any) -> SampleSpec:
    """The sample spec of ``product``: ``SampleSpec.tiny()`` with product ids; Sentinel-2 at 10 m over ~3 x 3 km."""
    if product not in PRODUCTS:
        raise ValueError(
            f"unknown sample product {product!r}; known: {', '.join((LANDSAT_ARD, *PRODUCTS))}"
        )
    params: dict[str, Any] = {
        "s2_l2a": {
            "resolution": 10.0,
            "bbox": (149.137, -35.374, 149.167, -35.350),
            "cloud_scale_m": 600.0,
            "shadow_offset_m": (-300.0, -200.0),
            "landcover_scale_m": 400.0,
            "paddock_size_m": 200.0,
            "footprint_jitter_m": 30.0,
            "collection_id": "sample_s2_l2a",
            "item_prefix": "sample_s2",
            "platform": "sentinel-2a",
        },
        "usgs_c2l2": {"collection_id": "sample_usgs_c2l2", "item_prefix": "sample_lc08"},
        "wofs": {"collection_id": "sample_ls_wo", "item_prefix": "sample_wo"},
        "fc_wo": {"collection_id": "sample_ls_fc_wo", "item_prefix": "sample_fc"},
    }[product]
    params.update(overrides)
    return SampleSpec.tiny(**params)


def generate_sample(
    out_dir: Path, spec: Mapping[str, Any] | SampleSpec | None = None, *, workers: int | None = None
) -> Path:
    """Any sample collection: ``spec["product"]`` picks it (default: the Landsat ARD sample), the other keys are
    ``SampleSpec`` overrides. Returns the path of ``catalog.json``."""
    if spec is None or isinstance(spec, SampleSpec):
        return generate_sample_collection(out_dir, spec, workers=workers)
    values = dict(spec)
    product = values.pop("product", LANDSAT_ARD)
    if product == LANDSAT_ARD:
        return generate_sample_collection(out_dir, values or None, workers=workers)
    return generate_product_sample(out_dir, product, values, workers=workers)


def generate_product_sample(
    out_dir: Path,
    product: str,
    spec: SampleSpec | Mapping[str, Any] | None = None,
    *,
    workers: int | None = None,
) -> Path:
    """Write the sample collection of ``product`` (one of :data:`PRODUCTS`) into ``out_dir``; returns its
    ``catalog.json``. ``spec``: a full ``SampleSpec``, or overrides of :func:`default_spec`. Built beside
    ``out_dir`` and renamed into place, like :func:`eostats.sample.generate_sample_collection`."""
    if isinstance(spec, SampleSpec):
        full = spec
    else:
        overrides = dataclasses.asdict(SampleSpec.from_mapping(spec or {}))
        given = set(spec or {})
        full = default_spec(product, **{k: v for k, v in overrides.items() if k in given})
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # a killed generator's staging directory
    staging = temporary_sibling_dir(out_dir)
    build = staging / "build"
    try:
        build.mkdir()
        items = _render_all(product, full, build, workers or min(2, os.cpu_count() or 1))
        _write_catalog(build, product, full, items)
        _replace_dir(build, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / CATALOG_FILE


# --------------------------------------------------------------------------------------------------------------
# planning and rendering


def product_plans(product: str, spec: SampleSpec) -> list[ScenePlan]:
    """The scenes of ``product``: the Landsat sample's plans, with Sentinel-2 rasters grown to a 20 m-aligned
    extent of even size (so the 20 m bands share the 10 m bands' corners)."""
    plans = plan_scenes(spec)
    if product != "s2_l2a":
        return plans
    step = 2 * spec.resolution
    out = []
    for p in plans:
        x0 = math.floor(p.x0 / step) * step
        y0 = math.ceil(p.y0 / step) * step
        x1 = math.ceil((p.x0 + p.shape[1] * spec.resolution) / step) * step
        y1 = math.floor((p.y0 - p.shape[0] * spec.resolution) / step) * step
        shape = (round((y0 - y1) / spec.resolution), round((x1 - x0) / spec.resolution))
        out.append(dataclasses.replace(p, x0=x0, y0=y0, shape=shape))
    return out


def _geobox(x0: float, y0: float, shape: tuple[int, int], res: float, epsg: int) -> GeoBox:
    return GeoBox(shape, Affine(res, 0, x0, 0, -res, y0), f"EPSG:{epsg}")


def _ground_window(plan: ScenePlan, grid: _GroundFields, res: float) -> dict[str, np.ndarray]:
    r0, c0 = _window(plan, grid, res)
    h, w = plan.shape
    return {k: v[r0 : r0 + h, c0 : c0 + w] for k, v in grid.fields.items()}


def _cloud_edges(cloud: np.ndarray) -> np.ndarray:
    """Cloud pixels with a non-cloud 4-neighbour."""
    return cloud & ~ndimage.binary_erosion(cloud, border_value=1)


def _ndvi(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    red = bands["nbart_red"].astype(np.float32)
    nir = bands["nbart_nir"].astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num((nir - red) / np.maximum(nir + red, 1.0))


def _stripe(plan: ScenePlan, res: float, width_px: int = 6) -> np.ndarray:
    """A ground-fixed diagonal stripe (in the scene CRS) — cirrus."""
    h, w = plan.shape
    cols = (plan.x0 / res) + np.arange(w)[None, :]
    rows = (plan.y0 / res) - np.arange(h)[:, None]
    return ((cols + rows) % 60) < width_px


def _blob(plan: ScenePlan, res: float, radius_m: float) -> np.ndarray:
    """A disk of ``radius_m`` around the scene centre — haze."""
    h, w = plan.shape
    xs = plan.x0 + (np.arange(w) + 0.5) * res - plan.center[0]
    ys = plan.y0 - (np.arange(h) + 0.5) * res - plan.center[1]
    return xs[None, :] ** 2 + ys[:, None] ** 2 <= radius_m**2


def _wofs_water(
    plan: ScenePlan, ls: Mapping[str, np.ndarray], fields: Mapping[str, np.ndarray]
) -> np.ndarray:
    fmask, contiguity = ls["oa_fmask"], ls["oa_nbart_contiguity"]
    water = np.where(fmask == 5, WO["wet"], 0).astype(np.uint8)
    terrain = (fields["forest"] > 0.6) & (fields["texture"] > 1.2)
    slope = (fields["forest"] > 0.3) & (fields["texture"] < -1.3)
    water[slope] |= WO["high_slope"]
    water[terrain] = WO["terrain_shadow"]
    water[fmask == 3] = WO["shadow"]
    water[fmask == 2] = WO["cloud"]
    water[(contiguity == 0) & (fmask != 0)] = WO["noncontiguous"]
    water[fmask == 0] = WO["nodata"]
    return water


def _render_s2(plan: ScenePlan, spec: SampleSpec, ls: dict, fields: dict) -> dict[str, Layer]:
    res = spec.resolution
    gbox10 = _geobox(plan.x0, plan.y0, plan.shape, res, plan.epsg)
    gbox20 = _geobox(plan.x0, plan.y0, (plan.shape[0] // 2, plan.shape[1] // 2), 2 * res, plan.epsg)
    valid = ls["oa_fmask"] != 0
    blue, green, red, nir, swir1, swir2 = (ls[b].astype(np.float32) for b in _LS)
    spectra = {
        "B02": blue,
        "B03": green,
        "B04": red,
        "B05": red + 0.25 * (nir - red),
        "B06": red + 0.6 * (nir - red),
        "B07": red + 0.85 * (nir - red),
        "B08": nir,
        "B8A": nir * 1.02,
        "B11": swir1,
        "B12": swir2,
    }
    layers = {}
    for band, values in spectra.items():
        dn = np.where(valid, np.clip(np.rint(values), 1, 65535), 0).astype(np.uint16)
        if band in S2_20M:
            dn = dn[
                ::2, ::2
            ].copy()  # the 20 m pixel holds its north-west 10 m pixel (nearest, not averaged)
        layers[band] = Layer(dn, 0, gbox10 if band in S2_10M else gbox20, scale=1e-4, offset=0.0)
    fmask = ls["oa_fmask"]
    cloud = fmask == 2
    scl = np.where(_ndvi(ls) > 0.3, SCL["vegetation"], SCL["bare"]).astype(np.uint8)
    scl[fmask == 5] = SCL["water"]
    if plan.pass_index % 3 == 2:
        scl[_stripe(plan, res) & (scl != SCL["water"])] = SCL["cirrus"]
    scl[fmask == 3] = SCL["shadow"]
    scl[cloud] = SCL["cloud_high"]
    scl[_cloud_edges(cloud)] = SCL["cloud_medium"]
    rng = np.random.default_rng(
        [spec.seed, 11, plan.path, plan.row, plan.acquired.date().toordinal()]
    )
    scl[(rng.random(scl.shape) < 2e-4) & (scl != SCL["water"])] = SCL["saturated"]
    scl[~valid] = SCL["nodata"]
    layers["SCL"] = Layer(scl[::2, ::2].copy(), 0, gbox20, categorical=True)
    return layers


def _render_usgs(plan: ScenePlan, spec: SampleSpec, ls: dict, fields: dict) -> dict[str, Layer]:
    gbox = _geobox(plan.x0, plan.y0, plan.shape, spec.resolution, plan.epsg)
    names = dict(zip(_LS, ("blue", "green", "red", "nir", "swir_1", "swir_2"), strict=True))
    layers = {}
    for src, band in names.items():
        nbart = ls[src]
        dn = np.rint((nbart.astype(np.float64) / 10_000 - USGS_OFFSET) / USGS_SCALE)
        dn = np.where(nbart == -999, 0, np.clip(dn, 1, 65535)).astype(np.uint16)
        layers[band] = Layer(dn, 0, gbox, scale=USGS_SCALE, offset=USGS_OFFSET)
    layers = {b: layers[b] for b in USGS_BANDS}
    fmask = ls["oa_fmask"]
    cloud = fmask == 2
    qa = np.full(plan.shape, QA["clear"], np.uint16)
    qa[fmask == 5] = QA["water"]
    if plan.pass_index % 3 == 2:
        qa[_stripe(plan, spec.resolution) & (fmask == 1)] = QA["cirrus"]
    ring = ndimage.binary_dilation(cloud, iterations=2) & ~cloud & (fmask != 0)
    qa[ring] = QA["dilated"]
    qa[fmask == 3] = QA["shadow"]
    qa[cloud] = QA["cloud"]
    qa[fmask == 0] = QA["fill"]
    layers["QA_PIXEL"] = Layer(qa, 1, gbox, categorical=True)
    level = np.where(fields["texture"] > 0.8, 2, 1).astype(np.uint8)
    if plan.pass_index % 2 == 1:
        level[_blob(plan, spec.resolution, 900.0)] = 3
    aerosol = (2 | (level << 6)).astype(np.uint8)
    aerosol[fmask == 5] |= 4
    aerosol[fmask == 0] = 1
    layers["SR_QA_AEROSOL"] = Layer(aerosol, 1, gbox, categorical=True)
    return layers


def _render_wofs(plan: ScenePlan, spec: SampleSpec, ls: dict, fields: dict) -> dict[str, Layer]:
    gbox = _geobox(plan.x0, plan.y0, plan.shape, spec.resolution, plan.epsg)
    return {"water": Layer(_wofs_water(plan, ls, fields), WO["nodata"], gbox, categorical=True)}


def _render_fc(plan: ScenePlan, spec: SampleSpec, ls: dict, fields: dict) -> dict[str, Layer]:
    gbox = _geobox(plan.x0, plan.y0, plan.shape, spec.resolution, plan.epsg)
    rng = np.random.default_rng(
        [spec.seed, 12, plan.path, plan.row, plan.acquired.date().toordinal()]
    )
    valid = ls["oa_fmask"] != 0
    pv = np.clip(np.rint(120 * (_ndvi(ls) - 0.1)), 0, 100)
    rest = 100 - pv
    bare_share = np.clip(fields["soil_share"] + fields["urban"], 0, 1)
    bs = np.rint(rest * bare_share)
    npv = rest - bs
    noise = rng.integers(-2, 3, (3, *plan.shape))
    ue = np.clip(np.rint(5 + 12 * np.abs(fields["texture"])), 0, 60)
    layers = {}
    for band, values in zip(
        FC_BANDS, (pv + noise[0], bs + noise[1], npv + noise[2], ue), strict=True
    ):
        data = np.where(valid, np.clip(values, 0, 120), FC_NODATA).astype(np.uint8)
        layers[band] = Layer(data, FC_NODATA, gbox)
    layers["water"] = Layer(_wofs_water(plan, ls, fields), WO["nodata"], gbox, categorical=True)
    return layers


_RENDERERS: dict[str, Callable[[ScenePlan, SampleSpec, dict, dict], dict[str, Layer]]] = {
    "s2_l2a": _render_s2,
    "usgs_c2l2": _render_usgs,
    "wofs": _render_wofs,
    "fc_wo": _render_fc,
}


# --------------------------------------------------------------------------------------------------------------
# writing


def _write_layer(path: Path, layer: Layer, band: str) -> None:
    options = {} if layer.categorical or layer.data.dtype == np.uint8 else {"predictor": 2}
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=layer.data.shape[1],
        height=layer.data.shape[0],
        count=1,
        dtype=layer.data.dtype.name,
        crs=layer.geobox.crs.to_wkt(),
        transform=layer.geobox.transform,
        nodata=layer.nodata,
        compress="DEFLATE",
        level=3,
        blocksize=512,
        overview_resampling="nearest" if layer.categorical else "average",
        **options,
    ) as dst:
        dst.write(layer.data, 1)
        dst.set_band_description(1, band)


_DATA_TYPES = {"uint8": DataType.UINT8, "uint16": DataType.UINT16, "int16": DataType.INT16}


def _make_item(
    plan: ScenePlan, spec: SampleSpec, product: str, scene_dir: Path, layers: Mapping[str, Layer]
) -> pystac.Item:
    geom = footprint(plan, spec).to_crs("EPSG:4326", resolution=5000)
    first = next(iter(layers.values()))
    properties: dict[str, Any] = {
        "platform": spec.platform,
        "constellation": "sentinel-2" if product == "s2_l2a" else "landsat",
        "gsd": spec.resolution,
        "odc:product": spec.collection_id,
        "odc:region_code": plan.region_code,
        "odc:file_format": "GeoTIFF",
        "odc:processing_datetime": _iso(plan.acquired + timedelta(days=14)),
    }
    item = pystac.Item(
        id=plan.item_id,
        geometry=_rounded(geom.json, 7),
        bbox=list(_rounded(list(geom.boundingbox), 7)),
        datetime=plan.acquired,
        properties=properties,
        collection=spec.collection_id,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{plan.epsg}"
    proj.shape = list(first.geobox.shape.yx)
    proj.transform = list(first.geobox.transform)[:6]
    RasterExtension.add_to(item)
    for band, layer in layers.items():
        asset = pystac.Asset(
            href=str(scene_dir / f"{plan.item_id}_{band}.tif"),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title=band,
        )
        asset_proj = ProjectionExtension.ext(asset)
        asset_proj.shape = list(layer.geobox.shape.yx)
        asset_proj.transform = list(layer.geobox.transform)[:6]
        raster = RasterBand.create(
            nodata=layer.nodata,
            data_type=_DATA_TYPES[layer.data.dtype.name],
            spatial_resolution=abs(layer.geobox.resolution.x),
        )
        if layer.scale is not None:
            raster.scale, raster.offset = layer.scale, layer.offset
        RasterExtension.ext(asset).bands = [raster]
        item.add_asset(band, asset)
    return item


def _render_pass(
    product: str, scenes: list[ScenePlan], grid: _GroundFields, spec: SampleSpec, root: Path
) -> list[pystac.Item]:
    sky = _pass_sky(scenes, grid, spec)
    items = []
    for plan in scenes:
        ls = _render_scene(plan, grid, sky, spec)
        fields = _ground_window(plan, grid, spec.resolution)
        layers = _RENDERERS[product](plan, spec, ls, fields)
        scene_dir = root / spec.collection_id / plan.item_id
        scene_dir.mkdir(parents=True)
        for band, layer in layers.items():
            _write_layer(scene_dir / f"{plan.item_id}_{band}.tif", layer, band)
        items.append(_make_item(plan, spec, product, scene_dir, layers))
    return items


def _render_all(product: str, spec: SampleSpec, root: Path, workers: int) -> list[pystac.Item]:
    plans = product_plans(product, spec)
    grids = _ground_grids(plans, spec)
    passes: dict[Any, list[ScenePlan]] = {}
    for plan in plans:
        passes.setdefault(plan.pass_key, []).append(plan)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [
            pool.submit(_render_pass, product, s, grids[s[0].epsg], spec, root)
            for s in passes.values()
        ]
        items = [item for job in jobs for item in job.result()]
    return sorted(items, key=lambda it: (it.datetime, it.id))


def _write_catalog(root: Path, product: str, spec: SampleSpec, items: list[pystac.Item]) -> None:
    bboxes = np.array([it.bbox for it in items])
    extent = pystac.Extent(
        # plain floats: pystac's JSON writer refuses numpy scalars
        pystac.SpatialExtent(
            [[*map(float, bboxes[:, :2].min(axis=0)), *map(float, bboxes[:, 2:].max(axis=0))]]
        ),
        pystac.TemporalExtent([[items[0].datetime, items[-1].datetime]]),
    )
    collection = pystac.Collection(
        id=spec.collection_id,
        description=f"Synthetic {product} sample generated by eostats.sample_products (seed {spec.seed}).",
        extent=extent,
        license="CC-BY-4.0",
        title=f"eostats synthetic {product} sample",
        summaries=pystac.Summaries({"platform": [spec.platform], "gsd": [spec.resolution]}),
    )
    collection.extra_fields["eostats:sample_spec"] = {"product": product, **spec.to_dict()}
    lon0, lat0, lon1, lat1 = spec.bbox
    save_catalog(
        root,
        collection,
        items,
        catalog_id=f"eostats-sample-{product}",
        description=f"eostats synthetic {product} sample, bbox {lon0},{lat0},{lon1},{lat1}",
        collection_id=spec.collection_id,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m eostats.sample_products PRODUCT OUT_DIR``: write a sample collection (for the example configs)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("product", choices=(LANDSAT_ARD, *PRODUCTS))
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    catalog = generate_sample(args.out_dir, {"product": args.product})
    print(catalog)


if __name__ == "__main__":
    main()

"""Synthetic Landsat-like surface-reflectance sample collection (static STAC catalog + COGs).

The collection imitates Digital Earth Australia's Landsat ARD closely enough to exercise the
whole workflow without network access:

* one COG per band per scene: six ``nbart_*`` bands (int16, surface reflectance x 10 000,
  nodata -999), ``oa_fmask`` (uint8, 0 nodata, 1 clear, 2 cloud, 3 cloud shadow, 4 snow,
  5 water) and ``oa_nbart_contiguity`` (uint8, 1 where every ``nbart_*`` band is valid, 0 in the
  collar, nodata 255 as in DEA's product);
* scenes in their own UTM CRS (EPSG:327xx), 30 m north-up pixels, with a valid footprint that
  is a rectangle tilted like a descending Landsat path (~13 degrees) inside a nodata collar;
* two or more overlapping paths (west to east), and on some dates the same path delivered as
  two overlapping rows acquired ~24 s apart (the same solar day, to be fused by the workflow);
  a pass delivered as one scene covers the whole length and is labelled with the north row;
* acquisitions at ~23:5x UTC, i.e. the UTC date is the day before the local (AEST) date; the
  first path always has a scene at ``<first year>-12-31T23:5x`` UTC.

The surface is a fixed field on the ground (the same place looks the same in every scene,
whatever its CRS): mixtures of pasture/crop (with a per-paddock spring phenology on red and
NIR), forest, bare soil, urban surfaces and lakes. Clouds are spatially coherent blobs, shared
by the rows of one pass, with bright reflectance; their shadows are the cloud mask displaced
by ``SampleSpec.shadow_offset_m`` (east, north metres, in the scene CRS) with darkened
reflectance. ``oa_fmask`` is the exact truth of what was generated (precedence: cloud >
shadow > water > clear; snow is never generated).

Everything is deterministic for a given ``SampleSpec`` (byte-identical files for the same seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import Resampling, reproject
from scipy import fft as sfft

from eostats.fileio import remove_stale_temporaries, temporary_sibling_dir

REFLECTANCE_BANDS: tuple[str, ...] = (
    "nbart_blue",
    "nbart_green",
    "nbart_red",
    "nbart_nir",
    "nbart_swir_1",
    "nbart_swir_2",
)
FMASK_BAND = "oa_fmask"
CONTIGUITY_BAND = "oa_nbart_contiguity"
ALL_BANDS: tuple[str, ...] = (*REFLECTANCE_BANDS, FMASK_BAND, CONTIGUITY_BAND)

REFLECTANCE_NODATA = -999
REFLECTANCE_SCALE = 1e-4  # reflectance = DN * scale
FMASK_NODATA = 0
CONTIGUITY_NODATA = 255
FMASK_CODES: dict[str, int] = {
    "nodata": 0,
    "clear": 1,
    "cloud": 2,
    "shadow": 3,
    "snow": 4,
    "water": 5,
}

CATALOG_FILE = "catalog.json"
NDJSON_FILE = "items.ndjson"
ITEM_COLLECTION_FILE = "items.json"

# Spectra in DN (reflectance x 10 000), band order as REFLECTANCE_BANDS.
_GREEN_VEG = np.array([250, 520, 280, 3900, 1700, 750], np.float32)
_DRY_VEG = np.array([480, 720, 950, 2300, 2700, 1800], np.float32)
_FOREST = np.array([220, 420, 270, 2900, 1400, 620], np.float32)
_SOIL = np.array([900, 1250, 1600, 2300, 3100, 2500], np.float32)
_URBAN = np.array([1100, 1200, 1300, 1600, 1900, 1700], np.float32)
_WATER = np.array([560, 500, 300, 150, 80, 50], np.float32)
_CLOUD = np.array([5300, 5100, 5200, 5700, 4300, 3200], np.float32)
# Fraction of the clear-sky signal left in a cloud shadow (diffuse light is bluer).
_SHADOW_FACTOR = np.array([0.5, 0.42, 0.36, 0.3, 0.26, 0.25], np.float32)
# Path haze added in DN at full haze strength (Rayleigh-like: strongest in blue).
_HAZE = np.array([90, 55, 30, 12, 3, 1], np.float32)
# Along-track offset of each band's footprint, in pixels: OLI's detectors for different bands
# look at slightly different places, so band edges differ at the scene's leading and trailing
# edges and the contiguity band is narrower than fmask's valid area there.
_BAND_ALONG_TRACK_OFFSET_PX = (-2, -1, 0, 1, 2, 3)

# Landsat crosses south-eastern Australia at about 09:50 local solar time.
_LOCAL_SOLAR_OVERPASS_S = 9 * 3600 + 50 * 60
_ROW_INTERVAL_S = 24  # between consecutive WRS rows of one path
_REPEAT_CYCLE_DAYS = 16
_ADJACENT_PATH_LAG_DAYS = 7  # the next path east is imaged 7 days later


@dataclass(frozen=True)
class SampleSpec:
    """Parameters of the synthetic collection; the defaults give ~30 x 30 km near Canberra.

    Distances are metres, angles degrees, ``bbox`` is (lon_min, lat_min, lon_max, lat_max) in
    EPSG:4326. The default bbox covers a 3 x 3 block of the default tile grid (EPSG:3577, 30 m,
    512 px tiles).
    """

    seed: int = 42
    bbox: tuple[float, float, float, float] = (148.95, -35.45, 149.25, -35.20)
    years: tuple[int, ...] = (2020, 2021)
    dates_per_year: int = 8  # per path
    paths: tuple[int, ...] = (90, 89)  # WRS-2 paths, listed west to east
    # (path, EPSG code) pairs overriding the UTM zone of the path's centre: path 89 lies in
    # zone 56 in reality, which gives the sample scenes in two CRSs.
    path_epsg: tuple[tuple[int, int], ...] = ((89, 32756),)
    rows: tuple[int, int] = (84, 85)  # north row, south row of a two-row pass
    two_rows_every: int = 3  # every n-th pass of a path is delivered as two rows (0: never)
    resolution: float = 30.0
    tilt_deg: float = 13.0  # clockwise from grid north, of the along-track axis
    swath_fraction: float = 0.7  # across-track width of a path / bbox width
    length_fraction: float = 1.1  # along-track length of a pass / bbox height
    row_overlap_fraction: float = 0.2  # overlap of two rows / pass length
    collar_px: int = 12  # nodata margin around the footprint
    footprint_jitter_m: float = 150.0  # along-track shift of the footprint from pass to pass
    cloud_fraction: float = 0.3  # typical cloud fraction of a partly cloudy pass
    cloud_scale_m: float = 2500.0  # size of cloud blobs
    shadow_offset_m: tuple[float, float] = (-1050.0, -750.0)  # shadow - cloud (east, north)
    landcover_scale_m: float = 1500.0  # size of land cover patches
    paddock_size_m: float = 600.0
    water_fraction: float = 0.04
    noise_dn: float = 25.0  # sensor noise, standard deviation in DN
    collection_id: str = "sample_ls_ard_3"
    item_prefix: str = "sample_ls"
    platform: str = "landsat-8"

    def __post_init__(self) -> None:
        lon0, lat0, lon1, lat1 = self.bbox
        problems = []
        if not (lon0 < lon1 and lat0 < lat1 and lat0 >= -90 and lat1 <= 90):
            problems.append(f"bbox {self.bbox} is not (lon_min, lat_min, lon_max, lat_max)")
        if not self.years:
            problems.append("years is empty")
        if self.dates_per_year < 1:
            problems.append(f"dates_per_year must be >= 1, got {self.dates_per_year}")
        if not self.paths:
            problems.append("paths is empty")
        if self.resolution <= 0:
            problems.append(f"resolution must be > 0, got {self.resolution}")
        if not 0 <= self.cloud_fraction <= 1:
            problems.append(f"cloud_fraction must be in [0, 1], got {self.cloud_fraction}")
        if problems:
            raise ValueError("invalid SampleSpec: " + "; ".join(problems))

    @classmethod
    def tiny(cls, **overrides: Any) -> SampleSpec:
        """A ~6 x 6 km sample (about 200 x 250 px scenes, 10 scenes) for unit tests.

        Centred on the corner of default-grid tiles x275..276, y97..98, so footprints cross
        tile edges in both directions; two paths in two UTM zones, two dates per path per
        year, one two-row pass per path, clear, cloudy and almost fully cloudy passes.
        """
        params: dict[str, Any] = {
            "bbox": (149.122, -35.386, 149.182, -35.338),
            "dates_per_year": 2,
            "cloud_scale_m": 900.0,
            "shadow_offset_m": (-450.0, -300.0),
            "landcover_scale_m": 600.0,
            "paddock_size_m": 300.0,
            "footprint_jitter_m": 60.0,
            "collar_px": 8,
            "water_fraction": 0.06,
        }
        params.update(overrides)
        return cls(**params)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SampleSpec:
        """Build a spec from a (YAML/JSON) mapping; lists become tuples, unknown keys fail."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SampleSpec field(s): {', '.join(unknown)}")
        params: dict[str, Any] = {}
        for key, value in values.items():
            if key == "path_epsg" and isinstance(value, Mapping):
                value = tuple((int(p), int(e)) for p, e in value.items())
            elif key == "path_epsg":
                value = tuple((int(p), int(e)) for p, e in value)
            elif isinstance(value, list):
                value = tuple(value)
            params[key] = value
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class ScenePlan:
    """Where and when one scene is acquired; coordinates in the scene CRS (metres)."""

    item_id: str
    path: int
    row: int
    pass_index: int  # chronological index of the pass within its path
    acquired: datetime  # UTC, timezone-aware
    epsg: int
    center: tuple[float, float]  # centre of the nominal footprint
    length_m: float  # along-track
    width_m: float  # across-track
    x0: float  # left edge of the raster
    y0: float  # top edge of the raster
    shape: tuple[int, int]  # (rows, cols)
    cloud_target: float  # wanted cloud fraction of the pass

    @property
    def region_code(self) -> str:
        return f"{self.path:03d}{self.row:03d}"

    @property
    def pass_key(self) -> tuple[int, date]:
        return (self.path, self.acquired.date())


@dataclass
class _GroundFields:
    """Ground truth fields on a 30 m grid aligned to multiples of the resolution in one CRS."""

    epsg: int
    x0: float
    y0: float
    shape: tuple[int, int]
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    def geobox(self, resolution: float) -> GeoBox:
        transform = Affine(resolution, 0, self.x0, 0, -resolution, self.y0)
        return GeoBox(self.shape, transform, f"EPSG:{self.epsg}")


def generate_sample_collection(
    out_dir: Path, spec: SampleSpec | Mapping | None = None, *, workers: int | None = None
) -> Path:
    """Write the sample collection into ``out_dir`` and return the path of its ``catalog.json``.

    Layout (all hrefs relative, catalog self-contained)::

        out_dir/catalog.json
        out_dir/items.ndjson, out_dir/items.json      # same items, asset hrefs relative to out_dir
        out_dir/<collection_id>/collection.json
        out_dir/<collection_id>/<item_id>/<item_id>.json, <item_id>_<band>.tif

    The collection is built in a temporary directory beside ``out_dir`` and renamed into place,
    so an interrupted run never leaves a partial collection at ``out_dir`` (an existing one is
    replaced only once the new one is complete). ``workers`` threads render passes in
    parallel (default: up to 2, the CPU count permitting); the output does not depend on it.
    """
    spec = _as_spec(spec)
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # a killed generator's staging directory
    staging = temporary_sibling_dir(out_dir)
    # pystac takes a last path component with a dot for a file name: build in a plain one.
    build = staging / "build"
    try:
        build.mkdir()
        _generate_into(build, spec, workers or min(2, os.cpu_count() or 1))
        _replace_dir(build, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / CATALOG_FILE


def plan_scenes(spec: SampleSpec | Mapping | None = None) -> list[ScenePlan]:
    """Every scene of the collection, sorted by acquisition time then id (no pixels made)."""
    spec = _as_spec(spec)
    lon0, lat0, lon1, lat1 = spec.bbox
    lat_mid = (lat0 + lat1) / 2
    width_m = (lon1 - lon0) * 111_320.0 * math.cos(math.radians(lat_mid)) * spec.swath_fraction
    pass_len_m = (lat1 - lat0) * 110_574.0 * spec.length_fraction
    epsg_override = dict(spec.path_epsg)
    along = _along_track_unit(spec.tilt_deg)

    plans: list[ScenePlan] = []
    for path_index, path in enumerate(spec.paths):
        lon_c = lon0 + (path_index + 0.5) / len(spec.paths) * (lon1 - lon0)
        epsg = epsg_override.get(path, _utm_epsg(lon_c, lat_mid))
        cx, cy = (
            Geometry({"type": "Point", "coordinates": [lon_c, lat_mid]}, "EPSG:4326")
            .to_crs(f"EPSG:{epsg}")
            .coords[0]
        )
        overpass_s = (_LOCAL_SOLAR_OVERPASS_S - round(lon_c * 240)) % 86_400
        for pass_index, utc_day in enumerate(_pass_dates(spec, path_index)):
            rng = np.random.default_rng([spec.seed, 4, path, utc_day.toordinal()])
            jitter = rng.uniform(-1, 1) * spec.footprint_jitter_m
            start = datetime.combine(utc_day, time(0), UTC) + timedelta(
                seconds=overpass_s + int(rng.integers(-5, 6))
            )
            cloud_target = _pass_cloud_fraction(spec, pass_index, rng)
            center = (cx + jitter * along[0], cy + jitter * along[1])
            two_rows = spec.two_rows_every > 0 and pass_index % spec.two_rows_every == (
                spec.two_rows_every - 1
            )
            if two_rows:
                row_len = pass_len_m * (1 + spec.row_overlap_fraction) / 2
                shift = (pass_len_m - row_len) / 2
                parts = [
                    (spec.rows[0], +shift, row_len, 0),
                    (spec.rows[1], -shift, row_len, _ROW_INTERVAL_S),
                ]
            else:
                parts = [(spec.rows[0], 0.0, pass_len_m, 0)]
            for row, offset, length, delay in parts:
                row_center = (center[0] + offset * along[0], center[1] + offset * along[1])
                x0, y0, shape = _raster_extent(row_center, length, width_m, spec)
                acquired = start + timedelta(seconds=delay)
                plans.append(
                    ScenePlan(
                        item_id=f"{spec.item_prefix}_{path:03d}{row:03d}_{utc_day:%Y%m%d}",
                        path=path,
                        row=row,
                        pass_index=pass_index,
                        acquired=acquired,
                        epsg=epsg,
                        center=row_center,
                        length_m=length,
                        width_m=width_m,
                        x0=x0,
                        y0=y0,
                        shape=shape,
                        cloud_target=cloud_target,
                    )
                )
    plans.sort(key=lambda p: (p.acquired, p.item_id))
    return plans


def footprint(plan: ScenePlan, spec: SampleSpec, along_offset_m: float = 0.0) -> Geometry:
    """The tilted valid footprint of a scene (in its CRS), optionally shifted along-track."""
    along = _along_track_unit(spec.tilt_deg)
    across = (along[1], -along[0])
    cx = plan.center[0] + along_offset_m * along[0]
    cy = plan.center[1] + along_offset_m * along[1]
    half_l, half_w = plan.length_m / 2, plan.width_m / 2
    corners = [
        (cx + sl * half_l * along[0] + sw * half_w * across[0],
         cy + sl * half_l * along[1] + sw * half_w * across[1])
        for sl, sw in ((1, -1), (1, 1), (-1, 1), (-1, -1), (1, -1))
    ]  # fmt: skip
    return polygon(corners, crs=f"EPSG:{plan.epsg}")


def scene_geobox(plan: ScenePlan, spec: SampleSpec) -> GeoBox:
    """The scene's pixel grid (north-up, ``spec.resolution`` metres, in its UTM CRS)."""
    transform = Affine(spec.resolution, 0, plan.x0, 0, -spec.resolution, plan.y0)
    return GeoBox(plan.shape, transform, f"EPSG:{plan.epsg}")


# --------------------------------------------------------------------------------------------
# planning helpers


def _as_spec(spec: SampleSpec | Mapping | None) -> SampleSpec:
    if spec is None:
        return SampleSpec()
    if isinstance(spec, SampleSpec):
        return spec
    if isinstance(spec, Mapping):
        return SampleSpec.from_mapping(spec)
    raise TypeError(f"spec must be a SampleSpec, a mapping or None, not {type(spec).__name__}")


def _utm_epsg(lon: float, lat: float) -> int:
    zone = int((lon + 180) // 6) % 60 + 1
    return (32700 if lat < 0 else 32600) + zone


def _along_track_unit(tilt_deg: float) -> tuple[float, float]:
    """Unit vector (east, north) pointing up-track, i.e. NNE for a descending pass."""
    t = math.radians(tilt_deg)
    return (math.sin(t), math.cos(t))


def _pass_dates(spec: SampleSpec, path_index: int) -> list[date]:
    """UTC dates of the selected passes of one path, chronological.

    Overpasses repeat every 16 days; the first path's cycle is anchored on 31 December of the
    first year, so that date is always selected. Per year, ``dates_per_year`` passes are picked
    evenly from the last overpass of the year backwards.
    """
    first = min(spec.years)
    anchor = date(first, 12, 31) + timedelta(days=_ADJACENT_PATH_LAG_DAYS * path_index)
    dates: list[date] = []
    for year in sorted(set(spec.years)):
        start, end = date(year, 1, 1), date(year, 12, 31)
        k0 = math.ceil((start - anchor).days / _REPEAT_CYCLE_DAYS)
        k1 = math.floor((end - anchor).days / _REPEAT_CYCLE_DAYS)
        overpasses = [anchor + timedelta(days=_REPEAT_CYCLE_DAYS * k) for k in range(k0, k1 + 1)]
        n = min(spec.dates_per_year, len(overpasses))
        picks = sorted({round(i) for i in np.linspace(len(overpasses) - 1, 0, n)})
        dates.extend(overpasses[i] for i in picks)
    return dates


def _pass_cloud_fraction(spec: SampleSpec, pass_index: int, rng: np.random.Generator) -> float:
    """First pass clear, second almost fully cloudy, third typical; the rest drawn at random."""
    draw = rng.random()
    if pass_index == 0:
        return 0.0
    if pass_index == 1:
        return 0.95
    if pass_index == 2:
        return spec.cloud_fraction
    if draw < 0.25:
        return 0.0
    if draw < 0.4:
        return float(rng.uniform(0.85, 0.98))
    return float(rng.uniform(0.05, min(0.9, 2 * spec.cloud_fraction)))


def _raster_extent(
    center: tuple[float, float], length: float, width: float, spec: SampleSpec
) -> tuple[float, float, tuple[int, int]]:
    """Top-left corner and shape of a raster holding the footprint, every band and a collar."""
    along = _along_track_unit(spec.tilt_deg)
    max_offset = max(abs(o) for o in _BAND_ALONG_TRACK_OFFSET_PX) * spec.resolution
    half_x = abs(along[0]) * (length / 2 + max_offset) + abs(along[1]) * width / 2
    half_y = abs(along[1]) * (length / 2 + max_offset) + abs(along[0]) * width / 2
    res = spec.resolution
    margin = spec.collar_px * res
    x0 = math.floor((center[0] - half_x - margin) / res) * res
    x1 = math.ceil((center[0] + half_x + margin) / res) * res
    y0 = math.floor((center[1] - half_y - margin) / res) * res
    y1 = math.ceil((center[1] + half_y + margin) / res) * res
    return x0, y1, (round((y1 - y0) / res), round((x1 - x0) / res))


# --------------------------------------------------------------------------------------------
# ground truth fields


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], *octaves: tuple[float, float]
) -> np.ndarray:
    """Spatially correlated noise (mean 0, std 1), one Gaussian-filtered white noise field.

    Each octave is (feature size in pixels, weight); octaves share the white noise, are
    normalised separately, weighted and summed. Filtering is done in the Fourier domain
    (periodic edges, which do not matter here) because it costs the same for any feature size.
    """
    white = rng.standard_normal(shape, np.float32)
    spectrum = sfft.rfft2(white)
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    freq2 = (fy * fy + fx * fx).astype(np.float32)
    out = np.zeros(shape, np.float32)
    for size_px, weight in octaves:
        sigma = size_px / 2.5
        field = sfft.irfft2(spectrum * np.exp(-2 * np.pi**2 * sigma**2 * freq2), s=shape)
        field -= field.mean()
        out += np.float32(weight) * (field / (field.std() + 1e-12)).astype(np.float32)
    out -= out.mean()
    return out / (out.std() + 1e-12)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def _master_fields(spec: SampleSpec, grid: _GroundFields) -> None:
    """Land cover fields on the master grid, stored as continuous values (bilinear-safe)."""
    rng = np.random.default_rng([spec.seed, 1])
    shape = grid.shape
    scale = spec.landcover_scale_m / spec.resolution
    relief = _smooth_noise(rng, shape, (3 * scale, 1.0), (scale, 0.35))
    lakes = -relief + 0.4 * _smooth_noise(rng, shape, (scale / 2, 1.0))
    urban = _smooth_noise(rng, shape, (scale, 1.0))
    soil = _smooth_noise(rng, shape, (scale / 2, 1.0))
    q = np.quantile
    grid.fields["water"] = lakes - q(lakes, 1 - spec.water_fraction)  # > 0 is water
    grid.fields["forest"] = _ramp(relief, q(relief, 0.6), q(relief, 0.9)).astype(np.float32)
    grid.fields["urban"] = 0.9 * _ramp(urban, q(urban, 0.85), q(urban, 0.97)).astype(np.float32)
    grid.fields["soil_share"] = np.clip(0.25 + 0.15 * soil, 0.05, 0.6).astype(np.float32)
    grid.fields["texture"] = _smooth_noise(rng, shape, (1.5, 1.0))

    # Paddocks: blocks with their own phenology (peak day of year, amplitude).
    block = max(2, round(spec.paddock_size_m / spec.resolution))
    nby, nbx = (shape[0] // block + 2, shape[1] // block + 2)
    peak = 285 + 30 * rng.standard_normal((nby, nbx)).astype(np.float32)
    amp = rng.uniform(0.3, 1.0, (nby, nbx)).astype(np.float32)
    rows = (np.arange(shape[0]) // block)[:, None]
    cols = (np.arange(shape[1]) // block)[None, :]
    grid.fields["peak_doy"] = peak[rows, cols]
    grid.fields["amplitude"] = amp[rows, cols]


def _ground_grids(plans: list[ScenePlan], spec: SampleSpec) -> dict[int, _GroundFields]:
    """One ground grid per CRS, covering its scenes plus the margin needed by cloud shadows."""
    res = spec.resolution
    shift_px = max(abs(v) for v in spec.shadow_offset_m) / res
    margin = (math.ceil(shift_px) + 2) * res
    grids: dict[int, _GroundFields] = {}
    for epsg in sorted({p.epsg for p in plans}):
        mine = [p for p in plans if p.epsg == epsg]
        x0 = min(p.x0 for p in mine) - margin
        y1 = max(p.y0 for p in mine) + margin
        x1 = max(p.x0 + p.shape[1] * res for p in mine) + margin
        y0 = min(p.y0 - p.shape[0] * res for p in mine) - margin
        shape = (round((y1 - y0) / res), round((x1 - x0) / res))
        grids[epsg] = _GroundFields(epsg, x0, y1, shape)

    master_epsg = _utm_epsg((spec.bbox[0] + spec.bbox[2]) / 2, (spec.bbox[1] + spec.bbox[3]) / 2)
    bounds = [
        g.geobox(res).extent.to_crs(f"EPSG:{master_epsg}").boundingbox for g in grids.values()
    ]
    pad = 20 * res
    mx0 = math.floor((min(b.left for b in bounds) - pad) / res) * res
    mx1 = math.ceil((max(b.right for b in bounds) + pad) / res) * res
    my0 = math.floor((min(b.bottom for b in bounds) - pad) / res) * res
    my1 = math.ceil((max(b.top for b in bounds) + pad) / res) * res
    master = _GroundFields(
        master_epsg, mx0, my1, (round((my1 - my0) / res), round((mx1 - mx0) / res))
    )
    _master_fields(spec, master)

    names = sorted(master.fields)
    src = np.stack([master.fields[n] for n in names])
    src_gbox = master.geobox(res)
    for grid in grids.values():
        dst_gbox = grid.geobox(res)
        dst = np.zeros((len(names), *grid.shape), np.float32)
        reproject(
            src,
            dst,
            src_transform=src_gbox.transform,
            src_crs=src_gbox.crs.to_wkt(),
            dst_transform=dst_gbox.transform,
            dst_crs=dst_gbox.crs.to_wkt(),
            resampling=Resampling.bilinear,
        )
        grid.fields = dict(zip(names, dst, strict=True))
    return grids


# --------------------------------------------------------------------------------------------
# rendering


@dataclass
class _PassSky:
    """Cloud field of one pass on a window of its CRS' ground grid."""

    row0: int  # window origin in ground-grid pixels
    col0: int
    value: np.ndarray  # float32 cloud "density"
    threshold: float  # cloud where value > threshold
    gain: np.ndarray  # per band multiplicative atmospheric error
    haze: np.ndarray  # per band additive path radiance, DN


def _window(plan: ScenePlan, grid: _GroundFields, res: float) -> tuple[int, int]:
    return round((grid.y0 - plan.y0) / res), round((plan.x0 - grid.x0) / res)


def _pass_sky(scenes: list[ScenePlan], grid: _GroundFields, spec: SampleSpec) -> _PassSky:
    res = spec.resolution
    shift = (
        math.ceil(max(abs(v) for v in spec.shadow_offset_m) / res) + 1
    )  # shadows need clouds from outside the scene
    windows = [(*_window(p, grid, res), *p.shape) for p in scenes]
    r0 = max(0, min(w[0] for w in windows) - shift)
    c0 = max(0, min(w[1] for w in windows) - shift)
    r1 = min(grid.shape[0], max(w[0] + w[2] for w in windows) + shift)
    c1 = min(grid.shape[1], max(w[1] + w[3] for w in windows) + shift)
    first = scenes[0]
    rng = np.random.default_rng([spec.seed, 2, first.path, first.acquired.date().toordinal()])
    shape = (r1 - r0, c1 - c0)
    scale = spec.cloud_scale_m / res
    value = _smooth_noise(rng, shape, (scale, 1.0), (scale / 3, 0.45), (max(1.5, scale / 10), 0.15))
    target = first.cloud_target
    if target <= 0:
        threshold = math.inf
    elif target >= 1:
        threshold = -math.inf
    else:
        threshold = float(np.quantile(value, 1 - target))
    gain = (1 + 0.015 * rng.standard_normal(6)).astype(np.float32)
    haze = (rng.uniform(0, 1) * _HAZE).astype(np.float32)
    return _PassSky(r0, c0, value, threshold, gain, haze)


def _local_day_of_year(t: datetime, lon: float) -> int:
    return (t + timedelta(hours=round(lon / 15))).timetuple().tm_yday


def _render_scene(
    plan: ScenePlan, grid: _GroundFields, sky: _PassSky, spec: SampleSpec
) -> dict[str, np.ndarray]:
    """All band arrays of one scene: ``nbart_*`` int16, ``oa_fmask`` and contiguity uint8."""
    res = spec.resolution
    h, w = plan.shape
    r0, c0 = _window(plan, grid, res)
    f = {k: v[r0 : r0 + h, c0 : c0 + w] for k, v in grid.fields.items()}

    # Pixel centres relative to the footprint centre, in along/across-track metres.
    along = _along_track_unit(spec.tilt_deg)
    xs = plan.x0 + (np.arange(w, dtype=np.float64) + 0.5) * res - plan.center[0]
    ys = plan.y0 - (np.arange(h, dtype=np.float64) + 0.5) * res - plan.center[1]
    a = xs[None, :] * along[0] + ys[:, None] * along[1]
    b = np.abs(xs[None, :] * along[1] - ys[:, None] * along[0])
    inside_across = b <= plan.width_m / 2
    half_l = plan.length_m / 2
    valid = inside_across & (np.abs(a) <= half_l)
    band_valid = [
        inside_across & (np.abs(a - o * res) <= half_l) for o in _BAND_ALONG_TRACK_OFFSET_PX
    ]

    # Clouds and shadows from the pass' sky, in ground-grid pixels.
    sr, sc = r0 - sky.row0, c0 - sky.col0
    cloud_value = sky.value[sr : sr + h, sc : sc + w]
    cloud = cloud_value > sky.threshold
    dx_px = round(spec.shadow_offset_m[0] / res)
    dy_px = -round(spec.shadow_offset_m[1] / res)  # rows grow southwards
    shadow_source = sky.value[sr - dy_px : sr - dy_px + h, sc - dx_px : sc - dx_px + w]
    shadow = (shadow_source > sky.threshold) & ~cloud
    water = f["water"] > 0

    lon_center = (spec.bbox[0] + spec.bbox[2]) / 2
    doy = _local_day_of_year(plan.acquired, lon_center)
    season = np.cos(2 * np.pi * (doy - f["peak_doy"]) / 365.25)
    greenness = np.clip(0.5 + 0.5 * f["amplitude"] * season, 0, 1)
    forest_season = 0.08 * math.cos(2 * math.pi * (doy - 300) / 365.25)
    forest = f["forest"]
    urban = np.minimum(f["urban"], 1 - forest)
    rest = 1 - forest - urban
    soil = rest * f["soil_share"]
    pasture = rest - soil
    brightness = 1 + 0.06 * f["texture"]
    # How far into a cloud a pixel is (0 outside clouds, and for a cloud-free sky).
    depth = np.where(cloud, cloud_value - np.float32(min(sky.threshold, 1e30)), 0)
    opacity = np.where(cloud, np.clip(0.45 + depth, 0, 1), 0)

    noise_rng = np.random.default_rng(
        [spec.seed, 3, plan.path, plan.row, plan.acquired.date().toordinal()]
    )
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(REFLECTANCE_BANDS):
        veg = _DRY_VEG[i] + greenness * (_GREEN_VEG[i] - _DRY_VEG[i])
        forest_dn = _FOREST[i] * (1 + (forest_season if i == 3 else -forest_season))
        land = forest * forest_dn + pasture * veg + soil * _SOIL[i] + urban * _URBAN[i]
        surface = np.where(water, _WATER[i] * (1 + 0.08 * f["texture"]), land * brightness)
        surface = np.where(shadow, surface * _SHADOW_FACTOR[i], surface)
        toa = surface * sky.gain[i] + sky.haze[i]
        cloud_dn = _CLOUD[i] * (1 + 0.05 * depth)
        dn = (1 - opacity) * toa + opacity * cloud_dn
        dn = dn + spec.noise_dn * noise_rng.standard_normal((h, w), np.float32)
        dn = np.clip(np.rint(dn), -50, 15_000).astype(np.int16)
        dn[~band_valid[i]] = REFLECTANCE_NODATA
        out[name] = dn

    fmask = np.full((h, w), FMASK_CODES["clear"], np.uint8)
    fmask[water] = FMASK_CODES["water"]
    fmask[shadow] = FMASK_CODES["shadow"]
    fmask[cloud] = FMASK_CODES["cloud"]
    fmask[~valid] = FMASK_NODATA
    out[FMASK_BAND] = fmask
    out[CONTIGUITY_BAND] = np.logical_and.reduce(band_valid).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# writing


def _write_cog(path: Path, data: np.ndarray, gbox: GeoBox, nodata: float, band: str) -> None:
    categorical = data.dtype == np.uint8
    # Horizontal differencing helps smooth reflectance, not class codes.
    predictor = {} if categorical else {"predictor": 2}
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs=gbox.crs.to_wkt(),
        transform=gbox.transform,
        nodata=nodata,
        compress="DEFLATE",
        level=3,  # level 6 costs twice the time for 1 % smaller files on this noisy data
        **predictor,
        blocksize=512,
        overview_resampling="nearest" if categorical else "average",
    ) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, band)


def _fmask_percentages(fmask: np.ndarray) -> dict[str, float]:
    valid = max(int(np.count_nonzero(fmask)), 1)
    names = {"clear": "clear", "cloud": "cloud", "shadow": "cloud_shadow"}
    names |= {"snow": "snow", "water": "water"}
    return {
        f"fmask:{label}": round(100 * int(np.count_nonzero(fmask == FMASK_CODES[k])) / valid, 3)
        for k, label in names.items()
    }


def _raster_band(dtype: str) -> RasterBand:
    if dtype == "int16":
        return RasterBand.create(
            nodata=REFLECTANCE_NODATA,
            data_type=DataType.INT16,
            scale=REFLECTANCE_SCALE,
            offset=0.0,
            spatial_resolution=30.0,
        )
    return RasterBand.create(nodata=FMASK_NODATA, data_type=DataType.UINT8)


def _make_item(
    plan: ScenePlan, spec: SampleSpec, scene_dir: Path, bands: dict[str, np.ndarray]
) -> pystac.Item:
    gbox = scene_geobox(plan, spec)
    geom = footprint(plan, spec).to_crs("EPSG:4326", resolution=5000)
    geojson = _rounded(geom.json, 7)
    percentages = _fmask_percentages(bands[FMASK_BAND])
    properties: dict[str, Any] = {
        "platform": spec.platform,
        "instrument": "OLI_TIRS",
        "instruments": ["oli", "tirs"],
        "constellation": "landsat",
        "gsd": spec.resolution,
        "eo:cloud_cover": percentages["fmask:cloud"],
        **percentages,
        "odc:product": spec.collection_id,
        "odc:product_family": "ard",
        "odc:region_code": plan.region_code,
        "odc:file_format": "GeoTIFF",
        "odc:processing_datetime": _iso(plan.acquired + timedelta(days=14)),
        "landsat:wrs_path": plan.path,
        "landsat:wrs_row": plan.row,
    }
    item = pystac.Item(
        id=plan.item_id,
        geometry=geojson,
        bbox=list(_rounded(list(geom.boundingbox), 7)),
        datetime=plan.acquired,
        properties=properties,
        collection=spec.collection_id,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{plan.epsg}"
    proj.shape = list(plan.shape)
    proj.transform = [float(v) for v in list(gbox.transform)[:6]]
    RasterExtension.add_to(item)
    for band, data in bands.items():
        asset = pystac.Asset(
            href=str(scene_dir / f"{plan.item_id}_{band}.tif"),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title=band,
        )
        raster_band = _raster_band(data.dtype.name)
        if band == CONTIGUITY_BAND:
            raster_band.nodata = CONTIGUITY_NODATA
        RasterExtension.ext(asset).bands = [raster_band]
        item.add_asset(band, asset)
    return item


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rounded(obj: Any, ndigits: int) -> Any:
    """Coordinates rounded (GeoJSON precision ~1 cm), tuples turned into lists."""
    if isinstance(obj, float):  # numpy floats too: JSON writers such as orjson refuse them
        return round(float(obj), ndigits)
    if isinstance(obj, list | tuple):
        return [_rounded(v, ndigits) for v in obj]
    if isinstance(obj, dict):
        return {k: _rounded(v, ndigits) for k, v in obj.items()}
    return obj


def _render_pass(
    scenes: list[ScenePlan], grid: _GroundFields, spec: SampleSpec, root: Path
) -> list[pystac.Item]:
    sky = _pass_sky(scenes, grid, spec)
    items = []
    for plan in scenes:
        bands = _render_scene(plan, grid, sky, spec)
        scene_dir = root / spec.collection_id / plan.item_id
        scene_dir.mkdir(parents=True)
        gbox = scene_geobox(plan, spec)
        for band, data in bands.items():
            nodata = {FMASK_BAND: FMASK_NODATA, CONTIGUITY_BAND: CONTIGUITY_NODATA}.get(
                band, REFLECTANCE_NODATA
            )
            _write_cog(scene_dir / f"{plan.item_id}_{band}.tif", data, gbox, nodata, band)
        items.append(_make_item(plan, spec, scene_dir, bands))
    return items


def _render_all(spec: SampleSpec, root: Path, workers: int) -> list[pystac.Item]:
    """Render every scene; passes run in parallel threads (numpy and GDAL release the GIL).

    Every pass seeds its own random generators, so the result does not depend on the order.
    """
    plans = plan_scenes(spec)
    grids = _ground_grids(plans, spec)
    passes: dict[tuple[int, date], list[ScenePlan]] = {}
    for plan in plans:
        passes.setdefault(plan.pass_key, []).append(plan)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [
            pool.submit(_render_pass, scenes, grids[scenes[0].epsg], spec, root)
            for scenes in passes.values()
        ]
        return [item for job in jobs for item in job.result()]


def _generate_into(root: Path, spec: SampleSpec, workers: int) -> None:
    items = sorted(_render_all(spec, root, workers), key=lambda it: (it.datetime, it.id))
    lon0, lat0, lon1, lat1 = spec.bbox
    bboxes = np.array([it.bbox for it in items])
    extent = pystac.Extent(
        pystac.SpatialExtent([[*bboxes[:, :2].min(axis=0), *bboxes[:, 2:].max(axis=0)]]),
        pystac.TemporalExtent([[items[0].datetime, items[-1].datetime]]),
    )
    collection = pystac.Collection(
        id=spec.collection_id,
        description=(
            "Synthetic Landsat-like surface reflectance (reflectance x 10000, int16, nodata -999)"
            f" with fmask and contiguity layers, generated by eostats.sample (seed {spec.seed})."
        ),
        extent=extent,
        license="CC-BY-4.0",
        title="eostats synthetic Landsat ARD sample",
        summaries=pystac.Summaries(
            {
                "platform": [spec.platform],
                "instruments": ["oli", "tirs"],
                "gsd": [spec.resolution],
                "proj:code": sorted({it.properties["proj:code"] for it in items}),
            }
        ),
    )
    collection.extra_fields["eostats:sample_spec"] = spec.to_dict()
    save_catalog(
        root,
        collection,
        items,
        catalog_id="eostats-sample",
        description=f"eostats synthetic sample, bbox {lon0},{lat0},{lon1},{lat1}",
        collection_id=spec.collection_id,
    )


class _PlainJsonIO(pystac.stac_io.DefaultStacIO):
    """pystac's file IO writing with the stdlib JSON encoder: the same bytes whether or not orjson is installed
    (pystac switches to orjson when it is, and orjson refuses numpy scalars such as odc-geo's bounding boxes)."""

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        return json.dumps(json_dict, indent=2, default=_json_scalar)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_catalog(
    root: Path,
    collection: pystac.Collection,
    items: list[pystac.Item],
    *,
    catalog_id: str,
    description: str,
    collection_id: str,
) -> None:
    """Save a self-contained catalog (catalog → collection → items) under ``root``, plus the same items as NDJSON
    and as an ItemCollection, with asset hrefs relative to ``root``, for the other source types."""
    collection.add_items(items)
    catalog = pystac.Catalog(id=catalog_id, description=description)
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_PlainJsonIO())

    features = []
    for item in items:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        doc["links"] = []
        for band, asset in doc["assets"].items():
            asset["href"] = f"{collection_id}/{item.id}/{item.id}_{band}.tif"
        features.append(doc)
    with open(root / NDJSON_FILE, "w") as fh:
        for doc in features:
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
    with open(root / ITEM_COLLECTION_FILE, "w") as fh:
        json.dump({"type": "FeatureCollection", "features": features}, fh, indent=1)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is removed only after the move."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.rename(new, target)
        return
    old = temporary_sibling_dir(target, kind="old")
    os.rename(target, old / target.name)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)

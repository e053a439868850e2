"""Realistic benchmark inputs: in-memory reflectance stacks, and sample collections on disk.

Stacks (:func:`reflectance_stack`) imitate a Landsat annual stack on one tile: int16 surface reflectance
x 10 000 (nodata -999), dims ``(band, time, y, x)``, 6 bands (blue, green, red, nir, swir1, swir2). The surface
is a smooth mixture of four endmember spectra; each scene has a seasonal greenness factor on red and NIR, a
+-4 % brightness factor, 3 % multiplicative and 0.005 additive noise, 3 % unmasked bright residual clouds and 2 %
unmasked dark shadows (the outliers the geometric median is for), and spatially coherent cloud masks that set
every band to nodata over about 30 % of the observations. Pixels are not georeferenced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from scipy import ndimage

NODATA = -999
SCALE = 1e-4
OFFSET = -1e-4

# endmember spectra in reflectance: vegetation, soil, water, urban (blue, green, red, nir, swir1, swir2)
_ENDMEMBERS = np.array(
    [
        [0.03, 0.06, 0.04, 0.40, 0.20, 0.09],
        [0.09, 0.13, 0.17, 0.24, 0.32, 0.26],
        [0.05, 0.05, 0.03, 0.02, 0.01, 0.005],
        [0.11, 0.12, 0.13, 0.16, 0.19, 0.17],
    ],
    dtype=np.float32,
)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], size_px: float) -> np.ndarray:
    """Spatially correlated noise, mean 0 and std 1, features about ``size_px`` pixels across."""
    coarse_shape = (max(2, int(shape[0] / size_px) + 2), max(2, int(shape[1] / size_px) + 2))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    zoom = (shape[0] / (coarse_shape[0] - 1), shape[1] / (coarse_shape[1] - 1))
    field = ndimage.zoom(coarse, zoom, order=3, grid_mode=False)[: shape[0], : shape[1]]
    field -= field.mean()
    return field / (field.std() + 1e-12)


def reflectance_stack(
    size: int, n_time: int = 40, *, seed: int = 0, cloud_fraction: float = 0.3
) -> np.ndarray:
    """An int16 ``(6, n_time, size, size)`` DN stack with nodata -999 (see the module docstring)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    weights = np.stack([np.exp(1.5 * _smooth_field(rng, shape, 24.0)) for _ in range(4)])
    weights /= weights.sum(axis=0, keepdims=True)
    surface = np.einsum("kyx,kb->byx", weights, _ENDMEMBERS).astype(np.float32)  # (band, y, x)
    veg = weights[0]

    out = np.empty((6, n_time, size, size), dtype=np.int16)
    # per-scene cloud cover: Beta distributed, mean cloud_fraction
    covers = rng.beta(0.6, 0.6 * (1 - cloud_fraction) / max(cloud_fraction, 1e-6), n_time)
    for t in range(n_time):
        season = np.float32(0.25 * np.cos(2 * np.pi * t / n_time))
        brightness = np.float32(1 + rng.uniform(-0.04, 0.04))
        scene = surface * brightness
        scene[2] *= 1 - season * veg  # red falls as vegetation greens up
        scene[3] *= 1 + season * veg  # NIR rises
        scene *= 1 + 0.03 * rng.standard_normal((6, *shape), dtype=np.float32)
        scene += 0.005 * rng.standard_normal((6, *shape), dtype=np.float32)
        draws = rng.random(shape, dtype=np.float32)
        bright = draws < 0.03
        dark = (draws >= 0.03) & (draws < 0.05)
        scene[:, bright] = scene[:, bright] * 0.3 + 0.45
        scene[:, dark] *= 0.35
        dn = np.clip(np.rint(scene * 10_000) + 1, 1, 10_000).astype(np.int16)
        if covers[t] > 0.005:
            field = _smooth_field(rng, shape, 40.0)
            cloud = field > np.quantile(field[::4, ::4], 1 - covers[t])
            dn[:, cloud] = NODATA
        out[:, t] = dn
    return out


# ------------------------------------------------------------------------------------------------------------------
# A sample collection over one tile, on disk


TILE_ORIGIN = (-2688000.0, -5472000.0)  # odc-stats' au_30 origin, EPSG:3577 metres
TILE_POINT_LONLAT = (
    149.10,
    -35.30,
)  # near Canberra: the benchmark tile is the one holding this point
TILE_YEAR = 2021


@dataclass(frozen=True)
class TileCollection:
    """A synthetic collection whose scenes cover one tile, and the cache and task that read it.

    ``ndjson``: the items (asset hrefs relative to its directory); ``grid``: the config mapping of the tile grid
    (EPSG:3577, 30 m, ``tile_px`` pixels per tile); ``task``: the task id of the tile and ``TILE_YEAR``;
    ``n_obs``: solar days of that task; ``n_distinct``: distinct rendered scenes (each is referenced by
    ``n_obs / n_distinct`` items on different days, so the decoding work is that of ``n_obs`` scenes).
    """

    root: Path
    ndjson: Path
    cache: Path
    grid: dict
    task: str
    tile_px: int
    n_obs: int
    n_distinct: int
    scene_px: tuple[int, int]


def tile_grid_mapping(tile_px: int) -> dict:
    return {
        "crs": "EPSG:3577",
        "resolution": 30,
        "tile_size": int(tile_px),
        "origin": list(TILE_ORIGIN),
    }


def _tile_of_point(tile_px: int) -> tuple[object, tuple[int, int]]:
    from odc.geo.geom import point

    from eostats.grids import parse_grid

    grid = parse_grid(tile_grid_mapping(tile_px))
    x, y = point(*TILE_POINT_LONLAT, crs="EPSG:4326").to_crs(grid.crs).coords[0]
    return grid, grid.tile_index(x, y)


def tile_collection(
    workdir: Path, tile_px: int, n_obs: int, n_distinct: int, *, seed: int = 7
) -> TileCollection:
    """Generate (or reuse) a collection of ``n_obs`` observations of one ``tile_px`` tile under ``workdir``.

    Scenes come from :mod:`eostats.sample` (int16 DEFLATE COGs with 512-pixel blocks, fmask and contiguity bands,
    a footprint tilted 13 degrees that leaves some tile corners uncovered, coherent clouds and shadows), one WRS
    path in EPSG:32755. ``n_distinct`` passes are rendered; every rendered scene is listed again on the solar days
    2, 4 and 6 days earlier (new item ids, the same files) until the tile has ``n_obs`` solar days in
    ``TILE_YEAR``. A second call with the same arguments reuses the files.
    """
    import json as _json

    from eostats.cache import build_cache
    from eostats.periods import make_binning
    from eostats.sample import NDJSON_FILE, SampleSpec, generate_sample_collection
    from eostats.sources import read_items

    if n_obs > 4 * n_distinct:
        raise ValueError("at most 4 observations per rendered scene")
    grid, (tx, ty) = _tile_of_point(tile_px)
    lon0, lat0, lon1, lat1 = grid.tile_geobox(tx, ty).extent.to_crs("EPSG:4326").boundingbox
    spec = SampleSpec(
        seed=seed,
        bbox=(lon0, lat0, lon1, lat1),
        years=(TILE_YEAR,),
        dates_per_year=n_distinct
        + 1,  # one spare: the last UTC date of the year is the next local year
        paths=(90,),
        path_epsg=(),
        two_rows_every=0,
        swath_fraction=1.12,
        length_fraction=1.5,
        footprint_jitter_m=600.0,
        cloud_scale_m=4000.0,
        landcover_scale_m=2000.0,
    )
    root = Path(workdir) / f"tile{tile_px}_obs{n_obs}_scenes{n_distinct}_seed{seed}_v2"
    sample = root / "sample"
    if not (sample / "catalog.json").is_file():
        generate_sample_collection(sample, spec)

    ndjson = root / "items.ndjson"
    if not ndjson.is_file():
        lines = (sample / NDJSON_FILE).read_text().splitlines()
        docs = [_json.loads(line) for line in lines if line.strip()]
        docs.sort(key=lambda d: d["properties"]["datetime"])
        copies = []
        for shift in range(4):
            for doc in docs:
                t = datetime.fromisoformat(
                    doc["properties"]["datetime"].replace("Z", "+00:00")
                ) - timedelta(days=2 * shift)
                local_year = (t + timedelta(hours=10)).year
                if local_year != TILE_YEAR:
                    continue
                copy = _json.loads(_json.dumps(doc))
                copy["id"] = f"{doc['id']}_d{shift}"
                copy["properties"]["datetime"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
                for asset in copy["assets"].values():
                    # a hard link per copy: the same bytes under another name, so that no reader can serve a
                    # copy from the decoded blocks of another (GDAL caches blocks per open file)
                    source_file = sample / asset["href"]
                    linked = Path(f"copies/d{shift}") / asset["href"]
                    (root / linked).parent.mkdir(parents=True, exist_ok=True)
                    if not (root / linked).exists():
                        os.link(source_file, root / linked)
                    asset["href"] = str(linked)
                copies.append(copy)
        copies = copies[:n_obs]
        tmp = ndjson.with_suffix(".tmp")
        tmp.write_text("".join(_json.dumps(c, separators=(",", ":")) + "\n" for c in copies))
        tmp.replace(ndjson)

    from eostats.cache import SCHEMA_VERSION

    # the cache's schema version in its name: inputs kept from an older eostats are rebuilt, not misread
    cache = root / f"cache_v{SCHEMA_VERSION}.sqlite"
    source = {"type": "ndjson", "path": str(ndjson)}
    if not cache.is_file():
        build_cache(
            read_items(source),
            grid,
            make_binning(frequency="annual", years=[TILE_YEAR]),
            cache,
            source,
            {},
        )
    from eostats.cache import DatasetCache

    task = f"{TILE_YEAR}--P1Y/{tx}/{ty}"
    with DatasetCache.open(cache) as dc:
        from eostats.taskids import parse_task_id

        record = dc.task(parse_task_id(task))
    first = _json.loads(ndjson.open().readline())
    shape = tuple(first["properties"]["proj:shape"])
    return TileCollection(
        root=root,
        ndjson=ndjson,
        cache=cache,
        grid=tile_grid_mapping(tile_px),
        task=task,
        tile_px=tile_px,
        n_obs=record.n_days_solar,
        n_distinct=n_distinct,
        scene_px=shape,
    )

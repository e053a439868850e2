"""Dataset-cache figures: building from N NDJSON STAC items, and per-task look-ups.

Items imitate DEA Landsat ARD scenes (about 3 KB of JSON each): a ~185 x 170 km footprint tilted 13 degrees
somewhere over Australia (so each touches about nine 96-km ``au_30`` tiles), a time in 1987-2024 (a million
scenes is about what Landsat has taken of Australia: annual tasks then hold ~150-200 datasets), proj and raster
metadata and eight band assets. Generation is not timed.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import Stopwatch, peak_rss_mb, run_child
from benchmarks.report import Row

YEARS = list(range(1987, 2025))
BANDS = (
    "nbart_blue",
    "nbart_green",
    "nbart_red",
    "nbart_nir",
    "nbart_swir_1",
    "nbart_swir_2",
    "oa_fmask",
    "oa_nbart_contiguity",
)


def _item(k: int, rng: random.Random) -> dict[str, Any]:
    lon, lat = rng.uniform(115, 152), rng.uniform(-38, -13)
    half_x, half_y = 0.93 / math.cos(math.radians(lat)) * 0.95, 0.80
    tilt = math.radians(13)
    corners = []
    for sx, sy in ((-1, 1), (1, 1), (1, -1), (-1, -1), (-1, 1)):
        dx, dy = sx * half_x, sy * half_y
        corners.append(
            [
                round(lon + dx * math.cos(tilt) + dy * math.sin(tilt), 6),
                round(lat - dx * math.sin(tilt) + dy * math.cos(tilt), 6),
            ]
        )
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    day = rng.randrange(len(YEARS) * 365)
    t = time.gmtime(536457600 + day * 86400 + rng.randrange(86400))  # from 1987-01-01
    zone = int((lon + 180) // 6) + 1
    path, row = rng.randrange(88, 115), rng.randrange(66, 90)
    name = f"ga_ls8c_ard_3-2-1_{path:03d}{row:03d}_{time.strftime('%Y-%m-%d', t)}_{k:07d}"
    assets = {
        band: {
            "href": f"s3://dea-public-data/baseline/ga_ls8c_ard_3/{path:03d}/{row:03d}/{time.strftime('%Y/%m/%d', t)}/{name}_{band}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "title": band,
            "raster:bands": [
                {
                    "nodata": -999 if band.startswith("nbart") else 0,
                    "data_type": "int16" if band.startswith("nbart") else "uint8",
                }
            ],
        }
        for band in BANDS
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
        "id": name,
        "collection": "ga_ls8c_ard_3",
        "geometry": {"type": "Polygon", "coordinates": [corners]},
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "properties": {
            "datetime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", t),
            "platform": "landsat-8",
            "instruments": ["oli", "tirs"],
            "eo:cloud_cover": round(rng.uniform(0, 100), 3),
            "proj:code": f"EPSG:{32700 + zone}",
            "proj:shape": [7811, 7681],
            "proj:transform": [
                30.0,
                0.0,
                rng.randrange(200000, 300000),
                0.0,
                -30.0,
                rng.randrange(6000000, 8000000),
                0.0,
                0.0,
                1.0,
            ],
            "landsat:wrs_path": path,
            "landsat:wrs_row": row,
            "odc:region_code": f"{path:03d}{row:03d}",
            "odc:product": "ga_ls8c_ard_3",
            "dea:dataset_maturity": "final",
        },
        "assets": assets,
        "links": [],
    }


def make_ndjson(path: str, n_items: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    out = Path(path)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for k in range(n_items):
            fh.write(json.dumps(_item(k, rng), separators=(",", ":")) + "\n")
    tmp.replace(out)
    return {"bytes": out.stat().st_size}


def build(ndjson: str, cache: str, parallel: bool = True) -> dict[str, Any]:
    """build_cache from the file: through :class:`eostats.cache.NdjsonItems` (worker processes) or, with
    ``parallel=False``, through ``eostats.sources.read_items`` (one process)."""
    from eostats.cache import NdjsonItems, build_cache
    from eostats.grids import parse_grid
    from eostats.periods import make_binning
    from eostats.sources import read_items

    source = {"type": "ndjson", "path": ndjson}
    grid = parse_grid("au_30")
    binning = make_binning(frequency="annual", years=YEARS)
    items = NdjsonItems(ndjson, parallel_min_bytes=0) if parallel else read_items(source)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Stopwatch() as sw:
        summary = build_cache(items, grid, binning, Path(cache), source, {})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        **sw.as_dict(),
        "workers_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "items": summary.n_items,
        "tasks": summary.n_tasks,
        "datasets": summary.n_datasets,
        "peak_mb": peak_rss_mb(),
    }


def lookup(cache: str, n: int = 500, seed: int = 2) -> dict[str, Any]:
    from eostats.cache import DatasetCache

    with Stopwatch() as sw_open:
        dc = DatasetCache.open(cache)
    tasks = dc.task_ids()
    rng = random.Random(seed)
    sample = [rng.choice(tasks) for _ in range(n)]
    times_ids, times_docs, counts = [], [], []
    for task in sample:
        t0 = time.perf_counter()
        dc.dataset_ids(task)
        t1 = time.perf_counter()
        docs = dc.datasets(task)
        t2 = time.perf_counter()
        times_ids.append(t1 - t0)
        times_docs.append(t2 - t1)
        counts.append(len(docs))
    times_ids.sort()
    times_docs.sort()
    return {
        "open_s": sw_open.wall_s,
        "ids_ms_p50": 1e3 * times_ids[n // 2],
        "ids_ms_p99": 1e3 * times_ids[int(0.99 * (n - 1))],
        "docs_ms_p50": 1e3 * times_docs[n // 2],
        "docs_ms_p99": 1e3 * times_docs[int(0.99 * (n - 1))],
        "docs_ms_max": 1e3 * times_docs[-1],
        "datasets_per_task": sum(counts) / n,
    }


def cache_figures(workdir: Path, n_items: int, threads: int, sequential: bool = True) -> list[Row]:
    ndjson = workdir / f"items_{n_items}_v2.ndjson"
    if not ndjson.is_file():
        run_child("cachebench:make_ndjson", path=str(ndjson), n_items=n_items)
    cache = workdir / f"cache_{n_items}_v2.sqlite"  # rebuilt by every run
    # read once, untimed: the figure is the build's own speed, not this machine's disk (earlier figures can evict
    # the 3 GB file from the page cache; a cold read made the build ~25 % slower here)
    with open(ndjson, "rb") as fh:
        while fh.read(64 * 2**20):
            pass
    built = run_child("cachebench:build", threads=threads, ndjson=str(ndjson), cache=str(cache))
    rate = built["items"] / built["wall_s"]
    cpu = built["cpu_s"] + built["workers_cpu_s"]
    size_mb = ndjson.stat().st_size / 2**20
    rows = [
        Row(
            f"cache build, {built['items']:,} NDJSON items",
            rate,
            None,
            "≥ 20,000 items/s",
            rate >= 20_000,
            f"NdjsonItems (worker processes); {size_mb:,.0f} MiB (in the page cache), {built['tasks']:,} tasks, wall {built['wall_s']:.1f} s, "
            f"CPU {cpu:.1f} s ({1e6 * cpu / built['items']:.0f} µs/item: {built['cpu_s']:.1f} s building process + "
            f"{built['workers_cpu_s']:.1f} s workers), peak RSS {built['peak_mb']:,.0f} MiB",
            unit="items/s",
        )
    ]
    if sequential:
        seq = run_child(
            "cachebench:build",
            threads=threads,
            ndjson=str(ndjson),
            cache=str(cache),
            parallel=False,
        )
        rows.append(
            Row(
                "cache build, one process (read_items)",
                seq["items"] / seq["wall_s"],
                None,
                "(reference)",
                None,
                f"the sequential path the dict API takes: wall {seq['wall_s']:.1f} s, CPU {seq['cpu_s']:.1f} s",
                unit="items/s",
            )
        )
    looked = run_child("cachebench:lookup", cache=str(cache))
    rows.append(
        Row(
            "per-task look-up (dataset_ids(), p99)",
            looked["ids_ms_p99"],
            None,
            "< 10 ms",
            looked["ids_ms_p99"] < 10,
            f"{looked['datasets_per_task']:.0f} datasets per task on average; open {1e3 * looked['open_s']:.0f} ms",
            unit="ms",
        )
    )
    rows.append(
        Row(
            "per-task documents (datasets(), p99)",
            looked["docs_ms_p99"],
            None,
            "(report)",
            None,
            f"decompress + parse every item JSON: p50 {looked['docs_ms_p50']:.2f} ms, max {looked['docs_ms_max']:.1f} ms",
            unit="ms",
        )
    )
    return rows

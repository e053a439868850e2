"""Tile figures: decoding a tile's inputs, clear counts, a whole geomedian tile, and peak memory by chunk size.

Inputs are :func:`benchmarks.inputs.tile_collection` collections (COGs on disk). "Decode" is the reference cost:
reading, with the same number of threads, every input band of every dataset of the task over the tile's
footprint in the scene's own pixels (no masking, no resampling). "Tile" is :func:`eostats.tile.compute_tile`
(load, mask, fuse, reproject, reduce; writing the COGs is reported separately).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.measure import Stopwatch, run_child
from benchmarks.report import Row

GM_CLOUD_FILTERS = {"cloud": [["opening", 3], ["dilation", 6]], "shadow": [["dilation", 6]]}


def _run(collection: dict, plugin: str, chunk: int, results: str):
    from eostats.config import validate_config
    from eostats.workflow import Run

    config = {
        "results": results,
        "run_name": "bench",
        "source": {"type": "ndjson", "path": collection["ndjson"]},
        "grid": collection["grid"],
        "frequency": "annual",
        "years": [int(collection["task"][:4])],
        "plugin": plugin,
        "product": {
            "name": f"bench_{plugin.replace('-', '_')}",
            "short_name": "bench",
            "version": "0.1.0",
        },
    }
    if chunk:
        config["chunk_size"] = chunk
    if plugin == "gm-ls":
        config["plugin_config"] = {"cloud_filters": GM_CLOUD_FILTERS}
    return Run(validate_config(config))


def _task_items(collection: dict) -> list[dict]:
    from eostats.cache import DatasetCache
    from eostats.taskids import parse_task_id

    with DatasetCache.open(collection["cache"]) as cache:
        return cache.datasets(parse_task_id(collection["task"]))


def decode(
    collection: dict, bands: list[str], io_threads: int, direct: bool = False
) -> dict[str, Any]:
    """Read every band of every dataset over the tile (native pixels), ``threads`` files at a time: with rasterio
    (``rasterio.open``, ``read``: how odc-stac and odc-stats read them), or with ``direct``, through GDAL's C API as
    the tile job reads local files (:mod:`eostats.rasterfile`)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window, from_bounds

    from eostats.grids import parse_grid
    from eostats.rasterfile import open_raster
    from eostats.taskids import parse_task_id

    items = _task_items(collection)
    task = parse_task_id(collection["task"])
    tile = parse_grid(collection["grid"]).tile_geobox(task.x, task.y)
    jobs = [
        (item["assets"][band]["href"], item["properties"]["proj:code"])
        for item in items
        for band in bands
    ]

    bboxes = {crs: tile.extent.to_crs(crs).boundingbox for crs in {crs for _, crs in jobs}}

    def window(src: Any, crs: str) -> tuple[int, int, int, int]:
        win = from_bounds(*bboxes[crs], transform=src.transform)
        col0, row0 = max(0, math.floor(win.col_off)), max(0, math.floor(win.row_off))
        col1 = min(src.width, math.ceil(win.col_off + win.width))
        row1 = min(src.height, math.ceil(win.row_off + win.height))
        return row0, row1, col0, col1

    def read(job: tuple[str, str]) -> int:
        href, crs = job
        with rasterio.open(href) as src:
            row0, row1, col0, col1 = window(src, crs)
            data = src.read(1, window=Window(col0, row0, col1 - col0, row1 - row0))
        return data.nbytes

    def read_direct(job: tuple[str, str]) -> int:
        href, crs = job
        src = open_raster(href)
        try:
            row0, row1, col0, col1 = window(src, crs)
            data = np.empty((row1 - row0, col1 - col0), src.dtype)
            src.read(slice(row0, row1), slice(col0, col1), data)
        finally:
            src.close()
        return data.nbytes

    reader = read_direct if direct else read
    reader(jobs[0])  # GDAL's first open initialises drivers
    with Stopwatch() as sw, ThreadPoolExecutor(io_threads) as pool:
        nbytes = sum(pool.map(reader, jobs))
    return {**sw.as_dict(), "files": len(jobs), "mbytes": nbytes / 2**20}


def odc_stac_load(collection: dict, bands: list[str], dask_threads: int) -> dict[str, Any]:
    """odc-stac's load of ``bands`` onto the tile (solar-day groups, nearest, ``dask_threads`` threads): how
    odc-stats' plugins receive their inputs, before any masking or reduction."""
    import dask
    import odc.stac
    import pystac

    from eostats.grids import parse_grid
    from eostats.taskids import parse_task_id

    items = [pystac.Item.from_dict(item) for item in _task_items(collection)]
    task = parse_task_id(collection["task"])
    tile = parse_grid(collection["grid"]).tile_geobox(task.x, task.y)
    _warm_up()
    with Stopwatch() as sw, dask.config.set(scheduler="threads", num_workers=dask_threads):
        loaded = odc.stac.load(
            items,
            bands=bands,
            geobox=tile,
            groupby="solar_day",
            resampling="nearest",
            chunks={"x": tile.shape.x, "y": tile.shape.y},
        )
        loaded.load()
    return sw.as_dict()


def tile(
    collection: dict, plugin: str, chunk: int, job_threads: int, results: str
) -> dict[str, Any]:
    """:func:`eostats.tile.compute_tile` of the collection's task; then its COGs written (timed apart)."""
    from eostats.cache import DatasetCache
    from eostats.taskids import parse_task_id
    from eostats.tile import compute_tile, write_tile

    run = _run(collection, plugin, chunk, results)
    task = parse_task_id(collection["task"])
    _warm_up()
    with DatasetCache.open(collection["cache"]) as cache:
        _ = run.plugin, run.grid  # config objects outside the timing
        with Stopwatch() as sw:
            data, info = compute_tile(run, cache, task, job_threads)
        from benchmarks.measure import peak_rss_mb

        peak = peak_rss_mb()
        with Stopwatch() as sw_write:
            write_tile(run, task, data, cache.dataset_ids(task))
    return {
        **sw.as_dict(),
        "peak_compute_mb": peak,
        "write_wall_s": sw_write.wall_s,
        "timings": info["timings"],
        "blocks": info["blocks"],
        "observations": info["observations"],
        "read_cpu": info.get("read_cpu_seconds", {}),
    }


def _warm_up() -> None:
    """Imports and JIT compilation of what a tile job runs, outside the timing (one-off costs per process)."""
    import dask.array  # noqa: F401
    import numpy as np
    import pystac
    import rasterio
    import rasterio.io
    from odc.geo.crs import CRS
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    from eostats.kernels.classmask import PackedClassMask
    from eostats.kernels.clearcount import ClearCounter, ClearCountRecipe, gather_counts
    from eostats.kernels.geomedian import geomedian_mads
    from eostats.kernels.warp import nearest_index, pixel_map, warp_bilinear, warp_nearest
    from eostats.rasterfile import direct_gdal_available

    box = GeoBox.from_bbox((600000, 6000000, 600300, 6000300), "EPSG:32755", resolution=30)
    dst = GeoBox.from_bbox(box.extent.to_crs("EPSG:3577").boundingbox, "EPSG:3577", resolution=30)
    mapping = pixel_map(box, dst)
    xr_coords(dst)  # xarray's and pyproj's CF paths on their first use (~2 ms)
    for dtype in ("int16", "uint8", "uint16"):
        data = np.zeros((10, 10), dtype)
        warp_bilinear(data, mapping, dst.shape.yx, 0)
        warp_nearest(data, mapping, dst.shape.yx, None)
    geomedian_mads(np.ones((6, 3, 2, 2), np.int16), nodata=-999, scale=1e-4, offset=-1e-4)
    # GDAL's drivers and its PROJ database initialise on the first open of a georeferenced file (the decode figure
    # opens one of its files before its timing too), and pystac imports its extension hooks on the first item it
    # parses
    with rasterio.io.MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=8,
            height=8,
            count=1,
            dtype="uint8",
            crs=box.crs.to_wkt(),
            transform=box.transform,
        ) as dst_file:
            dst_file.write(np.zeros((1, 8, 8), np.uint8))
        with mem.open() as src_file:
            src_file.read(1)
            _ = CRS(src_file.crs.to_wkt()) == box.crs
    direct_gdal_available()  # GDAL's C API looked up once
    pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": "warm-up",
            "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"},
            "links": [],
            "assets": {},
        }
    )
    # the benchmark's class masks: three codes off the common entry (each count of codes compiles apart)
    chain = [("opening", 1), ("dilation", 1)]
    packed = PackedClassMask([0], [([2], chain), ([3], chain)], np.uint8, (10, 10))
    packed.erase(
        np.ones((1, 10, 10), np.uint8),
        np.ones((1, 10, 10), np.uint8),
        [(np.zeros((1, 10, 10), np.int16), -999)],
    )
    recipe = ClearCountRecipe("fmask", (0,), (2, 3), {"f": chain})
    counter = ClearCounter(recipe, (10, 10), np.dtype("uint8"))
    counter.add_observation(np.ones((10, 10), np.uint8))
    counter.end_day()
    counter.counts()
    gather_counts([counter], nearest_index(box, dst, ClearCounter.row_stride(box.shape.x)))


def read_only(
    collection: dict, plugin: str, chunk: int, job_threads: int, results: str
) -> dict[str, Any]:
    """The tile's input pipeline alone (decode, mask, fuse, reproject every block; no reduction)."""
    from eostats.cache import DatasetCache
    from eostats.loading import TaskReader
    from eostats.taskids import parse_task_id
    from eostats.tile import _blocks

    run = _run(collection, plugin, chunk, results)
    task = parse_task_id(collection["task"])
    box = run.grid.tile_geobox(task.x, task.y)
    _warm_up()
    with DatasetCache.open(collection["cache"]) as cache:
        items = cache.datasets(task)
    size = int(run.config["chunk_size"])
    with Stopwatch() as sw, TaskReader(items, box, run.plugin, threads=job_threads) as reader:
        for ys, xs in _blocks(box.shape.yx, size):
            reader.read(ys, xs)
    return {**sw.as_dict(), "read_cpu": reader.cpu_seconds}


def kernel_on_tile(collection: dict, job_threads: int, results: str) -> dict[str, Any]:
    """The gm-ls reduction alone on the whole tile's loaded observations (its inputs loaded first, untimed)."""
    import numba

    from eostats.cache import DatasetCache
    from eostats.loading import load_task
    from eostats.taskids import parse_task_id

    run = _run(collection, "gm-ls", 0, results)
    task = parse_task_id(collection["task"])
    tile_box = run.grid.tile_geobox(task.x, task.y)
    with DatasetCache.open(collection["cache"]) as cache:
        items = cache.datasets(task)
    size = max(tile_box.shape.yx)
    block = load_task(items, tile_box, run.plugin, chunk_size=size).compute(
        scheduler="threads", num_workers=job_threads
    )
    numba.set_num_threads(job_threads)
    run.plugin.reduce(block.isel(y=slice(0, 16), x=slice(0, 16)))  # JIT warm-up
    with Stopwatch() as sw:
        run.plugin.reduce(block)
    return sw.as_dict()


# ------------------------------------------------------------------------------------------------------------------
# figures

GM_BANDS = [
    "nbart_blue",
    "nbart_green",
    "nbart_red",
    "nbart_nir",
    "nbart_swir_1",
    "nbart_swir_2",
    "oa_fmask",
    "oa_nbart_contiguity",
]


def _collection(workdir: Path, tile_px: int, n_obs: int, n_distinct: int) -> dict:
    info = run_child(
        "tiles:make_collection",
        workdir=str(workdir),
        tile_px=tile_px,
        n_obs=n_obs,
        n_distinct=n_distinct,
    )
    return info


def make_collection(workdir: str, tile_px: int, n_obs: int, n_distinct: int) -> dict[str, Any]:
    from benchmarks.inputs import tile_collection

    tc = tile_collection(Path(workdir), tile_px, n_obs, n_distinct)
    return {
        "ndjson": str(tc.ndjson),
        "cache": str(tc.cache),
        "grid": tc.grid,
        "task": tc.task,
        "tile_px": tc.tile_px,
        "n_obs": tc.n_obs,
        "n_distinct": tc.n_distinct,
        "scene_px": list(tc.scene_px),
    }


def _median_round(rounds: list[dict], key: str) -> tuple[dict, list[float]]:
    """The round whose ``key`` ratio is the median (the lower middle one of an even count), and every ratio."""
    ratios = [r[key] for r in rounds]
    order = sorted(range(len(rounds)), key=ratios.__getitem__)
    return rounds[order[(len(order) - 1) // 2]], ratios


def _tile_rows(
    name: str,
    coll: dict,
    plugin: str,
    bands: list[str],
    workdir: Path,
    threads: int,
    with_kernel: bool,
    rounds: int = 1,
) -> list[Row]:
    """Tile wall against its references. The four measurements (decode, input pipeline, kernel, tile) run one after
    the other, ``rounds`` times; each round gives its ratios, and the row reports the round with the median ratio
    (this machine's speed drifts by 20-30 % over minutes, so single measurements make a near-target ratio a coin
    flip; alternating rounds keep each ratio's two sides close in time)."""
    results = str(workdir / "results")
    common = {
        "collection": coll,
        "plugin": plugin,
        "chunk": 0,
        "job_threads": threads,
        "results": results,
    }
    measured = []
    for _ in range(rounds):
        dec = run_child(
            "tiles:decode", threads=threads, collection=coll, bands=bands, io_threads=threads
        )
        direct = run_child(
            "tiles:decode",
            threads=threads,
            collection=coll,
            bands=bands,
            io_threads=threads,
            direct=True,
        )
        inputs = run_child("tiles:read_only", threads=threads, **common)
        ker = None
        if with_kernel:
            ker = run_child(
                "tiles:kernel_on_tile",
                threads=threads,
                collection=coll,
                job_threads=threads,
                results=results,
            )
        tl = run_child("tiles:tile", threads=threads, **common)
        stac = None
        if not with_kernel:
            stac = run_child(
                "tiles:odc_stac_load",
                threads=threads,
                collection=coll,
                bands=bands,
                dask_threads=threads,
            )
        kernel_wall = ker["wall_s"] if ker else 0.0
        strict = dec["wall_s"] + kernel_wall
        loose = inputs["wall_s"] + kernel_wall
        measured.append(
            {
                "dec": dec,
                "direct": direct,
                "direct_ratio": tl["wall_s"] / (direct["wall_s"] + kernel_wall),
                "inputs": inputs,
                "ker": ker,
                "tl": tl,
                "stac": stac,
                "strict": strict,
                "loose": loose,
                "strict_ratio": tl["wall_s"] / strict,
                "loose_ratio": tl["wall_s"] / loose,
                "stac_ratio": tl["wall_s"] / stac["wall_s"] if stac else None,
            }
        )
    chosen, strict_ratios = _median_round(measured, "strict_ratio")
    loose_round, loose_ratios = _median_round(measured, "loose_ratio")
    dec, ker, tl, strict = chosen["dec"], chosen["ker"], chosen["tl"], chosen["strict"]
    inputs, loose, tl_loose = loose_round["inputs"], loose_round["loose"], loose_round["tl"]

    def spread(ratios: list[float]) -> str:
        if len(ratios) < 2:
            return ""
        return f"median of {len(ratios)} rounds (ratios {', '.join(f'{r:.2f}' for r in ratios)}); "

    stages = ", ".join(f"{k} {v:.1f}" for k, v in tl["read_cpu"].items())
    size = f"{coll['tile_px']}² tile, {coll['n_obs']} obs, {len(bands)} band(s), {tl['blocks']} block(s)"
    kernel_note = f" + kernel {ker['wall_s']:.2f} s ({ker['cpu_s']:.2f} CPU-s)" if ker else ""
    target = 1.2 if with_kernel else 1.3
    what = "decode + kernel" if with_kernel else "decode"
    direct_round, direct_ratios = _median_round(measured, "direct_ratio")
    direct = direct_round["direct"]
    direct_kernel = direct_round["ker"]["wall_s"] if with_kernel else 0.0
    rows = [
        Row(
            f"{name} tile wall vs {what}, decode through GDAL's C API",
            direct_round["tl"]["wall_s"],
            direct["wall_s"] + direct_kernel,
            "(context)",
            None,
            f"{spread(direct_ratios)}the decode as the tile job reads local files (eostats.rasterfile: GDAL's "
            f"open and RasterIO through ctypes, no rasterio objects): {direct['wall_s']:.3f} s "
            f"({direct['cpu_s']:.2f} CPU-s); the row above decodes with rasterio, as odc-stac and odc-stats read",
            unit="s",
        )
    ]
    if not with_kernel:
        stac_round, stac_ratios = _median_round(measured, "stac_ratio")
        stac = stac_round["stac"]
        rows.append(
            Row(
                f"{name} tile wall vs odc-stac load of its band(s)",
                stac_round["tl"]["wall_s"],
                stac["wall_s"],
                "(context)",
                None,
                f"{spread(stac_ratios)}odc-stac's load onto the tile grid (solar days, nearest, "
                f"{threads} dask threads) is how odc-stats' plugins receive their inputs, before any "
                f"masking or counting: {stac['wall_s']:.2f} s ({stac['cpu_s']:.2f} CPU-s)",
                unit="s",
            )
        )
    return [
        Row(
            f"{name} tile wall vs {what}",
            tl["wall_s"],
            strict,
            f"≤ {target}",
            tl["wall_s"] <= target * strict,
            f"{spread(strict_ratios)}{size}; decode {dec['wall_s']:.2f} s ({dec['cpu_s']:.2f} CPU-s, "
            f"{dec['files']} files){kernel_note}; tile CPU {tl['cpu_s']:.2f} s (reading threads, CPU-s: {stages}); "
            f"write {tl['write_wall_s']:.2f} s extra",
            unit="s",
        ),
        Row(
            f"{name} tile wall vs input pipeline{' + kernel' if with_kernel else ''}",
            tl_loose["wall_s"],
            loose,
            f"≤ {target}" if with_kernel else "(context)",
            tl_loose["wall_s"] <= target * loose if with_kernel else None,
            f"{spread(loose_ratios)}input pipeline = decode, mask, fuse and reproject every block without reducing: "
            f"{inputs['wall_s']:.2f} s ({inputs['cpu_s']:.2f} CPU-s)"
            + (
                ""
                if with_kernel
                else "; the counting tile does not take this path (it counts on native pixels and "
                "reprojects the counts), so this row is context only"
            ),
            unit="s",
        ),
    ] + rows


def clear_count_figures(
    workdir: Path, tile_px: int, n_obs: int, n_distinct: int, threads: int, rounds: int = 1
) -> list[Row]:
    coll = _collection(workdir, tile_px, n_obs, n_distinct)
    return _tile_rows(
        "clear counts (pq)",
        coll,
        "pq",
        ["oa_fmask"],
        workdir,
        threads,
        with_kernel=False,
        rounds=rounds,
    )


def whole_tile_figures(
    workdir: Path, tile_px: int, n_obs: int, n_distinct: int, threads: int, rounds: int = 1
) -> list[Row]:
    """gm-ls tile wall vs decoding its inputs plus the geomedian kernel alone (target: at most 20 % more)."""
    coll = _collection(workdir, tile_px, n_obs, n_distinct)
    return _tile_rows(
        "geomedian (gm-ls)",
        coll,
        "gm-ls",
        GM_BANDS,
        workdir,
        threads,
        with_kernel=True,
        rounds=rounds,
    )


def memory_figures(
    workdir: Path, tile_px: int, n_obs: int, n_distinct: int, threads: int, chunks: list[int]
) -> list[Row]:
    """Peak RSS of a gm-ls tile (compute, before writing) with default chunking and with other chunk sizes."""
    coll = _collection(workdir, tile_px, n_obs, n_distinct)
    results = str(workdir / "results")
    rows = []
    for chunk in [0, *chunks]:
        tl = run_child(
            "tiles:tile",
            threads=threads,
            collection=coll,
            plugin="gm-ls",
            chunk=chunk,
            job_threads=threads,
            results=results,
        )
        input_mb = 6 * coll["n_obs"] * tile_px * tile_px * 2 / 2**20
        if chunk == 0:
            rows.append(
                Row(
                    f"peak RSS, {tile_px}² gm-ls tile, default chunks",
                    tl["peak_compute_mb"],
                    None,
                    "≤ 4096 MiB",
                    tl["peak_compute_mb"] <= 4096,
                    f"{coll['n_obs']} obs (6 bands: {input_mb:,.0f} MiB as int16), {tl['blocks']} blocks of 1024 px, wall {tl['wall_s']:.1f} s",
                    unit="MiB",
                )
            )
        else:
            rows.append(
                Row(
                    f"peak RSS, chunk_size {chunk}",
                    tl["peak_compute_mb"],
                    None,
                    "(scaling)",
                    None,
                    f"{tl['blocks']} blocks, wall {tl['wall_s']:.1f} s, CPU {tl['cpu_s']:.1f} s",
                    unit="MiB",
                )
            )
    return rows

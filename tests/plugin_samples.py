"""Helpers for the plugin families' workflow-level tests: product samples, one task run through the tile runner,
and an independent look-up of scene pixels at tile pixel centres.

A test module makes the samples available with a fixture of its own::

    @pytest.fixture(scope="module")
    def product_sample(tmp_path_factory):
        return product_samples(tmp_path_factory)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer

from eostats.cache import DatasetCache, build_cache
from eostats.config import validate_config
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.sample_products import generate_product_sample
from eostats.sources import read_items
from eostats.taskids import TaskId
from eostats.tile import TileReport, run_tile
from eostats.workflow import Run

#: 10 m and 30 m test grids: small tiles in Australian Albers, on au_30's origin
GRID_10 = {"crs": "EPSG:3577", "resolution": 10, "tile_size": 128, "origin": [-2688000, -5472000]}
GRID_30 = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 128, "origin": [-2688000, -5472000]}


_MADE: dict[tuple[Path, str], Path] = {}


def product_samples(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``get("s2_l2a")`` → the ``catalog.json`` of that product's default sample, made once per test session
    (shared by every module through the session's base temporary directory)."""
    base = tmp_path_factory.getbasetemp()

    def get(product: str) -> Path:
        key = (base, product)
        if key not in _MADE:
            _MADE[key] = generate_product_sample(base / "product_samples" / product, product)
        return _MADE[key]

    return get


def build_task_cache(
    catalog: Path, grid: Mapping, path: Path, source: Mapping | None = None, **binning: Any
) -> DatasetCache:
    """A dataset cache of ``catalog`` (or of ``source``) on ``grid``; ``binning``: ``make_binning`` keywords
    (default annual)."""
    source = dict(source or {"type": "stac_catalog", "path": str(catalog)})
    binning = binning or {"frequency": "annual"}
    build_cache(
        read_items(source), parse_grid(dict(grid)), make_binning(**binning), path, source, {}
    )
    return DatasetCache.open(path)


def busiest_task(cache: DatasetCache, period: str | None = None) -> TaskId:
    """The task with the most solar days (ties: the most datasets, then the first)."""
    records = [r for r in cache.tasks() if period is None or r.task_id.period == period]
    return max(records, key=lambda r: (r.n_days_solar, r.n_datasets)).task_id


def make_run(
    results: Path, grid: Mapping, plugin: str, plugin_config: Mapping | None = None, **extra: Any
) -> Run:
    config = {
        "results": str(results),
        "grid": dict(grid),
        "plugin": plugin,
        "plugin_config": dict(plugin_config or {}),
        "chunk_size": 64,  # several blocks per 128 px tile: block seams are exercised
        "cog_opts": {"blocksize": 128},
        "product": {
            "name": "test_" + plugin.replace("-", "_").replace(".", "_").lower(),
            "version": "0.1.0",
        },
        **extra,
    }
    return Run(validate_config(config))


def run_task(
    run: Run, cache_path: Path, task: TaskId
) -> tuple[TileReport, dict[str, tuple[np.ndarray, dict]]]:
    """Run one task through the tile runner; returns the report and ``{band: (array, profile)}`` read back."""
    report = run_tile(run, cache_path, task, threads=1)
    bands = {}
    for path in report.outputs:
        if path.endswith(".tif"):
            with rasterio.open(path) as src:
                band = src.descriptions[0]
                bands[band] = (src.read(1), dict(src.profile))
    return report, bands


def check_outputs(
    run: Run, report: TileReport, bands: Mapping[str, tuple[np.ndarray, dict]]
) -> None:
    """Every declared measurement was written once with its dtype and nodata; the STAC item lists them."""
    declared = {m.name: m for m in run.plugin.measurements}
    assert set(bands) == set(declared)
    for name, (data, profile) in bands.items():
        m = declared[name]
        assert data.dtype == np.dtype(m.dtype), name
        if isinstance(m.nodata, float) and np.isnan(m.nodata):
            assert np.isnan(profile["nodata"]), name
        else:
            assert profile["nodata"] == m.nodata, name
    item = json.loads(Path(report.outputs[-1]).read_text())
    assert report.outputs[-1].endswith(".stac-item.json")
    assert {a for a in item["assets"]} >= set(declared)


def tile_points(shape: tuple[int, int], n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, shape[0], n)
    cols = rng.integers(0, shape[1], n)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def scene_values_by_day(
    catalog: Path,
    band: str,
    year: int,
    tile_transform,
    points: list[tuple[int, int]],
    tile_crs: str = "EPSG:3577",
) -> dict[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """Per local solar day of ``year``: for each scene, (inside, values) of ``band`` at the tile pixel centres
    ``points`` (row, col), nearest scene pixel, read straight from the scene COGs."""
    items = list(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))
    days: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
    xs, ys = zip(*[tile_transform @ (c + 0.5, r + 0.5) for r, c in points], strict=True)
    for item in items:
        lon = float(np.mean([c[0] for c in item.geometry["coordinates"][0]]))
        local = item.datetime + timedelta(hours=float(np.floor(lon * 24 / 360 + 0.5)))
        if local.year != year:
            continue
        solar = (item.datetime + timedelta(hours=lon * 24 / 360)).date()
        with rasterio.open(item.assets[band].get_absolute_href()) as src:
            data = src.read(1)
            to_scene = Transformer.from_crs(tile_crs, src.crs, always_xy=True)
            sx, sy = to_scene.transform(np.array(xs), np.array(ys))
            rows, cols = (np.asarray(a) for a in rasterio.transform.rowcol(src.transform, sx, sy))
            inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
            values = np.zeros(len(points), data.dtype)
            values[inside] = data[rows[inside], cols[inside]]
        days.setdefault(solar, []).append((inside, values))
    return days

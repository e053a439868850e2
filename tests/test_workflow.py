"""The whole default chain, end to end, with Snakemake on a tiny sample collection in a temporary folder.

sample → dataset cache → task list (checkpoint) → per-period GeoJSON → tiles → mosaics. Checks the targets, COG
structure, STAC items, `.sha1` files, the dry-run job list, that a second run does nothing, and — for the clear-count
product — pixel values against an independent computation straight from the scene COGs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from pyproj import Transformer

from eostats.cog import cog_problems
from eostats.metadata import validate_stac_item
from eostats.sample import SampleSpec

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("workflow")]

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}


def write_config(workdir: Path, **overrides) -> Path:
    config = {
        "results": str(workdir / "results"),
        "run_name": "wf",
        "source": {"type": "sample", "sample": SampleSpec.tiny().to_dict()},
        "grid": GRID,
        "frequency": "annual",
        "chunk_size": 256,  # several blocks per tile: exercises block-wise computation
        "cog_opts": {"blocksize": 256},
        "resources": {
            "tile": {"threads": 1, "mem_mb": 2000},
            "mosaic": {"threads": 1, "mem_mb": 1000},
        },
    }
    config.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    return path


def snakemake(
    workdir: Path, config: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--profile",
        str(REPO / "profiles" / "local"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def csv_tasks(path: Path) -> list[tuple[str, int, int]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    assert rows[0] == ["T", "X", "Y", "datasets", "days"]
    return [(r[0], int(r[1]), int(r[2])) for r in rows[1:]]


@pytest.fixture(scope="module")
def gm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gm")
    config = write_config(workdir, plugin="gm-ls")
    results = workdir / "results"
    # first only the task list: the dry-run must then show one tile job per CSV row
    snakemake(workdir, config, str(results / "tasks" / "wf.csv"))
    dry = snakemake(workdir, config, "-n")
    snakemake(workdir, config)
    return {
        "workdir": workdir,
        "config": config,
        "results": results,
        "dry_run": dry.stdout + dry.stderr,
    }


def test_dry_run_lists_one_tile_job_per_csv_row(gm_run):
    tasks = csv_tasks(gm_run["results"] / "tasks" / "wf.csv")
    assert len(tasks) >= 4
    out = gm_run["dry_run"]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert int(counts["tile"]) == len(tasks)
    assert int(counts["mosaic"]) == len({t[0] for t in tasks})
    listed = set()
    for block in re.split(r"\n(?=\[)", out):
        if "rule tile:" in block:
            wildcards = dict(
                re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", block).group(1))
            )
            listed.add((wildcards["period"], int(wildcards["x"]), int(wildcards["y"])))
    assert listed == set(tasks)


def test_every_target_exists_in_odc_stats_layout(gm_run):
    results = gm_run["results"]
    tasks = csv_tasks(results / "tasks" / "wf.csv")
    periods = sorted({t[0] for t in tasks})
    assert periods == ["2020--P1Y", "2021--P1Y"]
    for period in periods:
        assert (results / "tasks" / f"wf-{period}.geojson").is_file()
    bands = ["nbart_blue", "nbart_green", "nbart_red", "nbart_nir", "nbart_swir_1", "nbart_swir_2"]
    bands += ["sdev", "edev", "bcdev", "count"]
    for period, x, y in tasks:
        tile_dir = results / "gm_ls_annual" / "0-1-0" / f"x{x:02d}" / f"y{y:02d}" / period
        prefix = f"gm_ls_annual_x{x:02d}y{y:02d}_{period}_final"
        expected = {f"{prefix}_{b}.tif" for b in bands} | {
            f"{prefix}.sha1",
            f"{prefix}.stac-item.json",
        }
        # Snakemake keeps a hidden .snakemake_timestamp in directory outputs
        assert {p.name for p in tile_dir.iterdir() if not p.name.startswith(".")} == expected
    for period in periods:
        mosaic_dir = results / "gm_ls_annual" / "0-1-0" / "mosaics" / period
        assert sorted(p.name for p in mosaic_dir.iterdir()) == sorted(
            f"gm_ls_annual_{period}_mosaic_{b}.tif" for b in bands
        )


def tile_dirs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("*/*/x*/y*/*/*.stac-item.json"))


def test_tile_cogs_are_valid_and_sha1_lists_every_file(gm_run):
    for tile_dir in tile_dirs(gm_run["results"]):
        tifs = sorted(tile_dir.glob("*.tif"))
        for tif in tifs:
            assert cog_problems(tif) == [], tif
            with rasterio.open(tif) as src:
                assert src.profile["tiled"] and src.profile["blockxsize"] == 256
                assert src.nodata is not None or src.dtypes[0] == "float32"
                assert src.descriptions[0] == tif.stem.rsplit("_final_", 1)[1]
                assert src.overviews(1), "512 px tiles with 256 px blocks have an overview"
                assert src.crs.to_epsg() == 3577 and src.res == (30.0, 30.0)
        sha1_file = next(tile_dir.glob("*.sha1"))
        lines = sha1_file.read_text().splitlines()
        listed = {}
        for line in lines:
            digest, name = line.split("  ")
            listed[name] = digest
        assert set(listed) == {p.name for p in tifs}
        for tif in tifs:
            assert listed[tif.name] == hashlib.sha1(tif.read_bytes()).hexdigest()


def test_stac_items_validate_and_point_to_their_cogs(gm_run):
    results = gm_run["results"]
    cache_ids = {}
    for tile_dir in tile_dirs(results):
        path = next(tile_dir.glob("*.stac-item.json"))
        doc = json.loads(path.read_text())
        validate_stac_item(doc)
        assert doc["properties"]["odc:product"] == "gm_ls_annual"
        assert (
            doc["properties"]["odc:region_code"]
            == tile_dir.parent.parent.name + tile_dir.parent.name
        )
        assert doc["properties"]["proj:shape"] == [512, 512] or doc["properties"].get(
            "proj:shape"
        ) == [512, 512]
        assert doc["properties"]["odc:lineage"]["inputs"]
        assert doc["properties"]["start_datetime"].startswith(tile_dir.name[:4])
        for asset in doc["assets"].values():
            assert not asset["href"].startswith(("/", "file:"))
            assert (tile_dir / asset["href"]).is_file()
        cache_ids[doc["id"]] = path
    assert len(cache_ids) == len(tile_dirs(results)), "item ids are unique per tile"


def test_count_is_bounded_by_the_tasks_days(gm_run):
    results = gm_run["results"]
    with open(results / "tasks" / "wf.csv", newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))[1:]
    for period, x, y, ndatasets, _days in rows:
        count_tif = next(results.glob(f"*/*/x{int(x):02d}/y{int(y):02d}/{period}/*_count.tif"))
        with rasterio.open(count_tif) as src:
            count = src.read(1)
        assert count.max() <= int(ndatasets)
        assert count.max() >= 1


def test_mosaics_have_seven_overviews_and_cover_the_tiles(gm_run):
    results = gm_run["results"]
    for mosaic in results.glob("*/*/mosaics/*/*_count.tif"):
        assert cog_problems(mosaic) == []
        with rasterio.open(mosaic) as src:
            assert len(src.overviews(1)) == 7
            assert src.res == (120.0, 120.0)
            data = src.read(1)
            assert (data > 0).any()


def test_second_run_does_nothing(gm_run):
    results = gm_run["results"]
    before = {
        p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "logs" not in p.parts
    }
    proc = snakemake(gm_run["workdir"], gm_run["config"])
    assert "Nothing to be done" in proc.stdout + proc.stderr
    after = {
        p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "logs" not in p.parts
    }
    assert before == after


def test_invalid_config_stops_with_one_line_naming_the_key(tmp_path):
    config = write_config(tmp_path, frequency="weekly")
    proc = snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "config key 'frequency' has value 'weekly'; allowed:" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# --- clear counts against an independent computation from the scene COGs ---------------------------------


def independent_counts(catalog: Path, period_year: int, tile_geobox_transform, points):
    """total and clear at tile pixel centres: nearest scene pixel, fmask classes, OR within a solar day."""
    items = list(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))
    days: dict = {}
    for item in items:
        lon = item.geometry and np.mean([c[0] for c in item.geometry["coordinates"][0]])
        local = item.datetime + timedelta(hours=float(np.floor(lon * 24 / 360 + 0.5)))
        if local.year != period_year:
            continue
        solar = (item.datetime + timedelta(hours=lon * 24 / 360)).date()
        href = item.assets["oa_fmask"].get_absolute_href()
        with rasterio.open(href) as src:
            fmask = src.read(1)
            to_scene = Transformer.from_crs("EPSG:3577", src.crs, always_xy=True)
            xs, ys = zip(
                *[tile_geobox_transform @ (c + 0.5, r + 0.5) for r, c in points], strict=True
            )
            sx, sy = to_scene.transform(np.array(xs), np.array(ys))
            rows, cols = rasterio.transform.rowcol(src.transform, sx, sy)
            rows, cols = np.asarray(rows), np.asarray(cols)
            inside = (rows >= 0) & (rows < fmask.shape[0]) & (cols >= 0) & (cols < fmask.shape[1])
            codes = np.zeros(len(points), np.uint8)
            codes[inside] = fmask[rows[inside], cols[inside]]
        valid, erased = codes != 0, np.isin(codes, [2, 3])
        prev = days.get(solar, (np.zeros(len(points), bool), np.zeros(len(points), bool)))
        days[solar] = (prev[0] | valid, prev[1] | erased)
    total = sum(v.astype(int) for v, _ in days.values())
    clear = sum((v & ~e).astype(int) for v, e in days.values())
    return total, clear


def test_clear_counts_equal_an_independent_count(tmp_path):
    config = write_config(
        tmp_path, plugin="pq", plugin_config={"filters": {}}, mosaic={"enabled": False}
    )
    snakemake(tmp_path, config)
    results = tmp_path / "results"
    catalog = results / "sample" / "catalog.json"
    checked = agree = 0
    rng = np.random.default_rng(0)
    for total_tif in sorted(results.glob("*/*/x*/y*/*/*_total.tif")):
        clear_tif = Path(str(total_tif).replace("_total.tif", "_clear.tif"))
        with rasterio.open(total_tif) as src:
            total = src.read(1)
            transform = src.transform
        with rasterio.open(clear_tif) as src:
            clear = src.read(1)
        observed = np.argwhere(total > 0)
        points = [
            tuple(p)
            for p in observed[
                rng.choice(len(observed), size=min(300, len(observed)), replace=False)
            ]
        ]
        year = int(total_tif.parent.name[:4])
        exp_total, exp_clear = independent_counts(catalog, year, transform, points)
        got_total = np.array([total[p] for p in points])
        got_clear = np.array([clear[p] for p in points])
        checked += len(points)
        agree += int(((got_total == exp_total) & (got_clear == exp_clear)).sum())
    assert checked > 500
    # nearest-neighbour resampling through GDAL's approximate transformer can pick the neighbouring scene pixel
    # where a pixel centre lands within ~1/8 pixel of a scene pixel edge; everything else must match exactly
    assert agree / checked >= 0.97, f"{agree} of {checked} pixels agree"


def test_excluding_a_dataset_reruns_only_the_tiles_that_used_it(gm_run):
    """Tiles depend on their own dataset list (params), not on the cache file: runs last, it changes the run."""
    from collections import Counter

    from eostats.cache import DatasetCache

    results = gm_run["results"]
    with DatasetCache.open(results / "tasks" / "wf.sqlite") as cache:
        uses = Counter(i for task in cache.task_ids() for i in cache.dataset_ids(task))
        dataset, n_tasks = min(uses.items(), key=lambda kv: (kv[1], kv[0]))
        n_all = len(cache.task_ids())
    assert 0 < n_tasks < n_all
    cache_mtime = (results / "tasks" / "wf.sqlite").stat().st_mtime_ns
    overlay = gm_run["workdir"] / "exclude.yaml"
    overlay.write_text(yaml.safe_dump({"exclude_datasets": [dataset]}))
    config = gm_run["config"]
    snakemake(
        gm_run["workdir"],
        config,
        str(results / "tasks" / "wf.csv"),
        "--configfile",
        str(config),
        str(overlay),
    )
    dry = snakemake(gm_run["workdir"], config, "-n", "--configfile", str(config), str(overlay))
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, flags=re.M))
    assert int(counts["tile"]) == n_tasks
    # exclusions apply at tile time: the cache is neither rebuilt nor due to be
    assert "dataset_cache" not in counts
    assert (results / "tasks" / "wf.sqlite").stat().st_mtime_ns == cache_mtime

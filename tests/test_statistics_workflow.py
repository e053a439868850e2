"""Every statistic through Snakemake with its own example config, on the sample the workflow generates itself.

Each case runs `config/examples/<name>.yaml` (or the default `config/config.yaml` for gm-ls) as it is, except for
where results go, a smaller tile (128 px, at the example's own grid CRS, resolution and origin), the tiny Landsat
sample instead of the 30 km one, one task (2021) and no mosaics. It checks the tile's files, band names,
dtypes and nodata against the plugin's declared measurements and against odc-stats' names written out here.
`wofs-summary` and `wofs-summary-fh` run together from the wofs-summary-fh example, the full history being an
aggregation rule over the annual tiles (the last tests):
which jobs re-run when a year is added or one year's datasets change, and the sums against the annual tiles.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from test_workflow import REPO, snakemake

from eostats.cache import DatasetCache
from eostats.config import load_config
from eostats.fullhistory import full_history_run
from eostats.sample import SampleSpec
from eostats.sample_products import generate_sample
from eostats.taskids import TaskId
from eostats.workflow import Run

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("statistics_workflow")]

# The sample scenes (every product) lie around the corner of tiles x275..276, y97..98 of 15 360 m tiles in
# EPSG:3577: with 128 px tiles the tile north-east of that corner is x = 276 k, y = 98 k, k = 15360 / (128 res).
TILE_PX = 128

S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
USGS_BANDS = ["red", "green", "blue", "nir", "swir_1", "swir_2"]
NAN = float("nan")


def _pc(bands, dtype, nodata):
    return {f"{b}_pc_{q}": (dtype, nodata) for b in bands for q in (10, 50, 90)}


# odc-stats' outputs (docs: /work/shared/reference/odc-stats.md §4.1), band → (dtype, nodata), written out by hand
EXPECTED = {
    "gm-ls": (
        "config/config.yaml",
        {
            **{
                b: ("int16", -999)
                for b in (
                    "nbart_blue",
                    "nbart_green",
                    "nbart_red",
                    "nbart_nir",
                    "nbart_swir_1",
                    "nbart_swir_2",
                )
            },
            "sdev": ("float32", NAN),
            "edev": ("float32", NAN),
            "bcdev": ("float32", NAN),
            "count": ("uint16", 0),
        },
    ),
    "gm-s2": (
        "config/examples/gm-s2.yaml",
        {
            **{b: ("uint16", 0) for b in S2_BANDS},
            "SMAD": ("float32", NAN),
            "EMAD": ("float32", NAN),
            "BCMAD": ("float32", NAN),
            "COUNT": ("uint16", 0),
        },
    ),
    "gm-ls-bitmask": (
        "config/examples/gm-ls-bitmask.yaml",
        {
            **{b: ("uint16", 0) for b in USGS_BANDS},
            "smad": ("float32", NAN),
            "emad": ("uint16", 0),  # rescaled to reflectance x 10 000 like the bands
            "bcmad": ("float32", NAN),
            "count": ("uint16", 0),
        },
    ),
    "gm-generic": (
        "config/examples/gm-generic.yaml",
        {
            "nbart_green": ("int16", -999),
            "nbart_nir": ("int16", -999),
            "nbart_swir_1": ("int16", -999),
            "smad": ("float32", NAN),
            "emad": ("float32", NAN),
            "bcmad": ("float32", NAN),
            "count": ("uint16", 0),
        },
    ),
    "pq": (
        "config/examples/sample-pq.yaml",
        {b: ("uint16", 0) for b in ("total", "clear", "clear_2_5", "clear_0_5")},
    ),
    "pq-s2": (
        "config/examples/pq-s2.yaml",
        {b: ("uint16", 0) for b in ("total", "clear", "clear_2_5", "clear_0_5")},
    ),
    "pq-ls-bitmask": (
        "config/examples/pq-ls-bitmask.yaml",
        {
            b: ("uint16", 0)
            for b in ("total", "clear", "clear_10_2_2", "clear_aerosol", "clear_10_2_2_aerosol")
        },
    ),
    "fc-percentiles": (
        "config/examples/fc-percentiles.yaml",
        {
            **_pc(("pv", "bs", "npv"), "uint8", 255),
            "qa": ("uint8", 255),
            "count_valid": ("int16", -999),
        },
    ),
    "tcw-percentiles": (
        "config/examples/tcw-percentiles.yaml",
        _pc(("wet", "bright", "green"), "int16", -9999),
    ),
    "ndvi-median": ("config/examples/ndvi-median.yaml", {"ndvi_median": ("float32", NAN)}),
    "band-stats": (
        "config/examples/band-stats.yaml",
        {
            **{
                f"{b}_{s}": ("float32", NAN) if s in ("mean", "median", "std") else ("int16", -999)
                for b in ("nbart_red", "nbart_nir")
                for s in (
                    "mean",
                    "median",
                    "min",
                    "max",
                    "std",
                    "pc_10",
                    "pc_50",
                    "pc_90",
                    "medoid",
                )
            },
            "count": ("uint16", 0),
        },
    ),
}


def small_run_config(example: str, workdir: Path) -> Path:
    """The example config, shrunk to one small tile of the tiny sample, written into ``workdir``."""
    config = yaml.safe_load((REPO / example).read_text())
    grid = dict(config["grid"])
    k = round(15360 / (TILE_PX * grid["resolution"]))
    grid["tile_size"] = TILE_PX
    source = dict(config["source"])
    assert source["type"] == "sample", f"{example} must run on the workflow's own sample"
    sample = dict(source.get("sample") or {})
    if sample.get("product", "landsat_ard") == "landsat_ard":
        sample = {
            **SampleSpec.tiny().to_dict(),
            **sample,
        }  # the default Landsat sample is 30 km wide
    config.update(
        results=str(workdir / "results"),
        source={**source, "sample": sample},
        grid=grid,
        tiles=f"{276 * k}:{276 * k + 1},{98 * k}:{98 * k + 1}",
        tasks=[f"2021--P1Y/{276 * k}/{98 * k}"],  # 2021: more days than 2020 (percentiles need 3)
        mosaic={"enabled": False},
        chunk_size=TILE_PX,
        resources={"tile": {"threads": 1, "mem_mb": 1500}, "cache": {"threads": 1}},
    )
    path = workdir / "config.yaml"
    path.write_text(
        yaml.safe_dump(config, sort_keys=False)
    )  # keeps the order of filters (the band order)
    return path


def same_nodata(a, b) -> bool:
    return (np.isnan(a) and np.isnan(b)) if isinstance(a, float) and np.isnan(a) else a == b


#: snakemake runs at once: the jobs are short Python processes, mostly starting up and waiting on each other
PARALLEL_RUNS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Path, BaseException | None]]:
    """Every example through Snakemake, a few at once; statistic → (workdir, config, the run's error or None).

    Each product's sample is generated once, by the same function and spec as the workflow's sample rule would,
    and copied into each run's `results/sample`, where Snakemake finds its output up to date; the first run of
    each product makes its sample itself instead, so the sample rule runs for every product.
    """
    samples = tmp_path_factory.mktemp("samples")
    prepared = {}
    first_of_product = {}
    for statistic, (example, _) in sorted(EXPECTED.items()):
        workdir = tmp_path_factory.mktemp(statistic)
        config_path = small_run_config(example, workdir)
        sample_spec = yaml.safe_load(config_path.read_text())["source"]["sample"]
        key = json.dumps(sample_spec, sort_keys=True)
        if key in first_of_product:
            if not (samples / str(hash(key))).exists():
                generate_sample(samples / str(hash(key)), sample_spec)
            shutil.copytree(samples / str(hash(key)), workdir / "results" / "sample")
        else:
            first_of_product[key] = statistic
        prepared[statistic] = (workdir, config_path)

    def run_one(statistic: str) -> BaseException | None:
        workdir, config_path = prepared[statistic]
        try:
            snakemake(workdir, config_path, "--cores", "1")
        except AssertionError as err:
            return err
        return None

    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        errors = dict(zip(prepared, pool.map(run_one, prepared), strict=True))
    return {s: (*prepared[s], errors[s]) for s in prepared}


@pytest.mark.parametrize("statistic", sorted(EXPECTED))
def test_statistic_runs_from_its_example_config(statistic, runs):
    _, expected = EXPECTED[statistic]
    workdir, config_path, error = runs[statistic]
    if error is not None:
        raise error
    run = Run(load_config(config_path))
    assert run.config["plugin"] == statistic
    declared = {m.name: (m.dtype, m.nodata) for m in run.plugin.measurements}
    assert list(declared) == list(expected), f"{statistic}: declared bands differ from odc-stats'"
    for band, (dtype, nodata) in expected.items():
        assert declared[band][0] == dtype and same_nodata(declared[band][1], nodata), band

    items = sorted(Path(run.product.location).glob("x*/y*/*/*.stac-item.json"))
    assert len(items) == 1, items  # one task
    item = json.loads(items[0].read_text())
    tile_dir = items[0].parent
    extras = (
        {"rgba", "thumbnail"}
        if "rgba" in (run.config["cog_opts"].get("overrides") or {})
        else set()
    )
    assert set(item["assets"]) == set(expected) | extras
    some_data = False
    for band, (dtype, nodata) in expected.items():
        href = item["assets"][band]["href"]
        assert href.endswith(f"_{band}.tif")
        with rasterio.open(tile_dir / href) as src:
            assert (src.count, src.dtypes[0], src.width) == (1, dtype, TILE_PX), band
            assert same_nodata(src.nodata, nodata), f"{band}: nodata {src.nodata}"
            values = src.read(1)
        raster = item["assets"][band]["raster:bands"][0]
        assert raster["data_type"] == dtype
        valid = ~np.isnan(values) if np.isnan(nodata) else values != nodata
        some_data |= bool(valid.any())
    assert some_data, f"{statistic}: every output pixel is nodata"
    # the .sha1 lists every file of the tile but the item, with its digest
    sha1_lines = next(tile_dir.glob("*.sha1")).read_text().splitlines()
    listed = dict(reversed(line.split(maxsplit=1)) for line in sha1_lines)
    files = {
        p.name for p in tile_dir.iterdir() if not p.name.endswith((".sha1", ".stac-item.json"))
    }
    assert set(listed) == files
    for name, digest in listed.items():
        assert hashlib.sha1((tile_dir / name).read_bytes()).hexdigest() == digest
    if extras:
        check_preview(tile_dir, item, run)


def check_preview(tile_dir: Path, item: dict, run: Run) -> None:
    """gm-s2's example asks for the RGBA preview: B04 B03 B02 clamped to (1, 3000), alpha where B04 has data."""
    rgba_path = tile_dir / item["assets"]["rgba"]["href"]
    assert rgba_path.name.endswith("_rgba.tif") and "visual" in item["assets"]["rgba"]["roles"]
    thumb = tile_dir / item["assets"]["thumbnail"]["href"]
    assert (
        thumb.name.endswith("_thumbnail.jpg")
        and item["assets"]["thumbnail"]["type"] == "image/jpeg"
    )
    with rasterio.open(rgba_path) as src:
        assert (src.count, src.dtypes[0]) == (4, "uint8")
        rgba = src.read()
    channels = []
    for band in ("B04", "B03", "B02"):
        with rasterio.open(tile_dir / item["assets"][band]["href"]) as src:
            channels.append(src.read(1).astype(np.int64))
    red = channels[0]
    np.testing.assert_array_equal(rgba[3], np.where(red != 0, 255, 0))
    for got, dn in zip(rgba[:3], channels, strict=True):
        np.testing.assert_array_equal(got, (np.clip(dn, 1, 3000) - 1) * 255 // 2999)
    with rasterio.open(thumb) as src:
        assert src.driver == "JPEG" and src.count == 3 and max(src.width, src.height) <= 512


# --------------------------------------------------------------------------------------------------------------
# wofs-summary-fh: an aggregation rule over the annual wofs-summary tiles

# 128 px tiles (3 840 m): one on the sample's western edge (fewer scenes), the next one east
FH_TILES = [(1102, 391), (1103, 391)]


def fh_config(workdir: Path, **overrides) -> Path:
    """The wofs-summary-fh example (annual summaries + their full history) on two 256 px tiles."""
    config = yaml.safe_load((REPO / "config/examples/wofs-summary-fh.yaml").read_text())
    config.update(
        results=str(workdir / "results"),
        grid={**config["grid"], "tile_size": 128},
        tiles="1102:1104,391:392",
        mosaic={"enabled": False},
        chunk_size=64,  # two blocks a side: the full history is read and reduced block by block
        resources={"tile": {"threads": 1, "mem_mb": 1500}, "cache": {"threads": 1}},
        **overrides,
    )
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_counts(proc) -> dict[str, int]:
    """Jobs per rule that this invocation ran (or, dry, would run): one `rule <name>:` header per job."""
    text = proc.stdout + proc.stderr
    names = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", text, flags=re.M)
    return {name: names.count(name) for name in set(names)}


@pytest.fixture(scope="module")
def fh_run(tmp_path_factory):
    """First one year, then a second year added: returns both invocations' job counts and the tile paths."""
    workdir = tmp_path_factory.mktemp("wofs_fh")
    first = snakemake(workdir, fh_config(workdir, years=[2020]), "--cores", "1")
    config = Run(load_config(workdir / "config.yaml"))
    annual_2020 = [Path(config.tile_item(TaskId("2020--P1Y", x, y))) for x, y in FH_TILES]
    mtimes_2020 = [p.stat().st_mtime_ns for p in annual_2020]
    second = snakemake(workdir, fh_config(workdir, years=[2020, 2021]), "--cores", "1")
    run = Run(load_config(workdir / "config.yaml"))
    return {
        "workdir": workdir,
        "run": run,
        "first": job_counts(first),
        "second": job_counts(second),
        "annual_2020_unchanged": [p.stat().st_mtime_ns for p in annual_2020] == mtimes_2020,
    }


def test_full_history_jobs_follow_the_annual_tiles(fh_run):
    # one year: 2 annual tiles and their 2 full histories (2020--P1Y)
    assert (fh_run["first"]["tile"], fh_run["first"]["full_history_tile"]) == (2, 2)
    # a year added: only the 2021 annual tiles run; both full histories are new (2020--P2Y)
    assert (fh_run["second"]["tile"], fh_run["second"]["full_history_tile"]) == (2, 2)
    assert fh_run["annual_2020_unchanged"]


def test_full_history_sums_the_annual_summaries(fh_run):
    run = fh_run["run"]
    fh = full_history_run(run)
    seen = {"wet": False, "dry": False, "one year": False}
    for x, y in FH_TILES:
        annual_items = [Path(run.tile_item(TaskId(f"{year}--P1Y", x, y))) for year in (2020, 2021)]
        fh_item_path = Path(fh.tile_item(TaskId("2020--P2Y", x, y)))
        item = json.loads(fh_item_path.read_text())
        assert item["properties"]["start_datetime"].startswith("2020-01-01")
        assert item["properties"]["end_datetime"].startswith("2021-12-31")
        annual_ids = sorted(json.loads(p.read_text())["id"] for p in annual_items)
        assert item["properties"]["odc:lineage"] == {"inputs": annual_ids}

        def band(path: Path, name: str):
            with rasterio.open(
                path.parent / json.loads(path.read_text())["assets"][name]["href"]
            ) as src:
                return src.read(1), src.dtypes[0], src.nodata

        wet = np.stack([band(p, "count_wet")[0] for p in annual_items]).astype(np.int64)
        clear = np.stack([band(p, "count_clear")[0] for p in annual_items]).astype(np.int64)
        never = (clear == -999).all(axis=0)
        wet_sum = np.where(wet == -999, 0, wet).sum(axis=0)
        clear_sum = np.where(clear == -999, 0, clear).sum(axis=0)
        got_wet, dtype_wet, nodata_wet = band(fh_item_path, "count_wet")
        got_clear, dtype_clear, nodata_clear = band(fh_item_path, "count_clear")
        got_freq, dtype_freq, nodata_freq = band(fh_item_path, "frequency")
        # odc-stats' wofs-summary and wofs-summary-fh bands: count_wet, count_clear int16 -999, frequency float32 NaN
        for path in (*annual_items, fh_item_path):
            assert set(json.loads(path.read_text())["assets"]) == {
                "count_wet",
                "count_clear",
                "frequency",
            }
        assert [band(p, "count_wet")[1:] for p in annual_items] == [("int16", -999)] * 2
        assert [band(p, "count_clear")[1:] for p in annual_items] == [("int16", -999)] * 2
        assert all(np.isnan(band(p, "frequency")[2]) for p in annual_items)
        assert (dtype_wet, dtype_clear, dtype_freq) == ("int16", "int16", "float32")
        assert (nodata_wet, nodata_clear) == (-999, -999) and np.isnan(nodata_freq)
        np.testing.assert_array_equal(got_wet, np.where(never, -999, wet_sum))
        np.testing.assert_array_equal(got_clear, np.where(never, -999, clear_sum))
        with np.errstate(divide="ignore", invalid="ignore"):
            expected_freq = np.where(clear_sum > 0, wet_sum / clear_sum, np.nan).astype(np.float32)
        np.testing.assert_allclose(got_freq, expected_freq, rtol=1e-6, equal_nan=True)
        # the sample has water, land, and pixels seen in only one of the years
        seen["wet"] |= bool((wet_sum > 0).any())
        seen["dry"] |= bool((clear_sum > wet_sum).any())
        seen["one year"] |= bool(((clear[0] == -999) != (clear[1] == -999)).any())
    assert all(seen.values()), seen


def test_changing_one_years_input_reruns_one_annual_and_one_full_history_tile(fh_run):
    """Runs last: it changes the run (one 2021 dataset left out, a dry run then)."""
    run, workdir = fh_run["run"], fh_run["workdir"]
    cache = DatasetCache.open(run.cache)
    used_by: dict[str, list[tuple[int, int]]] = {}
    for x, y in FH_TILES:
        for dataset in cache.dataset_ids(TaskId("2021--P1Y", x, y)):
            used_by.setdefault(dataset, []).append((x, y))
    only_one = sorted(d for d, tiles in used_by.items() if len(tiles) == 1)
    assert only_one, "every 2021 dataset covers both tiles: no dataset to leave out"
    config = fh_config(workdir, years=[2020, 2021], exclude_datasets=[only_one[0]])
    snakemake(workdir, config, str(run.task_csv), "--cores", "1")
    counts = job_counts(snakemake(workdir, config, "-n"))
    assert (counts.get("tile"), counts.get("full_history_tile")) == (1, 1)

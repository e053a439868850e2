"""Operating a big run with bad input data: failure records, the failures file, exclusions, limits, job logs.

A copy of the tiny sample collection is broken in three scenes of three months (a truncated asset, an asset
rewritten in another CRS, an item without its projection metadata) and a fourth item gets an unreadable datetime.
One tile (x275 y97) over the four months of the sample (monthly periods) makes four tasks: with ``--keep-going`` the
three tasks that use a broken scene fail with records naming it, the fourth completes (without the unusable item,
which the cache build skipped and named). Excluding the three scenes then re-runs exactly those three tasks and
leaves the dataset cache as it was. Time and memory limits stop a tile with one clear line and a record.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from test_workflow import snakemake, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("workflow")]

TILE = (275, 97)
TRUNCATED = (
    "2020-01--P1M",
    "sample_ls_089084_20200105",
)  # (month, scene): oa_fmask cut to half its bytes
OTHER_CRS = (
    "2020-12--P1M",
    "sample_ls_089084_20201222",
)  # oa_fmask rewritten in EPSG:32754 (item: 32756)
NO_PROJ = ("2021-12--P1M", "sample_ls_090084_20211218")  # item without proj:code
GOOD_MONTH = "2021-01--P1M"
BAD_DATETIME = (
    "sample_ls_090085_20210116"  # of GOOD_MONTH; datetime "yesterday-ish": skipped by the cache
)
ALL_MONTHS = sorted([TRUNCATED[0], OTHER_CRS[0], NO_PROJ[0], GOOD_MONTH])


def task_id(month: str) -> str:
    return f"{month}/{TILE[0]}/{TILE[1]}"


def item_file(root: Path, scene: str) -> Path:
    return root / "sample_ls_ard_3" / scene / f"{scene}.json"


def fmask_file(root: Path, scene: str) -> Path:
    return root / "sample_ls_ard_3" / scene / f"{scene}_oa_fmask.tif"


def rewrite_in_crs(path: Path, crs: str) -> None:
    """The same pixels and transform, labelled with another CRS (as a mis-projected delivery would be)."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
    for key in ("blockxsize", "blockysize", "tiled", "compress"):
        profile.pop(key, None)
    profile.update(driver="GTiff", crs=crs)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def break_collection(root: Path) -> None:
    fmask = fmask_file(root, TRUNCATED[1])
    fmask.write_bytes(fmask.read_bytes()[: fmask.stat().st_size // 2])
    rewrite_in_crs(fmask_file(root, OTHER_CRS[1]), "EPSG:32754")
    for scene, change in ((NO_PROJ[1], "proj"), (BAD_DATETIME, "datetime")):
        path = item_file(root, scene)
        item = json.loads(path.read_text())
        if change == "proj":
            del item["properties"]["proj:code"]
        else:
            item["properties"]["datetime"] = "2021-13-45T99:00:00Z"
        path.write_text(json.dumps(item))


def tile_item(results: Path, month: str) -> Path:
    """The tile's STAC item in the pq plugin's default product (``pq_ls_annual``, version 0.1.0)."""
    x, y = TILE
    name = f"pq_ls_annual_x{x}y{y}_{month}_final.stac-item.json"
    return results / "pq_ls_annual" / "0-1-0" / f"x{x}" / f"y{y}" / month / name


def job_log(results: Path, month: str) -> Path:
    return results / "logs" / "tile" / month / f"x{TILE[0]}_y{TILE[1]}.log"


def job_counts(proc) -> dict[str, int]:
    return {
        k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M)
    }


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory, sample_catalog):
    workdir = tmp_path_factory.mktemp("bad_inputs")
    collection = workdir / "collection"
    shutil.copytree(sample_catalog.parent, collection)
    break_collection(collection)
    config = write_config(
        workdir,
        source={"type": "stac_catalog", "path": str(collection / "catalog.json")},
        plugin="pq",
        frequency="monthly",
        tasks=[task_id(m) for m in ALL_MONTHS],
        mosaic={"enabled": False},
    )
    proc = snakemake(workdir, config, "--keep-going", check=False)
    return {"workdir": workdir, "config": config, "results": workdir / "results", "proc": proc}


def test_only_the_tasks_using_a_broken_scene_fail(broken_run):
    results, proc = broken_run["results"], broken_run["proc"]
    assert proc.returncode != 0
    assert tile_item(results, GOOD_MONTH).exists()
    for month in (TRUNCATED[0], OTHER_CRS[0], NO_PROJ[0]):
        assert not tile_item(results, month).exists()
        assert not tile_item(results, month).parent.exists()  # nothing half-written


def test_failure_records_name_the_dataset_the_asset_and_the_reason(broken_run):
    from eostats.failures import load_failures
    from eostats.workflow import Run

    run = Run(yaml.safe_load(broken_run["config"].read_text()))
    records = {r.task: r for r in load_failures(run)}
    assert sorted(records) == sorted(task_id(m) for m in (TRUNCATED[0], OTHER_CRS[0], NO_PROJ[0]))

    truncated = records[task_id(TRUNCATED[0])]
    [bad] = truncated.bad_datasets
    assert (bad["id"], bad["asset"]) == (TRUNCATED[1], "oa_fmask")
    assert Path(bad["href"]) == fmask_file(broken_run["workdir"] / "collection", TRUNCATED[1])
    assert "truncated or corrupt" in bad["reason"]
    assert truncated.dataset_ids == ["sample_ls_089084_20200105", "sample_ls_090084_20200114"]
    assert Path(truncated.log) == job_log(broken_run["results"], TRUNCATED[0])
    assert TRUNCATED[1] in truncated.reason and "oa_fmask" in truncated.reason

    [bad] = records[task_id(OTHER_CRS[0])].bad_datasets
    assert (bad["id"], bad["asset"]) == (OTHER_CRS[1], "oa_fmask")
    assert (
        bad["reason"] == "unexpected CRS: the file is in EPSG:32754, the item declares EPSG:32756"
    )

    [bad] = records[task_id(NO_PROJ[0])].bad_datasets
    assert bad["id"] == NO_PROJ[1] and bad["href"] is None
    assert bad["reason"].startswith("malformed metadata: no proj:code/proj:epsg")


def test_aggregated_failures_file_lists_the_records(broken_run):
    path = broken_run["results"] / "logs" / "failures.jsonl"
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["task"] for r in records] == sorted(
        task_id(m) for m in (TRUNCATED[0], OTHER_CRS[0], NO_PROJ[0])
    )
    assert {r["bad_datasets"][0]["id"] for r in records} == {TRUNCATED[1], OTHER_CRS[1], NO_PROJ[1]}
    assert set(records[0]) == {"task", "dataset_ids", "reason", "log", "bad_datasets", "time"}


def test_failed_job_log_ends_with_one_error_line_and_a_json_line(broken_run):
    lines = job_log(broken_run["results"], OTHER_CRS[0]).read_text().splitlines()
    assert "Traceback" not in "\n".join(lines)
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1 and OTHER_CRS[1] in errors[0] and "unexpected CRS" in errors[0]
    last = json.loads(lines[-1])
    assert last["event"] == "tile_failed" and last["task"] == task_id(OTHER_CRS[0])
    assert last["dataset_ids"] == [OTHER_CRS[1]]
    assert f"task {task_id(OTHER_CRS[0])} failed" in broken_run["proc"].stderr


def test_done_job_log_ends_with_a_json_line_of_the_tile(broken_run):
    lines = job_log(broken_run["results"], GOOD_MONTH).read_text().splitlines()
    progress = [line for line in lines if re.search(r"block \d+ of 4 done", line)]
    assert len(progress) == 4  # 512 px tile in 256 px blocks
    last = json.loads(lines[-1])
    assert last["event"] == "tile_done" and last["task"] == task_id(GOOD_MONTH)
    # the month's five scenes but the one whose datetime the cache could not read
    assert last["dataset_ids"] == [
        "sample_ls_089084_20210107",
        "sample_ls_089085_20210107",
        "sample_ls_090084_20201231",
        "sample_ls_090084_20210116",
    ]
    assert last["datasets"] == 4 and last["peak_rss_mb"] > 0
    assert set(last["seconds"]) >= {"load", "reduce", "write", "total"}
    assert str(tile_item(broken_run["results"], GOOD_MONTH)) in last["outputs"]


def test_cache_build_skips_and_names_an_unusable_item(broken_run):
    log = (broken_run["results"] / "logs" / "dataset_cache.log").read_text()
    [line] = [line for line in log.splitlines() if BAD_DATETIME in line]
    assert "WARNING" in line and "unreadable datetime" in line
    assert str(broken_run["workdir"] / "collection" / "catalog.json") in line


def test_excluding_the_broken_scenes_reruns_only_their_tasks(broken_run):
    workdir, config, results = broken_run["workdir"], broken_run["config"], broken_run["results"]
    cache = results / "tasks" / "wf.sqlite"
    cache_stat = cache.stat()
    done = tile_item(results, GOOD_MONTH).stat().st_mtime_ns
    listing = workdir / "bad-scenes.txt"
    listing.write_text(
        f"# found by the failures file\n{TRUNCATED[1]}\n{OTHER_CRS[1]}  # wrong CRS\n\n{NO_PROJ[1]}\n"
    )
    overlay = workdir / "exclude.yaml"
    overlay.write_text(yaml.safe_dump({"exclude_datasets_file": str(listing)}))

    proc = snakemake(workdir, config, "--configfile", str(config), str(overlay))
    counts = job_counts(proc)  # Snakemake's job table, printed before the run starts
    assert counts["tile"] == 3
    assert "dataset_cache" not in counts
    assert (cache.stat().st_mtime_ns, cache.stat().st_ino) == (
        cache_stat.st_mtime_ns,
        cache_stat.st_ino,
    )
    assert tile_item(results, GOOD_MONTH).stat().st_mtime_ns == done
    for month in ALL_MONTHS:
        assert tile_item(results, month).exists()
    assert not (results / "logs" / "failures").exists() or not list(
        (results / "logs" / "failures").rglob("*.json")
    )
    assert (results / "logs" / "failures.jsonl").read_text() == ""

    # the December 2020 task had one scene, now excluded: written all nodata, with no sources
    item = json.loads(tile_item(results, OTHER_CRS[0]).read_text())
    with rasterio.open(
        tile_item(results, OTHER_CRS[0]).parent / item["assets"]["total"]["href"].split("/")[-1]
    ) as src:
        total = src.read(1)
    assert np.all(total == 0)
    # January 2020 keeps its other scene
    last = json.loads(job_log(results, TRUNCATED[0]).read_text().splitlines()[-1])
    assert last["dataset_ids"] == ["sample_ls_090084_20200114"]


def test_time_limit_stops_a_tile_with_one_line_and_a_record(broken_run):
    from eostats.failures import load_failures
    from eostats.workflow import Run

    workdir, config = broken_run["workdir"], broken_run["config"]
    # a geomedian in 64 px blocks: about a hundred reads and reductions, far longer than a second
    slow_task = f"{GOOD_MONTH}/276/98"
    overlay = workdir / "slow.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {"tasks": [slow_task], "plugin": "gm-ls", "chunk_size": 64, "max_processing_time": 1}
        )
    )
    proc = snakemake(workdir, config, "--configfile", str(config), str(overlay), check=False)
    assert proc.returncode != 0
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("eostats: task")]
    assert re.fullmatch(
        rf"eostats: task {re.escape(slow_task)} failed: stopped after \d+ s, over its time limit "
        rf"\(max_processing_time 1 s\) \(log: .*x276_y98\.log\)",
        line,
    )
    records = {r.task: r for r in load_failures(Run(yaml.safe_load(config.read_text())))}
    assert records[slow_task].reason.startswith("stopped after ")
    assert records[slow_task].bad_datasets == []


def limited_run(broken_run, memory_limit):
    from eostats.config import validate_config
    from eostats.workflow import Run

    config = yaml.safe_load(broken_run["config"].read_text())
    config["results"] = str(broken_run["workdir"] / "limited")  # outputs apart from the workflow's
    return Run(validate_config({**config, "memory_limit": memory_limit}))


def test_memory_estimate_refuses_a_tile_that_cannot_fit(broken_run):
    from eostats.limits import TileMemoryError
    from eostats.taskids import parse_task_id
    from eostats.tile import run_tile

    run = limited_run(broken_run, "450MB")
    task = parse_task_id(f"{GOOD_MONTH}/276/97")
    cache = broken_run["results"] / "tasks" / "wf.sqlite"
    with pytest.raises(TileMemoryError) as caught:
        run_tile(run, cache, task)
    # 3 solar days of pq's variables on 256 px blocks, plus the fixed part: more than 450 MB = 429 MiB
    assert re.fullmatch(
        rf"task {re.escape(str(task))}: needs about \d+ MiB \(3 observations × \d+ variables × 256×256 px "
        r"blocks\), more than its memory limit 429 MiB; set a smaller chunk_size \(now 256\) or give the tile "
        r"more memory \(memory_limit, or resources.tile.mem_mb\)",
        str(caught.value),
    )
    assert not Path(run.product.task_dir(task)).exists()


def test_memory_limit_stops_a_process_over_it(broken_run):
    from eostats.limits import TileLimitError, run_tile_within_limits
    from eostats.taskids import parse_task_id

    # this test process alone holds more than 50 MB: the watched child is over the limit from its start
    run = limited_run(broken_run, None)
    task = parse_task_id(f"{GOOD_MONTH}/276/97")
    cache = broken_run["results"] / "tasks" / "wf.sqlite"
    with pytest.raises(TileLimitError) as caught:
        run_tile_within_limits(run, cache, task, memory_limit=50 * 10**6)
    assert re.fullmatch(
        r"stopped at \d+ MiB resident memory \(memory_limit 48 MiB\); set a smaller chunk_size \(now 256\) "
        r"or give the tile more memory \(memory_limit, or resources.tile.mem_mb\)",
        str(caught.value),
    )

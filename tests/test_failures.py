"""Failure records, exclusions, memory limits and reader errors, without Snakemake."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from pathlib import Path

import pytest
import rasterio

from eostats.failures import (
    FailureRecord,
    clear_failure_record,
    load_failures,
    make_failure_record,
    write_failure_record,
    write_failures_file,
)
from eostats.limits import (
    TileMemoryError,
    check_tile_memory,
    estimate_tile_memory,
    memory_limit_of,
)
from eostats.taskids import TaskId
from eostats.workflow import Run

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}


# --- failure records -------------------------------------------------------------------------------------------


def test_record_lives_under_the_logs_and_round_trips(tmp_path: Path) -> None:
    run = Run({"results": str(tmp_path)})
    task = TaskId("2021--P1Y", 5, -3)
    bad = {
        "id": "scene-1",
        "asset": "nbart_red",
        "href": "/data/s1_red.tif",
        "reason": "missing file",
    }
    record = make_failure_record(
        task, ["scene-2", "scene-1"], "dataset scene-1:\n  missing", "/l/x.log", [bad]
    )
    path = write_failure_record(run, record)
    assert path == tmp_path / "logs" / "failures" / "2021--P1Y" / "x5_y-3.json"
    stored = json.loads(path.read_text())
    assert stored["task"] == "2021--P1Y/05/-3"  # odc-stats pads indices to two digits
    assert stored["dataset_ids"] == ["scene-1", "scene-2"]
    assert stored["reason"] == "dataset scene-1: missing"  # one line
    assert stored["bad_datasets"] == [bad]
    assert stored["log"] == "/l/x.log"
    assert stored["time"].endswith("Z") and len(stored["time"]) == len("2026-01-01T00:00:00Z")
    assert load_failures(run) == [FailureRecord(**stored)]


def test_failures_file_lists_every_record_and_is_emptied_when_they_clear(tmp_path: Path) -> None:
    run = Run({"results": str(tmp_path)})
    tasks = [TaskId("2021--P1Y", 2, 1), TaskId("2020--P1Y", 9, 9)]
    for task in tasks:
        write_failure_record(run, make_failure_record(task, ["a"], f"reason {task.x}", None))
    path, n = write_failures_file(run)
    assert (path, n) == (tmp_path / "logs" / "failures.jsonl", 2)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["task"] for line in lines] == ["2020--P1Y/09/09", "2021--P1Y/02/01"]
    assert [json.loads(line)["reason"] for line in lines] == ["reason 9", "reason 2"]

    assert clear_failure_record(run, tasks[0]) is True
    assert clear_failure_record(run, tasks[0]) is False
    assert [r.task for r in load_failures(run)] == ["2020--P1Y/09/09"]
    clear_failure_record(run, tasks[1])
    assert write_failures_file(run)[1] == 0
    assert path.read_text() == ""


def test_an_unreadable_record_is_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    run = Run({"results": str(tmp_path)})
    write_failure_record(run, make_failure_record(TaskId("2021--P1Y", 1, 1), [], "r", None))
    broken = tmp_path / "logs" / "failures" / "2021--P1Y" / "x2_y2.json"
    broken.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="eostats.failures"):
        assert [r.task for r in load_failures(run)] == ["2021--P1Y/01/01"]
    assert str(broken) in caplog.text


# --- exclusions --------------------------------------------------------------------------------------------------


def test_excluded_datasets_join_the_list_and_the_file(tmp_path: Path) -> None:
    listing = tmp_path / "bad.txt"
    listing.write_text("# bad scenes\nscene-b\n\n  scene-c   # truncated\nscene-a\n")
    run = Run({"exclude_datasets": ["scene-a", "scene-z"], "exclude_datasets_file": str(listing)})
    assert run.excluded_datasets == {"scene-a", "scene-b", "scene-c", "scene-z"}


def test_a_missing_exclusion_file_is_one_line_naming_the_key_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError) as caught:
        Run({"exclude_datasets_file": str(missing)}).excluded_datasets  # noqa: B018
    assert str(caught.value) == (
        f"config key 'exclude_datasets_file': cannot read {missing}: No such file or directory"
    )


@pytest.fixture(scope="module")
def sample_cache(sample_catalog, tmp_path_factory):
    from eostats.cache import DatasetCache, build_cache
    from eostats.grids import parse_grid
    from eostats.periods import make_binning
    from eostats.sources import read_items

    path = tmp_path_factory.mktemp("failures-cache") / "c.sqlite"
    items = read_items({"type": "stac_catalog", "path": str(sample_catalog)})
    build_cache(items, parse_grid(GRID), make_binning("annual"), path, {"type": "test"}, {})
    return DatasetCache.open(path)


def test_dataset_hashes_leave_excluded_ids_out(sample_cache) -> None:
    task = TaskId("2020--P1Y", 275, 97)
    ids = sample_cache.dataset_ids(task)
    assert len(ids) == 3
    dropped = ids[1]
    hashes = sample_cache.dataset_hashes(exclude=[dropped, "not-in-the-cache"])
    remaining = "\n".join(sorted(set(ids) - {dropped}))
    assert hashes[task] == hashlib.sha1(remaining.encode()).hexdigest()
    before = sample_cache.dataset_hashes()
    assert hashes[task] != before[task]
    # 2021 tasks hold none of the 2020 scene: their fingerprints stay
    assert {t: h for t, h in hashes.items() if t.period == "2021--P1Y"} == {
        t: h for t, h in before.items() if t.period == "2021--P1Y"
    }
    # every dataset excluded: the fingerprint of no id
    assert sample_cache.dataset_hashes(exclude=ids)[task] == hashlib.sha1(b"").hexdigest()


def test_task_items_leave_excluded_ids_out(sample_cache) -> None:
    from eostats.odc_index import task_items

    task = TaskId("2020--P1Y", 275, 97)
    ids = sample_cache.dataset_ids(task)
    run = Run({"exclude_datasets": [ids[0]]})
    assert [item["id"] for item in task_items(run, sample_cache, task)] == ids[1:]


# --- memory --------------------------------------------------------------------------------------------------------


def test_memory_estimate_of_a_known_tile() -> None:
    # 10 days × 8 bytes per pixel on 256² blocks of a 512² tile with 4 output bytes per pixel, one reading thread:
    # fixed part 300 MiB + GDAL cache 256 MiB = 583,008,256; 3 block stacks 3·10·65,536·8 = 15,728,640;
    # outputs 262,144·4 = 1,048,576; the thread's 4 native days 4·65,536·8 = 2,097,152
    assert estimate_tile_memory(10, 8, (256, 256), (512, 512), 4, threads=1) == 601_882_624


def test_memory_check_names_the_task_the_estimate_the_limit_and_the_fix() -> None:
    kwargs = {
        "n_observations": 10,
        "variables": {"a": "int16", "b": "int16", "c": "float32"},  # 8 bytes per pixel
        "outputs": {"o": "float32"},
        "tile_shape": (512, 512),
        "chunk_size": 256,
        "threads": 1,
    }
    assert check_tile_memory("2021--P1Y/1/2", limit=700 * 2**20, **kwargs) == 601_882_624
    with pytest.raises(TileMemoryError) as caught:
        check_tile_memory("2021--P1Y/1/2", limit=500 * 2**20, **kwargs)
    assert str(caught.value) == (
        "task 2021--P1Y/1/2: needs about 574 MiB (10 observations × 3 variables × 256×256 px blocks), more than "
        "its memory limit 500 MiB; set a smaller chunk_size (now 256) or give the tile more memory "
        "(memory_limit, or resources.tile.mem_mb)"
    )


def test_memory_limit_comes_from_the_config_else_mem_mb() -> None:
    assert memory_limit_of({"memory_limit": "2Gi"}, mem_mb=1000) == 2 * 2**30
    assert memory_limit_of({"memory_limit": None}, mem_mb=3000) == 3_000_000_000
    assert memory_limit_of({}, mem_mb=None) == 0
    with pytest.raises(ValueError, match=r"^config key 'memory_limit': memory limit 'lots'"):
        memory_limit_of({"memory_limit": "lots"})


# --- reading errors -----------------------------------------------------------------------------------------------


@pytest.fixture
def one_scene(sample_catalog, tmp_path):
    """A private copy of one 2020 scene of the sample: its item (absolute hrefs) and its fmask file."""
    from eostats.sources import read_items

    items = list(read_items({"type": "stac_catalog", "path": str(sample_catalog)}))
    item = next(i for i in items if i["id"] == "sample_ls_089084_20200105")
    fmask = tmp_path / "fmask.tif"
    shutil.copy(item["assets"]["oa_fmask"]["href"], fmask)
    item["assets"]["oa_fmask"]["href"] = str(fmask)
    return item, fmask


def read_scene(item) -> None:
    from eostats.grids import parse_grid
    from eostats.loading import TaskReader
    from eostats.plugins import resolve_plugin

    tile = parse_grid(GRID).tile_geobox(275, 97)
    with TaskReader([item], tile, resolve_plugin("pq", {}), threads=1) as reader:
        reader.read(slice(0, 512), slice(0, 512))


def test_missing_asset_names_dataset_asset_href(one_scene) -> None:
    from eostats.loading import InputDataError

    item, fmask = one_scene
    fmask.unlink()
    with pytest.raises(InputDataError) as caught:
        read_scene(item)
    assert str(caught.value) == (
        f"dataset sample_ls_089084_20200105: asset oa_fmask ({fmask}): missing file (no such file or directory)"
    )
    assert caught.value.bad_datasets == [
        {
            "id": "sample_ls_089084_20200105",
            "asset": "oa_fmask",
            "href": str(fmask),
            "reason": "missing file (no such file or directory)",
        }
    ]


def test_a_text_file_is_not_a_geotiff(one_scene) -> None:
    from eostats.loading import InputDataError

    item, fmask = one_scene
    fmask.write_text("<html>403 Forbidden</html>\n")
    with pytest.raises(InputDataError) as caught:
        read_scene(item)
    assert caught.value.asset == "oa_fmask" and caught.value.href == str(fmask)
    assert caught.value.reason.startswith("not a GeoTIFF (GDAL cannot read it as a raster)")


def test_a_dtype_other_than_declared_is_refused(one_scene) -> None:
    from eostats.loading import InputDataError

    item, fmask = one_scene
    with rasterio.open(fmask) as src:
        profile, data = src.profile, src.read(1)
    for key in ("blockxsize", "blockysize", "tiled"):
        profile.pop(key, None)
    profile.update(driver="GTiff", dtype="int16")
    fmask.unlink()
    with rasterio.open(fmask, "w", **profile) as dst:
        dst.write(data.astype("int16"), 1)
    with pytest.raises(InputDataError) as caught:
        read_scene(item)
    assert caught.value.reason == "unexpected dtype: the file holds int16, the item declares uint8"


# --- job log lines -------------------------------------------------------------------------------------------------


def test_json_lines_stand_alone_in_a_prefixed_log() -> None:
    from eostats.tile import emit_json_line, failure_line

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("eostats.tile").warning("before")
        line = failure_line("2021--P1Y/1/2", "dataset x:\n bad", ["b", "a"], [], 1.23456, "/r.json")
        emit_json_line(line)
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("WARNING eostats.tile: before")
    last = json.loads(lines[-1])
    assert last["event"] == "tile_failed" and last["task"] == "2021--P1Y/1/2"
    assert (last["reason"], last["dataset_ids"], last["seconds"]) == (
        "dataset x: bad",
        ["a", "b"],
        {"total": 1.235},
    )
    assert last["failure_record"] == "/r.json" and handler.formatter is not None

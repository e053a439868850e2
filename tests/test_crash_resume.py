"""Crash safety for real: Snakemake is killed (SIGKILL of its whole process group, as when a node is lost) during
the sample generation, during the tile jobs and during the mosaics, resumed each time with the documented command,
and must end with outputs identical to an undisturbed run: the same files, the same pixels in every COG, the same
STAC items apart from their processing time, and no temporary leftovers.

The run is the smallest that has every stage: the tiny sample, the clear-count statistic (total and clear), one
tile, its mosaic.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from eostats.metadata import verify_sha1
from eostats.sample import SampleSpec

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("workflow")]

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
TASKS = ["2021--P1Y/275/97"]
#: the name pattern of every temporary the package writes (eostats.fileio); none may survive a resumed run
TEMPORARY = re.compile(r"^\..+\.(tmp|old|build)-[0-9a-z_]{8}")


def write_config(workdir: Path) -> Path:
    config = {
        "results": "results",
        "run_name": "crash",
        "source": {"type": "sample", "sample": SampleSpec.tiny().to_dict()},
        "grid": GRID,
        "frequency": "annual",
        "plugin": "pq",
        "plugin_config": {"filters": {}},
        "tasks": TASKS,
        "chunk_size": 256,
        "cog_opts": {"blocksize": 256},
        "resources": {
            "tile": {"threads": 1, "mem_mb": 2000},
            "mosaic": {"threads": 1, "mem_mb": 1000},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    return path


def snakemake_args(workdir: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(REPO / "profiles" / "local"),
        "--cores",
        "2",
        *extra,
    ]


def resume_command(workdir: Path) -> str:
    """The documented resume (docs/operations.md): release the killed run's lock, then the same command again
    (the profile's rerun-incomplete redoes the jobs that were running)."""
    run = " ".join(snakemake_args(workdir))
    return f"{run} --unlock && {run}"


ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def start(workdir: Path, command: str, log_name: str) -> subprocess.Popen:
    """Start ``command`` in its own session (so its process group is Snakemake and every job it started)."""
    log = open(workdir / log_name, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=workdir,
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group_when(
    proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 400
) -> None:
    """Poll ``ready()`` every 20 ms; when true, SIGKILL the whole process group and wait until it is gone."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the kill point: {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the kill point never came: {what}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(200):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"processes of the killed run are still alive ({what})")


def temporaries(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob(".*") if TEMPORARY.match(p.name))


def files(results: Path) -> list[Path]:
    """Every output file (logs and benchmark files are not outputs; .snakemake_timestamp is Snakemake's)."""
    skip = {"logs", "benchmarks"}
    return sorted(
        p
        for p in results.rglob("*")
        if p.is_file()
        and not skip & set(p.relative_to(results).parts)
        and p.name != ".snakemake_timestamp"
    )


def snapshot(workdir: Path) -> dict[str, object]:
    """What must be identical between runs, per output file (keyed by its path under results/)."""
    results = workdir / "results"
    out: dict[str, object] = {}
    for path in files(results):
        key = path.relative_to(results).as_posix()
        if path.suffix == ".tif":
            with rasterio.open(path) as src:
                out[key] = (
                    src.read(),
                    src.dtypes,
                    src.nodata,
                    src.crs.to_string(),
                    tuple(src.transform),
                    [src.overviews(b) for b in src.indexes],
                )
        elif path.suffix == ".sqlite":
            with sqlite3.connect(path) as db:
                out[key] = [
                    db.execute("SELECT * FROM tasks ORDER BY 1, 2, 3").fetchall(),
                    db.execute("SELECT COUNT(*) FROM datasets").fetchall(),
                ]
        elif path.name.endswith(".stac-item.json"):
            item = json.loads(path.read_text())
            # the one field that legitimately differs: when the tile was made (odc-stats writes the real time)
            assert re.fullmatch(
                r"\d{4}-\d\d-\d\dT[\d:.]+Z", item["properties"].pop("odc:processing_datetime")
            )
            out[key] = json.loads(json.dumps(item).replace(str(workdir), "WORKDIR"))
        else:
            out[key] = path.read_bytes().replace(str(workdir).encode(), b"WORKDIR")
    return out


def assert_nothing_partial_is_accepted(results: Path) -> None:
    """Whatever exists under a final name is whole: each STAC item's tile has every asset and a matching .sha1,
    every COG decodes, the cache opens."""
    for item_path in results.glob("*/*/x*/y*/*/*.stac-item.json"):
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            with rasterio.open(item_path.parent / asset["href"]) as src:
                src.read(1)
        sha1 = next(item_path.parent.glob("*.sha1"))
        assert verify_sha1(sha1) == [], sha1
    for tif in results.glob("*/*/mosaics/*/*.tif"):
        with rasterio.open(tif) as src:
            src.read(1, out_shape=(8, 8))
    cache = results / "tasks" / "crash.sqlite"
    if cache.exists():
        with sqlite3.connect(cache) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The undisturbed run, shared by the checks."""
    workdir = tmp_path_factory.mktemp("reference")
    write_config(workdir)
    proc = subprocess.run(
        snakemake_args(workdir), capture_output=True, text=True, env=ENV, cwd=workdir
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return workdir


def test_killed_three_times_and_resumed_gives_the_undisturbed_outputs(reference, tmp_path):
    workdir = tmp_path
    write_config(workdir)
    results = workdir / "results"
    tiles = results / "pq_ls_annual" / "0-1-0"

    # 1. during the sample generation: its staging folder has scene files in it
    proc = start(workdir, " ".join(snakemake_args(workdir)), "run-1.log")
    kill_group_when(
        proc,
        lambda: any(any(p.rglob("*.tif")) for p in results.glob(".sample.tmp-*")),
        "sample generation",
    )
    assert not (results / "sample").exists(), "the collection appears only when complete"
    assert temporaries(results), "the kill left the staging folder"
    assert_nothing_partial_is_accepted(results)

    # 2. resumed, then killed during the tile job: its folder being written (a temporary folder), else its
    #    computation past the first of its 4 blocks (chunk_size 256 of 512 px)
    def tile_in_progress() -> bool:
        logs = list(results.glob("logs/tile/*/*.log"))
        return bool(list(tiles.glob("x*/y*/.*.tmp-*"))) or any(
            "block 2 of 4" in p.read_text() for p in logs
        )

    proc = start(workdir, resume_command(workdir), "run-2.log")
    kill_group_when(proc, tile_in_progress, "tile job")
    assert not list(tiles.glob("x*/y*/*/*.stac-item.json")), "the tile was not finished"
    assert not list(tiles.glob("mosaics/*/*.tif"))
    assert_nothing_partial_is_accepted(results)

    # 3. resumed, then killed during the mosaic: its log is open or its temporary file is being filled
    proc = start(workdir, resume_command(workdir), "run-3.log")
    kill_group_when(
        proc,
        lambda: bool(
            list(tiles.glob("mosaics/*/.*.build-*")) or list(results.glob("logs/mosaic/*.log"))
        ),
        "mosaic",
    )
    assert len(list(tiles.glob("mosaics/*/*.tif"))) < 2
    assert_nothing_partial_is_accepted(results)

    # 4. the last resume runs to the end
    proc = start(workdir, resume_command(workdir), "run-4.log")
    assert proc.wait(timeout=600) == 0, (workdir / "run-4.log").read_text()[-5000:]

    assert temporaries(results) == []
    assert not any((workdir / ".snakemake" / "incomplete").iterdir())
    expected, got = snapshot(reference), snapshot(workdir)
    assert sorted(got) == sorted(expected)
    assert len([k for k in got if k.endswith(".stac-item.json")]) == 1
    assert len([k for k in got if "/mosaics/" in k]) == 2  # total and clear
    for key, want in expected.items():
        have = got[key]
        if key.endswith(".tif"):
            assert all(np.array_equal(a, b) for a, b in zip(have[:1], want[:1], strict=True)), key
            assert have[1:] == want[1:], key
        else:
            assert have == want, key


def test_an_unknown_task_id_stops_snakemake_with_one_line(reference):
    proc = subprocess.run(
        snakemake_args(reference, "-n", "--config", 'tasks=["2021--P1Y/999/999"]'),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=reference,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and 'File "' not in out, out
    errors = [line for line in out.splitlines() if line.startswith("eostats:")]
    assert errors == [
        "eostats: invalid configuration: config key 'tasks': task 2021--P1Y/999/999 is not in the cache "
        "(selector '2021--P1Y/999/999'); the task list results/tasks/crash.csv has 8 tasks "
        "(2020--P1Y/275/97 to 2021--P1Y/276/98)"
    ], out


def test_a_writer_removes_only_the_temporaries_of_its_own_final_path(tmp_path):
    """What a killed writer leaves is removed by the next writer of the same path, and nothing else."""
    from eostats.fileio import atomic_directory, write_text_atomic

    left = [
        ".crash.tmp-0a1b2c3d.sqlite",  # a cache being written
        ".crash.tmp-0a1b2c3d.sqlite-journal",  # its SQLite journal
        ".crash.build-9f8e7d6c.sqlite",
    ]
    others = [
        ".crash_b.tmp-0a1b2c3d.sqlite",  # another file's temporary
        ".crash.tmp-0a1b2c3d.csv",  # another suffix
        ".crash.tmp-short.sqlite",  # not a temporary name
        "crash.tmp-0a1b2c3d.sqlite",  # not hidden
    ]
    for name in left + others:
        (tmp_path / name).write_text("partial")
    write_text_atomic(tmp_path / "crash.sqlite", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["crash.sqlite", *others])

    # a tile folder: the staging folder (made by tempfile.mkdtemp) and a folder being replaced
    y_dir = tmp_path / "x275" / "y97"
    for name in (".2021--P1Y.tmp-k2_9zq0a", ".2021--P1Y.old-00000000", ".2020--P1Y.tmp-k2_9zq0a"):
        (y_dir / name).mkdir(parents=True)
        (y_dir / name / "part.tif").write_text("partial")
    with atomic_directory(y_dir / "2021--P1Y") as staging:
        (staging / "item.json").write_text("{}")
    assert sorted(p.name for p in y_dir.iterdir()) == [".2020--P1Y.tmp-k2_9zq0a", "2021--P1Y"]

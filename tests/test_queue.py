"""Queue mode against a real SQS server (moto on loopback): publish, workers, leases, dead letters, redrive.

The end-to-end tests run `eostats run --from-sqs` workers as subprocesses on the tiny sample with a test-only plugin
(:class:`SlowClearCounts`, by dotted path) that sleeps in ``reduce`` and drops a marker file there, so that a worker
can be killed mid-tile. Leases are short (5 s), so visibility expiry and lease renewal happen within the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from moto_server import SECRET_KEY, moto_endpoint, moto_server  # noqa: F401  (pytest fixtures)

from eostats.cache import DatasetCache, build_cache
from eostats.cli import main
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.plugins.pq import ClearCounts
from eostats.queue import (
    QueueSettings,
    create_queue_pair,
    parse_task_message,
    publish_tasks,
    receive_task_message,
    redrive_messages,
    sqs_client,
)
from eostats.sources import read_items
from eostats.taskids import TaskId

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("queue")]

TESTS = Path(__file__).resolve().parent
EOSTATS = Path(sys.executable).parent / "eostats"
GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
PQ_BANDS = ["total", "clear", "clear_2_5", "clear_0_5"]
LEASE = {"job_queue_max_lease": 5, "renew_safety_margin": 3, "future_poll_interval": 0.25}


class SlowClearCounts(ClearCounts):
    """``pq`` that leaves a marker ``{worker}-{pid}`` in ``marker_dir`` and sleeps ``sleep_s`` in each reduce."""

    def __init__(self, *, sleep_s: float = 0.0, marker_dir: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sleep_s = sleep_s
        self.marker_dir = marker_dir

    def reduce(self, xx):
        if self.marker_dir:
            worker = os.environ.get("EOSTATS_TEST_WORKER", "x")
            Path(self.marker_dir, f"{worker}-{os.getpid()}-{time.time_ns()}").touch()
        time.sleep(self.sleep_s)
        return super().reduce(xx)


# --------------------------------------------------------------------------------------------
# helpers


def make_cache(catalog: Path, path: Path) -> Path:
    source = {"type": "stac_catalog", "path": str(catalog)}
    build_cache(read_items(source), parse_grid(GRID), make_binning("annual"), path, source, {})
    return path


def write_config(path: Path, results: Path, **extra) -> Path:
    config = {
        "results": str(results),
        "grid": GRID,
        "chunk_size": 512,
        "cog_opts": {"blocksize": 256},
        **LEASE,
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return path


class Worker:
    """An `eostats` subprocess with its output in a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.heartbeat = log_dir / f"{name}.heartbeat"
        env = {**env, "EOSTATS_TEST_WORKER": name, "PYTHONPATH": str(TESTS)}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(EOSTATS), *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_dir
            )

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"worker {self.name} did not finish in {timeout} s:\n{self.log()[-4000:]}"
            ) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tiles_done(self) -> list[str]:
        return [
            json.loads(line[line.index("{") :])["task"]
            for line in self.log().splitlines()
            if '"tile_done"' in line
        ]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def messages(client, url: str) -> list[str]:
    """Bodies of every message currently visible in a queue (they are made visible again at once)."""
    bodies = []
    while True:
        got = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", [])
        if not got:
            break
        for m in got:
            bodies.append(m["Body"])
    return bodies


def check_tile_outputs(results: Path, task: TaskId, n_observations: int) -> None:
    """The STAC item lists every band, the .sha1 matches the files, and the counts are consistent."""
    tile_dir = results / "pq_ls_annual" / "0-1-0" / f"x{task.x}" / f"y{task.y}" / task.period
    prefix = f"pq_ls_annual_x{task.x}y{task.y}_{task.period}_final"
    item = json.loads((tile_dir / f"{prefix}.stac-item.json").read_text())
    assert set(PQ_BANDS) <= set(item["assets"])
    sums = dict(
        reversed(line.split()) for line in (tile_dir / f"{prefix}.sha1").read_text().splitlines()
    )
    for band in PQ_BANDS:
        name = f"{prefix}_{band}.tif"
        assert sums[name] == hashlib.sha1((tile_dir / name).read_bytes()).hexdigest()
    with rasterio.open(tile_dir / f"{prefix}_total.tif") as f:
        total = f.read(1)
    with rasterio.open(tile_dir / f"{prefix}_clear.tif") as f:
        clear = f.read(1)
    # the sample's footprints all cover the tiles' shared corner: some pixels are seen on every solar day
    assert total.max() == n_observations
    assert np.all(clear <= total)
    assert not [
        p for p in tile_dir.parent.iterdir() if p.name.startswith(".")
    ]  # no temporary leftovers


# --------------------------------------------------------------------------------------------
# SQS logic (in-process, real server)


@pytest.fixture
def aws(request: pytest.FixtureRequest):
    """The session's moto server; while it runs, boto3 in this process and in children talks to it."""
    return request.getfixturevalue("moto_server")


@pytest.fixture
def queue_pair(aws):
    client = sqs_client()
    main_url, dead_url = create_queue_pair(f"q-{uuid.uuid4().hex[:8]}", client=client)
    return client, main_url, dead_url


def test_publish_sends_odc_stats_bodies_in_batches_of_ten(queue_pair):
    client, url, _ = queue_pair
    calls = []
    client.meta.events.register("before-call.sqs.SendMessageBatch", lambda **kw: calls.append(1))
    tasks = [TaskId("2020--P1Y", x, -3) for x in range(23)]
    assert publish_tasks(client, url, "/data/c.sqlite", tasks) == 23
    assert len(calls) == 3
    bodies = sorted(
        (json.loads(b)["filedb"], json.loads(b)["tile_idx"]) for b in messages(client, url)
    )
    assert bodies == sorted(("/data/c.sqlite", f"2020--P1Y/{x:02d}/-3") for x in range(23))


def test_message_bodies_round_trip_and_bad_ones_are_named():
    body = json.dumps({"filedb": "s3://b/c.sqlite", "tile_idx": "2015--P1Y/41/13"})
    message = parse_task_message(body)
    assert (message.filedb, message.task) == ("s3://b/c.sqlite", TaskId("2015--P1Y", 41, 13))
    with pytest.raises(ValueError, match="not JSON"):
        parse_task_message("2015--P1Y/41/13")
    with pytest.raises(ValueError, match="no 'filedb'"):
        parse_task_message('{"tile_idx": "2015--P1Y/41/13"}')
    with pytest.raises(ValueError, match="'nope' is not a period label"):
        parse_task_message('{"filedb": "c.db", "tile_idx": "nope/1/2"}')


def test_lease_renewal_release_and_dead_letter_after_three_receives(queue_pair):
    client, url, dead = queue_pair
    client.send_message(QueueUrl=url, MessageBody="m1")
    body, lease = receive_task_message(client, url, lease_s=2, wait_s=1)
    assert body == "m1" and lease.receive_count == 1
    assert not lease.extend_if_needed(
        30, margin_s=1, now=lease.deadline - 1.5
    )  # plenty left: no call
    assert lease.extend_if_needed(30, margin_s=1, now=lease.deadline - 0.5)
    time.sleep(2.5)  # past the first 2 s lease: still hidden, because it was renewed to 30 s
    assert receive_task_message(client, url, lease_s=2, wait_s=0) is None
    lease.release()  # visible again at once
    _, lease = receive_task_message(client, url, lease_s=30, wait_s=1)
    assert lease.receive_count == 2
    lease.release()
    _, lease = receive_task_message(client, url, lease_s=30, wait_s=1)
    assert lease.receive_count == 3
    lease.release()
    assert (
        receive_task_message(client, url, lease_s=30, wait_s=1) is None
    )  # 4th receive: moved away
    assert messages(client, dead) == ["m1"]


def test_redrive_moves_bodies_and_respects_limit(queue_pair):
    client, url, dead = queue_pair
    for i in range(5):
        client.send_message(QueueUrl=dead, MessageBody=f"m{i}")
    assert redrive_messages(client, dead, url, limit=3) == 3
    assert redrive_messages(client, dead, url) == 2
    assert sorted(messages(client, url)) == [f"m{i}" for i in range(5)]
    assert messages(client, dead) == []


def test_settings_refuse_leases_that_would_expire_between_polls():
    QueueSettings(lease=300, renew_margin=30, poll_interval=5)
    with pytest.raises(ValueError, match="renew_safety_margin"):
        QueueSettings(lease=30, renew_margin=30)
    with pytest.raises(ValueError, match="future_poll_interval"):
        QueueSettings(lease=10, renew_margin=5, poll_interval=6)


def test_cli_queue_errors_are_one_line(aws, sample_catalog, tmp_path):
    cache = make_cache(sample_catalog, tmp_path / "c.sqlite")
    runner = CliRunner()
    for args in (
        ["publish-tasks", str(cache), "no-such-queue"],
        ["redrive-queue", "no-such-queue", "other"],
        ["run", "--from-sqs", "no-such-queue"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == "Error: SQS queue 'no-such-queue' does not exist"


# --------------------------------------------------------------------------------------------
# workers end to end


def test_two_workers_one_killed_mid_tile_every_task_done_exactly_once(
    aws, sample_catalog, tmp_path
):
    cache = make_cache(sample_catalog, tmp_path / "tasks.sqlite")
    observations = {r.task_id: r.n_days_solar for r in DatasetCache.open(cache).tasks()}
    markers = tmp_path / "markers"
    markers.mkdir()
    results = tmp_path / "results"
    plugin = {"sleep_s": 2.0, "marker_dir": str(markers)}
    config = write_config(
        tmp_path / "slow.yaml", results, plugin="test_queue.SlowClearCounts", plugin_config=plugin
    )
    client = sqs_client()
    name = f"work-{uuid.uuid4().hex[:8]}"
    url, dead = create_queue_pair(name, client=client)
    result = CliRunner().invoke(main, ["publish-tasks", str(cache), name])
    assert result.exit_code == 0 and f"published {len(observations)} task(s)" in result.stdout

    env = aws.env()
    args = ["run", "--from-sqs", name, "--config", str(config)]
    a = Worker("A", [*args, "--heartbeat-filepath", str(tmp_path / "A.heartbeat")], tmp_path, env)
    b = Worker("B", [*args, "--heartbeat-filepath", str(tmp_path / "B.heartbeat")], tmp_path, env)
    marker = wait_for(lambda: sorted(markers.glob("A-*")), 120, "worker A to reach reduce")[0]
    child_pid = int(marker.name.split("-")[1])
    assert psutil.Process(child_pid).ppid() == a.process.pid  # the tile runs in A's child process
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    wait_for(lambda: gone(child_pid), 10, "the killed worker's task process to die with it")
    killed = re.findall(r"task (\S+): started", a.log())
    assert len(killed) == 1 and a.tiles_done() == []

    c = Worker(
        "C", [*args, "--heartbeat-filepath", str(tmp_path / "C.heartbeat")], tmp_path, env
    )  # the restart
    assert b.wait(240) == 0, b.log()[-3000:]
    assert c.wait(120) == 0, c.log()[-3000:]

    done = Counter(b.tiles_done() + c.tiles_done())
    assert done == Counter(
        {str(t): 1 for t in observations}
    )  # every task exactly once, the killed one too
    assert killed[0] in done
    assert (
        "lease renewed" in b.log() + c.log()
    )  # tiles outlast the 5 s lease: renewals kept them leased
    for worker in (b, c):
        assert re.search(r"T:(\d+), OK:\1, S:0, E:0", worker.log())
        stamp = datetime.fromisoformat(Path(worker.heartbeat).read_text().strip())
        assert 0 <= (datetime.now(UTC) - stamp).total_seconds() < 120
        assert SECRET_KEY not in worker.log()
    assert messages(client, url) == [] and messages(client, dead) == []
    for task, n in observations.items():
        check_tile_outputs(results, task, n)


def test_broken_task_lands_in_dead_letter_queue_after_three_tries_then_redrive(
    aws, sample_catalog, tmp_path
):
    broken = tmp_path / "broken"
    shutil.copytree(sample_catalog.parent, broken)
    cache = make_cache(broken / sample_catalog.name, tmp_path / "broken.sqlite")
    db = DatasetCache.open(cache)
    bad_task, good_task = TaskId("2020--P1Y", 275, 97), TaskId("2021--P1Y", 276, 98)
    victim = "sample_ls_089084_20201222"  # in every 2020 task, in no 2021 task
    assert victim in db.dataset_ids(bad_task) and victim not in db.dataset_ids(good_task)
    for tif in broken.rglob(f"{victim}_*.tif"):
        tif.unlink()
    results = tmp_path / "results"
    config = write_config(tmp_path / "pq.yaml", results, plugin="pq")
    client = sqs_client()
    name = f"dlq-{uuid.uuid4().hex[:8]}"
    url, dead = create_queue_pair(name, client=client)
    runner = CliRunner()
    assert (
        runner.invoke(
            main, ["publish-tasks", str(cache), name, str(bad_task), str(good_task)]
        ).exit_code
        == 0
    )

    worker = Worker("W", ["run", "--from-sqs", name, "--config", str(config)], tmp_path, aws.env())
    assert worker.wait(180) == 1  # a task errored
    log = worker.log()
    assert re.findall(rf"task {re.escape(str(bad_task))}: started \(receive (\d)\)", log) == [
        "1",
        "2",
        "3",
    ]
    assert len(re.findall(rf"task {re.escape(str(bad_task))}: failed: .*{victim}", log)) == 3
    assert "T:4, OK:1, S:0, E:3" in log
    assert worker.tiles_done() == [str(good_task)]
    check_tile_outputs(results, good_task, db.task(good_task).n_days_solar)
    assert not (results / "pq_ls_annual" / "0-1-0" / "x275" / "y97" / "2020--P1Y").exists()
    assert messages(client, url) == []

    result = runner.invoke(main, ["redrive-queue", f"{name}-deadletter", name, "--dryrun"])
    assert result.exit_code == 0 and result.stdout.startswith("1 message(s) in ")
    result = runner.invoke(main, ["redrive-queue", f"{name}-deadletter", name])
    assert result.exit_code == 0 and result.stdout.startswith("moved 1 message(s)")
    back = messages(client, url)
    assert [json.loads(b) for b in back] == [{"filedb": str(cache), "tile_idx": str(bad_task)}]
    assert messages(client, dead) == []


def test_max_processing_time_stops_the_task_process(sample_catalog, tmp_path):
    cache = make_cache(sample_catalog, tmp_path / "tasks.sqlite")
    markers = tmp_path / "markers"
    markers.mkdir()
    results = tmp_path / "results"
    plugin = {"sleep_s": 60, "marker_dir": str(markers)}
    config = write_config(
        tmp_path / "slow.yaml", results, plugin="test_queue.SlowClearCounts", plugin_config=plugin
    )
    args = ["run", str(cache), "0", "--config", str(config), "--max-processing-time", "12"]
    worker = Worker(
        "T",
        [*args, "--heartbeat-filepath", str(tmp_path / "T.heartbeat")],
        tmp_path,
        dict(os.environ),
    )
    t0 = time.monotonic()
    assert worker.wait(120) == 1
    assert time.monotonic() - t0 < 60  # the 60 s sleep was cut short
    child_pid = int(next(markers.glob("T-*")).name.split("-")[1])
    assert gone(child_pid)
    cancelled = re.search(
        r"task 2020--P1Y/275/97: failed: cancelled after (\d+) s \(max_processing_time 12 s\)",
        worker.log(),
    )
    assert cancelled and 12 <= int(cancelled[1]) <= 20, worker.log()[-2000:]
    assert "T:1, OK:0, S:0, E:1" in worker.log()
    assert (tmp_path / "T.heartbeat").is_file()
    assert not results.exists() or not list(results.rglob("*.stac-item.json"))


def test_s3_output_location_uploads_the_tile_stac_item_last(
    aws, sample_catalog, tmp_path, monkeypatch
):
    import boto3

    cache = make_cache(sample_catalog, tmp_path / "tasks.sqlite")
    config = write_config(tmp_path / "pq.yaml", tmp_path / "results", plugin="pq")
    s3 = boto3.client("s3")
    bucket = f"out-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    uploads = []  # keys in the order the tile's PutObject calls were made (clients from the default session)
    monkeypatch.setattr(
        boto3, "DEFAULT_SESSION", boto3.session.Session()
    )  # a private one for this test
    boto3.DEFAULT_SESSION.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **kw: uploads.append(params["Key"])
    )
    location = f"s3://{bucket}/stats/{{product}}/{{version}}"
    runner = CliRunner()
    prefix = "stats/pq_ls_annual/0-1-0/x275/y97/2020--P1Y/pq_ls_annual_x275y97_2020--P1Y_final"

    result = runner.invoke(
        main, ["run", str(cache), "0", "--config", str(config), "--location", location]
    )
    assert result.exit_code == 0, result.output
    keys = {o["Key"]: o for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert set(keys) == {f"{prefix}_{b}.tif" for b in PQ_BANDS} | {
        f"{prefix}.sha1",
        f"{prefix}.stac-item.json",
    }
    item = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}.stac-item.json")["Body"].read())
    assert [link["href"] for link in item["links"] if link["rel"] == "self"] == [
        f"s3://{bucket}/{prefix}.stac-item.json"
    ]
    assert {a["href"] for a in item["assets"].values()} >= {
        f"pq_ls_annual_x275y97_2020--P1Y_final_{b}.tif" for b in PQ_BANDS
    }
    sums = s3.get_object(Bucket=bucket, Key=f"{prefix}.sha1")["Body"].read().decode()
    for line in sums.splitlines():
        digest, name = line.split()
        body = s3.get_object(Bucket=bucket, Key=f"{prefix.rsplit('/', 1)[0]}/{name}")["Body"].read()
        assert hashlib.sha1(body).hexdigest() == digest
    assert sorted(uploads) == sorted(keys)
    assert (
        uploads[-1] == f"{prefix}.stac-item.json"
    )  # the item last: its presence means the tile is complete

    result = runner.invoke(
        main, ["run", str(cache), "0", "--config", str(config), "--location", location, "--dryrun"]
    )
    assert result.stdout.strip().endswith(f"s3://{bucket}/{prefix}.stac-item.json (skip)")
    result = runner.invoke(
        main, ["run", str(cache), "0", "--config", str(config), "--location", location]
    )
    assert result.exit_code == 0 and "T:1, OK:0, S:1, E:0" in result.stderr

    # a dataset cache on S3 is downloaded once and read like a local one
    s3.upload_file(str(cache), bucket, "tasks/tasks.sqlite")
    args = ["publish-tasks", f"s3://{bucket}/tasks/tasks.sqlite", "q", "-3:", "--dryrun"]
    result = runner.invoke(main, args)
    assert result.stdout.splitlines() == [
        "2021--P1Y/+275/+098",
        "2021--P1Y/+276/+097",
        "2021--P1Y/+276/+098",
    ]
    result = runner.invoke(
        main, ["publish-tasks", f"s3://{bucket}/tasks/none.sqlite", "q", "--dryrun"]
    )
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: dataset cache s3://{bucket}/tasks/none.sqlite does not exist"
    )


def test_sigterm_stops_the_tile_and_releases_its_message_at_once(aws, sample_catalog, tmp_path):
    cache = make_cache(sample_catalog, tmp_path / "tasks.sqlite")
    markers = tmp_path / "markers"
    markers.mkdir()
    plugin = {"sleep_s": 60, "marker_dir": str(markers)}
    config = write_config(
        tmp_path / "slow.yaml",
        tmp_path / "results",
        plugin="test_queue.SlowClearCounts",
        plugin_config=plugin,
        job_queue_max_lease=60,
        renew_safety_margin=10,
    )
    client = sqs_client()
    name = f"term-{uuid.uuid4().hex[:8]}"
    url, _ = create_queue_pair(name, client=client)
    publish_tasks(client, url, str(cache), [TaskId("2021--P1Y", 275, 98)])
    worker = Worker("S", ["run", "--from-sqs", name, "--config", str(config)], tmp_path, aws.env())
    marker = wait_for(lambda: sorted(markers.glob("S-*")), 120, "the worker to reach reduce")[0]
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 128 + signal.SIGTERM
    assert gone(int(marker.name.split("-")[1]))
    # released, not left to its 60 s lease: visible now, on its second receive
    got = client.receive_message(
        QueueUrl=url, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=1
    )
    (message,) = got["Messages"]
    assert json.loads(message["Body"])["tile_idx"] == "2021--P1Y/275/98"
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"

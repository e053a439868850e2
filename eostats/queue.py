"""Queue mode: tasks as SQS messages, and the supervision of one running task.

odc-stats users fill a queue with one message per task (``eostats publish-tasks``) and run N identical workers
(``eostats run --from-sqs QUEUE``), typically a Kubernetes Job with ``parallelism: N``. The message body is
odc-stats' JSON ``{"filedb": "<dataset cache>", "tile_idx": "<period>/<x>/<y>"}``.

A worker takes one message at a time with a visibility timeout of ``lease`` seconds (odc-stats'
``job_queue_max_lease``, 300 s) and runs the tile in a **child process** while its main loop, every
``poll_interval`` seconds (``future_poll_interval``):

* writes the heartbeat file (a UTC timestamp; a liveness probe checks its age);
* renews the lease (``ChangeMessageVisibility``) when fewer than ``renew_margin`` seconds remain
  (``renew_safety_margin``);
* stops the child when ``max_processing_time`` seconds have passed since the message was received, and counts
  the task as failed.

On success the message is deleted; on failure its visibility is set to 0 so that any worker retries it at once.
After ``maxReceiveCount`` receives (3, set on the queue by :func:`create_queue_pair`) SQS moves it to the
dead-letter queue; ``eostats redrive-queue`` moves messages back.

Why a child process rather than a thread: a thread cannot be stopped when it runs past its time, and a stuck tile
would hold the worker forever. On Linux the child is forked from the worker, which has imported the tile code
already, so a task starts in milliseconds. A child dies with its worker (``PR_SET_PDEATHSIG``, plus a watchdog
thread), so a worker killed with SIGKILL leaves nothing running that could write the tile a second time.

The worker exits when the queue holds no message at all, neither visible nor in flight (odc-stats exits at the
first empty receive, which strands the message of a worker that died: its lease expires after everybody left).

boto3 clients come from the usual AWS chain (environment, config files, instance roles); the endpoint from
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL_S3``, which boto3 reads itself. Nothing here
logs credentials or client configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from eostats.taskids import TaskId, parse_task_id

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_RECEIVE_COUNT",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_RENEW_MARGIN_S",
    "QueueCounts",
    "QueueError",
    "QueueLease",
    "QueueSettings",
    "RunCounts",
    "TaskMessage",
    "TaskOutcome",
    "TileJob",
    "configure_logging",
    "create_queue_pair",
    "describe_aws_error",
    "local_cache_path",
    "output_exists",
    "parse_task_message",
    "publish_tasks",
    "queue_counts",
    "queue_url",
    "receive_task_message",
    "redrive_messages",
    "run_queue_worker",
    "run_supervised",
    "run_tile_job",
    "sqs_client",
    "task_message_body",
    "upload_task_directory",
    "write_heartbeat",
]

log = logging.getLogger("eostats.queue")

DEFAULT_LEASE_S = 300
"""Visibility timeout (s) set at receive and at each renewal (odc-stats ``job_queue_max_lease``)."""
DEFAULT_RENEW_MARGIN_S = 30
"""Renew the lease when fewer seconds than this remain (odc-stats ``renew_safety_margin``)."""
DEFAULT_POLL_INTERVAL_S = 5.0
"""Seconds between two looks at a running task (odc-stats ``future_poll_interval``)."""
DEFAULT_MAX_RECEIVE_COUNT = 3
"""Receives before SQS moves a message to the dead-letter queue."""
SQS_BATCH = 10
"""Most messages one SendMessageBatch / DeleteMessageBatch / ReceiveMessage call takes."""
_MAX_LONG_POLL_S = 20


class QueueError(RuntimeError):
    """A queue that cannot be used (missing, unreachable, no credentials); the message names it."""


# --------------------------------------------------------------------------------------------
# Clients, queues


def sqs_client(queue: str | None = None) -> Any:
    """A boto3 SQS client from the usual AWS configuration chain.

    When no region is configured and ``queue`` is an AWS queue URL (``https://sqs.<region>.amazonaws.com/...``),
    the region is taken from the URL.
    """
    import boto3
    import botocore.exceptions

    session = boto3.session.Session()
    region = session.region_name
    if region is None and queue and queue.startswith("https://sqs."):
        region = urlparse(queue).hostname.split(".")[1]  # type: ignore[union-attr]
    try:
        return session.client("sqs", region_name=region)
    except botocore.exceptions.NoRegionError:
        raise QueueError(
            "no AWS region configured for SQS: set AWS_DEFAULT_REGION (or AWS_REGION), or pass the queue URL"
        ) from None


def queue_url(client: Any, queue: str) -> str:
    """The URL of ``queue``, given as a name or a URL; QueueError naming it when it does not exist."""
    if queue.startswith(("https://", "http://")):
        return queue
    try:
        return client.get_queue_url(QueueName=queue)["QueueUrl"]
    except Exception as err:
        raise QueueError(describe_aws_error(err, f"SQS queue {queue!r}")) from None


def describe_aws_error(err: Exception, what: str) -> str:
    import botocore.exceptions

    if isinstance(err, botocore.exceptions.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            return f"{what} does not exist"
        if code in ("NoSuchBucket", "404", "NoSuchKey"):
            return f"{what} does not exist"
        message = err.response.get("Error", {}).get("Message", "")
        return f"{what}: {code} {message}".strip()
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return f"{what}: no AWS credentials found (environment, ~/.aws or instance role)"
    if isinstance(err, botocore.exceptions.EndpointConnectionError):
        return f"{what}: cannot reach the endpoint ({err})"
    return f"{what}: {type(err).__name__}: {err}"


def create_queue_pair(
    name: str,
    *,
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
    visibility_timeout: int = DEFAULT_LEASE_S,
    client: Any = None,
) -> tuple[str, str]:
    """Create queue ``name`` and its dead-letter queue ``{name}-deadletter``; return both URLs.

    The queue's redrive policy sends a message to the dead-letter queue once it has been received
    ``max_receive_count`` times without being deleted. Existing queues with the same attributes are reused.
    """
    client = client or sqs_client()
    dead = client.create_queue(
        QueueName=f"{name}-deadletter", Attributes={"MessageRetentionPeriod": str(14 * 86400)}
    )["QueueUrl"]
    dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(int(max_receive_count))}
    main = client.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(int(visibility_timeout)),
            "RedrivePolicy": json.dumps(policy),
        },
    )["QueueUrl"]
    return main, dead


@dataclass(frozen=True)
class QueueCounts:
    """SQS' approximate message counts of a queue."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def queue_counts(client: Any, url: str) -> QueueCounts:
    """Approximate numbers of visible, in-flight (received, not deleted) and delayed messages."""
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueCounts(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


# --------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True)
class TaskMessage:
    """A task message's content: the dataset cache (path or ``s3://`` URI) and the task."""

    filedb: str
    task: TaskId


def task_message_body(filedb: str, task: TaskId) -> str:
    """odc-stats' message body ``{"filedb": ..., "tile_idx": "period/xx/yy"}``."""
    return json.dumps({"filedb": filedb, "tile_idx": str(task)})


def parse_task_message(body: str) -> TaskMessage:
    """Read a task message body; ValueError naming the problem (and quoting the body) when it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError(f"message body is not JSON: {body[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tile_idx"), str):
        raise ValueError(f"message body has no 'tile_idx': {body[:200]!r}")
    filedb = data.get("filedb")
    if not isinstance(filedb, str) or not filedb:
        raise ValueError(f"message body has no 'filedb': {body[:200]!r}")
    return TaskMessage(filedb=filedb, task=parse_task_id(data["tile_idx"]))


def publish_tasks(client: Any, url: str, filedb: str, tasks: Iterable[TaskId]) -> int:
    """Send one message per task, ten per SendMessageBatch call; return the number sent.

    Raises QueueError naming the queue and the first refused task when SQS refuses part of a batch.
    """
    sent = 0
    batch: list[TaskId] = []

    def flush() -> None:
        nonlocal sent
        entries = [
            {"Id": str(i), "MessageBody": task_message_body(filedb, task)}
            for i, task in enumerate(batch)
        ]
        response = client.send_message_batch(QueueUrl=url, Entries=entries)
        failed = response.get("Failed") or []
        if failed:
            first = failed[0]
            raise QueueError(
                f"SQS queue {url} refused {len(failed)} message(s), first task "
                f"{batch[int(first['Id'])]}: {first.get('Code')} {first.get('Message', '')}".strip()
            )
        sent += len(batch)
        batch.clear()

    for task in tasks:
        batch.append(task)
        if len(batch) == SQS_BATCH:
            flush()
    if batch:
        flush()
    return sent


def redrive_messages(client: Any, from_url: str, to_url: str, limit: int | None = None) -> int:
    """Move messages from one queue to another (dead-letter queue back to the main queue); return how many.

    Each batch is sent to ``to_url`` before it is deleted from ``from_url``, so a crash in between duplicates a
    message rather than losing it. Stops when a receive returns nothing or ``limit`` messages have moved.
    Message attributes are kept; receive counts start again from zero in the destination.
    """
    moved = 0
    while limit is None or moved < limit:
        want = SQS_BATCH if limit is None else min(SQS_BATCH, limit - moved)
        messages = client.receive_message(
            QueueUrl=from_url,
            MaxNumberOfMessages=want,
            VisibilityTimeout=60,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = m["MessageAttributes"]
            entries.append(entry)
        response = client.send_message_batch(QueueUrl=to_url, Entries=entries)
        sent_ids = {s["Id"] for s in response.get("Successful", [])}
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if str(i) in sent_ids
        ]
        if done:
            client.delete_message_batch(QueueUrl=from_url, Entries=done)
        moved += len(done)
        if len(done) < len(messages):
            failed = response.get("Failed") or [{}]
            raise QueueError(
                f"SQS queue {to_url} refused {len(messages) - len(done)} redriven message(s): "
                f"{failed[0].get('Code', '')} {failed[0].get('Message', '')}".strip()
            )
    return moved


@dataclass
class QueueLease:
    """One received message and its visibility deadline (``time.monotonic`` seconds)."""

    client: Any
    url: str
    receipt_handle: str
    received_at: float
    deadline: float
    receive_count: int = 1
    task: TaskId | None = None  # for log lines, once the body is read

    def extend_if_needed(self, lease_s: float, margin_s: float, now: float | None = None) -> bool:
        """Renew the visibility to ``lease_s`` seconds from now when fewer than ``margin_s`` remain."""
        now = time.monotonic() if now is None else now
        if self.deadline - now >= margin_s:
            return False
        self.client.change_message_visibility(
            QueueUrl=self.url,
            ReceiptHandle=self.receipt_handle,
            VisibilityTimeout=int(math.ceil(lease_s)),
        )
        self.deadline = now + lease_s
        log.info("task %s: lease renewed for %g s", self.task or "(unknown)", lease_s)
        return True

    def delete(self) -> None:
        """The task is done (or skipped): remove the message for good."""
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=self.receipt_handle)

    def release(self) -> None:
        """The task failed: make the message visible again at once, so any worker retries it."""
        self.client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=self.receipt_handle, VisibilityTimeout=0
        )


def receive_task_message(
    client: Any, url: str, lease_s: float, wait_s: float = 1.0
) -> tuple[str, QueueLease] | None:
    """Receive one message with visibility ``lease_s``; ``(body, lease)`` or None when none came in ``wait_s``."""
    wait = max(0, min(_MAX_LONG_POLL_S, int(math.ceil(wait_s))))
    response = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=1,
        VisibilityTimeout=int(math.ceil(lease_s)),
        WaitTimeSeconds=wait,
        AttributeNames=["ApproximateReceiveCount"],
    )
    messages = response.get("Messages") or []
    if not messages:
        return None
    m = messages[0]
    now = time.monotonic()
    count = int((m.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
    return m["Body"], QueueLease(client, url, m["ReceiptHandle"], now, now + lease_s, count)


# --------------------------------------------------------------------------------------------
# Files: caches and outputs that may live on S3


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def output_exists(path: str) -> bool:
    """Whether an output file exists: a local path (or ``file://`` URI) or an ``s3://`` object (HEAD request)."""
    if path.startswith("s3://"):
        import boto3
        import botocore.exceptions

        bucket, key = _split_s3(path)
        try:
            boto3.client("s3").head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    if path.startswith("file://"):
        path = urlparse(path).path
    return Path(path).exists()


_DOWNLOADED: dict[str, Path] = {}
_DOWNLOAD_LOCK = threading.Lock()


def local_cache_path(filedb: str, workdir: Path | None = None) -> Path:
    """A local path of the dataset cache ``filedb``: the path itself, or an ``s3://`` object downloaded once.

    Downloads go to ``workdir`` (default: a private temporary directory of this process) and are reused for
    the same URI, as odc-stats does. Raises FileNotFoundError naming a missing local file or S3 object.
    """
    if not filedb.startswith("s3://"):
        path = Path(urlparse(filedb).path if filedb.startswith("file://") else filedb)
        if not path.is_file():
            raise FileNotFoundError(f"dataset cache {filedb} does not exist")
        return path
    with _DOWNLOAD_LOCK:
        if filedb in _DOWNLOADED and _DOWNLOADED[filedb].is_file():
            return _DOWNLOADED[filedb]
        import boto3

        bucket, key = _split_s3(filedb)
        target_dir = workdir or Path(tempfile.mkdtemp(prefix="eostats-cache-"))
        target = target_dir / f"{len(_DOWNLOADED)}-{Path(key).name}"
        try:
            boto3.client("s3").download_file(bucket, key, str(target))
        except Exception as err:
            raise FileNotFoundError(describe_aws_error(err, f"dataset cache {filedb}")) from None
        _DOWNLOADED[filedb] = target
        log.info("dataset cache %s downloaded to %s", filedb, target)
        return target


def write_heartbeat(path: str | Path) -> None:
    """Write the current UTC time (ISO 8601) to ``path``, atomically, for a liveness probe."""
    from eostats.fileio import write_text_atomic

    write_text_atomic(path, datetime.now(UTC).isoformat(timespec="seconds") + "\n")


# --------------------------------------------------------------------------------------------
# Supervision of one task in a child process


@dataclass(frozen=True)
class TileJob:
    """What a child process needs to run one task: a validated run config, a local cache path, the task."""

    config: Mapping[str, Any]
    cache_path: str
    task: TaskId
    threads: int = 1


@dataclass
class TaskOutcome:
    """How a task ended: ``done`` (with the tile report), ``skipped`` (output exists) or ``failed`` (error)."""

    task: TaskId | None
    status: Literal["done", "skipped", "failed"]
    error: str | None = None
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    #: a failure's details: which limit stopped it ("time", "memory"), else the task's own exception — its
    #: message, class name, unusable datasets (``{"id", "asset", "href", "reason"}``) and traceback
    limit: Literal["time", "memory"] | None = None
    message: str | None = None
    error_type: str | None = None
    bad_datasets: list[dict] = field(default_factory=list)
    traceback: str | None = None


@dataclass
class RunCounts:
    """odc-stats' summary ``T:<total>, OK:<done>, S:<skipped>, E:<errored>``."""

    done: int = 0
    skipped: int = 0
    errored: int = 0

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.errored

    def add(self, outcome: TaskOutcome) -> None:
        if outcome.status == "done":
            self.done += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        else:
            self.errored += 1

    def __str__(self) -> str:
        return f"T:{self.total}, OK:{self.done}, S:{self.skipped}, E:{self.errored}"


_CONTENT_TYPES = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".json": "application/json",
    ".sha1": "text/plain",
}


def run_tile_job(job: TileJob) -> Any:
    """Run one task with :func:`eostats.tile.run_tile` (what the Snakemake tile rule calls); returns its report.

    Scenes on ``s3://`` at a non-AWS endpoint are read through GDAL with the endpoint from ``AWS_ENDPOINT_URL``.
    An ``s3://`` output location is written to a private local directory first and then uploaded, the STAC item
    last (so that, as on disk, its presence means the tile is complete), with its hrefs pointing at the objects.
    """
    from eostats.s3 import configure_gdal_s3
    from eostats.tile import run_tile
    from eostats.workflow import Run

    configure_gdal_s3()
    run = Run(dict(job.config))
    if not run.product.location.startswith("s3://"):
        return run_tile(run, job.cache_path, job.task, threads=job.threads)
    with tempfile.TemporaryDirectory(prefix="eostats-tile-") as staging:
        staged = Run({**job.config, "output_location": staging})
        report = run_tile(staged, job.cache_path, job.task, threads=job.threads)
        remote_dir = run.product.task_dir(job.task)
        report.outputs = upload_task_directory(
            Path(staged.product.task_dir(job.task)), remote_dir, staging, run.product.location
        )
        report.output_dir = remote_dir
    return report


def upload_task_directory(
    local_dir: Path, remote_dir: str, local_root: str, remote_root: str
) -> list[str]:
    """Upload a finished task directory to ``remote_dir`` (``s3://bucket/key``), the STAC item last.

    The STAC item's hrefs under ``local_root`` are rewritten to the same paths under ``remote_root``.
    Returns the object URIs written.
    """
    import boto3

    from eostats.s3 import hrefs_to_storage

    s3 = boto3.client("s3")
    files = sorted(p for p in local_dir.iterdir() if p.is_file())
    items = [p for p in files if p.name.endswith(".stac-item.json")]
    uploaded = []
    for path in [p for p in files if p not in items] + items:
        bucket, key = _split_s3(f"{remote_dir.rstrip('/')}/{path.name}")
        extra = {"ContentType": _CONTENT_TYPES.get(path.suffix, "application/octet-stream")}
        if path in items:
            item = hrefs_to_storage(json.loads(path.read_text()), local_root, remote_root)
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(item, indent=2).encode(), **extra)
        else:
            s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
        uploaded.append(f"s3://{bucket}/{key}")
    return uploaded


def configure_logging(eostats_level: int = logging.INFO) -> None:
    """Log to stderr: ``eostats`` loggers at ``eostats_level``, everything else from WARNING (rasterio's GDAL
    notes about each reprojected block from ERROR unless debugging)."""
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("eostats").setLevel(eostats_level)
    logging.getLogger("rasterio").setLevel(
        logging.WARNING if eostats_level <= logging.DEBUG else logging.ERROR
    )
    logging.captureWarnings(True)


def _die_with_parent() -> None:
    """Make this child die when its parent, the worker, goes away (even by SIGKILL)."""
    parent_pid = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if parent_pid == 1 or os.getppid() != parent_pid:  # orphaned before prctl took effect
        os._exit(1)

    def watchdog() -> None:  # other platforms, and belt and braces
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _child_main(conn: multiprocessing.connection.Connection, job: TileJob, log_level: int) -> None:
    _die_with_parent()
    if _context().get_start_method() != "fork":
        configure_logging(log_level)  # a forked child inherits the worker's logging
    try:
        conn.send(("ok", asdict(run_tile_job(job))))
    except BaseException as err:  # everything must reach the parent as one line
        logging.getLogger("eostats.queue").debug("task %s failed", job.task, exc_info=True)
        message = str(err) or type(err).__name__
        details = {
            "message": message,
            "error_type": type(err).__name__,
            "bad_datasets": list(getattr(err, "bad_datasets", None) or []),
        }
        conn.send(("error", f"{type(err).__name__}: {message}", traceback.format_exc(), details))
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """Fork on Linux: the worker has imported the tile code already and runs no threads of its own, so a task's
    process starts at once and the worker is its direct parent (``PR_SET_PDEATHSIG``). Spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _resident_bytes(process: multiprocessing.process.BaseProcess) -> int:
    """Resident memory of a child process and its own children (0 once it is gone)."""
    import psutil

    try:
        proc = psutil.Process(process.pid)
        children = proc.children(recursive=True)
        return proc.memory_info().rss + sum(c.memory_info().rss for c in children)
    except (psutil.Error, TypeError):
        return 0


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(10)


def run_supervised(
    job: TileJob,
    *,
    started: float | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    max_processing_time: float = 0,
    heartbeat: str | Path | None = None,
    on_poll: Callable[[], None] | None = None,
    memory_limit: int = 0,
) -> TaskOutcome:
    """Run ``job`` in a child process and watch it; never raises for a failure of the task itself.

    ``memory_limit`` (bytes, 0: none; odc-stats' ``memory_limit``): the child is stopped and the task failed once
    its resident memory exceeds it (checked at least every second).

    Every ``poll_interval`` seconds: write ``heartbeat`` (if given), call ``on_poll`` (lease renewal), and stop
    the child once ``max_processing_time`` seconds (0: no limit) have passed since ``started``
    (``time.monotonic``; default now — for a queue task, the receive time, as in odc-stats). A child that dies
    without a word (killed, out of memory) is a failure naming its exit code. An exception raised here (a
    signal in the worker) stops the child before it propagates.
    """
    started = time.monotonic() if started is None else started
    import eostats.tile  # noqa: F401  (imported once here, inherited by every forked task)

    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child_main,
        args=(sender, job, log.getEffectiveLevel()),
        name=f"eostats-task-{job.task.slug}",
        daemon=True,
    )
    process.start()
    sender.close()
    result: tuple | None = None
    try:
        while True:
            if heartbeat:
                write_heartbeat(heartbeat)
            if on_poll is not None:
                on_poll()
            elapsed = time.monotonic() - started
            if max_processing_time and elapsed > max_processing_time:
                _stop(process)
                return TaskOutcome(
                    job.task,
                    "failed",
                    error=f"cancelled after {elapsed:.0f} s (max_processing_time {max_processing_time:g} s)",
                    seconds=elapsed,
                    limit="time",
                )
            if memory_limit and _resident_bytes(process) > memory_limit:
                used = _resident_bytes(process)
                _stop(process)
                return TaskOutcome(
                    job.task,
                    "failed",
                    error=f"stopped at {used / 2**20:.0f} MiB resident memory (memory_limit {memory_limit / 2**20:.0f} MiB)",
                    seconds=time.monotonic() - started,
                    limit="memory",
                )
            wait = min(poll_interval, 1.0) if memory_limit else poll_interval
            if max_processing_time:
                wait = max(0.0, min(wait, max_processing_time - elapsed + 0.01))
            if receiver.poll(wait):
                try:
                    result = receiver.recv()
                except EOFError:
                    result = None
                break
            if not process.is_alive():
                break
    finally:
        if result is None:
            _stop(process)
        receiver.close()
    process.join(30)
    if process.is_alive():
        _stop(process)
    elapsed = time.monotonic() - started
    if result is None:
        code = process.exitcode
        error = f"the task's process died with exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                error += f" (killed by {signal.Signals(-code).name}"
                error += (
                    ", perhaps by the system's out-of-memory killer)"
                    if -code == signal.SIGKILL
                    else ")"
                )
        return TaskOutcome(job.task, "failed", error=error, seconds=elapsed)
    if result[0] == "ok":
        return TaskOutcome(job.task, "done", report=result[1], seconds=elapsed)
    log.debug("traceback of task %s:\n%s", job.task, result[2])
    details = result[3] if len(result) > 3 else {}
    return TaskOutcome(
        job.task,
        "failed",
        error=result[1],
        seconds=elapsed,
        message=details.get("message"),
        error_type=details.get("error_type"),
        bad_datasets=details.get("bad_datasets") or [],
        traceback=result[2],
    )


# --------------------------------------------------------------------------------------------
# The worker loop


@dataclass(frozen=True)
class QueueSettings:
    """Timing of a queue worker (odc-stats config keys in brackets), seconds.

    ``lease`` [job_queue_max_lease], ``renew_margin`` [renew_safety_margin], ``poll_interval``
    [future_poll_interval], ``max_processing_time`` [max_processing_time] (0: no limit).
    """

    lease: float = DEFAULT_LEASE_S
    renew_margin: float = DEFAULT_RENEW_MARGIN_S
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    max_processing_time: float = 0
    heartbeat: str | None = None
    memory_limit: int = 0  # bytes [memory_limit]; 0: none

    def __post_init__(self) -> None:
        if self.lease < 1:
            raise ValueError(f"job_queue_max_lease must be at least 1 s, got {self.lease:g}")
        if not 0 <= self.renew_margin < self.lease:
            raise ValueError(
                f"renew_safety_margin ({self.renew_margin:g} s) must be below job_queue_max_lease "
                f"({self.lease:g} s)"
            )
        if self.poll_interval <= 0 or self.poll_interval >= self.lease - self.renew_margin:
            raise ValueError(
                f"future_poll_interval ({self.poll_interval:g} s) must be positive and shorter than "
                f"job_queue_max_lease - renew_safety_margin ({self.lease - self.renew_margin:g} s), "
                "or leases expire between two renewals"
            )


#: prepare(message) → a job to run, or an outcome without running (skip, unusable message)
PrepareTask = Callable[[TaskMessage], "TileJob | TaskOutcome"]


def run_queue_worker(
    client: Any,
    url: str,
    prepare: PrepareTask,
    settings: QueueSettings,
    *,
    on_outcome: Callable[[TaskOutcome], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> RunCounts:
    """Process messages of queue ``url`` until it holds none (visible, in flight or delayed); return counts.

    ``prepare`` turns a message into the job to run (or a ``skipped``/``failed`` outcome). Success and skip
    delete the message; failure makes it visible again at once (SQS counts the receives and moves it to the
    dead-letter queue after ``maxReceiveCount``). A signal that stops the worker releases the message in hand.
    """
    counts = RunCounts()
    for outcome in _worker_outcomes(client, url, prepare, settings, stop_when):
        counts.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return counts


def _worker_outcomes(
    client: Any,
    url: str,
    prepare: PrepareTask,
    settings: QueueSettings,
    stop_when: Callable[[], bool] | None,
) -> Iterator[TaskOutcome]:
    while stop_when is None or not stop_when():
        if settings.heartbeat:
            write_heartbeat(settings.heartbeat)
        received = receive_task_message(client, url, settings.lease, wait_s=settings.poll_interval)
        if received is None:
            remaining = queue_counts(client, url)
            if remaining.total == 0:
                log.info("queue %s is empty", url)
                return
            log.debug(
                "no visible message; %d in flight, %d delayed",
                remaining.in_flight,
                remaining.delayed,
            )
            continue
        body, lease = received
        try:
            yield _process_message(body, lease, prepare, settings)
        except BaseException:
            with contextlib.suppress(Exception):
                lease.release()
            raise


def _process_message(
    body: str, lease: QueueLease, prepare: PrepareTask, settings: QueueSettings
) -> TaskOutcome:
    try:
        message = parse_task_message(body)
        lease.task = message.task
        prepared = prepare(message)
    except Exception as err:
        outcome = TaskOutcome(lease.task, "failed", error=str(err) or type(err).__name__)
    else:
        if isinstance(prepared, TaskOutcome):
            outcome = prepared
        else:
            log.info("task %s: started (receive %d)", prepared.task, lease.receive_count)
            outcome = run_supervised(
                prepared,
                started=lease.received_at,
                poll_interval=settings.poll_interval,
                max_processing_time=settings.max_processing_time,
                heartbeat=settings.heartbeat,
                on_poll=lambda: lease.extend_if_needed(settings.lease, settings.renew_margin),
                memory_limit=settings.memory_limit,
            )
    if outcome.status == "failed":
        lease.release()
    else:
        lease.delete()
    return outcome

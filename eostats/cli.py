"""The ``eostats`` command line: odc-stats' commands and options, so existing scripts keep working.

Commands:

``eostats run [CACHE] [TASKS]...``
    run tasks of a dataset cache (every odc-stats task selector), or ``--from-sqs QUEUE`` as a queue worker;
    ``--dryrun`` prints the plan per task. Each tile goes through :func:`eostats.tile.run_tile`, the function the
    Snakemake tile rule calls, so the two produce the same files.
``eostats publish-tasks CACHE QUEUE [TASKS]...``
    one SQS message per selected task.
``eostats redrive-queue FROM_QUEUE TO_QUEUE``
    move messages back (dead-letter queue → main queue).
``eostats create-queue NAME``
    a queue and its dead-letter queue (maxReceiveCount 3); not in odc-stats, whose users make them with Terraform.
``eostats where-results --configfile YAML``
    where a workflow run puts its results (``make run`` ends with it).

Configuration: ``--config`` takes the workflow's YAML (``eostats/schemas/config.schema.yaml``), as a file or
inline YAML; options override its keys (``--location`` → ``output_location``, ``--plugin-config`` is merged over
``plugin_config``, ...). odc-stats' runner keys ``threads``, ``overwrite``, ``heartbeat_filepath``,
``job_queue_max_lease``, ``renew_safety_margin``, ``future_poll_interval`` and ``filedb`` are read from the same
file. The tile grid always comes from the dataset cache (the tasks' indices refer to it); a config whose ``grid``
has other tiles is refused.

User errors end the command with one line naming the bad thing and exit code 1 (2 for bad usage); task failures
are logged, counted (``T:<total>, OK:<done>, S:<skipped>, E:<errored>``) and give exit code 1 at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from eostats.config import ConfigError, load_config, load_schema, validate_config
from eostats.queue import (
    DEFAULT_LEASE_S,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RENEW_MARGIN_S,
    QueueError,
    QueueSettings,
    RunCounts,
    TaskMessage,
    TaskOutcome,
    TileJob,
    configure_logging,
    create_queue_pair,
    describe_aws_error,
    local_cache_path,
    output_exists,
    publish_tasks,
    queue_counts,
    queue_url,
    redrive_messages,
    run_queue_worker,
    run_supervised,
    run_tile_job,
    sqs_client,
)
from eostats.taskids import TaskId, select_tasks

log = logging.getLogger("eostats.cli")

#: odc-stats run-config keys that drive the runner rather than the statistic (read when the schema lacks them)
RUNNER_KEYS = (
    "filedb",
    "threads",
    "overwrite",
    "heartbeat_filepath",
    "job_queue_max_lease",
    "renew_safety_margin",
    "future_poll_interval",
    "max_processing_time",
)


def fail(message: str) -> NoReturn:
    """End the command with one line (no traceback) and exit code 1."""
    raise click.ClickException(message)


# --------------------------------------------------------------------------------------------
# Configuration


def read_yaml_option(value: str, what: str) -> dict[str, Any]:
    """A mapping from a YAML file path or inline YAML text (odc-stats accepts both); errors name ``what``."""
    path = Path(value)
    text: str
    is_file = False
    try:
        is_file = path.is_file()
    except OSError:  # inline YAML longer than a path may be
        is_file = False
    if is_file:
        text = path.read_text()
    elif "\n" in value or value.lstrip().startswith("{") or ": " in value:
        text = value
    else:
        fail(f"{what} {value} does not exist (give a YAML file or inline YAML)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        fail(f"{what} {value if is_file else '(inline)'} is not valid YAML: {err}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(
            f"{what} {value if is_file else '(inline)'} must be a mapping of keys, not {type(data).__name__}"
        )
    return data


def split_runner_keys(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a config into the workflow's keys and odc-stats' runner keys that the schema does not know."""
    known = set(load_schema().get("properties", {}))
    workflow = {k: v for k, v in raw.items() if k in known or k not in RUNNER_KEYS}
    runner = {k: v for k, v in raw.items() if k not in known and k in RUNNER_KEYS}
    return workflow, runner


def _same_tiles(a: Any, b: Any) -> bool:
    """Whether two grids have the same tiles (CRS, tile size and origin); pixel sizes may differ."""
    return (
        a.crs == b.crs
        and all(
            math.isclose(p, q, abs_tol=1e-6)
            for p, q in zip(a.tile_size_xy, b.tile_size_xy, strict=True)
        )
        and all(
            math.isclose(p, q, abs_tol=1e-6) for p, q in zip(a.origin_xy, b.origin_xy, strict=True)
        )
    )


@dataclass(frozen=True)
class RunOptions:
    """What ``eostats run`` was asked, besides the tasks: config file and option overrides."""

    config: dict[str, Any]  # the workflow part of --config, with option overrides applied
    runner: dict[str, Any]  # odc-stats runner keys from --config

    @classmethod
    def from_cli(
        cls,
        config_value: str | None,
        *,
        plugin: str | None = None,
        plugin_config: str | None = None,
        cog_config: str | None = None,
        resampling: str | None = None,
        resolution: float | None = None,
        location: str | None = None,
        max_processing_time: int | None = None,
        memory_limit: str | None = None,
        dataset_filters: str | None = None,
        apply_eodatasets3: bool | None = None,
    ) -> RunOptions:
        raw = read_yaml_option(config_value, "config") if config_value else {}
        workflow, runner = split_runner_keys(raw)
        if plugin:
            workflow["plugin"] = plugin
        if plugin_config:
            merged = dict(workflow.get("plugin_config") or {})
            merged.update(read_yaml_option(plugin_config, "plugin config"))
            workflow["plugin_config"] = merged
        if resampling:
            workflow["plugin_config"] = {
                **(workflow.get("plugin_config") or {}),
                "resampling": resampling,
            }
        if cog_config:
            workflow["cog_opts"] = read_yaml_option(
                cog_config, "COG config"
            )  # replaces, as in odc-stats
        if resolution is not None:
            workflow["resolution"] = resolution
        if location:
            workflow["output_location"] = (
                location[len("file://") :] if location.startswith("file://") else location
            )
        if memory_limit is not None:
            workflow["memory_limit"] = memory_limit
        if dataset_filters is not None:
            workflow["dataset_filters"] = dataset_filters
        if apply_eodatasets3:
            workflow["apply_eodatasets3"] = True
        if max_processing_time is not None:
            if "max_processing_time" in load_schema().get("properties", {}):
                workflow["max_processing_time"] = max_processing_time
            else:
                runner["max_processing_time"] = max_processing_time
        return cls(workflow, runner)

    def validated(self) -> dict[str, Any]:
        """The workflow config validated with defaults; ClickException naming the key on a problem."""
        try:
            return validate_config(self.config)
        except ConfigError as err:
            fail(str(err))

    def make_run(self, cache: Any) -> Any:
        """The :class:`eostats.workflow.Run` of these options over ``cache`` (whose grid it uses)."""
        from eostats.grids import parse_grid
        from eostats.workflow import Run

        config = self.validated()
        if "grid" in self.config:
            try:
                configured = parse_grid(self.config["grid"])
            except ValueError as err:
                fail(f"config key 'grid': {err}")
            if not _same_tiles(configured, cache.grid):
                fail(
                    f"the config's grid {configured.name!r} has other tiles than the grid "
                    f"{cache.grid.name!r} of the dataset cache {cache.path}"
                )
        config["grid"] = cache.grid.to_dict()
        run = Run(config)
        check_run(run)
        return run

    def setting(self, key: str, default: Any) -> Any:
        if key in self.runner:
            return self.runner[key]
        return self.config.get(key, default)

    def threads(self, option: int | None, config: Mapping[str, Any]) -> int:
        """--threads, else the config's ``threads``, else ``resources.tile.threads``; 0 or -1: every CPU."""
        value = option if option is not None else self.setting("threads", None)
        if value is None:
            value = config["resources"]["tile"]["threads"]
        try:
            value = int(value)
        except (TypeError, ValueError):
            fail(f"threads must be an integer, got {value!r}")
        if value <= 0:
            value = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1
            )
        return value

    def queue_settings(self, config: Mapping[str, Any], heartbeat: str | None) -> QueueSettings:
        try:
            return QueueSettings(
                lease=float(self.setting("job_queue_max_lease", DEFAULT_LEASE_S)),
                renew_margin=float(self.setting("renew_safety_margin", DEFAULT_RENEW_MARGIN_S)),
                poll_interval=float(self.setting("future_poll_interval", DEFAULT_POLL_INTERVAL_S)),
                max_processing_time=float(self.setting("max_processing_time", 0) or 0),
                heartbeat=heartbeat or self.setting("heartbeat_filepath", None),
                memory_limit=parse_memory_limit(self.setting("memory_limit", None)),
            )
        except (TypeError, ValueError) as err:
            fail(f"config: {err}")


_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}


def parse_memory_limit(value: Any) -> int:
    """Bytes of a memory limit as odc-stats (dask) writes it: ``60Gi``, ``4GB``, ``2000MB``, ``1.5G``, a number of
    bytes; ``None``, ``""`` or 0: no limit (0). ValueError naming the value otherwise."""
    if value in (None, "", 0, "0"):
        return 0
    if isinstance(value, int | float):
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"memory limit {value!r} is not a size such as 60Gi, 4GB or 2000MB")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])


def check_run(run: Any) -> None:
    """Build the run's plugin and product now, so that their errors stop the command before any task."""
    try:
        run.plugin  # noqa: B018 - builds and validates
        run.product  # noqa: B018
        run.grid  # noqa: B018
    except (ValueError, KeyError, TypeError) as err:
        fail(str(err).strip("'\""))


def open_cache(filedb: str) -> tuple[Any, Path]:
    """Open a dataset cache given as a path or an ``s3://`` URI; ClickException naming it when unusable."""
    from eostats.cache import DatasetCache

    try:
        path = local_cache_path(filedb)
        return DatasetCache.open(path), path
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))


def selected_tasks(selectors: Sequence[str], cache: Any) -> list[TaskId]:
    try:
        return (
            select_tasks([str(s) for s in selectors], cache.task_ids())
            if selectors
            else cache.task_ids()
        )
    except ValueError as err:
        fail(str(err))


# --------------------------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eostats")
@click.option(
    "-v", "--verbose", count=True, help="Debug logging, with the tracebacks of failed tasks."
)
def main(verbose: int) -> None:
    """eostats: per-tile statistics of satellite collections, odc-stats compatible."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)


@main.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("cache", required=False)
@click.argument("tasks", nargs=-1)
@click.option(
    "--config", "config_value", help="Run config: YAML file or inline YAML (the workflow's schema)."
)
@click.option("--plugin", help="Registered plugin name or dotted path pkg.module.Class.")
@click.option("--plugin-config", help="YAML file or inline YAML merged over plugin_config.")
@click.option("--cog-config", help="YAML file or inline YAML replacing cog_opts.")
@click.option("--resampling", help="Input resampling (plugin_config.resampling).")
@click.option("--resolution", type=float, help="Output pixel size; must divide the tile size.")
@click.option(
    "--location",
    help="Output prefix (templates {product} {short_name} {version}); file:// allowed.",
)
@click.option("--threads", type=int, help="Threads per task (0 or -1: every CPU).")
@click.option(
    "--overwrite", is_flag=True, default=None, help="Recompute tasks whose STAC item exists."
)
@click.option("--dryrun", is_flag=True, help="Print the plan per task and compute nothing.")
@click.option(
    "--from-sqs", "from_sqs", help="Take tasks from this SQS queue (name or URL) until it is empty."
)
@click.option(
    "--max-processing-time",
    type=int,
    help="Seconds per task before it is stopped and failed (0: none).",
)
@click.option(
    "--heartbeat-filepath", help="File that gets the UTC time at each poll (liveness probe)."
)
@click.option(
    "--memory-limit",
    help="Stop and fail a task whose memory exceeds this (60Gi, 4GB, 2000MB); runs each task in a child process.",
)
@click.option(
    "--dataset-filters",
    help='Run-time filter on dataset properties: JSON objects joined by "|" ({"platform": "landsat-8"}).',
)
@click.option(
    "--apply_eodatasets3",
    "--apply-eodatasets3",
    "apply_eodatasets3",
    is_flag=True,
    default=None,
    help="Also write eo3 .odc-metadata.yaml and .proc-info.yaml (for datacube dataset add).",
)
@click.option(
    "--public/--no-public", default=None, help="odc-stats' S3 ACL switch; accepted, unused."
)
def run_command(
    cache: str | None,
    tasks: tuple[str, ...],
    config_value: str | None,
    plugin: str | None,
    plugin_config: str | None,
    cog_config: str | None,
    resampling: str | None,
    resolution: float | None,
    location: str | None,
    threads: int | None,
    overwrite: bool | None,
    dryrun: bool,
    from_sqs: str | None,
    max_processing_time: int | None,
    heartbeat_filepath: str | None,
    memory_limit: str | None,
    dataset_filters: str | None,
    apply_eodatasets3: bool | None,
    public: bool | None,
) -> None:
    """Run TASKS of the dataset CACHE (all tasks by default), or tasks from an SQS queue.

    TASKS: task ids (2015--P1Y/41/13, 2015--P1Y,+041,+013, x+041/y+013/2015--P1Y), zero-based indices into
    the sorted task list, or slices (::10, 1:5, -2:).
    """
    if max_processing_time is not None and max_processing_time < 0:
        raise click.BadParameter(
            "must be 0 (no limit) or more seconds", param_hint="--max-processing-time"
        )
    options = RunOptions.from_cli(
        config_value,
        plugin=plugin,
        plugin_config=plugin_config,
        cog_config=cog_config,
        resampling=resampling,
        resolution=resolution,
        location=location,
        max_processing_time=max_processing_time,
        memory_limit=memory_limit,
        dataset_filters=dataset_filters,
        apply_eodatasets3=apply_eodatasets3,
    )
    config = options.validated()
    overwrite = bool(overwrite if overwrite is not None else options.setting("overwrite", False))
    n_threads = options.threads(threads, config)
    settings = options.queue_settings(config, heartbeat_filepath)
    if from_sqs:
        if dryrun:
            fail("--dryrun cannot be combined with --from-sqs")
        if cache or tasks:
            fail(
                "--from-sqs takes its dataset cache and task from each message: give no CACHE or TASKS"
            )
        with _stop_on_sigterm():
            counts = _run_queue(options, from_sqs, settings, overwrite, n_threads)
    else:
        cache = cache or options.setting("filedb", None)
        if not cache:
            fail("no dataset cache: give CACHE (or filedb in the config), or --from-sqs QUEUE")
        dataset_cache, cache_path = open_cache(cache)
        run = options.make_run(dataset_cache)
        chosen = selected_tasks(tasks or config.get("tasks") or [], dataset_cache)
        if dryrun:
            _dry_run(run, dataset_cache, chosen, overwrite)
            return
        with _stop_on_sigterm():
            counts = _run_local(run, cache_path, chosen, overwrite, n_threads, settings)
    log.info("%s", counts)
    if counts.errored:
        sys.exit(1)


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (Kubernetes stopping a pod) ends the command like an exception: the running task's process is
    stopped and its message released for another worker. The previous handler is restored afterwards."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def dry_run_line(task: TaskId, n_days: int, n_datasets: int, stac_path: str, flag: str) -> str:
    """odc-stats' plan line: ``x/y/period days=NNN ds=NNNN <STAC item>{flag}``."""
    return f"{task.x}/{task.y}/{task.period} days={n_days:03} ds={n_datasets:04} {stac_path}{flag}"


def _dry_run(run: Any, cache: Any, tasks: Sequence[TaskId], overwrite: bool) -> None:
    for task in tasks:
        record = cache.task(task)
        stac = run.product.stac_path(task)
        exists = output_exists(stac)
        flag = (" (recompute)" if overwrite else " (skip)") if exists else " (new)"
        click.echo(dry_run_line(task, record.n_days_utc, record.n_datasets, stac, flag))


def _log_outcome(outcome: TaskOutcome) -> None:
    if outcome.status == "done":
        from eostats.tile import TileReport, report_line

        log.info("task %s: done in %.1f s", outcome.task, outcome.seconds)
        log.info("%s", report_line(TileReport(**outcome.report)))  # type: ignore[arg-type]
    elif outcome.status == "skipped":
        log.info("task %s: skipped (%s)", outcome.task, outcome.error or "output exists")
    else:
        log.error(
            "task %s: failed: %s",
            outcome.task if outcome.task else "(unreadable message)",
            outcome.error,
        )


def _run_local(
    run: Any,
    cache_path: Path,
    tasks: Sequence[TaskId],
    overwrite: bool,
    threads: int,
    settings: QueueSettings,
) -> RunCounts:
    """Tasks one after the other; in a watched child process when a time limit or a heartbeat is asked for."""
    counts = RunCounts()
    supervised = bool(settings.max_processing_time or settings.heartbeat or settings.memory_limit)
    for task in tasks:
        if not overwrite and output_exists(run.product.stac_path(task)):
            outcome = TaskOutcome(task, "skipped", error="output exists")
        elif supervised:
            log.info("task %s: started", task)
            outcome = run_supervised(
                TileJob(dict(run.config), str(cache_path), task, threads),
                poll_interval=settings.poll_interval,
                max_processing_time=settings.max_processing_time,
                heartbeat=settings.heartbeat,
                memory_limit=settings.memory_limit,
            )
        else:
            log.info("task %s: started", task)
            t0 = time.monotonic()
            try:
                report = run_tile_job(TileJob(dict(run.config), str(cache_path), task, threads))
            except Exception as err:
                log.debug("task %s failed", task, exc_info=True)
                outcome = TaskOutcome(task, "failed", error=f"{type(err).__name__}: {err}")
            else:
                outcome = TaskOutcome(
                    task, "done", report=asdict(report), seconds=time.monotonic() - t0
                )
        counts.add(outcome)
        _log_outcome(outcome)
    return counts


def _run_queue(
    options: RunOptions, queue: str, settings: QueueSettings, overwrite: bool, threads: int
) -> RunCounts:
    from eostats.cache import DatasetCache

    check_run(
        _run_without_cache(options)
    )  # config errors stop the worker before it takes a message
    client = sqs_client(queue)
    try:
        url = queue_url(client, queue)
    except QueueError as err:
        fail(str(err))
    runs: dict[str, tuple[Any, Any, Path]] = {}

    def prepare(message: TaskMessage) -> TileJob | TaskOutcome:
        if message.filedb not in runs:
            path = local_cache_path(message.filedb)
            cache = DatasetCache.open(path)
            try:
                run = options.make_run(cache)
            except click.ClickException as err:
                raise ValueError(err.message) from None
            runs[message.filedb] = (run, cache, path)
        run, cache, path = runs[message.filedb]
        if not cache.has_task(message.task):
            raise ValueError(f"task {message.task} is not in the dataset cache {message.filedb}")
        if not overwrite and output_exists(run.product.stac_path(message.task)):
            return TaskOutcome(message.task, "skipped", error="output exists")
        return TileJob(dict(run.config), str(path), message.task, threads)

    log.info("worker: queue %s, lease %g s, poll %g s", url, settings.lease, settings.poll_interval)
    try:
        return run_queue_worker(client, url, prepare, settings, on_outcome=_log_outcome)
    except QueueError as err:
        fail(str(err))
    except Exception as err:
        if type(err).__module__.startswith("botocore"):
            fail(describe_aws_error(err, f"SQS queue {queue}"))
        raise


def _run_without_cache(options: RunOptions) -> Any:
    from eostats.workflow import Run

    return Run(options.validated())


@main.command("publish-tasks", context_settings={"ignore_unknown_options": True})
@click.argument("cache")
@click.argument("queue")
@click.argument("tasks", nargs=-1)
@click.option("--dryrun", is_flag=True, help="Print the task ids and send nothing.")
@click.option(
    "--geojson-filter",
    type=click.Path(dir_okay=False),
    help="Only tasks whose tile intersects the first feature of this GeoJSON file.",
)
def publish_tasks_command(
    cache: str, queue: str, tasks: tuple[str, ...], dryrun: bool, geojson_filter: str | None
) -> None:
    """Send one message per selected task of CACHE to the SQS QUEUE (name or URL).

    Messages are odc-stats' {"filedb": CACHE, "tile_idx": "period/x/y"}; a local CACHE is written as an absolute
    path. TASKS: the selectors of `eostats run`.
    """
    dataset_cache, _ = open_cache(cache)
    chosen = selected_tasks(tasks, dataset_cache)
    if geojson_filter:
        chosen = _tasks_in_geojson(chosen, dataset_cache.grid, geojson_filter)
    if dryrun:
        for task in chosen:
            click.echo(f"{task.period}/{task.x:+04d}/{task.y:+04d}")
        return
    filedb = cache if "://" in cache else str(Path(cache).resolve())
    client = sqs_client(queue)
    try:
        url = queue_url(client, queue)
        sent = publish_tasks(client, url, filedb, chosen)
    except QueueError as err:
        fail(str(err))
    except Exception as err:
        if type(err).__module__.startswith("botocore"):
            fail(describe_aws_error(err, f"SQS queue {queue}"))
        raise
    click.echo(f"published {sent} task(s) to {url}")


def _tasks_in_geojson(tasks: Sequence[TaskId], grid: Any, path: str) -> list[TaskId]:
    """Tasks whose tile intersects the first feature of a GeoJSON file (CRS from ``crs.properties.name``,
    else EPSG:4326 as GeoJSON says)."""
    from odc.geo.geom import Geometry

    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        fail(f"GeoJSON filter {path} does not exist")
    except ValueError as err:
        fail(f"GeoJSON filter {path} is not valid JSON: {err}")
    features = doc.get("features") if isinstance(doc, dict) else None
    if doc.get("type") == "Feature":
        features = [doc]
    if not features:
        fail(f"GeoJSON filter {path} has no feature")
    crs = ((doc.get("crs") or {}).get("properties") or {}).get("name") or "EPSG:4326"
    try:
        geom = Geometry(features[0]["geometry"], crs).to_crs(grid.crs)
    except Exception as err:
        fail(f"GeoJSON filter {path}: unusable first feature: {err}")
    return [t for t in tasks if grid.tile_geobox(t.x, t.y).extent.intersects(geom)]


@main.command("redrive-queue")
@click.argument("from_queue")
@click.argument("to_queue")
@click.option("--limit", type=click.IntRange(min=1), help="Move at most this many messages.")
@click.option(
    "--dryrun", is_flag=True, help="Report how many messages FROM_QUEUE holds and move nothing."
)
def redrive_queue_command(from_queue: str, to_queue: str, limit: int | None, dryrun: bool) -> None:
    """Move messages from FROM_QUEUE (a dead-letter queue) to TO_QUEUE (names or URLs)."""
    client = sqs_client(from_queue)
    try:
        source = queue_url(client, from_queue)
        target = queue_url(client, to_queue)
        if dryrun:
            counts = queue_counts(client, source)
            click.echo(
                f"{counts.visible} message(s) in {source} ({counts.in_flight} in flight); nothing moved"
            )
            return
        moved = redrive_messages(client, source, target, limit=limit)
    except QueueError as err:
        fail(str(err))
    except Exception as err:
        if type(err).__module__.startswith("botocore"):
            fail(describe_aws_error(err, f"SQS queue {from_queue} or {to_queue}"))
        raise
    click.echo(f"moved {moved} message(s) from {source} to {target}")


@main.command("create-queue")
@click.argument("name")
@click.option("--max-receive-count", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--visibility-timeout", type=click.IntRange(min=0), default=DEFAULT_LEASE_S, show_default=True
)
def create_queue_command(name: str, max_receive_count: int, visibility_timeout: int) -> None:
    """Create the SQS queue NAME and its dead-letter queue NAME-deadletter (redrive after N receives)."""
    try:
        main_url, dead_url = create_queue_pair(
            name,
            max_receive_count=max_receive_count,
            visibility_timeout=visibility_timeout,
            client=sqs_client(),
        )
    except QueueError as err:
        fail(str(err))
    except Exception as err:
        if type(err).__module__.startswith("botocore"):
            fail(describe_aws_error(err, f"SQS queue {name}"))
        raise
    click.echo(f"queue: {main_url}")
    click.echo(f"dead-letter queue: {dead_url}")


@main.command("where-results")
@click.option("--configfile", required=True, help="The workflow config (YAML).")
def where_results_command(configfile: str) -> None:
    """Print where a workflow run with CONFIGFILE puts its results."""
    from eostats.workflow import Run

    try:
        run = Run(load_config(configfile))
    except ConfigError as err:
        fail(str(err))
    check_run(run)
    location = run.product.location
    click.echo(f"dataset cache:  {run.cache}")
    click.echo(f"task list:      {run.task_csv}")
    click.echo(f"tiles:          {run.tile_dir_pattern}/")
    click.echo(f"mosaics:        {location}/mosaics/{{period}}/")
    if run.config["source"]["type"] == "sample":
        click.echo(f"sample:         {run.sample_catalog}")


# odc-stats' other commands (save-tasks, generate-cache, generate-mosaic, locate-grids, import-cache, ...)
from eostats import cli_odc  # noqa: E402, F401  (registers them on `main`)

if __name__ == "__main__":
    main()

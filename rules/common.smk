# Config validation, the run's paths, and the input functions shared by the rules.

import inspect
import json
import os
import sys
from functools import cache
from pathlib import Path

from snakemake.common import overwrite_function_params
from snakemake.exceptions import WorkflowError

from eostats.cache import DatasetCache
from eostats.config import ConfigError, validate_config
from eostats.fullhistory import (
    all_tasks,
    full_history_period,
    full_history_run,
    full_history_tasks,
    period_inputs,
)
from eostats.failures import write_failures_file
from eostats.taskids import TaskId
from eostats.workflow import INDEX_REGEX, PERIOD_REGEX, Run


def stop_on_user_error(message):
    """End Snakemake with one line on stderr and exit status 1: no traceback for a mistake in the config.

    SystemExit is not an Exception, so Snakemake neither wraps it (InputFunctionException) nor prints a stack.
    """
    print(f"eostats: {message}", file=sys.stderr)
    raise SystemExit(1)


try:
    _validated = validate_config(config)
    # the ids of exclude_datasets_file join exclude_datasets here, so that jobs need not read the file
    _validated["exclude_datasets"] = sorted(Run(_validated).excluded_datasets)
    _validated["exclude_datasets_file"] = None
except (ConfigError, ValueError) as err:
    stop_on_user_error(f"invalid configuration: {err}")
config.clear()
config.update(_validated)

RUN = Run(config)
try:
    # the full-history product (rules/fullhistory.smk), None without `full_history` in the config
    FULL_HISTORY = full_history_run(RUN)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None
RESULTS = str(RUN.results)
# With a default storage provider (S3 on Kubernetes) every relative path below lives under this prefix.
STORAGE_PREFIX = (
    workflow.storage_settings.default_storage_prefix.rstrip("/")
    if workflow.storage_settings.default_storage_provider
    else None
)
if STORAGE_PREFIX:
    # jobs read scenes (GDAL) and write tile files (boto3) at the endpoint Snakemake's S3 storage uses;
    # AWS_ENDPOINT_URL_S3 is the AWS SDKs' own variable, inherited by every job process
    _endpoint = getattr(
        workflow.storage_registry.default_storage_provider.settings,
        "endpoint_url",
        None,
    )
    if _endpoint:
        os.environ.setdefault("AWS_ENDPOINT_URL_S3", _endpoint)
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"


wildcard_constraints:
    period=PERIOD_REGEX,
    x=INDEX_REGEX,
    y=INDEX_REGEX,


def resources_of(step):
    return config["resources"][step]


def gpu_resources_of(step):
    """One NVIDIA GPU for the tile jobs when the kernels run on a GPU (`backend: gpu`), else nothing.

    Kubernetes executor resources: `nvidia.com/gpu` in the pod's requests and the GPU nodes' toleration. `scale: 0`
    makes the executor write limits too (otherwise it writes none): Kubernetes rejects an extended resource such as
    `nvidia.com/gpu` without a limit; the pod's CPU and memory limits then equal its requests. `auto` asks for no
    GPU: it uses one only where the node happens to have one.
    """
    if step == "tile" and config.get("backend") == "gpu":
        return {"gpu": 1, "gpu_manufacturer": "nvidia", "scale": 0}
    return {}


def source_inputs(wildcards):
    """Files the dataset cache is built from: the sample's whole directory, a catalog/item file, none for a URL."""
    if config["source"]["type"] == "sample":
        return [str(RUN.sample_catalog.parent)]
    path = config["source"].get("path")
    return [str(path)] if path and "://" not in str(path) else []


def storage_url_of(path):
    """The stored object of a workflow path under the default storage (None without one)."""
    return f"{STORAGE_PREFIX}/{os.path.normpath(str(path))}" if STORAGE_PREFIX else None


_fetched = set()


def local_copy(path):
    """A workflow file, readable at DAG-building time.

    With a default storage provider the file lives in storage, and Snakemake neither keeps nor fetches local copies
    of a checkpoint's output for input functions: fetch it once per invocation when missing or older than the object.
    """
    if not STORAGE_PREFIX:
        return Path(path)
    obj = workflow.storage_registry.default_storage_provider.object(
        storage_url_of(path)
    )
    local = Path(obj.local_path())
    if str(local) not in _fetched:
        if not local.exists() or obj.mtime() > local.stat().st_mtime:
            local.parent.mkdir(parents=True, exist_ok=True)
            obj.retrieve_object()
        _fetched.add(str(local))
    return local


def cache_settings():
    """Everything besides the source that decides the cache's content; a change rebuilds it."""
    return json.dumps(
        {
            "source": config["source"],
            "grid": config["grid"],
            "frequency": config["frequency"],
            "temporal_range": config["temporal_range"],
            "years": config["years"],
            "solar_offset_rule": config["solar_offset_rule"],
            "tiles": config["tiles"],
            # not exclude_datasets: tiles leave excluded datasets out (task_items), the cache keeps them
        },
        sort_keys=True,
    )


def selected_tasks():
    """Tasks of the run, from the task-list checkpoint (and the config's `tasks` selectors)."""
    checkpoints.task_list.get()
    try:
        return RUN.read_task_csv(local_copy(RUN.task_csv))
    except ConfigError as err:  # a task id that is not in the run
        stop_on_user_error(f"invalid configuration: {err}")


def task_of(wildcards):
    return TaskId(wildcards.period, int(wildcards.x), int(wildcards.y))


def per_job_function(func):
    """`func`, with its parameters told to Snakemake once: Snakemake otherwise reads a per-job function's signature
    (inspect.signature) twice at every call, which costs more than the functions below (planning 50 000 tiles).
    Its own mechanism, as its path helpers (subpath, prepend) use."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


@cache
def _dataset_hashes(cache_path, mtime):
    return DatasetCache.open(cache_path).dataset_hashes(exclude=RUN.excluded_datasets)


_CACHE_PATH = str(RUN.cache)


@per_job_function
def dataset_hash(wildcards):
    """The task's dataset list fingerprint, excluded datasets left out: a tile re-runs when its datasets change
    (new scenes, an excluded id), not when the cache file does."""
    path = str(local_copy(_CACHE_PATH)) if STORAGE_PREFIX else _CACHE_PATH
    hashes = _dataset_hashes(path, os.stat(path).st_mtime_ns)
    task = task_of(wildcards)
    if task not in hashes:
        raise WorkflowError(f"task {task} is not in the dataset cache {path}")
    return hashes[task]


TILE_GROUP = "tiles"


@cache
def _task_positions(csv_path, mtime):
    return {task: n for n, task in enumerate(RUN.read_task_csv(csv_path))}


def tile_url_param():
    """The tile directory's object URL under default storage (a function of the job), else "" (nothing to upload
    and no per-job function call while planning)."""
    if not STORAGE_PREFIX:
        return ""
    return lambda wildcards: storage_url_of(RUN.tile_dir(task_of(wildcards)))


@per_job_function
def tile_group(wildcards):
    """The tile's group on a cluster, where `group-components: {tiles: N}` puts N tiles in one pod or job.

    Consecutive tasks of the run share a group id, N per id, fixed here rather than left to Snakemake's chunking of
    connected components: that chunking merges already merged groups again when a run resumes after the task-list
    checkpoint (snakemake#1628), and one pod would get every tile.

    Without `group-components: {tiles: N}`: no group, plain tile jobs (Slurm job arrays need them). The group
    settings are known only once jobs are made, not when the rules are parsed, so the first call decides: it sets
    the tile rule's group to None, because Snakemake does not remember a None group and would otherwise call this
    function again at each of its several look-ups of every job's group.
    """
    components = workflow.group_settings.group_components
    if TILE_GROUP not in components:
        workflow.get_rule("tile").group = None
        return None
    size = max(1, int(components[TILE_GROUP]))
    csv_path = local_copy(RUN.task_csv)
    position = _task_positions(str(csv_path), csv_path.stat().st_mtime_ns).get(
        task_of(wildcards)
    )
    if position is None:  # a tile outside the run's selection, asked for by its path
        group = f"{TILE_GROUP}-{wildcards.period}-{wildcards.x}-{wildcards.y}"
    else:
        group = f"{TILE_GROUP}-{position // size:06d}"
    # group-components are looked up under the parent id: `tiles` applies to every batch
    workflow.parent_groupids[group] = TILE_GROUP
    return group


def tile_items(tasks):
    """The tiles' declared outputs: each tile's STAC item, which stands for its directory."""
    return [RUN.tile_item(task) for task in tasks]


def tiles_of_period(wildcards):
    return tile_items([t for t in selected_tasks() if t.period == wildcards.period])


@cache
def _all_tasks(csv_path, mtime):
    return all_tasks(RUN, csv_path)


def run_tasks():
    """Every task of the task list, whatever the `tasks` selectors pick (a full history needs all periods)."""
    checkpoints.task_list.get()
    path = local_copy(RUN.task_csv)
    return _all_tasks(str(path), path.stat().st_mtime_ns)


def full_history_label():
    """The full-history period: `full_history.period`, else the span of every task's period (odc-stats' `all`)."""
    return full_history_period(
        {t.period for t in run_tasks()}, config["full_history"]["period"]
    )


def full_history_targets(tasks):
    """The full-history tiles of the x/y of `tasks` (none without `full_history`)."""
    if FULL_HISTORY is None:
        return []
    tiles = full_history_tasks(tasks, full_history_label())
    return [FULL_HISTORY.tile_item(t) for t in tiles]


def full_history_inputs(wildcards):
    """The aggregation's inputs: the items of every period tile of the x/y inside the full-history period."""
    return tile_items(
        period_inputs(run_tasks(), wildcards.period, int(wildcards.x), int(wildcards.y))
    )


def final_targets(wildcards):
    tasks = selected_tasks()
    periods = sorted({t.period for t in tasks})
    targets = [str(RUN.task_csv)]
    targets += [str(RUN.period_geojson(p)) for p in periods]
    targets += tile_items(tasks)
    targets += full_history_targets(tasks)
    if config["mosaic"]["enabled"]:
        targets += [str(p) for period in periods for p in RUN.mosaic_paths(period)]
    return targets


def write_failures_summary():
    """Rewrite the run's failures file from the failed tiles' records (eostats.failures); say where it is.

    Not under default storage (S3): the records stay in each job's pod (docs/operations.md), and nothing of the run
    is written to the local working directory."""
    if STORAGE_PREFIX:
        return
    path, n_failed = write_failures_file(RUN)
    if n_failed:
        print(
            f"eostats: {n_failed} task(s) failed, listed in {path} (one JSON record a line)",
            file=sys.stderr,
        )


onsuccess:
    write_failures_summary()
    print(f"eostats: results are under {RUN.results.resolve()}")
    print(f"  task list: {RUN.task_csv}")
    print(f"  tiles:     {RUN.product.location}/")


onerror:
    write_failures_summary()

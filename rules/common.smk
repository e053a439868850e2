# Config validation, the run's paths, and the input functions shared by the rules.

import json
from functools import cache

from snakemake.exceptions import WorkflowError

from eostats.cache import DatasetCache
from eostats.config import ConfigError, validate_config
from eostats.taskids import TaskId
from eostats.workflow import INDEX_REGEX, PERIOD_REGEX, Run

try:
    _validated = validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None
config.clear()
config.update(_validated)

RUN = Run(config)
RESULTS = str(RUN.results)
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"


wildcard_constraints:
    period=PERIOD_REGEX,
    x=INDEX_REGEX,
    y=INDEX_REGEX,


def resources_of(step):
    return config["resources"][step]


def source_inputs(wildcards):
    """Local files the dataset cache is built from (none for a STAC API)."""
    path = RUN.source_path
    return [str(path)] if path else []


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
            "exclude_datasets": config["exclude_datasets"],
        },
        sort_keys=True,
    )


def selected_tasks():
    """Tasks of the run, from the task-list checkpoint (and the config's `tasks` selectors)."""
    csv_path = checkpoints.task_list.get().output.csv
    return RUN.read_task_csv(csv_path)


def task_of(wildcards):
    return TaskId(wildcards.period, int(wildcards.x), int(wildcards.y))


@cache
def _dataset_hashes(cache_path, mtime):
    return DatasetCache.open(cache_path).dataset_hashes()


def dataset_hash(wildcards):
    """The task's dataset list fingerprint: a tile re-runs when its datasets change, not when the cache file does."""
    path = RUN.cache
    hashes = _dataset_hashes(str(path), path.stat().st_mtime_ns)
    task = task_of(wildcards)
    if task not in hashes:
        raise WorkflowError(f"task {task} is not in the dataset cache {path}")
    return hashes[task]


def tile_dirs(tasks):
    return [RUN.tile_dir(task) for task in tasks]


def tiles_of_period(wildcards):
    return tile_dirs([t for t in selected_tasks() if t.period == wildcards.period])


def final_targets(wildcards):
    tasks = selected_tasks()
    periods = sorted({t.period for t in tasks})
    targets = [str(RUN.task_csv)]
    targets += [str(RUN.period_geojson(p)) for p in periods]
    targets += tile_dirs(tasks)
    if config["mosaic"]["enabled"]:
        targets += [str(p) for period in periods for p in RUN.mosaic_paths(period)]
    return targets


onsuccess:
    print(f"eostats: results are under {RUN.results.resolve()}")
    print(f"  task list: {RUN.task_csv}")
    print(f"  tiles:     {RUN.product.location}/")

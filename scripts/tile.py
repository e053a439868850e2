"""Snakemake adapter: compute and write one task's tile within its time and memory limits; a failure leaves a record.

The job log ends with one JSON line: ``{"event": "tile_done", ...}``, or ``{"event": "tile_failed", ...}`` after one
ERROR line naming the task and the reason (the dataset id, asset and href for bad input data). A failed task's
record (eostats.failures) is written at ``Run.failure_record_path`` and removed when the task later succeeds.
"""

import time
from pathlib import Path

from eostats.cache import DatasetCache
from eostats.failures import clear_failure_record, make_failure_record, write_failure_record
from eostats.joblog import job_logging
from eostats.limits import TileLimitError, memory_limit_of, run_tile_within_limits
from eostats.loading import DatasetError
from eostats.odc_index import task_items
from eostats.s3 import configure_gdal_s3, point_self_link, relocated_run, upload_files
from eostats.taskids import parse_task_id
from eostats.tile import TileFailure, emit_json_line, failure_line, report_line
from eostats.workflow import Run

# failures of the data or of a limit: one line says it all; anything else also logs its traceback (a bug)
EXPECTED_ERRORS = {"InputDataError", "DatasetError", "TileMemoryError", "UnknownTaskError"}


def task_dataset_ids(run, cache_path, task):
    """The task's dataset ids after exclusions and filters (empty when the cache cannot tell)."""
    try:
        return [
            str(item.get("id")) for item in task_items(run, DatasetCache.open(cache_path), task)
        ]
    except Exception:
        return []


job = snakemake  # noqa: F821  (the object Snakemake puts into a script)
log_path = job.log[0]

with job_logging(log_path, "tile") as log:
    task = parse_task_id(job.params.task)
    item = Path(job.output.item)
    records_run = Run(job.config)  # failure records live with the logs, never in storage
    # under default storage (S3) the job writes into Snakemake's local copy of the tile directory
    run = relocated_run(records_run, records_run.tile_item(task), item)
    cache_path = job.input.cache
    started = time.monotonic()
    try:
        configure_gdal_s3()  # scenes on s3:// at a non-AWS endpoint (AWS_ENDPOINT_URL[_S3]) are read through GDAL
        report = run_tile_within_limits(
            run,
            cache_path,
            task,
            threads=job.threads,
            max_processing_time=float(run.config.get("max_processing_time") or 0),
            memory_limit=memory_limit_of(run.config, getattr(job.resources, "mem_mb", None)),
        )
        tile_url = job.params.tile_url
        if tile_url:
            # Snakemake stores only the declared item, after this job: the other files go first, the item last
            uploaded = upload_files(item.parent, tile_url, skip={item.name})
            point_self_link(item, f"{tile_url}/{item.name}")
            log.info("uploaded %d tile files to %s", len(uploaded), tile_url)
    except Exception as err:
        bad_datasets = list(getattr(err, "bad_datasets", None) or [])
        error_type = getattr(err, "error_type", None) or type(err).__name__
        expected = isinstance(err, DatasetError | TileLimitError) or (
            isinstance(err, TileFailure) and error_type in EXPECTED_ERRORS
        )
        if not expected:
            log.error(
                "traceback of task %s:\n%s",
                task,
                getattr(err, "detail", None) or "",
                exc_info=not isinstance(err, TileFailure),
            )
        reason = " ".join(str(err).split()) or error_type
        # the record and the lines below name the task already
        reason = reason.removeprefix(f"task {task}: ")
        if not expected:
            reason = f"{error_type}: {reason}"
        dataset_ids = task_dataset_ids(run, cache_path, task)
        record = make_failure_record(task, dataset_ids, reason, log_path, bad_datasets)
        record_path = write_failure_record(records_run, record)
        log.error("task %s failed: %s", task, reason)
        emit_json_line(
            failure_line(
                task, reason, dataset_ids, bad_datasets, time.monotonic() - started, record_path
            )
        )
        # a non-zero exit fails the job; the message is the one line Snakemake shows, without a Python traceback
        raise SystemExit(f"eostats: task {task} failed: {reason} (log: {log_path})") from None
    clear_failure_record(records_run, task)
    emit_json_line(report_line(report))

"""Snakemake adapter: one full-history tile from the period tiles of its x/y."""

import json

from eostats.fullhistory import full_history_run, run_full_history_tile
from eostats.joblog import job_logging
from eostats.s3 import configure_gdal_s3
from eostats.taskids import parse_task_id
from eostats.workflow import Run

with job_logging(snakemake.log[0], "full_history") as log:  # noqa: F821
    fh_run = full_history_run(Run(snakemake.config))  # noqa: F821
    task = parse_task_id(snakemake.params.task)  # noqa: F821
    configure_gdal_s3()  # period tiles on s3:// are read through GDAL
    report = run_full_history_tile(fh_run, task, list(snakemake.input.period_items))  # noqa: F821
    log.info(json.dumps(report, sort_keys=True))

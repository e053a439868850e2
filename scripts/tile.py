"""Snakemake adapter: compute and write one task's tile."""

from eostats.joblog import job_logging
from eostats.taskids import parse_task_id
from eostats.tile import report_line, run_tile
from eostats.workflow import Run

with job_logging(snakemake.log[0], "tile") as log:  # noqa: F821
    task = parse_task_id(snakemake.params.task)  # noqa: F821
    report = run_tile(Run(snakemake.config), snakemake.input.cache, task, threads=snakemake.threads)  # noqa: F821
    log.info(report_line(report))

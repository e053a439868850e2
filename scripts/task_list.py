"""Snakemake adapter: the CSV of all tasks, from the dataset cache."""

from eostats.cache import DatasetCache
from eostats.joblog import job_logging
from eostats.tasklists import write_task_csv

with job_logging(snakemake.log[0], "task_list"):  # noqa: F821
    write_task_csv(DatasetCache.open(snakemake.input.cache), snakemake.output.csv)  # noqa: F821

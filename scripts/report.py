"""Snakemake adapter: the run report's files (maps, quicklooks, tables, failures) for `snakemake --report`."""

from eostats.joblog import job_logging
from eostats.report import write_run_report
from eostats.workflow import Run

with job_logging(snakemake.log[0], "run_report") as log:  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    written = write_run_report(run, snakemake.input.csv)  # noqa: F821
    log.info("run report: %d files under %s", len(written), run.results / "report")

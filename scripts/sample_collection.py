"""Snakemake adapter: generate the synthetic sample collection."""

from pathlib import Path

from eostats.joblog import job_logging
from eostats.sample import generate_sample_collection

with job_logging(snakemake.log[0], "sample_collection") as log:  # noqa: F821
    out_dir = Path(snakemake.output.collection)  # noqa: F821
    catalog = generate_sample_collection(out_dir, snakemake.params.spec or None)  # noqa: F821
    log.info("sample collection written: %s", catalog)

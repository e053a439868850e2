"""Snakemake adapter: generate the synthetic sample collection (Landsat ARD, or the product named by ``product``)."""

from pathlib import Path

from eostats.joblog import job_logging
from eostats.sample_products import generate_sample

with job_logging(snakemake.log[0], "sample_collection") as log:  # noqa: F821
    out_dir = Path(snakemake.output.collection)  # noqa: F821
    catalog = generate_sample(out_dir, snakemake.params.spec or None)  # noqa: F821
    log.info("sample collection written: %s", catalog)

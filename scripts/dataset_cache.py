"""Snakemake adapter: build the dataset cache from the configured source."""

from eostats.cache import build_cache
from eostats.joblog import job_logging
from eostats.sources import read_items
from eostats.workflow import Run

with job_logging(snakemake.log[0], "dataset_cache") as log:  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    source = dict(run.config["source"])
    if source["type"] == "sample":
        source = {"type": "stac_catalog", "path": str(run.sample_catalog)}
    settings = {
        "solar_offset_rule": run.config["solar_offset_rule"],
        "tiles": run.config["tiles"],
        "exclude_datasets": run.config["exclude_datasets"],
    }
    summary = build_cache(read_items(source), run.grid, run.binning, run.cache, source, settings)
    log.info("dataset cache %s: %s", run.cache, summary)

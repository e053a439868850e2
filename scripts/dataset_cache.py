"""Snakemake adapter: build the dataset cache from the configured source."""

from pathlib import Path

from eostats.cache import build_cache
from eostats.joblog import job_logging
from eostats.s3 import hrefs_to_storage
from eostats.sources import read_items
from eostats.workflow import Run

with job_logging(snakemake.log[0], "dataset_cache") as log:  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    source = dict(run.config["source"])
    # read the source where Snakemake put it (a local copy under default storage), record it as configured
    local_inputs = list(snakemake.input.source)  # noqa: F821
    if source["type"] == "sample":
        source = {"type": "stac_catalog", "path": str(run.sample_catalog)}
        read_from = {**source, "path": str(Path(local_inputs[0]) / run.sample_catalog.name)}
    else:
        read_from = {**source, "path": local_inputs[0]} if local_inputs else source
    items = read_items(read_from)
    source_url = snakemake.params.source_url  # noqa: F821
    if source_url and local_inputs:
        # the job's local copy of the source goes away with the job: scene hrefs must name the stored objects
        is_dir = Path(local_inputs[0]).is_dir()
        local_dir = local_inputs[0] if is_dir else str(Path(local_inputs[0]).parent)
        url_dir = source_url if is_dir else source_url.rsplit("/", 1)[0]
        items = (hrefs_to_storage(item, local_dir, url_dir) for item in items)
    settings = {
        "solar_offset_rule": run.config["solar_offset_rule"],
        "tiles": run.config["tiles"],
        # exclude_datasets is applied by the tile jobs (eostats.odc_index.task_items): changing it keeps this cache.
        # An item the cache cannot use (no id, geometry or readable datetime) is left out and named below, so that
        # one bad item does not stop a continental run.
        "invalid_items": "skip",
    }
    if source["type"] == "datacube":
        # the same builder as `eostats save-tasks`: year windows over the padded range, product expressions
        from eostats.odc_index import build_datacube_cache

        cache_path = snakemake.output.cache  # noqa: F821
        summary = build_datacube_cache(source, run.grid, run.binning, cache_path, settings)
    else:
        cache_path = snakemake.output.cache  # noqa: F821
        summary = build_cache(items, run.grid, run.binning, cache_path, source, settings)
    for skipped in getattr(summary, "skipped", ()):
        log.warning(
            "skipped item %s of the source %s: %s",
            skipped.id or "(no id)",
            read_from.get("path") or read_from.get("url") or source["type"],
            skipped.reason,
        )
    log.info("dataset cache %s: %s", snakemake.output.cache, summary)  # noqa: F821

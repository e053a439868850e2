"""Snakemake adapter: overview mosaics of one period from its tiles' STAC items."""

from pathlib import Path

from eostats.joblog import job_logging
from eostats.mosaic import build_mosaic
from eostats.workflow import Run

with job_logging(snakemake.log[0], "mosaic") as log:  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    period = snakemake.wildcards.period  # noqa: F821
    items = sorted(str(p) for tile in snakemake.input.tiles for p in Path(tile).glob("*.stac-item.json"))  # noqa: F821
    opts = run.config["mosaic"]
    paths = build_mosaic(
        items,
        run.mosaic_bands,
        [Path(p) for p in snakemake.output],  # noqa: F821
        resolution=opts["resolution"],
        per_band=opts["per_band"],
        overview_levels=opts["overview_levels"],
        threads=snakemake.threads,  # noqa: F821
        resampling={m.name: "nearest" if m.categorical else "average" for m in run.plugin.measurements},
    )
    log.info("mosaics of %s: %s", period, ", ".join(map(str, paths)))

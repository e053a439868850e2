"""Snakemake adapter: overview mosaics of one period from its tiles' STAC items."""

import json
import tempfile
from pathlib import Path

from eostats.joblog import job_logging
from eostats.mosaic import build_mosaic
from eostats.s3 import configure_gdal_s3, item_with_stored_assets, storage_root, storage_url
from eostats.workflow import Run

with job_logging(snakemake.log[0], "mosaic") as log, tempfile.TemporaryDirectory() as staging:  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    period = snakemake.wildcards.period  # noqa: F821
    outputs = [Path(p) for p in snakemake.output]  # noqa: F821
    items = sorted(str(p) for p in snakemake.input.tiles)  # noqa: F821
    prefix = snakemake.params.storage_prefix  # noqa: F821
    if prefix:
        # only the items were fetched: point their assets at the stored COGs, read through GDAL's S3 support
        configure_gdal_s3()
        root = storage_root(run.mosaic_paths(period)[0], outputs[0])
        staged = []
        for n, local in enumerate(items):
            url = storage_url(Path(local).relative_to(root), prefix)
            path = Path(staging) / f"{n:06d}.stac-item.json"
            path.write_text(json.dumps(item_with_stored_assets(local, url)))
            staged.append(str(path))
        items = staged
    opts = run.config["mosaic"]
    paths = build_mosaic(
        items,
        run.mosaic_bands,
        outputs,
        resolution=opts["resolution"],
        per_band=opts["per_band"],
        overview_levels=opts["overview_levels"],
        threads=snakemake.threads,  # noqa: F821
        resampling={
            m.name: "nearest" if m.categorical else "average" for m in run.plugin.measurements
        },
    )
    log.info("mosaics of %s: %s", period, ", ".join(map(str, paths)))

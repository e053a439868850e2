"""Snakemake adapter: one full-history tile from the period tiles of its x/y."""

import json
from pathlib import Path

from eostats.fullhistory import full_history_run, run_full_history_tile
from eostats.joblog import job_logging
from eostats.s3 import configure_gdal_s3, point_self_link, relocated_run, upload_files
from eostats.taskids import parse_task_id
from eostats.workflow import Run

with job_logging(snakemake.log[0], "full_history") as log:  # noqa: F821
    fh_run = full_history_run(Run(snakemake.config))  # noqa: F821
    task = parse_task_id(snakemake.params.task)  # noqa: F821
    item = Path(snakemake.output.item)  # noqa: F821
    # under default storage (S3) the job writes into Snakemake's local copy of the tile directory, as the tile rule
    fh_run = relocated_run(fh_run, fh_run.tile_item(task), item)
    configure_gdal_s3()  # period tiles' COGs on s3:// (their items' self links) are read through GDAL
    report = run_full_history_tile(fh_run, task, list(snakemake.input.period_items))  # noqa: F821
    tile_url = snakemake.params.tile_url  # noqa: F821
    if tile_url:
        # Snakemake stores only the declared item, after this job: the other files go first
        upload_files(item.parent, tile_url, skip={item.name})
        point_self_link(item, f"{tile_url}/{item.name}")
    log.info(json.dumps(report, sort_keys=True))

"""Snakemake adapter: compute and write one task's tile."""

from pathlib import Path

from eostats.joblog import job_logging
from eostats.s3 import configure_gdal_s3, point_self_link, relocated_run, upload_files
from eostats.taskids import parse_task_id
from eostats.tile import report_line, run_tile
from eostats.workflow import Run

with job_logging(snakemake.log[0], "tile") as log:  # noqa: F821
    task = parse_task_id(snakemake.params.task)  # noqa: F821
    item = Path(snakemake.output.item)  # noqa: F821
    run = Run(snakemake.config)  # noqa: F821
    # under default storage (S3) the job writes into Snakemake's local copy of the tile directory
    run = relocated_run(run, run.tile_item(task), item)
    configure_gdal_s3()  # scenes on s3:// at a non-AWS endpoint (AWS_ENDPOINT_URL[_S3]) are read through GDAL
    report = run_tile(run, snakemake.input.cache, task, threads=snakemake.threads)  # noqa: F821
    tile_url = snakemake.params.tile_url  # noqa: F821
    if tile_url:
        # Snakemake stores only the declared item, after this job: the other files go first, the item last
        uploaded = upload_files(item.parent, tile_url, skip={item.name})
        point_self_link(item, f"{tile_url}/{item.name}")
        log.info("uploaded %d tile files to %s", len(uploaded), tile_url)
    log.info(report_line(report))

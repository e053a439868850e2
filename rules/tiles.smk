# One job per task: the statistic on one tile and period, written in odc-stats' layout.
# The cache is `ancient`: a tile re-runs when its own dataset list (params.datasets) changes.
# The declared output is the tile's STAC item, written last (as odc-stats does): one object per tile for object
# storage to check. The job writes the whole tile directory; under default storage (S3) it uploads the COGs and
# `.sha1` itself (params.tile_url) and Snakemake uploads the item after them. No benchmark file for the same reason
# (in storage it is one more object to check per tile): the job's log line has the timings and peak memory.


rule tile:
    input:
        cache=ancient(str(RUN.cache)),
    output:
        item=RUN.tile_item_pattern,
    log:
        f"{LOGS}/tile/{{period}}/x{{x}}_y{{y}}.log",
    group:
        tile_group
    threads: resources_of("tile")["threads"]
    resources:
        **gpu_resources_of("tile"),
        mem_mb=resources_of("tile")["mem_mb"],
        runtime=resources_of("tile")["runtime"],
    params:
        datasets=dataset_hash,
        task="{period}/{x}/{y}",
        tile_url=tile_url_param(),
    script:
        "../scripts/tile.py"

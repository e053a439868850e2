# One job per task: the statistic on one tile and period, written in odc-stats' layout.
# The cache is `ancient`: a tile re-runs when its own dataset list (params.datasets) changes.


rule tile:
    input:
        cache=ancient(str(RUN.cache)),
    output:
        directory(RUN.tile_dir_pattern),
    params:
        datasets=dataset_hash,
        task=lambda wildcards: str(task_of(wildcards)),
    log:
        f"{LOGS}/tile/{{period}}/x{{x}}_y{{y}}.log",
    benchmark:
        f"{BENCHMARKS}/tile/{{period}}/x{{x}}_y{{y}}.tsv"
    threads: resources_of("tile")["threads"]
    resources:
        mem_mb=resources_of("tile")["mem_mb"],
        runtime=resources_of("tile")["runtime"],
    script:
        "../scripts/tile.py"

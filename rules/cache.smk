# The dataset cache: a self-contained SQLite snapshot of the source, binned into tasks.


rule dataset_cache:
    input:
        source=source_inputs,
    output:
        cache=str(RUN.cache),
    params:
        settings=cache_settings(),
    log:
        f"{LOGS}/dataset_cache.log",
    benchmark:
        f"{BENCHMARKS}/dataset_cache.tsv"
    threads: resources_of("cache")["threads"]
    resources:
        mem_mb=resources_of("cache")["mem_mb"],
        runtime=resources_of("cache")["runtime"],
    script:
        "../scripts/dataset_cache.py"

# The dataset cache: a self-contained SQLite snapshot of the source, binned into tasks.


rule dataset_cache:
    input:
        source=source_inputs,
    output:
        cache=str(RUN.cache),
    log:
        f"{LOGS}/dataset_cache.log",
    benchmark:
        f"{BENCHMARKS}/dataset_cache.tsv"
    threads: resources_of("cache")["threads"]
    resources:
        mem_mb=resources_of("cache")["mem_mb"],
        runtime=resources_of("cache")["runtime"],
    params:
        settings=cache_settings(),
        # the stored source directory: hrefs into the job's local copy of it are recorded as these URLs
        source_url=lambda wildcards: next(
            (storage_url_of(p) for p in source_inputs(wildcards)), None
        ),
    script:
        "../scripts/dataset_cache.py"

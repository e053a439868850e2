# The synthetic sample collection, generated when the config's source is `sample`.


rule sample_collection:
    output:
        catalog=str(RUN.sample_catalog),
    params:
        spec=config["source"].get("sample", {}),
    log:
        f"{LOGS}/sample_collection.log",
    benchmark:
        f"{BENCHMARKS}/sample_collection.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/sample_collection.py"

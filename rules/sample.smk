# The synthetic sample collection, generated when the config's source is `sample`.
# Its output is the whole directory (catalog, items, COGs), so that default storage (S3) uploads all of it.
# A local rule: with a remote executor the controller makes it, since the S3 storage plugin (0.3.6) reports a
# directory made by a remote job as missing (it caches a directory's absence).


rule sample_collection:
    output:
        collection=directory(str(RUN.sample_catalog.parent)),
    log:
        f"{LOGS}/sample_collection.log",
    benchmark:
        f"{BENCHMARKS}/sample_collection.tsv"
    localrule: True
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spec=config["source"].get("sample", {}),
    script:
        "../scripts/sample_collection.py"

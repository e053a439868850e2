# Low-resolution overview mosaics: per period, one COG per band (or one multi-band COG) over every tile.


rule mosaic:
    input:
        tiles=tiles_of_period,
    output:
        [str(p) for p in RUN.mosaic_paths("{period}")],
    log:
        f"{LOGS}/mosaic/{{period}}.log",
    benchmark:
        f"{BENCHMARKS}/mosaic/{{period}}.tsv"
    threads: resources_of("mosaic")["threads"]
    resources:
        mem_mb=resources_of("mosaic")["mem_mb"],
        runtime=resources_of("mosaic")["runtime"],
    params:
        # under default storage the tiles' COGs are read where they are stored, next to each item
        storage_prefix=STORAGE_PREFIX,
    script:
        "../scripts/mosaic.py"

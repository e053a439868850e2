# The run report: tile maps, mosaic quicklooks, tile costs and failures, packaged by `snakemake --report`.
# Not a target of `all`: it reads the run's state when it runs (tiles that failed under --keep-going included), and
# its `state` parameter, a digest of that state, makes it run again exactly when the state changed. After a run:
#   snakemake --profile profiles/local --configfile my-run.yaml run_report --report report.html --report-after-run

from eostats.report import report_paths, status_fingerprint

REPORT_PATHS = report_paths(RUN)


rule run_report:
    input:
        csv=str(RUN.task_csv),
    output:
        maps=report(
            directory(str(REPORT_PATHS["maps"])),
            patterns=["{period}/{map}.png"],
            caption="../report/maps.rst",
            category="Tiles",
            subcategory="{period}",
            labels={"period": "{period}", "figure": "{map} map"},
        ),
        quicklooks=report(
            directory(str(REPORT_PATHS["quicklooks"])),
            patterns=["{period}/{name}.png"],
            caption="../report/quicklooks.rst",
            category="Mosaics",
            subcategory="{period}",
            labels={"period": "{period}", "figure": "{name}"},
        ),
        tables=report(
            directory(str(REPORT_PATHS["tables"])),
            patterns=["{period}/{table}.html"],
            caption="../report/tables.rst",
            category="Tiles",
            subcategory="{period}",
            labels={"period": "{period}", "figure": "wall time and memory"},
        ),
        failures=report(
            directory(str(REPORT_PATHS["failures"])),
            patterns=["{name}.html"],
            caption="../report/failures.rst",
            category="Failures",
            labels={"figure": "failed tasks"},
        ),
    log:
        f"{LOGS}/run_report.log",
    localrule: True
    params:
        state=lambda wildcards: status_fingerprint(RUN),
    script:
        "../scripts/report.py"

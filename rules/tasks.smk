# Task lists in odc-stats' formats: one CSV of all tasks (a checkpoint: it decides the tile jobs)
# and one GeoJSON of tile polygons per period.


checkpoint task_list:
    input:
        cache=str(RUN.cache),
    output:
        csv=str(RUN.task_csv),
    log:
        f"{LOGS}/task_list.log",
    localrule: True
    script:
        "../scripts/task_list.py"


rule period_geojson:
    input:
        cache=str(RUN.cache),
    output:
        geojson=str(RUN.period_geojson("{period}")),
    log:
        f"{LOGS}/period_geojson/{{period}}.log",
    localrule: True
    script:
        "../scripts/period_geojson.py"

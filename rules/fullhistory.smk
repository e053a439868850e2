# Full-history tiles (odc-stats' wofs-summary-fh over wofs-summary), only with `full_history` in the config: an
# aggregation rule whose inputs are the run's period tiles of one x/y (their STAC items, each standing for its
# tile). A changed or added period tile re-runs the full-history tile of its x/y and no other.

if FULL_HISTORY is not None:

    rule full_history_tile:
        input:
            period_items=full_history_inputs,
        output:
            item=FULL_HISTORY.tile_item_pattern,
        log:
            f"{LOGS}/full_history/{{period}}/x{{x}}_y{{y}}.log",
        threads: 1
        resources:
            mem_mb=resources_of("tile")["mem_mb"],
            runtime=resources_of("tile")["runtime"],
        params:
            task=lambda wildcards: str(task_of(wildcards)),
            tile_url=lambda wildcards: storage_url_of(
                FULL_HISTORY.tile_dir(task_of(wildcards))
            ),
        script:
            "../scripts/full_history.py"

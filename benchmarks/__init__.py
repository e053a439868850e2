"""Side-by-side benchmarks of eostats against odc-stats' tools (odc-algo) and bare Snakemake.

Run ``python -m benchmarks.run --quick`` (CI, under two minutes) or ``--full`` (the figures of issue 5).
"""

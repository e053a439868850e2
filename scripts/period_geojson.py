"""Snakemake adapter: the GeoJSON of one period's tiles, from the dataset cache."""

from eostats.cache import DatasetCache
from eostats.joblog import job_logging
from eostats.tasklists import write_period_geojson

with job_logging(snakemake.log[0], "period_geojson"):  # noqa: F821
    cache = DatasetCache.open(snakemake.input.cache)  # noqa: F821
    write_period_geojson(cache, snakemake.wildcards.period, snakemake.output.geojson)  # noqa: F821

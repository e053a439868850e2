# eostats: per-tile statistics of satellite collections, in odc-stats' formats.
# source → dataset cache → task lists → tile outputs → overview mosaics. All logic lives in the eostats package.

from snakemake.utils import min_version

min_version("9.0")


# config/config.yaml is the default run; a run given its own --configfile uses that alone (Snakemake would otherwise
# deep-merge the two, so the default's plugin_config and product would leak into every other run)
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/sample.smk"
include: "rules/cache.smk"
include: "rules/tasks.smk"
include: "rules/tiles.smk"
include: "rules/fullhistory.smk"
include: "rules/mosaic.smk"
include: "rules/report.smk"


# `snakemake --report`: the run report's description (rules/report.smk makes its figures and tables)
report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        final_targets,
    localrule: True


# What parsing made (the imported modules, the rules) lives as long as Snakemake does: moved out of the cyclic
# collector's reach, so that its full passes while the DAG grows (tens of thousands of jobs) scan only the jobs.
import gc

gc.freeze()

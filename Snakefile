"""Low-Rank Prehab: the study grid of config/config.yaml as pretrain -> calibrate -> prehab ->
compress -> rehab -> evaluate jobs, then one MLflow import and the report.

    snakemake --cores 2                                  # default config and profile
    snakemake --cores 2 --configfile config/test.yaml    # tiny fixtures, minutes
    snakemake --workflow-profile workflow/profiles/slurm # on a SLURM cluster
    snakemake --report results/report.html
"""

import os

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from prehab.config_check import ConfigError, check

min_version("9.20")


configfile: "config/config.yaml"


SCHEMA = "workflow/schemas/config.schema.yaml"
try:  # one line naming the key, the value and what is allowed, before any job
    check(config, yaml.safe_load(open(os.path.join(workflow.basedir, SCHEMA))))
except ConfigError as err:
    raise WorkflowError(str(err)) from None
validate(config, SCHEMA)  # fills in the schema's defaults


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/prehab.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/rehab.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_output(),

"""Low-Rank Prehab: the study grid of config/config.yaml as pretrain -> calibrate -> prehab ->
compress -> rehab -> evaluate jobs, then one MLflow import and the report.

    snakemake --cores 2                                  # default config and profile
    snakemake --cores 2 --configfile config/test.yaml    # tiny fixtures, minutes
    snakemake --workflow-profile workflow/profiles/slurm # on a SLURM cluster
    snakemake --report results/report.html
"""

from snakemake.utils import min_version, validate

min_version("9.20")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


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

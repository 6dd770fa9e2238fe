# saesteer: does a more interpretable SAE steer better?
# The grid: config["models"] x config["architectures"] x config["sparsities"].
# README.md explains the commands; logic lives in src/saesteer, scripts are adapters.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/autointerp.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/steering_vectors.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        all_targets(),

# Shared by every rule: config validation, grid expansion, input functions and
# wildcard constraints restricted to the configured values.

import os
import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

# The workflow's logic is the saesteer package in src/. The Snakemake process imports it
# here; job scripts import it through workflow/scripts/_bootstrap.py (conda environments
# drop PYTHONPATH, so it cannot be passed through the environment).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from saesteer.config import (
    check_config,
    fill_registry_defaults,
    grid_from_config,
)  # noqa: E402
from saesteer.judges import (
    check_workflow_judges,
    judge_block,
    judge_params,
)  # noqa: E402
from saesteer.schemas import schema_path  # noqa: E402
from saesteer.grouping import job_cells, job_files, job_log  # noqa: E402
from saesteer.training.job import (
    train_job_cells,
    train_job_log,
    train_job_outputs,
    training_block,
)  # noqa: E402

# Our check first: it lists every problem, each naming its field; then Snakemake's
# validate() fills in the schema's defaults, fill_registry_defaults those of the
# registered architectures (training.sparsity_coef_init).
check_config(config)
validate(config, schema=str(schema_path("config.schema.yaml")))
fill_registry_defaults(config)
GRID = grid_from_config(config)
TRAIN_GROUP_BY = config["training"]["group_by"]
EVAL_GROUP_BY = config["eval_jobs"]["group_by"]

# The judge block is checked now, all but the LLM judge's API key: that one when jobs are
# about to run (onstart below), so that dry runs (`snakemake -n`) work without a key.
# Snakemake 9.27 cannot tell a dry run while it parses this file: `workflow.dryrun` reads
# the executor plugin, which is set only when execution starts (checked: False at parse
# time under -n). `onstart` runs after the DAG is built and before the first job, never in
# a dry run. With --no-hooks it does not run either; a judge job then fails itself,
# naming the variable.
# JUDGE rates autointerp (config judge); STEERING_JUDGE the steering stages (config
# steering.judge when set, else judge).
JUDGES, _KEYS_MISSING = check_workflow_judges(config, keys_later=True)
JUDGE = JUDGES["autointerp"]
STEERING_JUDGE = JUDGES["steering"]
STEERING_JUDGE_BLOCK = judge_block(config, "steering")
JUDGE_PARAMS = judge_params(config)
for _key_env in _KEYS_MISSING:
    logger.warning(
        f"judge.llm: the environment variable {_key_env} is not set. A dry run works; a run that "
        f"includes judge jobs stops before its first job. export {_key_env}=<your key>"
    )
JUDGE_RULES = {"autointerp", "steer_eval", "steer_selected", "steering_vectors"}
"""Rules that call the judge: the API key must be set when one of them is to run."""


onstart:
    try:
        rules = {job.rule.name for job in workflow.dag.needrun_jobs()}
    except Exception:  # Snakemake internals changed: check the key anyway
        rules = JUDGE_RULES
    if rules & JUDGE_RULES:
        check_workflow_judges(config)


wildcard_constraints:
    model="|".join(GRID.model_names),
    arch="|".join(GRID.all_architectures),
    sparsity="|".join(re.escape(label) for label in GRID.all_sparsity_labels),
    layer="|".join(sorted({str(m.layer) for m in GRID.models})),


def model_spec(wildcards):
    return GRID.model(wildcards.model)


def model_entry(wildcards):
    return GRID.model_entry(wildcards.model)


# Run time and memory of one training job on a cluster: they grow with the job's SAEs (1, an
# architecture's sparsities or a whole model, by training.group_by), which only the workflow
# knows, and with each retry (`attempt`). Figures for a 9B model on one H100 (about a day for
# a model's 30 SAEs, docs/scaling.md); the SLURM profile adds the partition and the GPU.
TRAIN_MINUTES_PER_SAE = 45
TRAIN_MEM_MB_PER_SAE = 1000


def train_job_size(wildcards):
    return len(train_job_cells(GRID, TRAIN_GROUP_BY, wildcards))


def train_job_runtime(wildcards, attempt):
    return attempt * (60 + TRAIN_MINUTES_PER_SAE * train_job_size(wildcards))


def train_job_mem_mb(wildcards, attempt):
    return attempt * (48000 + TRAIN_MEM_MB_PER_SAE * train_job_size(wildcards))


def cache_manifest(wildcards):
    """The activation cache an SAE of this model trains on."""
    spec = GRID.model(wildcards.model)
    return f"results/{spec.name}/activations/layer-{spec.layer}/manifest.json"


def train_data_input(wildcards):
    """What a training job reads: the activation cache (cache.mode: disk), or the prepared
    model, whose activations it computes itself (stream)."""
    if config["cache"]["mode"] == "stream":
        return f"results/models/{wildcards.model}/model.json"
    return cache_manifest(wildcards)


def target_l0(wildcards):
    return GRID.target_l0(wildcards.sparsity, model=wildcards.model)


# ---- the per-SAE stages after training (eval_jobs.group_by, docs/scaling.md): one job runs
# one SAE, a (model, arch) or a whole model, loading the LLM once; its declared files are its
# SAEs' own, so every per-SAE target stays and asking for one runs its group.


def sae_files(tail):
    """One per-SAE file (results/{model}/{arch}/{sparsity}/<tail>) of each SAE of the job."""
    return job_files(GRID, EVAL_GROUP_BY, tail, field="eval_jobs.group_by")


def sae_job_log(rule):
    """logs/<stem>.log and logs/benchmarks/<stem>.tsv of a per-SAE stage's job."""
    return job_log(EVAL_GROUP_BY, rule, field="eval_jobs.group_by")


def sae_job_cells(wildcards):
    """The job's SAEs (model, arch, sparsity, target_l0), in the order of its file lists."""
    return [
        c.to_dict()
        for c in job_cells(GRID, EVAL_GROUP_BY, wildcards, field="eval_jobs.group_by")
    ]


def prompt_format(wildcards):
    """How this model is prompted (models[].prompt_format: chat | base)."""
    return GRID.model(wildcards.model).prompt_format


def all_targets():
    targets = []
    if config["cache"]["mode"] == "disk":  # stream mode keeps no activation cache
        targets += [
            f"results/{m.name}/activations/layer-{m.layer}/manifest.json"
            for m in GRID.models
        ]
    targets += [f"results/{c.path}/sae/cfg.json" for c in GRID.cells()]
    targets += [f"results/{c.path}/autointerp.json" for c in GRID.cells()]
    targets += [f"results/{c.path}/interp.json" for c in GRID.cells()]
    targets += [f"results/{c.path}/steering/score.json" for c in GRID.cells()]
    targets += [f"results/{c.path}/selection/score.json" for c in GRID.cells()]
    if STEERING_VECTORS.enabled:  # workflow/rules/steering_vectors.smk
        targets += [
            f"results/{c.path}/steering_vectors/score.json" for c in GRID.cells()
        ]
        targets.append("results/summary/steering_vectors/summary.md")
    # The aggregation reads every SAE's outputs: one target pulls in the whole grid, and
    # `snakemake --report` finds its tables and plots.
    targets.append("results/summary/summary.md")
    return targets


# ---- pretrained SAEs (workflow/rules/import.smk, docs/pretrained-saes.md)

# Only the imported cells' labels ("(?!)" never matches: no pretrained entries).
IMPORTED_SPARSITY = (
    "|".join(re.escape(label) for label in GRID.imported_labels) or "(?!)"
)


def pretrained_entry(wildcards):
    entry = GRID.pretrained_entry(wildcards.model, wildcards.sparsity)
    if entry.arch != wildcards.arch:
        raise ValueError(
            f"pretrained SAE {wildcards.sparsity!r} of model {wildcards.model!r} is a {entry.arch} SAE, "
            f"not {wildcards.arch}: results/{entry.cell_path}/"
        )
    return entry.to_dict() | {"field": entry.field}


def pretrained_files(wildcards):
    """A source: path SAE's two files (so Snakemake reruns the import when they change, and
    orders it after the job that writes them); nothing for a registry SAE (fetched)."""
    entry = GRID.pretrained_entry(wildcards.model, wildcards.sparsity)
    if entry.source != "path":
        return {}
    return {
        "cfg": f"{entry.path}/cfg.json",
        "weights": f"{entry.path}/sae_weights.safetensors",
    }

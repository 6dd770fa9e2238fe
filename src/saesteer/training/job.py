"""Rule train_sae (workflow/rules/train.smk), and how ``training.group_by`` cuts the grid
into training jobs, with :mod:`saesteer.grouping`.

A job's declared outputs are its SAEs' single-SAE outputs, as Snakemake patterns with the
job's wildcards left open: ``sae`` -> {model}/{arch}/{sparsity}; ``arch`` -> {model}/{arch}
with every sparsity label; ``model`` -> {model} with every architecture and label. Asking for
one SAE's file therefore runs its group, and downstream rules see the same files in all modes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saesteer.config import Grid
from saesteer.controls import is_control
from saesteer.grouping import job_cells, job_files, job_log
from saesteer.rule_jobs import RuleJob

OUTPUT_TAILS = {
    "weights": "sae/sae_weights.safetensors",
    "cfg": "sae/cfg.json",
    "curves": "training_curves.parquet",
    "summary": "train_summary.json",
}
"""The single-SAE job's outputs, under results/{model}/{arch}/{sparsity}/."""


def train_job_outputs(grid: Grid, group_by: str, kind: str) -> str | list[str]:
    """The output pattern(s) of one kind (weights, cfg, curves, summary) of a training job: one
    per SAE of the job (:func:`train_job_cells`), so :func:`saesteer.rule_jobs.make_rule_job`
    hands each SAE its own four files."""
    return job_files(grid, group_by, OUTPUT_TAILS[kind], field="training.group_by")


def train_job_log(group_by: str) -> str:
    """Path stem of a training job's log and benchmark files (one per job)."""
    return job_log(group_by, "train_sae", field="training.group_by")


WORKFLOW_KEYS = ("seeds",)
"""Keys of the ``training`` block that shape the grid, not one SAE's training: the rule's
``params.training`` leaves them out (each job's SAEs carry their seed replicate in
``params.cells``), so adding a replicate does not change the other jobs' params."""


def training_block(training: Mapping[str, Any]) -> dict[str, Any]:
    """The ``training`` block a train_sae job gets: the config's, without :data:`WORKFLOW_KEYS`."""
    return {k: v for k, v in training.items() if k not in WORKFLOW_KEYS}


def train_job_cells(grid: Grid, group_by: str, wildcards: Any) -> list[dict[str, Any]]:
    """The rule's ``params.cells``: the SAEs of the job named by ``wildcards`` (seed replicates
    included), in the order of its output lists, as every per-SAE stage passes them."""
    return [c.to_dict() for c in job_cells(grid, group_by, wildcards, field="training.group_by")]


def group_members(job: RuleJob) -> list[dict[str, Any]]:
    """The training group of a :class:`RuleJob`: per SAE (``job.saes``, its own output files),
    its architecture, target L0, seed replicate, output and checkpoint paths."""
    control_encoder = str(job.params.get("control_encoder", "fitted"))
    members = []
    for sae in job.saes:
        missing = sorted(set(OUTPUT_TAILS) - set(sae.outputs))
        if missing:
            raise ValueError(
                f"train_sae: {sae.cell.path} has no {missing} output(s) (the rule's outputs: {sorted(OUTPUT_TAILS)})"
            )
        member: dict[str, Any] = {
            "arch": sae.cell.arch,
            "target_l0": sae.cell.target_l0,
            "checkpoint_dir": f"results/{sae.cell.path}/checkpoints",
        }
        if sae.cell.seed:
            member["seed"] = sae.cell.seed
        member.update({f"{kind}_path": str(sae.outputs[kind]) for kind in OUTPUT_TAILS})
        if is_control(sae.cell.arch):  # a random-decoder control (controls.random_decoder)
            member["control_encoder"] = control_encoder
        members.append(member)
    return members


def train_sae(job: RuleJob) -> None:
    """Rule train_sae: the SAEs of one training group (``job.saes``: the cells of
    ``params.cells`` with their own outputs, as in every per-SAE stage; seed replicates are
    more members) from one pass over the activations, read from the cache (cache.mode disk)
    or computed by running the model (stream). The group is trained together, not SAE by
    SAE, so it does not go through :func:`saesteer.rule_jobs.each_sae`; its SAEs resume from
    their own checkpoints instead."""
    from saesteer.training.group import train_sae_group, train_sae_group_streaming

    if not job.saes:
        raise ValueError("train_sae: the job has no SAEs (params.cells is empty)")
    common = dict(
        members=group_members(job),
        training=job.params["training"],
        sae=job.params["sae"],
        device=job.resources.get("device"),
        threads=job.threads,
    )
    if job.params["cache"]["mode"] == "stream":
        train_sae_group_streaming(
            job.inputs["data"],
            model_entry=job.params["model"],
            corpus=job.params["corpus"],
            cache_block=job.params["cache"],
            **common,
        )
    else:
        train_sae_group(job.inputs["data"], **common)

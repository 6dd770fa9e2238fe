"""Rule train_sae (workflow/rules/train.smk), and how ``training.group_by`` cuts the grid
into training jobs, with :mod:`saesteer.grouping`.

A job's declared outputs are its SAEs' single-SAE outputs, as Snakemake patterns with the
job's wildcards left open: ``sae`` -> {model}/{arch}/{sparsity}; ``arch`` -> {model}/{arch}
with every sparsity label; ``model`` -> {model} with every architecture and label. Asking for
one SAE's file therefore runs its group, and downstream rules see the same files in all modes.
"""

from __future__ import annotations

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
    """The output pattern(s) of one kind (weights, cfg, curves, summary) of a training job."""
    return job_files(grid, group_by, OUTPUT_TAILS[kind], field="training.group_by")


def train_job_log(group_by: str) -> str:
    """Path stem of a training job's log and benchmark files (one per job)."""
    return job_log(group_by, "train_sae", field="training.group_by")


def train_job_members(grid: Grid, group_by: str, wildcards: Any) -> list[dict[str, Any]]:
    """The SAEs of the job named by ``wildcards``, with their output and checkpoint paths."""
    members = []
    for cell in job_cells(grid, group_by, wildcards, field="training.group_by"):
        base = f"results/{cell.path}"
        member = {"arch": cell.arch, "target_l0": cell.target_l0, "checkpoint_dir": f"{base}/checkpoints"}
        member.update({f"{kind}_path": f"{base}/{tail}" for kind, tail in OUTPUT_TAILS.items()})
        if is_control(cell.arch):  # a random-decoder control (controls.random_decoder)
            member["control_encoder"] = grid.control_encoder
        members.append(member)
    return members


def train_sae(job: RuleJob) -> None:
    """Rule train_sae: the SAEs of one training group from one pass over the activations,
    read from the cache (cache.mode disk) or computed by running the model (stream)."""
    from saesteer.training.group import train_sae_group, train_sae_group_streaming

    common = dict(
        members=job.params["members"],
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

"""How ``training.group_by`` cuts the grid into training jobs (workflow/rules/train.smk).

A job's declared outputs are its SAEs' single-SAE outputs, as Snakemake patterns with the
job's wildcards left open: ``sae`` -> {model}/{arch}/{sparsity}; ``arch`` -> {model}/{arch}
with every sparsity label; ``model`` -> {model} with every architecture and label. Asking for
one SAE's file therefore runs its group, and downstream rules see the same files in all modes.
"""

from __future__ import annotations

from typing import Any

from saesteer.config import Grid, sparsity_label
from saesteer.training.config import GROUP_BY

OUTPUT_TAILS = {
    "weights": "sae/sae_weights.safetensors",
    "cfg": "sae/cfg.json",
    "curves": "training_curves.parquet",
    "summary": "train_summary.json",
}
"""The single-SAE job's outputs, under results/{model}/{arch}/{sparsity}/."""


def _check(group_by: str) -> None:
    if group_by not in GROUP_BY:
        raise ValueError(f"training.group_by must be one of {list(GROUP_BY)}, got {group_by!r}")


def train_job_outputs(grid: Grid, group_by: str, kind: str) -> str | list[str]:
    """The output pattern(s) of one kind (weights, cfg, curves, summary) of a training job."""
    _check(group_by)
    tail = OUTPUT_TAILS[kind]
    if group_by == "sae":
        return f"results/{{model}}/{{arch}}/{{sparsity}}/{tail}"
    archs = ["{arch}"] if group_by == "arch" else list(grid.architectures)
    return [f"results/{{model}}/{a}/{label}/{tail}" for a in archs for label in grid.sparsity_labels]


def train_job_log(group_by: str) -> str:
    """Path stem of a training job's log and benchmark files (one per job)."""
    _check(group_by)
    return {"sae": "{model}/{arch}/{sparsity}/train_sae", "arch": "{model}/{arch}/train_sae", "model": "{model}/train_sae"}[
        group_by
    ]


def train_job_members(grid: Grid, group_by: str, wildcards: Any) -> list[dict[str, Any]]:
    """The SAEs of the job named by ``wildcards``, with their output and checkpoint paths."""
    _check(group_by)
    model = wildcards.model
    archs = [wildcards.arch] if group_by in ("sae", "arch") else list(grid.architectures)
    targets = [grid.target_l0(wildcards.sparsity)] if group_by == "sae" else list(grid.sparsities)
    members = []
    for arch in archs:
        for k in targets:
            base = f"results/{model}/{arch}/{sparsity_label(k)}"
            member = {"arch": arch, "target_l0": k, "checkpoint_dir": f"{base}/checkpoints"}
            member.update({f"{kind}_path": f"{base}/{tail}" for kind, tail in OUTPUT_TAILS.items()})
            members.append(member)
    return members

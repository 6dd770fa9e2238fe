"""How a ``group_by`` setting cuts the grid's SAEs into jobs, for training
(``training.group_by``) and for the per-SAE stages after it (``eval_jobs.group_by``).

A job's declared outputs are its SAEs' single-SAE files, as Snakemake patterns with the
job's wildcards left open: ``sae`` -> ``{model}/{arch}/{sparsity}``; ``arch`` ->
``{model}/{arch}`` with every sparsity label; ``model`` -> ``{model}`` with every
architecture and label. Asking Snakemake for one SAE's file therefore runs its group, and
every other rule sees the same files in all modes. The members of a job are listed in
the same order as its file lists (:func:`job_cells` and :func:`job_files` walk the grid
alike), which is how a job pairs each SAE with its files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Literal

from saesteer.config import Grid, split_seed

GroupBy = Literal["sae", "arch", "model"]
GROUP_BY: tuple[str, ...] = ("sae", "arch", "model")


def check_group_by(group_by: str, field: str) -> None:
    if group_by not in GROUP_BY:
        raise ValueError(f"{field} must be one of {list(GROUP_BY)}, got {group_by!r}")


@dataclass(frozen=True)
class JobCell:
    """One SAE of a job: who it is and the folder its files live in (results/<path>/)."""

    model: str
    arch: str
    sparsity: str
    """The folder label: ``l0-{target_l0}``, ``l0-{target_l0}-seed{seed}`` for a seed replicate."""
    target_l0: int
    seed: int = 0
    """Seed replicate (``training.seeds``): its SAE is initialised with ``training.seed + seed``."""

    @property
    def path(self) -> str:
        return f"{self.model}/{self.arch}/{self.sparsity}"

    def to_dict(self) -> dict[str, Any]:
        """As a rule's params entry; ``seed`` only for a replicate (s > 0), so that a grid without
        replicates keeps the params, and the jobs, it had before ``training.seeds``."""
        out = asdict(self)
        if not self.seed:
            del out["seed"]
        return out


def _members(grid: Grid, group_by: str, arch: str | None, sparsity: str | None) -> list[tuple[str, str]]:
    """(arch, sparsity label) of the job's SAEs, in file-list order."""
    if group_by == "sae":
        return [(str(arch), str(sparsity))]
    archs = [str(arch)] if group_by == "arch" else list(grid.architectures)
    return [(a, label) for a in archs for label in grid.sparsity_labels]


def job_files(grid: Grid, group_by: str, tail: str, field: str = "group_by") -> list[str]:
    """The patterns of one per-SAE file (``tail`` under results/{model}/{arch}/{sparsity}/)
    of a job, one per member, with ``{model}`` (and ``{arch}``, ``{sparsity}``) left for
    Snakemake to fill in. Always a list, so that ``len(input.<name>)`` counts the job's SAEs
    in every grouping (the SLURM profile scales run times with it)."""
    check_group_by(group_by, field)
    if group_by == "sae":
        return [f"results/{{model}}/{{arch}}/{{sparsity}}/{tail}"]
    arch = "{arch}" if group_by == "arch" else None
    return [f"results/{{model}}/{a}/{label}/{tail}" for a, label in _members(grid, group_by, arch, None)]


def job_log(group_by: str, rule: str, field: str = "group_by") -> str:
    """Path stem of a job's log and benchmark files (one per job): logs/<stem>.log."""
    check_group_by(group_by, field)
    return {"sae": "{model}/{arch}/{sparsity}", "arch": "{model}/{arch}", "model": "{model}"}[group_by] + f"/{rule}"


def job_cells(grid: Grid, group_by: str, wildcards: Any, field: str = "group_by") -> list[JobCell]:
    """The SAEs of the job named by ``wildcards``, in the order of :func:`job_files`."""
    check_group_by(group_by, field)
    model = wildcards.model
    arch = getattr(wildcards, "arch", None)
    sparsity = getattr(wildcards, "sparsity", None)
    cells = []
    for a, label in _members(grid, group_by, arch, sparsity):
        target = grid.target_l0(label, model=model)
        seed = 0 if label in grid.imported_labels else split_seed(label)[1]
        cells.append(JobCell(model, a, label, target, seed))
    return cells


def all_jobs(grid: Grid, group_by: str) -> list[list[JobCell]]:
    """Every job's members over the trained grid (the cost model and tests count with it)."""
    check_group_by(group_by, "group_by")
    jobs = []
    for m in grid.model_names:
        if group_by == "model":
            keys = [{"model": m}]
        elif group_by == "arch":
            keys = [{"model": m, "arch": a} for a in grid.architectures]
        else:
            keys = [{"model": m, "arch": a, "sparsity": label} for a in grid.architectures for label in grid.sparsity_labels]
        for key in keys:
            jobs.append(job_cells(grid, group_by, SimpleNamespace(**key)))
    return jobs

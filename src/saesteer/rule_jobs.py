"""One way into every stage: a rule's job as a small dataclass, and the registry that maps
each rule to the function that runs it (docs/stages.md).

Every script in workflow/scripts/ is the same two lines: ``run_rule(snakemake)``. This
module translates Snakemake's job object into a :class:`RuleJob` (plain paths, params,
threads, and for the per-SAE stages the job's SAEs, each with its own files) and calls
``saesteer.<stage>.job.<rule>(job)``. The stage functions never see Snakemake, so tests
build a ``RuleJob`` directly.

Per-SAE files: a rule of a per-SAE stage passes ``params.cells``, the job's SAEs in the
order of its file lists (:mod:`saesteer.grouping`). A named input or output whose paths
lie under those SAEs' folders (one path per SAE, in that order) belongs to the SAEs
(``job.saes[i].inputs[name]``); every other one is shared by the job (``job.inputs[name]``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer import sae_store
from saesteer.grouping import JobCell

log = logging.getLogger(__name__)

RULE_JOBS: dict[str, str] = {
    "prepare_model": "saesteer.models.job:prepare_model",
    "cache_activations": "saesteer.cache.job:cache_activations",
    "train_sae": "saesteer.training.job:train_sae",
    "fetch_sae": "saesteer.sae.job:fetch_sae",
    "import_sae": "saesteer.sae.job:import_sae",
    "prepare_eval_data": "saesteer.evals.job:prepare_eval_data",
    "autointerp": "saesteer.evals.job:autointerp",
    "eval_interp": "saesteer.evals.job:eval_interp",
    "steering_instructions": "saesteer.steering.job:steering_instructions",
    "steer_eval": "saesteer.steering.job:steer_eval",
    "steering_vectors": "saesteer.steering.job:steering_vectors",
    "select_features": "saesteer.selection.job:select_features",
    "steer_selected": "saesteer.selection.job:steer_selected",
    "aggregate": "saesteer.aggregate.job:aggregate",
    "aggregate_steering_vectors": "saesteer.aggregate.job:aggregate_steering_vectors",
}
"""Rule name -> ``module:function`` that runs its job."""


class RuleJobError(ValueError):
    pass


@dataclass(frozen=True)
class SaeFiles:
    """One SAE of a job with its own input and output files."""

    cell: JobCell
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]

    @property
    def identity(self) -> dict[str, Any]:
        """What every per-SAE output records about its SAE: model, arch, target_l0."""
        return {"model": self.cell.model, "arch": self.cell.arch, "target_l0": self.cell.target_l0}

    @property
    def sae_dir(self) -> Path:
        """The SAE's folder (its sae_cfg input's)."""
        return Path(self.inputs["sae_cfg"]).parent


@dataclass(frozen=True)
class RuleJob:
    """What one job of a rule gets: shared files, its SAEs (per-SAE stages), params."""

    rule: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    saes: tuple[SaeFiles, ...] = ()
    threads: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)


def _named(namedlist: Any) -> dict[str, Any]:
    """Snakemake's named input/output: name -> str or list of str."""
    out: dict[str, Any] = {}
    for name in namedlist.keys():
        value = getattr(namedlist, name)
        out[name] = str(value) if isinstance(value, (str, Path)) else [str(v) for v in value]
    return out


def _split(named: Mapping[str, Any], cells: Sequence[JobCell], kind: str) -> tuple[dict[str, Any], list[dict[str, Path]]]:
    """Shared entries, and each cell's own ones (see the module docstring)."""
    shared: dict[str, Any] = {}
    per_cell: list[dict[str, Path]] = [{} for _ in cells]
    for name, value in named.items():
        paths = [value] if isinstance(value, str) else list(value)
        owned = [any(p.startswith(f"results/{c.path}/") for c in cells) for p in paths]
        if cells and all(owned):
            if len(paths) != len(cells):
                raise RuleJobError(f"{kind} {name!r}: {len(paths)} per-SAE paths for a job of {len(cells)} SAEs")
            for i, (cell, p) in enumerate(zip(cells, paths)):
                if not p.startswith(f"results/{cell.path}/"):
                    raise RuleJobError(f"{kind} {name!r}: {p} is not under results/{cell.path}/ (out of the job's SAE order)")
                per_cell[i][name] = Path(p)
        elif any(owned):
            raise RuleJobError(f"{kind} {name!r} mixes per-SAE and shared paths: {paths}")
        else:
            shared[name] = value
    return shared, per_cell


def make_rule_job(
    rule: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    threads: int = 1,
    resources: Mapping[str, Any] | None = None,
) -> RuleJob:
    """A :class:`RuleJob` from plain mappings (what :func:`job_from_snakemake` reads)."""
    cells = [c if isinstance(c, JobCell) else JobCell(**c) for c in params.get("cells") or ()]
    shared_in, cell_in = _split(inputs, cells, "input")
    shared_out, cell_out = _split(outputs, cells, "output")
    saes = tuple(SaeFiles(c, i, o) for c, i, o in zip(cells, cell_in, cell_out))
    return RuleJob(
        rule=rule,
        inputs=shared_in,
        outputs=shared_out,
        params={k: v for k, v in params.items() if k != "cells"},
        saes=saes,
        threads=int(threads or 1),
        resources=dict(resources or {}),
    )


def job_from_snakemake(smk: Any) -> RuleJob:
    """Snakemake's ``snakemake`` object of a script job -> :class:`RuleJob`."""
    return make_rule_job(
        smk.rule,
        _named(smk.input),
        _named(smk.output),
        {name: getattr(smk.params, name) for name in smk.params.keys()},
        threads=smk.threads,
        resources={name: getattr(smk.resources, name) for name in smk.resources.keys()},
    )


def rule_function(rule: str) -> Callable[[RuleJob], Any]:
    """The function that runs ``rule``'s job (:data:`RULE_JOBS`)."""
    try:
        module, name = RULE_JOBS[rule].split(":")
    except KeyError:
        raise RuleJobError(f"rule {rule!r} has no job function in saesteer.rule_jobs.RULE_JOBS") from None
    return getattr(importlib.import_module(module), name)


def run_rule(smk: Any) -> Any:
    """The whole adapter: set up the job's log, translate, run."""
    from saesteer.joblog import setup_job_logging

    if len(smk.log):
        setup_job_logging(smk.log[0])
    job = job_from_snakemake(smk)
    return rule_function(job.rule)(job)


# ---- the per-SAE store: resuming a group, rerunning one SAE --------------------------------------


def each_sae(job: RuleJob) -> Iterator[tuple[int, SaeFiles]]:
    """The job's SAEs to compute, as (number, SAE), logged. Every SAE's finished outputs are
    kept in its store entry, results/<cell>/.store/<rule>/ (:mod:`saesteer.sae_store`), with
    the fingerprint of its inputs (content hashes) and the rule's params. In a grouped job
    (more than one SAE), an SAE whose entry holds the same fingerprint is restored (hard
    links, the same bytes) instead of computed: a group that failed at its last SAE (or hit
    its time limit; Snakemake deletes a failed job's outputs) resumes where it stopped, and
    a group rerun for one SAE (``saesteer rerun``, which invalidates that SAE's entry)
    computes that SAE alone. A job of one SAE always computes it."""
    grouped = len(job.saes) > 1
    hasher = sae_store.Hasher()
    for k, sae in enumerate(job.saes, 1):
        folder = sae_store.entry_dir(f"results/{sae.cell.path}", job.rule)
        previous = sae_store.read_entry(folder)
        inputs = [*job.inputs.values(), *sae.inputs.values()]
        fingerprint = sae_store.fingerprint(job.rule, job.params, inputs, hasher, (previous or {}).get("fingerprint"))
        if grouped and sae_store.restore(folder, fingerprint, sae.outputs, hasher):
            log.info(
                "SAE %d of %d: %s restored from %s (same inputs and params as when it was computed)",
                k,
                len(job.saes),
                sae.cell.path,
                folder,
            )
            continue
        sae_store.drop(folder)
        log.info("SAE %d of %d: %s", k, len(job.saes), sae.cell.path)
        yield k, sae
        sae_store.keep(folder, fingerprint, sae.outputs, hasher)

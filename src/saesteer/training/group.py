"""Co-training: a group of SAEs of one model trained from one pass over its activations.

Every member is an ordinary :class:`~saesteer.training.trainer.Trainer` (its own SAE,
optimizer, schedules, sparsity controller, dead-latent counts, checkpoint directory and
outputs); the group only shares the data. All members of a group use the same
``training`` block, so the single-SAE job would feed each of them the very same batch
sequence (the stream is a function of ``seed``, ``batch_size``, ``shuffle_shards`` and the
data alone). The group reads each batch once and hands it to every member in turn: a
co-trained SAE is bit-for-bit the SAE the single-SAE job trains on CPU (tested), while the
activations are read (or, in ``cache.mode: stream``, computed) once instead of once per SAE.
This is the design of SAELens's ``MultiSAETrainingRunner`` and of dictionary_learning's
``trainSAE`` with several trainers.

Resuming: each member saves its own checkpoint every ``checkpoint_every_steps``. A job
killed while writing them leaves some members one checkpoint behind the others; those catch
up alone on their own (identical) stream to the leaders' step, and then the group goes on
together. The result equals an uninterrupted run (tested).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saesteer.training.config import TrainConfig
from saesteer.training.data import ActivationSource, CacheSource
from saesteer.training.trainer import EvalAccumulator, EvalResult, Trainer, job_settings, write_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupMember:
    """One SAE of a group and where its outputs go (the single-SAE job's outputs)."""

    arch: str
    target_l0: int
    weights_path: str
    cfg_path: str
    curves_path: str
    summary_path: str
    checkpoint_dir: str | None = None
    seed: int = 0
    """Seed replicate (``training.seeds``): initialised with ``training.seed + seed``."""
    control_encoder: str = "fitted"
    """A random-decoder control (arch ``random-<arch>``): how its encoder is made (saesteer.controls)."""

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> GroupMember:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"group member: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = sorted(k for k in known - {"checkpoint_dir", "seed", "control_encoder"} if k not in entry)
        if missing:
            raise ValueError(f"group member {dict(entry)}: missing field(s) {missing}")
        return cls(**{**entry, "target_l0": int(entry["target_l0"]), "seed": int(entry.get("seed", 0))})


class GroupTrainer:
    """Trains ``members`` (SAEs with ``d_sae`` latents) on one shared batch stream."""

    def __init__(
        self,
        cfg: TrainConfig,
        source: ActivationSource,
        members: Sequence[GroupMember],
        d_sae: int,
        device: str | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a training group needs at least one SAE")
        seen: set[tuple[str, int, int]] = set()
        dirs: set[str] = set()
        for m in members:
            if (m.arch, m.target_l0, m.seed) in seen:
                raise ValueError(f"training group: {m.arch} at target L0 {m.target_l0} (seed replicate {m.seed}) appears twice")
            seen.add((m.arch, m.target_l0, m.seed))
            if m.checkpoint_dir is not None:
                key = str(Path(m.checkpoint_dir).resolve())
                if key in dirs:
                    raise ValueError(f"training group: two SAEs share the checkpoint directory {m.checkpoint_dir}")
                dirs.add(key)
        self.cfg = cfg
        self.members = list(members)
        self.on_step = on_step
        self.trainers = [
            Trainer(
                cfg,
                source,
                m.arch,
                m.target_l0,
                d_sae,
                m.checkpoint_dir,
                device,
                replicate=m.seed,
                control_encoder=m.control_encoder,
            )
            for m in self.members
        ]
        self.device = self.trainers[0].device
        self.n_steps = cfg.n_steps

    @property
    def step(self) -> int:
        return min(t.step for t in self.trainers)

    def try_resume(self) -> int:
        """Resume every member that has a matching checkpoint; return how many did."""
        return sum(bool(t.try_resume()) for t in self.trainers)

    def _catch_up(self, stop: int) -> None:
        lead = min(stop, max(t.step for t in self.trainers))
        for t in self.trainers:
            if t.step < lead:
                log.info(
                    "%s L0=%d resumed at step %d, behind the group (step %d): catching up alone",
                    t.arch,
                    t.target_l0,
                    t.step,
                    lead,
                )
                t.train(max_steps=lead)

    def _share_stream(self) -> None:
        """From here on every member reads the first member's stream (all sit at one position)."""
        shared = self.trainers[0].stream
        for t in self.trainers[1:]:
            if t.stream.state_dict() != shared.state_dict() or t.step != self.trainers[0].step:
                raise RuntimeError(
                    f"training group: {t.arch} L0={t.target_l0} is at step {t.step}, stream "
                    f"{t.stream.state_dict()}; the group at step {self.trainers[0].step}, stream "
                    f"{shared.state_dict()} (a bug: members of one group must see one stream)"
                )
            t.stream = shared

    def train(self, max_steps: int | None = None) -> None:
        """Train every member to the end (or to ``max_steps`` total steps)."""
        stop = self.n_steps if max_steps is None else min(self.n_steps, max_steps)
        self._catch_up(stop)
        self._share_stream()
        stream = self.trainers[0].stream
        bar = tqdm(
            total=self.n_steps,
            initial=self.step,
            desc=f"train {len(self.trainers)} SAEs",
            unit="step",
            file=sys.stderr,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        try:
            while self.step < stop:
                batch = stream.next_batch().to(self.device, non_blocking=True)
                for t in self.trainers:
                    t.advance(batch)
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(self.step)
        finally:
            bar.close()

    @torch.no_grad()
    def evaluate(self) -> list[EvalResult]:
        """Each member's held-out metrics, from one pass over the held-out rows."""
        accumulators = [EvalAccumulator(t) for t in self.trainers]
        for batch in self.trainers[0].stream.eval_batches(self.cfg.batch_size):
            batch = batch.to(self.device)
            for acc in accumulators:
                acc.add(batch)
        return [acc.result() for acc in accumulators]


def run_group_training(
    source: ActivationSource,
    members: Sequence[GroupMember],
    cfg: TrainConfig,
    d_sae: int,
    *,
    device: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Co-train ``members`` (resuming each from its checkpoint), evaluate, write all outputs."""
    group = GroupTrainer(cfg, source, members, d_sae, device, on_step)
    resumed = group.try_resume()
    log.info(
        "co-training %d SAEs (%s): d_in %d, d_sae %d, %d steps of %d tokens on %s (%d threads); %d resumed",
        len(members),
        ", ".join(f"{m.arch}/L0={m.target_l0}" + (f"/seed{m.seed}" if m.seed else "") for m in members),
        source.d_model,
        d_sae,
        group.n_steps,
        cfg.batch_size,
        group.device,
        torch.get_num_threads(),
        resumed,
    )
    group.train()
    evaluations = group.evaluate()
    extra = {"group_size": len(members)}
    return [
        write_outputs(
            t,
            ev,
            weights_path=m.weights_path,
            cfg_path=m.cfg_path,
            curves_path=m.curves_path,
            summary_path=m.summary_path,
            extra_summary=extra,
        )
        for t, m, ev in zip(group.trainers, members, evaluations)
    ]


def train_sae_group(
    cache: str | Path,
    members: Sequence[Mapping[str, Any]],
    training: Mapping[str, Any] | None,
    sae: Mapping[str, Any],
    *,
    device: str | None = None,
    threads: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Workflow entry point: co-train a group of SAEs on one cache (see :func:`train_sae`)."""
    cfg, dict_size = job_settings(training, sae, threads)
    return run_group_training(
        CacheSource(str(cache)),
        [GroupMember.from_dict(m) for m in members],
        cfg,
        dict_size,
        device=device,
        on_step=on_step,
    )


def train_sae_group_streaming(
    model_json: str | Path,
    model_entry: Mapping[str, Any],
    corpus: Mapping[str, Any],
    cache_block: Mapping[str, Any],
    members: Sequence[Mapping[str, Any]],
    training: Mapping[str, Any] | None,
    sae: Mapping[str, Any],
    *,
    device: str | None = None,
    threads: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Workflow entry point in ``cache.mode: stream``: the job runs the LLM up to the hook
    itself (saesteer.cache.stream) and co-trains the group on those activations."""
    from saesteer.cache.stream import stream_source_from_model

    cfg, dict_size = job_settings(training, sae, threads)
    source = stream_source_from_model(model_json, dict(model_entry), dict(corpus), dict(cache_block))
    summaries = run_group_training(
        source, [GroupMember.from_dict(m) for m in members], cfg, dict_size, device=device, on_step=on_step
    )
    log.info("the LLM ran over %d tokens for this job (no activation cache)", source.forward_tokens)
    return summaries

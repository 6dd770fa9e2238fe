"""The SAE trainer: one SAE from an activation cache, resumable, reproducible on CPU.

Recipe (SAEBench suite, as in the paper): Adam, lr warm-up over ``lr_warmup_steps``
then constant, linear decay to zero over the last ``lr_decay_fraction`` of the steps;
sparsity warm-up / calibration (controller.py); activations scaled to unit mean squared
norm; gradient-norm clipping; unit-norm decoder rows with the radial gradient removed for
topk/batchtopk/gated/jumprelu (relu keeps the April update's unconstrained decoder);
dead-latent tracking in tokens since last firing (AuxK for topk/batchtopk); bf16
autocast on CUDA.

Reproducibility: all randomness comes from generators seeded by ``seed`` (init) and by
(seed, epoch, group) (data order); no global RNG is used. On CPU, with the same thread
count, a run is bit-for-bit reproducible, and a run killed and resumed from its
checkpoint ends with exactly the weights of an uninterrupted one (tested).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from saesteer.controls import base_arch, is_control
from saesteer.devices import resolve_device
from saesteer.io import atomic_path, sha256_json, write_json_atomic
from saesteer.sae.base import BaseSAE, LossOutput, StepContext
from saesteer.sae.random_decoder import make_random_decoder_control
from saesteer.sae.registry import build_sae
from saesteer.sae.saelens_io import save_saelens
from saesteer.training.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from saesteer.training.config import TrainConfig
from saesteer.training.controller import SparsityController
from saesteer.training.data import ActivationSource, CacheSource, ShuffledBatches

log = logging.getLogger(__name__)

StepHook = Callable[[int], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last checkpoint."""


def lr_at(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, constant, then linear decay to 0 over the final fraction."""
    warm = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps > 0 else 1.0
    decay_steps = int(round(n_steps * cfg.lr_decay_fraction))
    decay_start = n_steps - decay_steps
    decay = 1.0 if step < decay_start else max(0.0, (n_steps - step) / decay_steps)
    return cfg.lr * warm * decay


def _make_adam(params: list[torch.nn.Parameter], cfg: TrainConfig, arch: str) -> torch.optim.Adam:
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": cfg.adam_betas_for(arch), "eps": cfg.adam_eps}
    try:
        # One fused kernel per step instead of a dozen passes over the weights.
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, foreach=True, **kwargs)


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over a batch."""
    x, x_hat = x.double(), x_hat.double()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - (x - x_hat).pow(2).sum() / total) if total > 0 else float("nan")


@dataclass
class EvalResult:
    n_tokens: int
    l0: float
    explained_variance: float
    mse: float
    mse_normalized: float
    dead_fraction: float


class EvalAccumulator:
    """Held-out metrics of one trainer's SAE, accumulated batch by batch (so a group of
    SAEs can be evaluated from one pass over the held-out rows)."""

    def __init__(self, trainer: Trainer) -> None:
        self.sae = trainer.sae
        self.device = trainer.device
        self.sae.eval()
        d = self.sae.d_in
        self.n = 0
        self.l0_sum = 0.0
        self.fired = torch.zeros(self.sae.d_sae, dtype=torch.bool, device=self.device)
        self.sq_err = torch.zeros((), dtype=torch.float64, device=self.device)
        self.x_sum = torch.zeros(d, dtype=torch.float64, device=self.device)
        self.x_sq = torch.zeros((), dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def add(self, batch: torch.Tensor) -> None:
        x = batch.to(self.device)
        codes = self.sae.encode(x)
        x_hat = self.sae.decode(codes)
        active = codes != 0
        self.n += x.shape[0]
        self.l0_sum += float(active.sum())
        self.fired |= active.any(0)
        self.sq_err += (x - x_hat).double().pow(2).sum()
        self.x_sum += x.double().sum(0)
        self.x_sq += x.double().pow(2).sum()

    def result(self) -> EvalResult:
        n, d = self.n, self.sae.d_in
        if n == 0:
            nan = float("nan")
            return EvalResult(0, nan, nan, nan, nan, nan)
        total_var = float(self.x_sq - self.x_sum.pow(2).sum() / n)
        scale_sq = float(self.sae.act_scale) ** 2
        return EvalResult(
            n_tokens=n,
            l0=self.l0_sum / n,
            explained_variance=1.0 - float(self.sq_err) / total_var if total_var > 0 else float("nan"),
            mse=float(self.sq_err) / (n * d),
            mse_normalized=float(self.sq_err) / n / scale_sq,
            dead_fraction=1.0 - float(self.fired.float().mean()),
        )


class Trainer:
    """Trains one SAE of ``arch`` with ``d_sae`` latents toward ``target_l0`` on ``source``."""

    def __init__(
        self,
        cfg: TrainConfig,
        source: ActivationSource,
        arch: str,
        target_l0: int,
        d_sae: int,
        checkpoint_dir: str | Path | None = None,
        device: str | None = None,
        on_step: StepHook | None = None,
        replicate: int = 0,
        control_encoder: str = "fitted",
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.arch = arch
        self.control = is_control(arch)
        """A random-decoder control (``random-<arch>``; saesteer.sae.random_decoder)."""
        self.control_encoder = control_encoder
        built = base_arch(arch)
        self.target_l0 = int(target_l0)
        # Seed replicate s (training.seeds): initialised with seed training.seed + s; the data
        # order stays training.seed's, so a group shares one stream (one activation pass).
        self.replicate = int(replicate)
        if self.replicate < 0:
            raise ValueError(f"seed replicate must be >= 0, got {replicate}")
        self.init_seed = cfg.seed + self.replicate
        self.device = resolve_device(device or cfg.device, "training.device")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.on_step = on_step
        self.n_steps = cfg.n_steps

        msn = float(source.mean_squared_norm)
        if not (math.isfinite(msn) and msn > 0):
            raise ValueError(
                f"the activation cache's mean squared norm is {msn}: it holds non-finite or all-zero "
                f"activations; rebuild the cache"
            )
        act_scale = math.sqrt(msn) if cfg.normalize_activations else 1.0
        self.sae: BaseSAE = build_sae(built, source.d_model, d_sae, self.target_l0, act_scale, cfg.options_for(built))
        self.sae.reset_parameters(torch.Generator().manual_seed(self.init_seed))
        if self.control:
            make_random_decoder_control(self.sae, control_encoder)
        self.sae.to(self.device)
        self.params = [p for p in self.sae.parameters() if p.requires_grad]
        self.optimizer = _make_adam(self.params, cfg, built)
        self.controller: SparsityController | None = None
        if self.sae.sparsity_kind == "penalty":
            max_gain, horizon = cfg.controller_gain_and_horizon()
            self.controller = SparsityController(
                target_l0=float(self.target_l0),
                init_coef=cfg.initial_coef(built, self.target_l0),
                warmup_steps=cfg.sparsity_warmup_steps,
                calibrate=cfg.calibrates(built),
                rate=cfg.calibration_rate,
                max_gain=max_gain,
                horizon=horizon,
                track_fraction=cfg.calibration_track_fraction,
            )
        self.stream = ShuffledBatches(source, cfg.batch_size, cfg.seed, cfg.shuffle_shards, cfg.eval_tokens)
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.step = 0
        self.curves: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.n_resumes = 0
        self.last_checkpoint: tuple[Path, int] | None = None
        identity: dict[str, Any] = {
            "arch": arch,
            **({"control_encoder": control_encoder} if self.control else {}),
            "target_l0": self.target_l0,
            "d_sae": d_sae,
            "config": cfg.result_fields(),
            "data": source.identity(),
            "device_type": self.device.type,
        }
        if self.replicate:  # replicate 0 keeps the fingerprint of checkpoints written before training.seeds
            identity["replicate"] = self.replicate
        self.fingerprint = sha256_json(identity)
        self._sparse_policy: bool | None = {
            "always": True,
            "never": False,
            "auto": None if self.device.type == "cpu" else False,
        }[cfg.sparse_kernels]

    # ---- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "controller": self.controller.state_dict() if self.controller else None,
            "stream": self.stream.state_dict(),
            "tokens_since_fired": self.tokens_since_fired.cpu(),
            "curves": self.curves,
            "train_seconds": self.train_seconds,
            "n_resumes": self.n_resumes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.controller is not None and state["controller"] is not None:
            self.controller.load_state_dict(state["controller"])
        self.stream.load_state_dict(state["stream"])
        self.tokens_since_fired = state["tokens_since_fired"].to(self.device)
        self.curves = list(state["curves"])
        self.train_seconds = float(state["train_seconds"])
        self.n_resumes = int(state["n_resumes"])

    def try_resume(self) -> bool:
        payload = load_checkpoint(self.checkpoint_dir, self.fingerprint)
        if payload is None:
            return False
        self.load_state_dict(payload)
        self.n_resumes += 1
        assert self.checkpoint_dir is not None
        self.last_checkpoint = (self.checkpoint_dir, self.step)
        log.info("resumed %s (target L0 %d) from its checkpoint at step %d", self.arch, self.target_l0, self.step)
        return True

    def save_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        path = save_checkpoint(self.checkpoint_dir, self.fingerprint, self.state_dict())
        self.last_checkpoint = (path, self.step)
        log.info("checkpoint at step %d: %s", self.step, path)

    # ---- training -----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.cfg.autocast_dtype == "bfloat16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _diverged(self, value: float, x: torch.Tensor) -> TrainingDiverged:
        where = (
            f"last good checkpoint: {self.last_checkpoint[0]} (step {self.last_checkpoint[1]}); a rerun resumes from it"
            if self.last_checkpoint is not None
            else f"no checkpoint was written yet (checkpoint_every_steps={self.cfg.checkpoint_every_steps})"
        )
        cause = (
            "the batch itself holds non-finite activations: check the activation cache"
            if not bool(torch.isfinite(x).all())
            else "try a lower training.lr or a different seed"
        )
        return TrainingDiverged(
            f"{self.arch} SAE (target L0 {self.target_l0}): loss is {value} at step {self.step} "
            f"(after {self.step * self.cfg.batch_size} training tokens); training stopped. {where}. {cause}."
        )

    def _train_step(self, batch: torch.Tensor) -> tuple[LossOutput, torch.Tensor, float, float]:
        x = batch.to(self.device, non_blocking=True)
        x_n = x / self.sae.act_scale
        if self.step == 0:
            self.sae.init_from_batch(x_n)
        lr = lr_at(self.step, self.n_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coef = self.controller.coef(self.step) if self.controller else 0.0
        dead = self.tokens_since_fired >= self.cfg.dead_window_tokens
        ctx = StepContext(
            sparsity_coef=coef,
            dead_mask=dead if bool(dead.any()) else None,
            sparse=self._sparse_policy,
            max_sparse_density=self.cfg.max_sparse_density,
        )
        self.sae.train()
        with self._autocast():
            out = self.sae.loss(x_n, ctx)
        value = float(out.loss.detach())
        if not math.isfinite(value):
            raise self._diverged(value, x)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.project_decoder_grad()
        if self.cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)
        self.optimizer.step()
        self.sae.after_optimizer_step()
        self.sae.update_running_stats(out, self.step, self.n_steps)
        if self.controller is not None:
            self.controller.update(self.step, float(out.l0))
        self.tokens_since_fired += x.shape[0]
        self.tokens_since_fired[out.fired.to(self.device)] = 0
        return out, x_n, lr, coef

    def _log_row(self, out: LossOutput, x_n: torch.Tensor, lr: float, coef: float) -> dict[str, Any]:
        dead = self.tokens_since_fired >= self.cfg.dead_window_tokens
        row: dict[str, Any] = {"step": self.step, "tokens": self.step * self.cfg.batch_size}
        row.update(out.scalars())
        row.update(
            {
                "explained_variance": explained_variance(x_n, out.x_hat),
                "lr": lr,
                "sparsity_coef": coef,
                "dead_fraction": float(dead.float().mean()),
                "sparse_kernels": bool(out.used_sparse),
                "train_seconds": self.train_seconds,
            }
        )
        return row

    def train(self, max_steps: int | None = None) -> None:
        """Run (or continue) training to the end, or to ``max_steps`` total steps."""
        stop = self.n_steps if max_steps is None else min(self.n_steps, max_steps)
        every_log = self.cfg.log_every_steps
        interactive = sys.stderr.isatty()
        bar = tqdm(
            total=self.n_steps,
            initial=self.step,
            desc=f"train {self.arch} L0={self.target_l0}",
            unit="step",
            file=sys.stderr,
            mininterval=0.5 if interactive else 30.0,  # a log file gets a line every 30 s
        )
        try:
            while self.step < stop:
                self.advance(self.stream.next_batch())
                bar.update(1)
                if self.step % every_log == 0 or self.step == self.n_steps:
                    last = self.curves[-1]
                    bar.set_postfix(loss=f"{last['loss']:.4g}", l0=f"{last['l0']:.1f}", ev=f"{last['explained_variance']:.3f}")
                if self.on_step is not None:
                    self.on_step(self.step)
        finally:
            bar.close()

    def advance(self, batch: torch.Tensor) -> None:
        """One training step on ``batch``, then its log row and checkpoint when due.

        ``train`` feeds it this trainer's own stream; a :class:`GroupTrainer` feeds every
        member the same batch of a shared stream.
        """
        start = time.perf_counter()
        out, x_n, lr, coef = self._train_step(batch)
        self.train_seconds += time.perf_counter() - start
        self.step += 1
        if self.step % self.cfg.log_every_steps == 0 or self.step == self.n_steps:
            row = self._log_row(out, x_n, lr, coef)
            self.curves.append(row)
            log.info(
                "%s L0=%d step %d/%d loss %.5g mse %.5g l0 %.1f ev %.4f lr %.3g coef %.4g dead %.3f",
                self.arch,
                self.target_l0,
                self.step,
                self.n_steps,
                row["loss"],
                row["mse"],
                row["l0"],
                row["explained_variance"],
                lr,
                coef,
                row["dead_fraction"],
            )
        if self.step % self.cfg.checkpoint_every_steps == 0 and self.step < self.n_steps:
            self.save_checkpoint()

    # ---- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> EvalResult:
        """Inference-mode metrics of the SAE (as exported) on the held-out part of the cache."""
        acc = EvalAccumulator(self)
        for batch in self.stream.eval_batches(self.cfg.batch_size):
            acc.add(batch)
        return acc.result()

    def summary(self, ev: EvalResult) -> dict[str, Any]:
        n_tokens = self.step * self.cfg.batch_size
        dead_train = self.tokens_since_fired >= self.cfg.dead_window_tokens
        return {
            "arch": self.arch,
            "target_l0": self.target_l0,
            "achieved_l0": ev.l0,
            "l0_relative_error": (ev.l0 - self.target_l0) / self.target_l0,
            "train_l0_ema": self.controller.l0_ema if self.controller else (self.curves[-1]["l0"] if self.curves else None),
            "explained_variance": ev.explained_variance,
            "mse": ev.mse,
            "mse_normalized": ev.mse_normalized,
            "dead_fraction": ev.dead_fraction,
            "dead_fraction_train_window": float(dead_train.float().mean()),
            "eval_tokens": ev.n_tokens,
            "n_steps": self.step,
            "n_tokens": n_tokens,
            "epochs": n_tokens / self.stream.n_train,
            "tokens_per_s": n_tokens / self.train_seconds if self.train_seconds > 0 else None,
            "wall_time_s": self.train_seconds,
            "resumed": self.n_resumes,
            "d_in": self.sae.d_in,
            "d_sae": self.sae.d_sae,
            "act_scale": float(self.sae.act_scale),
            "sparsity_coef": self.controller.coef(self.step) if self.controller else None,
            "sparsity": self.sae.sparsity_info(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "seed": self.cfg.seed,
            **({"replicate": self.replicate, "init_seed": self.init_seed} if self.replicate else {}),
            **(
                {"control": {"kind": "random_decoder", "encoder": self.control_encoder, "built_as": base_arch(self.arch)}}
                if self.control
                else {}
            ),
            "data": self.source.describe(),
            "training": self.cfg.to_dict(),
        }


def _write_curves(path: str | Path, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def run_training(
    source: ActivationSource,
    arch: str,
    target_l0: int,
    cfg: TrainConfig,
    d_sae: int,
    *,
    weights_path: str | Path,
    cfg_path: str | Path,
    curves_path: str | Path,
    summary_path: str | Path,
    checkpoint_dir: str | Path | None = None,
    device: str | None = None,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Train (resuming if a matching checkpoint exists), evaluate, and write all outputs."""
    trainer = Trainer(cfg, source, arch, target_l0, d_sae, checkpoint_dir, device, on_step)
    trainer.try_resume()
    log.info(
        "training %s SAE: d_in %d, d_sae %d, target L0 %d, %d steps of %d tokens on %s (%d threads)",
        arch,
        trainer.sae.d_in,
        d_sae,
        target_l0,
        trainer.n_steps,
        cfg.batch_size,
        trainer.device,
        torch.get_num_threads(),
    )
    trainer.train()
    evaluation = trainer.evaluate()
    return write_outputs(
        trainer,
        evaluation,
        weights_path=weights_path,
        cfg_path=cfg_path,
        curves_path=curves_path,
        summary_path=summary_path,
    )


def write_outputs(
    trainer: Trainer,
    evaluation: EvalResult,
    *,
    weights_path: str | Path,
    cfg_path: str | Path,
    curves_path: str | Path,
    summary_path: str | Path,
    extra_summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a trained SAE's outputs (SAELens files, curves, summary); drop its checkpoint."""
    cfg, target_l0 = trainer.cfg, trainer.target_l0
    summary = trainer.summary(evaluation)
    summary.update(extra_summary or {})
    data = trainer.source.describe()
    metadata: dict[str, Any] = {
        "model_name": data.get("model"),
        "hook_name": data.get("hook_name"),
        "saesteer": {
            "target_l0": target_l0,
            "achieved_l0": evaluation.l0,
            "explained_variance": evaluation.explained_variance,
            "training_tokens": summary["n_tokens"],
            "layer": data.get("layer"),
            **({"control": summary["control"]} if "control" in summary else {}),
        },
    }
    context = data.get("context_length")
    if context is not None:
        metadata["context_size"] = context
    save_saelens(trainer.sae.cpu(), weights_path, cfg_path, metadata)
    _write_curves(curves_path, trainer.curves)
    write_json_atomic(summary_path, summary)
    if not cfg.keep_checkpoint:
        remove_checkpoint(trainer.checkpoint_dir)
    log.info(
        "done %s L0=%d%s: L0 %.1f, explained variance %.4f, dead %.3f, %.0f tokens/s",
        trainer.arch,
        target_l0,
        f" (seed replicate {trainer.replicate})" if trainer.replicate else "",
        evaluation.l0,
        evaluation.explained_variance,
        evaluation.dead_fraction,
        summary["tokens_per_s"] or 0.0,
    )
    return summary


def job_settings(training: Mapping[str, Any] | None, sae: Mapping[str, Any], threads: int | None) -> tuple[TrainConfig, int]:
    """The training entry points' common start: torch's CPU thread count (``threads``, if set),
    the ``training`` block as a :class:`TrainConfig`, and the ``sae`` block's ``dict_size``."""
    if threads:
        torch.set_num_threads(int(threads))
    if "dict_size" not in sae:
        raise ValueError("the sae config block needs dict_size")
    return TrainConfig.from_dict(dict(training or {})), int(sae["dict_size"])


def train_sae(
    cache: str | Path,
    arch: str,
    target_l0: int,
    training: Mapping[str, Any] | None,
    sae: Mapping[str, Any],
    *,
    weights_path: str | Path,
    cfg_path: str | Path,
    curves_path: str | Path,
    summary_path: str | Path,
    checkpoint_dir: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    on_step: StepHook | None = None,
) -> dict[str, Any]:
    """Workflow entry point: train one SAE on a cache (its directory or manifest.json).

    ``training`` is the config's ``training`` block (see :class:`TrainConfig`), ``sae``
    its ``sae`` block (``dict_size``). ``device`` overrides ``training.device`` (e.g. a
    Snakemake resource); ``threads`` sets torch's CPU thread count.
    """
    cfg, dict_size = job_settings(training, sae, threads)
    return run_training(
        CacheSource(str(cache)),
        arch,
        int(target_l0),
        cfg,
        dict_size,
        weights_path=weights_path,
        cfg_path=cfg_path,
        curves_path=curves_path,
        summary_path=summary_path,
        checkpoint_dir=checkpoint_dir,
        device=device,
        on_step=on_step,
    )

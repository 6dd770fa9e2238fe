"""Core metrics of an SAE on held-out residuals (SAEBench "core", Karvonen et al. 2025,
arXiv 2503.09532).

Reconstruction and sparsity, over every stored held-out token except BOS (the SAEs never
see BOS; SAEBench's ``exclude_special_tokens_from_reconstruction``):

- ``l0``: mean number of nonzero latents per token; ``l1``: mean sum of codes.
- ``mse``: mean over tokens and dimensions of (x - x_hat)^2, in the model's units;
  ``normalized_mse``: sum ||x - x_hat||^2 / sum ||x||^2.
- ``explained_variance``: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (pooled over
  all tokens; an SAE that outputs zeros scores 1 - E||x||^2 / Var(x) <= 0).
- ``cossim``: mean over tokens of cos(x, x_hat); ``l2_ratio``: mean ||x_hat|| / ||x||;
  ``relative_reconstruction_bias``: E[x_hat . x_hat] / E[x_hat . x] (1 = unbiased; SAEBench).
- density: fraction of tokens on which each latent fires; ``frac_alive`` = share of latents
  that fire at least once on these tokens, ``frac_dead`` = 1 - frac_alive; a histogram of
  log10 density of the alive latents on fixed bins.

Spliced metrics, on the first ``eval.core.splice_contexts`` contexts (:mod:`splice`):

- the hook-point residual is replaced by the SAE reconstruction at every position but BOS
  (which keeps its clean value: the SAEs never saw BOS), and the model runs on;
- the zero-ablation reference zeroes the residual at every position, BOS included, as
  SAEBench's ``standard_zero_ablate_hook`` does (``eval.core.zero_ablation: all``, the
  default; ``keep_bos`` leaves BOS clean, so that an SAE that outputs zeros scores exactly
  the zero-ablation); interp.json names the mode (``core.zero_ablation``);
- ``ce_loss_score`` = (CE_zero - CE_sae) / (CE_zero - CE_clean), CE the mean next-token
  cross-entropy over positions whose prediction saw a replaced residual;
- ``kl_div_score`` = (KL_zero - KL_sae) / KL_zero, KL = mean over the same positions of
  KL(p_clean || p_spliced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# log10(density) bin edges of the histogram: fixed so reports compare across SAEs.
DENSITY_LOG10_EDGES: tuple[float, ...] = tuple(x / 2 for x in range(-16, 1))


@dataclass
class ReconstructionStats:
    """Running sums over tokens; feed batches with :meth:`update`, read :meth:`result`."""

    d_sae: int
    n: int = 0
    sum_l0: float = 0.0
    sum_l1: float = 0.0
    sum_sq_err: float = 0.0
    sum_sq_norm: float = 0.0
    sum_cos: float = 0.0
    sum_l2_ratio: float = 0.0
    sum_hat_dot_hat: float = 0.0
    sum_hat_dot_x: float = 0.0
    sum_x: Tensor | None = None
    fires: Tensor | None = field(default=None, repr=False)

    @torch.inference_mode()
    def update(self, x: Tensor, x_hat: Tensor, codes: Tensor) -> None:
        """x, x_hat: [n, d]; codes: [n, d_sae]."""
        x, x_hat = x.double(), x_hat.double()
        active = codes != 0
        self.n += x.shape[0]
        self.sum_l0 += float(active.sum())
        self.sum_l1 += float(codes.double().abs().sum())
        self.sum_sq_err += float((x - x_hat).pow(2).sum())
        self.sum_sq_norm += float(x.pow(2).sum())
        x_norm = x.norm(dim=-1)
        hat_norm = x_hat.norm(dim=-1)
        dot = (x * x_hat).sum(-1)
        self.sum_cos += float((dot / (x_norm * hat_norm).clamp_min(1e-12)).sum())
        self.sum_l2_ratio += float((hat_norm / x_norm.clamp_min(1e-12)).sum())
        self.sum_hat_dot_hat += float(hat_norm.pow(2).sum())
        self.sum_hat_dot_x += float(dot.sum())
        batch_sum = x.sum(0).cpu()
        self.sum_x = batch_sum if self.sum_x is None else self.sum_x + batch_sum
        fired = active.sum(0).to(torch.int64).cpu()
        self.fires = fired if self.fires is None else self.fires + fired

    def result(self) -> dict[str, Any]:
        if self.n == 0 or self.sum_x is None or self.fires is None:
            raise ValueError("no tokens were evaluated")
        n, d = self.n, self.sum_x.shape[0]
        mean = self.sum_x / n
        total_var = self.sum_sq_norm - n * float(mean.pow(2).sum())
        density = self.fires.double() / n
        alive = density > 0
        log_density = torch.log10(density[alive]).clamp(DENSITY_LOG10_EDGES[0], DENSITY_LOG10_EDGES[-1])
        counts = torch.histogram(log_density.float(), bins=torch.tensor(DENSITY_LOG10_EDGES)).hist
        return {
            "n_tokens": n,
            "l0": self.sum_l0 / n,
            "l1": self.sum_l1 / n,
            "mse": self.sum_sq_err / (n * d),
            "normalized_mse": self.sum_sq_err / max(self.sum_sq_norm, 1e-30),
            "explained_variance": 1.0 - self.sum_sq_err / max(total_var, 1e-30),
            "cossim": self.sum_cos / n,
            "l2_ratio": self.sum_l2_ratio / n,
            "relative_reconstruction_bias": (self.sum_hat_dot_hat / self.sum_hat_dot_x) if self.sum_hat_dot_x else None,
            "frac_alive": float(alive.double().mean()),
            "frac_dead": float(1.0 - alive.double().mean()),
            "density": {
                "mean": float(density.mean()),
                "median": float(density.median()),
                "log10_bin_edges": list(DENSITY_LOG10_EDGES),
                "counts": [int(c) for c in counts.tolist()],
                "dead": int((~alive).sum()),
            },
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    # A model whose zero-ablation *lowers* the loss gives a negative denominator: the ratio is
    # still what SAEBench reports. Only an exactly uninformative ablation has no score.
    return numerator / denominator if denominator != 0 else None


def splice_scores(ce_clean: Tensor, ce_zero: Tensor, ce_sae: Tensor, kl_zero: Tensor, kl_sae: Tensor) -> dict[str, Any]:
    """CE-loss-recovered and KL score from per-token losses (ratios of means, as SAEBench)."""
    clean, zero, sae = float(ce_clean.double().mean()), float(ce_zero.double().mean()), float(ce_sae.double().mean())
    klz, kls = float(kl_zero.double().mean()), float(kl_sae.double().mean())
    return {
        "n_tokens": int(ce_sae.numel()),
        "ce_loss_clean": clean,
        "ce_loss_zero_ablation": zero,
        "ce_loss_with_sae": sae,
        "ce_loss_score": _ratio(zero - sae, zero - clean),
        "kl_div_zero_ablation": klz,
        "kl_div_with_sae": kls,
        "kl_div_score": _ratio(klz - kls, klz),
    }

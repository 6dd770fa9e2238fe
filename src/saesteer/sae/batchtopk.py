"""BatchTopK SAE (Bussmann, Leask, Nanda 2024, arXiv 2412.06410).

Training: z = W_enc (x - b_dec) + b_enc; keep the k * B largest entries of ReLU(z) across
the whole batch of B tokens (so k is the *mean* L0, and tokens may use more or fewer
latents); loss and AuxK as TopK (Gao et al. 2024).

Inference: a batch-independent JumpReLU, f = ReLU(z) * 1[ReLU(z) > theta], with theta a
running estimate of the smallest kept activation: theta <- beta * theta + (1 - beta) *
min(kept, > 0) per batch (section 3 of the paper; beta = 0.999 and a start after 1000
steps follow dictionary_learning's trainer). SAELens stores a trained BatchTopK SAE as
a JumpReLU SAE with that threshold for every latent; so does :mod:`saelens_io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from saesteer.sae.base import BaseSAE, LossOutput
from saesteer.sae.registry import ArchSpec, register
from saesteer.sae.sparse import SparseStructure, batch_topk_flat_indices
from saesteer.sae.topk import AUXK_TRAINING_KEYS, TopKOptions, TopKSAE
from saesteer.schemas import schema_defaults


class BatchTopKSAE(TopKSAE):
    arch: ClassVar[str] = "batchtopk"

    threshold: Tensor

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        act_scale: float = 1.0,
        aux_k: int | None = None,
        aux_coef: float = 1.0 / 32.0,
        threshold_beta: float = 0.999,
        threshold_start_step: int = 1000,
    ):
        super().__init__(d_in, d_sae, k, act_scale=act_scale, aux_k=aux_k, aux_coef=aux_coef)
        self.threshold_beta = float(threshold_beta)
        self.threshold_start_step = int(threshold_start_step)
        # float64: an EMA over ~1e5 steps in float32 drifts; -1 means "not estimated yet".
        self.register_buffer("threshold", torch.tensor(-1.0, dtype=torch.float64))

    def _select(self, pre_d: Tensor) -> SparseStructure:
        n_rows, n_cols = pre_d.shape
        flat = batch_topk_flat_indices(pre_d.relu(), self.k * n_rows)
        return SparseStructure.from_flat(flat, n_rows, n_cols)

    def encode_normalized(self, x_n: Tensor) -> Tensor:
        acts = self.pre_acts(x_n).relu()
        theta = max(float(self.threshold), 0.0)
        return acts * (acts > theta)

    def encode_batch_topk(self, x_n: Tensor) -> Tensor:
        """Training-time codes (batch-dependent): the k * B largest across the batch."""
        pre = self.pre_acts(x_n)
        struct = self._select(pre.detach())
        return struct.to_dense(pre[struct.rows, struct.cols].relu())

    @torch.no_grad()
    def update_running_stats(self, out: LossOutput, step: int, total_steps: int) -> None:
        # Start no later than halfway, so short runs (tests, demos) still get an estimate.
        start = min(self.threshold_start_step, total_steps // 2)
        if step < start:
            return
        kept = (out.extra or {})["kept"]
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(torch.float64)
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.mul_(self.threshold_beta).add_((1 - self.threshold_beta) * smallest)

    def sparsity_info(self) -> dict[str, Any]:
        info = super().sparsity_info()
        info["threshold"] = float(self.threshold)
        return info


@dataclass(frozen=True)
class BatchTopKOptions(TopKOptions):
    threshold_beta: float = schema_defaults("training")["batchtopk_threshold_beta"]
    threshold_start_step: int = schema_defaults("training")["batchtopk_threshold_start_step"]


BATCHTOPK_TRAINING_KEYS = {
    **AUXK_TRAINING_KEYS,
    "batchtopk_threshold_beta": "threshold_beta",
    "batchtopk_threshold_start_step": "threshold_start_step",
}


def threshold_state(spec: ArchSpec, sae: BaseSAE) -> dict[str, Tensor]:
    """b_enc, and the one inference threshold as SAELens's JumpReLU per-latent threshold."""
    theta = max(float(sae.threshold), 0.0)
    return {"b_enc": sae.b_enc.detach().float(), "threshold": torch.full((sae.d_sae,), theta, dtype=torch.float32)}


def unfold_threshold(sae: BaseSAE, state: dict[str, Tensor], cfg: dict[str, Any], where: str) -> None:
    """The per-latent JumpReLU thresholds back into the one threshold (they must agree)."""
    threshold = state.pop("threshold")
    if float(threshold.max() - threshold.min()) > 0:
        raise ValueError(
            f"{where}: a {sae.arch} SAE has one inference threshold, these thresholds differ across "
            f"latents ({float(threshold.min())}..{float(threshold.max())}): import it as jumprelu"
        )
    sae.threshold.copy_(threshold.max().to(torch.float64))


SPEC = register(
    ArchSpec(
        name="batchtopk",
        sae_class=BatchTopKSAE,
        label="BatchTopK",
        colour="#55A868",
        sparsity="k",
        # SAELens saves a trained BatchTopK SAE as a JumpReLU SAE (one threshold for all).
        saelens_arch="jumprelu",
        options=BatchTopKOptions,
        order=30,
        tensors=("b_enc", "threshold"),
        legacy_training_keys=BATCHTOPK_TRAINING_KEYS,
        saelens_state=threshold_state,
        unfold_saelens=unfold_threshold,
    )
)

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

from typing import Any, ClassVar

import torch
from torch import Tensor

from saesteer.sae.base import LossOutput
from saesteer.sae.sparse import SparseStructure, batch_topk_flat_indices
from saesteer.sae.topk import TopKSAE


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

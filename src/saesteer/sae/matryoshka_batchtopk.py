"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen, Nanda 2025, arXiv 2503.17547).

The dictionary is split into nested groups: prefixes m_1 < m_2 < ... < m_G = d_sae of the
latents. Codes are BatchTopK's (the k * B largest of ReLU(W_enc (x - b_dec) + b_enc) across
a batch of B tokens), and every prefix must reconstruct x on its own:

    x_hat_g = b_dec + sum_{i < m_g} f_i W_dec,i
    L       = sum_g w_g ||x - x_hat_g||^2 + alpha * L_aux

so early latents learn general features and later ones refine them, instead of absorbing
them (the paper's motivation). Group sizes come from ``group_fractions`` of d_sae
(default 1/32, 1/16, 1/8, 1/4, rest: dictionary_learning's and SAEBench's Matryoshka
suites); weights w_g default to 1/G (dictionary_learning; SAELens sums them unweighted,
the same optimum up to the loss scale). AuxK works on the full reconstruction's residual,
as in both implementations.

Inference is BatchTopK's: a JumpReLU with one threshold, the running estimate of the
smallest kept activation. SAELens saves a trained Matryoshka BatchTopK SAE as a JumpReLU SAE
(``MatryoshkaBatchTopKTrainingSAE`` -> ``JumpReLUSAEConfig``), and so does this project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from saesteer.sae.base import LossOutput, StepContext, mse_sum
from saesteer.sae.batchtopk import BATCHTOPK_TRAINING_KEYS, BatchTopKOptions, BatchTopKSAE, threshold_state, unfold_threshold
from saesteer.sae.registry import ArchSpec, register
from saesteer.sae.sparse import SparseStructure, sparse_decode

DEFAULT_GROUP_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 17 / 32)


def group_sizes(d_sae: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Sizes of the nested groups: floor(f * d_sae) for all but the last, which takes the rest
    (dictionary_learning's rule)."""
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"matryoshka group_fractions must be positive and sum to 1, got {list(fractions)}")
    sizes = [int(f * d_sae) for f in fractions[:-1]]
    sizes.append(d_sae - sum(sizes))
    if any(s <= 0 for s in sizes):
        raise ValueError(
            f"matryoshka group_fractions {list(fractions)} give an empty group at d_sae={d_sae} (sizes {sizes}); "
            f"use fewer or larger groups"
        )
    return tuple(sizes)


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    arch: ClassVar[str] = "matryoshka_batchtopk"

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
        group_fractions: tuple[float, ...] = DEFAULT_GROUP_FRACTIONS,
        group_weights: tuple[float, ...] | None = None,
    ):
        super().__init__(d_in, d_sae, k, act_scale, aux_k, aux_coef, threshold_beta, threshold_start_step)
        self.group_fractions = tuple(float(f) for f in group_fractions)
        self.group_sizes = group_sizes(d_sae, self.group_fractions)
        n = len(self.group_sizes)
        weights = tuple(float(w) for w in group_weights) if group_weights is not None else (1.0 / n,) * n
        if len(weights) != n or any(w < 0 for w in weights):
            raise ValueError(f"matryoshka group_weights must be {n} non-negative numbers, got {list(weights)}")
        self.group_weights = weights
        ends = torch.tensor(self.group_sizes).cumsum(0).tolist()
        self.group_bounds = tuple(zip([0, *ends[:-1]], ends))  # (start, end) of each group

    def prefix_reconstructions(self, codes: Tensor) -> list[Tensor]:
        """x_hat of each nested prefix (normalised space) from dense codes [batch, d_sae]."""
        out, partial = [], self.b_dec.expand(codes.shape[0], -1)
        for start, end in self.group_bounds:
            partial = partial + codes[:, start:end].to(self.W_dec.dtype) @ self.W_dec[start:end]
            out.append(partial)
        return out

    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        batch = x_n.shape[0]
        x_c = x_n - self.b_dec
        pre = torch.addmm(self.b_enc, x_c, self.W_enc)
        struct = self._select(pre.detach())
        sparse = ctx.use_sparse(struct.nnz, pre.numel())
        kept = self._kept(x_c, pre, struct, sparse)
        if sparse:
            flat = struct.rows * self.d_sae + struct.cols
            x_hat = self.b_dec.expand(batch, -1)
            prefixes = []
            for start, end in self.group_bounds:
                mask = (struct.cols >= start) & (struct.cols < end)
                if bool(mask.any()):
                    sub = SparseStructure.from_flat(flat[mask], batch, self.d_sae)
                    x_hat = x_hat + sparse_decode(kept[mask], sub, self.W_dec, None)
                prefixes.append(x_hat)
            fired = struct.fired(kept)
            l0 = (kept.detach() != 0).sum().float() / batch
        else:
            prefixes = self.prefix_reconstructions(kept)
            x_hat = prefixes[-1]
            nonzero = kept.detach() != 0
            fired, l0 = nonzero.any(0), nonzero.sum().float() / batch
        prefix_mse = [mse_sum(x_n, p) for p in prefixes]
        recon = sum(w * m for w, m in zip(self.group_weights, prefix_mse))
        aux = self._aux_loss(x_n - x_hat.detach(), x_c, pre, ctx)
        loss = recon + self.aux_coef * aux if aux.requires_grad else recon
        return LossOutput(
            loss=loss,
            mse=prefix_mse[-1].detach(),
            sparsity=torch.zeros(()),
            aux=aux.detach(),
            l0=l0,
            x_hat=x_hat.detach(),
            fired=fired,
            used_sparse=sparse,
            extra={"kept": kept.detach(), "prefix_mse": [float(m.detach()) for m in prefix_mse]},
        )

    def sparsity_info(self) -> dict[str, Any]:
        info = super().sparsity_info()
        info["group_fractions"] = list(self.group_fractions)
        info["group_sizes"] = list(self.group_sizes)
        info["group_weights"] = list(self.group_weights)
        return info


@dataclass(frozen=True)
class MatryoshkaOptions(BatchTopKOptions):
    group_fractions: tuple[float, ...] = DEFAULT_GROUP_FRACTIONS
    group_weights: tuple[float, ...] | None = None


SPEC = register(
    ArchSpec(
        name="matryoshka_batchtopk",
        sae_class=MatryoshkaBatchTopKSAE,
        label="Matryoshka",
        colour="#937860",
        sparsity="k",
        saelens_arch="jumprelu",  # as SAELens saves it
        options=MatryoshkaOptions,
        order=60,
        tensors=("b_enc", "threshold"),
        # aux_k, aux_coef and BatchTopK's threshold knobs apply to it too.
        legacy_training_keys=BATCHTOPK_TRAINING_KEYS,
        saelens_state=threshold_state,
        unfold_saelens=unfold_threshold,
    )
)

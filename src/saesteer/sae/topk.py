"""TopK SAE with the AuxK dead-latent loss (Gao et al. 2024, arXiv 2406.04093).

    z     = W_enc (x - b_dec) + b_enc
    f     = TopK_k(ReLU(z))              (keep each token's k largest, zero the rest)
    x_hat = W_dec^T f + b_dec
    L     = ||x - x_hat||^2 + alpha * L_aux

AuxK (section A.2): with e = x - x_hat (no gradient), let the top k_aux *dead* latents
(not fired for ``dead_window_tokens``) reconstruct it, e_hat = W_dec^T TopK_kaux(z_dead);
L_aux = ||e - e_hat||^2 normalised by ||e - mean(e)||^2 (as in OpenAI's released code),
alpha = 1/32, k_aux = d_in / 2 (appendix B.1). Decoder rows are unit norm; b_dec starts
at the geometric median of the first batch (section A.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from saesteer.sae.base import BaseSAE, LossOutput, SparsityKind, StepContext, mse_sum
from saesteer.sae.registry import ArchSpec, register
from saesteer.sae.sparse import SparseStructure, gathered_affine, sparse_decode
from saesteer.schemas import schema_defaults


class TopKSAE(BaseSAE):
    arch: ClassVar[str] = "topk"
    sparsity_kind: ClassVar[SparsityKind] = "k"
    unit_norm_decoder: ClassVar[bool] = True
    center_input: ClassVar[bool] = True

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        act_scale: float = 1.0,
        aux_k: int | None = None,
        aux_coef: float = 1.0 / 32.0,
    ):
        super().__init__(d_in, d_sae, act_scale)
        if not 0 < k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
        self.k = int(k)
        self.aux_k = int(aux_k) if aux_k is not None else max(1, d_in // 2)
        self.aux_coef = float(aux_coef)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))

    def pre_acts(self, x_n: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_n - self.b_dec, self.W_enc)

    def encode_normalized(self, x_n: Tensor) -> Tensor:
        pre = self.pre_acts(x_n)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    # ---- training ------------------------------------------------------------------------

    def _select(self, pre_d: Tensor) -> SparseStructure:
        """The kept entries: each token's top k."""
        _, indices = pre_d.topk(self.k, dim=-1, sorted=False)
        return SparseStructure.from_topk(indices, self.d_sae)

    def _kept(self, x_c: Tensor, pre: Tensor, struct: SparseStructure, sparse: bool) -> Tensor:
        """ReLU of the kept pre-activations: values on ``struct`` (sparse) or a dense matrix."""
        if sparse:
            picked = pre.detach()[struct.rows, struct.cols]
            return gathered_affine(x_c, self.W_enc, self.b_enc, picked, struct).relu()
        return struct.to_dense(pre[struct.rows, struct.cols].relu())

    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        batch = x_n.shape[0]
        x_c = x_n - self.b_dec
        pre = torch.addmm(self.b_enc, x_c, self.W_enc)  # its graph is used on the dense path only
        struct = self._select(pre.detach())
        sparse = ctx.use_sparse(struct.nnz, pre.numel())
        kept = self._kept(x_c, pre, struct, sparse)
        if sparse:
            x_hat = sparse_decode(kept, struct, self.W_dec, self.b_dec)
            fired = struct.fired(kept)
            l0 = (kept.detach() != 0).sum().float() / batch
        else:
            x_hat = torch.addmm(self.b_dec, kept, self.W_dec)
            nonzero = kept.detach() != 0
            fired, l0 = nonzero.any(0), nonzero.sum().float() / batch
        mse = mse_sum(x_n, x_hat)
        aux = self._aux_loss(x_n - x_hat.detach(), x_c, pre, ctx)
        loss = mse + self.aux_coef * aux if aux.requires_grad else mse
        return LossOutput(
            loss=loss,
            mse=mse.detach(),
            sparsity=torch.zeros(()),
            aux=aux.detach(),
            l0=l0,
            x_hat=x_hat.detach(),
            fired=fired,
            used_sparse=sparse,
            extra={"kept": kept.detach()},
        )

    def _aux_loss(self, residual: Tensor, x_c: Tensor, pre: Tensor, ctx: StepContext) -> Tensor:
        if ctx.dead_mask is None or self.aux_coef == 0:
            return torch.zeros(())
        dead = ctx.dead_mask.nonzero().squeeze(1)
        if dead.numel() == 0:
            return torch.zeros(())
        k_aux = min(self.aux_k, int(dead.numel()))
        _, local = pre.detach().index_select(1, dead).topk(k_aux, dim=-1, sorted=False)
        struct = SparseStructure.from_topk(dead[local], self.d_sae)
        sparse = ctx.use_sparse(struct.nnz, pre.numel())
        kept = self._kept(x_c, pre, struct, sparse)
        e_hat = sparse_decode(kept, struct, self.W_dec, None) if sparse else kept @ self.W_dec
        denom = (residual - residual.mean(0)).pow(2).sum(-1).mean()
        return ((residual - e_hat).pow(2).sum(-1).mean() / denom).nan_to_num(0.0)

    def sparsity_info(self) -> dict[str, Any]:
        return {"k": self.k, "aux_k": self.aux_k, "aux_coef": self.aux_coef}


@dataclass(frozen=True)
class TopKOptions:
    aux_k: int | None = schema_defaults("training")["aux_k"]
    aux_coef: float = schema_defaults("training")["aux_coef"]


AUXK_TRAINING_KEYS = {"aux_k": "aux_k", "aux_coef": "aux_coef"}


def _topk_cfg(sae: BaseSAE) -> dict[str, Any]:
    return {"k": int(sae.k), "rescale_acts_by_decoder_norm": False}  # type: ignore[attr-defined]


def _unfold_topk(sae: BaseSAE, state: dict[str, Tensor], cfg: dict[str, Any], where: str) -> None:
    if cfg.get("rescale_acts_by_decoder_norm", False):
        # SAELens scales codes by ||W_dec,i||: fold the norms into the encoder.
        norms = state["W_dec"].norm(dim=1).clamp_min(1e-12)
        state["W_dec"] = state["W_dec"] / norms[:, None]
        state["W_enc"] = state["W_enc"] * norms[None, :]
        state["b_enc"] = state["b_enc"] * norms


SPEC = register(
    ArchSpec(
        name="topk",
        sae_class=TopKSAE,
        label="TopK",
        colour="#DD8452",
        sparsity="k",
        saelens_arch="topk",
        saelens_native=True,
        options=TopKOptions,
        order=20,
        legacy_training_keys=AUXK_TRAINING_KEYS,
        saelens_cfg=_topk_cfg,
        unfold_saelens=_unfold_topk,
    )
)

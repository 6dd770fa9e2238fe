"""Standard ReLU SAE, Anthropic "Circuits Updates - April 2024" training recipe.

    f     = ReLU(W_enc x + b_enc)                       (no b_dec subtraction)
    x_hat = W_dec^T f + b_dec
    L     = ||x - x_hat||^2 + lambda * sum_i f_i ||W_dec,i||_2

The decoder is *not* constrained: putting its row norms into the penalty makes the
loss invariant to trading code scale for decoder scale, so no renormalisation is
needed. Init per the update: decoder rows random directions of norm 0.1, W_enc = W_dec^T,
zero biases.
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


class ReLUSAE(BaseSAE):
    arch: ClassVar[str] = "relu"
    sparsity_kind: ClassVar[SparsityKind] = "penalty"
    unit_norm_decoder: ClassVar[bool] = False
    center_input: ClassVar[bool] = False

    def __init__(self, d_in: int, d_sae: int, act_scale: float = 1.0, decoder_init_norm: float = 0.1):
        super().__init__(d_in, d_sae, act_scale)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self._decoder_init_norm = decoder_init_norm

    def decoder_init_norm(self) -> float:
        return self._decoder_init_norm

    def pre_acts(self, x_n: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_n, self.W_enc)

    def encode_normalized(self, x_n: Tensor) -> Tensor:
        return torch.relu(self.pre_acts(x_n))

    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        batch = x_n.shape[0]
        pre = self.pre_acts(x_n)  # autograd graph used only on the dense path
        pre_d = pre.detach()
        mask = pre_d > 0
        nnz = int(mask.sum())
        if ctx.use_sparse(nnz, mask.numel()):
            struct = SparseStructure.from_mask(mask)
            values = gathered_affine(x_n, self.W_enc, self.b_enc, pre_d[mask], struct)
            x_hat = sparse_decode(values, struct, self.W_dec, self.b_dec)
            norms = self.W_dec.norm(dim=1)
            sparsity = (values * norms.index_select(0, struct.cols)).sum() / batch
            fired = struct.fired(values)
            used_sparse = True
        else:
            codes = torch.relu(pre)
            x_hat = torch.addmm(self.b_dec, codes, self.W_dec)
            sparsity = (codes @ self.W_dec.norm(dim=1)).sum() / batch
            fired = mask.any(dim=0)
            used_sparse = False
        mse = mse_sum(x_n, x_hat)
        loss = mse + ctx.sparsity_coef * sparsity
        return LossOutput(
            loss=loss,
            mse=mse.detach(),
            sparsity=sparsity.detach(),
            aux=torch.zeros(()),
            l0=torch.tensor(nnz / batch),
            x_hat=x_hat.detach(),
            fired=fired,
            used_sparse=used_sparse,
        )

    def sparsity_info(self) -> dict[str, Any]:
        return {"penalty": "lambda * sum_i f_i ||W_dec,i||"}


@dataclass(frozen=True)
class ReLUOptions:
    decoder_init_norm: float = schema_defaults("training")["relu_decoder_init_norm"]


SPEC = register(
    ArchSpec(
        name="relu",
        sae_class=ReLUSAE,
        label="ReLU",
        colour="#4C72B0",
        sparsity="penalty",
        saelens_arch="standard",
        saelens_native=True,
        options=ReLUOptions,
        order=10,
        # Low on purpose: with calibration on, the controller raises it toward the target L0
        # (SAEBench's linear sparsity warm-up plays that role there; training/controller.py).
        coef_init={"relu": 0.03},
        legacy_training_keys={"relu_decoder_init_norm": "decoder_init_norm"},
    )
)

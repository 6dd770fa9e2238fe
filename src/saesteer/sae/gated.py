"""Gated SAE (Rajamanoharan et al. 2024a, arXiv 2404.16014).

    pi_gate = W_gate (x - b_dec) + b_gate
    mag     = ReLU(exp(r_mag) * W_gate (x - b_dec) + b_mag)      (weights shared, rescaled)
    f       = 1[pi_gate > 0] * mag
    L       = ||x - x_hat(f)||^2 + lambda * ||ReLU(pi_gate)||_1
              + ||x - x_hat_frozen(ReLU(pi_gate))||^2             (eq. 9)

x_hat_frozen uses a detached copy of the decoder (W_dec, b_dec): the auxiliary term
trains the gate to reconstruct on its own without letting it move the decoder. The
Heaviside gate passes no gradient; the gate path learns only from the L1 and auxiliary
terms. Decoder rows are unit norm (so the L1 on the gate cannot be dodged by shrinking
codes). W_gate is stored as ``W_enc`` and the biases as ``b_gate``/``b_mag``/``r_mag``,
SAELens's names for this architecture.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from saesteer.sae.base import BaseSAE, LossOutput, SparsityKind, StepContext, mse_sum
from saesteer.sae.registry import ArchSpec, register
from saesteer.sae.sparse import SparseStructure, gathered_affine, sparse_decode


class GatedSAE(BaseSAE):
    arch: ClassVar[str] = "gated"
    sparsity_kind: ClassVar[SparsityKind] = "penalty"
    unit_norm_decoder: ClassVar[bool] = True
    center_input: ClassVar[bool] = True

    def __init__(self, d_in: int, d_sae: int, act_scale: float = 1.0):
        super().__init__(d_in, d_sae, act_scale)
        self.b_gate = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_mag = torch.nn.Parameter(torch.zeros(d_sae))
        self.r_mag = torch.nn.Parameter(torch.zeros(d_sae))

    def encode_normalized(self, x_n: Tensor) -> Tensor:
        z = (x_n - self.b_dec) @ self.W_enc
        gate = (z + self.b_gate) > 0
        mag = torch.relu(z * self.r_mag.exp() + self.b_mag)
        return mag * gate

    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        batch = x_n.shape[0]
        x_c = x_n - self.b_dec
        z = x_c @ self.W_enc
        z_d = z.detach()
        # Elementwise ops give bit-identical results on gathered entries, so the mask
        # computed here agrees with the values computed on either path below.
        mask = (z_d + self.b_gate.detach()) > 0
        nnz = int(mask.sum())
        if ctx.use_sparse(nnz, mask.numel()):
            struct = SparseStructure.from_mask(mask)
            cols = struct.cols
            z_s = gathered_affine(x_c, self.W_enc, None, z_d[mask], struct)
            pi = z_s + self.b_gate.index_select(0, cols)
            mag = torch.relu(z_s * self.r_mag.exp().index_select(0, cols) + self.b_mag.index_select(0, cols))
            x_hat = sparse_decode(mag, struct, self.W_dec, self.b_dec)
            sparsity = pi.sum() / batch  # = ||ReLU(pi)||_1, pi > 0 on the kept set
            x_frozen = sparse_decode(pi, struct, self.W_dec.detach(), self.b_dec.detach())
            fired = struct.fired(mag)
            l0 = (mag.detach() > 0).sum().float() / batch
            used_sparse = True
        else:
            pi = z + self.b_gate
            gate_relu = torch.relu(pi)
            codes = torch.relu(z * self.r_mag.exp() + self.b_mag) * mask
            x_hat = torch.addmm(self.b_dec, codes, self.W_dec)
            sparsity = gate_relu.sum() / batch
            x_frozen = torch.addmm(self.b_dec.detach(), gate_relu, self.W_dec.detach())
            nonzero = codes.detach() > 0
            fired = nonzero.any(0)
            l0 = nonzero.sum().float() / batch
            used_sparse = False
        mse = mse_sum(x_n, x_hat)
        aux = mse_sum(x_n, x_frozen)
        loss = mse + ctx.sparsity_coef * sparsity + aux
        return LossOutput(
            loss=loss,
            mse=mse.detach(),
            sparsity=sparsity.detach(),
            aux=aux.detach(),
            l0=l0,
            x_hat=x_hat.detach(),
            fired=fired,
            used_sparse=used_sparse,
        )

    def sparsity_info(self) -> dict[str, Any]:
        return {"penalty": "lambda * ||ReLU(pi_gate)||_1"}


def _shift_gated(state: dict[str, Tensor], shift: Tensor) -> None:
    # pi_gate and the magnitude path share W_gate; the magnitude's is rescaled by exp(r_mag).
    state["b_gate"] = state["b_gate"] + shift
    state["b_mag"] = state["b_mag"] + shift * state["r_mag"].exp()


SPEC = register(
    ArchSpec(
        name="gated",
        sae_class=GatedSAE,
        label="Gated",
        colour="#C44E52",
        sparsity="penalty",
        saelens_arch="gated",
        saelens_native=True,
        order=40,
        coef_init={"gated": 0.03},  # as ReLU's
        tensors=("b_gate", "b_mag", "r_mag"),
        shift_encoder_bias=_shift_gated,
    )
)

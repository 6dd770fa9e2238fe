"""JumpReLU SAE (Rajamanoharan et al. 2024b, arXiv 2407.14435).

    z     = W_enc x + b_enc
    f     = z * H(z - theta)                 (per-latent threshold theta > 0)
    L     = ||x - x_hat||^2 + S(L0),  L0 = sum_i H(z_i - theta_i)

H has zero gradient almost everywhere, so theta is trained with straight-through
pseudo-derivatives using a rectangle kernel K(u) = 1[|u| < 1/2] of bandwidth eps
(eqs. 11-12): d f / d theta = -(theta / eps) K((z - theta) / eps) and
d H(z - theta) / d theta = -(1 / eps) K((z - theta) / eps); z gets the plain gradient
H(z - theta) through f and none through the L0 step. eps = 0.001, theta initialised to
0.001 (section 4).

Sparsity term S, selectable:
- ``target_l0`` (default; SAEBench / dictionary_learning): c * (L0 / target_L0 - 1)^2,
- ``l0`` (the paper): c * L0.
Decoder rows are kept at unit norm, as in dictionary_learning's trainer. theta is kept
>= 0 so that SAELens's inference, ReLU(z) * 1[z > theta], matches f exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from saesteer.sae.base import BaseSAE, LossOutput, SparsityKind, StepContext, mse_sum
from saesteer.sae.registry import ArchSpec, register
from saesteer.sae.sparse import SparseStructure, gathered_affine, sparse_decode, sum_to_shape
from saesteer.schemas import schema_defaults

JumpReLULoss = Literal["target_l0", "l0"]


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = (z > theta).to(grad.dtype) * grad
        grad_theta = -(theta / eps) * _rectangle((z - theta) / eps) * grad
        return grad_z, sum_to_shape(grad_theta, theta.shape), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((z - theta) / eps) * grad
        return None, sum_to_shape(grad_theta, theta.shape), None


class JumpReLUSAE(BaseSAE):
    arch: ClassVar[str] = "jumprelu"
    sparsity_kind: ClassVar[SparsityKind] = "penalty"
    unit_norm_decoder: ClassVar[bool] = True
    center_input: ClassVar[bool] = False

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        target_l0: float,
        act_scale: float = 1.0,
        bandwidth: float = 0.001,
        init_threshold: float = 0.001,
        sparsity_loss: JumpReLULoss = "target_l0",
    ):
        super().__init__(d_in, d_sae, act_scale)
        if sparsity_loss not in ("target_l0", "l0"):
            raise ValueError(f"jumprelu sparsity_loss must be 'target_l0' or 'l0', got {sparsity_loss!r}")
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.threshold = torch.nn.Parameter(torch.full((d_sae,), float(init_threshold)))
        self.target_l0 = float(target_l0)
        self.bandwidth = float(bandwidth)
        self.init_threshold = float(init_threshold)
        self.sparsity_loss = sparsity_loss

    def _reset_extra(self, name: str, param: torch.nn.Parameter) -> None:
        if name == "threshold":
            param.fill_(self.init_threshold)
        else:
            param.zero_()

    def pre_acts(self, x_n: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_n, self.W_enc)

    def encode_normalized(self, x_n: Tensor) -> Tensor:
        pre = self.pre_acts(x_n)
        return pre * (pre > self.threshold)

    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        batch = x_n.shape[0]
        pre = self.pre_acts(x_n)
        pre_d = pre.detach()
        theta_d = self.threshold.detach()
        # Every entry with a nonzero gradient: active (z > theta) or inside the
        # estimator's band (|z - theta| < eps / 2). Others contribute exactly zero.
        mask = pre_d > theta_d - self.bandwidth / 2
        nnz = int(mask.sum())
        if ctx.use_sparse(nnz, mask.numel()):
            struct = SparseStructure.from_mask(mask)
            z = gathered_affine(x_n, self.W_enc, self.b_enc, pre_d[mask], struct)
            theta = self.threshold.index_select(0, struct.cols)
            codes = _JumpReLU.apply(z, theta, self.bandwidth)
            l0 = _Step.apply(z, theta, self.bandwidth).sum() / batch
            x_hat = sparse_decode(codes, struct, self.W_dec, self.b_dec)
            fired = struct.fired(codes)
            used_sparse = True
        else:
            codes = _JumpReLU.apply(pre, self.threshold, self.bandwidth)
            l0 = _Step.apply(pre, self.threshold, self.bandwidth).sum() / batch
            x_hat = torch.addmm(self.b_dec, codes, self.W_dec)
            fired = (codes.detach() != 0).any(0)
            used_sparse = False
        mse = mse_sum(x_n, x_hat)
        if self.sparsity_loss == "target_l0":
            sparsity = (l0 / self.target_l0 - 1.0).pow(2)
        else:
            sparsity = l0
        loss = mse + ctx.sparsity_coef * sparsity
        return LossOutput(
            loss=loss,
            mse=mse.detach(),
            sparsity=sparsity.detach(),
            aux=torch.zeros(()),
            l0=l0.detach(),
            x_hat=x_hat.detach(),
            fired=fired,
            used_sparse=used_sparse,
        )

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_(min=0.0)

    def sparsity_info(self) -> dict[str, Any]:
        return {
            "sparsity_loss": self.sparsity_loss,
            "target_l0": self.target_l0,
            "bandwidth": self.bandwidth,
        }


_D = schema_defaults("training")


@dataclass(frozen=True)
class JumpReLUOptions:
    bandwidth: float = _D["jumprelu_bandwidth"]
    init_threshold: float = _D["jumprelu_init_threshold"]
    sparsity_loss: JumpReLULoss = _D["jumprelu_sparsity_loss"]


SPEC = register(
    ArchSpec(
        name="jumprelu",
        sae_class=JumpReLUSAE,
        label="JumpReLU",
        colour="#8172B3",
        sparsity="target",
        saelens_arch="jumprelu",
        saelens_native=True,
        options=JumpReLUOptions,
        order=50,
        tensors=("b_enc", "threshold"),
        legacy_training_keys={
            "jumprelu_bandwidth": "bandwidth",
            "jumprelu_init_threshold": "init_threshold",
            "jumprelu_sparsity_loss": "sparsity_loss",
        },
        # Rajamanoharan et al. 2024b, appendix: beta_1 = 0.
        adam_betas=(0.0, 0.999),
        # The two losses differ in scale: separate coefficient tables. target_l0 already
        # pulls L0 to the target, so only the plain l0 penalty is calibrated (controller.py).
        coef_key=lambda o: "jumprelu_l0" if o.sparsity_loss == "l0" else "jumprelu",
        # 1.0: dictionary_learning's sparsity_penalty for the target_l0 loss; the plain l0
        # penalty starts low and is calibrated.
        coef_init={"jumprelu": 1.0, "jumprelu_l0": 0.001},
        calibrates=lambda o: o.sparsity_loss == "l0",
    )
)

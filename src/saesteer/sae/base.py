"""The interface every SAE architecture implements.

Conventions (shared with SAELens, so exported weights need no reshaping):

- ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in] (rows are the feature directions),
  ``b_dec`` [d_in]; most architectures add ``b_enc`` [d_sae] (Gated has ``b_gate``,
  ``b_mag`` and ``r_mag`` instead).
- Training happens on *normalised* activations x_n = x / act_scale, where act_scale =
  sqrt(E||x||^2) over the cache (unit mean squared norm, Anthropic April 2024 update;
  SAEBench recipe). The buffer ``act_scale`` travels with the module, so the raw-scale
  API (:meth:`encode`, :meth:`decode`, :meth:`forward`) takes and returns activations in
  the model's own scale, while codes are in the normalised space the SAE was trained in.
- ``loss`` works in the normalised space and returns a :class:`LossOutput`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

SparsityKind = Literal["k", "penalty"]


@dataclass
class StepContext:
    """Step-dependent inputs of a training loss."""

    sparsity_coef: float = 0.0
    """Penalty architectures: the coefficient in front of the sparsity term this step
    (after warm-up / calibration). Ignored by k-based architectures."""
    dead_mask: Tensor | None = None
    """[d_sae] bool, latents currently counted dead (AuxK of TopK/BatchTopK)."""
    sparse: bool | None = None
    """True/False forces the sparse/dense kernels; None picks by code density."""
    max_sparse_density: float = 0.1
    """With ``sparse=None``: use the sparse kernels when nnz / (batch * d_sae) is below this."""

    def use_sparse(self, nnz: int, numel: int) -> bool:
        if self.sparse is not None:
            return self.sparse
        return nnz <= self.max_sparse_density * numel


@dataclass
class LossOutput:
    """One training forward pass. Scalars other than ``loss`` are detached."""

    loss: Tensor
    mse: Tensor
    sparsity: Tensor
    aux: Tensor
    l0: Tensor
    x_hat: Tensor
    fired: Tensor
    """[d_sae] bool: latents that were nonzero somewhere in the batch."""
    used_sparse: bool
    extra: dict[str, Any] | None = None

    def scalars(self) -> dict[str, float]:
        return {
            "loss": float(self.loss.detach()),
            "mse": float(self.mse),
            "sparsity_loss": float(self.sparsity),
            "aux_loss": float(self.aux),
            "l0": float(self.l0),
        }


@dataclass
class SAEOutput:
    x_hat: Tensor
    codes: Tensor


def mse_sum(x: Tensor, x_hat: Tensor) -> Tensor:
    """Squared error summed over the model dimension, averaged over tokens.

    The reconstruction term of all the cited papers; with unit mean squared norm inputs
    it is the fraction of the (uncentred) second moment left unexplained.
    """
    return (x_hat.float() - x.float()).pow(2).sum(-1).mean()


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-5) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distances."""
    guess = points.mean(dim=0)
    for _ in range(max_iter):
        dist = (points - guess).norm(dim=1).clamp_min(1e-8)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        if (new - guess).norm() < tol * max(1.0, float(guess.norm())):
            return new
        guess = new
    return guess


class BaseSAE(nn.Module, ABC):
    arch: ClassVar[str]
    sparsity_kind: ClassVar[SparsityKind]
    unit_norm_decoder: ClassVar[bool]
    """Decoder rows kept at unit norm (renormalised after each step, their gradient's
    radial component removed before it)."""
    center_input: ClassVar[bool]
    """Encoder sees x - b_dec (SAELens: ``apply_b_dec_to_input``)."""

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    act_scale: Tensor

    def __init__(self, d_in: int, d_sae: int, act_scale: float = 1.0):
        super().__init__()
        if d_in <= 0 or d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {d_in}, {d_sae}")
        if not math.isfinite(act_scale) or act_scale <= 0:
            raise ValueError(f"act_scale must be a positive number, got {act_scale}")
        self.d_in = d_in
        self.d_sae = d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("act_scale", torch.tensor(float(act_scale), dtype=torch.float32))

    # ---- initialisation -------------------------------------------------------------

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Tied init: random unit-norm decoder rows, encoder = decoder^T, zero biases.

        Used by Gao et al. 2024 (TopK), Bussmann et al. 2024, Rajamanoharan et al. 2024a/b;
        architectures override the decoder norm where their paper says otherwise.
        """
        with torch.no_grad():
            w = torch.randn(self.d_sae, self.d_in, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            w *= self.decoder_init_norm()
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.t())
            self.b_dec.zero_()
            for name, param in self.named_parameters():
                if name not in ("W_enc", "W_dec", "b_dec"):
                    self._reset_extra(name, param)

    def decoder_init_norm(self) -> float:
        return 1.0

    def _reset_extra(self, name: str, param: nn.Parameter) -> None:
        param.zero_()

    def init_from_batch(self, x_n: Tensor) -> None:
        """Data-dependent initialisation from the first training batch.

        b_dec starts at the batch's geometric median (Bricken et al. 2023, "Towards
        Monosemanticity"; Gao et al. 2024, A.1), so the latents need not spend themselves on
        the mean of the residual stream, which is large in some models (Gemma-3's is most of
        its second moment). Architectures whose encoder does not subtract b_dec get b_enc
        shifted by -b_dec W_enc, so their pre-activations start centred all the same.
        """
        with torch.no_grad():
            median = geometric_median(x_n.float()).to(self.b_dec.dtype)
            self.b_dec.copy_(median)
            b_enc = getattr(self, "b_enc", None)
            if not self.center_input and isinstance(b_enc, nn.Parameter):
                b_enc.sub_(median @ self.W_enc)

    # ---- raw-scale API --------------------------------------------------------------

    def normalize(self, x: Tensor) -> Tensor:
        return x.to(self.W_enc.dtype) / self.act_scale

    def encode(self, x: Tensor) -> Tensor:
        """Codes [..., d_sae] of raw activations [..., d_in] (inference behaviour)."""
        shape = x.shape
        codes = self.encode_normalized(self.normalize(x).reshape(-1, self.d_in))
        return codes.reshape(*shape[:-1], self.d_sae)

    def decode(self, codes: Tensor) -> Tensor:
        """Raw-scale reconstruction of codes [..., d_sae]."""
        shape = codes.shape
        x_hat = self.decode_normalized(codes.reshape(-1, self.d_sae)) * self.act_scale
        return x_hat.reshape(*shape[:-1], self.d_in)

    def forward(self, x: Tensor) -> SAEOutput:  # type: ignore[override]
        codes = self.encode(x)
        return SAEOutput(x_hat=self.decode(codes), codes=codes)

    # ---- normalised-space API ------------------------------------------------------------

    @abstractmethod
    def encode_normalized(self, x_n: Tensor) -> Tensor:
        """Dense codes [batch, d_sae] of normalised activations (inference behaviour)."""

    def decode_normalized(self, codes: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, codes.to(self.W_dec.dtype), self.W_dec)

    @abstractmethod
    def loss(self, x_n: Tensor, ctx: StepContext) -> LossOutput:
        """Training loss on a normalised batch [batch, d_in]."""

    # ---- optimisation hooks -----------------------------------------------------------

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the component of each decoder row's gradient along that row.

        With unit-norm rows the radial component only changes the norm, which the
        renormalisation after the step undoes; removing it keeps Adam's moment estimates
        about the directions (Bricken et al. 2023; dictionary_learning, SAELens)."""
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        w = self.W_dec
        unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radial = (self.W_dec.grad * unit).sum(dim=1, keepdim=True)
        self.W_dec.grad.sub_(radial * unit)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        # A frozen decoder (random-decoder control, saesteer.sae.random_decoder) is left as is.
        if self.unit_norm_decoder and self.W_dec.requires_grad:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def update_running_stats(self, out: LossOutput, step: int, total_steps: int) -> None:
        """Statistics updated from each training batch (BatchTopK's threshold)."""

    # ---- description ------------------------------------------------------------------

    def sparsity_info(self) -> dict[str, Any]:
        """What the sparsity knob is set to, for summaries and exported configs."""
        return {}

    def decoder_directions(self) -> Tensor:
        """Unit-norm feature directions [d_sae, d_in] in the raw activation space."""
        w = self.W_dec.detach()
        return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)

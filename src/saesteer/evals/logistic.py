"""L2-regularised logistic regression in torch (full-batch L-BFGS): the probes of every eval.

scikit-learn is not a dependency of the project, so the probes are fitted here. The
objective is scikit-learn's ``LogisticRegression(C=C)`` on standardised features, divided by
the number of samples:

    mean_i  c_i * BCE(x_i . w + b, y_i)  +  ||w||^2 / (2 C n)

with c_i = 1, or class-balanced weights. Features are z-scored with the training mean and
standard deviation, so C means the same for residual-stream dimensions and SAE latents of
any scale (SAEBench fits unstandardised features with C = 1; with the small k of sparse
probing and thousands of samples the difference is negligible, and standardising makes
L-BFGS converge in a few dozen iterations). Several independent problems of equal shape are
fitted at once: their losses add up, so one L-BFGS run solves them jointly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LogisticProbe:
    """Fitted probes in the *raw* feature space: logits = x @ weight.T + bias."""

    weight: Tensor  # [P, d]
    bias: Tensor  # [P]

    def logits(self, x: Tensor) -> Tensor:
        """x [n, d] -> [n, P] (or x [P, n, d] -> [P, n])."""
        if x.dim() == 3:
            return torch.einsum("pnd,pd->pn", x.float(), self.weight) + self.bias[:, None]
        return x.float() @ self.weight.T + self.bias


def fit_logistic(
    x: Tensor,
    y: Tensor,
    C: float = 1.0,
    balanced: bool = False,
    max_iter: int = 200,
) -> LogisticProbe:
    """Fit P binary probes. x: [n, d] (shared features) or [P, n, d]; y: [P, n] or [n] in {0, 1}."""
    # Callers may hold inference-mode tensors (SAE codes): leave inference mode and copy them
    # so autograd can use them.
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(x.float().clone(), y.float().clone(), C, balanced, max_iter)


def _fit(x: Tensor, y: Tensor, C: float, balanced: bool, max_iter: int) -> LogisticProbe:
    if y.dim() == 1:
        y = y[None]
    shared = x.dim() == 2
    n = x.shape[-2]
    if y.shape[-1] != n:
        raise ValueError(f"{n} samples but {y.shape[-1]} labels")
    mu = x.mean(dim=-2, keepdim=True)
    sd = x.std(dim=-2, keepdim=True, unbiased=False).clamp_min(1e-6)
    z = (x - mu) / sd
    n_probes, d = y.shape[0], x.shape[-1]
    if balanced:
        pos = y.sum(-1, keepdim=True).clamp_min(1.0)
        neg = (n - y.sum(-1, keepdim=True)).clamp_min(1.0)
        weights = torch.where(y > 0, n / (2 * pos), n / (2 * neg))
    else:
        weights = torch.ones_like(y)
    w = torch.zeros(n_probes, d, device=x.device, requires_grad=True)
    b = torch.zeros(n_probes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    l2 = 1.0 / (2.0 * C * n)

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = (z @ w.T).T if shared else torch.einsum("pnd,pd->pn", z, w)
        logits = logits + b[:, None]
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean(-1)
        total = loss.sum() + l2 * (w * w).sum()
        total.backward()
        return total

    optimizer.step(closure)
    w_std, b_std = w.detach(), b.detach()
    # Back to raw features: (x - mu)/sd . w + b = x . (w/sd) + (b - mu/sd . w).
    mu_p = mu.squeeze(-2) if not shared else mu.squeeze(0).expand(n_probes, d)
    sd_p = sd.squeeze(-2) if not shared else sd.squeeze(0).expand(n_probes, d)
    weight = w_std / sd_p
    bias = b_std - (mu_p / sd_p * w_std).sum(-1)
    return LogisticProbe(weight=weight, bias=bias)


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-probe accuracy of logits [P, n] (or [n]) against y in {0, 1}."""
    return ((logits > 0).float() == y.float()).float().mean(-1)


def f1_score(logits: Tensor, y: Tensor) -> Tensor:
    """Per-probe F1 of the positive class; 0 where nothing is predicted or present."""
    pred = logits > 0
    truth = y > 0
    tp = (pred & truth).sum(-1).float()
    fp = (pred & ~truth).sum(-1).float()
    fn = (~pred & truth).sum(-1).float()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))

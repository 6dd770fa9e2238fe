"""Steering vectors next to SAE latents: DiffMean, Mayne et al.'s diagnostics, signed decomposition.

Pure tensor functions (the job is ``vectors_job.py``); docs/steering-vectors.md gives the method.

- **DiffMean** (after AxBench, Wu et al. 2025, arXiv 2501.17148, which averages over
  concept-labelled texts; offline, the concept is the SAE latent f that steer_eval steered):
  ``v_c = mean(x at positive positions) - mean(x at negative positions)``. Positive positions:
  the ``n_positive`` held-out token positions where latent f is largest, among those where
  it reaches at least ``min_activation_frac`` of its largest held-out activation (its top
  contexts, strongly active). Negative positions: ``n_negative`` uniformly random held-out
  positions (seeded). BOS/EOS/padding positions are excluded from both (autointerp's mask).
- **Diagnostics** (Mayne et al. 2024, arXiv 2411.08790): ``||v||`` as a percentile of the
  activation norms at the hook; the overlap of the top-k latents of ``encode(v)`` with those
  of ``encode(0)`` (near 1: the encoder's biases, not v, decide the code); the same for the
  in-distribution difference ``encode(mean + v) - encode(mean)``; ``cos(v, d_f)``.
- **Signed decomposition**: projections ``<v, d_i> / ||d_i||`` on every decoder row
  (negatives kept) and a signed sparse fit ``v ~ sum_i c_i u_i`` over the unit decoder rows
  ``u_i`` by orthogonal matching pursuit (Pati et al. 1993), k terms, c of either sign.
- **Naive reconstruction**: ``decode(encode(v)) - decode(0)`` (the decoder bias cancels),
  what reading v through the SAE's ReLU code gives; it cannot carry a negative coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saesteer.sae.base import BaseSAE


class VectorError(ValueError):
    """A steering vector cannot be built or a user-supplied vector file is invalid."""


# ---- DiffMean -------------------------------------------------------------------------------


def strong_positions(acts: Tensor, mask: Tensor, n_positive: int, min_activation_frac: float) -> Tensor:
    """Flat indices into ``acts`` [N, T] of the positions where the latent is strongly active:
    the ``n_positive`` largest activations among unmasked positions whose activation is positive
    and at least ``min_activation_frac`` times the largest (ties broken by position). Empty when
    the latent never fires on unmasked positions."""
    flat = torch.where(mask.reshape(-1), acts.reshape(-1).float(), torch.zeros(()))
    top = float(flat.max()) if flat.numel() else 0.0
    if top <= 0:
        return torch.zeros(0, dtype=torch.long)
    eligible = torch.nonzero((flat > 0) & (flat >= min_activation_frac * top)).flatten()
    values = flat[eligible]
    # Stable descending order: largest first, earlier position first on ties.
    order = torch.sort(values, descending=True, stable=True).indices
    return eligible[order[: max(0, n_positive)]].sort().values


class RunningTop:
    """The ``k`` largest positive values per column seen so far, streamed over row batches, with
    their flat positions; ties go to the earlier position. After every batch it holds what
    :func:`strong_positions` (with ``min_activation_frac = 0``) would pick from all rows so far,
    in (value descending, position ascending) order, without keeping the activations."""

    def __init__(self, n_columns: int, k: int):
        self.k = k
        self.values = [torch.zeros(0) for _ in range(n_columns)]
        self.positions = [torch.zeros(0, dtype=torch.long) for _ in range(n_columns)]

    def update(self, codes: Tensor, positions: Tensor) -> None:
        """``codes`` [n, n_columns] at flat ``positions`` [n] (ascending, after every earlier batch)."""
        codes = codes.detach().float().cpu()
        positions = positions.cpu()
        for j in range(codes.shape[1]):
            col = codes[:, j]
            hot = torch.nonzero(col > 0).flatten()
            if not len(hot):
                continue
            values = torch.cat([self.values[j], col[hot]])
            where = torch.cat([self.positions[j], positions[hot]])
            order = torch.sort(values, descending=True, stable=True).indices[: self.k]
            self.values[j], self.positions[j] = values[order], where[order]

    def strong(self, j: int, min_activation_frac: float) -> Tensor:
        """Column ``j``'s kept positions reaching ``min_activation_frac`` of its maximum, ascending."""
        values, where = self.values[j], self.positions[j]
        if not len(values):
            return torch.zeros(0, dtype=torch.long)
        return where[values >= min_activation_frac * float(values[0])].sort().values


def random_positions(mask: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Flat indices of ``n`` distinct uniformly random unmasked positions of ``mask`` [N, T]
    (all of them when there are fewer)."""
    candidates = torch.nonzero(mask.reshape(-1)).flatten()
    if len(candidates) <= n:
        return candidates
    return candidates[torch.randperm(len(candidates), generator=generator)[:n]].sort().values


def diffmean(positive_mean: Tensor, negative_mean: Tensor) -> Tensor:
    """The DiffMean steering vector."""
    return (positive_mean.double() - negative_mean.double()).float()


# ---- Mayne et al.'s diagnostics ---------------------------------------------------------------


def percentile_of(value: float, sorted_values: Tensor) -> float:
    """Percentage of ``sorted_values`` (ascending) strictly below ``value``."""
    if sorted_values.numel() == 0:
        return float("nan")
    below = int(torch.searchsorted(sorted_values.double().contiguous(), torch.tensor([float(value)], dtype=torch.float64))[0])
    return 100.0 * below / sorted_values.numel()


def top_latents(code: Tensor, k: int, by_abs: bool = False) -> list[int]:
    """The ``k`` latents of largest code (or |code|), nonzero ones only; lower index first on ties."""
    values = code.detach().float().abs() if by_abs else code.detach().float()
    nonzero = torch.nonzero(values > 0).flatten()
    if not len(nonzero):
        return []
    order = torch.sort(values[nonzero], descending=True, stable=True).indices
    return [int(i) for i in nonzero[order[:k]].tolist()]


def overlap(a: Sequence[int], b: Sequence[int]) -> float | None:
    """|a & b| / |a|: the share of a's latents that are also in b (None when a is empty)."""
    if not a:
        return None
    return len(set(a) & set(b)) / len(a)


def _cos(a: Tensor, b: Tensor) -> float | None:
    na, nb = float(a.double().norm()), float(b.double().norm())
    if na == 0 or nb == 0:
        return None
    return float(a.double() @ b.double()) / (na * nb)


def _rank_of(latent: int, values: Tensor) -> int:
    """1-based rank of ``latent`` when ``values`` are sorted in descending order."""
    return int((values > values[latent]).sum()) + 1


@torch.inference_mode()
def mayne_diagnostics(
    sae: BaseSAE,
    v: Tensor,
    mean_activation: Tensor,
    latent: int,
    sorted_norms: Tensor,
    *,
    top_k: int,
    bias_dominated_overlap: float,
) -> dict[str, Any]:
    """Mayne et al.'s checks of reading ``v`` through ``sae``: its norm against the activation
    norms at the hook (``sorted_norms``, ascending), the top-``top_k`` latents of encode(v), of
    encode(0) and of encode(mean + v) - encode(mean) (by |difference|), their overlaps with
    encode(0)'s, cos(v, d_f), and ``bias_dominated``: encode(v)'s top latents overlap
    encode(0)'s by at least ``bias_dominated_overlap``, or encode(v) has no active latent."""
    dev = sae.W_enc.device
    v = v.to(dev).float()
    mean = mean_activation.to(dev).float()
    codes = sae.encode(torch.stack([v, torch.zeros_like(v), mean + v, mean])).float()
    enc_v, enc_0, enc_mv, enc_m = codes
    in_dist = enc_mv - enc_m
    top_v, top_0, top_in = top_latents(enc_v, top_k), top_latents(enc_0, top_k), top_latents(in_dist, top_k, by_abs=True)
    ov = overlap(top_v, top_0)
    norm = float(v.double().norm())
    median = float(sorted_norms[len(sorted_norms) // 2]) if len(sorted_norms) else float("nan")
    d_f = sae.W_dec[latent].detach().float()
    return {
        "norm": norm,
        "norm_percentile": percentile_of(norm, sorted_norms),
        "activation_norm_median": median,
        "norm_ratio_to_median": norm / median if median > 0 else None,
        "top_latents_encode_v": top_v,
        "top_latents_encode_0": top_0,
        "top_latents_in_distribution": top_in,
        "overlap_encode_v_with_encode_0": ov,
        "overlap_in_distribution_with_encode_0": overlap(top_in, top_0),
        "cos_encode_v_with_encode_0": _cos(enc_v, enc_0),
        # Flagged too when encode(v) is empty: the thresholds/biases, not v, decide the code.
        "bias_dominated": bool(not top_v or ov >= bias_dominated_overlap),
        "encode_v_empty": not top_v,
        "n_active_encode_v": int((enc_v > 0).sum()),
        "n_active_encode_0": int((enc_0 > 0).sum()),
        "latent_in_top_encode_v": latent in top_v,
        "latent_in_top_in_distribution": latent in top_in,
        "cos_with_decoder_row": _cos(v, d_f),
    }


# ---- decompositions -------------------------------------------------------------------------


def unit_decoder_rows(sae: BaseSAE) -> Tensor:
    """[d_sae, d_in] unit decoder rows (the raw-space feature directions)."""
    return sae.decoder_directions().float()


def projections(v: Tensor, atoms: Tensor) -> Tensor:
    """<v, d_i> / ||d_i|| for every row d_i of ``atoms`` (negatives kept)."""
    norms = atoms.float().norm(dim=1).clamp_min(1e-12)
    return (atoms.float() @ v.to(atoms.device).float()) / norms


@dataclass
class SignedFit:
    latents: list[int]
    """The atoms chosen, in the order matching pursuit chose them."""
    coefs: list[float]
    """Least-squares coefficients on the unit decoder rows (either sign)."""
    fit: Tensor
    """sum_i c_i u_i [d_in]."""
    explained: float
    """1 - ||v - fit||^2 / ||v||^2."""
    negative_share: float
    """sum of c_i^2 over negative c_i / sum of c_i^2."""


def omp(v: Tensor, atoms: Tensor, k: int, tol: float = 1e-9) -> SignedFit:
    """Orthogonal matching pursuit of ``v`` over unit-norm ``atoms`` [n, d], at most ``k``
    terms: each step adds the atom most correlated (in absolute value) with the residual and
    refits every coefficient by least squares, so coefficients take either sign. Stops early
    when the residual is below ``tol`` times ||v||."""
    atoms = atoms.float()
    target = v.to(atoms.device).double()
    vnorm2 = float(target @ target)
    residual = target.clone()
    support: list[int] = []
    coefs = torch.zeros(0, dtype=torch.float64, device=atoms.device)
    for _ in range(min(k, atoms.shape[0])):
        if float(residual @ residual) <= (tol**2) * max(vnorm2, 1e-300):
            break
        corr = (atoms @ residual.float()).abs()
        if support:
            corr[torch.tensor(support, device=corr.device)] = -1.0
        i = int(corr.argmax())
        support.append(i)
        basis = atoms[support].double().T  # [d, t]
        coefs = torch.linalg.lstsq(basis, target[:, None]).solution[:, 0]
        residual = target - basis @ coefs
    fit = (target - residual).float()
    explained = 1.0 - float(residual @ residual) / vnorm2 if vnorm2 > 0 else float("nan")
    sq = coefs.pow(2)
    total = float(sq.sum())
    negative = float(sq[coefs < 0].sum()) / total if total > 0 else 0.0
    return SignedFit(support, [float(c) for c in coefs.tolist()], fit, explained, negative)


@torch.inference_mode()
def naive_reconstruction(sae: BaseSAE, v: Tensor) -> tuple[Tensor, Tensor]:
    """(decode(encode(v)) - decode(0), encode(v)): the decoder bias cancels, so the first is
    ``encode(v) @ W_dec`` in raw units."""
    v = v.to(sae.W_enc.device).float()
    code = sae.encode(v[None])[0].float()
    recon = sae.decode(code[None])[0].float() - sae.decode(torch.zeros_like(code)[None])[0].float()
    return recon, code


def explained_share(v: Tensor, approx: Tensor) -> float:
    """1 - ||v - approx||^2 / ||v||^2 (no rescaling)."""
    v, approx = v.double(), approx.to(v.device).double()
    return 1.0 - float((v - approx).pow(2).sum()) / float(v.pow(2).sum())


def top_signed(values: Tensor, n: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The ``n`` largest positive and the ``n`` most negative entries, as (index, value)."""
    v = values.detach().float().cpu()
    pos = torch.sort(v, descending=True, stable=True).indices[:n]
    neg = torch.sort(v, descending=False, stable=True).indices[:n]
    return ([(int(i), float(v[i])) for i in pos if v[i] > 0], [(int(i), float(v[i])) for i in neg if v[i] < 0])


@torch.inference_mode()
def decompose(sae: BaseSAE, v: Tensor, latent: int, *, k: int, n_report: int) -> dict[str, Any]:
    """The signed decomposition of ``v`` next to the naive one (tensors under ``"vectors"``)."""
    atoms = unit_decoder_rows(sae)
    v = v.to(atoms.device).float()
    proj = projections(v, atoms)
    sq = proj.double().pow(2)
    fit = omp(v, atoms, k)
    naive, code = naive_reconstruction(sae, v)
    pos, neg = top_signed(proj, n_report)
    fit_order = sorted(range(len(fit.latents)), key=lambda j: -abs(fit.coefs[j]))
    cos_naive = _cos(naive, v)
    return {
        "projection_on_latent": float(proj[latent]),
        "projection_rank_of_latent": _rank_of(latent, proj),
        "negative_projection_share": float(sq[proj < 0].sum() / sq.sum()) if float(sq.sum()) > 0 else 0.0,
        "top_positive_projections": [{"latent": i, "value": x} for i, x in pos],
        "top_negative_projections": [{"latent": i, "value": x} for i, x in neg],
        "signed_fit": {
            "k": k,
            "n_terms": len(fit.latents),
            "explained": fit.explained,
            "negative_share": fit.negative_share,
            "n_negative": sum(c < 0 for c in fit.coefs),
            "terms": [{"latent": fit.latents[j], "coef": fit.coefs[j]} for j in fit_order],
            "cos_with_v": _cos(fit.fit, v),
            "latent_in_fit": latent in fit.latents,
        },
        "naive": {
            "n_active": int((code > 0).sum()),
            "negative_share": float(code[code < 0].pow(2).sum() / code.pow(2).sum()) if float(code.pow(2).sum()) > 0 else 0.0,
            "explained_unscaled": explained_share(v, naive),
            "explained_rescaled": cos_naive**2 if cos_naive is not None and cos_naive > 0 else 0.0,
            "cos_with_v": cos_naive,
            "norm": float(naive.double().norm()),
            "code_on_latent": float(code[latent]),
        },
        "vectors": {"signed": fit.fit.detach().cpu(), "naive": naive.detach().cpu()},
    }


def unit(v: Tensor) -> Tensor:
    """v / ||v||; the zero vector stays zero (steering with it changes nothing)."""
    n = float(v.double().norm())
    return v.float() / n if n > 0 else torch.zeros_like(v, dtype=torch.float32)


# ---- user-supplied vectors --------------------------------------------------------------------


def load_vector_file(path: Path, d_model: int, latents: Sequence[int]) -> dict[int, Tensor]:
    """User-supplied steering vectors for the concepts of one SAE: a safetensors file whose
    tensor names are the concepts' latent indices in decimal ("123"), each a 1-D float tensor
    of ``d_model`` finite values, not all zero. Concepts it does not name get DiffMean; a name
    that is not a steered latent is an error (a typo would otherwise silently fall back)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"steering_vectors.vectors_file: {path} does not exist")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types (version-dependent)
        raise VectorError(f"steering_vectors.vectors_file: {path} is not a readable safetensors file ({exc})") from exc
    wanted = {int(x) for x in latents}
    out: dict[int, Tensor] = {}
    for name, tensor in tensors.items():
        if not name.isdigit():
            raise VectorError(f"{path}: tensor {name!r}: names must be latent indices in decimal, e.g. '123'")
        latent = int(name)
        if latent not in wanted:
            raise VectorError(
                f"{path}: tensor {name!r}: latent {latent} is not one of this SAE's steered concepts {sorted(wanted)}"
            )
        if tensor.ndim != 1 or tensor.shape[0] != d_model:
            raise VectorError(f"{path}: tensor {name!r} has shape {list(tensor.shape)}, expected [{d_model}] (d_model)")
        if not tensor.is_floating_point():
            raise VectorError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected a float dtype")
        if not torch.isfinite(tensor).all():
            raise VectorError(f"{path}: tensor {name!r} contains NaN or infinite values")
        if float(tensor.double().norm()) == 0 or not math.isfinite(float(tensor.double().norm())):
            raise VectorError(f"{path}: tensor {name!r} is the zero vector")
        out[latent] = tensor.float()
    return out

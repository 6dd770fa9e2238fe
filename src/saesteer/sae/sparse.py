"""Sparse autograd for SAE training: only the code entries that can carry a gradient are materialised.

In every architecture here the gradient of the loss reaches the pre-activation matrix
``Z = X W`` ([batch, d_sae]) only at a small set S of positions: the active latents
(ReLU, TopK, BatchTopK, Gated) plus, for JumpReLU, the positions inside the
straight-through estimator's band around the threshold. Dense autograd nevertheless
spends four or five more [batch x d_in x d_sae] matrix products on zeros (the decoder
forward, its two gradients, the encoder weight gradient and, where the input is centred
by b_dec, the input gradient). Here:

- ``Z`` is computed once densely (no way around it: every latent must be scored),
- the set S is picked without autograd,
- the values ``Z[S]`` enter autograd through :class:`GatheredAffine`, whose backward
  costs O(|S| * d_in) via a CSR product instead of O(batch * d_sae * d_in),
- decoding is an ``embedding_bag`` over S (a gather-and-sum of decoder rows), whose
  backward is again O(|S| * d_in).

The gradients equal dense autograd's up to floating-point summation order (the tests
check this per architecture); the selected pre-activations are bit-identical, because
``Z[S]`` is taken from the same dense product, so both paths pick the same latents.
Which path runs is chosen per step from the density of S (``StepContext``); the dense
one wins above ~15% density on CPU. Gao et al. 2024 (arXiv 2406.04093, section on
kernels) use the same idea for TopK on GPU; this is a CPU-friendly version built from
stock PyTorch ops.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and used as documented
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, shape)


class SparseStructure:
    """Positions S of a [n_rows, n_cols] matrix in CSR form (rows sorted ascending).

    Entry n is (rows[n], cols[n]); ``crow`` (length n_rows + 1) indexes each row's
    segment, and ``crow[:-1]`` are ``embedding_bag`` offsets. The column-major view
    (:meth:`transposed`), needed for the weight gradients, is computed once and shared
    by every product over S in a step.
    """

    def __init__(self, rows: Tensor, cols: Tensor, crow: Tensor, n_rows: int, n_cols: int):
        self.rows, self.cols, self.crow = rows, cols, crow
        self.n_rows, self.n_cols = n_rows, n_cols
        self._transposed: tuple[Tensor, Tensor, Tensor] | None = None

    @classmethod
    def from_mask(cls, mask: Tensor) -> SparseStructure:
        """The True entries of a [batch, d_sae] mask, row-major."""
        rows, cols = mask.nonzero(as_tuple=True)
        return cls(rows, cols, _crow_from_counts(rows, mask.shape[0]), *mask.shape)

    @classmethod
    def from_topk(cls, indices: Tensor, n_cols: int) -> SparseStructure:
        """Per-row top-k indices [batch, k] (k entries in every row)."""
        n_rows, k = indices.shape
        device = indices.device
        rows = torch.arange(n_rows, device=device).repeat_interleave(k)
        crow = torch.arange(0, n_rows * k + 1, k, device=device)
        return cls(rows, indices.reshape(-1), crow, n_rows, n_cols)

    @classmethod
    def from_flat(cls, flat_sorted: Tensor, n_rows: int, n_cols: int) -> SparseStructure:
        """Sorted flat indices into a [n_rows, n_cols] matrix."""
        rows = torch.div(flat_sorted, n_cols, rounding_mode="floor")
        cols = flat_sorted - rows * n_cols
        return cls(rows, cols, _crow_from_counts(rows, n_rows), n_rows, n_cols)

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())

    @property
    def offsets(self) -> Tensor:
        return self.crow[:-1]

    def transposed(self) -> tuple[Tensor, Tensor, Tensor]:
        """(perm, crow_t, rows_t): entries reordered column-major, CSR of the transpose."""
        if self._transposed is None:
            # Sort unique composite keys (column-major order, rows ascending within a
            # column); single-threaded, see _sort_single_thread.
            perm = _sort_single_thread(self.cols * self.n_rows + self.rows)
            crow_t = _crow_from_counts(self.cols, self.n_cols)
            self._transposed = (perm, crow_t, self.rows[perm])
        return self._transposed

    def transpose_matmul(self, values: Tensor, dense: Tensor) -> Tensor:
        """S(values)^T @ dense: [n_cols, dense.shape[1]], i.e. out[c] += v_n * dense[r_n]."""
        perm, crow_t, rows_t = self.transposed()
        return _csr(crow_t, rows_t, values[perm], (self.n_cols, self.n_rows)) @ dense

    def sampled_matmul(self, a: Tensor, b: Tensor) -> Tensor:
        """(a @ b)[rows, cols] without forming a @ b: a [n_rows, m], b [m, n_cols]."""
        pattern = _csr(self.crow, self.cols, torch.zeros(self.nnz, dtype=a.dtype, device=a.device), (self.n_rows, self.n_cols))
        return torch.sparse.sampled_addmm(pattern, a, b).values()

    def fired(self, values: Tensor) -> Tensor:
        """[n_cols] bool: columns with a nonzero value somewhere."""
        return torch.bincount(self.cols[values.detach() != 0], minlength=self.n_cols) > 0

    def to_dense(self, values: Tensor) -> Tensor:
        """Dense matrix with ``values`` at S; differentiable with respect to ``values``."""
        dense = torch.zeros(self.n_rows, self.n_cols, dtype=values.dtype, device=values.device)
        return dense.index_put((self.rows, self.cols), values)


def _sort_single_thread(keys: Tensor) -> Tensor:
    """argsort of ``keys``. On CPU, torch's parallel sort of ~1e5 int64 keys takes ~200 ms
    with two OpenMP threads on a busy machine and ~1 ms with one, so sort with one thread
    (the setting is restored at once)."""
    if keys.device.type != "cpu":
        return keys.sort().indices
    threads = torch.get_num_threads()
    if threads == 1:
        return keys.sort().indices
    torch.set_num_threads(1)
    try:
        return keys.sort().indices
    finally:
        torch.set_num_threads(threads)


def _crow_from_counts(index: Tensor, n: int) -> Tensor:
    crow = torch.zeros(n + 1, dtype=torch.long, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=n), 0, out=crow[1:])
    return crow


class GatheredAffine(torch.autograd.Function):
    """values = (x @ W + b)[S], given those values already computed without autograd.

    forward returns the precomputed values (so they are bit-identical to the dense
    product they were taken from); backward distributes the incoming gradient G (sparse
    on S, [batch, d_sae]) as

    - dW = x^T G      (CSR product over S's transpose, O(|S| * d_in)),
    - dx = G W^T      (embedding_bag over the rows of W^T, O(|S| * d_in)),
    - db = column sums of G (index_add).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, values: Tensor, struct: SparseStructure
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.struct = struct
        ctx.has_bias = bias is not None
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        struct: SparseStructure = ctx.struct
        grad = grad.contiguous().to(weight.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w = struct.transpose_matmul(grad, x.to(grad.dtype)).t()
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(struct.cols, weight.t().contiguous(), struct.offsets, per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[2] and ctx.has_bias:
            grad_b = torch.zeros(struct.n_cols, dtype=grad.dtype, device=grad.device).index_add_(0, struct.cols, grad)
        return grad_x, grad_w, grad_b, None, None


class SparseDecode(torch.autograd.Function):
    """out[r] = sum over S in row r of values[n] * weight[cols[n]]  (f @ W_dec for sparse f).

    Forward is an ``embedding_bag``; backward avoids embedding_bag's own (which sorts
    the column ids, slowly): dW = S(values)^T @ grad via the shared transposed CSR, and
    dvalues = (grad @ W^T)[S] via a sampled product.
    """

    @staticmethod
    def forward(ctx: Any, values: Tensor, weight: Tensor, struct: SparseStructure) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(values, weight)
        ctx.struct = struct
        return F.embedding_bag(struct.cols, weight, struct.offsets, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, weight = ctx.saved_tensors
        struct: SparseStructure = ctx.struct
        grad = grad.contiguous()
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_values = struct.sampled_matmul(grad, weight.t())
        if ctx.needs_input_grad[1]:
            grad_w = struct.transpose_matmul(values, grad)
        return grad_values, grad_w, None


def gathered_affine(x: Tensor, weight: Tensor, bias: Tensor | None, values: Tensor, struct: SparseStructure) -> Tensor:
    return GatheredAffine.apply(x, weight, bias, values, struct)


def sparse_decode(values: Tensor, struct: SparseStructure, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x_hat = f @ W_dec (+ b_dec) for f given by ``values`` on ``struct``."""
    out = SparseDecode.apply(values.to(weight.dtype), weight, struct)
    return out if bias is None else out + bias


def batch_topk_flat_indices(scores: Tensor, n_keep: int) -> Tensor:
    """Sorted flat indices of the ``n_keep`` largest entries of a [batch, d_sae] matrix.

    A full top-k over batch * d_sae entries is slow on CPU, so first take each row's
    top ``c`` candidates (c = 4 * n_keep / batch), then the global top ``n_keep`` among
    them. This is exact unless some row has all its ``c`` candidates selected (then
    that row might hold more winners than were considered); in that case fall back to
    the full top-k. Proof: an entry of the true top set that is not a candidate is
    beaten by all ``c`` candidates of its row, which are then all in the true set and,
    being among the candidates, all selected.
    """
    n_rows, n_cols = scores.shape
    per_row = -(-n_keep // n_rows)
    cand = min(n_cols, 4 * per_row)
    if cand * 2 < n_cols:
        cand_vals, cand_idx = scores.topk(cand, dim=1, sorted=False)
        _, pick = cand_vals.reshape(-1).topk(n_keep, sorted=False)
        pick_rows = torch.div(pick, cand, rounding_mode="floor")
        if int(torch.bincount(pick_rows, minlength=n_rows).max()) < cand:
            flat = pick_rows * n_cols + cand_idx.reshape(-1)[pick]
            return flat[_sort_single_thread(flat)]
    _, flat = scores.reshape(-1).topk(n_keep, sorted=False)
    return flat[_sort_single_thread(flat)]


def sum_to_shape(grad: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient back to ``shape`` (leading dims summed)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad

"""Run a transformers causal LM from a given hook-point residual: the splicing of the core eval.

The hook point is ``blocks.{layer}.hook_resid_post``, the output of decoder block ``layer``
(see :mod:`saesteer.cache.capture`). Splicing an SAE in means: replace that output with the
SAE's reconstruction and let the blocks above, the final norm and the unembedding run as
usual. The evaluation contexts are fixed, so the blocks *below* the hook are computed once
per model (their output is stored) and never again: during a spliced run the blocks
``0..layer-1`` are swapped for pass-throughs and block ``layer`` returns the residual we
give it. Everything the upper blocks need besides the hidden states (position ids, rotary
embeddings, causal and sliding-window masks of Gemma 3) the model still builds itself from
the input ids, so this works for Llama, Gemma 2/3, Qwen 2 and any model whose decoder loop
passes hidden states from block to block. A test checks that it reproduces the plain
forward pass.

Only the final hidden state (after the final norm) comes back; logits are made from it
chunk by chunk (:func:`head_logits`), because [batch, T, vocab] logits of a 262k-token
vocabulary (Gemma) do not fit in memory at once. Per-token cross-entropy and KL come from
:func:`reference_losses` (clean and zero-ablated runs, once per model) and
:func:`spliced_losses` (per SAE; one LM-head pass when the head is linear).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from saesteer.cache.capture import decoder_layers


class SpliceError(RuntimeError):
    """The model cannot be run from a hook-point residual as this module does it."""


def _text_config(model: nn.Module) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (returns last_hidden_state after the final norm)."""
    if hasattr(model, "get_decoder"):
        base = model.get_decoder()
        if base is not None:
            return base
    for name in ("model", "transformer", "gpt_neox"):
        if hasattr(model, name):
            return getattr(model, name)
    raise SpliceError(f"cannot find the decoder stack of {type(model).__name__}")


@torch.inference_mode()
def head_logits(model: nn.Module, final_hidden: Tensor) -> Tensor:
    """Logits from the final hidden state, as the model's own forward makes them (float32).

    Gemma 2/3 soft-cap their final logits; a check in :func:`check_head` makes sure no other
    post-processing is missed for a new architecture.
    """
    head = model.get_output_embeddings()
    logits = head(final_hidden.to(head.weight.dtype)).float()
    cap = getattr(_text_config(model), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.inference_mode()
def check_head(model: nn.Module, input_ids: Tensor, final_hidden: Tensor, tol: float = 1e-3) -> float:
    """Max |logits difference| between the model's forward and head_logits(final_hidden)."""
    reference = model(input_ids=input_ids, use_cache=False).logits.float()
    ours = head_logits(model, final_hidden)
    gap = (reference - ours).abs().max().item()
    scale = reference.abs().max().item()
    if gap > tol * max(1.0, scale):
        raise SpliceError(
            f"{type(model).__name__}: logits recomputed from the final hidden state differ from the "
            f"model's by {gap:.3g} (scale {scale:.3g}); its LM head does something head_logits does not"
        )
    return gap


def _block_returns_tuple(model: nn.Module, block: nn.Module, device: torch.device) -> bool:
    """Whether decoder blocks return a tuple (older transformers) or a tensor (5.x)."""
    seen: dict[str, bool] = {}

    class _Stop(Exception):
        pass

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        seen["tuple"] = isinstance(output, tuple)
        raise _Stop

    handle = block.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "tuple" not in seen:
        raise SpliceError(f"block of {type(model).__name__} did not run")
    return seen["tuple"]


class UpperRunner:
    """Callable: (input ids [B, T], residual after block ``layer`` [B, T, d]) -> final hidden [B, T, d].

    The final hidden state is the decoder stack's output after its final norm (the LM head's
    input). ``input_ids`` must be the tokens the residual was computed from: masks and
    positions come from them.
    """

    def __init__(self, model: nn.Module, layer: int):
        self.model = model
        self.layer = layer
        self.layers = decoder_layers(model)
        if not 0 <= layer < len(self.layers):
            raise SpliceError(f"layer {layer} outside 0..{len(self.layers) - 1} of {type(model).__name__}")
        self.base = base_model(model)
        device = next(model.parameters()).device
        self.as_tuple = _block_returns_tuple(model, self.layers[0], device)
        self.dtype = next(model.parameters()).dtype

    @contextmanager
    def _patched(self, residual: Tensor) -> Iterator[None]:
        wrap = (lambda h: (h,)) if self.as_tuple else (lambda h: h)

        def passthrough(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
            return wrap(hidden_states)

        def inject(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
            return wrap(residual)

        # An instance attribute shadows the class's forward; whatever was in the instance
        # dict before (an accelerate dispatch wrapper, say) is put back afterwards.
        saved = [block.__dict__.get("forward") for block in self.layers[: self.layer + 1]]
        try:
            for block in self.layers[: self.layer]:
                block.forward = passthrough
            self.layers[self.layer].forward = inject
            yield
        finally:
            for block, previous in zip(self.layers[: self.layer + 1], saved):
                if previous is None:
                    block.__dict__.pop("forward", None)
                else:
                    block.forward = previous

    @torch.inference_mode()
    def __call__(self, input_ids: Tensor, residual: Tensor) -> Tensor:
        if residual.shape[:2] != input_ids.shape:
            raise SpliceError(f"residual {tuple(residual.shape)} does not match input ids {tuple(input_ids.shape)}")
        with self._patched(residual.to(self.dtype)):
            out = self.base(input_ids=input_ids, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden


def logit_chunk_tokens(vocab_size: int, budget_floats: int = 1 << 24) -> int:
    """Tokens per logits chunk so that one [chunk, vocab] float32 tensor stays ~64 MB."""
    return max(1, budget_floats // max(1, vocab_size))


def linear_unembedding(model: nn.Module) -> Tensor | None:
    """W [V, d] when the logits are exactly W h in float32 (no bias, no soft-cap), else None.

    A bfloat16 head rounds its logits, so W h recomputed exactly would not match them;
    such models take the two-pass route of :func:`spliced_losses`.
    """
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.bias is not None or head.weight.dtype != torch.float32:
        return None
    if getattr(_text_config(model), "final_logit_softcapping", None):
        return None
    return head.weight


@torch.inference_mode()
def reference_losses(
    model: nn.Module, clean_hidden: Tensor, ablated_hidden: Tensor, targets: Tensor, keep_expectation: bool
) -> dict[str, Tensor]:
    """Per-token losses of the clean and the zero-ablated run, computed once per model.

    Returns ``ce_clean``, ``ce_zero`` and ``kl_zero`` = KL(p_clean || p_zero) [n]; with
    ``keep_expectation`` also what an SAE's KL needs without recomputing the clean logits
    (see :func:`spliced_losses`): ``neg_entropy`` = sum_v p_v log p_v [n] and
    ``expected_unembedding`` = sum_v p_v W_v [n, d] of the clean distribution.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    step = logit_chunk_tokens(vocab)
    weight = linear_unembedding(model) if keep_expectation else None
    if keep_expectation and weight is None:
        raise SpliceError(f"{type(model).__name__}: the LM head is not linear; keep the clean hidden states instead")
    parts: dict[str, list[Tensor]] = {"ce_clean": [], "ce_zero": [], "kl_zero": [], "neg_entropy": [], "expected_unembedding": []}
    for start in range(0, clean_hidden.shape[0], step):
        sl = slice(start, start + step)
        tgt = targets[sl].to(clean_hidden.device)[:, None]
        logp = torch.log_softmax(head_logits(model, clean_hidden[sl]), dim=-1)
        logq = torch.log_softmax(head_logits(model, ablated_hidden[sl]), dim=-1)
        p = logp.exp()
        parts["ce_clean"].append(-logp.gather(-1, tgt).squeeze(-1).cpu())
        parts["ce_zero"].append(-logq.gather(-1, tgt).squeeze(-1).cpu())
        parts["kl_zero"].append((p * (logp - logq)).sum(-1).clamp_min(0.0).cpu())
        if weight is not None:
            parts["neg_entropy"].append((p * logp).sum(-1).cpu())
            parts["expected_unembedding"].append((p @ weight.float()).cpu())
    return {k: torch.cat(v) for k, v in parts.items() if v}


@torch.inference_mode()
def spliced_losses(
    model: nn.Module,
    hidden: Tensor,
    targets: Tensor,
    *,
    clean_hidden: Tensor | None = None,
    neg_entropy: Tensor | None = None,
    expected_unembedding: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token cross-entropy and KL(p_clean || p) of a spliced run's final hidden states [n, d].

    With a linear head (logits z = W h), log p_v = z_v - LSE(z), so

        KL(p_clean || p) = sum_v p_clean,v log p_clean,v - (sum_v p_clean,v W_v) . h + LSE(W h),

    exactly: one LM-head pass per SAE instead of two, from ``neg_entropy`` and
    ``expected_unembedding`` stored once per model. Otherwise (soft-capped logits, Gemma 2)
    the clean logits are recomputed from ``clean_hidden``.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    step = logit_chunk_tokens(vocab)
    ce_parts, kl_parts = [], []
    for start in range(0, hidden.shape[0], step):
        sl = slice(start, start + step)
        logits = head_logits(model, hidden[sl])
        tgt = targets[sl].to(logits.device)[:, None]
        if expected_unembedding is not None and neg_entropy is not None:
            # CE exactly as reference_losses computes it, so a zero SAE matches zero-ablation.
            ce = -torch.log_softmax(logits, dim=-1).gather(-1, tgt).squeeze(-1)
            lse = torch.logsumexp(logits, dim=-1).double()
            cross = (expected_unembedding[sl].to(logits.device).double() * hidden[sl].double()).sum(-1)
            kl = neg_entropy[sl].to(logits.device).double() - cross + lse
        elif clean_hidden is not None:
            logq = torch.log_softmax(logits, dim=-1)
            logp = torch.log_softmax(head_logits(model, clean_hidden[sl]), dim=-1)
            ce = -logq.gather(-1, tgt).squeeze(-1)
            kl = (logp.exp() * (logp - logq)).sum(-1)
        else:
            raise SpliceError("spliced_losses needs clean_hidden, or neg_entropy and expected_unembedding")
        ce_parts.append(ce.float().cpu())
        kl_parts.append(kl.float().clamp_min(0.0).cpu())  # rounding gives -1e-9 where they agree
    return torch.cat(ce_parts), torch.cat(kl_parts)


def prediction_mask(length: int, first_replaced: int) -> Tensor:
    """Positions whose next-token prediction is scored: they saw a replaced residual (t >=
    first_replaced) and have a next token (t < length - 1)."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[first_replaced : length - 1] = True
    return mask

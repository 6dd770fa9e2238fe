"""Run a transformers causal LM only up to the hook layer and return its residual stream.

The hook point is ``blocks.{layer}.hook_resid_post`` in TransformerLens/SAELens naming:
the output of decoder block ``layer`` (0-based), i.e. ``hidden_states[layer + 1]`` of a
transformers model. A forward hook on that block captures the output and raises, so the
blocks above it, the final norm and the unembedding never run: for a mid-depth hook this
halves the cost of caching compared with a full forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _StopForward(Exception):
    """Raised inside the hook to end the forward pass at the hook layer."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers causal LM (Llama, Gemma, Qwen, GPT-2, ...)."""
    candidates = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
    for dotted in candidates:
        module: Any = model
        try:
            for part in dotted.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} (looked for {candidates})")


class ResidualCapture:
    """Callable: input ids [B, T] -> residual stream after block ``layer``, [B, T, d_model]."""

    def __init__(self, model: nn.Module, layer: int):
        layers = decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} outside 0..{len(layers) - 1} of {type(model).__name__}")
        self.model = model
        self.layer = layer
        self._block = layers[layer]
        self._captured: torch.Tensor | None = None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self._captured = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        handle = self._block.register_forward_hook(self._hook)
        self._captured = None
        try:
            self.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if self._captured is None:
            raise RuntimeError(f"block {self.layer} did not run: the model skipped it")
        captured, self._captured = self._captured, None
        return captured

"""The planted steering signal of the CI grid, and its check on a finished run.

The tiny CI models (``saesteer.tiny_models``) keep the current token's embedding in the
residual stream at the hook layer, and their unembedding is (Gemma-2, Qwen-2: tied) or starts
as (Llama) that embedding. An SAE trained there learns *token latents*: decoder rows along one
token's output embedding. The offline judge explains such a latent as ``the tokens "w"`` (its
peak token) and steering along its decoder row makes the model write ``w``, which the judge's
concept rating counts (``judges/offline.py``, ``concept_token_rate``) when ``w`` is a word it
can count: a whole word (the token's text starts with a space) or a punctuation mark. A token
latent of a word piece (``"ing"``) makes the model write ``inginging``, which is no word: it
does not steer. So the answer is known before the run, from its files alone:

- a **planted latent** of an SAE is one whose decoder row has cosine at least
  ``min_cosine`` with the output embedding of one token (:func:`token_latents`), and whose
  token is a countable word (:func:`countable`);
- the steering evaluation must score concepts of planted latents above the others, so SAEs
  differ (each has its own share of planted latents among its concepts);
- Delta Token Confidence and output-score selection must pick planted latents.

:func:`check_planted` returns one line per broken expectation, naming the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MIN_COSINE = 0.9
"""Decoder row / output embedding cosine from which a latent is a token latent."""

_WORD = re.compile(r"\w+")
_PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class TokenLatent:
    latent: int
    token_id: int
    text: str
    """The token decoded alone (leading space kept)."""
    cosine: float
    countable: bool
    """Whether the offline judge can count the token in a generation (:func:`countable`)."""


def countable(text: str) -> bool:
    """A token the offline judge counts when a steered model repeats it: one punctuation
    mark, or a word whose text starts with whitespace (so that repeats stay separate words)."""
    core = text.strip()
    if _PUNCT.fullmatch(core):
        return True
    return bool(_WORD.fullmatch(core)) and text[:1].isspace()


def output_embedding(model_dir: Path) -> torch.Tensor:
    """[vocab, d] output embedding of a transformers folder (``lm_head.weight``, or the input
    embedding of a model with tied embeddings), read from its safetensors without the model."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no .safetensors file")
    found: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith("lm_head.weight") or key.endswith("embed_tokens.weight"):
                    found[key.rsplit(".", 2)[-2]] = f.get_tensor(key).float()
    if "lm_head" in found:
        return found["lm_head"]
    if "embed_tokens" in found:
        return found["embed_tokens"]
    raise KeyError(f"{model_dir}: neither lm_head.weight nor embed_tokens.weight in {[p.name for p in files]}")


@torch.inference_mode()
def token_latents(W_dec: torch.Tensor, unembed: torch.Tensor, decode: Any, min_cosine: float = MIN_COSINE, chunk: int = 32768) -> dict[int, TokenLatent]:
    """Latents whose decoder row has cosine >= ``min_cosine`` with a token's output embedding
    (the token of highest cosine). ``decode``: token id -> text."""
    rows = torch.nn.functional.normalize(W_dec.float(), dim=-1)
    best = torch.full((rows.shape[0],), -2.0)
    arg = torch.zeros(rows.shape[0], dtype=torch.long)
    for start in range(0, unembed.shape[0], chunk):
        part = torch.nn.functional.normalize(unembed[start : start + chunk].float(), dim=-1)
        value, index = (rows @ part.T).max(dim=1)
        better = value > best
        best[better], arg[better] = value[better], index[better] + start
    out = {}
    for latent in torch.nonzero(best >= min_cosine).flatten().tolist():
        tid = int(arg[latent])
        text = decode(tid)
        out[latent] = TokenLatent(latent, tid, text, float(best[latent]), countable(text))
    return out

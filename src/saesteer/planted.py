"""The planted steering signal of the CI grid, and its check on a finished run.

The tiny CI models (``saesteer.tiny_models``) keep the current token's embedding in the
residual stream at the hook layer, and their unembedding is (Gemma-2, Qwen-2: tied) or starts
as (Llama) that embedding. A *token latent* is an SAE latent whose decoder row is one token's
output embedding (the unit tests plant them, :func:`plant_token_latents`; the SAEs the CI run
trains have none yet, docs/ci.md). The offline judge explains such a latent as ``the tokens "w"`` (its
peak token) and steering along its decoder row makes the model write ``w``, which the judge's
concept rating counts (``judges/offline.py``, ``concept_token_rate``) when ``w`` is a word it
can count and the reference LM can score: a whole word (the token's text starts with a space).
A token latent of a word piece (``"ing"``) makes the model write ``inginging``, which is no
word, and one of a punctuation mark a run that is one token to the reference LM (fluency 0):
they do not steer (:func:`countable`). So the answer is known before the run, from its files alone:

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
    """A token the offline judge can rate present when a steered model repeats it: a word
    whose text starts with whitespace, so that repeats stay separate words (" the the the").
    A word piece glues into one word ("inginging" is no "ing"); a run of one punctuation mark
    is re-tokenised by byte-level BPE into one token (",,,,,,,," is one SmolLM2 token), too
    short for the reference LM's loss, so its fluency is 0 (``judges/offline.py``)."""
    return bool(_WORD.fullmatch(text.strip())) and text[:1].isspace()


def embeddings(model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """([vocab, d] input embedding, [vocab, d] output embedding) of a transformers folder,
    read from its safetensors without building the model; a model with tied embeddings has
    no ``lm_head.weight``: its output embedding is the input embedding."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no .safetensors file")
    found: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith(("lm_head.weight", "embed_tokens.weight")):
                    found[key.rsplit(".", 2)[-2]] = f.get_tensor(key).float()
    if "embed_tokens" not in found:
        raise KeyError(f"{model_dir}: no embed_tokens.weight in {[p.name for p in files]}")
    return found["embed_tokens"], found.get("lm_head", found["embed_tokens"])


def output_embedding(model_dir: Path) -> torch.Tensor:
    """[vocab, d] output embedding of a transformers folder (:func:`embeddings`)."""
    return embeddings(model_dir)[1]


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


@torch.inference_mode()
def plant_token_latents(sae: Any, embed: torch.Tensor, unembed: torch.Tensor, plants: dict[int, int], *, gain: float = 2.0, silence_others: bool = True) -> None:
    """Make ``sae``'s latent ``i`` a token latent of token ``plants[i]`` (the unit tests' planted
    fixture): its decoder row the token's unit output embedding, its pre-activation
    ``gain * (<x, e> / |e| - |e| / 2)`` for the token's input embedding ``e`` on the raw
    residual ``x``, so it fires where the residual is mostly ``e`` (on the tiny models: at that
    token), at about ``gain * |e| / 2``. ``b_dec`` is zeroed; with ``silence_others`` every other
    latent gets a bias of -1e4, so autointerp's sample is the planted latents."""
    W_enc, W_dec = sae.W_enc, sae.W_dec
    scale = float(getattr(sae, "act_scale", 1.0))  # the encoder sees x / act_scale
    sae.b_dec.zero_()
    if silence_others:
        sae.b_enc.fill_(-1e4)
    for latent, token in plants.items():
        e = embed[token].float()
        norm = float(e.norm())
        W_dec[latent] = torch.nn.functional.normalize(unembed[token].float(), dim=0).to(W_dec.dtype)
        W_enc[:, latent] = (e * (gain * scale / norm)).to(W_enc.dtype)
        sae.b_enc[latent] = -0.5 * gain * norm


# ---- the check on a finished run -----------------------------------------------------------


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable for the planted check ({exc})")
        return None


def tiny_model_dir(record_path: Path) -> Path | None:
    """The weights folder of a prepared model if it is one of ``saesteer.tiny_models`` (its
    folder holds ``tiny_model.json``), else None."""
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    local = record.get("local_dir")
    if local and (Path(local) / "tiny_model.json").is_file():
        return Path(local)
    return None


@dataclass(frozen=True)
class CellAnswer:
    """What one SAE of a finished run says about the planted answer."""

    path: str
    planted: dict[int, TokenLatent]
    """Token latents of the SAE (:func:`token_latents`), countable or not."""
    score: float | None
    """steering/score.json's score."""
    concepts: dict[int, float | None]
    """steering/concepts.json: latent -> held-out score (AxBench order)."""
    selection: dict[str, Any]
    """selection/score.json."""

    @property
    def good(self) -> set[int]:
        """The planted latents: token latents of a countable token."""
        return {latent for latent, t in self.planted.items() if t.countable}


def cell_answers(directory: Path, config: dict[str, Any], min_cosine: float = MIN_COSINE) -> tuple[list[CellAnswer], list[str]]:
    """Every SAE's :class:`CellAnswer` (empty when a model of the grid is not a tiny model:
    there is no planted answer then), and the problems met reading them."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from saesteer.config import grid_from_config

    grid = grid_from_config(config)
    results = Path(directory) / "results"
    problems: list[str] = []
    folders = {m.name: tiny_model_dir(results / "models" / m.name / "model.json") for m in grid.models}
    if not all(folders.values()):
        return [], problems
    answers = []
    for model in grid.models:
        folder = folders[model.name]
        unembed = output_embedding(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        decode = lambda t, tok=tokenizer: tok.decode([t])  # noqa: E731
        for cell in (c for c in grid.cells() if c.model == model.name):
            base = results / cell.path
            weights = base / "sae" / "sae_weights.safetensors"
            try:
                W_dec = load_file(str(weights))["W_dec"]
            except Exception as exc:  # safetensors raises several types
                problems.append(f"{weights}: unreadable for the planted check ({exc})")
                continue
            score = _read_json(base / "steering" / "score.json", problems)
            concepts = _read_json(base / "steering" / "concepts.json", problems)
            selection = _read_json(base / "selection" / "score.json", problems)
            if score is None or concepts is None or selection is None:
                continue
            answers.append(CellAnswer(
                path=cell.path,
                planted=token_latents(W_dec, unembed, decode, min_cosine),
                score=score.get("score"),
                concepts={int(c["latent"]): c["axbench"]["heldout_score"] for c in concepts["concepts"]},
                selection=selection,
            ))
    return answers, problems


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def check_planted(directory: Path, config: dict[str, Any], min_cosine: float = MIN_COSINE) -> list[str]:
    """The planted answer of a finished run on the tiny models (nothing to check, [], where a
    model of the grid is not a tiny model), one line per broken expectation naming its file:

    1. the SAEs' steering scores (``steering/score.json``) are not all equal;
    2. the steering evaluation's concepts include planted latents, and every planted concept
       scores above the mean of the others (``steering/concepts.json``);
    3. every SAE whose concepts include both planted and other latents has its Delta Token
       Confidence set chosen among planted latents only, with a positive, defined lift
       (``selection/score.json``; the output-score set may be every concept, lift 0);
    4. tau-b of autointerp vs the steering score over all SAEs is defined
       (``summary/summary.json``).
    """
    directory = Path(directory)
    answers, problems = cell_answers(directory, config, min_cosine)
    if not answers:
        return problems
    results = directory / "results"

    def where(cell: CellAnswer, rel: str) -> Path:
        return results / cell.path / rel

    scores = {a.path: a.score for a in answers}
    if len({s for s in scores.values()}) < 2:
        files = ", ".join(str(where(a, "steering/score.json")) for a in answers)
        problems.append(f"{files}: every SAE's steering score is {next(iter(scores.values()))!r}: the planted signal did not reach the scores")

    planted_scores = [(a, latent, s) for a in answers for latent, s in a.concepts.items() if latent in a.good]
    other_scores = [s for a in answers for latent, s in a.concepts.items() if latent not in a.good and s is not None]
    if not planted_scores:
        problems.append(f"{results}/*/steering/concepts.json: no concept is a planted latent (decoder row within cosine {min_cosine} of a countable token's unembedding)")
    baseline = _mean(other_scores) or 0.0
    for a, latent, s in planted_scores:
        if s is None or s <= baseline:
            t = a.planted[latent]
            problems.append(f"{where(a, 'steering/concepts.json')}: planted latent {latent} (token {t.text!r}, cosine {t.cosine:.3f}) has held-out score {s!r}, not above the other concepts' mean {baseline:.3f}")

    for a in answers:
        concepts = set(a.concepts)
        if not (concepts & a.good) or concepts <= a.good:
            continue
        path = where(a, "selection/score.json")
        chosen = a.selection.get("delta_conf") or {}
        picked = set(chosen.get("latents") or [])
        if not picked or not picked <= a.good:
            problems.append(f"{path}: Delta C chose {sorted(picked)}, not planted latents only (planted: {sorted(concepts & a.good)})")
        value = chosen.get("lift")
        if value is None or not math.isfinite(value) or value <= 0:
            problems.append(f"{path}: the Delta C lift is {value!r}, expected > 0 where planted and other latents are concepts")

    summary_path = results / "summary" / "summary.json"
    summary = _read_json(summary_path, problems)
    if isinstance(summary, dict):
        rows = [r for r in summary.get("rank_agreement") or []
                if r.get("metric") == "autointerp" and r.get("target") == "steering" and r.get("scope") == "all"]
        tau = rows[0].get("tau_b") if rows else None
        if tau is None or not math.isfinite(float(tau)):
            problems.append(f"{summary_path}: tau-b of autointerp vs steering over all SAEs is {tau!r} ({rows[0].get('reason') if rows else 'no row'})")
    return problems

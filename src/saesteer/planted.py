"""The planted steering signal of the CI grid, and its check on a finished run.

The tiny CI models (``saesteer.tiny_models``) keep the current token's embedding in the
residual stream at the hook layer, and their unembedding is (Gemma-2, Qwen-2: tied) or starts
as (Llama) that embedding. A *token latent* is an SAE latent whose decoder row is one token's
output embedding (the unit tests plant them, :func:`plant_token_latents`; the CI run's TopK SAEs learn
them from the planted corpus, :func:`write_planted_corpus`, docs/ci.md). The offline judge explains such a latent as ``the tokens "w"`` (its
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

MIN_COSINE = 0.75
"""Decoder row / output embedding cosine from which a latent is a token latent: above an
equal mix of two tokens (1/sqrt(2) = 0.71) and far above a random direction's best token in
d_model 64 (about 0.55 over 49k tokens, 0.6 over 262k); the trained CI SAEs' token latents that
steer reach 0.77-0.82 (docs/ci.md)."""

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
def token_latents(
    W_dec: torch.Tensor, unembed: torch.Tensor, decode: Any, min_cosine: float = MIN_COSINE, chunk: int = 32768
) -> dict[int, TokenLatent]:
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
def plant_token_latents(
    sae: Any,
    embed: torch.Tensor,
    unembed: torch.Tensor,
    plants: dict[int, int],
    *,
    gain: float = 2.0,
    silence_others: bool = True,
) -> None:
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
            answers.append(
                CellAnswer(
                    path=cell.path,
                    planted=token_latents(W_dec, unembed, decode, min_cosine),
                    score=score.get("score"),
                    concepts={int(c["latent"]): c["axbench"]["heldout_score"] for c in concepts["concepts"]},
                    selection=selection,
                )
            )
    return answers, problems


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def check_planted(directory: Path, config: dict[str, Any], min_cosine: float = MIN_COSINE) -> list[str]:
    """The planted answer of a finished run on the tiny models (nothing to check, [], where a
    model of the grid is not a tiny model), one line per broken expectation naming its file
    (:func:`judge_answers` says which)."""
    directory = Path(directory)
    answers, problems = cell_answers(directory, config, min_cosine)
    if not answers:
        return problems
    summary_path = directory / "results" / "summary" / "summary.json"
    summary = _read_json(summary_path, problems)
    return problems + judge_answers(answers, summary if isinstance(summary, dict) else None, directory / "results", min_cosine)


def judge_answers(
    answers: Sequence[CellAnswer], summary: dict[str, Any] | None, results: Path, min_cosine: float = MIN_COSINE
) -> list[str]:
    """What issue 23 asks of the planted run, one line per broken expectation:

    1. the SAEs' steering scores (``steering/score.json``) are not all equal;
    2. the concepts' held-out scores (``steering/concepts.json``) are not all equal;
    3. some concepts are planted latents, and their mean held-out score is above the mean of
       the other concepts (above 0 if every concept is planted);
    4. every SAE with a planted concept has a planted latent in its output-score set, and
       some SAE's Delta Token Confidence set holds a planted latent (``selection/score.json``);
    5. some lift (Delta C or output score, over all SAEs) is defined and nonzero;
    6. tau-b of autointerp vs the steering score over all SAEs is defined (``summary.json``,
       None: unreadable, already reported).

    What is not asked: that Delta C choose planted latents only, or with a positive lift. On
    the trained CI SAEs it does not (docs/ci.md: Delta C ranks by the output confidence, which
    the tiny models raise as much for a latent that writes an unrelated word)."""
    problems: list[str] = []

    def where(cell: CellAnswer, rel: str) -> Path:
        return results / cell.path / rel

    scores = {a.path: a.score for a in answers}
    if len(set(scores.values())) < 2:
        files = ", ".join(str(where(a, "steering/score.json")) for a in answers)
        problems.append(
            f"{files}: every SAE's steering score is {next(iter(scores.values()))!r}: the planted signal did not reach the scores"
        )

    held_out = [s for a in answers for s in a.concepts.values()]
    if len(set(held_out)) < 2:
        problems.append(
            f"{results}/*/steering/concepts.json: every concept's held-out score is {held_out[0] if held_out else None!r}"
        )

    planted_scores = [s for a in answers for latent, s in a.concepts.items() if latent in a.good and s is not None]
    other_scores = [s for a in answers for latent, s in a.concepts.items() if latent not in a.good and s is not None]
    if not planted_scores:
        problems.append(
            f"{results}/*/steering/concepts.json: no concept is a planted latent (decoder row within cosine {min_cosine} of a countable token's unembedding)"
        )
    elif len(set(held_out)) >= 2:  # all equal: reported above
        planted_mean, other_mean = _mean(planted_scores) or 0.0, _mean(other_scores) or 0.0
        if planted_mean <= other_mean:
            problems.append(
                f"{results}/*/steering/concepts.json: the planted concepts' mean held-out score {planted_mean:.3f} is not above the other concepts' {other_mean:.3f}"
            )

    delta_c_planted = False
    lifts = []
    for a in answers:
        planted = set(a.concepts) & a.good
        output = a.selection.get("output_score") or {}
        chosen = a.selection.get("delta_conf") or {}
        lifts += [block.get("lift") for block in (output, chosen)]
        delta_c_planted |= bool(set(chosen.get("latents") or []) & a.good)
        if planted and not set(output.get("latents") or []) & planted:
            problems.append(
                f"{where(a, 'selection/score.json')}: the output-score set {sorted(output.get('latents') or [])} holds none of the planted concepts {sorted(planted)}"
            )
    if planted_scores and not delta_c_planted:
        problems.append(f"{results}/*/selection/score.json: no SAE's Delta C set holds a planted latent")
    if not any(v is not None and math.isfinite(v) and v != 0 for v in lifts):
        problems.append(f"{results}/*/selection/score.json: no lift is defined and nonzero ({lifts})")

    if summary is not None:
        rows = [
            r
            for r in summary.get("rank_agreement") or []
            if r.get("metric") == "autointerp" and r.get("target") == "steering" and r.get("scope") == "all"
        ]
        tau = rows[0].get("tau_b") if rows else None
        if tau is None or not math.isfinite(float(tau)):
            problems.append(
                f"{results / 'summary' / 'summary.json'}: tau-b of autointerp vs steering over all SAEs is {tau!r} ({rows[0].get('reason') if rows else 'no row'})"
            )
    return problems


# ---- the planted corpus --------------------------------------------------------------------

PLANTED_WORDS: dict[str, tuple[str, ...]] = {
    "nature": tuple(
        "cat dog bird fish horse cow sheep goat duck frog bear wolf fox deer lion tiger mouse rat bee ant "
        "tree grass leaf flower rose river lake sea hill rock sand snow rain wind sun moon star cloud field "
        "farm barn seed root nest egg milk wool".split()
    ),
    "code": tuple(
        "code file data list type value class method error number string object function module table query "
        "server client loop index array byte line text key user input output model test debug token stack "
        "queue cache thread socket buffer".split()
    ),
}
"""The CI corpus's two word sets (one corpus source each): every word is one token with its
leading space in SmolLM2's BPE and in the Gemma tokenizer (``tests/test_planted.py``), so the
corpus has fewer distinct tokens (about 90) than a CI SAE has latents (256), and a sparse code
reconstructs a residual that is mostly the token's embedding best with one latent per token."""


def planted_documents(
    words: Sequence[str],
    n_documents: int,
    seed: int,
    sentences: tuple[int, int] = (4, 8),
    sentence_words: tuple[int, int] = (4, 9),
) -> list[str]:
    """``n_documents`` texts of sentences of words drawn uniformly from ``words`` (each word
    after the first led by a space, each sentence ended by ``.``), deterministic in ``seed``."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_documents):
        parts = []
        for _ in range(rng.randint(*sentences)):
            parts.append(" ".join(rng.choice(words) for _ in range(rng.randint(*sentence_words))) + ".")
        docs.append(" ".join(parts))
    return docs


def write_planted_corpus(out_dir: Path, n_documents: int = 300, seed: int = 0) -> dict[str, Path]:
    """One ``<set>.jsonl`` per word set of :data:`PLANTED_WORDS` (``{"text": ...}`` a line),
    for ``local_files`` corpus sources; returns set name -> file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for index, (name, words) in enumerate(PLANTED_WORDS.items()):
        path = out_dir / f"{name}.jsonl"
        lines = [json.dumps({"text": text}) for text in planted_documents(words, n_documents, seed + index)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[name] = path
    return files

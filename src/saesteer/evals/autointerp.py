"""Autointerp of one SAE: a judge explains sampled latents, then detects with its explanation.

The protocol is SAEBench's (Karvonen et al. 2025, arXiv 2503.09532), itself after Bills et
al. 2023 and Paulo et al. 2024 (arXiv 2410.13928); every default of ``eval.autointerp`` is
SAEBench's (src/saesteer/evals/config.py cites them):

1. **Scan.** The SAE encodes the held-out contexts of the model's eval data
   (``eval.autointerp.n_contexts`` of ``core.context_length`` tokens, from documents SAE
   training never read). Activations on BOS, EOS and padding tokens are zeroed
   (SAEBench's ``mask_bos_pad_eos_tokens``). Per latent: tokens it fires on (density) and
   its largest activation.
2. **Sample.** Alive latents fire on more than ``dead_latent_threshold`` scanned tokens.
   Each latent has a priority, a keyed hash of (seed, latent index); the ``n_latents``
   alive latents of lowest priority are taken. So the sample is deterministic, does not
   depend on the order latents are listed in, and is nested: a smaller ``n_latents`` takes
   a prefix of the ``rank`` column (steering's concepts can be the first of them).
3. **Examples**, per latent with its own seeded generator (a latent's examples do not
   depend on which other latents were sampled). An excerpt is ``2 * buffer + 1`` tokens
   around a peak token, shifted to stay inside its context (SAEBench drops peaks within
   ``buffer`` tokens of an edge instead).
   - top: the ``n_top_explain + n_top_detect`` highest peaks, more than ``buffer`` tokens
     apart within a context (``no_overlap``);
   - importance-sampled: ``n_importance_explain + n_importance_detect`` peaks drawn
     without replacement among the tokens below the lowest top peak (outside the top
     excerpts), with probability proportional to activation ** ``importance_power``;
   - random: ``n_random_detect`` excerpts at uniformly random places.
   Top and importance-sampled excerpts are split at random between the explainer and the
   detector, so the detector never sees an excerpt the explainer was shown.
4. **Explain.** The judge sees the explainer's excerpts, strongest first, activating
   tokens marked: with ``highlight: global`` (SAEBench) those above ``highlight_frac``
   (default: ``act_threshold_frac``, 0.01) x the latent's global max; with ``excerpt``
   those at or above ``highlight_frac`` (default 0.3) x the excerpt's own max. The offline
   proxy judge writes a token-list explanation instead (the latent's most frequent peak
   tokens, labelled ``explanation_kind = "token_list"``).
5. **Detect.** The judge sees the explanation and the detector's excerpts, shuffled and
   unmarked, and names those that activate the latent. Truth: a top or importance-sampled
   excerpt activates if the latent exceeds ``act_threshold_frac`` of its global max on one
   of its tokens; a random excerpt never does with ``random_labels: saebench`` (SAEBench
   builds random excerpts with zero activations), and by the same rule as the others with
   ``random_labels: activation`` (the paper's appendix B.1 definition, 1[max activation >
   threshold] for every window). Accuracy = share of excerpts classified correctly.
   The judge's calls do not depend on the rule, so both readings come from one run: each
   detection excerpt's peak activation is stored (``detect_peaks``) and every latent gets
   ``accuracy_saebench`` and ``accuracy_activation``; ``accuracy`` is the configured one.
6. **Score.** The SAE's autointerp score = mean accuracy over the scored latents among the
   first ``score_latents`` by rank (0: all ``n_latents``). Ranks follow the seeded priority
   of step 2, so that subset is a seeded random sample of the latents explained, and the
   same latents as steering's concepts when ``steering.n_concepts`` equals it (the paper
   explains 1,000 latents and reports the mean over its random Concept100 subset).
   ``score`` uses the configured rule; ``scores_by_random_labels`` has both, and
   ``score_all_latents`` both over every scored latent.

Unparseable replies are counted. An unparsed explanation gets no detection call. With
``unparsed: exclude`` (SAEBench, which drops such latents) a latent whose explanation or
detection was unparsed has no accuracy and is left out of the mean (``n_scored`` latents are
averaged, ``n_unparsed`` left out); with ``predict_none`` it predicts no excerpt and counts.

Per latent the table also stores, for each top excerpt (strongest first), its maximally
activating token and that activation (``top_token_ids``, ``top_activations``: the data of
Arad et al.'s input score, ``saesteer.selection.input_score``), and what steering needs: ``max_activation`` (the largest code
on held-out text, in the SAE's code units), ``decoder_norm`` (norm of its decoder row in
the residual stream's units) and ``m_f`` = their product, the residual-space size of the
latent's largest contribution: steering adds ``factor * m_f * v_f`` with ``v_f`` the unit
decoder row (AxBench's max-activation scaling; the two agree when decoder rows have unit
norm, as in Gemma Scope).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor

from saesteer.evals.autointerp_summary import SCHEMA_PATH, AutointerpError, read_summary, validate_summary  # noqa: F401 (re-exported)
from saesteer.evals.config import RANDOM_LABELS, AutointerpConfig, EvalConfig
from saesteer.evals.eval_data import MANIFEST_NAME, EvalData, EvalDataError
from saesteer.io import finite_json, sha256_file, write_json_atomic, write_parquet_atomic
from saesteer.judges import (
    ActivatingContext,
    Judge,
    JudgeConfig,
    check_judge_config,
    detection_accuracy,
    judge_settings,
    make_judge,
    prompts_record,
)
from saesteer.judges.config import explanation_kind, judge_job_inputs
from saesteer.judges.prompts import highlight
from saesteer.sae.base import BaseSAE

log = logging.getLogger(__name__)

AUTOINTERP_VERSION = 3
"""2: SAEBench's random-excerpt labels, global-max highlighting and unparsed exclusion by
default; the protocol options and the judge's templates and settings are recorded.
3: both random-excerpt truth rules per latent and SAE (detect_peaks, accuracy_saebench,
accuracy_activation, scores_by_random_labels) and the score subset (score_latents)."""

TOKEN_LIST = "token_list"
EXCERPT_HIGHLIGHT_FRAC = 0.3
"""``highlight: excerpt`` without ``highlight_frac``: this project's earlier rule."""
LLM_EXPLANATION = "llm"


# ---- latent sampling ---------------------------------------------------------------------


def _hash64(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def latent_priority(latent: int, seed: int) -> int:
    """The sampling priority of a latent: a keyed hash, lower is sampled first."""
    return _hash64("autointerp-latent", seed, int(latent))


def sample_latents(alive: Sequence[int] | Tensor, n: int, seed: int) -> list[int]:
    """The ``n`` alive latents of lowest priority, in priority order (rank 0 first).

    Deterministic, independent of the order of ``alive``, and nested: ``sample_latents(a,
    m, s)`` is a prefix of ``sample_latents(a, n, s)`` for m < n.
    """
    latents = sorted({int(i) for i in (alive.tolist() if isinstance(alive, Tensor) else alive)})
    return sorted(latents, key=lambda i: (latent_priority(i, seed), i))[: max(0, n)]


def latent_generator(latent: int, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_hash64("autointerp-examples", seed, int(latent)) >> 1)


# ---- the held-out contexts ---------------------------------------------------------------


@dataclass
class ContextSource:
    """Held-out contexts: token ids [N, T] and their hook-point residuals, read in row batches."""

    tokens: Tensor
    parts: Sequence[tuple[Any, int]]
    """(handle, rows) pieces in order; ``read(handle, rows)`` gives their residual rows."""
    read: Any
    masked_token_ids: Sequence[int] = ()

    def batches(self, rows_per_batch: int) -> Iterator[tuple[slice, Tensor]]:
        offset = 0
        for handle, n in self.parts:
            for start in range(0, n, rows_per_batch):
                stop = min(n, start + rows_per_batch)
                yield slice(offset + start, offset + stop), self.read(handle, slice(start, stop))
            offset += n

    @classmethod
    def in_memory(cls, tokens: Tensor, resid: Tensor, masked_token_ids: Sequence[int] = ()) -> ContextSource:
        return cls(tokens, [(resid, tokens.shape[0])], lambda r, rows: r[rows], masked_token_ids)

    @classmethod
    def from_eval_data(cls, data: EvalData) -> ContextSource:
        parts = data.autointerp_parts()
        tokens = torch.cat([data.rows(f, "tokens", slice(0, n)) for f, n in parts])
        masked = data.manifest["autointerp"]["masked_token_ids"]
        return cls(tokens, parts, lambda f, rows: data.rows(f, "resid", rows), masked)


@dataclass
class Scan:
    n_tokens: int
    """Tokens scanned (masked ones excluded)."""
    counts: Tensor
    """[d_sae] tokens each latent fires on."""
    max_acts: Tensor
    """[d_sae] largest activation of each latent."""
    acts: dict[int, Tensor] = field(default_factory=dict)
    """latent -> [N, T] float32 activations (masked tokens zero), for the latents asked for."""


@torch.inference_mode()
def scan(sae: BaseSAE, source: ContextSource, collect: Sequence[int], sae_batch_tokens: int) -> Scan:
    """One pass of the SAE over the contexts: stats of every latent, activations of ``collect``."""
    n, length = source.tokens.shape
    device = sae.W_enc.device
    mask = ~torch.isin(source.tokens, torch.tensor(list(source.masked_token_ids), dtype=source.tokens.dtype))
    counts = torch.zeros(sae.d_sae, dtype=torch.long, device=device)
    maxes = torch.zeros(sae.d_sae, dtype=torch.float32, device=device)
    index = torch.tensor(list(collect), dtype=torch.long, device=device)
    kept = torch.zeros(n, length, len(collect), dtype=torch.float32)
    for rows, resid in source.batches(max(1, sae_batch_tokens // length)):
        b = rows.stop - rows.start
        codes = sae.encode(resid.to(device).reshape(b * length, -1)).float()
        codes.mul_(mask[rows].reshape(-1, 1).to(device))
        counts += (codes > 0).sum(0)
        torch.maximum(maxes, codes.max(0).values, out=maxes)
        if len(collect):
            kept[rows] = codes.index_select(1, index).reshape(b, length, -1).cpu()
    acts = {int(latent): kept[..., j].contiguous() for j, latent in enumerate(collect)}
    return Scan(int(mask.sum()), counts.cpu(), maxes.cpu(), acts)


# ---- examples of one latent -------------------------------------------------------------


@dataclass
class Excerpt:
    row: int
    start: int
    peak: float
    """The latent's largest activation in the excerpt."""
    source: str
    """"top", "importance" or "random"."""


@dataclass
class LatentExamples:
    latent: int
    explain: list[Excerpt]
    detect: list[Excerpt]
    positives: list[int]
    """Indices into ``detect`` of the excerpts that activate the latent."""
    act_threshold: float
    max_act: float
    """The latent's largest activation on the scanned tokens (its global max)."""
    top_max: list[tuple[int, int]] = field(default_factory=list)
    """(row, column) of the maximally activating token of each top excerpt, strongest excerpt
    first: the input score's data (Arad et al. 2025, sec. 3.1)."""


def _start(center: int, width: int, length: int) -> int:
    return min(max(0, center - width // 2), length - width)


def latent_examples(latent: int, acts: Tensor, cfg: AutointerpConfig, generator: torch.Generator) -> LatentExamples | None:
    """Excerpts for the explainer and the detector from one latent's activations [N, T]
    (None when the latent never fires on the scanned text)."""
    n, length = acts.shape
    width = 2 * cfg.buffer + 1
    flat = acts.reshape(-1)
    n_pos = int((flat > 0).sum())
    if n_pos == 0:
        return None
    max_act = float(flat.max())
    act_threshold = cfg.act_threshold_frac * max_act

    def excerpt(center_flat: int, source: str) -> Excerpt:
        row, col = divmod(int(center_flat), length)
        start = _start(col, width, length)
        return Excerpt(row, start, float(acts[row, start : start + width].max()), source)

    # Top peaks, more than `buffer` apart in a context: each kept peak rules out at most
    # 2 * buffer others, so that many candidates per wanted peak always suffice.
    k_top = cfg.n_top_explain + cfg.n_top_detect
    n_cand = min(n_pos, k_top * (width if cfg.no_overlap else 1))
    values, order = flat.topk(n_cand)
    peaks: list[tuple[int, int]] = []
    for i in order.tolist():
        row, col = divmod(i, length)
        if cfg.no_overlap and any(r == row and abs(c - col) <= cfg.buffer for r, c in peaks):
            continue
        peaks.append((row, col))
        if len(peaks) == k_top:
            break
    top = [excerpt(r * length + c, "top") for r, c in peaks]
    top_max = [(e.row, e.start + int(acts[e.row, e.start : e.start + width].argmax())) for e in top]

    # Importance sampling below the lowest top peak, outside the top excerpts
    # (Efraimidis-Spirakis keys: sampling without replacement, proportional to weight).
    lowest = min(float(acts[r, c]) for r, c in peaks)
    weights = torch.where(acts < lowest, acts, torch.zeros(())).clamp_min(0)
    for e in top:
        weights[e.row, e.start : e.start + width] = 0
    weights = weights.reshape(-1).double().pow(cfg.importance_power)
    candidates = torch.nonzero(weights > 0).flatten()
    k_iw = min(cfg.n_importance_explain + cfg.n_importance_detect, len(candidates))
    importance: list[Excerpt] = []
    if k_iw:
        u = torch.rand(len(candidates), generator=generator, dtype=torch.float64).clamp_min(1e-300)
        keys = u.log() / weights[candidates]
        chosen = candidates[keys.topk(k_iw).indices]
        importance = [excerpt(int(i), "importance") for i in chosen.tolist()]

    rows = torch.randint(0, n, (cfg.n_random_detect,), generator=generator).tolist()
    starts = torch.randint(0, length - width + 1, (cfg.n_random_detect,), generator=generator).tolist()
    random = [Excerpt(r, s, float(acts[r, s : s + width].max()), "random") for r, s in zip(rows, starts)]

    # Random split between explainer and detector (the explainer gets its share first
    # when a rare latent has fewer examples than asked for).
    top = [top[i] for i in torch.randperm(len(top), generator=generator).tolist()]
    importance = [importance[i] for i in torch.randperm(len(importance), generator=generator).tolist()]
    explain = top[: cfg.n_top_explain] + importance[: cfg.n_importance_explain]
    explain.sort(key=lambda e: -e.peak)  # strongest first, as SAEBench shows them
    detect = top[cfg.n_top_explain :] + importance[cfg.n_importance_explain :] + random
    detect = [detect[i] for i in torch.randperm(len(detect), generator=generator).tolist()]
    positives = [k for k, e in enumerate(detect) if is_positive(e, act_threshold, cfg.random_labels)]
    return LatentExamples(latent, explain, detect, positives, act_threshold, max_act, top_max)


def is_positive(excerpt: Excerpt, act_threshold: float, random_labels: str) -> bool:
    """The detector's truth for one excerpt (see the module docstring, step 5)."""
    if excerpt.source == "random" and random_labels == "saebench":
        return False  # SAEBench: random excerpts carry zero activations
    return excerpt.peak > act_threshold


def positives_by_rule(ex: LatentExamples) -> dict[str, list[int]]:
    """Indices of the activating detection excerpts under each truth rule."""
    return {rule: [k for k, e in enumerate(ex.detect) if is_positive(e, ex.act_threshold, rule)] for rule in RANDOM_LABELS}


def score_subset_size(cfg: AutointerpConfig, n_records: int) -> int:
    """How many latents, first by rank, the score averages (``score_latents``; 0 = all)."""
    return n_records if cfg.score_latents == 0 else min(cfg.score_latents, n_records)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None)


def highlight_frac(cfg: AutointerpConfig) -> float:
    """The marking fraction in use: ``highlight_frac``, or its default for the mode."""
    if cfg.highlight_frac is not None:
        return cfg.highlight_frac
    return cfg.act_threshold_frac if cfg.highlight == "global" else EXCERPT_HIGHLIGHT_FRAC


def highlight_threshold(cfg: AutointerpConfig, max_act: float, excerpt_acts: Sequence[float]) -> float:
    """Tokens above this are marked for the explainer (module docstring, step 4)."""
    if cfg.highlight == "global":
        return highlight_frac(cfg) * max_act
    # ">= frac * max" as the earlier rule: the excerpt's strongest token is always marked.
    return math.nextafter(highlight_frac(cfg) * max(excerpt_acts, default=0.0), -math.inf)


def protocol(cfg: AutointerpConfig) -> dict[str, Any]:
    """The named protocol options this summary was computed with (for tables)."""
    return {
        "random_labels": cfg.random_labels,
        "highlight": cfg.highlight,
        "highlight_frac": highlight_frac(cfg),
        "unparsed": cfg.unparsed,
        "act_threshold_frac": cfg.act_threshold_frac,
    }


class TokenText:
    """Token ids -> the text of each token, by incremental decoding (right for byte-level
    BPE and SentencePiece alike: a token's leading space is kept)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, ids: Sequence[int]) -> list[str]:
        pieces, previous = [], ""
        for i in range(len(ids)):
            text = self.tokenizer.decode(list(ids[: i + 1]))
            if text.startswith(previous):
                pieces.append(text[len(previous) :])
            else:  # a multi-byte character completed: re-decode this token alone
                pieces.append(self.tokenizer.decode([ids[i]]))
            previous = text
        return pieces


# ---- the judge -----------------------------------------------------------------------------


def autointerp_judge(judge_cfg: JudgeConfig | Mapping[str, Any] | None) -> Judge:
    """The configured judge, as autointerp uses it (its backend's ``purpose="autointerp"``:
    the offline proxy without its reference LM, which only rates fluency)."""
    return make_judge(check_judge_config(judge_cfg), purpose="autointerp")


reference_model_input = judge_job_inputs
"""Extra inputs of a judge job (``saesteer.judges.config.judge_job_inputs``)."""


# ---- one SAE -------------------------------------------------------------------------------


def _window(tensor: Tensor, e: Excerpt, width: int) -> Tensor:
    return tensor[e.row, e.start : e.start + width]


def autointerp_latents(
    sae: BaseSAE,
    source: ContextSource,
    cfg: AutointerpConfig,
    judge: Judge,
    tokenizer: Any,
    *,
    seed: int = 0,
    sae_batch_tokens: int = 8192,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Autointerp of an SAE already in memory: (one record per sampled latent, summary)."""
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    # Sampling needs every latent's count, so the latents' activations are kept in the same
    # pass for the most likely sample (the first by priority, with room for dead ones);
    # a second pass runs only if too many of those are dead.
    order = sample_latents(range(sae.d_sae), sae.d_sae, seed)
    first = order[: min(sae.d_sae, cfg.n_latents + max(16, cfg.n_latents // 4))]
    stats = scan(sae, source, first, sae_batch_tokens)
    alive = torch.nonzero(stats.counts > cfg.dead_latent_threshold).flatten()
    sampled = sample_latents(alive, cfg.n_latents, seed)
    missing = [i for i in sampled if i not in stats.acts]
    if missing:
        stats.acts.update(scan(sae, source, missing, sae_batch_tokens).acts)
    timings["scan_seconds"] = time.perf_counter() - mark
    if len(sampled) < cfg.n_latents:
        log.warning(
            "only %d alive latents (more than %d activations): fewer than the %d asked for",
            len(sampled),
            cfg.dead_latent_threshold,
            cfg.n_latents,
        )

    mark = time.perf_counter()
    width = 2 * cfg.buffer + 1
    text = TokenText(tokenizer)
    tokens = source.tokens
    norms = sae.W_dec.detach().float().norm(dim=1).cpu()
    examples: list[LatentExamples] = []
    for latent in sampled:
        ex = latent_examples(latent, stats.acts[latent], cfg, latent_generator(latent, seed))
        assert ex is not None, "alive latents fire"
        examples.append(ex)
    explain_contexts = []
    for ex in examples:
        contexts = []
        for e in ex.explain:
            acts = _window(stats.acts[ex.latent], e, width).tolist()
            contexts.append(
                ActivatingContext(text(_window(tokens, e, width).tolist()), acts, highlight_threshold(cfg, ex.max_act, acts))
            )
        explain_contexts.append(contexts)
    detect_contexts = [[ActivatingContext(text(_window(tokens, e, width).tolist())) for e in ex.detect] for ex in examples]
    timings["examples_seconds"] = time.perf_counter() - mark

    mark = time.perf_counter()
    explanations = judge.explain_many(explain_contexts) if examples else []
    asked = [k for k, e in enumerate(explanations) if e.parsed]
    detections = dict(zip(asked, judge.detect_many([(explanations[k].text, detect_contexts[k]) for k in asked]))) if asked else {}
    timings["judge_seconds"] = time.perf_counter() - mark

    kind = explanation_kind(judge)
    n_subset = score_subset_size(cfg, len(examples))
    records = []
    for rank, (ex, expl) in enumerate(zip(examples, explanations)):
        det = detections.get(rank)
        predicted = sorted(det.predicted) if det is not None else []
        n_detect = len(ex.detect)
        parsed = bool(expl.parsed and det is not None and det.parsed)
        scored = bool(n_detect) and (parsed or cfg.unparsed == "predict_none")
        latent = ex.latent
        max_act = float(stats.max_acts[latent])
        by_rule = positives_by_rule(ex)
        accuracy = {
            rule: detection_accuracy(predicted, by_rule[rule], n_detect) if scored else float("nan") for rule in RANDOM_LABELS
        }
        records.append(
            {
                "latent": latent,
                "rank": rank,
                "explanation": expl.text,
                "explanation_kind": kind,
                "judge": judge.kind,
                "judge_model": judge.model_label,
                "judge_prompts": judge.prompts_label,
                "explain_parsed": bool(expl.parsed),
                "detect_parsed": bool(det is not None and det.parsed),
                "n_shown": len(ex.explain),
                "n_top_shown": sum(e.source == "top" for e in ex.explain),
                "n_importance_shown": sum(e.source == "importance" for e in ex.explain),
                "n_detect": n_detect,
                "detect_sources": [e.source for e in ex.detect],
                "detect_positives": list(ex.positives),
                "detect_predicted": predicted,
                "detect_peaks": [e.peak for e in ex.detect],
                "scored": scored,
                "in_score_subset": rank < n_subset,
                "accuracy": accuracy[cfg.random_labels],
                "accuracy_saebench": accuracy["saebench"],
                "accuracy_activation": accuracy["activation"],
                "max_activation": max_act,
                "decoder_norm": float(norms[latent]),
                "m_f": max_act * float(norms[latent]),
                "density": int(stats.counts[latent]) / max(1, stats.n_tokens),
                "n_active_tokens": int(stats.counts[latent]),
                "act_threshold": ex.act_threshold,
                "explain_contexts": [highlight(c) for c in explain_contexts[rank]],
                "detect_contexts": [c.text for c in detect_contexts[rank]],
                "explain_raw": expl.raw,
                "detect_raw": det.raw if det is not None else "",
                "top_token_ids": [int(tokens[r, c]) for r, c in ex.top_max],
                "top_activations": [float(stats.acts[latent][r, c]) for r, c in ex.top_max],
            }
        )
    subset = [r for r in records if r["scored"] and r["in_score_subset"]]
    everyone = [r for r in records if r["scored"]]
    score, score_std = mean_std([r["accuracy"] for r in subset])
    stats_judge = judge.stats()
    usage = {
        k: int(stats_judge.get(k, 0))
        for k in ("api_calls", "cache_hits", "http_requests", "retries", "prompt_tokens", "completion_tokens")
    }
    usage["dollars"] = float(stats_judge.get("dollars", 0.0))
    usage["truncated"] = {str(k): int(v) for k, v in (stats_judge.get("truncated") or {}).items()}
    summary = {
        "judge": judge.kind,
        "judge_model": judge.model_label,
        "judge_prompts": prompts_record(judge),
        "judge_settings": judge_settings(judge),
        "explanation_kind": kind,
        "protocol": protocol(cfg),
        "score": score,
        "score_std": score_std,
        "random_labels": cfg.random_labels,
        "scores_by_random_labels": {rule: mean_std([r[f"accuracy_{rule}"] for r in subset])[0] for rule in RANDOM_LABELS},
        "score_latents": n_subset,
        "score_all_latents": {
            **{rule: mean_std([r[f"accuracy_{rule}"] for r in everyone])[0] for rule in RANDOM_LABELS},
            "n_scored": len(everyone),
        },
        "n_latents": len(records),
        "n_scored": len(subset),
        "n_unparsed": sum(not (r["explain_parsed"] and r["detect_parsed"]) for r in records),
        "n_latents_requested": cfg.n_latents,
        "n_alive": int(len(alive)),
        "d_sae": sae.d_sae,
        "n_tokens_scanned": stats.n_tokens,
        "unparsed": {
            "explain": sum(not r["explain_parsed"] for r in records),
            "detect": sum(r["explain_parsed"] and not r["detect_parsed"] for r in records),
        },
        "usage": usage,
        "timings": timings,
    }
    return records, summary


# ---- outputs -------------------------------------------------------------------------------

PARQUET_SCHEMA = pa.schema(
    [
        ("latent", pa.int64()),
        ("rank", pa.int64()),
        ("explanation", pa.string()),
        ("explanation_kind", pa.string()),
        ("judge", pa.string()),
        ("judge_model", pa.string()),
        ("judge_prompts", pa.string()),
        ("explain_parsed", pa.bool_()),
        ("detect_parsed", pa.bool_()),
        ("n_shown", pa.int64()),
        ("n_top_shown", pa.int64()),
        ("n_importance_shown", pa.int64()),
        ("n_detect", pa.int64()),
        ("detect_sources", pa.list_(pa.string())),
        ("detect_positives", pa.list_(pa.int64())),
        ("detect_predicted", pa.list_(pa.int64())),
        ("detect_peaks", pa.list_(pa.float64())),
        ("scored", pa.bool_()),
        ("in_score_subset", pa.bool_()),
        ("accuracy", pa.float64()),
        ("accuracy_saebench", pa.float64()),
        ("accuracy_activation", pa.float64()),
        ("max_activation", pa.float64()),
        ("decoder_norm", pa.float64()),
        ("m_f", pa.float64()),
        ("density", pa.float64()),
        ("n_active_tokens", pa.int64()),
        ("act_threshold", pa.float64()),
        ("explain_contexts", pa.list_(pa.string())),
        ("detect_contexts", pa.list_(pa.string())),
        ("explain_raw", pa.string()),
        ("detect_raw", pa.string()),
        ("top_token_ids", pa.list_(pa.int64())),
        ("top_activations", pa.list_(pa.float64())),
    ]
)


def write_table(records: list[dict[str, Any]], path: Path) -> None:
    write_parquet_atomic(records, PARQUET_SCHEMA, path)


def check_autointerp_data(data: EvalData, cfg: EvalConfig) -> None:
    stored = (data.manifest["identity"]["eval"] or {}).get("autointerp")
    if stored != cfg.identity()["autointerp"]:
        raise EvalDataError(
            f"{data.root / MANIFEST_NAME} was made with eval.autointerp {stored}, the config says "
            f"{cfg.identity()['autointerp']}; rerun prepare_eval_data"
        )


def load_tokenizer(model_json: Path) -> Any:
    from transformers import AutoTokenizer

    from saesteer.models import ModelError

    try:
        local_dir = json.loads(Path(model_json).read_text())["local_dir"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelError(f"{model_json} is not a prepared-model record ({exc}); rerun prepare_model") from exc
    return AutoTokenizer.from_pretrained(local_dir)


def run_autointerp(
    *,
    sae_dir: Path,
    eval_dir: Path,
    eval_cfg: dict[str, Any],
    judge_cfg: JudgeConfig | Mapping[str, Any] | None,
    out_parquet: Path,
    out_json: Path,
    model: str,
    arch: str,
    target_l0: int,
    model_json: Path | None = None,
    tokenizer: Any = None,
    judge: Judge | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The workflow's per-SAE job: autointerp of the SAE in ``sae_dir`` on its model's eval
    data; writes the per-latent table ``out_parquet`` and the summary ``out_json``.
    ``tokenizer`` and ``judge`` override the ones of ``model_json`` and ``judge_cfg`` (tests)."""
    from saesteer.devices import resolve_device
    from saesteer.evals.interp import open_sae_eval
    from saesteer.sae.saelens_io import SAELENS_WEIGHTS

    started = time.perf_counter()
    sae_dir = Path(sae_dir)
    cfg, sae, sae_cfg, data = open_sae_eval(sae_dir, eval_dir, eval_cfg, threads)
    check_autointerp_data(data, cfg)
    if tokenizer is None:
        if model_json is None:
            raise AutointerpError("run_autointerp needs model_json or a tokenizer")
        tokenizer = load_tokenizer(model_json)
    own_judge = judge is None
    judge = judge or autointerp_judge(judge_cfg)
    sae = sae.to(resolve_device(cfg.device))
    source = ContextSource.from_eval_data(data)
    load_seconds = time.perf_counter() - started
    log.info(
        "autointerp of %s: %d latents of %d, %d contexts x %d tokens, judge %s (%s)",
        sae_dir,
        cfg.autointerp.n_latents,
        sae.d_sae,
        source.tokens.shape[0],
        source.tokens.shape[1],
        judge.kind,
        judge.model_label,
    )
    try:
        records, summary = autointerp_latents(
            sae, source, cfg.autointerp, judge, tokenizer, seed=cfg.seed, sae_batch_tokens=cfg.sae_batch_tokens
        )
    finally:
        if own_judge:
            judge.close()
    summary["timings"] = {"load_seconds": load_seconds, **summary["timings"], "total_seconds": time.perf_counter() - started}
    manifest_path = data.root / MANIFEST_NAME
    report = finite_json(
        {
            "autointerp_version": AUTOINTERP_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "hook_name": data.manifest["hook_name"],
            "sae": {"path": str(sae_dir), "d_sae": sae.d_sae, "weights_sha256": sha256_file(sae_dir / SAELENS_WEIGHTS)},
            **summary,
            "config": {**asdict(cfg.autointerp), "seed": cfg.seed},
            "eval_data": {
                "fingerprint": data.manifest["fingerprint"],
                "manifest": str(manifest_path),
                "manifest_sha256": sha256_file(manifest_path),
                "n_contexts": int(source.tokens.shape[0]),
                "context_length": int(source.tokens.shape[1]),
            },
            "table": str(out_parquet),
        }
    )
    validate_summary(report)
    write_table(records, Path(out_parquet))
    write_json_atomic(out_json, report)
    log.info(
        "%s/%s/l0-%s: autointerp score %s over %d of %d latents (%s), unparsed %s, usage %s (%.1f s)",
        model,
        arch,
        target_l0,
        report["score"],
        report["n_scored"],
        report["n_latents"],
        report["judge_model"],
        report["unparsed"],
        report["usage"],
        report["timings"]["total_seconds"],
    )
    return report

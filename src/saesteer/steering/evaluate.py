"""Steering evaluation of one SAE: the AxBench protocol (docs/method.md, "Steering utility").

1. **Concepts.** The first ``steering.n_concepts`` latents of ``autointerp.parquet`` by
   ``rank`` (autointerp's deterministic, nested sample: Concept100 with 100) whose
   explanation parsed; each explanation is its concept. Or a fixed ``steering.concepts``
   list: each entry names its latent, or gets the autointerp-explained latent whose
   explanation is most similar to it (MiniLM cosine).
2. **Instructions.** Per concept, ``n_instructions`` from the pool
   (``instructions.concept_instructions``): ``n_selection`` pick the factor, the rest are
   held out.
3. **Intervention.** ``x <- x + factor * m_f * v_f`` on the output of decoder block
   ``layer`` (the SAE's hook point ``blocks.{layer}.hook_resid_post``), at every position,
   prompt included; ``v_f`` is the unit decoder row, ``m_f`` autointerp's ``m_f`` (the
   latent's largest activation on held-out text times its decoder norm: residual units).
   Where ``m_f`` is unknown, ``steering.m_f_fallback`` (50, AxBench's) is used and the row
   says so (``m_f_source = "fallback"``). Decoder directions, never SAE reconstructions of
   a steering vector (Mayne et al. 2024; docs/method.md, "Steering vectors").
4. **Generation** (``generate.py``): the prompt in the model's ``prompt_format``
   (``saesteer.prompting``: ``base`` = plain instruction text after BOS, ``chat`` = the
   tokenizer's chat template, generation stopped at its turn markers), up to
   ``max_new_tokens`` at ``temperature``, every (concept, factor, instruction) row batched
   with its own vector and its own seed, derived from (seed, kind, concept, factor,
   instruction).
5. **Baselines** on the held-out instructions: ``unsteered`` (no intervention) and
   ``prompted`` (the concept asked for in the prompt: ``prompt_baseline_template``,
   AxBench's prompt baseline). Their instruction rating is against the original instruction.
6. **Ratings** from the configured judge (concept, instruction, fluency in [0, 2]), and
   the scores of ``score.py``: factor = argmax on the selection half, the SAE's score = the
   mean over concepts of the held-out score there, in both aggregation orders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from saesteer.io import check_schema, finite_json, read_checked_json, sha256_file, write_json_atomic, write_parquet_atomic
from saesteer.judges import (
    Judge,
    SteeringItem,
    check_single_judge,
    harmonic_mean,
    judge_settings,
    prompts_record,
)
from saesteer.rule_jobs import SaeFiles
from saesteer.schemas import schema_path
from saesteer.steering.config import SteeringConfig
from saesteer.steering.context import SteeringContext
from saesteer.steering.generate import GenRow, GenStats, SteeringModel, decode
from saesteer.steering.instructions import concept_instructions, read_instruction_pool
from saesteer.steering.score import STEERED, concept_scores, sae_scores

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("steering.schema.json")
STEERING_VERSION = 1


class SteeringError(RuntimeError):
    """Steering cannot run on these inputs, or its output does not match the schema."""


# ---- concepts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    concept_id: int
    """Index in this SAE's concept list (keys the instruction sample and the seeds)."""
    concept: str
    latent: int
    m_f: float
    m_f_source: str
    """"autointerp" (the latent's measured m_f) or "fallback" (steering.m_f_fallback)."""
    latent_source: str
    """"autointerp" (Concept100), "config" (the config named the latent), "embedding_match"."""
    rank: int | None = None


def valid_m_f(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def load_concepts(table: Sequence[Mapping[str, Any]], cfg: SteeringConfig, embedder: Any = None) -> list[Concept]:
    """Concepts of one SAE from its autointerp rows (dicts with latent, rank, explanation,
    explain_parsed, m_f), or from ``cfg.concepts``."""
    rows = sorted(table, key=lambda r: int(r["rank"]))
    explained = [r for r in rows if r.get("explain_parsed", True) and str(r.get("explanation") or "").strip()]
    by_latent = {int(r["latent"]): r for r in rows}

    def m_f(latent: int) -> tuple[float, str]:
        value = (by_latent.get(latent) or {}).get("m_f")
        return (float(value), "autointerp") if valid_m_f(value) else (float(cfg.m_f_fallback), "fallback")

    out: list[Concept] = []
    if not cfg.concepts:
        if len(explained) < cfg.n_concepts:
            log.warning(
                "only %d explained latents in the autointerp table: fewer than the %d concepts asked for",
                len(explained),
                cfg.n_concepts,
            )
        for k, r in enumerate(explained[: cfg.n_concepts]):
            value, source = m_f(int(r["latent"]))
            out.append(Concept(k, str(r["explanation"]), int(r["latent"]), value, source, "autointerp", int(r["rank"])))
        return out
    unmatched = [c for c in cfg.concepts if c.latent is None]
    matched: dict[str, int] = {}
    if unmatched:
        if not explained:
            raise SteeringError("steering.concepts without a latent need autointerp explanations to match against; none parsed")
        if embedder is None:
            from saesteer.judges.offline import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        sims = embedder.encode([c.concept for c in unmatched]) @ embedder.encode([str(r["explanation"]) for r in explained]).T
        for c, row in zip(unmatched, sims.argmax(1).tolist()):
            matched[c.concept] = int(explained[row]["latent"])
    for k, c in enumerate(cfg.concepts):
        latent = c.latent if c.latent is not None else matched[c.concept]
        value, source = m_f(int(latent))
        rank = by_latent.get(int(latent), {}).get("rank")
        out.append(
            Concept(k, c.concept, int(latent), value, source, "config" if c.latent is not None else "embedding_match", rank)
        )
    return out


# ---- the generation plan -------------------------------------------------------------------


def row_seed(seed: int, kind: str, concept_id: int, factor: float | None, instruction_id: int) -> int:
    """The seed of one row's sampling noise: a keyed hash of what defines the row."""
    key = f"steering-row:{seed}:{kind}:{concept_id}:{'none' if factor is None else repr(float(factor))}:{instruction_id}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def build_plan(concepts: Sequence[Concept], pool: Sequence[str], cfg: SteeringConfig) -> list[dict[str, Any]]:
    """Every generation to make, as records (generation and ratings filled in later)."""
    plan = []
    for c in concepts:
        picks = concept_instructions(len(pool), c.concept_id, cfg.n_instructions, cfg.n_selection, cfg.seed)
        base = {
            "concept_id": c.concept_id,
            "concept": c.concept,
            "latent": c.latent,
            "m_f": c.m_f,
            "m_f_source": c.m_f_source,
        }
        for factor in cfg.factors:
            for iid, split in picks:
                plan.append(
                    {
                        **base,
                        "kind": STEERED,
                        "factor": float(factor),
                        "coef": float(factor) * c.m_f,
                        "instruction_id": iid,
                        "instruction": pool[iid],
                        "split": split,
                        "prompt": pool[iid],
                        "seed": row_seed(cfg.seed, STEERED, c.concept_id, factor, iid),
                    }
                )
        for kind in cfg.baselines:
            for iid, split in picks:
                if split != "heldout":
                    continue
                prompt = (
                    pool[iid]
                    if kind == "unsteered"
                    else cfg.prompt_baseline_template.format(instruction=pool[iid], concept=c.concept)
                )
                plan.append(
                    {
                        **base,
                        "kind": kind,
                        "factor": None,
                        "coef": 0.0,
                        "instruction_id": iid,
                        "instruction": pool[iid],
                        "split": split,
                        "prompt": prompt,
                        "seed": row_seed(cfg.seed, kind, c.concept_id, None, iid),
                    }
                )
    return plan


def unit_directions(W_dec: Tensor, latents: Sequence[int]) -> Tensor:
    """[n, d] unit decoder rows of ``latents``."""
    rows = W_dec.detach().float()[torch.tensor(list(latents), dtype=torch.long)]
    return torch.nn.functional.normalize(rows, dim=-1)


# ---- generate and rate ---------------------------------------------------------------------


def steer_and_rate(
    steer: SteeringModel,
    directions: Tensor,
    concepts: Sequence[Concept],
    pool: Sequence[str],
    cfg: SteeringConfig,
    judge: Judge,
    plan: list[dict[str, Any]] | None = None,
    direction_of: Callable[[dict[str, Any]], int] | None = None,
) -> tuple[list[dict[str, Any]], GenStats, dict[str, float]]:
    """Generate every row of the plan and rate it: (records, generation stats, timings).
    ``directions[k]`` is the unit direction of ``concepts[k]``. ``plan`` (default
    ``build_plan``) and ``direction_of`` (a steered row -> its index in ``directions``) let a
    caller steer several vectors per concept in one batch (steering_vectors)."""
    timings: dict[str, float] = {}
    plan = build_plan(concepts, pool, cfg) if plan is None else plan
    position = {c.concept_id: k for k, c in enumerate(concepts)}
    direction_of = direction_of or (lambda p: position[p["concept_id"]])
    cache: dict[str, tuple[int, ...]] = {}

    def ids(text: str) -> tuple[int, ...]:
        if text not in cache:
            cache[text] = tuple(steer.prompt(text, cfg.base_prompt_template))
        return cache[text]

    rows = [GenRow(ids(p["prompt"]), direction_of(p) if p["kind"] == STEERED else -1, p["coef"], p["seed"]) for p in plan]
    n_total = len(rows)
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            log.info("generated %d / %d rows", done, total)

    device = next(steer.model.parameters()).device
    generated, stats = steer.generate(
        rows,
        directions.to(device),
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        batch_size=cfg.batch_size,
        adaptive=device.type == "cuda",
        progress=progress,
    )
    timings["generate_seconds"] = stats.seconds
    log.info(
        "%d generations, %d new tokens in %.1f s (%.1f tokens/s, batch %d)",
        n_total,
        stats.new_tokens,
        stats.seconds,
        stats.tokens_per_s,
        stats.batch_size,
    )

    mark = time.perf_counter()
    texts = [decode(steer.tokenizer, g.token_ids) for g in generated]
    ratings = judge.rate([SteeringItem(p["concept"], p["instruction"], t) for p, t in zip(plan, texts)])
    timings["judge_seconds"] = time.perf_counter() - mark
    records = []
    for p, g, text, r in zip(plan, generated, texts, ratings):
        records.append(
            {
                **p,
                "text": text,
                "n_new_tokens": len(g.token_ids),
                "finished": g.finished,
                "concept_rating": float(r.concept),
                "instruction_rating": float(r.instruction),
                "fluency_rating": float(r.fluency),
                "score": float(harmonic_mean(r.concept, r.instruction, r.fluency)),
                "n_unparsed": int(r.n_unparsed),
                "judge": r.judge,
                "judge_model": r.judge_model,
                "judge_prompts": r.judge_prompts,
                "judge_details": json.dumps(finite_json(dict(r.details)), default=str),
            }
        )
    if records:
        check_single_judge(records)
    return records, stats, timings


# ---- outputs -------------------------------------------------------------------------------

PARQUET_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("concept_id", pa.int64()),
        ("concept", pa.string()),
        ("latent", pa.int64()),
        ("factor", pa.float64()),
        ("coef", pa.float64()),
        ("m_f", pa.float64()),
        ("m_f_source", pa.string()),
        ("instruction_id", pa.int64()),
        ("instruction", pa.string()),
        ("split", pa.string()),
        ("prompt", pa.string()),
        ("seed", pa.int64()),
        ("text", pa.string()),
        ("n_new_tokens", pa.int64()),
        ("finished", pa.bool_()),
        ("concept_rating", pa.float64()),
        ("instruction_rating", pa.float64()),
        ("fluency_rating", pa.float64()),
        ("score", pa.float64()),
        ("n_unparsed", pa.int64()),
        ("judge", pa.string()),
        ("judge_model", pa.string()),
        ("judge_prompts", pa.string()),
        ("judge_details", pa.string()),
    ]
)


def write_generations(records: list[dict[str, Any]], path: Path) -> None:
    write_parquet_atomic(records, PARQUET_SCHEMA, path)


def validate_score(report: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    check_schema(report, schema_path, "steering score", SteeringError)


def read_score(path: Path) -> dict[str, Any]:
    """A steering score.json, validated."""
    return read_checked_json(path, SCHEMA_PATH, "steering score", SteeringError, "steer_eval")


def hook_layer(sae_cfg: Mapping[str, Any]) -> int:
    """The block whose output the SAE reads, from its ``hook_name`` (blocks.{L}.hook_resid_post)."""
    name = (sae_cfg.get("metadata") or {}).get("hook_name") or sae_cfg.get("hook_name") or ""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", name)
    if not m:
        raise SteeringError(f"SAE hook {name!r}: steering supports blocks.{{L}}.hook_resid_post hook points")
    return int(m.group(1))


def run_steer_eval(ctx: SteeringContext, sae_files: SaeFiles) -> dict[str, Any]:
    """The workflow's per-SAE job: steer the SAE ``sae_files`` (inputs ``sae_cfg``,
    ``autointerp``; outputs ``generations``, ``concepts``, ``score``) with the job's
    ``ctx`` (its steering config, judge, instructions, prompt format and model)."""
    from saesteer.devices import resolve_device
    from saesteer.evals.interp import load_sae
    from saesteer.sae.saelens_io import SAELENS_WEIGHTS

    started = time.perf_counter()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    cfg = ctx.steering
    model, arch, target_l0 = sae_files.cell.model, sae_files.cell.arch, sae_files.cell.target_l0
    autointerp_table = sae_files.inputs["autointerp"]
    out_generations, out_concepts, out_score = (sae_files.outputs[k] for k in ("generations", "concepts", "score"))
    instructions, model_json, prompt_format = ctx.instructions, ctx.model_json, ctx.needs("prompt_format")
    sae_dir = sae_files.sae_dir
    sae, sae_cfg = load_sae(sae_dir)
    layer = hook_layer(sae_cfg)
    pool = read_instruction_pool(Path(instructions), cfg.instructions)
    table = pq.read_table(autointerp_table).to_pylist()
    concepts = load_concepts(table, cfg)
    if not concepts:
        raise SteeringError(f"{autointerp_table}: no explained latent to steer with")
    directions = unit_directions(sae.W_dec, [c.latent for c in concepts])
    record = json.loads(Path(model_json).read_text())
    if record.get("hook_name") and (sae_cfg.get("metadata") or {}).get("hook_name") not in (None, record["hook_name"]):
        raise SteeringError(
            f"SAE hook {(sae_cfg.get('metadata') or {}).get('hook_name')} differs from the model's {record['hook_name']}"
        )
    device = resolve_device(cfg.device)
    lm, tokenizer, judge = ctx.loaded()
    steer = SteeringModel.wrap(lm, tokenizer, layer, prompt_format)
    load_seconds = time.perf_counter() - started
    n_fallback = sum(c.m_f_source == "fallback" for c in concepts)
    if n_fallback:
        log.warning(
            "%d of %d concepts have no measured m_f: steering them with m_f = %g (AxBench's fallback)",
            n_fallback,
            len(concepts),
            cfg.m_f_fallback,
        )
    log.info(
        "steering %s at block %d: %d concepts x %d factors x %d instructions (+ baselines %s), %d new tokens, judge %s (%s)",
        sae_dir,
        layer,
        len(concepts),
        len(cfg.factors),
        cfg.n_instructions,
        list(cfg.baselines),
        cfg.max_new_tokens,
        judge.kind,
        judge.model_label,
    )
    records, stats, timings = steer_and_rate(steer, directions, concepts, pool, cfg, judge)
    usage_raw = judge.stats()
    per_concept = concept_scores(records, cfg.factors, cfg.baselines)
    for c, rec in zip(concepts, per_concept):
        rec.update(latent_source=c.latent_source, autointerp_rank=c.rank)
    scores = sae_scores(per_concept, cfg.factors, cfg.baselines)
    usage = {
        k: int(usage_raw.get(k, 0))
        for k in ("api_calls", "cache_hits", "http_requests", "retries", "prompt_tokens", "completion_tokens")
    }
    usage["dollars"] = float(usage_raw.get("dollars", 0.0))
    usage["truncated"] = {str(k): int(v) for k, v in (usage_raw.get("truncated") or {}).items()}
    total = time.perf_counter() - started
    report = finite_json(
        {
            "steering_version": STEERING_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "sae": {"path": str(sae_dir), "d_sae": int(sae.d_sae), "weights_sha256": sha256_file(sae_dir / SAELENS_WEIGHTS)},
            "judge": records[0]["judge"],
            "judge_model": records[0]["judge_model"],
            "judge_prompts": prompts_record(judge),
            "judge_settings": judge_settings(judge),
            "score": scores["axbench"]["score"],
            "score_arad": scores["arad"]["score"],
            "axbench": scores["axbench"],
            "arad": scores["arad"],
            "baselines": scores["baselines"],
            "by_factor": scores["by_factor"],
            "n_concepts": len(concepts),
            "n_concepts_requested": cfg.n_concepts_used,
            "concept_source": "config" if cfg.concepts else "autointerp",
            "n_m_f_fallback": n_fallback,
            "n_generations": len(records),
            "n_unparsed": sum(r["n_unparsed"] for r in records),
            "generation": {
                "device": str(device),
                "dtype": cfg.model_dtype,
                "prompt_format": steer.prompt_format,
                "temperature": cfg.temperature,
                "top_k": cfg.top_k,
                "stop_token_ids": sorted(steer.stop),
                "new_tokens": stats.new_tokens,
                "prompt_tokens": stats.prompt_tokens,
                "forward_tokens": stats.forward_tokens,
                "tokens_per_s": stats.tokens_per_s,
                "batch_size": stats.batch_size,
                "oom_retries": stats.oom_retries,
                "finished_fraction": sum(r["finished"] for r in records) / max(1, len(records)),
            },
            "usage": usage,
            "timings": {"load_seconds": load_seconds, **timings, "total_seconds": total},
            "config": cfg.as_dict(),
            "instructions": {"path": str(instructions), "n_pool": len(pool), "sha256": sha256_file(instructions)},
            "autointerp_table": {"path": str(autointerp_table), "sha256": sha256_file(autointerp_table)},
            "outputs": {"generations": str(out_generations), "concepts": str(out_concepts)},
        }
    )
    validate_score(report)
    write_generations(records, Path(out_generations))
    write_json_atomic(
        out_concepts, finite_json({"model": model, "arch": arch, "target_l0": int(target_l0), "concepts": per_concept})
    )
    write_json_atomic(out_score, report)
    log.info(
        "%s/%s/l0-%s: steering score %s (AxBench order), %s (Arad order); unsteered %s, prompted %s; %d concepts, %.1f s",
        model,
        arch,
        target_l0,
        report["score"],
        report["score_arad"],
        (report["baselines"].get("unsteered") or {}).get("axbench"),
        (report["baselines"].get("prompted") or {}).get("axbench"),
        len(concepts),
        total,
    )
    return report

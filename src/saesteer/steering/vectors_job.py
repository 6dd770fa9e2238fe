"""The ``steering_vectors`` job of one SAE (docs/steering-vectors.md).

For each concept steer_eval steered (its latent f, explanation and m_f):

1. **The vector.** DiffMean from the held-out autointerp contexts of the model's eval data
   (the residuals at the SAE's hook stored by prepare_eval_data, the SAE's codes recomputed
   as autointerp computes them): ``vectors.strong_positions`` of latent f minus
   ``vectors.random_positions``; or the user's vector (``steering_vectors.vectors_file``).
2. **Diagnostics** (``vectors.mayne_diagnostics``) and **decompositions**
   (``vectors.decompose``): naive ``decode(encode(v)) - decode(0)``, signed k-term OMP fit.
3. **Steering** with each method's vector, unit-normalised and added at ``factor * m_f``
   (the norm the latent's own steering vector has at that factor), with steer_eval's
   machinery (``evaluate.steer_and_rate``), config, judge, instructions and row seeds (the
   seed of a (concept, factor, instruction) row is the latent's own: the comparison is
   paired). Baselines are steer_eval's (read from its score.json, not regenerated).
4. **Scores** per method as steer_eval's (``score.concept_scores``/``sae_scores``), the latent's
   score over the same concepts from steer_eval's concepts.json, and the shares:
   latent / DiffMean, naive / DiffMean, signed / DiffMean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from saesteer.io import check_schema, finite_json, read_checked_json, sha256_file, write_json_atomic, write_parquet_atomic
from saesteer.rule_jobs import SaeFiles
from saesteer.schemas import schema_path
from saesteer.steering.config import SteeringConfig
from saesteer.steering.context import SteeringContext
from saesteer.steering.evaluate import PARQUET_SCHEMA as STEERING_PARQUET_SCHEMA
from saesteer.steering.evaluate import Concept, SteeringError, build_plan, read_score, steer_and_rate
from saesteer.steering.score import ORDERS, concept_scores, sae_scores
from saesteer.steering.vectors import (
    RunningTop,
    VectorError,
    decompose,
    diffmean,
    load_vector_file,
    mayne_diagnostics,
    random_positions,
    unit,
)
from saesteer.steering.vectors_config import SteeringVectorsConfig

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("steering_vectors.schema.json")
VECTORS_VERSION = 1
LATENT = "latent"
"""The SAE latent's own steering (steer_eval), the reference every method is set beside."""

GENERATIONS_SCHEMA = pa.schema([("method", pa.string()), *STEERING_PARQUET_SCHEMA])
CONCEPTS_SCHEMA = pa.schema(
    [
        ("concept_id", pa.int64()),
        ("concept", pa.string()),
        ("latent", pa.int64()),
        ("vector_source", pa.string()),
        ("n_positive", pa.int64()),
        ("norm", pa.float64()),
        ("norm_percentile", pa.float64()),
        ("overlap_encode_v_with_encode_0", pa.float64()),
        ("overlap_in_distribution_with_encode_0", pa.float64()),
        ("bias_dominated", pa.bool_()),
        ("cos_with_decoder_row", pa.float64()),
        ("projection_rank_of_latent", pa.int64()),
        ("negative_projection_share", pa.float64()),
        ("signed_explained", pa.float64()),
        ("signed_negative_share", pa.float64()),
        ("naive_explained_rescaled", pa.float64()),
        ("naive_cos_with_v", pa.float64()),
        *[(f"score_{m}", pa.float64()) for m in (LATENT, "diffmean", "naive", "signed")],
        *[(f"score_{m}_arad", pa.float64()) for m in (LATENT, "diffmean", "naive", "signed")],
    ]
)


class VectorsJobError(RuntimeError):
    """The job cannot run on these inputs, or its output does not match the schema."""


def _explanations(table: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    return {int(r["latent"]): str(r["explanation"]) for r in table if r.get("explain_parsed", True) and r.get("explanation")}


def _with_explanations(items: list[dict[str, Any]], explained: Mapping[int, str]) -> list[dict[str, Any]]:
    return [{**item, "explanation": explained.get(int(item["latent"]))} for item in items]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _share(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


# ---- the vectors -----------------------------------------------------------------------------


@torch.inference_mode()
def held_out_vectors(
    sae: Any, source: Any, latents: Sequence[int], cfg: SteeringVectorsConfig, sae_batch_tokens: int
) -> dict[str, Any]:
    """DiffMean of every latent from the held-out contexts ``source`` (autointerp's
    ``ContextSource``, its mask of BOS/EOS/padding): the positive positions, their means, the
    negative (random) positions and mean, and the sorted activation norms at every unmasked
    position. Two passes, memory bounded by the positions kept (the paper's 2M held-out
    tokens never sit in memory at once): codes and norms first (streamed top activations per
    latent, ``vectors.RunningTop``), then the residuals at the chosen positive positions."""
    n, length = source.tokens.shape
    mask = ~torch.isin(source.tokens, torch.tensor(list(source.masked_token_ids), dtype=source.tokens.dtype))
    flat_mask = mask.reshape(-1)
    negatives = random_positions(mask, cfg.n_negative, torch.Generator().manual_seed(cfg.seed))
    device = sae.W_enc.device
    index = torch.tensor(list(latents), dtype=torch.long, device=device)
    top = RunningTop(len(latents), cfg.n_positive)
    norms = torch.zeros(n, length, dtype=torch.float32)
    negative_sum: torch.Tensor | None = None
    rows_per_batch = max(1, sae_batch_tokens // length)
    for rows, resid in source.batches(rows_per_batch):
        b = rows.stop - rows.start
        flat = resid.reshape(b * length, -1)
        start = rows.start * length
        codes = sae.encode(flat.to(device)).float().index_select(1, index)
        codes.mul_(flat_mask[start : start + b * length].reshape(-1, 1).to(device))
        top.update(codes, torch.arange(start, start + b * length))
        norms[rows] = resid.float().norm(dim=-1)
        local = negatives[(negatives >= start) & (negatives < start + b * length)] - start
        part = flat[local].double().sum(0)
        negative_sum = part if negative_sum is None else negative_sum + part
    assert negative_sum is not None
    positives = [top.strong(j, cfg.min_activation_frac) for j in range(len(latents))]
    # Second pass: the residuals at the positive positions, summed per latent.
    every = torch.cat(positives) if positives else torch.zeros(0, dtype=torch.long)
    owner = torch.cat([torch.full((len(p),), j, dtype=torch.long) for j, p in enumerate(positives)]) if positives else every
    sums = torch.zeros(len(latents), negative_sum.shape[0], dtype=torch.float64)
    if len(every):
        for rows, resid in source.batches(rows_per_batch):
            start, stop = rows.start * length, rows.stop * length
            inside = (every >= start) & (every < stop)
            if bool(inside.any()):
                flat = resid.reshape((rows.stop - rows.start) * length, -1)
                sums.index_add_(0, owner[inside], flat[every[inside] - start].double())
    counts = torch.tensor([max(1, len(p)) for p in positives], dtype=torch.float64)[:, None]
    return {
        "positives": positives,
        "negatives": negatives,
        "positive_means": (sums / counts).float(),
        "negative_mean": (negative_sum / max(1, len(negatives))).float(),
        "sorted_norms": norms[mask].sort().values,
        "n_positions": int(mask.sum()),
    }


# ---- the job ---------------------------------------------------------------------------------


def _steering_concepts(path: Path, cfg: SteeringVectorsConfig) -> list[dict[str, Any]]:
    try:
        concepts = json.loads(Path(path).read_text())["concepts"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VectorsJobError(f"{path} is not a steer_eval concepts.json ({exc}); rerun steer_eval") from exc
    return concepts[: cfg.max_concepts] if cfg.max_concepts else concepts


def _check_same_steering(score: Mapping[str, Any], cfg: SteeringConfig, path: Path) -> None:
    stored = score.get("config")
    current = json.loads(json.dumps(cfg.as_dict()))
    if stored != current:
        diff = sorted(k for k in set(stored or {}) | set(current) if (stored or {}).get(k) != current.get(k))
        raise VectorsJobError(f"{path} was made with another steering config (differs in {diff}); rerun steer_eval")


def method_scores(records: Sequence[Mapping[str, Any]], factors: Sequence[float]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-concept scores, SAE scores) of one method's rated rows, exactly as steer_eval's."""
    per_concept = concept_scores(records, factors, ())
    return per_concept, sae_scores(per_concept, factors, ())


def summarise(
    latent_concepts: Sequence[Mapping[str, Any]], by_method: Mapping[str, Sequence[Mapping[str, Any]]], methods: Sequence[str]
) -> dict[str, Any]:
    """Per order: the mean held-out score of the latent and of each method over the same
    concepts, the shares of DiffMean's score, and the two gaps."""
    out: dict[str, Any] = {}
    for order in ORDERS:
        scores = {LATENT: _mean([c[order]["heldout_score"] for c in latent_concepts])}
        for m in methods:
            scores[m] = _mean([c[order]["heldout_score"] for c in by_method[m]])
        ref = scores.get("diffmean")
        out[order] = {
            "scores": scores,
            "share_of_diffmean": {k: _share(v, ref) for k, v in scores.items() if k != "diffmean"},
            "diffmean_minus_latent": None if ref is None or scores[LATENT] is None else ref - scores[LATENT],
            "signed_minus_naive": (
                scores["signed"] - scores["naive"]
                if scores.get("signed") is not None and scores.get("naive") is not None
                else None
            ),
        }
    return out


def run_steering_vectors(ctx: SteeringContext, sae_files: SaeFiles) -> dict[str, Any]:
    """The workflow's per-SAE job: the SAE ``sae_files`` (inputs ``sae_cfg``, ``autointerp``,
    ``steering_concepts``, ``steering_score``; outputs ``score``, ``concepts``, ``generations``,
    ``vectors``) against DiffMean vectors, with the job's ``ctx`` (steering and
    ``steering_vectors`` configs, eval data and block, judge, instructions, model)."""
    from safetensors.torch import save_file

    from saesteer.devices import resolve_device
    from saesteer.evals.autointerp import ContextSource, check_autointerp_data
    from saesteer.evals.interp import open_sae_eval
    from saesteer.sae.saelens_io import SAELENS_WEIGHTS
    from saesteer.steering.evaluate import hook_layer
    from saesteer.steering.generate import SteeringModel
    from saesteer.steering.instructions import read_instruction_pool

    started = time.perf_counter()
    scfg, vcfg = ctx.steering, ctx.needs("vectors")
    cell, threads = sae_files.cell, ctx.threads
    model, arch, target_l0, sparsity = cell.model, cell.arch, cell.target_l0, cell.sparsity
    sae_dir, autointerp_table = sae_files.sae_dir, sae_files.inputs["autointerp"]
    steering_concepts, steering_score = sae_files.inputs["steering_concepts"], sae_files.inputs["steering_score"]
    out_score, out_concepts, out_generations, out_vectors = (
        sae_files.outputs[k] for k in ("score", "concepts", "generations", "vectors")
    )
    eval_dir, eval_cfg, instructions = ctx.needs("eval_dir"), ctx.needs("eval_cfg"), ctx.instructions
    base = read_score(Path(steering_score))
    _check_same_steering(base, scfg, Path(steering_score))
    latent_concepts = _steering_concepts(Path(steering_concepts), vcfg)
    if not latent_concepts:
        raise VectorsJobError(f"{steering_concepts}: steer_eval steered no concept")
    ecfg, sae, sae_cfg, data = open_sae_eval(Path(sae_dir), Path(eval_dir), dict(eval_cfg), threads)
    check_autointerp_data(data, ecfg)
    layer = hook_layer(sae_cfg)
    device = resolve_device(vcfg.device)
    sae = sae.to(device)
    table = pq.read_table(autointerp_table).to_pylist()
    explained = _explanations(table)
    latents = [int(c["latent"]) for c in latent_concepts]

    # 1. the vectors
    mark = time.perf_counter()
    held = held_out_vectors(sae, ContextSource.from_eval_data(data), latents, vcfg, ecfg.sae_batch_tokens)
    user_path = vcfg.vectors_path(model, arch, sparsity)
    user = load_vector_file(Path(user_path), sae.d_in, latents) if user_path else {}
    vectors: dict[str, list[torch.Tensor]] = {m: [] for m in ("diffmean", "naive", "signed")}
    records: list[dict[str, Any]] = []
    for k, c in enumerate(latent_concepts):
        latent = int(c["latent"])
        n_pos = len(held["positives"][k])
        if latent in user:
            v, source = user[latent], "file"
        elif n_pos:
            v, source = diffmean(held["positive_means"][k], held["negative_mean"]), "diffmean"
        else:
            raise VectorError(
                f"latent {latent} ({c['concept']!r}) never fires on the held-out contexts: no DiffMean vector; "
                f"give it one in steering_vectors.vectors_file or drop the concept"
            )
        diag = mayne_diagnostics(
            sae,
            v,
            held["negative_mean"],
            latent,
            held["sorted_norms"],
            top_k=vcfg.top_k,
            bias_dominated_overlap=vcfg.bias_dominated_overlap,
        )
        dec = decompose(sae, v, latent, k=vcfg.fit_k, n_report=vcfg.n_report)
        tensors = dec.pop("vectors")
        vectors["diffmean"].append(v.float().cpu())
        vectors["naive"].append(tensors["naive"])
        vectors["signed"].append(tensors["signed"])
        dec["top_positive_projections"] = _with_explanations(dec["top_positive_projections"], explained)
        dec["top_negative_projections"] = _with_explanations(dec["top_negative_projections"], explained)
        dec["signed_fit"]["terms"] = _with_explanations(dec["signed_fit"]["terms"][: vcfg.n_report], explained)
        for key in ("top_latents_encode_v", "top_latents_encode_0", "top_latents_in_distribution"):
            diag[key] = _with_explanations([{"latent": i} for i in diag[key]], explained)
        records.append(
            {
                "concept_id": int(c["concept_id"]),
                "concept": c["concept"],
                "latent": latent,
                "m_f": float(c["m_f"]),
                "vector_source": source,
                "n_positive": n_pos,
                "diagnostics": diag,
                "decomposition": dec,
            }
        )
    vectors_seconds = time.perf_counter() - mark
    log.info(
        "%d vectors (%d from %s) in %.1f s; %d positions scanned",
        len(records),
        len(user),
        user_path,
        vectors_seconds,
        held["n_positions"],
    )

    # 2. steering, as steer_eval, without its baselines (read from its score)
    gen_cfg = dataclasses.replace(scfg, baselines=())
    concepts = [
        Concept(int(c["concept_id"]), str(c["concept"]), int(c["latent"]), float(c["m_f"]), str(c["m_f_source"]), "steer_eval")
        for c in latent_concepts
    ]
    pool = read_instruction_pool(Path(instructions), scfg.instructions)
    gen_device = resolve_device(scfg.device)
    lm, tokenizer, judge = ctx.loaded()
    # steer_eval's prompt format (recorded in its score.json): the paired comparison needs the
    # same prompts, so the vectors are steered in whatever format the latents were.
    prompt_format = str(base["generation"]["prompt_format"])
    steer = SteeringModel.wrap(lm, tokenizer, layer, prompt_format)
    by_method: dict[str, list[dict[str, Any]]] = {}
    sae_by_method: dict[str, dict[str, Any]] = {}
    # Every method's rows in one generation call (one set of batches: cheaper than one per method).
    plan = [{**p, "method": m} for m in vcfg.methods for p in build_plan(concepts, pool, gen_cfg)]
    n_c = len(concepts)
    position = {c.concept_id: k for k, c in enumerate(concepts)}
    method_index = {m: i for i, m in enumerate(vcfg.methods)}
    directions = torch.stack([unit(x) for m in vcfg.methods for x in vectors[m]])
    rows, stats, timings = steer_and_rate(
        steer,
        directions,
        concepts,
        pool,
        gen_cfg,
        judge,
        plan=plan,
        direction_of=lambda p: method_index[p["method"]] * n_c + position[p["concept_id"]],
    )
    usage_raw = judge.stats()
    # The latent's scores are steer_eval's: the vectors must be rated by the same judge, with
    # the same prompt templates, or the comparison is not paired.
    want = (base["judge"], base["judge_model"], base["judge_prompts"]["label"])
    got = (rows[0]["judge"], rows[0]["judge_model"], rows[0]["judge_prompts"]) if rows else want
    if got != want:
        raise VectorsJobError(
            f"judge {'/'.join(map(str, got))} (judge/model/prompts) differs from the steering evaluation's "
            f"{'/'.join(map(str, want))} ({steering_score}): rerun steer_eval with the same judge and judge.prompts"
        )
    gen_seconds, judge_seconds, new_tokens = (
        timings.get("generate_seconds", 0.0),
        timings.get("judge_seconds", 0.0),
        stats.new_tokens,
    )
    generations = [{"method": r["method"], **{k: v for k, v in r.items() if k != "method"}} for r in rows]
    for method in vcfg.methods:
        by_method[method], sae_by_method[method] = method_scores([r for r in rows if r["method"] == method], scfg.factors)
        log.info("%s: score %s (AxBench order)", method, sae_by_method[method]["axbench"]["score"])

    # 3. scores and shares
    for rec in records:
        cid = rec["concept_id"]
        lat = next(c for c in latent_concepts if int(c["concept_id"]) == cid)
        rec["steering"] = {
            LATENT: {o: {"heldout_score": lat[o]["heldout_score"], "chosen_factor": lat[o]["chosen_factor"]} for o in ORDERS}
        }
        for m in vcfg.methods:
            mc = next(c for c in by_method[m] if int(c["concept_id"]) == cid)
            rec["steering"][m] = {
                o: {"heldout_score": mc[o]["heldout_score"], "chosen_factor": mc[o]["chosen_factor"]} for o in ORDERS
            }
    summary = summarise(latent_concepts, by_method, vcfg.methods)
    diags = [r["diagnostics"] for r in records]
    decs = [r["decomposition"] for r in records]
    report = finite_json(
        {
            "steering_vectors_version": VECTORS_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "sae": {
                "path": str(sae_dir),
                "d_sae": int(sae.d_sae),
                "weights_sha256": sha256_file(Path(sae_dir) / SAELENS_WEIGHTS),
            },
            "judge": base["judge"],
            "judge_model": base["judge_model"],
            "methods": list(vcfg.methods),
            "n_concepts": len(records),
            "n_user_vectors": sum(r["vector_source"] == "file" for r in records),
            "score": summary["axbench"]["scores"].get("diffmean"),
            "score_latent": summary["axbench"]["scores"][LATENT],
            "axbench": summary["axbench"],
            "arad": summary["arad"],
            "baselines": base["baselines"],
            "by_factor": {m: sae_by_method[m]["by_factor"] for m in vcfg.methods},
            "diagnostics": {
                "norm_percentile": _mean([d["norm_percentile"] for d in diags]),
                "norm_ratio_to_median": _mean([d["norm_ratio_to_median"] for d in diags]),
                "overlap_encode_v_with_encode_0": _mean([d["overlap_encode_v_with_encode_0"] for d in diags]),
                "overlap_in_distribution_with_encode_0": _mean([d["overlap_in_distribution_with_encode_0"] for d in diags]),
                "bias_dominated_share": _mean([float(d["bias_dominated"]) for d in diags]),
                "cos_with_decoder_row": _mean([d["cos_with_decoder_row"] for d in diags]),
                "signed_explained": _mean([d["signed_fit"]["explained"] for d in decs]),
                "signed_negative_share": _mean([d["signed_fit"]["negative_share"] for d in decs]),
                "negative_projection_share": _mean([d["negative_projection_share"] for d in decs]),
                "naive_explained_rescaled": _mean([d["naive"]["explained_rescaled"] for d in decs]),
                "naive_explained_unscaled": _mean([d["naive"]["explained_unscaled"] for d in decs]),
            },
            "concepts": records,
            "n_generations": len(generations),
            "generation": {
                "prompt_format": prompt_format,
                "temperature": gen_cfg.temperature,
                "top_k": gen_cfg.top_k,
                "new_tokens": new_tokens,
                "generate_seconds": gen_seconds,
                "judge_seconds": judge_seconds,
                "device": str(gen_device),
            },
            "usage": {
                **{
                    k: (float if k == "dollars" else int)(usage_raw.get(k, 0))
                    for k in ("api_calls", "cache_hits", "prompt_tokens", "completion_tokens", "dollars")
                },
                "truncated": {str(k): int(v) for k, v in (usage_raw.get("truncated") or {}).items()},
            },
            "timings": {"vectors_seconds": vectors_seconds, "total_seconds": time.perf_counter() - started},
            "config": {**vcfg.as_dict(), "methods": list(vcfg.methods), "vectors_file_resolved": user_path},
            "steering_config": json.loads(json.dumps(scfg.as_dict())),
            "inputs": {
                "steering_score": {"path": str(steering_score), "sha256": sha256_file(steering_score)},
                "steering_concepts": {"path": str(steering_concepts), "sha256": sha256_file(steering_concepts)},
                "autointerp_table": {"path": str(autointerp_table), "sha256": sha256_file(autointerp_table)},
                "eval_data_fingerprint": data.manifest["fingerprint"],
                "n_heldout_positions": held["n_positions"],
                "n_negative_positions": int(len(held["negatives"])),
            },
            "outputs": {"concepts": str(out_concepts), "generations": str(out_generations), "vectors": str(out_vectors)},
        }
    )
    validate_score(report)
    write_parquet_atomic(generations, GENERATIONS_SCHEMA, Path(out_generations))
    write_parquet_atomic([_concept_row(r, vcfg.methods) for r in records], CONCEPTS_SCHEMA, Path(out_concepts))
    tensors = {f"{m}.{r['latent']}": vectors[m][k].contiguous() for m in vectors for k, r in enumerate(records)}
    from saesteer.io import atomic_path

    with atomic_path(out_vectors) as tmp:
        save_file(
            tensors,
            str(tmp),
            metadata={"model": model, "arch": arch, "target_l0": str(target_l0), "hook_name": report["hook_name"]},
        )
    write_json_atomic(out_score, report)
    log.info(
        "%s/%s/l0-%s: DiffMean %s, latent %s (AxBench order); shares of DiffMean %s; Mayne flag on %s of concepts (%.1f s)",
        model,
        arch,
        target_l0,
        report["score"],
        report["score_latent"],
        report["axbench"]["share_of_diffmean"],
        report["diagnostics"]["bias_dominated_share"],
        report["timings"]["total_seconds"],
    )
    return report


def _concept_row(r: Mapping[str, Any], methods: Sequence[str]) -> dict[str, Any]:
    d, dec = r["diagnostics"], r["decomposition"]
    row = {
        "concept_id": r["concept_id"],
        "concept": r["concept"],
        "latent": r["latent"],
        "vector_source": r["vector_source"],
        "n_positive": r["n_positive"],
        "norm": d["norm"],
        "norm_percentile": d["norm_percentile"],
        "overlap_encode_v_with_encode_0": d["overlap_encode_v_with_encode_0"],
        "overlap_in_distribution_with_encode_0": d["overlap_in_distribution_with_encode_0"],
        "bias_dominated": d["bias_dominated"],
        "cos_with_decoder_row": d["cos_with_decoder_row"],
        "projection_rank_of_latent": dec["projection_rank_of_latent"],
        "negative_projection_share": dec["negative_projection_share"],
        "signed_explained": dec["signed_fit"]["explained"],
        "signed_negative_share": dec["signed_fit"]["negative_share"],
        "naive_explained_rescaled": dec["naive"]["explained_rescaled"],
        "naive_cos_with_v": dec["naive"]["cos_with_v"],
    }
    for m in (LATENT, "diffmean", "naive", "signed"):
        s = r["steering"].get(m)
        row[f"score_{m}"] = s["axbench"]["heldout_score"] if s else None
        row[f"score_{m}_arad"] = s["arad"]["heldout_score"] if s else None
    return row


def validate_score(report: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    check_schema(report, schema_path, "steering-vectors score", VectorsJobError)


def read_vectors_score(path: Path) -> dict[str, Any]:
    """A steering_vectors/score.json, validated."""
    return read_checked_json(path, SCHEMA_PATH, "steering-vectors score", VectorsJobError, "steering_vectors")


__all__ = ["run_steering_vectors", "read_vectors_score", "held_out_vectors", "summarise", "VectorsJobError", "SteeringError"]

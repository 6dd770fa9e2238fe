"""The steering of the selected latent sets of one SAE (rule ``steer_selected``).

Reads the SAE's autointerp table (candidates), its selection scores
(``select_features``) and its steering evaluation (the score without selection and the
generations already made), forms every criterion's sets (``sets.py``), steers the latents
not yet steered with the steering evaluation's protocol and seeds, and writes:

- ``generations.parquet``: every steered row of every selected latent (reused or new), in
  the steering evaluation's schema;
- ``concepts.json``: per latent, its criteria scores and its steering record;
- ``score.json``: the steering score with no selection, with Arad et al.'s output-score
  threshold set, with the output score's top-K sets at Delta C's subset sizes chosen by Delta
  C's rule (``output_topk``: the paper's like-for-like "+Output", sec. 4.2) and with Delta
  Token Confidence selection, their lifts, the point difference of the lifts and the relative
  improvement of Delta C over ``output_topk`` (and, named ``*_threshold``, over the threshold
  set), and every candidate set's selection-half and held-out scores; Delta C's selection
  under each reading of its intervention (``delta_conf_readings``: only_max, add_max, scale,
  all computed per latent by select_features); and the null control of the set search
  (``control.py``: the same search over random orderings and the output-score ordering, and
  Delta C's lift net of the random-order search).

With ``selection.candidates: concepts`` (the paper's design) every set of every criterion,
reading and control is a subset of the steering evaluation's concepts: all their generations
are reused and nothing is generated. With ``explained``, latents steer_eval did not steer are
steered once, whichever sets they are in.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from saesteer.io import check_schema, finite_json, read_checked_json, sha256_file, write_json_atomic, write_parquet_atomic
from saesteer.rule_jobs import SaeFiles
from saesteer.schemas import schema_path
from saesteer.selection.config import AMPLIFY_MODES, SelectionConfig
from saesteer.selection.control import SetSearch, control_report, control_sets, orderings
from saesteer.selection.input_score import high_both, output_low_input_set
from saesteer.selection.per_latent import PER_LATENT_SCHEMA, per_latent_rows, tau_table
from saesteer.selection.sets import (
    Candidate,
    SelectionError,
    candidates,
    choose_set,
    delta_conf_sets,
    lift,
    no_selection,
    output_score_set,
    output_topk_sets,
    set_scores,
)
from saesteer.steering.config import SteeringConfig
from saesteer.steering.context import SteeringContext
from saesteer.steering.evaluate import (
    Concept,
    hook_layer,
    read_score,
    steer_and_rate,
    unit_directions,
    valid_m_f,
    write_generations,
)
from saesteer.steering.instructions import read_instruction_pool
from saesteer.steering.score import STEERED, concept_scores

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("selection.schema.json")
SELECTION_VERSION = 2
"""2: output_topk, delta_conf_readings and the *_threshold comparisons added."""


def _concept(c: Candidate, cfg: SteeringConfig) -> Concept:
    if valid_m_f(c.m_f):
        return Concept(c.index, c.explanation, c.latent, float(c.m_f), "autointerp", "autointerp", c.rank)
    return Concept(c.index, c.explanation, c.latent, float(cfg.m_f_fallback), "fallback", "autointerp", c.rank)


def reusable_rows(
    previous: list[dict[str, Any]], wanted: Mapping[int, Concept], cfg: SteeringConfig
) -> dict[int, list[dict[str, Any]]]:
    """The steering evaluation's steered rows of the wanted latents, by latent, where they are
    exactly the rows this job would generate (same concept id, factors and instructions)."""
    by_latent: dict[int, list[dict[str, Any]]] = {}
    for r in previous:
        if r["kind"] != STEERED:
            continue
        c = wanted.get(int(r["latent"]))
        if c is not None and int(r["concept_id"]) == c.concept_id and math.isclose(float(r["m_f"]), c.m_f, rel_tol=1e-9):
            by_latent.setdefault(c.latent, []).append(r)
    expected = len(cfg.factors) * cfg.n_instructions
    return {latent: rows for latent, rows in by_latent.items() if len(rows) == expected}


def run_steer_selected(ctx: SteeringContext, sae_files: SaeFiles) -> dict[str, Any]:
    """One SAE's steer_selected: the SAE ``sae_files`` (inputs ``sae_cfg``, ``autointerp``,
    ``latent_scores``, ``steering_generations``, ``steering_score``; outputs ``generations``,
    ``concepts``, ``score`` and, if declared, ``latents``: the per-latent table,
    ``per_latent.py``) with the job's ``ctx`` (steering and selection configs, judge,
    instructions, prompt format). The model (``ctx.models``) is needed only when a selected
    latent was not steered by steer_eval: a grouped job loads it for its first SAE that does."""
    from saesteer.evals.interp import load_sae
    from saesteer.steering.generate import SteeringModel

    started = time.perf_counter()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    scfg, prompt_format = ctx.steering, ctx.needs("prompt_format")
    model, arch, target_l0 = sae_files.cell.model, sae_files.cell.arch, sae_files.cell.target_l0
    sae_dir, autointerp_table = sae_files.sae_dir, sae_files.inputs["autointerp"]
    latent_scores, steering_generations, steering_score = (
        sae_files.inputs[k] for k in ("latent_scores", "steering_generations", "steering_score")
    )
    out_generations, out_concepts, out_score = (sae_files.outputs[k] for k in ("generations", "concepts", "score"))
    out_latents = sae_files.outputs.get("latents")
    if scfg.concepts:
        raise SelectionError(
            "feature selection chooses among autointerp-explained latents: it does not apply to a fixed steering.concepts list"
        )
    # Baselines belong to the steering evaluation; the selected sets are steered only.
    scfg = dataclasses.replace(scfg, baselines=())
    sel: SelectionConfig = ctx.needs("selection")
    base = read_score(Path(steering_score))
    # Reused steer_eval generations and new ones must share one prompt format.
    if base["generation"]["prompt_format"] != prompt_format:
        raise SelectionError(
            f"{steering_score} was generated with prompt_format {base['generation']['prompt_format']}, the model's "
            f"prompt_format is now {prompt_format}: rerun steer_eval"
        )
    scores_rows = pq.read_table(latent_scores).to_pylist()
    autointerp_rows = pq.read_table(autointerp_table).to_pylist()
    cands = candidates(autointerp_rows, scores_rows)
    if not cands:
        raise SelectionError(f"{autointerp_table}: no explained latent to select from")

    n = scfg.n_concepts
    explained = cands
    none_set = no_selection(cands, n)
    if sel.candidates == "concepts":
        # The paper's design: choose among the steered concepts (Concept100) themselves.
        cands = cands[:n]
    os_set = output_score_set(cands, n, sel.output_score.threshold)
    holi_set = output_low_input_set(
        cands, {int(r["latent"]): r.get("input_score") for r in scores_rows}, n, sel.high_output, sel.input_score.high_input
    )

    def reading_sets(column: str) -> list[Any]:
        return delta_conf_sets(
            _with_delta_conf(cands, scores_rows, column),
            mode=sel.delta_conf.mode,
            directions=sel.delta_conf.directions,
            k_values=sel.delta_conf.k_values,
            quantiles=sel.delta_conf.quantiles,
            all_delta_conf=[r[column] for r in scores_rows],
            max_size=n,
        )

    dc_sets = reading_sets("delta_conf")
    # The paper's "+Output" at the same subset sizes, chosen by the same rule (sets.py).
    topk_sets = output_topk_sets(cands, dc_sets)
    # Delta C under each reading of its intervention (all three are in latent_scores.parquet).
    readings = {
        mode: reading_sets(f"delta_conf_{mode}")
        for mode in AMPLIFY_MODES
        if all(r.get(f"delta_conf_{mode}") is not None for r in scores_rows)
    }
    # The null control: the same search over other orderings of the same candidates (control.py).
    search = SetSearch(
        sel.delta_conf.mode,
        tuple(sel.delta_conf.directions),
        tuple(sel.delta_conf.k_values),
        tuple(sel.delta_conf.quantiles),
        tuple(r["delta_conf"] for r in scores_rows),
        n,
    )
    ctl_sets = control_sets(cands, search, orderings(cands, sel.control.n_orderings, sel.control.seed, sel.control.output_order))
    by_latent = {c.latent: c for c in cands}
    union = sorted(
        {
            lat
            for s in [
                os_set,
                holi_set,
                *dc_sets,
                *topk_sets,
                *(x for sets in readings.values() for x in sets),
                *(x for sets in ctl_sets.values() for x in sets),
            ]
            for lat in s.latents
        },
        key=lambda lat: by_latent[lat].index,
    )
    wanted = {lat: _concept(by_latent[lat], scfg) for lat in union}

    previous = pq.read_table(steering_generations).to_pylist()
    reused = reusable_rows(previous, wanted, scfg)
    todo = [wanted[lat] for lat in union if lat not in reused]
    log.info(
        "%s/%s/l0-%s: %d candidates; output-score set %d latents, %d Delta C sets; %d latents to steer (%d reused from steer_eval)",
        model,
        arch,
        target_l0,
        len(cands),
        len(os_set.latents),
        len(dc_sets),
        len(todo),
        len(reused),
    )

    records = [r for lat in union if lat in reused for r in reused[lat]]
    gen_stats: dict[str, Any] = {
        "prompt_format": prompt_format,
        "new_tokens": 0,
        "tokens_per_s": None,
        "generate_seconds": 0.0,
        "judge_seconds": 0.0,
    }
    judge_label = (base.get("judge"), base.get("judge_model"), base["judge_prompts"]["label"])
    if todo:
        sae, sae_cfg = load_sae(Path(sae_dir))
        layer = hook_layer(sae_cfg)
        lm, tokenizer, judge = ctx.loaded()
        pool = read_instruction_pool(ctx.instructions, scfg.instructions)
        directions = unit_directions(sae.W_dec, [c.latent for c in todo])
        new, stats, timings = steer_and_rate(
            SteeringModel.wrap(lm, tokenizer, layer, prompt_format), directions, todo, pool, scfg, judge
        )
        got = (new[0]["judge"], new[0]["judge_model"], new[0]["judge_prompts"])
        if got != judge_label:
            raise SelectionError(
                f"judge {'/'.join(got)} (judge/model/prompts) differs from the steering evaluation's "
                f"{'/'.join(judge_label)} ({steering_score}): rerun steer_eval with the same judge and judge.prompts"
            )
        records += new
        gen_stats = {
            "prompt_format": prompt_format,
            "new_tokens": stats.new_tokens,
            "tokens_per_s": stats.tokens_per_s,
            **timings,
        }

    per_concept_list = concept_scores(records, scfg.factors)
    per_concept = {int(r["latent"]): r for r in per_concept_list}
    scored_dc = [set_scores(s, per_concept) for s in dc_sets]
    chosen = choose_set(scored_dc)
    os_scored = set_scores(os_set, per_concept) if os_set.latents else None
    none_score, none_arad = base["score"], base["score_arad"]

    def block(scored: Mapping[str, Any] | None) -> dict[str, Any]:
        if scored is None:
            return {"score": None, "score_arad": None, "n_concepts": 0, "latents": [], "lift": None, "lift_arad": None}
        return {
            **scored,
            "lift": lift(scored["score"], none_score),
            "lift_arad": lift(scored["score_arad"], none_arad),
        }

    def chosen_block(sets: list[Any]) -> dict[str, Any]:
        scored = [set_scores(x, per_concept) for x in sets]
        best = choose_set(scored)
        return {
            **block(best),
            "chosen": None if best is None else {k: best[k] for k in ("label", "direction", "k", "quantile")},
            "n_sets": len(scored),
            "set_sizes": sorted(len(x.latents) for x in sets),
        }

    topk_block = {**chosen_block(topk_sets), "candidates": [set_scores(x, per_concept) for x in topk_sets]}
    readings_block = {mode: {**chosen_block(sets), "headline": mode == sel.delta_conf.amplify} for mode, sets in readings.items()}
    os_block = {
        **block(os_scored),
        "threshold": sel.output_score.threshold,
        "n_candidates_passing": sum(c.output_score >= sel.output_score.threshold for c in cands),
    }
    dc_block = {
        **block(chosen),
        "chosen": None if chosen is None else {k: chosen[k] for k in ("label", "direction", "k", "quantile")},
        "mode": sel.delta_conf.mode,
        "amplify": sel.delta_conf.amplify,
        "candidates": scored_dc,
    }
    control = control_report(
        ctl_sets,
        per_concept,
        none=none_score,
        none_arad=none_arad,
        delta_conf_lift=dc_block["lift"],
        delta_conf_lift_arad=dc_block["lift_arad"],
        n_random=sel.control.n_orderings,
        seed=sel.control.seed,
    )
    per_latent = _per_latent(
        explained,
        scores_rows,
        autointerp_rows,
        per_concept,
        previous,
        union,
        scfg,
        sel,
        none_set.latents,
        os_set.latents,
        [] if chosen is None else chosen["latents"],
    )

    def points(other: Mapping[str, Any]) -> float | None:
        return None if other["lift"] is None or dc_block["lift"] is None else 100.0 * (dc_block["lift"] - other["lift"])

    report = finite_json(
        {
            "selection_version": SELECTION_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "judge": judge_label[0],
            "judge_model": judge_label[1],
            "judge_prompts": base["judge_prompts"],
            "no_selection": {
                "score": none_score,
                "score_arad": none_arad,
                "n_concepts": int(base["n_concepts"]),
                "latents": list(none_set.latents),
                "source": str(steering_score),
            },
            "output_score": os_block,
            "output_topk": topk_block,
            "output_low_input": {
                **block(set_scores(holi_set, per_concept) if holi_set.latents else None),
                "high_output": sel.high_output,
                "high_input": sel.input_score.high_input,
            },
            "delta_conf": dc_block,
            "delta_conf_readings": readings_block,
            "lift_difference_points": points(topk_block),
            "relative_improvement": lift(dc_block["score"], topk_block["score"]),
            "lift_difference_points_threshold": points(os_block),
            "relative_improvement_threshold": lift(dc_block["score"], os_block["score"]),
            "control": control,
            "per_latent": {k: v for k, v in per_latent.items() if k != "rows"}
            | {"table": None if out_latents is None else str(out_latents)},
            "candidates": sel.candidates,
            "n_candidates": len(cands),
            "n_latents_steered": len(todo),
            "n_latents_reused": len(reused),
            "generation": gen_stats,
            "timings": {"total_seconds": time.perf_counter() - started},
            "config": {"selection": sel.as_dict(), "steering": scfg.as_dict()},
            "inputs": {
                "latent_scores": {"path": str(latent_scores), "sha256": sha256_file(Path(latent_scores))},
                "autointerp_table": {"path": str(autointerp_table), "sha256": sha256_file(Path(autointerp_table))},
                "steering_score": {"path": str(steering_score), "sha256": sha256_file(Path(steering_score))},
            },
        }
    )
    check_schema(report, SCHEMA_PATH, "selection score", SelectionError)
    concepts_out = [
        {
            **per_concept[lat],
            "criteria": {"output_score": by_latent[lat].output_score, "delta_conf": by_latent[lat].delta_conf},
            "reused": lat in reused,
        }
        for lat in union
    ]
    write_generations(records, Path(out_generations))
    if out_latents is not None:
        write_parquet_atomic(per_latent["rows"], PER_LATENT_SCHEMA, Path(out_latents))
    write_json_atomic(
        out_concepts, finite_json({"model": model, "arch": arch, "target_l0": int(target_l0), "concepts": concepts_out})
    )
    write_json_atomic(out_score, report)
    log.info(
        "%s/%s/l0-%s: steering score none %s, output score %s (lift %s), Delta C %s [%s] (lift %s)",
        model,
        arch,
        target_l0,
        none_score,
        os_block["score"],
        os_block["lift"],
        dc_block["score"],
        (dc_block["chosen"] or {}).get("label"),
        dc_block["lift"],
    )
    log.info(
        "%s/%s/l0-%s: set-search control: random orderings lift %s (sd %s, %d orderings), output-score ordering lift %s; "
        "Delta C net lift %s",
        model,
        arch,
        target_l0,
        control["random"]["lift_mean"],
        control["random"]["lift_sd"],
        sel.control.n_orderings,
        (control["output_order"] or {}).get("lift"),
        control["net_lift"],
    )
    return report


def _with_delta_conf(cands: list[Candidate], scores_rows: list[dict[str, Any]], column: str) -> list[Candidate]:
    """The candidates with ``delta_conf`` read from ``column`` of latent_scores (one reading)."""
    values = {int(r["latent"]): float(r[column]) for r in scores_rows}
    return [dataclasses.replace(c, delta_conf=values[c.latent]) for c in cands]


def _per_latent(
    explained: list[Candidate],
    scores_rows: list[dict[str, Any]],
    autointerp_rows: list[dict[str, Any]],
    per_concept: Mapping[int, Mapping[str, Any]],
    previous: list[dict[str, Any]],
    union: list[int],
    scfg: SteeringConfig,
    sel: SelectionConfig,
    none_latents: Any,
    output_latents: Any,
    delta_conf_latents: Any,
) -> dict[str, Any]:
    """The per-latent table of every explained latent and tau-b of each score with steering
    across the steered ones: this job's latents and the steering evaluation's other concepts
    (their steer_eval rows, scored here the same way)."""
    others = {c.latent: _concept(c, scfg) for c in explained if c.latent in set(none_latents) and c.latent not in set(union)}
    extra = reusable_rows(previous, others, scfg)
    steered = dict(per_concept)
    if extra:
        steered.update(
            {int(r["latent"]): r for r in concept_scores([row for rows in extra.values() for row in rows], scfg.factors)}
        )
    rows = per_latent_rows(
        explained,
        {int(r["latent"]): r for r in scores_rows},
        {int(r["latent"]): r for r in autointerp_rows},
        steered,
        none_set=list(none_latents),
        output_set=list(output_latents),
        delta_conf_set=list(delta_conf_latents),
        high_input=sel.input_score.high_input,
        high_output=sel.high_output,
    )
    return {
        "rows": rows,
        "n_latents": len(rows),
        "n_steered": sum(r["steered"] for r in rows),
        "tau_b": tau_table(rows, "heldout_score"),
        "tau_b_arad": tau_table(rows, "heldout_score_arad"),
        "input_output": high_both(rows, sel.input_score.high_input, sel.high_output),
    }


def read_selection_score(path: Path) -> dict[str, Any]:
    """A selection score.json, validated."""
    return read_checked_json(path, SCHEMA_PATH, "selection score", SelectionError, "steer_selected")

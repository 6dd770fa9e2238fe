"""The per-SAE job: every latent's selection scores, as a table and a validated summary.

Writes ``results/{model}/{arch}/{sparsity}/selection/latent_scores.parquet`` (one row per
latent, :data:`PARQUET_SCHEMA`) and ``latent_scores.json`` (the prompt, its code and base
distribution, per-column statistics, timings, config; validated against
``src/saesteer/schemas/selection_scores.schema.json``). Definitions: :mod:`latent_scores`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from saesteer.io import check_schema, finite_json, read_checked_json, sha256_file, write_json_atomic, write_parquet_atomic
from saesteer.rule_jobs import RuleJob, each_sae
from saesteer.schemas import schema_path
from saesteer.selection.config import SelectionConfig
from saesteer.selection.latent_scores import SCORE_COLUMNS, LatentScores, SelectionError, score_latents

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("selection_scores.schema.json")
SELECTION_VERSION = 1
SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BASE_TOP_TOKENS = 10

PARQUET_SCHEMA = pa.schema(
    [
        ("latent", pa.int64()),
        ("a_f", pa.float64()),
        ("output_score", pa.float64()),
        ("output_rank", pa.int64()),
        ("output_prob", pa.float64()),
        ("logit_lens_ids", pa.list_(pa.int64())),
        ("logit_lens_tokens", pa.list_(pa.string())),
        ("delta_conf", pa.float64()),
        ("delta_conf_scale", pa.float64()),
        ("delta_conf_add_max", pa.float64()),
        ("delta_conf_only_max", pa.float64()),
        ("input_score", pa.float64()),
        ("n_top_contexts", pa.int64()),
    ]
)
"""``input_score``: Arad et al.'s (``input_score.py``), null for latents without autointerp top
contexts (or fewer than ``selection.input_score.min_contexts``); ``n_top_contexts``: how many."""


def validate_summary(report: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    check_schema(report, schema_path, "selection scores summary", SelectionError)


def read_summary(path: Path) -> dict[str, Any]:
    """A latent_scores.json, validated."""
    return read_checked_json(path, SCHEMA_PATH, "selection scores summary", SelectionError, "select_features")


class TokenText:
    """Decoded text of single token ids, cached (a few thousand distinct ids recur)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        token = int(token)
        if token not in self.cache:
            try:
                self.cache[token] = str(self.tokenizer.decode([token]))
            except Exception:  # ids past the tokenizer's own vocabulary (padded embedding rows)
                self.cache[token] = ""
        return self.cache[token]


def table_records(scores: LatentScores, tokenizer: Any) -> list[dict[str, Any]]:
    """One record per latent, in PARQUET_SCHEMA's columns."""
    text = TokenText(tokenizer)
    cols = {c: scores.columns[c].tolist() for c in SCORE_COLUMNS}
    lens = scores.logit_lens_ids.tolist()
    records = []
    for i, latent in enumerate(scores.latents.tolist()):
        rec: dict[str, Any] = {"latent": int(latent)}
        rec.update({c: cols[c][i] for c in SCORE_COLUMNS})
        rec["logit_lens_ids"] = [int(t) for t in lens[i]]
        rec["logit_lens_tokens"] = [text(t) for t in lens[i]]
        records.append(rec)
    return records


def read_top_tokens(autointerp_table: Path) -> dict[int, list[int] | None]:
    """latent -> its top contexts' maximally activating token ids (autointerp.parquet)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(autointerp_table)
    except (OSError, ValueError) as exc:
        raise SelectionError(f"{autointerp_table} is not an autointerp table ({exc}); rerun autointerp") from exc
    if "top_token_ids" not in table.column_names:
        raise SelectionError(
            f"{autointerp_table} has no top_token_ids column (written before the input score existed): rerun autointerp"
        )
    return {int(r["latent"]): r["top_token_ids"] for r in table.select(["latent", "top_token_ids"]).to_pylist()}


def add_input_scores(
    records: list[dict[str, Any]], top_tokens: Mapping[int, Sequence[int] | None] | None, cfg: SelectionConfig
) -> dict[str, Any] | None:
    """Fill each record's input_score / n_top_contexts; the summary's input_score block (None
    without an autointerp table)."""
    from saesteer.selection.input_score import high_both, input_score

    for rec in records:
        scored = input_score((top_tokens or {}).get(rec["latent"]), rec["logit_lens_ids"], cfg.input_score.min_contexts)
        rec["input_score"] = scored.score
        rec["n_top_contexts"] = scored.n_contexts
    if top_tokens is None:
        return None
    return {
        "min_contexts": int(cfg.input_score.min_contexts),
        "top_n_tokens": int(cfg.output_score.top_n_tokens),
        "n_with_contexts": sum(r["n_top_contexts"] > 0 for r in records),
        **high_both(records, cfg.input_score.high_input, cfg.high_output),
    }


def column_summary(values: torch.Tensor) -> dict[str, Any]:
    v = values.double()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "quantiles": {str(q): None for q in SUMMARY_QUANTILES},
        }
    qs = torch.quantile(v, torch.tensor(SUMMARY_QUANTILES, dtype=torch.float64))
    return {
        "n": int(v.numel()),
        "mean": float(v.mean()),
        "std": float(v.std()) if v.numel() > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "quantiles": {str(q): float(x) for q, x in zip(SUMMARY_QUANTILES, qs)},
    }


def run_select_features(
    *,
    sae_dir: Path,
    model_json: Path,
    selection_cfg: SelectionConfig | Mapping[str, Any] | None,
    out_table: Path,
    out_summary: Path,
    model: str,
    arch: str,
    target_l0: int,
    threads: int | None = None,
    autointerp_table: Path | None = None,
    lm: Any = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """The workflow's per-SAE job. ``autointerp_table``: the latents to score when
    ``selection.latents`` is "autointerp", and the top contexts of Arad et al.'s input score
    (without it the input_score column stays null). ``lm``/``tokenizer`` override the ones of
    ``model_json`` (tests)."""
    from saesteer.devices import resolve_device
    from saesteer.evals.interp import load_sae
    from saesteer.models import load_prepared
    from saesteer.sae.saelens_io import SAELENS_WEIGHTS
    from saesteer.steering.evaluate import SteeringError, hook_layer

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    cfg = selection_cfg if isinstance(selection_cfg, SelectionConfig) else SelectionConfig.from_config(dict(selection_cfg or {}))
    sae_dir = Path(sae_dir)
    sae, sae_cfg = load_sae(sae_dir)
    try:
        layer = hook_layer(sae_cfg)
    except SteeringError as exc:
        raise SelectionError(f"SAE {sae_dir}: {exc}") from exc
    hook_name = f"blocks.{layer}.hook_resid_post"
    try:
        record = json.loads(Path(model_json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SelectionError(f"{model_json} is not a prepared-model record ({exc}); rerun prepare_model") from exc
    if record.get("hook_name") and record["hook_name"] != hook_name:
        raise SelectionError(f"SAE {sae_dir} reads {hook_name} but {model_json} is prepared for {record['hook_name']}")
    subset = None
    if cfg.latents == "autointerp":
        if autointerp_table is None:
            raise SelectionError("selection.latents is 'autointerp': the job needs the SAE's autointerp.parquet")
        import pyarrow.parquet as pq

        try:
            subset = sorted({int(v) for v in pq.read_table(autointerp_table, columns=["latent"]).column("latent").to_pylist()})
        except (OSError, KeyError, ValueError) as exc:
            raise SelectionError(f"{autointerp_table} is not an autointerp table ({exc}); rerun autointerp") from exc
    device = resolve_device(cfg.device)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_prepared(Path(model_json), dtype=cfg.model_dtype, device=str(device))
    else:
        device = next(lm.parameters()).device
    sae = sae.to(device)
    load_seconds = time.perf_counter() - started
    log.info(
        "selection scores of %s at %s: %d latents, prompt %r, %d rows per forward on %s",
        sae_dir,
        hook_name,
        sae.d_sae,
        cfg.prompt,
        cfg.batch_size,
        device,
    )

    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            log.info("scored %d / %d intervened rows (%.0f rows/s)", done, total, done / max(1e-9, last[0] - scoring_start))

    scoring_start = time.perf_counter()
    scores = score_latents(lm, tokenizer, sae, layer, cfg, latents=subset, progress=progress)
    scoring_seconds = time.perf_counter() - scoring_start
    records = table_records(scores, tokenizer)
    input_block = add_input_scores(
        records, read_top_tokens(Path(autointerp_table)) if autointerp_table is not None else None, cfg
    )
    state = scores.state
    text = TokenText(tokenizer)
    base_p = torch.softmax(state.base_logits.float(), dim=-1)
    top = base_p.topk(min(BASE_TOP_TOKENS, base_p.numel()))
    out_scores = scores.columns["output_score"]
    threshold = float(cfg.output_score.threshold)
    total = time.perf_counter() - started
    report = finite_json(
        {
            "selection_version": SELECTION_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "hook_name": hook_name,
            "sae": {"path": str(sae_dir), "d_sae": int(sae.d_sae), "weights_sha256": sha256_file(sae_dir / SAELENS_WEIGHTS)},
            "prompt": cfg.prompt,
            "prompt_token_ids": [int(t) for t in state.token_ids],
            "prompt_tokens": [text(t) for t in state.token_ids],
            "a_max": float(state.a_max),
            "n_active_on_prompt": int((state.codes != 0).sum()),
            "n_dead_on_prompt": int((state.codes == 0).sum()),
            "base": {
                "confidence": float(state.base_confidence),
                "k": int(cfg.delta_conf.k),
                "top_tokens": [
                    {"id": int(i), "token": text(int(i)), "prob": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())
                ],
            },
            "output_score_threshold": threshold,
            "fraction_above_threshold": float((out_scores >= threshold).double().mean()) if out_scores.numel() else 0.0,
            "n_above_threshold": int((out_scores >= threshold).sum()),
            "columns": {c: column_summary(scores.columns[c]) for c in SCORE_COLUMNS},
            "input_score": input_block,
            "n_latents": int(scores.latents.numel()),
            "compute": {
                "device": str(device),
                "dtype": cfg.model_dtype,
                "vocab_size": int(state.base_logits.numel()),
                "rows": scores.stats.rows,
                "skipped_rows": scores.stats.skipped_rows,
                "forwards": scores.stats.forwards,
                "batch_size": scores.stats.batch_size,
                "oom_retries": scores.stats.oom_retries,
                "path_check_gap": float(state.path_gap),
            },
            "timings": {
                "load_seconds": load_seconds,
                "logit_lens_seconds": scores.stats.logit_lens_seconds,
                "scoring_seconds": scoring_seconds,
                "latents_per_s": scores.latents.numel() / scoring_seconds if scoring_seconds > 0 else None,
                "total_seconds": total,
            },
            "config": cfg.as_dict(),
            "outputs": {"table": str(out_table)},
        }
    )
    validate_summary(report)
    write_parquet_atomic(records, PARQUET_SCHEMA, Path(out_table))
    write_json_atomic(out_summary, report)
    log.info(
        "%s/%s/l0-%s: %d latents in %.1f s (%.0f latents/s); a_max %.3g, %d active on the prompt; output score >= %g: %.1f%%; "
        "delta_conf (%s) mean %.3g",
        model,
        arch,
        target_l0,
        scores.latents.numel(),
        scoring_seconds,
        report["timings"]["latents_per_s"] or 0.0,
        state.a_max,
        report["n_active_on_prompt"],
        threshold,
        100 * report["fraction_above_threshold"],
        cfg.delta_conf.amplify,
        report["columns"]["delta_conf"]["mean"] or float("nan"),
    )
    return report


# ---- the rules (workflow/rules/selection.smk) ----------------------------------------------
# A job runs a group of SAEs (eval_jobs.group_by) in one process: the model (and the judge)
# loaded once, each SAE scored and steered exactly as in a job of its own, into its files.


def select_features(job: RuleJob) -> None:
    """Selection scores of every latent of each SAE of the job (per SAE: selection/latent_scores.*)."""
    from saesteer.models import load_prepared

    cfg = SelectionConfig.from_config(dict(job.params["selection"] or {}))
    lm, tokenizer = load_prepared(Path(job.inputs["model"]), dtype=cfg.model_dtype, device=cfg.device)
    for _, sae in each_sae(job):
        run_select_features(
            sae_dir=sae.sae_dir,
            model_json=Path(job.inputs["model"]),
            selection_cfg=job.params["selection"],
            out_table=sae.outputs["table"],
            out_summary=sae.outputs["summary"],
            **sae.identity,
            threads=job.threads,
            autointerp_table=sae.inputs.get("autointerp"),
            lm=lm,
            tokenizer=tokenizer,
        )


def steer_selected(job: RuleJob) -> None:
    """Steering scores of the latents each criterion selects, for each SAE of the job
    (per SAE: selection/score.json and its tables)."""
    from saesteer.selection.steer import run_steer_selected
    from saesteer.steering.context import SteeringContext

    # The model is loaded by the first SAE with a latent steer_eval did not steer (often none: then never).
    with SteeringContext.from_job(job) as ctx:
        for _, sae in each_sae(job):
            run_steer_selected(ctx, sae)

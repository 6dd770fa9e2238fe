"""One caching job as the workflow runs it: load the prepared model, cache, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

import saesteer.cache.cache_activations as activation_cache
from saesteer.cache.cache_activations import CacheConfig
from saesteer.models import ModelSpec, load_prepared
from saesteer.rule_jobs import RuleJob

log = logging.getLogger(__name__)


def run_cache_job(
    model_json: Path,
    model_entry: dict[str, Any],
    corpus_cfg: dict[str, Any],
    cache_block: dict[str, Any],
    manifest_path: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    spec = ModelSpec.from_config(model_entry)
    cfg = CacheConfig.from_config(cache_block)
    model, tokenizer = load_prepared(model_json, dtype=cfg.model_dtype, device=cfg.device)
    provenance = json.loads(Path(model_json).read_text())
    provenance.pop("local_dir", None)  # where it sits on disk does not change the activations
    log.info("caching %s %s on %s, %d tokens", spec.name, spec.hook_name, next(model.parameters()).device, cfg.tokens)
    manifest = activation_cache.cache_activations(
        model,
        tokenizer,
        model_name=spec.name,
        layer=spec.layer,
        corpus_cfg=corpus_cfg,
        cache_cfg=cfg,
        out_dir=manifest_path.parent,
        provenance=provenance,
    )
    tp = manifest["throughput"]
    log.info(
        "cached %d tokens (%d new in %.1f s, %.0f tokens/s), %d BOS positions dropped",
        manifest["n_tokens"],
        tp["tokens_this_run"],
        tp["seconds_this_run"],
        tp["tokens_per_second"] or 0,
        manifest["dropped_positions"]["bos"],
    )
    return manifest


def cache_activations(job: RuleJob) -> None:
    """Rule cache_activations (workflow/rules/cache.smk): one model's activation cache."""
    run_cache_job(
        model_json=Path(job.inputs["model"]),
        model_entry=job.params["spec"],
        corpus_cfg=job.params["corpus"],
        cache_block=job.params["cache"],
        manifest_path=Path(job.outputs["manifest"]),
        threads=job.threads,
    )

"""Sparse probing (SAEBench; Gurnee et al. 2023): logistic probes on the top-k SAE latents
of mean-pooled passages. Definitions: :mod:`saesteer.evals.probing`."""

from __future__ import annotations

from typing import Any

from saesteer.evals.config import EvalConfig
from saesteer.evals.eval_data import EvalData
from saesteer.evals.metrics.base import Headline, MetricDescriptor
from saesteer.evals.probing import evaluate_task, mean_over_tasks, pooled_codes
from saesteer.sae.base import BaseSAE


def sparse_probing_metrics(sae: BaseSAE, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    info = data.manifest["sparse_probing"]
    ks = [int(k) for k in info["k"]]
    tasks = {}
    for name, task in info["tasks"].items():
        token_resid, offsets, subtasks = data.probing_task(name)
        pooled = pooled_codes(sae, token_resid, offsets, cfg.sae_batch_tokens)
        tasks[name] = evaluate_task(pooled, subtasks, task["baselines"], task["classes"], ks, cfg.sparse_probing.C)
    return {"k": ks, "tasks": tasks, "mean": mean_over_tasks(tasks, ks)}


def _by_k(scores: dict[str, Any] | None, k: int) -> float | None:
    if not scores:
        return None
    return scores.get(str(k), scores.get(k))  # JSON keys are strings


def _table_columns(block: Any) -> dict[str, Any]:
    mean = block.get("mean", {})
    return {
        "probe_llm": mean.get("llm_test_accuracy"),
        "probe_sae_k1": _by_k(mean.get("sae_top_k_test_accuracy"), 1),
        "probe_sae_k5": _by_k(mean.get("sae_top_k_test_accuracy"), 5),
    }


SPARSE_PROBING = MetricDescriptor(
    name="sparse_probing",
    label="sparse probing",
    evaluate=lambda m: sparse_probing_metrics(m.sae, m.data, m.cfg),
    headlines=(
        Headline(
            "probing",
            "sparse probing (top-k SAE latents)",
            lambda block, opts: block["mean"]["sae_top_k_test_accuracy"].get(str(opts.probing_k)),
            where="sae_top_k_test_accuracy[{probing_k}]",
            units="subtasks",
        ),
    ),
    table_columns=_table_columns,
    config_block=True,
)

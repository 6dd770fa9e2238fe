"""Core metrics (SAEBench): reconstruction, sparsity, and the SAE spliced into the model
(CE-loss recovered, KL). Definitions: :mod:`saesteer.evals.core`, :mod:`saesteer.evals.splice`."""

from __future__ import annotations

from typing import Any

import torch

from saesteer.evals.config import EvalConfig
from saesteer.evals.core import ReconstructionStats, splice_scores
from saesteer.evals.eval_data import CORE_FILE, SPLICE_FILE, EvalData, batches
from saesteer.evals.metrics.base import Headline, MetricDescriptor
from saesteer.evals.splice import UpperRunner, spliced_losses
from saesteer.sae.base import BaseSAE


@torch.inference_mode()
def core_metrics(sae: BaseSAE, model: torch.nn.Module, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    info = data.manifest["core"]
    layer = int(data.manifest["layer"])
    first, n, length = info["first_replaced_position"], info["n_contexts"], info["context_length"]
    n_splice = info["splice_contexts"]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    runner = UpperRunner(model, layer)
    stats = ReconstructionStats(sae.d_sae)
    tokens = data.tensor(CORE_FILE, "tokens")
    ce_sae, kl_sae = [], []
    for rows in batches(n, cfg.batch_size):
        resid = data.rows(CORE_FILE, "resid", rows).to(device)
        b, d = resid.shape[0], resid.shape[-1]
        x = resid[:, first:].reshape(-1, d)
        hats = []
        for chunk in x.split(cfg.sae_batch_tokens):
            codes = sae.encode(chunk)
            x_hat = sae.decode(codes)
            stats.update(chunk, x_hat, codes)
            hats.append(x_hat)
        m = max(0, min(rows.stop, n_splice) - rows.start)
        if m == 0:
            continue
        spliced = resid[:m].clone()
        spliced[:, first:] = torch.cat(hats).view(b, length - first, d)[:m].to(dtype)
        ids = tokens[rows][:m].to(device)
        hidden = runner(ids, spliced)[:, first : length - 1].reshape(-1, d)
        stored = slice(rows.start, rows.start + m)
        if info["kl_method"] == "expected_unembedding":
            reference = {
                "neg_entropy": data.rows(SPLICE_FILE, "neg_entropy", stored).reshape(-1),
                "expected_unembedding": data.rows(SPLICE_FILE, "expected_unembedding", stored).reshape(-1, d),
            }
        else:
            reference = {"clean_hidden": data.rows(SPLICE_FILE, "clean_hidden", stored).to(device).reshape(-1, d)}
        ce, kl = spliced_losses(model, hidden, ids[:, first + 1 :].reshape(-1), **reference)
        ce_sae.append(ce)
        kl_sae.append(kl)
    out = stats.result()
    if ce_sae:
        spliced_scores = splice_scores(
            data.tensor(SPLICE_FILE, "ce_clean").reshape(-1),
            data.tensor(SPLICE_FILE, "ce_zero").reshape(-1),
            torch.cat(ce_sae),
            data.tensor(SPLICE_FILE, "kl_zero").reshape(-1),
            torch.cat(kl_sae),
        )
        spliced_scores["splice_n_tokens"] = spliced_scores.pop("n_tokens")
        out.update(spliced_scores)
    # Eval data made before the option existed kept BOS in the zero-ablation.
    out["zero_ablation"] = info.get("zero_ablation", "keep_bos")
    return out


def _table_columns(core: Any) -> dict[str, Any]:
    return {
        name: core.get(key)
        for name, key in (
            ("eval_l0", "l0"),
            ("explained_variance", "explained_variance"),
            ("cossim", "cossim"),
            ("frac_dead", "frac_dead"),
            ("ce_loss_score", "ce_loss_score"),
            ("kl_div_score", "kl_div_score"),
        )
    }


CORE = MetricDescriptor(
    name="core",
    label="core metrics",
    evaluate=lambda m: core_metrics(m.sae, m.model, m.data, m.cfg),
    headlines=(
        Headline(
            "ce_loss_score",
            "CE-loss recovered",
            lambda core, _: core.get("ce_loss_score"),
            where="core.ce_loss_score",
            no_split="CE-loss recovered is computed from token sums pooled over the held-out text (no per-context values kept)",
        ),
        Headline(
            "explained_variance",
            "explained variance",
            lambda core, _: core.get("explained_variance"),
            no_split="explained variance is computed from sums pooled over the held-out tokens (no per-context values kept)",
        ),
    ),
    table_columns=_table_columns,
    config_block=True,
)

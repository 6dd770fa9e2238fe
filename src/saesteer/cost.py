"""What a grid will cost before it is submitted: cache disk, rough GPU-hours per stage, and
the LLM judge's calls, tokens and dollars.

Rough by design: FLOPs from the config (2 x parameters per token for a forward pass,
Kaplan et al. 2020, arXiv 2001.08361, plus attention scores; 12 x d_model x dict_size per
token for an SAE step: encoder and decoder matmuls, forward 4dm plus backward 8dm; steering
generation: every row's prompt and its new tokens through the whole model with a KV cache)
divided by the GPU's peak throughput times an assumed utilisation (config ``cost``). Judge calls
follow the protocols (``saesteer.judges.cost``: autointerp, 2 calls per sampled latent;
AxBench steering, 3 ratings per generation), tokens per call are typical sizes of this
project's prompts, prices those of ``judge.llm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saesteer.config import grid_from_config
from saesteer.judges import CostEstimate, JudgeConfig, autointerp_judge_calls, estimate_task, steering_judge_calls
from saesteer.models import ModelSpec

AXBENCH_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
"""AxBench's steering factors for SAEs (14); the paper uses six, values unstated."""
PAPER_N_FACTORS = 6
STEERING_CONCEPTS = 100
"""Concept100: 100 latents per SAE, their autointerp explanations as concepts."""
STEERING_INSTRUCTIONS = 10
"""Instructions per concept: 5 pick the factor, 5 are held out."""
AUTOINTERP_DEFAULT_LATENTS = 1000
"""SAEBench's n_latents, the schema default of eval.autointerp.n_latents."""
STEERING_PROMPT_TOKENS = 64
"""Typical prompt of a steering row: an AlpacaEval instruction (about 40 tokens on average)
with a chat template's markup, or a short everyday request with SmolLM2's system prompt."""

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
# token_ids int32 + context_ids int64 + positions int16, stored beside each activation row
META_BYTES_PER_TOKEN = 4 + 8 + 2


@dataclass(frozen=True)
class ModelCost:
    model: str
    cache_tokens: int
    cache_bytes: int
    cache_gpu_hours: float
    train_gpu_hours_per_sae: float
    n_saes: int

    @property
    def train_gpu_hours(self) -> float:
        return self.train_gpu_hours_per_sae * self.n_saes


def cache_flops(spec: ModelSpec, tokens: int, context_length: int) -> float:
    if spec.n_params is None:
        raise ValueError(f"model {spec.name}: set n_params in the config for a cost estimate")
    run_layers = spec.layer + 1
    # Embedding lookups cost no FLOPs: count only the block parameters when the vocab is known.
    block_params = spec.n_params - (spec.vocab_size or 0) * spec.d_model
    # Only blocks up to the hook layer run; the BOS position is computed but not kept.
    processed = tokens * context_length / (context_length - 1)
    dense = 2.0 * block_params * run_layers / spec.n_layers
    attention = 2.0 * 2.0 * run_layers * context_length * spec.d_model  # QK^T and AV, causal mask ignored
    return processed * (dense + attention)


def forward_flops(spec: ModelSpec, tokens: float, context_length: int, first_layer: int, last_layer: int, unembed: bool) -> float:
    """2 x parameters per token for blocks first..last (inclusive), plus attention scores
    and, if asked, the unembedding (2 x vocab x d_model)."""
    if spec.n_params is None:
        raise ValueError(f"model {spec.name}: set n_params in the config for a cost estimate")
    layers = last_layer - first_layer + 1
    block_params = spec.n_params - (spec.vocab_size or 0) * spec.d_model
    per_token = 2.0 * block_params * layers / spec.n_layers + 4.0 * layers * context_length * spec.d_model
    if unembed:
        per_token += 2.0 * (spec.vocab_size or 0) * spec.d_model
    return tokens * per_token


def eval_flops(spec: ModelSpec, eval_block: dict[str, Any] | None, dict_size: int) -> tuple[float, float]:
    """(per model: prepare_eval_data, per SAE: eval_interp + autointerp) forward FLOPs."""
    from saesteer.evals.config import EvalConfig

    cfg = EvalConfig.from_config(eval_block)
    ctx = cfg.core.context_length
    top = spec.n_layers - 1
    # Per model: held-out contexts through the whole model (clean logits), the zero-ablation
    # run above the hook, probing passages and first-letter prompts up to the hook.
    scanned = max(cfg.core.n_contexts, cfg.autointerp.n_contexts) * ctx
    prep = forward_flops(spec, scanned, ctx, 0, top, unembed=True)
    prep += forward_flops(spec, cfg.core.splice_contexts * ctx, ctx, spec.layer + 1, top, unembed=True)
    for task in cfg.sparse_probing.tasks:
        n_classes = len(task.classes or ()) or 2
        subtasks = 1 if n_classes == 2 else n_classes
        passages = subtasks * (cfg.sparse_probing.train_size + cfg.sparse_probing.test_size)
        prep += forward_flops(spec, passages * cfg.sparse_probing.max_tokens, cfg.sparse_probing.max_tokens, 0, spec.layer, unembed=False)
    prompt_tokens = 8 * (cfg.absorption.icl_examples + 1)  # about 8 tokens per "{word} has the first letter: X"
    prep += forward_flops(spec, cfg.absorption.max_words * prompt_tokens, prompt_tokens, 0, spec.layer, unembed=False)
    # Per SAE: the spliced run above the hook, and the SAE over every scanned token.
    per_sae = forward_flops(spec, cfg.core.splice_contexts * ctx, ctx, spec.layer + 1, top, unembed=True)
    per_sae += 4.0 * spec.d_model * dict_size * scanned
    return prep, per_sae


def steering_rows(steering_block: dict[str, Any] | None) -> int:
    """Generations of one SAE's steering eval: every (concept, factor, instruction), plus
    each baseline on the held-out instructions."""
    from saesteer.steering.config import SteeringConfig

    cfg = SteeringConfig.from_config(steering_block)
    return cfg.n_concepts_used * (cfg.n_instructions * len(cfg.factors) + len(cfg.baselines) * cfg.n_heldout)


def steering_flops(spec: ModelSpec, steering_block: dict[str, Any] | None, prompt_tokens: int = STEERING_PROMPT_TOKENS) -> float:
    """Forward FLOPs of one SAE's steering generation, every row running to max_new_tokens
    (an upper bound): the prompt through the whole model (logits at its last position only),
    then one token per step with a KV cache (attention over the prompt and half the reply
    on average)."""
    from saesteer.steering.config import SteeringConfig

    cfg = SteeringConfig.from_config(steering_block)
    rows = steering_rows(steering_block)
    top = spec.n_layers - 1
    new = cfg.max_new_tokens
    prefill = forward_flops(spec, rows * prompt_tokens, prompt_tokens, 0, top, unembed=False)
    prefill += rows * 2.0 * (spec.vocab_size or 0) * spec.d_model
    decode = forward_flops(spec, rows * new, prompt_tokens + new // 2, 0, top, unembed=True)
    return prefill + decode


def train_flops(d_model: int, dict_size: int, tokens: int) -> float:
    return 12.0 * d_model * dict_size * tokens


def estimate(config: dict[str, Any]) -> list[ModelCost]:
    grid = grid_from_config(config)
    cost = {"gpu_peak_tflops": 989.0, "mfu": 0.35, "sae_mfu": 0.25, **config.get("cost", {})}
    peak = cost["gpu_peak_tflops"] * 1e12
    cache = config["cache"]
    per_model_saes = len(grid.architectures) * len(grid.sparsities)
    out = []
    for spec in grid.models:
        tokens = int(cache["tokens"])
        row_bytes = spec.d_model * DTYPE_BYTES[cache.get("dtype", "bfloat16")] + META_BYTES_PER_TOKEN
        out.append(
            ModelCost(
                model=spec.name,
                cache_tokens=tokens,
                cache_bytes=tokens * row_bytes,
                cache_gpu_hours=cache_flops(spec, tokens, int(config["corpus"]["context_length"])) / (peak * cost["mfu"]) / 3600,
                train_gpu_hours_per_sae=train_flops(spec.d_model, int(config["sae"]["dict_size"]), int(config["training"]["tokens"]))
                / (peak * cost["sae_mfu"])
                / 3600,
                n_saes=per_model_saes,
            )
        )
    return out


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


@dataclass(frozen=True)
class JudgeCost:
    task: str
    estimate: CostEstimate
    factors: str = ""
    """Steering rows: which factor grid."""


def judge_estimate(config: dict[str, Any]) -> list[JudgeCost]:
    """Calls, tokens and dollars of the grid's judge work, priced as ``judge.llm``:
    autointerp, then steering at each factor grid (the config's ``steering.factors`` when
    there is one, else AxBench's 14 and the paper's 6)."""
    grid = grid_from_config(config)
    n_saes = len(grid.cells())
    llm = JudgeConfig.from_dict(config.get("judge")).llm
    price = (llm.price_per_m_input, llm.price_per_m_output)
    n_latents = int(((config.get("eval") or {}).get("autointerp") or {}).get("n_latents", AUTOINTERP_DEFAULT_LATENTS))
    calls = autointerp_judge_calls(n_saes, n_latents) // 2  # as many explanations as detections
    autointerp = estimate_task(calls, "explain", *price) + estimate_task(calls, "detect", *price)
    out = [JudgeCost(f"autointerp: {n_saes} SAEs x {n_latents} latents", autointerp)]
    steering = config.get("steering") or {}
    n_concepts = len(steering["concepts"]) if steering.get("concepts") else int(steering.get("n_concepts", STEERING_CONCEPTS))
    n_instructions = int(steering.get("n_instructions", STEERING_INSTRUCTIONS))
    if steering.get("factors"):
        grids = [(len(steering["factors"]), "steering.factors")]
    else:
        grids = [(len(AXBENCH_FACTORS), "AxBench"), (PAPER_N_FACTORS, "the paper")]
    # Baselines (unsteered, prompted) are rated on the held-out instructions of each concept.
    n_baselines = len(steering.get("baselines", ("unsteered", "prompted")))
    n_heldout = n_instructions - int(steering.get("n_selection", STEERING_INSTRUCTIONS // 2))
    baseline_calls = 3 * n_saes * n_concepts * n_baselines * n_heldout
    for n_factors, source in grids:
        calls = steering_judge_calls(n_saes, n_concepts, n_instructions, n_factors) + baseline_calls
        out.append(
            JudgeCost(
                f"steering: {n_saes} SAEs x {n_concepts} concepts x {n_instructions} instr. x {n_factors} factors + baselines",
                estimate_task(calls, "rating", *price),
                f"{n_factors} factors ({source})",
            )
        )
    return out


def format_judge_estimate(config: dict[str, Any]) -> list[str]:
    judge = JudgeConfig.from_dict(config.get("judge"))
    if judge.kind != "llm":
        return [
            "Judge: the offline proxy (judge.kind: offline): no API calls, no cost. "
            "Its scores are a proxy, not comparable with an LLM judge's."
        ]
    llm = judge.llm
    rows = judge_estimate(config)
    lines = [
        f"Judge: {llm.model} at {llm.base_url}, ${llm.price_per_m_input:g} / ${llm.price_per_m_output:g} per 1M "
        "prompt / completion tokens",
        "(typical tokens per call: src/saesteer/judges/cost.py)",
        "",
        f"{'task':<72}{'calls':>10}{'prompt tok':>15}{'compl. tok':>13}{'dollars':>9}",
    ]
    for r in rows:
        e = r.estimate
        lines.append(f"{r.task:<72}{e.calls:>10,}{e.prompt_tokens:>15,}{e.completion_tokens:>13,}{e.dollars:>9,.2f}")
    autointerp, steering = rows[0].estimate, rows[1:]
    totals = "; ".join(f"${(autointerp + r.estimate).dollars:,.2f} with {r.factors}" for r in steering)
    lines += [
        f"Judge total (autointerp + steering): {totals}.",
        "Cached replies (judge.cache) are never paid twice; the logs report actual usage.",
    ]
    return lines


def format_estimate(config: dict[str, Any]) -> str:
    rows = estimate(config)
    cost = {"gpu_name": "H100", "gpu_peak_tflops": 989.0, "mfu": 0.35, "sae_mfu": 0.25, "generate_mfu": 0.15, **config.get("cost", {})}
    lines = [
        f"Cost estimate ({cost['gpu_name']}, {cost['gpu_peak_tflops']:g} TFLOP/s peak, "
        f"utilisation {cost['mfu']:g} for LLM forwards, {cost['sae_mfu']:g} for SAE training, "
        f"{cost['generate_mfu']:g} for steering generation)",
        "",
        f"{'model':<16}{'cache tokens':>14}{'cache disk':>12}{'cache GPU-h':>13}{'train GPU-h/SAE':>17}{'SAEs':>6}{'train GPU-h':>13}",
    ]
    for r in rows:
        lines.append(
            f"{r.model:<16}{r.cache_tokens:>14,}{human_bytes(r.cache_bytes):>12}{r.cache_gpu_hours:>13.2f}"
            f"{r.train_gpu_hours_per_sae:>17.3f}{r.n_saes:>6}{r.train_gpu_hours:>13.2f}"
        )
    total_disk = sum(r.cache_bytes for r in rows)
    total_cache = sum(r.cache_gpu_hours for r in rows)
    total_train = sum(r.train_gpu_hours for r in rows)
    lines += [
        f"{'total':<16}{'':>14}{human_bytes(total_disk):>12}{total_cache:>13.2f}{'':>17}"
        f"{sum(r.n_saes for r in rows):>6}{total_train:>13.2f}",
        "",
        *_eval_lines(config, peak=cost["gpu_peak_tflops"] * 1e12, mfu=cost["mfu"], n_saes=sum(r.n_saes for r in rows) // max(len(rows), 1)),
        *_steering_lines(config, cost),
        f"GPU-hours by stage: cache_activations {total_cache:.1f}, train_sae {total_train:.1f}, "
        f"{_eval_totals(config, cost)}, steer_eval {sum(r[2] * r[3] for r in _steering_hours(config, cost)):.1f}. "
        "Feature selection is added here when it lands.",
        "Rough: FLOP counts over assumed utilisation; I/O, queueing and retries not included.",
        "",
        *format_judge_estimate(config),
    ]
    return "\n".join(lines)


def _eval_hours(config: dict[str, Any], cost: dict[str, Any]) -> list[tuple[str, float, float, int]]:
    peak = cost["gpu_peak_tflops"] * 1e12 * cost["mfu"]
    grid = grid_from_config(config)
    n_saes = len(grid.architectures) * len(grid.sparsities)
    out = []
    for spec in grid.models:
        prep, per_sae = eval_flops(spec, config.get("eval"), int(config["sae"]["dict_size"]))
        out.append((spec.name, prep / peak / 3600, per_sae / peak / 3600, n_saes))
    return out


def _eval_lines(config: dict[str, Any], peak: float, mfu: float, n_saes: int) -> list[str]:
    cost = {"gpu_peak_tflops": peak / 1e12, "mfu": mfu}
    lines = [f"{'model':<16}{'eval data GPU-h':>17}{'eval GPU-h/SAE':>16}{'eval GPU-h':>12}"]
    for name, prep, per_sae, n in _eval_hours(config, cost):
        lines.append(f"{name:<16}{prep:>17.2f}{per_sae:>16.3f}{prep + per_sae * n:>12.2f}")
    return lines + [""]


def _eval_totals(config: dict[str, Any], cost: dict[str, Any]) -> str:
    rows = _eval_hours(config, cost)
    prep = sum(r[1] for r in rows)
    per_sae = sum(r[2] * r[3] for r in rows)
    return f"prepare_eval_data {prep:.1f}, eval_interp + autointerp {per_sae:.1f}"


def _steering_hours(config: dict[str, Any], cost: dict[str, Any]) -> list[tuple[str, int, float, int]]:
    """(model, generations per SAE, GPU-hours per SAE, SAEs) of steering generation."""
    peak = cost["gpu_peak_tflops"] * 1e12 * cost.get("generate_mfu", 0.15)
    grid = grid_from_config(config)
    n_saes = len(grid.architectures) * len(grid.sparsities)
    block = config.get("steering")
    return [(spec.name, steering_rows(block), steering_flops(spec, block) / peak / 3600, n_saes) for spec in grid.models]


def _steering_lines(config: dict[str, Any], cost: dict[str, Any]) -> list[str]:
    from saesteer.steering.config import SteeringConfig

    cfg = SteeringConfig.from_config(config.get("steering"))
    lines = [
        f"steering: {cfg.n_concepts_used} concepts x {cfg.n_instructions} instructions x {len(cfg.factors)} factors "
        f"+ {len(cfg.baselines)} baselines x {cfg.n_heldout} held-out, up to {cfg.max_new_tokens} new tokens "
        f"(prompts of about {STEERING_PROMPT_TOKENS} tokens), batched with a KV cache",
        f"{'model':<16}{'generations/SAE':>17}{'steer GPU-h/SAE':>17}{'steer GPU-h':>13}",
    ]
    for name, rows, per_sae, n in _steering_hours(config, cost):
        lines.append(f"{name:<16}{rows:>17,}{per_sae:>17.3f}{per_sae * n:>13.2f}")
    return lines + [""]

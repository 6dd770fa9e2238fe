"""What a grid will cost before it is submitted: cache disk, rough GPU-hours per stage, and
the LLM judge's calls, tokens and dollars.

Rough by design: FLOPs from the config (2 x parameters per token for a forward pass,
Kaplan et al. 2020, arXiv 2001.08361, plus attention scores; 12 x d_model x dict_size per
token for an SAE step: encoder and decoder matmuls, forward 4dm plus backward 8dm; steering
generation: every row's prompt and its new tokens through the whole model with a KV cache;
feature selection: each intervened row's last token through the blocks above the hook and the
unembedding, plus one logit-lens unembedding per scored latent) divided by the GPU's peak
throughput times an assumed utilisation (config ``cost``). Judge calls follow the protocols
(``saesteer.judges.cost``: autointerp, 2 calls per sampled latent; AxBench steering, 3
ratings per generation, for steer_eval and for the latents steer_selected adds), tokens per
call are typical sizes of this project's prompts, prices those of ``judge.llm``.

steer_selected is an upper bound: which latents it steers depends on the selection scores,
so every latent its sets can hold is counted as new (none reused from steer_eval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saesteer.config import grid_from_config
from saesteer.judges import (
    AUTOINTERP,
    STEERING,
    CostEstimate,
    autointerp_judge_calls,
    estimate_task,
    judge_config,
    judge_configs,
    steering_judge_calls,
)
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
SELECTION_PROMPT_TOKENS = 8
"""selection.prompt ("From my experience,": 4 or 5 tokens, plus BOS): the attention context
of every intervened row of select_features."""
SELECTION_ACTIVE_FRACTION = 0.02
"""Assumed share of latents active at the prompt's last position: each takes a ``scale`` row."""
FP32_SLOWDOWN = 15
"""An H100's dense bf16 tensor-core peak over its FP32 peak (989 / 67 TFLOP/s): PyTorch's
float32 matmuls do not use TF32 unless asked, and this project does not ask."""

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
    """SAEs trained (the grid's architectures x sparsities)."""
    n_imported: int = 0
    """Pretrained SAEs imported instead (models[].pretrained): no training cost."""

    @property
    def train_gpu_hours(self) -> float:
        return self.train_gpu_hours_per_sae * self.n_saes

    @property
    def saved_gpu_hours(self) -> float:
        """What training the imported SAEs here would have cost (at the configured recipe)."""
        return self.train_gpu_hours_per_sae * self.n_imported


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
        prep += forward_flops(
            spec, passages * cfg.sparse_probing.max_tokens, cfg.sparse_probing.max_tokens, 0, spec.layer, unembed=False
        )
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


def generation_flops(spec: ModelSpec, rows: float, max_new_tokens: int, prompt_tokens: int = STEERING_PROMPT_TOKENS) -> float:
    """Forward FLOPs of ``rows`` steered generations, every row running to max_new_tokens
    (an upper bound): the prompt through the whole model (logits at its last position only),
    then one token per step with a KV cache (attention over the prompt and half the reply
    on average)."""
    top = spec.n_layers - 1
    new = max_new_tokens
    prefill = forward_flops(spec, rows * prompt_tokens, prompt_tokens, 0, top, unembed=False)
    prefill += rows * 2.0 * (spec.vocab_size or 0) * spec.d_model
    decode = forward_flops(spec, rows * new, prompt_tokens + new // 2, 0, top, unembed=True)
    return prefill + decode


def steering_flops(spec: ModelSpec, steering_block: dict[str, Any] | None, prompt_tokens: int = STEERING_PROMPT_TOKENS) -> float:
    """Forward FLOPs of one SAE's steering generation (steer_eval): :func:`generation_flops`
    of :func:`steering_rows`."""
    from saesteer.steering.config import SteeringConfig

    cfg = SteeringConfig.from_config(steering_block)
    return generation_flops(spec, steering_rows(steering_block), cfg.max_new_tokens, prompt_tokens)


def selection_latents(config: dict[str, Any]) -> int:
    """Latents select_features scores per SAE: every one (``selection.latents: all``, the
    dict_size) or only those autointerp sampled (``autointerp``: eval.autointerp.n_latents)."""
    from saesteer.selection.config import SelectionConfig

    sel = SelectionConfig.from_config(config.get("selection"))
    dict_size = int(config["sae"]["dict_size"])
    if sel.latents == "autointerp":
        n_latents = int(((config.get("eval") or {}).get("autointerp") or {}).get("n_latents", AUTOINTERP_DEFAULT_LATENTS))
        return min(n_latents, dict_size)
    return dict_size


def selection_rows_per_latent(selection_block: dict[str, Any] | None) -> float:
    """Intervened rows per scored latent (``plan_rows``): the output score (also Delta C
    add_max when alpha equals the amplification), only_max, add_max apart when alpha differs,
    and scale for the latents active on the prompt (assumed SELECTION_ACTIVE_FRACTION)."""
    from saesteer.selection.config import SelectionConfig

    sel = SelectionConfig.from_config(selection_block)
    return 2.0 + (0.0 if sel.reuse_add_max else 1.0) + SELECTION_ACTIVE_FRACTION


def select_features_flops(spec: ModelSpec, selection_block: dict[str, Any] | None, n_latents: int) -> float:
    """Forward FLOPs of one SAE's select_features: the prompt once through the whole model
    (plus the zero-intervention check row), then each intervened row's last token alone
    through the blocks above the hook, the final norm and the unembedding (attention over the
    cached prompt), plus the logit lens: one unembedding of each scored latent's decoder row.
    The SAE's own matmuls (one encode, one delta per row) are negligible."""
    top = spec.n_layers - 1
    rows = n_latents * selection_rows_per_latent(selection_block) + 1
    prompt = forward_flops(spec, SELECTION_PROMPT_TOKENS, SELECTION_PROMPT_TOKENS, 0, top, unembed=True)
    scored = forward_flops(spec, rows, SELECTION_PROMPT_TOKENS, spec.layer + 1, top, unembed=True)
    lens = n_latents * 2.0 * (spec.vocab_size or 0) * spec.d_model
    return prompt + scored + lens


def steer_selected_latents(config: dict[str, Any]) -> int:
    """Upper bound on the latents steer_selected steers per SAE beyond steer_eval's: the
    output-score set (up to steering.n_concepts, none assumed already steered) plus the
    Delta C sets, per direction the top max(k_values) (top_k) or up to n_concepts (quantile:
    each direction's sets are nested), and never more than the candidates steer_eval left
    unsteered (eval.autointerp.n_latents - n_concepts: 900 in the paper config, which
    explains 1,000 latents; candidates: concepts, its default, steers none of them anyway). 0 with a fixed steering.concepts list, where
    feature selection does not apply."""
    from saesteer.selection.config import SelectionConfig
    from saesteer.steering.config import SteeringConfig

    scfg = SteeringConfig.from_config(config.get("steering"))
    if scfg.concepts:
        return 0
    sel = SelectionConfig.from_config(config.get("selection"))
    if sel.candidates == "concepts":
        return 0  # the selected sets are subsets of steer_eval's concepts: all reused
    delta = sel.delta_conf
    per_direction = max(delta.k_values) if delta.mode == "top_k" else scfg.n_concepts
    # Only candidates steer_eval did not steer are new (the others reuse its generations).
    return min(scfg.n_concepts + len(delta.directions) * per_direction, steer_selected_unsteered_candidates(config))


def steer_selected_unsteered_candidates(config: dict[str, Any]) -> int:
    """Candidates steer_eval did not steer, at most: steer_selected picks among the latents
    autointerp explained (at most eval.autointerp.n_latents) and steer_eval steered the first
    steering.n_concepts of them. Printed beside the bound, which does not use it."""
    from saesteer.steering.config import SteeringConfig

    scfg = SteeringConfig.from_config(config.get("steering"))
    n_latents = int(((config.get("eval") or {}).get("autointerp") or {}).get("n_latents", AUTOINTERP_DEFAULT_LATENTS))
    return max(0, n_latents - scfg.n_concepts)


def steer_selected_rows(config: dict[str, Any]) -> int:
    """Generations of one SAE's steer_selected, at most: every new latent at every
    (factor, instruction), as in steer_eval, without baselines."""
    from saesteer.steering.config import SteeringConfig

    scfg = SteeringConfig.from_config(config.get("steering"))
    return steer_selected_latents(config) * scfg.n_instructions * len(scfg.factors)


def steer_selected_flops(spec: ModelSpec, config: dict[str, Any], prompt_tokens: int = STEERING_PROMPT_TOKENS) -> float:
    """Upper bound on the forward FLOPs of one SAE's steer_selected (:func:`steer_selected_rows`
    generations, each costed as in steer_eval)."""
    from saesteer.steering.config import SteeringConfig

    scfg = SteeringConfig.from_config(config.get("steering"))
    return generation_flops(spec, steer_selected_rows(config), scfg.max_new_tokens, prompt_tokens)


def steering_vectors_concepts(config: dict[str, Any]) -> int:
    """Concepts the steering_vectors rule steers per SAE: 0 unless ``steering_vectors.enabled``,
    else steer_eval's concepts, at most ``steering_vectors.max_concepts`` (0 = all)."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.vectors_config import SteeringVectorsConfig

    vcfg = SteeringVectorsConfig.from_config(config.get("steering_vectors"))
    if not vcfg.enabled:
        return 0
    n = SteeringConfig.from_config(config.get("steering")).n_concepts_used
    return min(n, vcfg.max_concepts) if vcfg.max_concepts else n


def steering_vectors_rows(config: dict[str, Any]) -> int:
    """Generations of one SAE's steering_vectors job: each method (DiffMean, naive, signed) at
    every (concept, factor, instruction) of steer_eval, no baselines (steer_eval's are reused)."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.vectors_config import SteeringVectorsConfig

    n = steering_vectors_concepts(config)
    if not n:
        return 0
    scfg = SteeringConfig.from_config(config.get("steering"))
    methods = len(SteeringVectorsConfig.from_config(config.get("steering_vectors")).methods)
    return n * methods * scfg.n_instructions * len(scfg.factors)


def steering_vectors_flops(spec: ModelSpec, config: dict[str, Any], prompt_tokens: int = STEERING_PROMPT_TOKENS) -> float:
    """Forward FLOPs of one SAE's steering_vectors generations, costed as steer_eval's (the
    DiffMean pass is one SAE encoding of the autointerp contexts: negligible)."""
    from saesteer.steering.config import SteeringConfig

    scfg = SteeringConfig.from_config(config.get("steering"))
    return generation_flops(spec, steering_vectors_rows(config), scfg.max_new_tokens, prompt_tokens)


def train_flops(d_model: int, dict_size: int, tokens: int) -> float:
    return 12.0 * d_model * dict_size * tokens


def estimate(config: dict[str, Any]) -> list[ModelCost]:
    grid = grid_from_config(config)
    cost = {"gpu_peak_tflops": 989.0, "mfu": 0.35, "sae_mfu": 0.25, **config.get("cost", {})}
    peak = cost["gpu_peak_tflops"] * 1e12
    cache = config["cache"]
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
                train_gpu_hours_per_sae=train_flops(
                    spec.d_model, int(config["sae"]["dict_size"]), int(config["training"]["tokens"])
                )
                / (peak * cost["sae_mfu"])
                / 3600,
                n_saes=trained_saes(grid, spec.name),
                n_imported=grid.n_imported(spec.name),
            )
        )
    return out


@dataclass(frozen=True)
class JudgeCost:
    task: str
    estimate: CostEstimate
    factors: str = ""
    """Steering rows: which factor grid."""
    stage: str = ""
    """The rule that makes the calls: autointerp, steer_eval or steer_selected."""


def judge_estimate(config: dict[str, Any]) -> list[JudgeCost]:
    """Calls, tokens and dollars of the grid's judge work, priced as ``judge.llm``:
    autointerp, then steering (steer_eval) at each factor grid (the config's
    ``steering.factors`` when there is one, else AxBench's 14 and the paper's 6), then
    steer_selected's new latents at each grid (an upper bound, :func:`steer_selected_latents`)."""
    grid = grid_from_config(config)
    n_saes = len(grid.cells())
    price = _prices(config, AUTOINTERP)
    n_latents = int(((config.get("eval") or {}).get("autointerp") or {}).get("n_latents", AUTOINTERP_DEFAULT_LATENTS))
    calls = autointerp_judge_calls(n_saes, n_latents) // 2  # as many explanations as detections
    autointerp = estimate_task(calls, "explain", *price) + estimate_task(calls, "detect", *price)
    out = [JudgeCost(f"autointerp: {n_saes} SAEs x {n_latents} latents", autointerp, stage="autointerp")]
    price = _prices(config, STEERING)
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
                "steer_eval",
            )
        )
    # steer_selected: the same ratings for the latents it adds, without baselines.
    n_selected = steer_selected_latents(config)
    for n_factors, source in grids:
        calls = steering_judge_calls(n_saes, n_selected, n_instructions, n_factors)
        out.append(
            JudgeCost(
                f"steer_selected, at most: {n_saes} SAEs x {n_selected} latents x {n_instructions} instr. x {n_factors} factors",
                estimate_task(calls, "rating", *price),
                f"{n_factors} factors ({source})",
                "steer_selected",
            )
        )
    # steering_vectors (only when enabled): the same ratings for each method's generations.
    n_sv = steering_vectors_concepts(config)
    if n_sv:
        from saesteer.steering.vectors_config import SteeringVectorsConfig

        methods = len(SteeringVectorsConfig.from_config(config.get("steering_vectors")).methods)
        for n_factors, source in grids:
            calls = steering_judge_calls(n_saes, n_sv * methods, n_instructions, n_factors)
            out.append(
                JudgeCost(
                    f"steering_vectors: {n_saes} SAEs x {n_sv} concepts x {methods} vectors x {n_instructions} instr. x {n_factors} factors",
                    estimate_task(calls, "rating", *price),
                    f"{n_factors} factors ({source})",
                    "steering_vectors",
                )
            )
    return out


def judge_totals(config: dict[str, Any]) -> dict[str, CostEstimate]:
    """Per factor grid (the ``factors`` label of the rows): autointerp + steer_eval +
    steer_selected (its upper bound)."""
    rows = judge_estimate(config)
    autointerp = sum((r.estimate for r in rows if r.stage == "autointerp"), CostEstimate(0, 0, 0, 0.0, 0.0))
    totals: dict[str, CostEstimate] = {}
    for r in rows:
        if r.stage != "autointerp":
            totals[r.factors] = totals.get(r.factors, autointerp) + r.estimate
    return totals


def _prices(config: dict[str, Any], purpose: str) -> tuple[float, float]:
    """Prices per 1M prompt / completion tokens of the judge of ``purpose`` (0 for a judge
    that makes no paid calls, e.g. the offline proxy)."""
    cfg = judge_config(config, purpose)
    return cfg.backend.prices(cfg) or (0.0, 0.0)


def format_judge_estimate(config: dict[str, Any]) -> list[str]:
    cfgs = judge_configs(config)
    header = cfgs[AUTOINTERP].backend.cost_header(cfgs[AUTOINTERP])
    if cfgs[STEERING] != cfgs[AUTOINTERP]:
        header += [f"steering.judge: {line}" for line in cfgs[STEERING].backend.cost_header(cfgs[STEERING])]
    if all(c.backend.prices(c) is None for c in cfgs.values()):
        return header
    rows = judge_estimate(config)
    width = max(72, max(len(r.task) for r in rows) + 2)
    lines = [
        *header,
        "",
        f"{'task':<{width}}{'calls':>10}{'prompt tok':>15}{'compl. tok':>13}{'dollars':>9}",
    ]
    for r in rows:
        e = r.estimate
        lines.append(f"{r.task:<{width}}{e.calls:>10,}{e.prompt_tokens:>15,}{e.completion_tokens:>13,}{e.dollars:>9,.2f}")
    totals = "; ".join(f"${e.dollars:,.2f} with {factors}" for factors, e in judge_totals(config).items())
    lines += [
        f"Judge total (autointerp + steer_eval + steer_selected's upper bound"
        f"{' + steering_vectors' if steering_vectors_concepts(config) else ''}): {totals}.",
        "Cached replies (judge.cache) are never paid twice; the logs report actual usage.",
    ]
    return lines


def trained_saes(grid: Any, model: str) -> int:
    """SAEs of ``model`` that train_sae trains, the one count every training and per-SAE cost
    line uses: architectures x sparsities x seed replicates (``training.seeds``: each replicate is
    one more co-trained member, so training compute grows with it, while the activation cache
    and its read by a co-training job do not). Controls that ride in the grid's architectures
    (the random-decoder SAEs, ``random-<arch>``) are counted here as members too; a control
    whose training is cheaper than a trained SAE's adjusts this one function."""
    return grid.n_trained(model)


def human_bytes(n: float) -> str:
    """Decimal units (1 TB = 1e12 bytes), as disk quotas are quoted."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def flops_lines(config: dict[str, Any]) -> list[str]:
    """The FLOP part of ``saesteer cost`` (cost_shape.format_estimate adds the job shape and
    the judge's cost after it)."""
    rows = estimate(config)
    cost = {
        "gpu_name": "H100",
        "gpu_peak_tflops": 989.0,
        "mfu": 0.35,
        "sae_mfu": 0.25,
        "generate_mfu": 0.15,
        **config.get("cost", {}),
    }
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
        *_seed_lines(config),
        "",
        *_control_lines(config),
        *_import_lines(rows),
        *_eval_lines(
            config, peak=cost["gpu_peak_tflops"] * 1e12, mfu=cost["mfu"], n_saes=sum(r.n_saes for r in rows) // max(len(rows), 1)
        ),
        *_steering_lines(config, cost),
        *_selection_lines(config, cost),
        *_steering_vectors_lines(config, cost),
        f"GPU-hours by stage: cache_activations {total_cache:.1f}, train_sae {total_train:.1f}, "
        f"{_eval_totals(config, cost)}, steer_eval {sum(r[2] * r[3] for r in _steering_hours(config, cost)):.1f}, "
        f"{_selection_totals(config, cost)}{_steering_vectors_total(config, cost)}.",
        "Rough: FLOP counts over assumed utilisation; queueing and retries not included; reads, LLM loads and job starts below.",
        "",
    ]
    return lines


def _seed_lines(config: dict[str, Any]) -> list[str]:
    """With seed replicates (training.seeds): what they multiply and what they do not."""
    seeds = grid_from_config(config).seeds
    if len(seeds) < 2:
        return []
    return [
        f"(SAEs include {len(seeds)} seed replicates of every trained cell, training.seeds {list(seeds)}: each is one more "
        "co-trained member, so training and every per-SAE stage count it; the activation cache and a co-training job's "
        "read of it do not)"
    ]


def _control_lines(config: dict[str, Any]) -> list[str]:
    """The random-decoder controls (controls.random_decoder) are SAEs of the grid like the trained
    ones: every count above and below includes them (trained with the decoder frozen: the same
    FLOPs bar the decoder's gradient, counted in full). Says how many they are."""
    grid = grid_from_config(config)
    n_controls = len(grid.control_architectures) * len(grid.sparsities)
    if not n_controls:
        return []
    n_total = len(grid.architectures) * len(grid.sparsities)
    return [
        f"Random-decoder controls (controls.random_decoder: {', '.join(grid.control_architectures)}): {n_controls} of the "
        f"{n_total} SAEs per model above, in every stage's counts below.",
        "",
    ]


def _import_lines(rows: list[ModelCost]) -> list[str]:
    """Pretrained SAEs (models[].pretrained): imported by import_sae, so no train_sae job;
    the saving is what training as many SAEs with this config's recipe would cost."""
    if not any(r.n_imported for r in rows):
        return []
    lines = [f"{'model':<16}{'imported SAEs':>15}{'train GPU-h saved':>19}"]
    for r in rows:
        lines.append(f"{r.model:<16}{r.n_imported:>15}{r.saved_gpu_hours:>19.2f}")
    lines.append(
        f"{'total':<16}{sum(r.n_imported for r in rows):>15}{sum(r.saved_gpu_hours for r in rows):>19.2f}"
        "  (import_sae: one pass over the held-out activations per SAE, negligible)"
    )
    return lines + [""]


def _eval_hours(config: dict[str, Any], cost: dict[str, Any]) -> list[tuple[str, float, float, int]]:
    peak = cost["gpu_peak_tflops"] * 1e12 * cost["mfu"]
    grid = grid_from_config(config)
    out = []
    for spec in grid.models:
        prep, per_sae = eval_flops(spec, config.get("eval"), int(config["sae"]["dict_size"]))
        out.append((spec.name, prep / peak / 3600, per_sae / peak / 3600, grid.n_cells(spec.name)))
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
    block = config.get("steering")
    return [
        (spec.name, steering_rows(block), steering_flops(spec, block) / peak / 3600, grid.n_cells(spec.name))
        for spec in grid.models
    ]


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


@dataclass(frozen=True)
class SelectionCost:
    model: str
    latents: int
    """Latents select_features scores per SAE."""
    rows: float
    """Intervened rows per SAE (scale rows: the assumed active share)."""
    select_gpu_hours_per_sae: float
    steer_latents: int
    """Upper bound on the latents steer_selected steers per SAE."""
    steer_generations: int
    steer_gpu_hours_per_sae: float
    """Upper bound."""
    n_saes: int


def selection_estimate(config: dict[str, Any]) -> list[SelectionCost]:
    """Per model: select_features at the LLM-forward utilisation (``cost.mfu``, as the
    evaluations), steer_selected's upper bound at the generation utilisation
    (``cost.generate_mfu``, as steer_eval)."""
    cost = {"gpu_peak_tflops": 989.0, "mfu": 0.35, "generate_mfu": 0.15, **config.get("cost", {})}
    peak = cost["gpu_peak_tflops"] * 1e12
    grid = grid_from_config(config)
    block = config.get("selection")
    latents = selection_latents(config)
    rows = latents * selection_rows_per_latent(block)
    n_steer, generations = steer_selected_latents(config), steer_selected_rows(config)
    return [
        SelectionCost(
            model=spec.name,
            latents=latents,
            rows=rows,
            select_gpu_hours_per_sae=select_features_flops(spec, block, latents) / (peak * cost["mfu"]) / 3600,
            steer_latents=n_steer,
            steer_generations=generations,
            steer_gpu_hours_per_sae=steer_selected_flops(spec, config) / (peak * cost["generate_mfu"]) / 3600,
            n_saes=grid.n_cells(spec.name),
        )
        for spec in grid.models
    ]


def _hours(h: float) -> str:
    """GPU-hours for the by-stage line: one decimal, or two significant digits below 0.05."""
    return f"{h:.1f}" if h >= 0.05 or h == 0 else f"{h:.2g}"


def _selection_totals(config: dict[str, Any], cost: dict[str, Any]) -> str:
    rows = selection_estimate(config)
    select = sum(r.select_gpu_hours_per_sae * r.n_saes for r in rows)
    steer = sum(r.steer_gpu_hours_per_sae * r.n_saes for r in rows)
    return f"select_features {_hours(select)}, steer_selected {_hours(steer)} at most"


def _selection_lines(config: dict[str, Any], cost: dict[str, Any]) -> list[str]:
    from saesteer.selection.config import SelectionConfig
    from saesteer.steering.config import SteeringConfig

    sel = SelectionConfig.from_config(config.get("selection"))
    scfg = SteeringConfig.from_config(config.get("steering"))
    rows = selection_estimate(config)
    if not rows:
        return []
    first = rows[0]
    kinds = "output score = Delta C add_max, only_max" if sel.reuse_add_max else "output score, Delta C add_max, only_max"
    lines = [
        f"select_features: {first.latents:,} latents per SAE (selection.latents: {sel.latents}) x "
        f"{first.rows / max(first.latents, 1):.2f} rows ({kinds}; scale on the ~{SELECTION_ACTIVE_FRACTION:.0%} active), "
        "each row's last token through the blocks above the hook + unembedding, plus one logit-lens unembedding per latent",
        f"{'model':<16}{'rows/SAE':>17}{'select GPU-s/SAE':>19}{'select GPU-h':>14}",
    ]
    for r in rows:
        lines.append(
            f"{r.model:<16}{r.rows:>17,.0f}{r.select_gpu_hours_per_sae * 3600:>19.2f}{r.select_gpu_hours_per_sae * r.n_saes:>14.3f}"
        )
    if sel.model_dtype == "float32":
        lines.append(
            f"(selection.model_dtype float32: without TF32 an H100 runs FP32 matmuls ~{FP32_SLOWDOWN}x below the bf16 peak "
            "assumed here; loading the model likely dominates either way)"
        )
    lines.append("")
    if scfg.concepts:
        return lines + ["steer_selected: none (feature selection does not apply to a fixed steering.concepts list)", ""]
    delta = sel.delta_conf
    if delta.mode == "top_k":
        dc = f"{len(delta.directions)} directions x top {max(delta.k_values)} Delta C"
    else:
        dc = f"{len(delta.directions)} directions x up to {scfg.n_concepts} Delta C (quantile tails)"
    lines += [
        f"steer_selected, an upper bound: at most {first.steer_latents} new latents per SAE (the smaller of the candidates steer_eval did not steer and the output-score set "
        f"<= {scfg.n_concepts}, none assumed reused from steer_eval, + {dc}) x {scfg.n_instructions} instructions "
        f"x {len(scfg.factors)} factors, no baselines; generation costed as steer_eval",
        f"{'model':<16}{'generations/SAE':>17}{'steer GPU-h/SAE':>17}{'steer GPU-h':>13}",
    ]
    for r in rows:
        lines.append(
            f"{r.model:<16}{r.steer_generations:>17,}{r.steer_gpu_hours_per_sae:>17.3f}{r.steer_gpu_hours_per_sae * r.n_saes:>13.2f}"
        )
    unsteered = steer_selected_unsteered_candidates(config)
    if sel.candidates == "concepts":
        lines.append(
            "(selection.candidates: concepts, the paper's design: the criteria choose among steer_eval's concepts, whose generations are reused.)"
        )
    else:
        lines.append(
            f"(selection.candidates: explained, the latents autointerp explained, eval.autointerp.n_latents = {unsteered + scfg.n_concepts}; "
            f"steer_eval steered the first {scfg.n_concepts}: at most {unsteered} per SAE can be new, the others reuse its generations.)"
        )
    return lines + [""]


def _steering_vectors_hours(config: dict[str, Any], cost: dict[str, Any]) -> list[tuple[str, int, float, int]]:
    """(model, generations per SAE, GPU-hours per SAE, SAEs) of steering_vectors (empty when disabled)."""
    if not steering_vectors_concepts(config):
        return []
    peak = cost["gpu_peak_tflops"] * 1e12 * cost.get("generate_mfu", 0.15)
    grid = grid_from_config(config)
    rows = steering_vectors_rows(config)
    return [
        (spec.name, rows, steering_vectors_flops(spec, config) / peak / 3600, trained_saes(grid, spec.name))
        for spec in grid.models
    ]


def _steering_vectors_total(config: dict[str, Any], cost: dict[str, Any]) -> str:
    rows = _steering_vectors_hours(config, cost)
    return f", steering_vectors {_hours(sum(r[2] * r[3] for r in rows))}" if rows else ""


def _steering_vectors_lines(config: dict[str, Any], cost: dict[str, Any]) -> list[str]:
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.vectors_config import SteeringVectorsConfig

    rows = _steering_vectors_hours(config, cost)
    if not rows:
        return []
    scfg = SteeringConfig.from_config(config.get("steering"))
    methods = SteeringVectorsConfig.from_config(config.get("steering_vectors")).methods
    lines = [
        f"steering_vectors (steering_vectors.enabled): {steering_vectors_concepts(config)} concepts x {len(methods)} vectors "
        f"({', '.join(methods)}) x {scfg.n_instructions} instructions x {len(scfg.factors)} factors, no baselines "
        "(steer_eval's reused); generation costed as steer_eval",
        f"{'model':<16}{'generations/SAE':>17}{'steer GPU-h/SAE':>17}{'steer GPU-h':>13}",
    ]
    for name, n_rows, per_sae, n in rows:
        lines.append(f"{name:<16}{n_rows:>17,}{per_sae:>17.3f}{per_sae * n:>13.2f}")
    return lines + [""]

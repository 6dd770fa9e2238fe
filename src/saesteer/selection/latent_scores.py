"""Per-latent feature-selection scores of one SAE, batched over latents (docs/method.md, "Feature selection").

Everything happens at the last position of one neutral prompt (``selection.prompt``,
"From my experience," in Arad et al.'s code), tokenised as every cached context starts: BOS
(for every tokenizer that has one, added even where the tokenizer does not add it by
default), then the text, no chat template. There ``x`` is the residual at
the SAE's hook point (the output of decoder block ``layer``), ``a = encode(x)`` its code,
``a_max = max_j a_j``, ``a_f`` latent f's activation and ``x_hat = decode(a)``.

**Interventions.** Every score changes the code at the last position only and decodes,
adding the SAE's error ``x - x_hat`` back (Arad et al.'s hook). Decoders here are affine
(``decode(c) = (c W_dec + b_dec) * act_scale``, checked), so each reduces to adding a vector
to ``x``, with ``d_f = act_scale * W_dec[f]`` the raw-scale decoder row:

- output score, and Delta C's ``add_max``: a_f += s * a_max          -> x + s * a_max * d_f
- Delta C ``scale``:                       a_f  = alpha * a_f         -> x + (alpha - 1) * a_f * d_f
- Delta C ``only_max``: a = alpha * a_max * e_f (others zeroed)       -> b_dec + alpha * a_max * d_f + (x - x_hat)
                                                                         = x + alpha * a_max * d_f - (x_hat - decode(0))

A test checks each against the literal encode -> edit -> decode -> add error.

**Scores.** ``p`` is the next-token distribution at the last position after the intervention.

- Output score (Arad, Mueller & Belinkov 2025): the logit-lens tokens of f are the top
  ``top_n_tokens`` of ``softmax(head(LN_final(d_f)))`` (the model's own final norm and output
  embedding); ``r`` is the best 0-based rank any of them reaches in ``p`` (the number of
  tokens strictly more probable than the most probable of them: their code's argsort rank,
  ties aside), ``prob`` the largest of their probabilities; score = ``(1 - r / |V|) * prob``.
- Delta Token Confidence (Wang et al. 2025, sec. 4.1): ``C_k(p) = -(1/k) sum_{top-k} log p_j``
  and ``Delta C = C_k(p) - C_k(p_base)``, for each amplify mode.

**Batching.** Only the last position changes, and only from block ``layer`` on. So the prompt
runs once (B = 1) to get ``x`` and a KV cache of the prefix (all tokens but the last); then
each batch of B interventions runs the last token alone through the blocks *above* the hook,
with the prefix cache expanded to B rows and blocks ``0..layer`` swapped for the injected
residual ``x + delta`` (:class:`saesteer.evals.splice.UpperRunner`'s patching). Logits are
made from the final hidden states a chunk of rows at a time (about 64 MB of float32) and
reduced at once to (C_k, best rank, best probability): the [B, |V|] logits of a 262k
vocabulary are never all held. Rows whose intervention is exactly zero (``scale`` on a latent
silent on the prompt) get Delta C = 0 without a forward. Before scoring, the zero-delta path
must reproduce the model's own forward (a check that fails loudly on an architecture whose
blocks this patching does not fit); a test checks the batched scores against the plain
per-latent loop (:func:`reference_latent_scores`, one full forward per latent and mode).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from saesteer.cache.capture import decoder_layers
from saesteer.devices import is_oom
from saesteer.evals.splice import UpperRunner, base_model, head_logits, logit_chunk_tokens
from saesteer.prompting import text_ids
from saesteer.sae.base import BaseSAE
from saesteer.selection.config import AMPLIFY_MODES, SelectionConfig, SelectionError

log = logging.getLogger(__name__)

# Row kinds: which intervention a forward row carries.
OUT, ADD, ONLY, SCALE = 0, 1, 2, 3
"""OUT: a_f += s * a_max (the output score; also Delta C add_max when alpha == s);
ADD: a_f += alpha * a_max (Delta C add_max when alpha != s); ONLY: only_max; SCALE: scale."""

SCORE_COLUMNS = (
    "a_f",
    "output_score",
    "output_rank",
    "output_prob",
    "delta_conf",
    "delta_conf_scale",
    "delta_conf_add_max",
    "delta_conf_only_max",
)


# ---- pieces ----------------------------------------------------------------------------------


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's ids as every cached context starts: BOS (where the tokenizer has one,
    whether or not it adds it by default; SmolLM2's does not), then the text without special
    tokens (saesteer.prompting.text_ids). No chat template: the scores read the SAE's
    training distribution, plain text."""
    ids = text_ids(tokenizer, prompt)
    bos = getattr(tokenizer, "bos_token_id", None)
    if len(ids) - (1 if bos is not None else 0) < 1:
        raise SelectionError(f"selection.prompt {prompt!r} tokenises to nothing")
    return ids


def check_affine_decoder(sae: BaseSAE) -> None:
    """The intervention algebra assumes BaseSAE's affine decoder; refuse an SAE that overrides it."""
    if type(sae).decode_normalized is not BaseSAE.decode_normalized or type(sae).decode is not BaseSAE.decode:
        raise SelectionError(
            f"{type(sae).__name__} overrides the affine decoder; selection scores assume decode(c) = (c W_dec + b_dec) * act_scale"
        )


def decoder_rows(sae: BaseSAE) -> Tensor:
    """[d_sae, d_in] raw-scale decoder rows d_f = act_scale * W_dec[f] (float32): what
    raising latent f by 1 adds to the residual."""
    return sae.W_dec.detach().float() * sae.act_scale.float()


def final_norm(model: nn.Module) -> nn.Module:
    """The decoder stack's final norm (the LM head's input normalisation)."""
    base = base_model(model)
    for name in ("norm", "final_layernorm", "final_layer_norm", "ln_f"):
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    raise SelectionError(f"cannot find the final norm of {type(model).__name__} (looked for norm, final_layernorm, ln_f)")


@torch.inference_mode()
def logit_lens(model: nn.Module, rows: Tensor, top_n: int) -> Tensor:
    """[n, top_n] int64 (CPU): the top tokens of softmax(head(LN_final(row))) for each row
    [n, d], chunk by chunk (a [chunk, |V|] float32 block stays about 64 MB)."""
    norm = final_norm(model)
    param = next(model.parameters())
    vocab = model.get_output_embeddings().weight.shape[0]
    if top_n > vocab:
        raise SelectionError(f"selection.output_score.top_n_tokens {top_n} exceeds the vocabulary ({vocab})")
    step = logit_chunk_tokens(vocab)
    out = []
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step].to(device=param.device, dtype=param.dtype)
        logits = head_logits(model, norm(chunk[:, None, :])[:, 0])
        out.append(logits.topk(top_n, dim=-1).indices.cpu())
    return torch.cat(out) if out else torch.zeros(0, top_n, dtype=torch.long)


def token_confidence(logp: Tensor, k: int) -> Tensor:
    """C_k = -(1/k) sum of the k largest log-probabilities, per row of ``logp`` [B, V]."""
    return -logp.topk(k, dim=-1).values.mean(-1)


@dataclass
class RowStats:
    """Per-row reductions of a next-token distribution."""

    confidence: Tensor
    """[B] C_k."""
    best_logp: Tensor
    """[B] the largest log-probability among the row's logit-lens tokens."""
    rank: Tensor
    """[B] int64: tokens strictly more probable than that token (its 0-based rank)."""
    vocab: int


def stats_from_logits(logits: Tensor, lens_ids: Tensor, k: int) -> RowStats:
    """Reduce logits [B, V] (float32) at once: C_k, and the best logit-lens token's log-prob and rank."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    conf = token_confidence(logp, k)
    best = logp.gather(1, lens_ids.to(logp.device)).max(dim=1).values
    rank = (logp > best[:, None]).sum(dim=1)
    return RowStats(conf.cpu(), best.cpu(), rank.cpu(), int(logits.shape[-1]))


@torch.inference_mode()
def stats_from_hidden(model: nn.Module, hidden: Tensor, lens_ids: Tensor, k: int) -> RowStats:
    """:func:`stats_from_logits` of head_logits(hidden) [B, d], a ~64 MB chunk of rows at a time."""
    vocab = model.get_output_embeddings().weight.shape[0]
    step = logit_chunk_tokens(vocab)
    parts = [
        stats_from_logits(head_logits(model, hidden[s : s + step]), lens_ids[s : s + step], k)
        for s in range(0, hidden.shape[0], step)
    ]
    return RowStats(
        torch.cat([p.confidence for p in parts]),
        torch.cat([p.best_logp for p in parts]),
        torch.cat([p.rank for p in parts]),
        parts[0].vocab if parts else vocab,
    )


def output_score(stats: RowStats) -> Tensor:
    """(1 - r / |V|) * p of each row (float64)."""
    return (1.0 - stats.rank.double() / stats.vocab) * stats.best_logp.double().exp()


# ---- the prompt, once ------------------------------------------------------------------------


def _output_hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


@torch.inference_mode()
def full_forward(
    model: nn.Module, layer: int, token_ids: Sequence[int], edit: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """One plain forward of the prompt: (block ``layer``'s output at the last position [d],
    the model's logits at the last position [V] float32). ``edit`` (the literal per-latent
    path) maps the last position's block output [d] to its replacement."""
    block = decoder_layers(model)[layer]
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = _output_hidden(output)
        captured["x"] = hidden[0, -1].detach().clone()
        if edit is None:
            return None
        hidden = hidden.clone()
        hidden[0, -1] = edit(hidden[0, -1].float()).to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook)
    device = next(model.parameters()).device
    try:
        logits = model(input_ids=torch.tensor([list(token_ids)], device=device), use_cache=False).logits[0, -1].float()
    finally:
        handle.remove()
    return captured["x"], logits


def _make_cache(model: nn.Module) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older signature
        return DynamicCache()


class LastPositionRunner:
    """Runs the prompt's last position from given hook-point residuals, many rows per forward.

    ``final_hidden(residuals [B, d])`` -> the final hidden states [B, d] (the LM head's input)
    of the last position when block ``layer`` outputs ``residuals[b]`` there, the prefix
    unchanged: the last token alone through the blocks above the hook, against a KV cache of
    the prefix computed once.
    """

    def __init__(self, model: nn.Module, layer: int, token_ids: Sequence[int]):
        self.model = model
        self.layer = layer
        self.token_ids = [int(t) for t in token_ids]
        self.upper = UpperRunner(model, layer)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.length = len(self.token_ids)
        self.prefix_cache = None
        if self.length > 1:
            self.prefix_cache = _make_cache(model)
            with torch.inference_mode():
                model(
                    input_ids=torch.tensor([self.token_ids[:-1]], device=self.device),
                    past_key_values=self.prefix_cache,
                    use_cache=True,
                )

    @torch.inference_mode()
    def final_hidden(self, residuals: Tensor) -> Tensor:
        b = residuals.shape[0]
        last = torch.full((b, 1), self.token_ids[-1], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {
            "position_ids": torch.full((b, 1), self.length - 1, dtype=torch.long, device=self.device),
            "attention_mask": torch.ones((b, self.length), dtype=torch.long, device=self.device),
        }
        if self.prefix_cache is not None:
            cache = copy.deepcopy(self.prefix_cache)
            cache.batch_repeat_interleave(b)
            kwargs.update(past_key_values=cache, use_cache=True)
        else:
            kwargs["use_cache"] = False
        with self.upper._patched(residuals.to(device=self.device, dtype=self.dtype)[:, None, :]):
            out = self.upper.base(input_ids=last, **kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden[:, -1]


@dataclass
class PromptState:
    """What the prompt gives once: the residual, the code and the base distribution."""

    token_ids: list[int]
    x: Tensor
    """[d] float32: block ``layer``'s output at the last position."""
    codes: Tensor
    """[d_sae] float32: encode(x)."""
    a_max: float
    recon_offset: Tensor
    """[d] float32: x_hat - decode(0) = sum_j a_j d_j (what only_max removes)."""
    base_confidence: float
    """C_k of the unintervened next-token distribution (the batched path's, zero delta)."""
    base_logits: Tensor
    """[V] float32: the model's own logits at the last position (plain forward)."""
    path_gap: float
    """max |logits| difference between the batched path at zero delta and the plain forward."""


@torch.inference_mode()
def prompt_state(model: nn.Module, sae: BaseSAE, runner: LastPositionRunner, k: int) -> PromptState:
    x, base_logits = full_forward(model, runner.layer, runner.token_ids)
    x = x.float()
    sae_param = next(sae.parameters())
    xs = x.to(device=sae_param.device, dtype=sae_param.dtype)
    codes = sae.encode(xs[None])[0].float()
    offset = (sae.decode(codes[None].to(sae_param.dtype)) - sae.decode(torch.zeros_like(codes[None]).to(sae_param.dtype)))[
        0
    ].float()
    zero = runner.final_hidden(x[None])
    zero_logits = head_logits(model, zero)
    gap = float((zero_logits[0] - base_logits).abs().max())
    scale = float(base_logits.abs().max())
    tol = 1e-3 if runner.dtype == torch.float32 else 5e-2
    if gap > tol * max(1.0, scale):
        raise SelectionError(
            f"{type(model).__name__}: running the last position above block {runner.layer} from the cached prefix gives "
            f"logits {gap:.3g} away from the plain forward (scale {scale:.3g}); the batched path does not fit this architecture"
        )
    conf = float(token_confidence(torch.log_softmax(zero_logits.float(), dim=-1), k)[0])
    return PromptState(
        list(runner.token_ids),
        x.cpu(),
        codes.cpu(),
        float(codes.max()) if codes.numel() else 0.0,
        offset.cpu(),
        conf,
        base_logits.cpu(),
        gap,
    )


# ---- the batched scores ----------------------------------------------------------------------


@dataclass
class ScoringStats:
    rows: int = 0
    """Intervened rows run through the model."""
    skipped_rows: int = 0
    """Rows with an exactly zero intervention (scale on a silent latent): Delta C = 0, no forward."""
    forwards: int = 0
    batch_size: int = 0
    oom_retries: int = 0
    logit_lens_seconds: float = 0.0
    scoring_seconds: float = 0.0


@dataclass
class LatentScores:
    latents: Tensor
    """[n] int64, the scored latents in the order asked for."""
    columns: dict[str, Tensor]
    """SCORE_COLUMNS -> [n] (output_rank int64, the rest float64)."""
    logit_lens_ids: Tensor
    """[n, top_n] int64."""
    state: PromptState
    stats: ScoringStats = field(default_factory=ScoringStats)


def plan_rows(state: PromptState, latents: Tensor, cfg: SelectionConfig) -> tuple[Tensor, Tensor, Tensor, int]:
    """Rows to run: (position in ``latents`` [R], kind [R], coefficient on d_f [R], skipped).

    Per latent: OUT (s * a_max), ONLY (alpha * a_max, minus the reconstruction), ADD
    (alpha * a_max) unless alpha == s, and SCALE ((alpha - 1) * a_f) unless that is exactly 0.
    """
    n = latents.numel()
    s, alpha = float(cfg.output_score.amplification), float(cfg.delta_conf.alpha)
    a_f = state.codes.double()[latents]
    pos = torch.arange(n)
    parts = [
        (pos, OUT, torch.full((n,), s * state.a_max, dtype=torch.float64)),
        (pos, ONLY, torch.full((n,), alpha * state.a_max, dtype=torch.float64)),
    ]
    if not cfg.reuse_add_max:
        parts.append((pos, ADD, torch.full((n,), alpha * state.a_max, dtype=torch.float64)))
    scale_coef = (alpha - 1.0) * a_f
    active = scale_coef != 0
    parts.append((pos[active], SCALE, scale_coef[active]))
    position = torch.cat([p for p, _, _ in parts])
    kind = torch.cat([torch.full((p.numel(),), k, dtype=torch.long) for p, k, _ in parts])
    coef = torch.cat([c for _, _, c in parts])
    return position, kind, coef, int(n - int(active.sum()))


def intervention_deltas(rows: Tensor, state: PromptState, latent: Tensor, kind: Tensor, coef: Tensor) -> Tensor:
    """[R, d] float32 vectors added to x: coef * d_f, minus the reconstruction for ONLY rows."""
    delta = coef.to(rows.dtype)[:, None].to(rows.device) * rows.index_select(0, latent.to(rows.device))
    only = (kind == ONLY).to(rows.device)
    if bool(only.any()):
        delta[only] -= state.recon_offset.to(rows.device, rows.dtype)
    return delta


@torch.inference_mode()
def score_latents(
    model: nn.Module,
    tokenizer: Any,
    sae: BaseSAE,
    layer: int,
    cfg: SelectionConfig,
    latents: Sequence[int] | Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    adaptive: bool | None = None,
) -> LatentScores:
    """Output score and Delta Token Confidence (all three amplify modes) of ``latents`` (all
    by default), ``cfg.batch_size`` intervened rows per forward. ``adaptive`` (default: on
    CUDA) halves the batch on out-of-memory and retries."""
    check_affine_decoder(sae)
    stats = ScoringStats()
    device = next(model.parameters()).device
    adaptive = device.type == "cuda" if adaptive is None else adaptive
    lat = torch.arange(sae.d_sae) if latents is None else torch.as_tensor(latents, dtype=torch.long).reshape(-1)
    if lat.numel() and (int(lat.min()) < 0 or int(lat.max()) >= sae.d_sae):
        raise SelectionError(f"latents must lie in 0..{sae.d_sae - 1}")
    k = int(cfg.delta_conf.k)
    runner = LastPositionRunner(model, layer, prompt_token_ids(tokenizer, cfg.prompt))
    state = prompt_state(model, sae, runner, k)
    if state.a_max <= 0:
        log.warning("no latent is active at the prompt's last position (a_max = 0): every add_max/only_max intervention is empty")
    rows = decoder_rows(sae).to(device)

    mark = time.perf_counter()
    lens_ids = logit_lens(model, rows[lat.to(device)], int(cfg.output_score.top_n_tokens))
    stats.logit_lens_seconds = time.perf_counter() - mark

    mark = time.perf_counter()
    position, kind, coef, skipped = plan_rows(state, lat, cfg)
    stats.skipped_rows = skipped
    n, total = lat.numel(), position.numel()
    conf = torch.full((4, n), float("nan"), dtype=torch.float64)  # per kind
    best = torch.full((n,), float("nan"), dtype=torch.float64)
    rank = torch.full((n,), -1, dtype=torch.long)
    vocab = model.get_output_embeddings().weight.shape[0]
    size = max(1, int(cfg.batch_size))
    start = 0
    while start < total:
        sl = slice(start, min(start + size, total))
        try:
            delta = intervention_deltas(rows, state, lat[position[sl]], kind[sl], coef[sl])
            hidden = runner.final_hidden(state.x.to(device)[None] + delta)
            rs = stats_from_hidden(model, hidden, lens_ids[position[sl]], k)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not (adaptive and is_oom(exc)) or size == 1:
                raise
            size = max(1, size // 2)
            stats.oom_retries += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory with %d rows per forward: retrying with %d", sl.stop - sl.start, size)
            continue
        vocab = rs.vocab
        pos, kd = position[sl], kind[sl]
        conf[kd, pos] = rs.confidence.double()
        out = kd == OUT
        best[pos[out]] = rs.best_logp.double()[out]
        rank[pos[out]] = rs.rank[out]
        stats.forwards += 1
        start = sl.stop
        if progress is not None:
            progress(start, total)
    stats.rows = total
    stats.batch_size = size
    stats.scoring_seconds = time.perf_counter() - mark

    base = state.base_confidence
    delta = conf - base
    add_max = delta[OUT] if cfg.reuse_add_max else delta[ADD]
    scale = delta[SCALE].nan_to_num(nan=0.0)  # rows skipped: exactly no intervention
    columns = {
        "a_f": state.codes.double()[lat],
        "output_score": (1.0 - rank.double() / vocab) * best.exp(),
        "output_rank": rank,
        "output_prob": best.exp(),
        "delta_conf_scale": scale,
        "delta_conf_add_max": add_max,
        "delta_conf_only_max": delta[ONLY],
    }
    columns["delta_conf"] = columns[f"delta_conf_{cfg.delta_conf.amplify}"]
    return LatentScores(lat, {c: columns[c] for c in SCORE_COLUMNS}, lens_ids, state, stats)


# ---- the plain per-latent reference ----------------------------------------------------------


@torch.inference_mode()
def reference_latent_scores(
    model: nn.Module,
    tokenizer: Any,
    sae: BaseSAE,
    layer: int,
    cfg: SelectionConfig,
    latents: Sequence[int],
    modes: Sequence[str] = ("output",) + AMPLIFY_MODES,
) -> dict[str, list[float]]:
    """The scores the plain way, as Arad et al.'s code computes the output score: per latent
    and intervention, a full forward of the prompt with a hook on block ``layer`` that
    encodes the last position, edits the code, decodes and adds the error term back.
    Returns SCORE_COLUMNS -> values (the modes not asked for are left out). The definition
    the batched path is tested against, and the benchmark's baseline."""
    ids = prompt_token_ids(tokenizer, cfg.prompt)
    k, s, alpha = int(cfg.delta_conf.k), float(cfg.output_score.amplification), float(cfg.delta_conf.alpha)
    param = next(sae.parameters())
    x, base_logits = full_forward(model, layer, ids)
    base_conf = float(token_confidence(torch.log_softmax(base_logits[None], -1), k)[0])
    codes = sae.encode(x.to(param.device, param.dtype)[None])[0]
    latents = [int(f) for f in latents]
    lens = logit_lens(model, decoder_rows(sae)[torch.tensor(latents, dtype=torch.long)], int(cfg.output_score.top_n_tokens))
    out: dict[str, list[float]] = {c: [] for c in SCORE_COLUMNS}

    def literal(f: int, how: str) -> Callable[[Tensor], Tensor]:
        def edit(x_last: Tensor) -> Tensor:
            xs = x_last.to(param.device, param.dtype)[None]
            a = sae.encode(xs)
            error = xs - sae.decode(a)
            edited = a.clone()
            if how == "add_s":
                edited[0, f] += s * float(a.max())
            elif how == "add_max":
                edited[0, f] += alpha * float(a.max())
            elif how == "scale":
                edited[0, f] = alpha * a[0, f]
            elif how == "only_max":
                edited = torch.zeros_like(a)
                edited[0, f] = alpha * float(a.max())
            return (sae.decode(edited) + error)[0].float()

        return edit

    for i, f in enumerate(latents):
        out["a_f"].append(float(codes[f]))
        results: dict[str, RowStats] = {}
        wanted = {"add_s"} if "output" in modes else set()
        wanted |= {m for m in AMPLIFY_MODES if m in modes and m != "add_max"}
        if "add_max" in modes:
            wanted.add("add_s" if cfg.reuse_add_max else "add_max")
        for how in sorted(wanted):
            _, logits = full_forward(model, layer, ids, literal(f, how))
            results[how] = stats_from_logits(logits[None], lens[i : i + 1], k)
        if "output" in modes:
            r = results["add_s"]
            out["output_rank"].append(int(r.rank[0]))
            out["output_prob"].append(float(r.best_logp[0].double().exp()))
            out["output_score"].append(float(output_score(r)[0]))
        for mode in AMPLIFY_MODES:
            if mode in modes:
                how = "add_s" if mode == "add_max" and cfg.reuse_add_max else mode
                out[f"delta_conf_{mode}"].append(float(results[how].confidence[0]) - base_conf)
        if cfg.delta_conf.amplify in modes:
            out["delta_conf"].append(out[f"delta_conf_{cfg.delta_conf.amplify}"][-1])
    return {c: v for c, v in out.items() if v or not latents}

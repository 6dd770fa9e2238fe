"""Batched steered generation: many (concept, factor, instruction) rows in one forward.

Each row has its own steering vector: a forward hook on decoder block ``layer`` (the hook
point ``blocks.{layer}.hook_resid_post``, the SAE's) adds ``coef[b] * directions[idx[b]]``
to the block's output at every position of row ``b``, prompt included, on the prompt's
forward and on every decoding step. Rows are left-padded; the attention mask hides the
padding and position ids count real tokens only, so a row's logits do not depend on how
long its neighbours are. A KV cache makes each decoding step one token per row; rows that
finish (EOS) leave the batch (cache, mask, vectors and random numbers are compacted).

Sampling is reproducible row by row: each row owns a CPU ``torch.Generator`` seeded with
the row's seed, from which it draws ``max_new_tokens`` uniform numbers when its batch
starts (moved to the device in one copy); the token at step t is found by inverse CDF, the
first whose cumulative ``softmax(logits / T)`` exceeds number t (an exact draw; one number
per token instead of a Gumbel vector over a 262k vocabulary). What a row generates
therefore depends only on its prompt, its steering vector and its seed, never on the batch
it shares (up to floating-point differences of batched matmuls, which move a draw only
when it falls within about 1e-7 of a token boundary), which a test checks against the
one-row path. Temperature 0 is greedy.

Rows that share a prompt share the prompt's forward below the hook: the steering vector
enters at the output of block ``layer``, so blocks ``0..layer`` compute the same thing for
every row with the same prompt (the demo steers 3 factors x several vectors per prompt).
The prompt forward runs those blocks once per distinct prompt (stopped at the hook), then
once more for every row with blocks ``0..layer`` replaced by a replay of their KV cache
entries and of block ``layer``'s output; only the blocks above the hook run per row
(:func:`shared_prefix_logits`; ``share_prefix=False`` runs every row through every block,
and a test checks the two agree). Decoding steps are per row either way.

Batches hold rows of similar prompt length: rows are sorted by prompt length and cut into
consecutive batches of ``batch_size`` (a large grid gives batches of nearly equal lengths;
a small one runs as one batch, cheaper than two because every decoding step reads all the
weights). On out-of-memory the batch size is halved and the batch retried (same seeds,
same result); the size that worked is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from saesteer.cache.capture import decoder_layers
from saesteer.devices import is_oom
from saesteer.prompting import PromptFormatError, check_prompt_format, has_chat_template, prompt_ids, stop_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenRow:
    """One generation to make: prompt token ids, steering (a direction index and its
    coefficient; index -1 = no steering) and the seed of its sampling noise."""

    prompt_ids: tuple[int, ...]
    direction: int = -1
    coef: float = 0.0
    seed: int = 0


@dataclass
class Generated:
    token_ids: list[int]
    """New tokens, the stop token excluded."""
    finished: bool
    """True if the row stopped on a stop token, False if it hit max_new_tokens."""


@dataclass
class GenStats:
    rows: int = 0
    new_tokens: int = 0
    prompt_tokens: int = 0
    padded_prompt_tokens: int = 0
    forward_tokens: int = 0
    """Token positions run through the model (padding included)."""
    seconds: float = 0.0
    batch_size: int = 0
    """The batch size that worked (after halvings on out-of-memory)."""
    oom_retries: int = 0
    batches: int = 0
    prefix_shared_rows: int = 0
    """Rows whose prompt forward below the hook was another row's (same prompt)."""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


class SteeringHook:
    """Forward hook adding a per-row vector [B, d] to a block's output [B, T, d]."""

    def __init__(self) -> None:
        self.vectors: Tensor | None = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self.vectors is None:
            return None
        if isinstance(output, tuple):
            hidden = output[0]
            return (hidden + self.vectors[:, None, :].to(hidden.dtype), *output[1:])
        return output + self.vectors[:, None, :].to(output.dtype)


def _pad_id(model: Any, tokenizer: Any, stop: set[int]) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(model.config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return min(stop) if stop else 0


def top_k_logits(logits: Tensor, top_k: int) -> Tensor:
    """``logits`` with every entry below a row's ``top_k``-th largest set to -inf (ties with
    it kept), as transformers' TopKLogitsWarper; ``top_k`` 0 or >= the vocabulary: unchanged."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_tokens(logits: Tensor, u: Tensor, temperature: float, top_k: int = 0) -> Tensor:
    """One token per row of ``logits`` [B, V]: greedy at temperature 0, else an exact draw
    from ``softmax(logits / T)`` restricted to the row's ``top_k`` most probable tokens (0:
    the whole vocabulary), by inverse CDF on the row's uniform number ``u`` [B]. AxBench
    samples with transformers' defaults, do_sample=True, temperature 1 and top_k 50."""
    if temperature <= 0:
        return logits.argmax(-1)
    cdf = torch.softmax(top_k_logits(logits.float() / temperature, top_k), dim=-1).cumsum_(-1)
    # First index whose cumulative probability exceeds u * total (the total is 1 up to rounding).
    index = torch.searchsorted(cdf, (u.to(cdf) * cdf[:, -1])[:, None], right=True)[:, 0]
    return index.clamp_max(logits.shape[-1] - 1)


def row_uniforms(seeds: Sequence[int], n: int) -> Tensor:
    """[len(seeds), n] uniform numbers, row i from a CPU generator seeded with ``seeds[i]``."""
    return torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in seeds])


def _make_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older signature
        return DynamicCache()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass at the hook point."""


def _cache_layers(cache: Any) -> list[Any] | None:
    layers = getattr(cache, "layers", None)
    return list(layers) if isinstance(layers, (list, tuple)) else None


@torch.inference_mode()
def shared_prefix_logits(
    model: nn.Module,
    layer: int,
    hook: SteeringHook,
    rows: Sequence[GenRow],
    input_ids: Tensor,
    mask: Tensor,
    positions: Tensor,
    cache: Any,
) -> Tensor | None:
    """Last-position logits of the (left-padded) prompt batch, with blocks ``0..layer`` run
    once per distinct prompt; fills ``cache`` as a plain forward would. None (nothing done,
    ``cache`` untouched) when no two rows share a prompt or the model's cache or blocks do
    not have the expected form (the caller then runs the plain forward).

    1. The distinct prompts go through the model up to block ``layer``'s output (the
       steering hook off, a hook there ends the pass), into a cache of their own.
    2. Every row goes through the model with blocks ``0..layer`` replaced by a replay: each
       appends its KV entries of the row's prompt to ``cache`` (as its attention would) and
       passes the hidden state on; block ``layer`` returns the prompt's output, to which
       the steering hook then adds the row's vector. Blocks above run as usual.
    """
    owner: dict[tuple[int, ...], int] = {}
    first: list[int] = []
    expand_list: list[int] = []
    for i, r in enumerate(rows):
        if r.prompt_ids not in owner:
            owner[r.prompt_ids] = len(first)
            first.append(i)
        expand_list.append(owner[r.prompt_ids])
    if len(first) == len(rows):
        return None
    blocks = decoder_layers(model)
    device = input_ids.device
    pick = torch.tensor(first, dtype=torch.long, device=device)
    expand = torch.tensor(expand_list, dtype=torch.long, device=device)
    prefix_cache = _make_cache(model)
    captured: dict[str, Any] = {}

    def stop(module: nn.Module, args: Any, output: Any) -> Any:
        captured["output"] = output
        raise _StopForward

    vectors, hook.vectors = hook.vectors, None
    handle = blocks[layer].register_forward_hook(stop)
    try:
        model(
            input_ids=input_ids.index_select(0, pick),
            attention_mask=mask.index_select(0, pick),
            position_ids=positions.index_select(0, pick),
            past_key_values=prefix_cache,
            use_cache=True,
            logits_to_keep=1,
        )
    except _StopForward:
        pass
    finally:
        handle.remove()
        hook.vectors = vectors
    layers = _cache_layers(prefix_cache)
    if "output" not in captured or layers is None or len(layers) <= layer:
        return None
    width = input_ids.shape[1]
    kv: list[tuple[Tensor, Tensor]] = []
    for cached in layers[: layer + 1]:
        keys, values = getattr(cached, "keys", None), getattr(cached, "values", None)
        # A sliding-window layer that dropped positions cannot be replayed by appending.
        if not isinstance(keys, Tensor) or not isinstance(values, Tensor) or keys.shape[-2] != width:
            return None
        kv.append((keys.index_select(0, expand), values.index_select(0, expand)))
    output = captured["output"]
    is_tuple = isinstance(output, tuple)
    hidden = (output[0] if is_tuple else output).index_select(0, expand)

    def replay(index: int) -> Callable[..., Any]:
        def forward(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
            target = kwargs.get("past_key_values", kwargs.get("past_key_value"))
            if target is None:
                raise RuntimeError("shared prefix: the decoder block was called without its cache")
            target.update(kv[index][0], kv[index][1], index)
            out = hidden if index == layer else hidden_states
            return (out, *output[1:]) if is_tuple else out

        return forward

    replayed = blocks[: layer + 1]
    for index, block in enumerate(replayed):
        block.forward = replay(index)
    try:
        return model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
    finally:
        for block in replayed:
            del block.forward


@torch.inference_mode()
def _generate_batch(
    model: nn.Module,
    hook: SteeringHook,
    rows: Sequence[GenRow],
    directions: Tensor | None,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    stop: set[int],
    pad_id: int,
    stats: GenStats,
    layer: int | None = None,
) -> list[Generated]:
    """One batch of rows; ``layer`` (the hooked block) turns on the shared prompt prefix."""
    device = next(model.parameters()).device
    b = len(rows)
    width = max(len(r.prompt_ids) for r in rows)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, width - len(r.prompt_ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    if directions is not None:
        idx = torch.tensor([max(r.direction, 0) for r in rows], device=directions.device)
        coef = torch.tensor([r.coef if r.direction >= 0 else 0.0 for r in rows], dtype=torch.float32, device=directions.device)
        hook.vectors = (coef[:, None] * directions.index_select(0, idx).float()).to(device)
    else:
        hook.vectors = None
    uniforms = row_uniforms([r.seed for r in rows], max_new_tokens).to(device)
    out_tokens: list[list[int]] = [[] for _ in rows]
    finished = [False] * b
    alive = list(range(b))  # original row index of each live batch row
    cache = _make_cache(model)
    stats.prompt_tokens += sum(len(r.prompt_ids) for r in rows)
    stats.padded_prompt_tokens += b * width
    stats.forward_tokens += b * width
    logits = None
    if layer is not None:
        logits = shared_prefix_logits(model, layer, hook, rows, input_ids, mask, positions, cache)
        if logits is not None:
            stats.prefix_shared_rows += b - len(set(r.prompt_ids for r in rows))
    if logits is None:
        logits = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
    last_pos = positions[:, -1]
    for step in range(max_new_tokens):
        tokens = sample_tokens(logits, uniforms[:, step], temperature, top_k).tolist()
        keep = []
        for j, token in enumerate(tokens):
            row = alive[j]
            if token in stop:
                finished[row] = True
            else:
                out_tokens[row].append(int(token))
                keep.append(j)
        stats.new_tokens += len(tokens)
        if not keep or step == max_new_tokens - 1:
            break
        next_ids = torch.tensor(tokens, dtype=torch.long, device=device)
        if len(keep) < len(alive):  # drop finished rows from everything that is per row
            sel = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(sel)
            mask, last_pos, next_ids = mask.index_select(0, sel), last_pos.index_select(0, sel), next_ids.index_select(0, sel)
            if hook.vectors is not None:
                hook.vectors = hook.vectors.index_select(0, sel)
            uniforms = uniforms.index_select(0, sel)
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=device)], dim=1)
        last_pos = last_pos + 1
        stats.forward_tokens += len(alive)
        logits = model(
            input_ids=next_ids[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
    hook.vectors = None
    return [Generated(out_tokens[i], finished[i]) for i in range(b)]


def generate(
    model: nn.Module,
    layer: int,
    rows: Sequence[GenRow],
    directions: Tensor | None,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    stop: set[int],
    pad_id: int,
    batch_size: int,
    adaptive: bool = True,
    progress: Callable[[int, int], None] | None = None,
    stats: GenStats | None = None,
    share_prefix: bool = True,
) -> tuple[list[Generated], GenStats]:
    """Generate every row, ``batch_size`` rows of similar prompt length per forward (halved
    on out-of-memory when ``adaptive``). ``directions`` [n, d]: the unit steering directions
    rows point into. Sampling: :func:`sample_tokens` (``top_k`` 0 = the whole vocabulary).
    ``share_prefix``: rows of one prompt share its forward below the hook
    (:func:`shared_prefix_logits`)."""
    stats = stats or GenStats()
    block = decoder_layers(model)[layer]
    hook = SteeringHook()
    handle = block.register_forward_hook(hook)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i].prompt_ids), i))
    results: list[Generated | None] = [None] * len(rows)
    size = max(1, int(batch_size))
    started = time.perf_counter()
    try:
        start = 0
        while start < len(order):
            chunk = order[start : start + size]
            local = GenStats()
            try:
                out = _generate_batch(
                    model,
                    hook,
                    [rows[i] for i in chunk],
                    directions,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    stop=stop,
                    pad_id=pad_id,
                    stats=local,
                    layer=layer if share_prefix else None,
                )
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not (adaptive and is_oom(exc)) or size == 1:
                    raise
                size = max(1, size // 2)
                stats.oom_retries += 1
                hook.vectors = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("out of memory with %d rows per batch: retrying with %d", len(chunk), size)
                continue
            for i, g in zip(chunk, out):
                results[i] = g
            for name in ("new_tokens", "prompt_tokens", "padded_prompt_tokens", "forward_tokens", "prefix_shared_rows"):
                setattr(stats, name, getattr(stats, name) + getattr(local, name))
            start += len(chunk)
            stats.batches += 1
            if progress is not None:
                progress(start, len(order))
    finally:
        handle.remove()
    stats.rows += len(rows)
    stats.seconds += time.perf_counter() - started
    stats.batch_size = size
    return [r for r in results if r is not None], stats


# ---- prompts --------------------------------------------------------------------------------
# How prompts are built and where generation stops: saesteer.prompting (per-model prompt_format).


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """The judged text: special tokens (turn markers, EOS) removed."""
    try:
        return tokenizer.decode(list(ids), skip_special_tokens=True)
    except TypeError:  # minimal tokenizers (tests) take no keyword
        return tokenizer.decode(list(ids))


@dataclass
class SteeringModel:
    """A model ready to steer: the block to hook, its prompt format, stop and pad tokens."""

    model: nn.Module
    tokenizer: Any
    layer: int
    prompt_format: str = "base"
    stop: set[int] = field(default_factory=set)
    pad_id: int = 0

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: Any, layer: int, prompt_format: str = "base") -> SteeringModel:
        n_blocks = len(decoder_layers(model))
        if not 0 <= layer < n_blocks:
            raise ValueError(f"layer {layer} outside 0..{n_blocks - 1} of {type(model).__name__}")
        check_prompt_format(prompt_format)
        if prompt_format == "chat" and not has_chat_template(tokenizer):
            raise PromptFormatError(
                "prompt_format chat: the tokenizer of this model has no chat template (set the model's prompt_format to base)"
            )
        stop = stop_ids(model, tokenizer, prompt_format)
        return cls(model, tokenizer, layer, prompt_format, stop, _pad_id(model, tokenizer, stop))

    def prompt(self, instruction: str, base_template: str = "{instruction}\n") -> list[int]:
        """The prompt's token ids in this model's format (:func:`saesteer.prompting.prompt_ids`)."""
        return prompt_ids(self.tokenizer, instruction, self.prompt_format, base_template)

    def generate(self, rows: Sequence[GenRow], directions: Tensor | None, **kwargs: Any) -> tuple[list[Generated], GenStats]:
        return generate(self.model, self.layer, rows, directions, stop=self.stop, pad_id=self.pad_id, **kwargs)

"""The shared prompt prefix of steered generation (saesteer.steering.generate.shared_prefix_logits).

Rows with the same prompt run blocks 0..layer once; the result must equal running every row
through every block: the prompt's last-position logits (within float tolerance of a batched
matmul), the KV cache the decoding steps continue from, and so the generated tokens, on the
three tiny families (Gemma-2's 16-token sliding window included: prompts longer than it fall
back to the plain forward, shorter ones share).
"""

from __future__ import annotations

import pytest
import torch

from saesteer.cache.capture import ResidualCapture, decoder_layers
from saesteer.steering.generate import GenRow, SteeringHook, SteeringModel, _make_cache, prompt_ids, shared_prefix_logits
from saesteer.tiny_models import FAMILIES, build_tiny_model
from tests.helpers import TINY_VOCAB, CharTokenizer, random_directions

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER = 2
LOGITS_ATOL = 1e-4  # float32: the same products in batches of different composition

SHORT = ["hi", "a prompt", "another", "abc"]  # under Gemma-2's 16-token window
LONG = ["a prompt longer than the sliding window of sixteen tokens", "hi"]


def _setup(family: str, prompts: list[str]):
    model, tok = build_tiny_model(family, TINY_VOCAB, CharTokenizer(), seed=0), CharTokenizer()
    steer = SteeringModel.wrap(model, tok, LAYER)
    directions = random_directions(3, model.config.hidden_size)
    ids = [tuple(prompt_ids(tok, p, "base")) for p in prompts]
    unit = float(ResidualCapture(model, LAYER)(torch.tensor([ids[0]])).norm(dim=-1).mean())
    # Every prompt with three rows: unsteered and two vectors (as the demo: factors x vectors per prompt).
    rows = [
        GenRow(x, direction=d, coef=(0.0 if d < 0 else unit * (1 + d)), seed=10 * k + d + 1)
        for k, x in enumerate(ids)
        for d in (-1, 0, 2)
    ]
    return model, steer, directions, rows


def _batch(model, rows, directions, pad_id=0):
    width = max(len(r.prompt_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
        mask[i, width - len(r.prompt_ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    hook = SteeringHook()
    idx = torch.tensor([max(r.direction, 0) for r in rows])
    coef = torch.tensor([r.coef if r.direction >= 0 else 0.0 for r in rows])
    hook.vectors = coef[:, None] * directions.index_select(0, idx)
    return input_ids, mask, positions, hook


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shared_prefix_logits_and_cache_equal_the_plain_forward(family):
    model, _, directions, rows = _setup(family, SHORT)
    input_ids, mask, positions, hook = _batch(model, rows, directions)
    handle = decoder_layers(model)[LAYER].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            plain_cache = _make_cache(model)
            plain = model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=plain_cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            shared_cache = _make_cache(model)
            shared = shared_prefix_logits(model, LAYER, hook, rows, input_ids, mask, positions, shared_cache)
    finally:
        handle.remove()
    assert shared is not None, family  # the shared path ran (no fallback)
    assert torch.allclose(shared, plain, atol=LOGITS_ATOL, rtol=0.0), (family, (shared - plain).abs().max())
    assert shared_cache.get_seq_length() == plain_cache.get_seq_length() == input_ids.shape[1]
    for i, (a, b) in enumerate(zip(shared_cache.layers, plain_cache.layers)):
        assert torch.allclose(a.keys, b.keys, atol=LOGITS_ATOL) and torch.allclose(a.values, b.values, atol=LOGITS_ATOL), (
            family,
            i,
        )
    # The steering acts above the hook: rows of one prompt differ in their logits.
    assert (shared[0] - shared[1]).abs().max() > 1e-3


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("prompts", [SHORT, LONG], ids=["short", "past-window"])
def test_generation_with_a_shared_prefix_equals_generation_without(family, prompts):
    _, steer, directions, rows = _setup(family, prompts)
    for temperature in (0.0, 1.0):
        shared, stats = steer.generate(rows, directions, max_new_tokens=20, temperature=temperature, batch_size=len(rows))
        plain, plain_stats = steer.generate(
            rows, directions, max_new_tokens=20, temperature=temperature, batch_size=len(rows), share_prefix=False
        )
        assert [g.token_ids for g in shared] == [g.token_ids for g in plain], (family, temperature)
        assert plain_stats.prefix_shared_rows == 0
        window = getattr(steer.model.config, "sliding_window", None)
        falls_back = window is not None and max(len(r.prompt_ids) for r in rows) >= window and family == "gemma2"
        assert stats.prefix_shared_rows == (0 if falls_back else len(rows) - len(prompts)), (family, stats)


def test_no_shared_prompt_means_no_second_pass():
    model, _, directions, rows = _setup("llama", SHORT)
    distinct = rows[::3]
    input_ids, mask, positions, hook = _batch(model, distinct, directions)
    cache = _make_cache(model)
    assert shared_prefix_logits(model, LAYER, hook, distinct, input_ids, mask, positions, cache) is None
    assert cache.get_seq_length() == 0

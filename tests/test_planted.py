"""The planted signal's definitions (saesteer.planted): which tokens steer, which decoder rows
are token latents, and that the tiny models carry the token's embedding to the hook."""

from __future__ import annotations

import pytest
import torch

from saesteer.planted import countable, plant_token_latents, token_latents


@pytest.mark.parametrize("text, steers", [
    (" the", True), (" Python", True), (" 42", True),  # a whole word: repeats stay separate words
    ("ing", False), ("the", False),  # no leading space: repeats glue into one word
    (",", False), (" ,", False),  # punctuation: a run is one BPE token (fluency unmeasurable)
    (" don't", False), ("", False), (" ", False),
])
def test_countable_tokens_are_whole_words(text, steers):
    assert countable(text) is steers


def test_token_latents_finds_exactly_the_planted_rows():
    from tests.helpers import random_sae

    gen = torch.Generator().manual_seed(3)
    vocab = torch.randn(500, 32, generator=gen)
    texts = {7: " the", 11: "ing", 42: " and"}
    sae = random_sae("relu", 32, 64, target_l0=4)
    with torch.no_grad():
        plant_token_latents(sae, vocab, vocab, {5: 7, 9: 11, 60: 42})
        sae.W_dec[20] = vocab[42] + vocab[7]  # a mixture of two tokens: cosine about 0.7, below 0.9
    found = token_latents(sae.W_dec, vocab, lambda t: texts.get(t, f"<{t}>"))
    assert {lat: (t.token_id, t.countable) for lat, t in found.items()} == {5: (7, True), 9: (11, False), 60: (42, True)}
    assert all(t.cosine == pytest.approx(1.0, abs=1e-5) for t in found.values())


def test_the_planted_latent_fires_at_its_token_only():
    from tests.helpers import random_sae

    gen = torch.Generator().manual_seed(4)
    embed = torch.randn(50, 32, generator=gen)
    sae = random_sae("relu", 32, 16, target_l0=4)
    with torch.no_grad():
        plant_token_latents(sae, embed, embed, {2: 10})
        codes = sae.encode(embed)
    fired = torch.nonzero(codes[:, 2] > 0).flatten().tolist()
    assert fired == [10] and codes[10, 2] == pytest.approx(embed[10].norm().item(), rel=1e-4)  # gain 2: |e| at its token
    assert int((codes[:, [i for i in range(16) if i != 2]] > 0).sum()) == 0  # every other latent silenced


@pytest.mark.parametrize("family, min_cos", [("llama", 0.6), ("qwen2", 0.6), ("gemma2", 0.9)])
def test_tiny_models_carry_the_tokens_embedding_to_the_hook(family, min_cos):
    """The property the planted signal rests on (docs/ci.md): at the hook (layer 2) the
    residual points along the current token's embedding, and the logits' top token is the
    current token (the models repeat it)."""
    from saesteer.tiny_models import FAMILIES, build_tiny_model

    model = build_tiny_model(family, 300)
    ids = torch.randint(3, 300, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hook = out.hidden_states[FAMILIES[family].layer + 1][0]
    emb = model.get_input_embeddings()(ids)[0]
    assert torch.nn.functional.cosine_similarity(hook, emb, dim=-1).mean() > min_cos
    assert (out.logits[0].argmax(-1) == ids[0]).float().mean() > 0.8

"""First-letter absorption: detected where a latent absorbs the letter, not where none does."""

from __future__ import annotations

import pytest
import torch

from saesteer.evals.absorption import (
    LETTERS,
    AbsorptionData,
    PromptPieces,
    alphabetic_tokens,
    evaluate_absorption,
    fit_letter_probes,
    word_absorption,
)
from saesteer.evals.config import AbsorptionConfig
from saesteer.sae.relu import ReLUSAE

pytestmark = pytest.mark.usefixtures("one_thread")


D = 16
A, B, C = LETTERS.index("a"), LETTERS.index("b"), LETTERS.index("c")
# Residual directions: e0 "starts with a", e1 "b", e3 "c", e2 a token-specific feature
# ("abs...") carried by a few a-words only.
E = torch.eye(D)


def words(n_a: int = 400, n_special: int = 16, n_b: int = 200, n_c: int = 200):
    gen = torch.Generator().manual_seed(0)
    letters, rows, special = [], [], []
    for letter, count, direction in ((A, n_a, 0), (B, n_b, 1), (C, n_c, 3)):
        for i in range(count):
            x = 3.0 * E[direction] + 0.3 * torch.randn(D, generator=gen) * (torch.arange(D) >= 4)
            is_special = letter == A and i < n_special
            if is_special:
                x = x + 3.0 * E[2]
            rows.append(x)
            letters.append(letter)
            special.append(is_special)
    n = len(rows)
    is_test = torch.tensor([i % 4 == 0 for i in range(n)])
    return torch.stack(rows), torch.tensor(letters), is_test, torch.tensor(special)


def sae_with(latents: list[tuple[torch.Tensor, float, torch.Tensor]]) -> ReLUSAE:
    """ReLU SAE whose latent j has encoder row enc, bias b and decoder row dec."""
    sae = ReLUSAE(D, len(latents))
    with torch.no_grad():
        sae.b_dec.zero_()
        for j, (enc, bias, dec) in enumerate(latents):
            sae.W_enc[:, j] = enc
            sae.b_enc[j] = bias
            sae.W_dec[j] = dec
    return sae


def absorbing_sae() -> ReLUSAE:
    # Latent 0 is the a-latent but is suppressed by the special feature; latent 1 fires on
    # the special words and its decoder carries the a-direction: it absorbed "starts with a".
    return sae_with([(E[0] - 2 * E[2], -1.0, E[0]), (E[2], -1.0, E[2] + E[0]), (E[1], -1.0, E[1]), (E[3], -1.0, E[3])])


def clean_sae() -> ReLUSAE:
    # Same dictionary without absorption: the a-latent fires on every a-word and the
    # special latent's decoder has no a-component.
    return sae_with([(E[0], -1.0, E[0]), (E[2], -1.0, E[2]), (E[1], -1.0, E[1]), (E[3], -1.0, E[3])])


def data() -> tuple[AbsorptionData, torch.Tensor]:
    resid, letters, is_test, special = words()
    probe, f1 = fit_letter_probes(resid, letters, is_test, C=1.0)
    return AbsorptionData(resid, letters, is_test, probe.weight, probe.bias, f1), special


CFG = AbsorptionConfig(min_true_positives=5, max_k=3)


def test_ground_truth_probes_find_the_letters():
    d, _ = data()
    assert all(float(d.probe_f1[c]) > 0.95 for c in (A, B, C))
    assert float(d.probe_f1[LETTERS.index("z")]) == 0.0  # absent letter


def test_absorption_is_detected():
    d, special = data()
    out = evaluate_absorption(absorbing_sae(), d, CFG)
    a = out["letters"]["a"]
    assert a["main_latents"] == [0]  # the absorber fires too rarely to count as a split
    n_special_test = int((special & d.is_test).sum())
    assert n_special_test > 0
    assert a["num_full_absorption"] == n_special_test
    assert a["full_absorption_rate"] == pytest.approx(n_special_test / a["num_probe_true_positives"])
    assert a["mean_absorption_fraction"] == pytest.approx(n_special_test / a["num_probe_true_positives"])
    assert out["letters"]["b"]["full_absorption_rate"] == 0.0
    assert out["letters_evaluated"] == 3
    assert out["mean_full_absorption_score"] > 0


def test_no_absorption_where_there_is_none():
    d, _ = data()
    out = evaluate_absorption(clean_sae(), d, CFG)
    assert out["mean_full_absorption_score"] == 0.0
    assert out["mean_absorption_fraction_score"] == 0.0
    assert out["letters"]["a"]["main_latents"] == [0]


def test_partial_absorption_fraction():
    # Main latent carries 1/4 of the probe projection, an aligned absorber the rest.
    cfg = AbsorptionConfig()
    direction = E[0]
    decoder = torch.stack([E[0], E[0] + E[5]])
    codes = torch.tensor([[1.0, 3.0]])
    resid = 4.0 * E[0][None]
    fraction, full = word_absorption(codes, resid, direction, decoder, [0], cfg)
    assert float(fraction[0]) == pytest.approx(0.75)
    assert not bool(full[0])  # the main latent fires: not full absorption


class _BPETokenizer:
    """convert_ids_to_tokens like a GPT-2 / SentencePiece vocabulary."""

    vocab = ["<s>", "Ġcat", "▁Dog", "ing", "Ġ123", "Ċ", "x", "Ġhas"]
    all_special_ids = [0]

    def convert_ids_to_tokens(self, ids):
        return [self.vocab[i] for i in ids]


def test_alphabetic_tokens_keep_word_tokens_only():
    found = alphabetic_tokens(_BPETokenizer(), 8, min_chars=2)
    assert found == [(1, " cat"), (2, " Dog"), (3, "ing"), (7, " has")]


def test_prompt_ends_with_the_word_token(char_tokenizer):
    pieces = PromptPieces.build(char_tokenizer, AbsorptionConfig())
    word, example = char_tokenizer("q")["input_ids"][0], char_tokenizer("z")["input_ids"][0]
    ids, pos = pieces.prompt(word, [(example, LETTERS.index("z"))])
    assert pos == len(ids) - 1 and ids[pos] == word
    assert ids[0] == char_tokenizer.bos_token_id
    assert char_tokenizer.decode(ids) == "z has the first letter: Z\nq"

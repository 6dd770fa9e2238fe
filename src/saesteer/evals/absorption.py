"""Feature absorption on the first-letter task (Chanin et al. 2024, "A is for Absorption",
arXiv 2409.14507), with SAEBench's absorption-fraction and full-absorption scores
(Karvonen et al. 2025, arXiv 2503.09532). Choices, in order:

Words. Single tokens of the model's vocabulary that are alphabetic ASCII, with or without
a leading space (SAEBench's ``get_alpha_tokens``), special tokens excluded; at most
``max_words`` of them, drawn with the seed; ``test_fraction`` of those are test words.
A word's letter is its first character, lower-cased (26 classes).

Prompt. ``icl_examples`` in-context examples then the word, SAEBench's template
``"{word} has the first letter:"`` with the answer `` X`` (capital), joined by
``icl_separator``; the examples are drawn per word (seeded) from the other words. Token ids
are assembled piece by piece (BOS, template text, the word's own token id, answer,
separator), so the word stays exactly the vocabulary token. The residual is read at the
word's token at the hook layer; in a causal LM the tokens after it cannot change that
residual, so the prompt ends with the word (the template's tail only shapes the examples).

Ground-truth probe. One logistic probe per letter (one-vs-rest, class-balanced, L2 with
``C``) on the training words' residuals; its weight vector, in the raw residual space, is
the letter's direction p (used unit-norm). A letter is evaluated only if its probe reaches
test F1 >= ``min_probe_f1`` and has >= ``min_true_positives`` test words it classifies
correctly (SAEBench's ``min_GT_probe_f1`` and ``min_feats_for_eval``). The probes depend only
on the model and are fitted once per model.

Main latents (feature splitting). Latents are ranked per letter by mean activation on the
letter's training words minus mean on the others (signed: a latent must fire *for* the
letter; SAEBench ranks by the weights of an L1 probe instead, the same ordering up to
scale on such data). k-sparse probes (logistic, class-balanced) on the top k latents,
k = 1..``max_k``, are scored by test F1; k grows while F1 improves by more than
``f1_jump_threshold`` (0.03), and the main latents are the top k at that point.

Absorption, on test words of letter L that the ground-truth probe classifies correctly.
With x the residual, a the codes, the probe projection is x . p and latent j contributes
a_j * (d_j . p), d_j its decoder row (the projection of its share of the reconstruction;
SAEBench multiplies a_j by cos(d_j, p), the same for unit-norm decoders, but unit-free for
the ReLU SAE whose decoder rows are not unit norm):

- absorption fraction: with M = sum of the main latents' contributions and A = sum of the
  top ``max_absorbing_latents`` positive contributions of other latents with
  cos(d_j, p) >= ``fraction_cos_threshold``: 0 if M >= x . p or A / (x . p) <
  ``projection_proportion_threshold``; 1 if M <= 0; else min(A, x . p - M) / (min(A,
  x . p - M) + M). Words with x . p <= 0 score 0.
- full absorption: all main latents are zero, the latent with the largest contribution
  has cos(d_j, p) >= ``full_absorption_cos_threshold`` and contributes at least
  ``projection_proportion_threshold`` of x . p.

Per letter: mean absorption fraction and full-absorption rate over those words; the SAE's
scores are the means over evaluated letters (higher = more absorption = worse).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saesteer.evals.config import AbsorptionConfig
from saesteer.evals.logistic import LogisticProbe, f1_score, fit_logistic
from saesteer.sae.base import BaseSAE

LETTERS = string.ascii_lowercase
_SPACE_MARKERS = ("Ġ", "▁")  # GPT-2 byte-level BPE, SentencePiece
EPS = 1e-8


# ---- words and prompts (per model) ------------------------------------------------------


def token_surfaces(tokenizer: Any, ids: list[int]) -> list[str | None]:
    """Each id's text with a leading space where the token starts a word."""
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        raw = tokenizer.convert_ids_to_tokens(ids)
        out: list[str | None] = []
        for token in raw:
            if not isinstance(token, str):
                out.append(None)
            elif token.startswith(_SPACE_MARKERS):
                out.append(" " + token[1:])
            else:
                out.append(token)
        return out
    return [tokenizer.decode([i]) for i in ids]


def alphabetic_tokens(tokenizer: Any, vocab_size: int, min_chars: int = 1) -> list[tuple[int, str]]:
    """(token id, surface) of every single-token ASCII-alphabetic word, optional leading space."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    ids = [i for i in range(vocab_size) if i not in special]
    out = []
    for i, surface in zip(ids, token_surfaces(tokenizer, ids)):
        if not surface:
            continue
        word = surface[1:] if surface.startswith(" ") else surface
        if len(word) >= min_chars and word.isascii() and word.isalpha():
            out.append((i, surface))
    return out


def first_letter(surface: str) -> int:
    return LETTERS.index(surface.strip()[0].lower())


@dataclass
class PromptPieces:
    """Token ids of the fixed parts of the first-letter prompt."""

    bos: list[int]
    before: list[int]
    after: list[int]
    separator: list[int]
    answers: list[list[int]]  # per letter: ids of " A", " B", ...

    @classmethod
    def build(cls, tokenizer: Any, cfg: AbsorptionConfig) -> PromptPieces:
        def ids(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

        before, after = cfg.prompt_template.split("{word}", 1)
        bos = getattr(tokenizer, "bos_token_id", None)
        return cls(
            bos=[bos] if bos is not None else [],
            before=ids(before),
            after=ids(after),
            separator=ids(cfg.icl_separator),
            answers=[ids(" " + letter.upper()) for letter in LETTERS],
        )

    def prompt(self, word_id: int, examples: list[tuple[int, int]]) -> tuple[list[int], int]:
        """Ids of the prompt ending with the word, and the word's position. examples: (id, letter)."""
        ids = list(self.bos)
        for ex_id, ex_letter in examples:
            ids += self.before + [ex_id] + self.after + self.answers[ex_letter] + self.separator
        ids += self.before + [word_id]
        return ids, len(ids) - 1


@dataclass
class WordSet:
    ids: list[int]
    surfaces: list[str]
    letters: Tensor  # [n] long
    is_test: Tensor  # [n] bool


def select_words(tokenizer: Any, vocab_size: int, cfg: AbsorptionConfig, seed: int) -> WordSet:
    candidates = alphabetic_tokens(tokenizer, vocab_size, cfg.min_word_chars)
    if len(candidates) < 4:
        raise ValueError(f"only {len(candidates)} single-token alphabetic words in the vocabulary")
    rng = random.Random(seed)
    if cfg.max_words and len(candidates) > cfg.max_words:
        candidates = sorted(rng.sample(candidates, cfg.max_words))
    order = list(range(len(candidates)))
    rng.shuffle(order)
    n_test = max(1, int(round(cfg.test_fraction * len(candidates))))
    is_test = torch.zeros(len(candidates), dtype=torch.bool)
    is_test[order[:n_test]] = True
    return WordSet(
        ids=[i for i, _ in candidates],
        surfaces=[s for _, s in candidates],
        letters=torch.tensor([first_letter(s) for _, s in candidates], dtype=torch.long),
        is_test=is_test,
    )


def build_prompts(words: WordSet, pieces: PromptPieces, n_examples: int, seed: int) -> list[tuple[list[int], int]]:
    """One prompt per word; ICL examples drawn per word from the other words."""
    rng = random.Random(seed + 1)
    n = len(words.ids)
    k = min(n_examples, n - 1)
    prompts = []
    for w in range(n):
        picks = [j for j in rng.sample(range(n), k + 1) if j != w][:k]
        examples = [(words.ids[j], int(words.letters[j])) for j in picks]
        prompts.append(pieces.prompt(words.ids[w], examples))
    return prompts


def fit_letter_probes(resid: Tensor, letters: Tensor, is_test: Tensor, C: float) -> tuple[LogisticProbe, Tensor]:
    """One-vs-rest letter probes on the training words; returns the probes and test F1 per letter."""
    train = ~is_test
    present = [c for c in range(len(LETTERS)) if bool((letters[train] == c).any())]
    y = torch.stack([(letters[train] == c).float() for c in present])
    fitted = fit_logistic(resid[train], y, C=C, balanced=True)
    # Letters without training words get a probe that never fires.
    weight = torch.zeros(len(LETTERS), resid.shape[-1])
    bias = torch.full((len(LETTERS),), -1.0)
    weight[present], bias[present] = fitted.weight.cpu(), fitted.bias.cpu()
    probe = LogisticProbe(weight=weight, bias=bias)
    y_test = torch.stack([(letters[is_test] == c).float() for c in range(len(LETTERS))])
    f1 = f1_score(probe.logits(resid[is_test].float()).T, y_test)
    return probe, f1


# ---- per SAE -------------------------------------------------------------------------


@dataclass
class AbsorptionData:
    """What the per-SAE evaluation needs: word residuals, letters, split and the probes."""

    resid: Tensor  # [n, d]
    letters: Tensor  # [n] long
    is_test: Tensor  # [n] bool
    probe_weight: Tensor  # [26, d], raw residual space
    probe_bias: Tensor  # [26]
    probe_f1: Tensor  # [26] test F1 of the ground-truth probes


@torch.inference_mode()
def _encode(sae: BaseSAE, x: Tensor, batch: int) -> Tensor:
    device = sae.W_dec.device
    return torch.cat([sae.encode(x[i : i + batch].to(device)).float() for i in range(0, x.shape[0], batch)])


def main_latents(
    codes_train: Tensor, y_train: Tensor, codes_test: Tensor, y_test: Tensor, cfg: AbsorptionConfig
) -> tuple[list[list[int]], Tensor]:
    """Feature-split main latents per letter (rows of y_*: letters) and k-sparse F1 [P, max_k]."""
    n_letters = y_train.shape[0]
    pos = y_train > 0
    mean_pos = (pos.float() @ codes_train) / pos.sum(-1, keepdim=True).clamp_min(1)
    mean_neg = ((~pos).float() @ codes_train) / (~pos).sum(-1, keepdim=True).clamp_min(1)
    max_k = min(cfg.max_k, codes_train.shape[1])
    top = torch.argsort(mean_pos - mean_neg, dim=-1, descending=True, stable=True)[:, :max_k]  # [P, max_k]
    f1 = torch.zeros(n_letters, max_k)
    for k in range(1, max_k + 1):
        idx = top[:, :k]  # [P, k]
        x_train = codes_train.T[idx].permute(0, 2, 1)  # [P, n_train, k]
        x_test = codes_test.T[idx].permute(0, 2, 1)
        probe = fit_logistic(x_train, y_train, C=cfg.C, balanced=True)
        f1[:, k - 1] = f1_score(probe.logits(x_test), y_test).cpu()
    mains = []
    for p in range(n_letters):
        best, chosen = float("-inf"), 1
        for k in range(1, max_k + 1):
            if float(f1[p, k - 1]) > best + cfg.f1_jump_threshold:
                best, chosen = float(f1[p, k - 1]), k
            else:
                break
        mains.append([int(i) for i in top[p, :chosen]])
    return mains, f1


def word_absorption(
    codes: Tensor, resid: Tensor, direction: Tensor, decoder: Tensor, main: list[int], cfg: AbsorptionConfig
) -> tuple[Tensor, Tensor]:
    """Absorption fraction [n] and full-absorption flags [n] of words with codes [n, d_sae]."""
    unit = direction / direction.norm().clamp_min(1e-12)
    dec_proj = decoder @ unit  # [d_sae]: d_j . p
    cos = dec_proj / decoder.norm(dim=-1).clamp_min(1e-12)
    contrib = codes * dec_proj  # [n, d_sae]
    act_proj = resid.float() @ unit  # [n]
    is_main = torch.zeros(codes.shape[1], dtype=torch.bool, device=codes.device)
    is_main[main] = True
    main_proj = contrib[:, is_main].sum(-1)

    candidates = torch.where(
        (~is_main & (cos >= cfg.fraction_cos_threshold))[None, :] & (contrib > 0), contrib, torch.zeros_like(contrib)
    )
    k = min(cfg.max_absorbing_latents, codes.shape[1])
    absorbed = candidates.topk(k, dim=-1).values.sum(-1)
    positive = act_proj > 0
    safe_proj = torch.where(positive, act_proj, torch.ones_like(act_proj))
    unaccounted = act_proj - main_proj
    partial = torch.minimum(absorbed, unaccounted)
    mixed = (partial / (partial + main_proj).clamp_min(1e-12)).clamp(0.0, 1.0)
    fraction = torch.where(main_proj <= 0, torch.ones_like(mixed), mixed)
    no_absorption = (main_proj >= act_proj) | (absorbed / safe_proj < cfg.projection_proportion_threshold) | ~positive
    fraction = torch.where(no_absorption, torch.zeros_like(fraction), fraction)

    top_value, top_index = contrib.max(dim=-1)
    full = (
        (codes[:, is_main].abs() < EPS).all(-1)
        & (cos[top_index] >= cfg.full_absorption_cos_threshold)
        & positive
        & (top_value / safe_proj >= cfg.projection_proportion_threshold)
    )
    return fraction, full


def evaluate_absorption(sae: BaseSAE, data: AbsorptionData, cfg: AbsorptionConfig, batch_tokens: int = 8192) -> dict[str, Any]:
    """The absorption report of one SAE (see the module docstring)."""
    codes = _encode(sae, data.resid, batch_tokens)
    device = codes.device
    letters, is_test = data.letters.to(device), data.is_test.to(device)
    train, test = ~is_test, is_test
    present = [c for c in range(len(LETTERS)) if bool((letters[train] == c).any()) and bool((letters[test] == c).any())]
    resid_test = data.resid.to(device)[test].float()
    probe_logits = resid_test @ data.probe_weight.to(device).T + data.probe_bias.to(device)  # [n_test, 26]
    details: dict[str, Any] = {}
    if present:
        y_train = torch.stack([(letters[train] == c).float() for c in present])
        y_test = torch.stack([(letters[test] == c).float() for c in present])
        mains, f1 = main_latents(codes[train], y_train, codes[test], y_test, cfg)
    decoder = sae.W_dec.detach().float()
    codes_test = codes[test]
    letters_test = letters[test]
    for row, c in enumerate(present):
        tp = (letters_test == c) & (probe_logits[:, c] > 0)
        n_tp = int(tp.sum())
        entry: dict[str, Any] = {
            "probe_f1": float(data.probe_f1[c]),
            "num_probe_true_positives": n_tp,
            "main_latents": mains[row],
            "num_split_features": len(mains[row]),
            "k_sparse_f1": [float(v) for v in f1[row]],
        }
        evaluated = n_tp >= cfg.min_true_positives and float(data.probe_f1[c]) >= cfg.min_probe_f1
        if n_tp:
            fraction, full = word_absorption(
                codes_test[tp], resid_test[tp], data.probe_weight[c].to(device).float(), decoder, mains[row], cfg
            )
            entry["mean_absorption_fraction"] = float(fraction.sum()) / n_tp
            entry["full_absorption_rate"] = float(full.sum()) / n_tp
            entry["num_full_absorption"] = int(full.sum())
        else:
            entry.update(mean_absorption_fraction=None, full_absorption_rate=None, num_full_absorption=0)
        entry["evaluated"] = evaluated
        details[LETTERS[c]] = entry
    used = [e for e in details.values() if e["evaluated"]]

    def mean(key: str) -> float | None:
        return float(sum(e[key] for e in used) / len(used)) if used else None

    return {
        "mean_absorption_fraction_score": mean("mean_absorption_fraction"),
        "mean_full_absorption_score": mean("full_absorption_rate"),
        "mean_num_split_features": mean("num_split_features"),
        "letters_evaluated": len(used),
        "n_train_words": int(train.sum()),
        "n_test_words": int(test.sum()),
        "letters": details,
    }

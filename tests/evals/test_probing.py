"""Sparse probing: a planted latent is found at k = 1; passages split by document; balanced tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saesteer.evals.config import ProbingConfig, ProbingTask
from saesteer.evals.logistic import accuracy, fit_logistic
from saesteer.evals.passages import binary_subtasks, collect_passages
from saesteer.evals.probing import evaluate_task, pooled_codes, raw_baselines, segment_mean
from saesteer.sae.relu import ReLUSAE

pytestmark = pytest.mark.usefixtures("one_thread")


D_IN, D_SAE, PLANTED = 16, 32, 7


def planted_sae() -> ReLUSAE:
    """Latent 7 reads dimension 0 (present only in class-1 tokens); the others read noise."""
    gen = torch.Generator().manual_seed(0)
    sae = ReLUSAE(D_IN, D_SAE)
    with torch.no_grad():
        w = torch.randn(D_IN, D_SAE, generator=gen).abs()
        w[0] = 0.0
        w[:, PLANTED] = 0.0
        w[0, PLANTED] = 1.0
        sae.W_enc.copy_(w)
        sae.b_enc.fill_(-0.5)
        sae.W_dec.copy_(torch.randn(D_SAE, D_IN, generator=gen))
        sae.b_dec.zero_()
    return sae


def synthetic_passages(n_per_class: int = 40, length: int = 6):
    gen = torch.Generator().manual_seed(1)
    tokens, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            x = torch.rand(length, D_IN, generator=gen)  # positive noise: other latents fire for both classes
            x[:, 0] = 2.0 * label
            tokens.append(x)
            labels.append(label)
    offsets = torch.tensor([0] + [length * (i + 1) for i in range(len(tokens))])
    is_test = torch.tensor([i % 4 == 0 for i in range(len(tokens))])
    return torch.cat(tokens), offsets, torch.tensor(labels), is_test


def test_planted_latent_is_found_at_k1():
    token_resid, offsets, labels, is_test = synthetic_passages()
    subtasks = binary_subtasks("planted", labels, is_test, ["a", "b"], seed=0)
    assert len(subtasks) == 1  # two classes: one binary task
    baselines = raw_baselines(segment_mean(token_resid, offsets), subtasks, [1, 2, 5], C=1.0)
    pooled = pooled_codes(planted_sae(), token_resid, offsets, batch_tokens=50)
    report = evaluate_task(pooled, subtasks, baselines, ["a", "b"], [1, 2, 5], C=1.0)
    sub = report["subtasks"]["planted/a"]
    assert sub["sae_top_latents"][0] == PLANTED
    assert sub["sae_top_k_test_accuracy"]["1"] >= 0.95
    assert report["llm_test_accuracy"] >= 0.95
    assert set(report["sae_top_k_test_accuracy"]) == {"1", "2", "5"}


def test_pooling_averages_codes_not_residuals():
    sae = planted_sae()
    token_resid, offsets, _, _ = synthetic_passages(n_per_class=2)
    pooled = pooled_codes(sae, token_resid, offsets, batch_tokens=5)
    first = sae.encode(token_resid[: offsets[1]]).mean(0)
    assert torch.allclose(pooled[0], first, atol=1e-6)


def test_logistic_probe_separates_and_matches_raw_space():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0])
    y = (x[:, 1] + 50 * x[:, 2] > 0).float()
    probe = fit_logistic(x, y, C=10.0)
    assert float(accuracy(probe.logits(x).squeeze(-1), y)) >= 0.95


def test_one_vs_rest_tasks_are_balanced_and_disjoint():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    is_test = torch.tensor([i % 5 == 0 for i in range(30)])
    subtasks = binary_subtasks("t", labels, is_test, ["x", "y", "z"], seed=3)
    assert [s.positive for s in subtasks] == ["x", "y", "z"]
    for c, sub in enumerate(subtasks):
        assert int(sub.train_y.sum()) * 2 == len(sub.train_y) == 16
        assert int(sub.test_y.sum()) * 2 == len(sub.test_y) == 4
        assert not set(sub.train_idx.tolist()) & set(sub.test_idx.tolist())
        assert all(bool(~is_test[i]) for i in sub.train_idx) and all(bool(is_test[i]) for i in sub.test_idx)
        assert torch.equal(labels[sub.train_idx] == c, sub.train_y.bool())
    again = binary_subtasks("t", labels, is_test, ["x", "y", "z"], seed=3)
    assert torch.equal(again[1].train_idx, subtasks[1].train_idx)  # fixed seed


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_corpus_source_passages_split_by_document(tmp_path, char_tokenizer):
    _write_jsonl(
        tmp_path / "prose" / "a.jsonl", [{"text": f"Once upon a time {i} there was a fox named {i}. " * 3} for i in range(300)]
    )
    _write_jsonl(
        tmp_path / "code" / "b.jsonl", [{"text": f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * 3} for i in range(300)]
    )
    corpus = {
        "sources": [
            {"kind": "local_files", "name": "prose", "path": str(tmp_path / "prose")},
            {"kind": "local_files", "name": "code", "path": str(tmp_path / "code")},
        ],
        "context_length": 32,
        "heldout_fraction": 0.3,
        "seed": 0,
    }
    cfg = ProbingConfig(train_size=24, test_size=12, max_tokens=16, passages_per_document=2)
    passages, classes = collect_passages(ProbingTask(name="src", kind="corpus_sources"), cfg, char_tokenizer, corpus, seed=0)
    assert classes == ["prose", "code"]
    for label in (0, 1):
        assert sum(1 for p in passages if p.label == label and not p.is_test) == 12
        assert sum(1 for p in passages if p.label == label and p.is_test) == 6
    train_docs = {p.doc for p in passages if not p.is_test}
    test_docs = {p.doc for p in passages if p.is_test}
    assert not train_docs & test_docs
    assert all(0 < len(p.tokens) <= 16 for p in passages)


def test_hf_dataset_task_offline(tmp_path, char_tokenizer):
    rows = [{"body": f"review number {i} about item {i % 13}", "cat": ["books", "music", "toys"][i % 3]} for i in range(150)]
    _write_jsonl(tmp_path / "reviews.jsonl", rows)
    task = ProbingTask.from_config(
        {
            "name": "reviews",
            "path": "json",
            "data_files": [str(tmp_path / "reviews.jsonl")],
            "text_field": "body",
            "label_field": "cat",
            "classes": ["books", "toys"],
        }
    )
    cfg = ProbingConfig(train_size=20, test_size=10, max_tokens=12)
    passages, classes = collect_passages(task, cfg, char_tokenizer, {"sources": []}, seed=0)
    assert classes == ["books", "toys"]
    assert len(passages) == 30
    assert all(len(p.tokens) == 12 for p in passages)
    with pytest.raises(ValueError, match="hf_dataset needs path and classes"):
        ProbingTask.from_config({"name": "bad", "path": "json"})

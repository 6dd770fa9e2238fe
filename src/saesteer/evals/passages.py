"""Labelled passages for sparse probing, split by document, and the binary tasks made from them.

Sources of a probing task (config ``eval.sparse_probing.tasks[]``):

- ``hf_dataset``: a labelled Hugging Face dataset, streamed and shuffled with a fixed seed
  (buffer of 10,000 rows); one passage per row (= document), truncated to ``max_tokens``
  tokens. Test passages come from ``test_split`` when given, else from the same rows.
- ``corpus_sources``: the label is which corpus source a *held-out* document comes from
  (the demo: Shakespeare vs. Python docstrings). Up to ``passages_per_document``
  consecutive chunks of ``max_tokens`` tokens are cut from each document.

Every class gets ``train_size / 2`` training and ``test_size / 2`` test passages. A document
goes wholly to train or to test (whichever pool is less full, relative to its target), so no
document contributes to both sides.

Binary tasks, as SAEBench does (Karvonen et al. 2025): one-vs-rest per class; the positives
are that class's passages, the negatives an equal number drawn evenly from the other
classes (fixed seed). A two-class task is a single binary task (positive = first class),
since its two one-vs-rest tasks are mirror images.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saesteer.corpus import build_source, split_of
from saesteer.evals.config import ProbingConfig, ProbingTask, _class_key
from saesteer.schemas import schema_defaults

log = logging.getLogger(__name__)

# Characters kept before tokenising a row: a passage needs at most max_tokens tokens, and
# some rows (source files, long reviews) are megabytes.
CHARS_PER_TOKEN_BOUND = 16


class PassageError(ValueError):
    """A probing task cannot supply enough passages."""


@dataclass
class Passage:
    tokens: list[int]
    label: int
    doc: int
    is_test: bool


@dataclass
class Subtask:
    """One binary probing task: indices into the task's passages and 0/1 labels."""

    name: str
    positive: str
    train_idx: Tensor
    train_y: Tensor
    test_idx: Tensor
    test_y: Tensor


class _Pools:
    """Fills per-class train and test pools, a whole document at a time."""

    def __init__(self, n_classes: int, n_train: int, n_test: int):
        self.n_train, self.n_test = n_train, n_test
        self.train = [0] * n_classes
        self.test = [0] * n_classes
        self.passages: list[Passage] = []
        self.n_docs = 0

    def full(self, label: int, side: str | None = None) -> bool:
        if side == "train":
            return self.train[label] >= self.n_train
        if side == "test":
            return self.test[label] >= self.n_test
        return self.train[label] >= self.n_train and self.test[label] >= self.n_test

    def all_full(self) -> bool:
        return all(self.full(c) for c in range(len(self.train)))

    def side_for(self, label: int) -> str:
        # The pool further from its target takes the next document.
        if self.full(label, "test"):
            return "train"
        if self.full(label, "train"):
            return "test"
        return "test" if self.test[label] / self.n_test < self.train[label] / self.n_train else "train"

    def add(self, chunks: list[list[int]], label: int, side: str) -> None:
        counts = self.test if side == "test" else self.train
        target = self.n_test if side == "test" else self.n_train
        room = target - counts[label]
        for chunk in chunks[: max(0, room)]:
            self.passages.append(Passage(chunk, label, self.n_docs, side == "test"))
            counts[label] += 1
        self.n_docs += 1


def _tokenize(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    return list(tokenizer(text[: max_tokens * CHARS_PER_TOKEN_BOUND], add_special_tokens=False)["input_ids"])


def _chunks(ids: list[int], max_tokens: int, per_document: int) -> list[list[int]]:
    """Consecutive chunks of max_tokens; a tail shorter than a quarter of that is dropped."""
    min_len = max(1, max_tokens // 4)
    out = [ids[i : i + max_tokens] for i in range(0, len(ids), max_tokens)][:per_document]
    return [c for c in out if len(c) >= min_len]


def _hf_rows(task: ProbingTask, split: str, seed: int) -> Iterator[dict[str, Any]]:
    import datasets

    stream = datasets.load_dataset(
        task.path,
        task.config_name,
        split=split,
        streaming=True,
        revision=task.revision,
        data_files=list(task.data_files) if isinstance(task.data_files, tuple) else task.data_files,
    )
    yield from stream.shuffle(seed=seed, buffer_size=10_000)


def _fill_from_rows(
    pools: _Pools,
    rows: Iterable[dict[str, Any]],
    task: ProbingTask,
    classes: list[str],
    tokenizer: Any,
    max_tokens: int,
    side: str | None,
) -> None:
    index = {c: i for i, c in enumerate(classes)}
    for row in rows:
        if task.label_field not in row or task.text_field not in row:
            raise PassageError(
                f"probing task {task.name}: rows of {task.path} lack {task.label_field!r} or "
                f"{task.text_field!r} (fields: {sorted(row)})"
            )
        label = index.get(_class_key(row[task.label_field]))
        if label is None:
            continue
        where = side or pools.side_for(label)
        if pools.full(label, where):
            if side is not None and all(pools.full(c, side) for c in range(len(classes))):
                return
            continue
        ids = _tokenize(tokenizer, str(row[task.text_field] or ""), max_tokens)[:max_tokens]
        if ids:
            pools.add([ids], label, where)
        if pools.all_full():
            return


def _fill_from_corpus(
    pools: _Pools, task: ProbingTask, classes: list[str], corpus_cfg: dict[str, Any], tokenizer: Any, cfg: ProbingConfig
) -> None:
    entries = {e["name"]: e for e in corpus_cfg["sources"]}
    fraction = float(corpus_cfg.get("heldout_fraction", schema_defaults("corpus")["heldout_fraction"]))
    for label, name in enumerate(classes):
        if name not in entries:
            raise PassageError(f"probing task {task.name}: class {name!r} is not a corpus source ({sorted(entries)})")
        for doc in build_source(entries[name]).documents():
            if split_of(doc.source, doc.doc_id, fraction) != "heldout":
                continue  # SAE training saw the train split
            chunks = _chunks(
                _tokenize(tokenizer, doc.text, cfg.max_tokens * cfg.passages_per_document),
                cfg.max_tokens,
                cfg.passages_per_document,
            )
            if chunks:
                pools.add(chunks, label, pools.side_for(label))
            if pools.full(label):
                break


def task_classes(task: ProbingTask, corpus_cfg: dict[str, Any]) -> list[str]:
    if task.classes is not None:
        return list(task.classes)
    if task.kind == "corpus_sources":
        return [str(e["name"]) for e in corpus_cfg["sources"]]
    raise PassageError(f"probing task {task.name}: no classes given")


def collect_passages(
    task: ProbingTask, cfg: ProbingConfig, tokenizer: Any, corpus_cfg: dict[str, Any], seed: int
) -> tuple[list[Passage], list[str]]:
    """The task's passages (token ids without BOS) and its class names."""
    classes = task_classes(task, corpus_cfg)
    pools = _Pools(len(classes), max(1, cfg.train_size // 2), max(1, cfg.test_size // 2))
    if task.kind == "corpus_sources":
        _fill_from_corpus(pools, task, classes, corpus_cfg, tokenizer, cfg)
    elif task.kind == "hf_dataset":
        if task.test_split:
            _fill_from_rows(pools, _hf_rows(task, task.split, seed), task, classes, tokenizer, cfg.max_tokens, "train")
            _fill_from_rows(pools, _hf_rows(task, task.test_split, seed), task, classes, tokenizer, cfg.max_tokens, "test")
        else:
            _fill_from_rows(pools, _hf_rows(task, task.split, seed), task, classes, tokenizer, cfg.max_tokens, None)
    else:
        raise PassageError(f"probing task {task.name}: unknown kind {task.kind!r} (hf_dataset, corpus_sources)")
    for label, name in enumerate(classes):
        if pools.train[label] < 2 or pools.test[label] < 1:
            raise PassageError(
                f"probing task {task.name}: class {name!r} has only {pools.train[label]} train and "
                f"{pools.test[label]} test passages"
            )
        if not pools.full(label):
            log.warning(
                "probing task %s: class %r has %d/%d train and %d/%d test passages",
                task.name,
                name,
                pools.train[label],
                pools.n_train,
                pools.test[label],
                pools.n_test,
            )
    return pools.passages, classes


def _generator(seed: int, *parts: str) -> torch.Generator:
    digest = hashlib.sha256("\x00".join((str(seed),) + parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") % (2**63))


def _balanced(pos: Tensor, others: list[Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Positives and an equal number of negatives drawn evenly from the other classes."""
    per_class = math.ceil(len(pos) / max(1, len(others)))
    negatives = torch.cat([o[torch.randperm(len(o), generator=gen)[:per_class]] for o in others])
    negatives = negatives[torch.randperm(len(negatives), generator=gen)]
    n = min(len(pos), len(negatives))
    pos = pos[torch.randperm(len(pos), generator=gen)[:n]]
    idx = torch.cat([pos, negatives[:n]])
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    order = torch.randperm(2 * n, generator=gen)
    return idx[order], y[order]


def binary_subtasks(task_name: str, labels: Tensor, is_test: Tensor, classes: list[str], seed: int) -> list[Subtask]:
    """One-vs-rest binary tasks (one task when there are two classes)."""
    positives = [0] if len(classes) == 2 else list(range(len(classes)))
    out = []
    for c in positives:
        gen = _generator(seed, task_name, classes[c])
        sides = []
        for test in (False, True):
            on_side = is_test == test
            pos = torch.nonzero(on_side & (labels == c)).squeeze(-1)
            others = [torch.nonzero(on_side & (labels == o)).squeeze(-1) for o in range(len(classes)) if o != c]
            sides.append(_balanced(pos, others, gen))
        (train_idx, train_y), (test_idx, test_y) = sides
        out.append(Subtask(f"{task_name}/{classes[c]}", classes[c], train_idx, train_y, test_idx, test_y))
    return out

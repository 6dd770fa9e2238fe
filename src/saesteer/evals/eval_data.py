"""Per-model evaluation data: everything the LLM has to compute, computed once per model.

``prepare_eval_data`` runs the model on held-out text and stores, under
``results/{model}/eval_data/``:

- ``core.safetensors``: ``eval.core.n_contexts`` held-out contexts of
  ``eval.core.context_length`` tokens (packed like the activation cache: BOS first,
  documents separated by EOS, from the corpus's ``heldout`` split, which SAE training never
  reads) and their hook-point residuals [N, T, d] in the model's dtype.
- ``splice.safetensors``: for the first ``eval.core.splice_contexts`` of them, per scored
  token: clean and zero-ablation cross-entropy (``eval.core.zero_ablation``: ``all``
  zeroes the hook-point residual at every position, BOS included, as SAEBench does;
  ``keep_bos`` leaves BOS clean), the zero-ablation KL(clean || ablated),
  and what an SAE's KL needs about the clean next-token distribution: its negative entropy
  and expected unembedding vector when the LM head is linear (float32, no soft-cap), else
  the clean final hidden state. Zero-ablation does not depend on the SAE, so each SAE
  needs one spliced run only.
- ``probing/{task}.safetensors``: per probing task, the residuals of every passage token
  (ragged, with offsets), labels, the train/test flag and the binary tasks' indices; the
  raw-activation probe baselines go into the manifest.
- ``absorption.safetensors`` (+ ``absorption_words.json``): the residual at each word's
  token in its first-letter prompt, letters, split, and the ground-truth letter probes.
- ``autointerp.safetensors``: the held-out contexts that autointerp scans for examples
  beyond the core ones (``eval.autointerp.n_contexts`` in all, the core contexts first,
  then the next ones of the same held-out stream), with their residuals; absent when the
  core contexts are enough. The manifest's ``autointerp`` entry says how they combine and
  which token ids (BOS, EOS, padding) carry no activation, as in SAEBench.
- ``manifest.json``, written last and atomically: its presence means complete. It holds
  the fingerprint of everything the data depend on (model provenance, corpus and eval
  config; batch size and device excluded) and each file's sha256.

Each SAE's evaluation (:mod:`saesteer.evals.interp`) reads these and runs the model only
above the hook (:mod:`saesteer.evals.splice`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from saesteer.cache.cache_activations import iter_contexts
from saesteer.cache.capture import ResidualCapture
from saesteer.evals.absorption import LETTERS, AbsorptionData, PromptPieces, build_prompts, fit_letter_probes, select_words
from saesteer.evals.config import EvalConfig
from saesteer.evals.passages import Passage, Subtask, binary_subtasks, collect_passages
from saesteer.evals.probing import raw_baselines, segment_mean
from saesteer.evals.splice import UpperRunner, check_head, linear_unembedding, reference_losses
from saesteer.io import atomic_path, sha256_file, sha256_json, write_json_atomic

log = logging.getLogger(__name__)

HEAD_CHECK_TOKENS = 16
"""Positions of the LM-head check (:func:`saesteer.evals.splice.check_head`) in build_core."""

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CORE_FILE = "core.safetensors"
SPLICE_FILE = "splice.safetensors"
ABSORPTION_FILE = "absorption.safetensors"
WORDS_FILE = "absorption_words.json"
AUTOINTERP_FILE = "autointerp.safetensors"
PROBING_DIR = "probing"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class EvalDataError(RuntimeError):
    """Eval data cannot be built, or a stored eval-data directory is unusable."""


def _save(root: Path, name: str, tensors: dict[str, Tensor]) -> dict[str, Any]:
    path = root / name
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def batches(n: int, size: int, desc: str | None = None) -> Iterable[slice]:
    """Row slices of at most ``size``; with ``desc``, wrapped in a progress bar (to the job log)."""
    slices = [slice(i, min(n, i + size)) for i in range(0, n, size)]
    return tqdm(slices, desc=desc, mininterval=10) if desc else slices


def rows_per_batch(cfg: EvalConfig, seq_len: int) -> int:
    """Sequences per LLM forward: ``batch_size`` eval contexts' worth of tokens, so short
    inputs (passages, first-letter prompts) run in proportionally larger batches."""
    return max(1, cfg.batch_size * cfg.core.context_length // max(1, seq_len))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- core: held-out contexts, residuals, clean and zero-ablated runs ---------------------


def build_core(
    model: torch.nn.Module, tokenizer: Any, layer: int, corpus_cfg: dict[str, Any], cfg: EvalConfig, out_dir: Path
) -> dict[str, Any]:
    context_cfg = dict(corpus_cfg, context_length=cfg.core.context_length)
    contexts = list(islice(iter_contexts(context_cfg, tokenizer, "heldout"), cfg.core.n_contexts))
    if not contexts:
        raise EvalDataError("the corpus's heldout split yields no complete context; raise corpus.heldout_fraction")
    if len(contexts) < cfg.core.n_contexts:
        log.warning("held-out text fills only %d of %d eval contexts", len(contexts), cfg.core.n_contexts)
    tokens = torch.tensor([c.tokens for c in contexts], dtype=torch.long)
    n, length = tokens.shape
    first = 1 if contexts[0].has_bos else 0  # BOS keeps its clean residual in every SAE splice
    # The zero-ablation reference: SAEBench core zeroes every position, BOS included
    # (sae_bench/evals/core/main.py, standard_zero_ablate_hook); keep_bos leaves BOS clean.
    zeroed_from = first if cfg.core.zero_ablation == "keep_bos" else 0
    n_splice = min(cfg.core.splice_contexts, n)
    device = _device(model)
    capture = ResidualCapture(model, layer)
    runner = UpperRunner(model, layer)
    # With a linear float32 LM head an SAE's KL needs only two numbers per clean token
    # distribution (splice.spliced_losses); otherwise the clean final hidden states are kept.
    fast_kl = linear_unembedding(model) is not None
    resid_parts: list[Tensor] = []
    splice_parts: dict[str, list[Tensor]] = {}
    head_gap = None
    for rows in batches(n, cfg.batch_size, "core contexts"):
        ids = tokens[rows].to(device)
        resid = capture(ids)
        resid_parts.append(resid.cpu())
        m = max(0, min(rows.stop, n_splice) - rows.start)
        if m == 0:
            continue
        ids_s, resid_s = ids[:m], resid[:m]
        clean = runner(ids_s, resid_s)
        if head_gap is None:
            # On one context's first HEAD_CHECK_TOKENS positions: a causal LM's final hidden
            # state there is the same whatever follows, and the check's whole-model forward
            # with full logits cost 10-16 s per model on CPU at 2 x 128 tokens (Gemma-3's
            # 262k-token head).
            head_gap = check_head(model, ids_s[:1, :HEAD_CHECK_TOKENS], clean[:1, :HEAD_CHECK_TOKENS])
        zeroed = resid_s.clone()
        zeroed[:, zeroed_from:] = 0
        ablated = runner(ids_s, zeroed)
        d = clean.shape[-1]
        scored = clean[:, first : length - 1]
        losses = reference_losses(
            model,
            scored.reshape(-1, d),
            ablated[:, first : length - 1].reshape(-1, d),
            ids_s[:, first + 1 :].reshape(-1),
            keep_expectation=fast_kl,
        )
        if not fast_kl:
            losses["clean_hidden"] = scored.reshape(-1, d).cpu()
        for key, value in losses.items():
            # Stored per context: [m, scored positions] or [m, scored positions, d].
            splice_parts.setdefault(key, []).append(value.reshape(m, length - 1 - first, *value.shape[1:]))
    files = {CORE_FILE: _save(out_dir, CORE_FILE, {"tokens": tokens, "resid": torch.cat(resid_parts)})}
    splice = {key: torch.cat(parts) for key, parts in splice_parts.items()}
    files[SPLICE_FILE] = _save(out_dir, SPLICE_FILE, splice)
    info = {
        "n_contexts": n,
        "context_length": length,
        "n_tokens": n * (length - first),
        "first_replaced_position": first,
        "zero_ablation": cfg.core.zero_ablation,
        "first_zeroed_position": zeroed_from,
        "splice_contexts": n_splice,
        "splice_scored_tokens": int(splice["ce_clean"].numel()),
        "kl_method": "expected_unembedding" if fast_kl else "clean_logits",
        "ce_loss_clean": float(splice["ce_clean"].double().mean()),
        "ce_loss_zero_ablation": float(splice["ce_zero"].double().mean()),
        "kl_div_zero_ablation": float(splice["kl_zero"].double().mean()),
        "head_check_max_abs_diff": head_gap,
    }
    return {"info": info, "files": files}


# ---- sparse probing: passage residuals and raw baselines --------------------------------


@torch.inference_mode()
def passage_residuals(
    model: torch.nn.Module, layer: int, tokenizer: Any, passages: list[Passage], batch_size: int
) -> tuple[Tensor, Tensor]:
    """Residuals of every passage token (BOS excluded), concatenated [N, d], and offsets [n + 1].

    Passages are right-padded into batches: in a causal LM padding after a token cannot
    change its residual, so no attention mask is needed.
    """
    capture = ResidualCapture(model, layer)
    device = _device(model)
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = [bos] if bos is not None else []
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0)
    order = sorted(range(len(passages)), key=lambda i: -len(passages[i].tokens))  # little padding
    out: list[Tensor | None] = [None] * len(passages)
    for rows in batches(len(order), batch_size, "probing passages"):
        chunk = [order[i] for i in range(rows.start, rows.stop)]
        width = len(prefix) + max(len(passages[i].tokens) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for r, i in enumerate(chunk):
            seq = prefix + passages[i].tokens
            ids[r, : len(seq)] = torch.tensor(seq)
        resid = capture(ids.to(device)).cpu()
        for r, i in enumerate(chunk):
            out[i] = resid[r, len(prefix) : len(prefix) + len(passages[i].tokens)]
    lengths = torch.tensor([len(p.tokens) for p in passages], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return torch.cat([t for t in out if t is not None]), offsets


def subtask_tensors(subtasks: list[Subtask]) -> dict[str, Tensor]:
    out = {}
    for j, sub in enumerate(subtasks):
        out[f"sub{j}_train_idx"] = sub.train_idx.long()
        out[f"sub{j}_train_y"] = sub.train_y.float()
        out[f"sub{j}_test_idx"] = sub.test_idx.long()
        out[f"sub{j}_test_y"] = sub.test_y.float()
    return out


def build_probing(
    model: torch.nn.Module, tokenizer: Any, layer: int, corpus_cfg: dict[str, Any], cfg: EvalConfig, out_dir: Path
) -> dict[str, Any]:
    pcfg = cfg.sparse_probing
    tasks_info, files = {}, {}
    for task in pcfg.tasks:
        if not _SAFE_NAME.match(task.name):
            raise EvalDataError(f"probing task name {task.name!r} must match {_SAFE_NAME.pattern}")
        started = time.perf_counter()
        passages, classes = collect_passages(task, pcfg, tokenizer, corpus_cfg, cfg.seed)
        longest = 1 + max(len(p.tokens) for p in passages)
        token_resid, offsets = passage_residuals(model, layer, tokenizer, passages, rows_per_batch(cfg, longest))
        labels = torch.tensor([p.label for p in passages], dtype=torch.long)
        is_test = torch.tensor([p.is_test for p in passages], dtype=torch.bool)
        subtasks = binary_subtasks(task.name, labels, is_test, classes, cfg.seed)
        baselines = raw_baselines(segment_mean(token_resid, offsets), subtasks, pcfg.k, pcfg.C)
        name = f"{PROBING_DIR}/{task.name}.safetensors"
        tensors = {
            "token_resid": token_resid,
            "offsets": offsets,
            "labels": labels,
            "is_test": is_test,
            "doc": torch.tensor([p.doc for p in passages], dtype=torch.long),
            **subtask_tensors(subtasks),
        }
        files[name] = _save(out_dir, name, tensors)
        tasks_info[task.name] = {
            "file": name,
            "kind": task.kind,
            "classes": classes,
            "n_passages": len(passages),
            "n_train_passages": int((~is_test).sum()),
            "n_test_passages": int(is_test.sum()),
            "n_tokens": int(offsets[-1]),
            "subtasks": [{"name": s.name, "positive": s.positive} for s in subtasks],
            "baselines": baselines,
            "seconds": time.perf_counter() - started,
        }
        log.info(
            "probing task %s: %d passages, raw probe accuracy %s",
            task.name,
            len(passages),
            {k: round(v["llm_test_accuracy"], 3) for k, v in baselines.items()},
        )
    return {"info": {"k": list(pcfg.k), "tasks": tasks_info}, "files": files}


# ---- absorption: first-letter prompts and letter probes ---------------------------------


def _vocab_size(model: torch.nn.Module, tokenizer: Any) -> int:
    size = int(model.get_input_embeddings().weight.shape[0])
    try:
        return min(size, len(tokenizer))
    except TypeError:  # a tokenizer without __len__
        return size


@torch.inference_mode()
def word_residuals(model: torch.nn.Module, layer: int, prompts: list[tuple[list[int], int]], batch_size: int, pad: int) -> Tensor:
    """Residual at each prompt's word position [n, d] (prompts right-padded into batches)."""
    capture = ResidualCapture(model, layer)
    device = _device(model)
    out = []
    for rows in batches(len(prompts), batch_size, "first-letter prompts"):
        chunk = prompts[rows]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for r, (seq, _) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
        resid = capture(ids.to(device))
        pos = torch.tensor([p for _, p in chunk], device=resid.device)
        out.append(resid[torch.arange(len(chunk), device=resid.device), pos].cpu())
    return torch.cat(out)


def build_absorption(model: torch.nn.Module, tokenizer: Any, layer: int, cfg: EvalConfig, out_dir: Path) -> dict[str, Any]:
    acfg = cfg.absorption
    words = select_words(tokenizer, _vocab_size(model, tokenizer), acfg, cfg.seed)
    pieces = PromptPieces.build(tokenizer, acfg)
    prompts = build_prompts(words, pieces, acfg.icl_examples, cfg.seed)
    pad = getattr(tokenizer, "eos_token_id", None) or 0
    longest = max(len(ids) for ids, _ in prompts)
    resid = word_residuals(model, layer, prompts, rows_per_batch(cfg, longest), pad)
    probe, f1 = fit_letter_probes(resid.float(), words.letters, words.is_test, acfg.C)
    files = {
        ABSORPTION_FILE: _save(
            out_dir,
            ABSORPTION_FILE,
            {
                "resid": resid,
                "letters": words.letters,
                "is_test": words.is_test,
                "word_ids": torch.tensor(words.ids, dtype=torch.long),
                "probe_weight": probe.weight,
                "probe_bias": probe.bias,
                "probe_f1": f1,
            },
        )
    }
    write_json_atomic(out_dir / WORDS_FILE, {"words": words.surfaces})
    files[WORDS_FILE] = {"sha256": sha256_file(out_dir / WORDS_FILE), "bytes": (out_dir / WORDS_FILE).stat().st_size}
    example_ids = prompts[0][0]
    decode = getattr(tokenizer, "decode", None)
    info = {
        "n_words": len(words.ids),
        "n_train_words": int((~words.is_test).sum()),
        "n_test_words": int(words.is_test.sum()),
        "prompt_tokens": sum(len(p) for p, _ in prompts),
        "example_prompt": decode(example_ids) if decode else None,
        "probe_test_f1": {letter: float(v) for letter, v in zip(LETTERS, f1.tolist())},
        "letters_probe_ok": int((f1 >= acfg.min_probe_f1).sum()),
    }
    log.info(
        "absorption: %d words, %d letters with probe F1 >= %.2f", info["n_words"], info["letters_probe_ok"], acfg.min_probe_f1
    )
    return {"info": info, "files": files}


# ---- autointerp: more held-out contexts to find each latent's examples in -----------------


def special_token_ids(tokenizer: Any) -> list[int]:
    """BOS, EOS and padding ids: SAEBench masks their activations (mask_bos_pad_eos_tokens)."""
    ids = {getattr(tokenizer, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return sorted(int(i) for i in ids if i is not None)


@torch.inference_mode()
def build_autointerp(
    model: torch.nn.Module, tokenizer: Any, layer: int, corpus_cfg: dict[str, Any], cfg: EvalConfig, out_dir: Path, n_core: int
) -> dict[str, Any]:
    """Residuals of the held-out contexts after the ``n_core`` core ones, up to
    ``eval.autointerp.n_contexts`` in all (same packing and length as the core contexts)."""
    wanted = cfg.autointerp.n_contexts
    extra: list[Tensor] = []
    n_extra = 0
    files: dict[str, Any] = {}
    length = cfg.core.context_length
    if wanted > n_core:
        context_cfg = dict(corpus_cfg, context_length=length)
        contexts = list(islice(iter_contexts(context_cfg, tokenizer, "heldout"), n_core, wanted))
        if n_core + len(contexts) < wanted:
            log.warning("held-out text fills only %d of %d autointerp contexts", n_core + len(contexts), wanted)
        if contexts:
            tokens = torch.tensor([c.tokens for c in contexts], dtype=torch.long)
            capture = ResidualCapture(model, layer)
            device = _device(model)
            for rows in batches(len(contexts), cfg.batch_size, "autointerp contexts"):
                extra.append(capture(tokens[rows].to(device)).cpu())
            n_extra = len(contexts)
            files[AUTOINTERP_FILE] = _save(out_dir, AUTOINTERP_FILE, {"tokens": tokens, "resid": torch.cat(extra)})
    n_core_used = min(n_core, wanted)
    info = {
        "n_contexts": n_core_used + n_extra,
        "core_contexts": n_core_used,
        "extra_contexts": n_extra,
        "file": AUTOINTERP_FILE if n_extra else None,
        "context_length": length,
        "n_tokens": (n_core_used + n_extra) * length,
        "masked_token_ids": special_token_ids(tokenizer),
    }
    return {"info": info, "files": files}


# ---- the whole per-model job ------------------------------------------------------------


def eval_data_fingerprint(
    model_name: str, layer: int, corpus_cfg: dict[str, Any], cfg: EvalConfig, provenance: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    identity = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "layer": layer,
        "model_provenance": {k: v for k, v in provenance.items() if k != "local_dir"},
        "corpus": corpus_cfg,
        "eval": cfg.identity(),
    }
    return sha256_json(identity), identity


def build_eval_data(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    model_name: str,
    layer: int,
    corpus_cfg: dict[str, Any],
    cfg: EvalConfig,
    out_dir: Path,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute and store the eval data of one model; returns the manifest (written last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    model.eval()
    fingerprint, identity = eval_data_fingerprint(model_name, layer, corpus_cfg, cfg, provenance or {})
    timings: dict[str, float] = {}
    started = time.perf_counter()
    core = build_core(model, tokenizer, layer, corpus_cfg, cfg, out_dir)
    timings["core_seconds"] = time.perf_counter() - started
    log.info("core eval data: %s", {k: v for k, v in core["info"].items() if "loss" in k or "kl" in k})
    mark = time.perf_counter()
    probing = build_probing(model, tokenizer, layer, corpus_cfg, cfg, out_dir)
    timings["sparse_probing_seconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    absorption = build_absorption(model, tokenizer, layer, cfg, out_dir)
    timings["absorption_seconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    autointerp = build_autointerp(model, tokenizer, layer, corpus_cfg, cfg, out_dir, core["info"]["n_contexts"])
    timings["autointerp_seconds"] = time.perf_counter() - mark
    timings["total_seconds"] = time.perf_counter() - started
    config = getattr(model, "config", None)
    d_model = int(getattr(config, "hidden_size", 0) or 0)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "layer": layer,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "d_model": d_model,
        "model_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "fingerprint": fingerprint,
        "identity": identity,
        "files": {**core["files"], **probing["files"], **absorption["files"], **autointerp["files"]},
        "core": core["info"],
        "sparse_probing": probing["info"],
        "absorption": absorption["info"],
        "autointerp": autointerp["info"],
        "timings": timings,
    }
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return manifest


def prepare_eval_data(
    model_json: Path,
    model_entry: dict[str, Any],
    corpus_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    out_dir: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """The workflow's per-model job: load the prepared model, build its eval data in ``out_dir``."""
    from saesteer.models import ModelSpec, load_prepared

    if threads:
        torch.set_num_threads(threads)
    spec = ModelSpec.from_config(model_entry)
    cfg = EvalConfig.from_config(eval_cfg)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_prepared(model_json, dtype=cfg.model_dtype, device=cfg.device)
    provenance = json.loads(Path(model_json).read_text())
    log.info("preparing eval data of %s (%s) on %s", spec.name, spec.hook_name, _device(model))
    manifest = build_eval_data(
        model,
        tokenizer,
        model_name=spec.name,
        layer=spec.layer,
        corpus_cfg=corpus_cfg,
        cfg=cfg,
        out_dir=Path(out_dir),
        provenance=provenance,
    )
    log.info("eval data of %s done: %s", spec.name, {k: round(v, 1) for k, v in manifest["timings"].items()})
    return manifest


# ---- reading ----------------------------------------------------------------------------


@dataclass
class EvalData:
    """A complete eval-data directory, read lazily."""

    root: Path
    manifest: dict[str, Any]
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    def _open(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.root / name), framework="pt")
        return self._handles[name]

    def tensor(self, file: str, key: str) -> Tensor:
        return self._open(file).get_tensor(key)

    def rows(self, file: str, key: str, rows: slice) -> Tensor:
        """A slice of a stored tensor's first dimension, without reading the rest."""
        return self._open(file).get_slice(key)[rows.start : rows.stop]

    def shape(self, file: str, key: str) -> list[int]:
        return list(self._open(file).get_slice(key).get_shape())

    def probing_task(self, name: str) -> tuple[Tensor, Tensor, list[Subtask]]:
        info = self.manifest["sparse_probing"]["tasks"][name]
        file = info["file"]
        subtasks = []
        for j, sub in enumerate(info["subtasks"]):
            subtasks.append(
                Subtask(
                    sub["name"],
                    sub["positive"],
                    self.tensor(file, f"sub{j}_train_idx"),
                    self.tensor(file, f"sub{j}_train_y"),
                    self.tensor(file, f"sub{j}_test_idx"),
                    self.tensor(file, f"sub{j}_test_y"),
                )
            )
        return self.tensor(file, "token_resid"), self.tensor(file, "offsets"), subtasks

    def autointerp_parts(self) -> list[tuple[str, int]]:
        """(file, rows) of the autointerp contexts, in order: the first core contexts, then
        the extra ones. Eval data made before autointerp existed are refused by name."""
        info = self.manifest.get("autointerp")
        if info is None:
            raise EvalDataError(
                f"{self.root / MANIFEST_NAME} has no autointerp contexts (made by an older version); rerun prepare_eval_data"
            )
        parts = [(CORE_FILE, int(info["core_contexts"]))]
        if info["extra_contexts"]:
            parts.append((info["file"], int(info["extra_contexts"])))
        return [(f, n) for f, n in parts if n > 0]

    def absorption(self) -> AbsorptionData:
        get = lambda key: self.tensor(ABSORPTION_FILE, key)  # noqa: E731
        return AbsorptionData(
            resid=get("resid"),
            letters=get("letters"),
            is_test=get("is_test"),
            probe_weight=get("probe_weight"),
            probe_bias=get("probe_bias"),
            probe_f1=get("probe_f1"),
        )


def load_eval_data(eval_dir: Path) -> EvalData:
    """Open an eval-data directory; refuse an incomplete or foreign one, naming the file."""
    eval_dir = Path(eval_dir)
    path = eval_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalDataError(f"{path} does not exist: run the prepare_eval_data rule for this model") from None
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{path} is not valid JSON ({exc}); rerun prepare_eval_data") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EvalDataError(
            f"{path}: format version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}; rerun prepare_eval_data"
        )
    for name, record in manifest.get("files", {}).items():
        file = eval_dir / name
        # Sizes, not checksums: hashing gigabytes per SAE would cost more than the eval.
        if not file.exists():
            raise EvalDataError(f"eval data file {file} is missing; rerun prepare_eval_data")
        if file.stat().st_size != record["bytes"]:
            raise EvalDataError(
                f"eval data file {file} has {file.stat().st_size} bytes, the manifest says {record['bytes']}; rerun prepare_eval_data"
            )
    return EvalData(eval_dir, manifest)

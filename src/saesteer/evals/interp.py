"""One SAE's interpretability report: core, sparse probing, absorption, and autointerp's score.

``evaluate_sae`` loads the SAE (refusing malformed files with a message naming the file),
reads its model's eval data (:mod:`saesteer.evals.eval_data`; computed once per model),
runs the model above the hook with the SAE spliced in, and writes
``results/{model}/{arch}/{sparsity}/interp.json`` atomically after validating it against
``src/saesteer/schemas/interp.schema.json``. Definitions of every number: :mod:`core`,
:mod:`probing`, :mod:`absorption`; the autointerp score (the only judged metric) comes
from the SAE's ``autointerp.json`` (:mod:`autointerp`) and is copied under ``autointerp``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from saesteer.schemas import schema_path
from saesteer.evals.absorption import evaluate_absorption
from saesteer.evals.config import EvalConfig
from saesteer.evals.core import ReconstructionStats, splice_scores
from saesteer.evals.eval_data import CORE_FILE, MANIFEST_NAME, SPLICE_FILE, EvalData, EvalDataError, batches, load_eval_data
from saesteer.evals.probing import evaluate_task, mean_over_tasks, pooled_codes
from saesteer.evals.splice import UpperRunner, spliced_losses
from saesteer.io import check_schema, finite_json, sha256_file, write_json_atomic
from saesteer.sae.base import BaseSAE
from saesteer.sae.registry import saelens_required_tensors
from saesteer.sae.saelens_io import SAELENS_CFG, SAELENS_WEIGHTS, load_saelens

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("interp.schema.json")
REPORT_VERSION = 1



class SAEFileError(ValueError):
    """An SAE directory's files are missing or malformed; the message names the file."""


class ReportError(RuntimeError):
    """The report does not match its schema (a bug), or inputs do not belong together."""


# ---- loading the SAE ----------------------------------------------------------------------


def check_sae_files(sae_dir: Path) -> dict[str, Any]:
    """Validate cfg.json and sae_weights.safetensors before loading; return the config."""
    sae_dir = Path(sae_dir)
    cfg_path, weights_path = sae_dir / SAELENS_CFG, sae_dir / SAELENS_WEIGHTS
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise SAEFileError(f"SAE file {path} does not exist")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAEFileError(f"SAE config {cfg_path} is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise SAEFileError(f"SAE config {cfg_path} is not a JSON object")
    dims = {}
    for key in ("d_in", "d_sae"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SAEFileError(f"SAE config {cfg_path}: {key} must be a positive integer, got {value!r}")
        dims[key] = value
    arch = cfg.get("architecture", "standard")
    # Tensors a SAELens-format SAE of each on-disk architecture must hold (the descriptors').
    required_by_arch = saelens_required_tensors()
    if arch not in required_by_arch:
        raise SAEFileError(f"SAE config {cfg_path}: architecture {arch!r} is not one of {sorted(required_by_arch)}")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise SAEFileError(f"SAE weights {weights_path} are not a readable safetensors file ({exc})") from exc
    required = required_by_arch[arch]
    missing = [k for k in required if k not in shapes]
    if missing:
        raise SAEFileError(f"SAE weights {weights_path}: missing tensor(s) {missing} of a SAELens {arch!r} SAE (found {sorted(shapes)})")
    for key, names in required.items():
        expected = tuple(dims[n] for n in names)
        if shapes[key] != expected:
            raise SAEFileError(
                f"SAE weights {weights_path}: {key} has shape {list(shapes[key])}, expected {list(expected)} "
                f"(d_in={dims['d_in']}, d_sae={dims['d_sae']} in {cfg_path})"
            )
    return cfg


def load_sae(sae_dir: Path) -> tuple[BaseSAE, dict[str, Any]]:
    """Load an SAE directory into our classes, refusing malformed files by name."""
    cfg = check_sae_files(sae_dir)
    weights_path = Path(sae_dir) / SAELENS_WEIGHTS
    try:
        sae = load_saelens(sae_dir)
    except Exception as exc:
        raise SAEFileError(f"SAE weights {weights_path} cannot be loaded: {exc}") from exc
    for name, param in sae.named_parameters():
        if not torch.isfinite(param).all():
            raise SAEFileError(f"SAE weights {weights_path}: {name} contains NaN or infinite values")
    return sae.eval(), cfg


def load_model_only(model_json: Path, dtype: str, device: str) -> torch.nn.Module:
    """The prepared LLM without its tokenizer (the per-SAE stage needs only stored tokens)."""
    from transformers import AutoModelForCausalLM

    from saesteer.devices import resolve_device
    from saesteer.models import TORCH_DTYPES, ModelError

    try:
        local_dir = json.loads(Path(model_json).read_text())["local_dir"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelError(f"{model_json} is not a prepared-model record ({exc}); rerun prepare_model") from exc
    model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=TORCH_DTYPES[dtype])
    return model.to(resolve_device(device)).eval()


# ---- the three evaluations -----------------------------------------------------------------


@torch.inference_mode()
def core_metrics(sae: BaseSAE, model: torch.nn.Module, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    info = data.manifest["core"]
    layer = int(data.manifest["layer"])
    first, n, length = info["first_replaced_position"], info["n_contexts"], info["context_length"]
    n_splice = info["splice_contexts"]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    runner = UpperRunner(model, layer)
    stats = ReconstructionStats(sae.d_sae)
    tokens = data.tensor(CORE_FILE, "tokens")
    ce_sae, kl_sae = [], []
    for rows in batches(n, cfg.batch_size):
        resid = data.rows(CORE_FILE, "resid", rows).to(device)
        b, d = resid.shape[0], resid.shape[-1]
        x = resid[:, first:].reshape(-1, d)
        hats = []
        for chunk in x.split(cfg.sae_batch_tokens):
            codes = sae.encode(chunk)
            x_hat = sae.decode(codes)
            stats.update(chunk, x_hat, codes)
            hats.append(x_hat)
        m = max(0, min(rows.stop, n_splice) - rows.start)
        if m == 0:
            continue
        spliced = resid[:m].clone()
        spliced[:, first:] = torch.cat(hats).view(b, length - first, d)[:m].to(dtype)
        ids = tokens[rows][:m].to(device)
        hidden = runner(ids, spliced)[:, first : length - 1].reshape(-1, d)
        stored = slice(rows.start, rows.start + m)
        if info["kl_method"] == "expected_unembedding":
            reference = {
                "neg_entropy": data.rows(SPLICE_FILE, "neg_entropy", stored).reshape(-1),
                "expected_unembedding": data.rows(SPLICE_FILE, "expected_unembedding", stored).reshape(-1, d),
            }
        else:
            reference = {"clean_hidden": data.rows(SPLICE_FILE, "clean_hidden", stored).to(device).reshape(-1, d)}
        ce, kl = spliced_losses(model, hidden, ids[:, first + 1 :].reshape(-1), **reference)
        ce_sae.append(ce)
        kl_sae.append(kl)
    out = stats.result()
    if ce_sae:
        spliced_scores = splice_scores(
            data.tensor(SPLICE_FILE, "ce_clean").reshape(-1),
            data.tensor(SPLICE_FILE, "ce_zero").reshape(-1),
            torch.cat(ce_sae),
            data.tensor(SPLICE_FILE, "kl_zero").reshape(-1),
            torch.cat(kl_sae),
        )
        spliced_scores["splice_n_tokens"] = spliced_scores.pop("n_tokens")
        out.update(spliced_scores)
    # Eval data made before the option existed kept BOS in the zero-ablation.
    out["zero_ablation"] = info.get("zero_ablation", "keep_bos")
    return out


def sparse_probing_metrics(sae: BaseSAE, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    info = data.manifest["sparse_probing"]
    ks = [int(k) for k in info["k"]]
    tasks = {}
    for name, task in info["tasks"].items():
        token_resid, offsets, subtasks = data.probing_task(name)
        pooled = pooled_codes(sae, token_resid, offsets, cfg.sae_batch_tokens)
        tasks[name] = evaluate_task(pooled, subtasks, task["baselines"], task["classes"], ks, cfg.sparse_probing.C)
    return {"k": ks, "tasks": tasks, "mean": mean_over_tasks(tasks, ks)}


# ---- the report ---------------------------------------------------------------------------




def validate_report(report: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    check_schema(report, schema_path, "interp report", ReportError)


def open_sae_eval(
    sae_dir: Path, eval_dir: Path, eval_cfg: dict[str, Any], threads: int | None = None
) -> tuple[EvalConfig, BaseSAE, dict[str, Any], EvalData]:
    """What every per-SAE eval job starts with: the config, the SAE and its model's eval
    data, checked to belong together."""
    if threads:
        torch.set_num_threads(threads)
    cfg = EvalConfig.from_config(eval_cfg)
    sae_dir = Path(sae_dir)
    sae, sae_cfg = load_sae(sae_dir)
    data = load_eval_data(Path(eval_dir))
    _check_compatible(sae, sae_cfg, sae_dir, data, cfg)
    return cfg, sae, sae_cfg, data


def _check_compatible(sae: BaseSAE, sae_cfg: dict[str, Any], sae_dir: Path, data: EvalData, cfg: EvalConfig) -> None:
    manifest = data.manifest
    if sae.d_in != manifest["d_model"]:
        raise ReportError(f"SAE {sae_dir} has d_in={sae.d_in}, the model's residual stream has d_model={manifest['d_model']}")
    hook = (sae_cfg.get("metadata") or {}).get("hook_name")
    if hook and hook != manifest["hook_name"]:
        raise ReportError(f"SAE {sae_dir} was trained on {hook}, the eval data are at {manifest['hook_name']}")
    # The autointerp contexts do not enter these metrics (the autointerp job checks them).
    stored = json.dumps({k: v for k, v in manifest["identity"]["eval"].items() if k != "autointerp"}, sort_keys=True)
    current = {k: v for k, v in json.loads(json.dumps(cfg.identity())).items() if k != "autointerp"}
    if stored != json.dumps(current, sort_keys=True):
        raise EvalDataError(
            f"{data.root / MANIFEST_NAME} was made with a different eval config than the current one; rerun prepare_eval_data"
        )


def evaluate_loaded(sae: BaseSAE, model: torch.nn.Module, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    """core, sparse_probing, absorption and timings of an SAE already in memory."""
    timings = {}
    mark = time.perf_counter()
    core = core_metrics(sae, model, data, cfg)
    timings["core_seconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    probing = sparse_probing_metrics(sae, data, cfg)
    timings["sparse_probing_seconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    absorption = evaluate_absorption(sae, data.absorption(), cfg.absorption, cfg.sae_batch_tokens)
    timings["absorption_seconds"] = time.perf_counter() - mark
    return {"core": core, "sparse_probing": probing, "absorption": absorption, "timings": timings}


def autointerp_entry(path: Path, sae_dir: Path, model: str, arch: str, target_l0: int) -> dict[str, Any]:
    """The autointerp part of interp.json, from the SAE's autointerp summary (checked to be
    about this SAE: same weights)."""
    from saesteer.evals.autointerp import read_summary

    summary = read_summary(path)
    weights = sha256_file(Path(sae_dir) / SAELENS_WEIGHTS)
    if summary["sae"]["weights_sha256"] != weights or (summary["model"], summary["arch"], summary["target_l0"]) != (model, arch, int(target_l0)):
        raise ReportError(f"{path} is the autointerp summary of another SAE than {sae_dir}; rerun the autointerp rule")
    return {
        "score": summary["score"],
        "score_std": summary["score_std"],
        "random_labels": summary["random_labels"],
        "scores_by_random_labels": summary["scores_by_random_labels"],
        "score_latents": summary["score_latents"],
        "n_latents": summary["n_latents"],
        "n_scored": summary["n_scored"],
        "n_unparsed": summary["n_unparsed"],
        "judge": summary["judge"],
        "judge_model": summary["judge_model"],
        "judge_prompts": summary["judge_prompts"],
        "explanation_kind": summary["explanation_kind"],
        "protocol": summary["protocol"],
        "unparsed": summary["unparsed"],
        "summary": str(path),
        "summary_sha256": sha256_file(path),
    }


def evaluate_sae(
    sae_dir: Path,
    eval_dir: Path,
    model_json: Path,
    eval_cfg: dict[str, Any],
    out_json: Path,
    model: str,
    arch: str,
    target_l0: int,
    autointerp_json: Path | None = None,
    threads: int | None = None,
    llm: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Evaluate the SAE in ``sae_dir``, write ``out_json``. ``autointerp_json``: the SAE's
    autointerp summary, whose score goes under ``autointerp`` (the workflow always passes
    it). ``llm``: the prepared model already loaded (a grouped job loads it once for all
    its SAEs); otherwise it is loaded from ``model_json``."""
    started = time.perf_counter()
    sae_dir = Path(sae_dir)
    cfg, sae, sae_cfg, data = open_sae_eval(sae_dir, eval_dir, eval_cfg, threads)
    if llm is None:
        llm = load_model_only(model_json, data.manifest["model_dtype"], cfg.device)
    sae = sae.to(next(llm.parameters()).device)
    load_seconds = time.perf_counter() - started
    log.info("evaluating %s on %s eval data (%s)", sae_dir, model, data.manifest["fingerprint"][:12])
    results = evaluate_loaded(sae, llm, data, cfg)
    if autointerp_json is not None:
        results["autointerp"] = autointerp_entry(autointerp_json, sae_dir, model, arch, target_l0)
    results["timings"]["load_seconds"] = load_seconds
    results["timings"]["total_seconds"] = time.perf_counter() - started
    manifest_path = data.root / MANIFEST_NAME
    report = finite_json(
        {
            "report_version": REPORT_VERSION,
            "model": model,
            "arch": arch,
            "target_l0": int(target_l0),
            "hook_name": data.manifest["hook_name"],
            "sae": {
                "path": str(sae_dir),
                "architecture_on_disk": sae_cfg.get("architecture", "standard"),
                "d_in": sae.d_in,
                "d_sae": sae.d_sae,
                "weights_sha256": sha256_file(sae_dir / SAELENS_WEIGHTS),
            },
            **results,
            "eval_data": {
                "fingerprint": data.manifest["fingerprint"],
                "manifest": str(manifest_path),
                "manifest_sha256": sha256_file(manifest_path),
            },
        }
    )
    validate_report(report)
    write_json_atomic(out_json, report)
    core = report["core"]
    log.info(
        "%s/%s/l0-%s: L0 %.1f, EV %.3f, CE recovered %s, probing top-1 %s, absorption %s (%.1f s)",
        model, arch, target_l0, core["l0"], core["explained_variance"], core.get("ce_loss_score"),
        report["sparse_probing"]["mean"]["sae_top_k_test_accuracy"].get("1"),
        report["absorption"]["mean_absorption_fraction_score"], report["timings"]["total_seconds"],
    )
    return report

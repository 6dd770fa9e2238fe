"""One SAE's interpretability report: every registered metric (:mod:`saesteer.evals.metrics`:
core, sparse probing, absorption, and autointerp's score).

``evaluate_sae`` loads the SAE (refusing malformed files with a message naming the file),
reads its model's eval data (:mod:`saesteer.evals.eval_data`; computed once per model),
runs each metric's ``evaluate`` (the model above the hook with the SAE spliced in, ...),
and writes ``results/{model}/{arch}/{sparsity}/interp.json`` atomically after validating it
against ``src/saesteer/schemas/interp.schema.json`` plus the registered metrics' blocks
(:func:`saesteer.evals.metrics.report_schema`). Definitions of every number: the metric
modules; the autointerp score (the only judged metric) comes from the SAE's
``autointerp.json`` (:mod:`autointerp`) and is copied under ``autointerp``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from saesteer.evals.config import EvalConfig
from saesteer.evals.eval_data import MANIFEST_NAME, EvalData, EvalDataError, load_eval_data
from saesteer.evals.metrics import MetricInput, ReportError, evaluated, report_schema
from saesteer.evals.metrics.autointerp import autointerp_entry
from saesteer.evals.metrics.core import core_metrics  # noqa: F401 (its home before the metric modules)
from saesteer.evals.metrics.sparse_probing import sparse_probing_metrics  # noqa: F401
from saesteer.io import check_schema, finite_json, sha256_file, write_json_atomic
from saesteer.sae.base import BaseSAE
from saesteer.sae.registry import saelens_required_tensors
from saesteer.sae.saelens_io import SAELENS_CFG, SAELENS_WEIGHTS, load_saelens
from saesteer.schemas import schema_path

log = logging.getLogger(__name__)

SCHEMA_PATH = schema_path("interp.schema.json")
REPORT_VERSION = 1


class SAEFileError(ValueError):
    """An SAE directory's files are missing or malformed; the message names the file."""


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
        raise SAEFileError(
            f"SAE weights {weights_path}: missing tensor(s) {missing} of a SAELens {arch!r} SAE (found {sorted(shapes)})"
        )
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


# ---- the report ---------------------------------------------------------------------------


def validate_report(report: dict[str, Any], schema_path: Path | None = None) -> None:
    """Against interp.schema.json with every registered metric's block (or the file at
    ``schema_path``)."""
    check_schema(report, schema_path or report_schema(), "interp report", ReportError)


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


def prepare_metrics(model: torch.nn.Module, data: EvalData, cfg: EvalConfig) -> dict[str, Any]:
    """What each registered metric needs from the model, once per model (its ``prepare``)."""
    return {m.name: m.prepare(model, data, cfg) for m in evaluated() if m.prepare is not None}


def evaluate_loaded(
    sae: BaseSAE, model: torch.nn.Module, data: EvalData, cfg: EvalConfig, prepared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every registered metric's block (core, sparse_probing, absorption, ...) and its timing,
    for an SAE already in memory; ``prepared``: :func:`prepare_metrics` of this model (made
    here when not given)."""
    if prepared is None:
        prepared = prepare_metrics(model, data, cfg)
    out: dict[str, Any] = {}
    timings = {}
    for metric in evaluated():
        mark = time.perf_counter()
        out[metric.name] = metric.evaluate(MetricInput(sae, model, data, cfg, prepared.get(metric.name)))
        timings[metric.timing] = time.perf_counter() - mark
    return {**out, "timings": timings}


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
    prepared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the SAE in ``sae_dir``, write ``out_json``. ``autointerp_json``: the SAE's
    autointerp summary, whose score goes under ``autointerp`` (the workflow always passes
    it). ``llm``: the prepared model already loaded (a grouped job loads it once for all
    its SAEs); otherwise it is loaded from ``model_json``. ``prepared``: :func:`prepare_metrics`
    of that model, made once by a grouped job."""
    started = time.perf_counter()
    sae_dir = Path(sae_dir)
    cfg, sae, sae_cfg, data = open_sae_eval(sae_dir, eval_dir, eval_cfg, threads)
    if llm is None:
        llm = load_model_only(model_json, data.manifest["model_dtype"], cfg.device)
    sae = sae.to(next(llm.parameters()).device)
    load_seconds = time.perf_counter() - started
    log.info("evaluating %s on %s eval data (%s)", sae_dir, model, data.manifest["fingerprint"][:12])
    results = evaluate_loaded(sae, llm, data, cfg, prepared)
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
        model,
        arch,
        target_l0,
        core["l0"],
        core["explained_variance"],
        core.get("ce_loss_score"),
        report["sparse_probing"]["mean"]["sae_top_k_test_accuracy"].get("1"),
        report["absorption"]["mean_absorption_fraction_score"],
        report["timings"]["total_seconds"],
    )
    return report

"""Import a pretrained SAE into the grid: the ``fetch_sae`` and ``import_sae`` rules.

``fetch_sae`` (a local rule: it runs where Snakemake runs, which is where the hub is
reachable, like ``prepare_model``) brings a registry SAE's files into the Hugging Face
cache with SAELens's own loader, or records a local folder's checksums.

``import_sae`` then works offline (``HF_HUB_OFFLINE=1``, set by its script before
huggingface_hub is imported):

1. SAELens loads the SAE exactly as its users get it: ``SAE.from_pretrained(release,
   sae_id)`` (registry; the release's converter turns Gemma Scope's ``params.npz`` or
   dictionary_learning's ``ae.pt`` + ``config.json`` into a SAELens SAE and folds a
   registered ``norm_scaling_factor``) or ``SAE.load_from_disk(path)``;
2. what the SAE declares is honoured: ``normalize_activations: expected_average_only_in``
   is folded with SAELens's ``fold_activation_norm_scaling_factor`` (the entry's
   ``norm_scaling_factor`` where the registry has none), per-token normalisations are
   refused, the hook point must be the model's and ``d_in`` its ``d_model``;
3. the SAELens SAE's tensors become one of our classes (``apply_b_dec_to_input``,
   JumpReLU thresholds, TopK's ``rescale_acts_by_decoder_norm`` carried over by
   :func:`saesteer.sae.saelens_io.sae_from_saelens_state`), and the two are run side by
   side on held-out activations: their codes and reconstructions must agree, and the
   measured differences are recorded;
4. L0, explained variance, MSE and dead fraction are measured on the project's held-out
   activations (the rows :class:`saesteer.training.data.ShuffledBatches` holds out, the
   same ones a trained SAE is evaluated on), and the ``sae/`` folder and
   ``train_summary.json`` are written in the shape downstream stages read, with
   ``trained: false`` and where the SAE came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from saesteer.io import sha256_file, write_json_atomic
from saesteer.sae.base import BaseSAE
from saesteer.sae.pretrained import (
    PretrainedConfigError,
    check_architecture,
    check_hook,
    check_normalization,
)
from saesteer.sae.registry import known_tensors
from saesteer.sae.saelens_io import SAELENS_CFG, SAELENS_WEIGHTS, sae_from_saelens_state, save_saelens

log = logging.getLogger(__name__)

AGREEMENT_MIN = 0.999
"""Share of (token, latent) entries whose active/inactive state must agree between SAELens's
encode and ours; below it (or a reconstruction off by more than RECON_TOL) the import stops."""
RECON_TOL = 1e-3


class ImportError_(RuntimeError):
    """The SAE cannot be imported as configured; the message says why."""


# ---- fetch (login node) -------------------------------------------------------------------


def fetch_sae(entry: Mapping[str, Any], record_path: str | Path) -> dict[str, Any]:
    """Bring the SAE's files local (registry: into the HF cache, via SAELens's loader) and
    write a record of where they are."""
    record: dict[str, Any] = {
        k: entry.get(k) for k in ("model", "name", "source", "release", "sae_id", "path", "repo_id", "conversion")
    }
    if entry["source"] == "saelens":
        from huggingface_hub import constants
        from sae_lens import SAE

        SAE.from_pretrained(entry["release"], entry["sae_id"], device="cpu")
        record["hf_hub_cache"] = str(constants.HF_HUB_CACHE)
    else:
        folder = Path(str(entry["path"]))
        record["sha256"] = {name: sha256_file(folder / name) for name in (SAELENS_CFG, SAELENS_WEIGHTS)}
    write_json_atomic(record_path, record)
    return record


# ---- load with SAELens, convert -------------------------------------------------------------


def load_with_saelens(entry: Mapping[str, Any]) -> Any:
    """The SAELens SAE object (float32, CPU), with activation normalisation folded."""
    from sae_lens import SAE

    where = str(entry.get("field") or entry.get("name"))
    if entry["source"] == "saelens":
        sae = SAE.from_pretrained(entry["release"], entry["sae_id"], device="cpu", dtype="float32")
        from sae_lens.loading.pretrained_saes_directory import get_norm_scaling_factor

        registered = get_norm_scaling_factor(entry["release"], entry["sae_id"]) is not None
    else:
        sae = SAE.load_from_disk(str(entry["path"]), device="cpu", dtype="float32")
        registered = False
    norm = sae.cfg.normalize_activations
    factor = entry.get("norm_scaling_factor")
    check_normalization(norm, factor, where, registered=registered)
    if norm == "expected_average_only_in":
        if factor is None:  # pragma: no cover - from_pretrained folds a registered factor itself
            raise PretrainedConfigError(f"{where}: normalize_activations still set after loading")
        sae.fold_activation_norm_scaling_factor(float(factor))
    return sae


def saelens_config(sae: Any) -> dict[str, Any]:
    cfg = sae.cfg.to_dict()
    cfg["architecture"] = sae.cfg.architecture()
    return cfg


def convert(sl_sae: Any, arch: str | None, where: str) -> BaseSAE:
    """Our SAE equal to the SAELens one (refusing unknown architectures and tensors by name)."""
    cfg = saelens_config(sl_sae)
    arch = check_architecture(str(cfg["architecture"]), arch, where)
    state = {k: v.detach() for k, v in sl_sae.state_dict().items()}
    known = known_tensors()
    unknown = sorted(set(state) - known)
    if unknown:
        raise PretrainedConfigError(f"{where}: tensors {unknown} have no counterpart here (known: {sorted(known)})")
    try:
        return sae_from_saelens_state(cfg, state, where, arch=arch).eval()
    except ValueError as exc:
        raise PretrainedConfigError(str(exc)) from None


@torch.no_grad()
def compare(sl_sae: Any, ours: BaseSAE, x: torch.Tensor) -> dict[str, float]:
    """SAELens's encode/decode against ours on the same activations."""
    codes_ref = sl_sae.encode(x)
    recon_ref = sl_sae.decode(codes_ref)
    codes = ours.encode(x)
    recon = ours.decode(codes)
    agree = float(((codes_ref != 0) == (codes != 0)).float().mean())
    scale = float(recon_ref.norm(dim=-1).mean().clamp_min(1e-12))
    return {
        "n_tokens": int(x.shape[0]),
        "active_agreement": agree,
        "codes_max_abs_diff": float((codes_ref - codes).abs().max()),
        "recon_max_abs_diff": float((recon_ref - recon).abs().max()),
        "recon_relative_diff": float((recon_ref - recon).norm(dim=-1).mean()) / scale,
    }


# ---- measure on the held-out activations ----------------------------------------------------


@torch.no_grad()
def measure(sae: BaseSAE, batches: Any) -> dict[str, Any]:
    """L0, explained variance, MSE, dead fraction over held-out batches (the trainer's
    definitions: explained variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2)."""
    d = sae.d_in
    n, l0_sum = 0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    sq_err = torch.zeros((), dtype=torch.float64)
    x_sum = torch.zeros(d, dtype=torch.float64)
    x_sq = torch.zeros((), dtype=torch.float64)
    for x in batches:
        codes = sae.encode(x)
        x_hat = sae.decode(codes)
        active = codes != 0
        n += x.shape[0]
        l0_sum += float(active.sum())
        fired |= active.any(0)
        sq_err += (x - x_hat).double().pow(2).sum()
        x_sum += x.double().sum(0)
        x_sq += x.double().pow(2).sum()
    if n == 0:
        raise ImportError_("the cache holds no held-out activations to measure the SAE on")
    total_var = float(x_sq - x_sum.pow(2).sum() / n)
    return {
        "eval_tokens": n,
        "achieved_l0": l0_sum / n,
        "explained_variance": 1.0 - float(sq_err) / total_var if total_var > 0 else float("nan"),
        "mse": float(sq_err) / (n * d),
        "dead_fraction": 1.0 - float(fired.float().mean()),
    }


def heldout_batches(cache: str | Path, training: Mapping[str, Any] | None) -> tuple[Any, int, dict[str, Any]]:
    """The held-out rows of the cache as the trainer holds them out (same training block):
    the stream, its batch size and the cache's description."""
    from saesteer.training.config import TrainConfig
    from saesteer.training.data import CacheSource, ShuffledBatches

    cfg = TrainConfig.from_dict(dict(training or {}))
    source = CacheSource(str(cache))
    stream = ShuffledBatches(source, cfg.batch_size, cfg.seed, cfg.shuffle_shards, cfg.eval_tokens)
    return stream, cfg.batch_size, source.describe()


# ---- the rule -----------------------------------------------------------------------------


def import_sae(
    entry: Mapping[str, Any],
    cache: str | Path,
    training: Mapping[str, Any] | None,
    *,
    layer: int,
    d_model: int,
    weights_path: str | Path,
    cfg_path: str | Path,
    summary_path: str | Path,
    fetch_record: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Load ``entry`` with SAELens, convert, check, measure and write the cell's outputs."""
    if threads:
        torch.set_num_threads(int(threads))
    where = str(entry.get("field") or entry.get("name"))
    if fetch_record is not None and entry["source"] == "path":
        recorded = json.loads(Path(fetch_record).read_text()).get("sha256", {})
        for name, digest in recorded.items():
            if sha256_file(Path(str(entry["path"])) / name) != digest:
                raise ImportError_(
                    f"{where}: {Path(str(entry['path'])) / name} changed since fetch_sae recorded it; rerun fetch_sae"
                )
    sl_sae = load_with_saelens(entry)
    cfg = saelens_config(sl_sae)
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    check_hook(hook, layer, where)
    if int(cfg["d_in"]) != int(d_model):
        raise PretrainedConfigError(f"{where}: the SAE's d_in is {cfg['d_in']}, the model's d_model is {d_model}")
    ours = convert(sl_sae, entry.get("arch"), where)
    stream, batch_size, data = heldout_batches(cache, training)
    first = next(iter(stream.eval_batches(batch_size)), None)
    if first is None:
        raise ImportError_(f"{cache}: no held-out activations")
    check = compare(sl_sae, ours, first)
    if check["active_agreement"] < AGREEMENT_MIN or check["recon_relative_diff"] > RECON_TOL:
        raise ImportError_(f"{where}: our copy of the SAE disagrees with SAELens's ({check})")
    metrics = measure(ours, stream.eval_batches(batch_size))
    target = int(entry["target_l0"])
    provenance = {
        "source": entry["source"],
        "release": entry.get("release"),
        "sae_id": entry.get("sae_id"),
        "repo_id": entry.get("repo_id"),
        "conversion": entry.get("conversion"),
        "path": entry.get("path"),
        "name": entry.get("name"),
        "saelens_architecture": cfg["architecture"],
        "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input"),
        "normalize_activations": sl_sae.cfg.normalize_activations,
        "norm_scaling_factor": entry.get("norm_scaling_factor"),
        "hook_name": hook,
    }
    metadata = {
        "model_name": (cfg.get("metadata") or {}).get("model_name") or data.get("model"),
        "hook_name": hook or f"blocks.{layer}.hook_resid_post",
        "saesteer": {
            "target_l0": target,
            "achieved_l0": metrics["achieved_l0"],
            "explained_variance": metrics["explained_variance"],
            "layer": layer,
            "trained": False,
            "imported": provenance,
        },
    }
    save_saelens(ours, weights_path, cfg_path, metadata)
    summary = {
        "arch": entry.get("arch") or ours.arch,
        "target_l0": target,
        **metrics,
        "l0_relative_error": (metrics["achieved_l0"] - target) / target,
        "trained": False,
        **provenance,
        "d_in": ours.d_in,
        "d_sae": ours.d_sae,
        "act_scale": 1.0,
        "sparsity": ours.sparsity_info(),
        "saelens_check": check,
        "fetch_record": str(fetch_record) if fetch_record else None,
        "data": data,
        "training": None,
    }
    write_json_atomic(summary_path, summary)
    log.info(
        "imported %s (%s): L0 %.1f (nominal %d), explained variance %.4f, dead %.3f; SAELens agreement %.5f",
        entry.get("name"),
        ours.arch,
        metrics["achieved_l0"],
        target,
        metrics["explained_variance"],
        metrics["dead_fraction"],
        check["active_agreement"],
    )
    return summary

"""Save SAEs in SAELens's on-disk format and load SAELens-format SAEs into our classes.

SAELens (6.x) loads a directory holding ``cfg.json`` and ``sae_weights.safetensors`` with
``sae_lens.SAE.load_from_disk(dir)``. Each architecture's descriptor
(:class:`saesteer.sae.registry.ArchSpec`) says which SAELens ``architecture`` it is saved as,
which tensors it adds to W_enc/W_dec/b_dec, its extra cfg keys and how a SAELens state is
read back (the tables in docs/method.md). E.g. BatchTopK is stored as a JumpReLU SAE with
its inference threshold for every latent, as SAELens itself does; ``metadata.saesteer``
keeps the original architecture and k.

Activation normalisation: SAELens's ``normalize_activations="expected_average_only_in"``
is *not* applied by ``load_from_disk`` (only ``from_pretrained`` folds a registered
factor), so the scale is folded into the weights here and the config says ``"none"``.
With x_n = x / c: W_enc <- W_enc / c, W_dec <- c W_dec, b_dec <- c b_dec; code-space
biases and thresholds are unchanged, so the codes equal the ones seen in training.
"""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saesteer.io import atomic_path, write_json_atomic
from saesteer.sae.base import BaseSAE
from saesteer.sae.registry import ArchTable, build_sae, get_arch, saelens_native

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"

SAELENS_ARCH = ArchTable("saelens_arch")
"""Our architecture -> the SAELens ``architecture`` it is saved as (from the registry)."""


def _saelens_version() -> str:
    try:
        return importlib_metadata.version("sae-lens")
    except importlib_metadata.PackageNotFoundError:
        # Any version >= 6.0 stops SAELens from rewriting the config as a pre-6.0 one.
        return "6.0.0"


@torch.no_grad()
def folded_state(sae: BaseSAE) -> dict[str, Tensor]:
    """SAELens tensors of ``sae`` with the activation scale folded in (float32, contiguous)."""
    c = float(sae.act_scale)
    state: dict[str, Tensor] = {
        "W_enc": sae.W_enc.detach().float() / c,
        "W_dec": sae.W_dec.detach().float() * c,
        "b_dec": sae.b_dec.detach().float() * c,
    }
    spec = get_arch(sae.arch)
    state.update(spec.saelens_state(spec, sae))
    return {k: v.cpu().contiguous() for k, v in state.items()}


def saelens_config(sae: BaseSAE, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """cfg.json content for ``sae``; ``metadata`` adds SAELens metadata fields (model_name,
    hook_name, context_size, ...) and anything else, kept under ``metadata``."""
    version = _saelens_version()
    meta: dict[str, Any] = {
        "sae_lens_version": version,
        "sae_lens_training_version": version,
        "hook_head_index": None,
    }
    meta.update(metadata or {})
    ours = dict(meta.get("saesteer", {}))
    ours.update(
        {
            "architecture": sae.arch,
            "folded_act_scale": float(sae.act_scale),
            "sparsity": sae.sparsity_info(),
        }
    )
    meta["saesteer"] = ours
    spec = get_arch(sae.arch)
    cfg: dict[str, Any] = {
        "architecture": spec.saelens_arch,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.center_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    cfg.update(spec.saelens_cfg(sae))
    return cfg


def save_saelens(
    sae: BaseSAE,
    weights_path: str | Path,
    cfg_path: str | Path,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``sae`` as SAELens loads it (both files atomically). SAELens needs them side by
    side, named ``sae_weights.safetensors`` and ``cfg.json``."""
    weights_path, cfg_path = Path(weights_path), Path(cfg_path)
    state = folded_state(sae)
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(cfg_path, saelens_config(sae, metadata))


def save_saelens_dir(sae: BaseSAE, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    save_saelens(sae, directory / SAELENS_WEIGHTS, directory / SAELENS_CFG, metadata)
    return directory


# ---- loading ----------------------------------------------------------------------------


def _our_arch(cfg: dict[str, Any]) -> str:
    ours = (cfg.get("metadata") or {}).get("saesteer", {}).get("architecture")
    if ours:
        return str(ours)
    arch = cfg.get("architecture", "standard")
    ours = saelens_native(arch)
    if ours is None:
        from saesteer.sae.registry import saelens_to_ours

        raise ValueError(f"SAELens architecture {arch!r} has no counterpart here ({', '.join(saelens_to_ours())})")
    return ours


@torch.no_grad()
def load_saelens(path: str | Path) -> BaseSAE:
    """Load a SAELens-format SAE (a directory, or its cfg.json) into our classes.

    Works for our own exports and for other SAELens SAEs of the architectures some
    descriptor is native to: a different ``apply_b_dec_to_input`` convention is folded into the
    encoder bias, and a TopK ``rescale_acts_by_decoder_norm`` into the weights.
    The loaded module has ``act_scale`` 1 (scales are folded into the weights).
    """
    path = Path(path)
    directory = path.parent if path.name == SAELENS_CFG else path
    cfg = json.loads((directory / SAELENS_CFG).read_text())
    state = {k: v.float() for k, v in load_file(str(directory / SAELENS_WEIGHTS)).items()}
    return sae_from_saelens_state(cfg, state, str(directory))


@torch.no_grad()
def sae_from_saelens_state(cfg: dict[str, Any], state: dict[str, Tensor], where: str, arch: str | None = None) -> BaseSAE:
    """Our SAE holding a SAELens config + state dict (float32 tensors); ``arch`` (ours)
    overrides the one the config implies (e.g. batchtopk for a SAELens jumprelu)."""
    state = {k: v.detach().float().clone() for k, v in state.items()}
    directory = where
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(
            f"{directory}: normalize_activations={cfg['normalize_activations']!r} is not folded into the "
            f"weights; fold it with SAELens (fold_activation_norm_scaling_factor) and save again"
        )
    arch = arch or _our_arch(cfg)
    spec = get_arch(arch)
    meta = (cfg.get("metadata") or {}).get("saesteer", {})
    sparsity = meta.get("sparsity", {})
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if spec.sparsity == "k":
        target = int(sparsity.get("k", cfg.get("k", 0)))
    else:
        target = int(sparsity.get("target_l0", 0) or 0)
    # The options recorded in sparsity_info (e.g. aux_k, bandwidth); other keys are ignored.
    sae = build_sae(arch, d_in, d_sae, target_l0=max(target, 1), act_scale=1.0, options=sparsity)

    if spec.unfold_saelens is not None:
        spec.unfold_saelens(sae, state, cfg, directory)

    centered_on_disk = bool(cfg.get("apply_b_dec_to_input", True))
    if centered_on_disk != sae.center_input:
        # W (x - b_dec) + b  ==  W x + (b - b_dec W): move the centering into the biases.
        shift = state["b_dec"] @ state["W_enc"]
        sign = -1.0 if centered_on_disk else 1.0
        spec.shift_encoder_bias(state, sign * shift)

    missing = [name for name, _ in sae.named_parameters() if name not in state]
    if missing:
        raise ValueError(f"{directory}: weights lack {missing} for architecture {arch}")
    for name, param in sae.named_parameters():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ValueError(f"{directory}: {name} has shape {tuple(state[name].shape)}, expected {tuple(param.shape)}")
        param.copy_(state[name])
    return sae

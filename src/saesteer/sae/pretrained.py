"""Pretrained SAEs as rows of the grid: the config's ``models[].pretrained`` entries.

Each entry names one SAE that already exists and becomes the grid cell
``results/{model}/{arch}/{name}/`` (the entry's ``name`` is the cell's sparsity label),
built by the ``import_sae`` rule instead of ``train_sae``:

- ``{name, source: saelens, release, sae_id}``: an SAE of SAELens's registry
  (``sae_lens/pretrained_saes.yaml``), fetched into the Hugging Face cache by the local
  rule ``fetch_sae`` and converted by SAELens's own loader (Gemma Scope's ``params.npz``,
  dictionary_learning's ``ae.pt`` + ``config.json``, plain SAELens folders);
- ``{name, source: path, path}``: any folder in SAELens's format (``cfg.json`` +
  ``sae_weights.safetensors``), e.g. an SAE this workflow trained elsewhere.

Optional keys: ``arch`` (one of ours, :func:`saesteer.sae.registry.names`; needed where
the config cannot be read before the fetch, checked against it on import), ``target_l0``
(the nominal L0 recorded in every per-SAE output; default: the registry's published L0,
or the SAE config's k / target), ``norm_scaling_factor`` (for an SAE whose config says
``normalize_activations: expected_average_only_in`` without a registered factor).

Everything that can be checked without downloading is checked here, before any job
(:func:`pretrained_errors`); what needs the files (the hook point and d_in of registry
SAEs) is checked again by ``import_sae`` before anything is written. The registry is read
from SAELens's packaged YAML without importing SAELens (that import costs seconds at every
Snakemake start).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _saelens_to_ours() -> dict[str, tuple[str, ...]]:
    """SAELens inference architecture -> ours that it can hold (the first is the default),
    from the architecture descriptors. SAELens saves BatchTopK (and Matryoshka BatchTopK)
    SAEs as JumpReLU SAEs."""
    from saesteer.sae.registry import saelens_to_ours

    return saelens_to_ours()


def _our_archs() -> tuple[str, ...]:
    from saesteer.sae.registry import names

    return names()


NORMALIZATIONS_HONOURED = ("none", None, "expected_average_only_in")
"""``layer_norm`` and ``constant_norm_rescale`` rescale every token by its own norm, which no
fixed SAE (the object every stage steers with and splices in) can express: refused."""

CONVERTER_ARCH = {"gemma_2": "jumprelu", "gemma_3": "jumprelu", "llama_scope": "jumprelu", "llama_scope_r1_distill": "jumprelu"}
"""Registry converters whose architecture is fixed (SAELens's loaders hard-code it)."""

TRAINED_LABEL = re.compile(r"^l0-[0-9]+$")


class PretrainedConfigError(ValueError):
    """A pretrained entry is invalid; the message names the field."""


@dataclass(frozen=True)
class PretrainedEntry:
    """One resolved ``models[i].pretrained[j]`` entry."""

    model: str
    name: str
    source: str
    arch: str
    target_l0: int
    release: str | None = None
    sae_id: str | None = None
    path: str | None = None
    norm_scaling_factor: float | None = None
    repo_id: str | None = None
    conversion: str | None = None
    field: str = ""

    @property
    def cell_path(self) -> str:
        return f"{self.model}/{self.arch}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "name": self.name,
            "source": self.source,
            "arch": self.arch,
            "target_l0": self.target_l0,
            "release": self.release,
            "sae_id": self.sae_id,
            "path": self.path,
            "norm_scaling_factor": self.norm_scaling_factor,
            "repo_id": self.repo_id,
            "conversion": self.conversion,
        }
        return out


# ---- SAELens's registry, read without importing SAELens -----------------------------------


@dataclass(frozen=True)
class RegistryRelease:
    release: str
    repo_id: str
    model: str
    conversion: str | None
    saes: dict[str, dict[str, Any]] = field(default_factory=dict)


def registry_path() -> Path:
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedConfigError("sae-lens is not installed: the SAELens registry cannot be read")
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained_saes.yaml"


@functools.cache
def load_registry(path: str | None = None) -> dict[str, RegistryRelease]:
    """SAELens's registry: release -> its repo, model, converter and SAEs (id -> entry)."""
    with open(path or registry_path()) as handle:
        data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out: dict[str, RegistryRelease] = {}
    for release, value in data.items():
        saes = {str(s["id"]): dict(s) for s in value.get("saes", [])}
        out[release] = RegistryRelease(release, value["repo_id"], value.get("model", ""), value.get("conversion_func"), saes)
    return out


def _nearby(word: str, known: list[str], n: int = 5) -> str:
    close = difflib.get_close_matches(word, known, n=n, cutoff=0.5)
    if not close:
        close = [k for k in known if word.split("_")[0] in k][:n]
    return ", ".join(repr(c) for c in close) if close else "(nothing close)"


# ---- reading an SAE config on disk --------------------------------------------------------


def saelens_cfg_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """architecture, d_in, hook_name, normalize_activations, k and our own metadata of a
    SAELens cfg.json (6.x keeps model-side fields under ``metadata``; older ones at the top)."""
    meta = cfg.get("metadata") or {}
    ours = meta.get("saesteer") or {}
    arch = cfg.get("architecture")
    if arch is None:  # pre-6.0 configs: the activation function says TopK
        arch = "topk" if cfg.get("activation_fn") == "topk" or (cfg.get("activation_fn_str") == "topk") else "standard"
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    return {
        "architecture": arch,
        "d_in": cfg.get("d_in"),
        "hook_name": meta.get("hook_name", cfg.get("hook_name")),
        "normalize_activations": cfg.get("normalize_activations", "none"),
        "k": k,
        "our_arch": ours.get("architecture"),
        "our_target": (ours.get("target_l0") or (ours.get("sparsity") or {}).get("k")),
    }


def check_architecture(saelens_arch: str, declared: str | None, where: str) -> str:
    """Our architecture for a SAELens one, refusing unknown ones by name."""
    table = _saelens_to_ours()
    if saelens_arch not in table:
        raise PretrainedConfigError(
            f"{where}: SAELens architecture {saelens_arch!r} is not supported here (supported: {', '.join(table)})"
        )
    allowed = table[saelens_arch]
    if declared is not None and declared not in allowed:
        raise PretrainedConfigError(
            f"{where}.arch: {declared!r} does not match the SAE's SAELens architecture {saelens_arch!r} "
            f"(which holds {', '.join(allowed)})"
        )
    return declared or allowed[0]


def check_normalization(norm: Any, factor: float | None, where: str, registered: bool = False) -> None:
    if norm not in NORMALIZATIONS_HONOURED:
        raise PretrainedConfigError(
            f"{where}: normalize_activations={norm!r} rescales each token by its own statistics, which a fixed "
            f"SAE cannot express (steering and splicing use one affine encoder/decoder); honoured: "
            f"'none', 'expected_average_only_in'"
        )
    if norm == "expected_average_only_in" and factor is None and not registered:
        raise PretrainedConfigError(
            f"{where}.norm_scaling_factor: the SAE says normalize_activations='expected_average_only_in' but no "
            f"scaling factor is known for it; give the factor its authors published"
        )


def check_hook(hook_name: str | None, layer: int, where: str) -> None:
    expected = f"blocks.{layer}.hook_resid_post"
    if hook_name is not None and hook_name != expected:
        raise PretrainedConfigError(f"{where}: the SAE reads {hook_name!r}, the model's hook point is {expected!r}")


def hook_from_sae_id(sae_id: str, repo_id: str) -> str | None:
    """The hook point an id spells out (``blocks.12.hook_resid_post__...``, Gemma Scope's
    ``layer_12/...`` in a ``-res`` repo), or None where it does not say."""
    match = re.match(r"^(blocks\.[0-9]+\.hook_[a-z_]+?)(?:__|$|/)", sae_id)
    if match:
        return match.group(1)
    match = re.match(r"^layer_([0-9]+)/", sae_id)
    if match:
        kind = (
            "resid_post"
            if "-res" in repo_id
            else ("mlp_out" if "-mlp" in repo_id else "attn.hook_z" if "-att" in repo_id else None)
        )
        if kind:
            return f"blocks.{match.group(1)}.hook_{kind}" if kind != "attn.hook_z" else f"blocks.{match.group(1)}.attn.hook_z"
    return None


# ---- resolving the config -----------------------------------------------------------------


def _resolve(model: dict[str, Any], i: int, j: int, entry: dict[str, Any], base_dir: Path) -> PretrainedEntry:
    where = f"config field models[{i}].pretrained[{j}]"
    declared = entry.get("arch")
    factor = entry.get("norm_scaling_factor")
    target = entry.get("target_l0")
    layer = int(model["layer"])
    if entry["source"] == "saelens":
        registry = load_registry()
        release, sae_id = entry["release"], entry["sae_id"]
        if release not in registry:
            raise PretrainedConfigError(
                f"{where}.release: {release!r} is not in SAELens's registry; close: {_nearby(release, list(registry))}"
            )
        info = registry[release]
        if sae_id not in info.saes:
            raise PretrainedConfigError(
                f"{where}.sae_id: {sae_id!r} is not an SAE of release {release!r}; close: {_nearby(sae_id, list(info.saes))}"
            )
        hub_id = model.get("hub_id")
        if model.get("source") != "hub" or not hub_id:
            raise PretrainedConfigError(
                f"{where}: release {release!r} holds SAEs of {info.model!r}; model {model['name']!r} is not a hub "
                f"model (source: {model.get('source')}), so it cannot be that model"
            )
        if info.model and hub_id.split("/")[-1].lower() != info.model.lower():
            raise PretrainedConfigError(
                f"{where}: release {release!r} holds SAEs of {info.model!r}, model {model['name']!r} is {hub_id!r}"
            )
        check_hook(hook_from_sae_id(sae_id, info.repo_id), layer, where)
        if declared is None:
            if info.conversion in CONVERTER_ARCH:
                declared = CONVERTER_ARCH[info.conversion]
            else:
                raise PretrainedConfigError(
                    f"{where}.arch: release {release!r} does not say its architecture before its files are fetched; "
                    f"declare it (one of {', '.join(_our_archs())}), import_sae checks it against the SAE's config"
                )
        if target is None:
            published = info.saes[sae_id].get("l0")
            if isinstance(published, (int, float)) and published > 0:
                target = int(round(float(published)))
            else:
                raise PretrainedConfigError(
                    f"{where}.target_l0: the registry publishes no L0 for {release}/{sae_id}; give its nominal L0 "
                    f"(the measured L0 is written to train_summary.json on import)"
                )
        return PretrainedEntry(
            model=model["name"],
            name=entry["name"],
            source="saelens",
            arch=declared,
            target_l0=int(target),
            release=release,
            sae_id=sae_id,
            norm_scaling_factor=factor,
            repo_id=info.repo_id,
            conversion=info.conversion or "sae_lens",
            field=where,
        )
    path = Path(entry["path"])
    folder = path if path.is_absolute() else base_dir / path
    cfg_file = folder / "cfg.json"
    if not cfg_file.is_file():
        raise PretrainedConfigError(
            f"{where}.path: {cfg_file} does not exist (a SAELens folder holds cfg.json and sae_weights.safetensors)"
        )
    if not (folder / "sae_weights.safetensors").is_file():
        raise PretrainedConfigError(f"{where}.path: {folder / 'sae_weights.safetensors'} does not exist")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PretrainedConfigError(f"{where}.path: {cfg_file} is not valid JSON ({exc})") from None
    fields = saelens_cfg_fields(cfg)
    arch = check_architecture(str(fields["architecture"]), declared or fields["our_arch"], where)
    if fields["d_in"] != model["d_model"]:
        raise PretrainedConfigError(
            f"{where}.path: the SAE's d_in is {fields['d_in']}, model {model['name']!r} has d_model {model['d_model']}"
        )
    check_hook(fields["hook_name"], layer, where)
    check_normalization(fields["normalize_activations"], factor, where)
    if target is None:
        target = fields["our_target"] or fields["k"]
        if not target:
            raise PretrainedConfigError(f"{where}.target_l0: {cfg_file} states no k or target L0; give the SAE's nominal L0")
    return PretrainedEntry(
        model=model["name"],
        name=entry["name"],
        source="path",
        arch=arch,
        target_l0=int(round(float(target))),
        path=str(folder),
        norm_scaling_factor=factor,
        field=where,
    )


def resolve_pretrained(config: dict[str, Any], base_dir: str | Path = ".") -> tuple[list[PretrainedEntry], list[str]]:
    """Every pretrained entry of the config, resolved, and the list of problems (each naming its field)."""
    entries: list[PretrainedEntry] = []
    errors: list[str] = []
    trained = {f"l0-{k}" for k in config.get("sparsities", [])}
    for i, model in enumerate(config["models"]):
        seen: set[str] = set()
        for j, entry in enumerate(model.get("pretrained") or []):
            name = entry.get("name")
            where = f"config field models[{i}].pretrained[{j}].name"
            if name in seen:
                errors.append(f"{where}: {name!r} is used twice for model {model['name']!r}")
                continue
            seen.add(name)
            if name in trained:
                errors.append(f"{where}: {name!r} is the label of a trained sparsity level; pick another name")
                continue
            try:
                entries.append(_resolve(model, i, j, entry, Path(base_dir)))
            except PretrainedConfigError as exc:
                errors.append(str(exc))
    return entries, errors

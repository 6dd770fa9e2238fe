"""interp.json end to end on a tiny model; malformed SAE files are refused by name; config defaults."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import prose_and_code_corpus
from saesteer.config import load_schema
from saesteer.evals.config import AbsorptionConfig, AutointerpConfig, CoreConfig, EvalConfig, ProbingConfig
from saesteer.evals.eval_data import EvalDataError, build_eval_data
from saesteer.evals.report import SAEFileError, evaluate_sae, load_sae, validate_report
from saesteer.sae.registry import build_sae
from saesteer.sae.saelens_io import save_saelens_dir


pytestmark = pytest.mark.usefixtures("one_thread")


D_MODEL = 32


EVAL_BLOCK = {
    "device": "cpu",
    "batch_size": 4,
    "core": {"n_contexts": 6, "splice_contexts": 3, "context_length": 24},
    "sparse_probing": {
        "k": [1, 2],
        "train_size": 16,
        "test_size": 8,
        "max_tokens": 12,
        "tasks": [{"name": "source", "kind": "corpus_sources"}],
    },
    "absorption": {"icl_examples": 1, "max_words": 52, "min_true_positives": 1, "max_k": 2},
}


@pytest.fixture
def prepared(tiny_model, char_tokenizer, tmp_path):
    """A saved tiny model (model.json) and its eval data."""
    local = tmp_path / "hf"
    tiny_model.save_pretrained(local)
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"name": "tiny", "local_dir": str(local)}))
    cfg = EvalConfig.from_config(EVAL_BLOCK)
    build_eval_data(
        tiny_model, char_tokenizer, model_name="tiny", layer=1, corpus_cfg=prose_and_code_corpus(tmp_path), cfg=cfg, out_dir=tmp_path / "eval_data"
    )
    return model_json, tmp_path / "eval_data"


def _save_sae(directory: Path, arch: str = "topk") -> Path:
    torch.manual_seed(0)
    sae = build_sae(arch, D_MODEL, 64, target_l0=4, act_scale=2.0)
    sae.reset_parameters()
    return save_saelens_dir(sae, directory, metadata={"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"})


def test_interp_json_validates_against_the_schema(prepared, tmp_path):
    model_json, eval_dir = prepared
    sae_dir = _save_sae(tmp_path / "sae")
    out = tmp_path / "results" / "interp.json"
    report = evaluate_sae(sae_dir, eval_dir, model_json, EVAL_BLOCK, out, model="tiny", arch="topk", target_l0=4)
    on_disk = json.loads(out.read_text())
    validate_report(on_disk)
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["core"]["l0"] <= 4.0 + 1e-6  # TopK with k = 4
    assert set(on_disk["sparse_probing"]["tasks"]) == {"source"}
    assert on_disk["sparse_probing"]["tasks"]["source"]["classes"] == ["prose", "code"]
    assert on_disk["eval_data"]["fingerprint"] == json.loads((eval_dir / "manifest.json").read_text())["fingerprint"]
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_schema_rejects_a_broken_report(prepared, tmp_path):
    model_json, eval_dir = prepared
    out = tmp_path / "interp.json"
    report = evaluate_sae(_save_sae(tmp_path / "sae"), eval_dir, model_json, EVAL_BLOCK, out, model="tiny", arch="topk", target_l0=4)
    broken = json.loads(json.dumps(report))
    del broken["core"]["ce_loss_score"]
    with pytest.raises(Exception, match="ce_loss_score"):
        validate_report(broken)


def test_changed_eval_config_is_refused(prepared, tmp_path):
    model_json, eval_dir = prepared
    changed = json.loads(json.dumps(EVAL_BLOCK))
    changed["absorption"]["max_k"] = 3
    with pytest.raises(EvalDataError, match="different eval config"):
        evaluate_sae(_save_sae(tmp_path / "sae"), eval_dir, model_json, changed, tmp_path / "i.json", model="tiny", arch="topk", target_l0=4)


# ---- malformed SAE files ---------------------------------------------------------------------


def test_valid_sae_loads(tmp_path):
    sae, cfg = load_sae(_save_sae(tmp_path / "sae", arch="jumprelu"))
    assert sae.d_in == D_MODEL and cfg["architecture"] == "jumprelu"


def test_missing_weights_key_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = sae_dir / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    del tensors["W_dec"]
    save_file(tensors, str(weights))
    with pytest.raises(SAEFileError, match="W_dec") as info:
        load_sae(sae_dir)
    assert str(weights) in str(info.value)


def test_wrong_shape_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = sae_dir / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    tensors["W_enc"] = torch.zeros(D_MODEL, 63)
    save_file(tensors, str(weights))
    with pytest.raises(SAEFileError, match=r"W_enc has shape \[32, 63\], expected \[32, 64\]") as info:
        load_sae(sae_dir)
    assert str(weights) in str(info.value)


def test_corrupted_json_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    cfg = sae_dir / "cfg.json"
    cfg.write_text(cfg.read_text()[:40])
    with pytest.raises(SAEFileError, match="not valid JSON") as info:
        load_sae(sae_dir)
    assert str(cfg) in str(info.value)


def test_corrupted_weights_and_missing_files_are_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(b"\x00garbage")
    with pytest.raises(SAEFileError, match="not a readable safetensors file") as info:
        load_sae(sae_dir)
    assert str(weights) in str(info.value)
    weights.unlink()
    with pytest.raises(SAEFileError, match="does not exist") as info:
        load_sae(sae_dir)
    assert str(weights) in str(info.value)


def test_nan_weights_are_refused(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae", arch="relu")
    weights = sae_dir / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    tensors["b_enc"][3] = float("nan")
    save_file(tensors, str(weights))
    with pytest.raises(SAEFileError, match="b_enc contains NaN") as info:
        load_sae(sae_dir)
    assert str(weights) in str(info.value)


# ---- config --------------------------------------------------------------------------------


def test_schema_defaults_equal_dataclass_defaults():
    block = load_schema()["properties"]["eval"]["properties"]
    sections = {None: (EvalConfig, block), "core": (CoreConfig, block["core"]["properties"]),
                "sparse_probing": (ProbingConfig, block["sparse_probing"]["properties"]),
                "absorption": (AbsorptionConfig, block["absorption"]["properties"]),
                "autointerp": (AutointerpConfig, block["autointerp"]["properties"])}
    for name, (cls, props) in sections.items():
        instance = cls()
        for f in fields(cls):
            if f.name in sections or f.name == "tasks":
                continue
            assert f.name in props, f"eval{'.' + name if name else ''}.{f.name} missing from the schema"
            value = getattr(instance, f.name)
            assert props[f.name]["default"] == (list(value) if isinstance(value, tuple) else value), f.name

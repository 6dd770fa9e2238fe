"""interp.json end to end on a tiny model; malformed SAE files are refused by name; config defaults."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from saesteer.config import load_schema
from saesteer.evals.config import AbsorptionConfig, AutointerpConfig, CoreConfig, EvalConfig, ProbingConfig
from saesteer.evals.eval_data import EvalDataError, build_eval_data
from saesteer.evals.interp import SAEFileError, evaluate_sae, load_sae, validate_report
from tests.helpers import prose_and_code_corpus, random_sae, save_sae, write_model_json

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
    model_json = write_model_json(tmp_path, model=tiny_model)
    cfg = EvalConfig.from_config(EVAL_BLOCK)
    build_eval_data(
        tiny_model,
        char_tokenizer,
        model_name="tiny",
        layer=1,
        corpus_cfg=prose_and_code_corpus(tmp_path),
        cfg=cfg,
        out_dir=tmp_path / "eval_data",
    )
    return model_json, tmp_path / "eval_data"


def _save_sae(directory: Path, arch: str = "topk") -> Path:
    return save_sae(random_sae(arch, D_MODEL, 64, target_l0=4, act_scale=2.0), directory, 1, model_name="tiny")


def _edit_weights(sae_dir: Path, edit) -> Path:
    """The SAE's safetensors file rewritten with ``edit`` applied to its tensors; its path."""
    weights = sae_dir / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    edit(tensors)
    save_file(tensors, str(weights))
    return weights


def _assert_refused(sae_dir: Path, match: str, named: Path) -> None:
    """Loading the SAE fails with an error matching ``match`` that names the file ``named``."""
    with pytest.raises(SAEFileError, match=match) as info:
        load_sae(sae_dir)
    assert str(named) in str(info.value)


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
    report = evaluate_sae(
        _save_sae(tmp_path / "sae"), eval_dir, model_json, EVAL_BLOCK, out, model="tiny", arch="topk", target_l0=4
    )
    broken = json.loads(json.dumps(report))
    del broken["core"]["ce_loss_score"]
    with pytest.raises(Exception, match="ce_loss_score"):
        validate_report(broken)


def test_changed_eval_config_is_refused(prepared, tmp_path):
    model_json, eval_dir = prepared
    changed = json.loads(json.dumps(EVAL_BLOCK))
    changed["absorption"]["max_k"] = 3
    with pytest.raises(EvalDataError, match="different eval config"):
        evaluate_sae(
            _save_sae(tmp_path / "sae"),
            eval_dir,
            model_json,
            changed,
            tmp_path / "i.json",
            model="tiny",
            arch="topk",
            target_l0=4,
        )


# ---- malformed SAE files ---------------------------------------------------------------------


def test_valid_sae_loads(tmp_path):
    sae, cfg = load_sae(_save_sae(tmp_path / "sae", arch="jumprelu"))
    assert sae.d_in == D_MODEL and cfg["architecture"] == "jumprelu"


def test_missing_weights_key_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = _edit_weights(sae_dir, lambda tensors: tensors.pop("W_dec"))
    _assert_refused(sae_dir, "W_dec", weights)


def test_wrong_shape_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = _edit_weights(sae_dir, lambda tensors: tensors.update(W_enc=torch.zeros(D_MODEL, 63)))
    _assert_refused(sae_dir, r"W_enc has shape \[32, 63\], expected \[32, 64\]", weights)


def test_corrupted_json_is_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    cfg = sae_dir / "cfg.json"
    cfg.write_text(cfg.read_text()[:40])
    _assert_refused(sae_dir, "not valid JSON", cfg)


def test_corrupted_weights_and_missing_files_are_named(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae")
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(b"\x00garbage")
    _assert_refused(sae_dir, "not a readable safetensors file", weights)
    weights.unlink()
    _assert_refused(sae_dir, "does not exist", weights)


def test_nan_weights_are_refused(tmp_path):
    sae_dir = _save_sae(tmp_path / "sae", arch="relu")

    def one_nan(tensors):
        tensors["b_enc"][3] = float("nan")

    weights = _edit_weights(sae_dir, one_nan)
    _assert_refused(sae_dir, "b_enc contains NaN", weights)


# ---- config --------------------------------------------------------------------------------


def test_schema_defaults_equal_dataclass_defaults():
    block = load_schema()["properties"]["eval"]["properties"]
    sections = {
        None: (EvalConfig, block),
        "core": (CoreConfig, block["core"]["properties"]),
        "sparse_probing": (ProbingConfig, block["sparse_probing"]["properties"]),
        "absorption": (AbsorptionConfig, block["absorption"]["properties"]),
        "autointerp": (AutointerpConfig, block["autointerp"]["properties"]),
    }
    for name, (cls, props) in sections.items():
        instance = cls()
        for f in fields(cls):
            if f.name in sections or f.name == "tasks":
                continue
            assert f.name in props, f"eval{'.' + name if name else ''}.{f.name} missing from the schema"
            value = getattr(instance, f.name)
            assert props[f.name]["default"] == (list(value) if isinstance(value, tuple) else value), f.name

import json

import numpy as np
import pytest
import torch

from saesteer.cache.capture import ResidualCapture
from saesteer.models import ModelError, ModelSpec, load_prepared, prepare_model


def test_embedded_smollm2_converts_and_loads_offline(tmp_path):
    """The real demo model: GGUF from PyPI -> safetensors folder -> plain transformers load."""
    spec = ModelSpec(name="smollm2", source="embedded", embedded="smollm2-135m-instruct", layer=15, n_layers=30, d_model=576)
    record = prepare_model(spec, tmp_path / "model.json", tmp_path / "hf")
    assert json.loads((tmp_path / "model.json").read_text()) == record
    assert record["architecture"] == "LlamaForCausalLM" and record["chat_template"] is True
    assert len(record["gguf_sha256"]) == 64
    assert (tmp_path / "hf" / "model.safetensors").exists()
    assert not any(p.name.startswith(".smollm2") for p in tmp_path.iterdir())  # staging removed
    model, tokenizer = load_prepared(tmp_path / "model.json")
    ids = torch.tensor([tokenizer("To be, or not to be")["input_ids"]])
    acts = ResidualCapture(model, spec.layer)(ids)
    assert acts.shape == (1, ids.shape[1], 576) and torch.isfinite(acts).all()
    # A real language model: the obvious continuation is likely.
    with torch.inference_mode():
        logits = model(torch.tensor([tokenizer("One, two, three, four,")["input_ids"]])).logits[0, -1]
    assert tokenizer.decode(logits.argmax()).strip() == "five"


def test_model_shape_in_config_is_checked(tmp_path):
    spec = ModelSpec(name="smollm2", source="embedded", embedded="smollm2-135m-instruct", layer=15, n_layers=24, d_model=576)
    with pytest.raises(ModelError, match="n_layers=24, the model has 30"):
        prepare_model(spec, tmp_path / "model.json", tmp_path / "hf")
    assert not (tmp_path / "model.json").exists()


def test_unknown_embedded_model_is_named(tmp_path):
    spec = ModelSpec(name="m", source="embedded", embedded="llama-70b", layer=1, n_layers=2, d_model=8)
    with pytest.raises(ModelError, match="unknown embedded model 'llama-70b'"):
        prepare_model(spec, tmp_path / "model.json", tmp_path / "hf")


def test_unreachable_hub_model_fails_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    spec = ModelSpec(name="g", source="hub", hub_id="google/gemma-2-2b", layer=12, n_layers=26, d_model=2304)
    with pytest.raises(ModelError, match="cannot get google/gemma-2-2b@main from the Hugging Face hub"):
        prepare_model(spec, tmp_path / "model.json", tmp_path / "hf")


def test_corrupt_model_record_is_named(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelError, match="not a prepared-model record"):
        load_prepared(tmp_path / "model.json")


def test_one_gguf_parse_shares_the_reader_of_a_file_and_restores_the_class(tmp_path):
    """Within convert_gguf every GGUFReader of the same file is the first one (one parse of
    the metadata instead of three); another file gets its own; the class is back after."""
    import gguf

    from saesteer.models import one_gguf_parse

    paths = []
    for name in ("a.gguf", "b.gguf"):
        writer = gguf.GGUFWriter(str(tmp_path / name), "llama")
        writer.add_uint32("test.value", 7)
        writer.add_tensor("w", np.arange(8, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        paths.append(tmp_path / name)
    original = gguf.GGUFReader
    with one_gguf_parse():
        first = gguf.GGUFReader(paths[0])
        assert gguf.GGUFReader(str(paths[0])) is first
        other = gguf.GGUFReader(paths[1])
        assert other is not first
        assert [t.name for t in first.tensors] == ["w"] and list(first.tensors[0].data) == list(range(8))
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(paths[0]) is not first

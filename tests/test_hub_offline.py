"""The `hub` model source without a network, and the `local` source: tiny paper-family
models laid out as a Hugging Face cache (HF_HOME/hub/models--org--name/snapshots/<commit>/,
refs/main), prepared by prepare_model with HF_HUB_OFFLINE=1 in a fresh process (the hub
library reads HF_HOME and HF_HUB_OFFLINE when it is imported, as in a workflow job), then
loaded by load_prepared; a missing model and a gated one fail with what the user must do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saesteer.models import ModelError, ModelSpec, hub_error_message, load_prepared, prepare_model
from saesteer.tiny_models import FAMILIES, write_hub_cache, write_tiny_model
from tests.helpers import REPO


def char_tokenizer():
    """A real transformers tokenizer (tokenizers WordLevel over characters), built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:;!?'\"-\n":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def save_tiny(family: str, folder: Path):
    """saesteer.tiny_models.write_tiny_model with the character tokenizer; returns the saved model."""
    from transformers import AutoModelForCausalLM

    tok = char_tokenizer()
    info = write_tiny_model(family, folder, tok, seed=3)
    assert info["architecture"] == FAMILIES[family].architecture and info["vocab_size"] == len(tok)
    assert json.loads((folder / "tiny_model.json").read_text())["family"] == family
    assert not any(p.name.startswith(f".{folder.name}.") for p in folder.parent.iterdir())  # staging removed
    return AutoModelForCausalLM.from_pretrained(folder).eval(), tok


def prepare_in_subprocess(spec: dict, tmp_path: Path, hf_home: Path) -> subprocess.CompletedProcess:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from saesteer.models import ModelSpec, prepare_model, ModelError\n"
        "spec = ModelSpec.from_config(json.loads(sys.argv[1]))\n"
        "try:\n"
        "    prepare_model(spec, Path(sys.argv[2]) / 'model.json', Path(sys.argv[2]) / 'hf')\n"
        "except ModelError as exc:\n"
        "    print(exc, file=sys.stderr); sys.exit(3)\n"
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("family", ["qwen2"])
def test_hub_source_loads_a_cached_model_offline(tmp_path, family):
    model, tok = save_tiny(family, tmp_path / "src")
    hf_home = tmp_path / "hf_home"
    hub_id = FAMILIES[family].hub_id
    snapshot = write_hub_cache(tmp_path / "src", hf_home, hub_id)
    assert (hf_home / "hub" / f"models--{hub_id.replace('/', '--')}" / "refs" / "main").read_text() == snapshot.name
    spec = {"name": f"tiny-{family}", "source": "hub", "hub_id": hub_id, "layer": 2, "n_layers": 4, "d_model": 64}
    result = prepare_in_subprocess(spec, tmp_path, hf_home)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "model.json").read_text())
    assert Path(record["local_dir"]) == snapshot.resolve() and record["commit"] == snapshot.name
    assert record["hub_id"] == hub_id and record["hook_name"] == "blocks.2.hook_resid_post"
    loaded, loaded_tok = load_prepared(tmp_path / "model.json")
    assert type(loaded).__name__ == FAMILIES[family].architecture
    ids = torch.tensor([loaded_tok("From my experience, it works.")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_missing_hub_model_offline_says_what_to_do(tmp_path):
    hf_home = tmp_path / "hf_home"
    (hf_home / "hub").mkdir(parents=True)
    spec = {"name": "g", "source": "hub", "hub_id": "google/gemma-2-2b", "layer": 12, "n_layers": 26, "d_model": 2304}
    result = prepare_in_subprocess(spec, tmp_path, hf_home)
    assert result.returncode == 3, result.stderr
    message = result.stderr
    assert "google/gemma-2-2b@main is not in the local cache" in message and str(hf_home) in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "pre-populate HF_HOME" in message and "source: local" in message
    assert not (tmp_path / "model.json").exists()


def test_gated_hub_model_message_names_the_licence_and_the_token():
    import httpx
    from huggingface_hub.errors import GatedRepoError

    request = httpx.Request("GET", "https://huggingface.co/api/models/google/gemma-2-2b")
    exc = GatedRepoError("Access to model google/gemma-2-2b is restricted.", response=httpx.Response(401, request=request))
    spec = ModelSpec(name="gemma-2-2b", source="hub", hub_id="google/gemma-2-2b", layer=12, n_layers=26, d_model=2304)
    message = hub_error_message(spec, exc)
    assert "google/gemma-2-2b is gated" in message
    assert "https://huggingface.co/google/gemma-2-2b" in message and "HF_TOKEN" in message


def test_local_source_uses_the_folder_in_place(tmp_path):
    model, _ = save_tiny("llama", tmp_path / "tiny-llama")
    spec = ModelSpec(name="tiny-llama", source="local", path=str(tmp_path / "tiny-llama"), layer=2, n_layers=4, d_model=64)
    record = prepare_model(spec, tmp_path / "model.json", tmp_path / "unused")
    assert Path(record["local_dir"]) == (tmp_path / "tiny-llama").resolve() and len(record["weights_sha256"]) == 64
    assert not (tmp_path / "unused").exists()
    loaded, _ = load_prepared(tmp_path / "model.json")
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    wrong = ModelSpec(name="tiny-llama", source="local", path=str(tmp_path / "tiny-llama"), layer=2, n_layers=6, d_model=64)
    with pytest.raises(ModelError, match="n_layers=6, the model has 4"):
        prepare_model(wrong, tmp_path / "model2.json", tmp_path / "unused")
    with pytest.raises(ModelError, match="is not a folder"):
        prepare_model(
            ModelSpec(name="x", source="local", path=str(tmp_path / "nope"), layer=0, n_layers=1, d_model=8),
            tmp_path / "m.json",
            tmp_path / "u",
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        prepare_model(
            ModelSpec(name="x", source="local", path=str(tmp_path / "empty"), layer=0, n_layers=1, d_model=8),
            tmp_path / "m.json",
            tmp_path / "u",
        )

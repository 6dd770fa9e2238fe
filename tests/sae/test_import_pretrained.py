"""Pretrained SAEs imported into the grid (saesteer.sae.pretrained, saesteer.sae.import_pretrained).

Offline throughout: SAELens-format folders are written by SAELens itself; the registry path
resolves real SAELens releases against a Hugging Face cache this test builds, with
HF_HUB_OFFLINE=1 (in a subprocess, since huggingface_hub reads the variable at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sae_lens
import torch
from safetensors.torch import load_file

from saesteer.config import ConfigError, check_config, grid_from_config
from saesteer.sae.import_pretrained import convert, import_sae, load_with_saelens
from saesteer.sae.pretrained import PretrainedConfigError, resolve_pretrained
from saesteer.sae.saelens_io import load_saelens
from saesteer.training import train_sae
from saesteer.training.synthetic import planted_data, write_cache
from tests.helpers import REPO

D_IN, D_SAE = 16, 40
HOOK = "blocks.2.hook_resid_post"


def _activations(n: int = 384, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(D_IN, generator=gen) * 3.0  # a large mean: centring conventions matter
    return torch.randn(n, D_IN, generator=gen) * 2.0 + offset


def _randomise(sae, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            values = torch.randn(param.shape, generator=gen)
            if name == "threshold":
                values = values.abs() * 0.8 + 0.1
            elif name == "r_mag":
                values = values * 0.3
            elif name in ("b_enc", "b_gate", "b_mag", "b_dec"):
                values = values * 0.5
            else:
                values = values * 0.3
            param.copy_(values)


def _saelens_folder(tmp_path: Path, arch: str, seed: int = 0, d_in: int = D_IN, **cfg) -> Path:
    """A SAELens SAE of ``arch`` with random weights, saved by SAELens itself."""
    base = {
        "architecture": arch,
        "d_in": d_in,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": HOOK},
    }
    sae = sae_lens.SAE.from_dict({**base, **cfg})
    _randomise(sae, seed)
    folder = tmp_path / f"{arch}-{seed}"
    sae.save_model(folder)
    return folder


def _batchtopk_folder(tmp_path: Path) -> Path:
    """A SAELens BatchTopK training SAE with a learnt threshold, saved as SAELens saves it for
    inference (a JumpReLU SAE with that threshold for every latent)."""
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4))
    _randomise(sae, 7)
    sae.topk_threshold = torch.tensor(0.9, dtype=torch.double)
    folder = tmp_path / "batchtopk"
    sae.save_inference_model(folder)
    return folder


FORMATS = {
    # id: (SAELens arch, cfg extras, our arch, norm_scaling_factor)
    "standard": ("standard", {}, "relu", None),
    "standard-uncentred": ("standard", {"apply_b_dec_to_input": False}, "relu", None),
    "topk": ("topk", {"k": 5}, "topk", None),
    "topk-rescaled": ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}, "topk", None),
    "jumprelu": ("jumprelu", {"apply_b_dec_to_input": False}, "jumprelu", None),
    "jumprelu-centred": ("jumprelu", {}, "jumprelu", None),
    "gated": ("gated", {}, "gated", None),
    "standard-normalized": ("standard", {"normalize_activations": "expected_average_only_in"}, "relu", 0.37),
    "topk-normalized": ("topk", {"k": 5, "normalize_activations": "expected_average_only_in"}, "topk", 2.5),
}


def _reference(folder: Path, x: torch.Tensor, factor: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens's own encode/decode, with the declared input scaling applied by hand: a
    SAE trained on x * factor sees x * factor and its reconstruction is divided back."""
    ref = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
    f = 1.0 if factor is None else factor
    with torch.no_grad():
        codes = ref.encode(x * f)
        return codes, ref.decode(codes) / f


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_saelens_format_imports_with_saelens_encode_and_decode(tmp_path, fmt):
    arch, extra, ours_arch, factor = FORMATS[fmt]
    folder = _saelens_folder(tmp_path, arch, seed=len(fmt), **extra)
    x = _activations()
    entry = {"source": "path", "path": str(folder), "arch": ours_arch, "norm_scaling_factor": factor, "name": fmt}
    ours = convert(load_with_saelens(entry), ours_arch, fmt)
    assert ours.arch == ours_arch
    codes_ref, recon_ref = _reference(folder, x, factor)
    with torch.no_grad():
        codes = ours.encode(x)
        recon = ours.decode(codes)
    assert ((codes != 0) == (codes_ref != 0)).all()
    assert 0 < float((codes != 0).float().mean()) < 1  # the sparsity rule is exercised
    assert torch.allclose(codes, codes_ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(recon, recon_ref, atol=1e-4, rtol=1e-4)
    # What downstream stages load (our SAELens-format export of it) encodes the same.
    from saesteer.sae.saelens_io import save_saelens_dir

    again = load_saelens(save_saelens_dir(ours, tmp_path / "export"))
    with torch.no_grad():
        assert torch.allclose(again.encode(x), codes_ref, atol=1e-4, rtol=1e-4)


def test_batchtopk_saved_by_saelens_imports_as_batchtopk(tmp_path):
    folder = _batchtopk_folder(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"  # how SAELens stores it
    x = _activations()
    ours = convert(load_with_saelens({"source": "path", "path": str(folder)}), "batchtopk", "batchtopk")
    assert ours.arch == "batchtopk" and float(ours.threshold) == pytest.approx(0.9)
    codes_ref, recon_ref = _reference(folder, x, None)
    with torch.no_grad():
        codes = ours.encode(x)
        assert torch.allclose(codes, codes_ref, atol=1e-5) and torch.allclose(ours.decode(codes), recon_ref, atol=1e-5)
    assert 0 < float((codes != 0).float().mean()) < 1


def test_formats_that_cannot_be_honoured_are_refused_by_name(tmp_path):
    per_token = _saelens_folder(tmp_path, "standard", normalize_activations="layer_norm")
    with pytest.raises(PretrainedConfigError, match="layer_norm"):
        load_with_saelens({"source": "path", "path": str(per_token), "name": "ln"})
    no_factor = _saelens_folder(tmp_path, "topk", seed=3, k=3, normalize_activations="expected_average_only_in")
    with pytest.raises(PretrainedConfigError, match="norm_scaling_factor"):
        load_with_saelens({"source": "path", "path": str(no_factor), "name": "nf"})
    topk = _saelens_folder(tmp_path, "topk", seed=4, k=3)
    with pytest.raises(PretrainedConfigError, match="arch: 'gated' does not match"):
        convert(load_with_saelens({"source": "path", "path": str(topk)}), "gated", "x.arch")


# ---- config validation ------------------------------------------------------------------------


def _config(pretrained: list[dict], d_model: int = D_IN, layer: int = 2, **model) -> dict:
    base = yaml_config()
    base["models"] = [
        {
            "name": "gemma-2-2b",
            "source": "hub",
            "hub_id": "google/gemma-2-2b",
            "layer": layer,
            "n_layers": 26,
            "d_model": d_model,
            "prompt_format": "base",
            "pretrained": pretrained,
            **model,
        }
    ]
    base["architectures"], base["sparsities"] = [], []
    base["eval_jobs"] = {"group_by": "sae"}  # imported SAEs are evaluated one job each
    return base


def yaml_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_path_entries_become_cells_and_bad_ones_are_refused_by_field(tmp_path):
    topk = _saelens_folder(tmp_path, "topk", k=5)
    cfg = _config([{"name": "mine", "source": "path", "path": str(topk)}])
    check_config(cfg)
    grid = grid_from_config(cfg)
    (cell,) = grid.cells()
    assert (cell.path, cell.source, cell.target_l0) == ("gemma-2-2b/topk/mine", "imported", 5)

    wrong_layer = _config([{"name": "mine", "source": "path", "path": str(topk)}], layer=3)
    with pytest.raises(ConfigError, match=r"models\[0\]\.pretrained\[0\]: the SAE reads 'blocks.2.hook_resid_post'"):
        check_config(wrong_layer)
    wrong_width = _config([{"name": "mine", "source": "path", "path": str(topk)}], d_model=32)
    with pytest.raises(ConfigError, match=r"d_in is 16, model 'gemma-2-2b' has d_model 32"):
        check_config(wrong_width)
    cfg_json = json.loads((topk / "cfg.json").read_text())
    cfg_json["architecture"] = "matching_pursuit"
    (topk / "cfg.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ConfigError, match="'matching_pursuit' is not supported"):
        check_config(cfg)
    twice = _config([{"name": "a", "source": "path", "path": str(tmp_path / "nowhere")}])
    with pytest.raises(ConfigError, match=r"pretrained\[0\]\.path: .*nowhere/cfg.json does not exist"):
        check_config(twice)


def test_unknown_release_or_id_is_refused_with_the_names_nearby():
    release = "sae_bench_gemma-2-2b_topk_width-2pow14_date-1109"
    bad_release = _config(
        [
            {
                "name": "a",
                "source": "saelens",
                "release": release.replace("1109", "1110"),
                "sae_id": "blocks.12.hook_resid_post__trainer_0",
                "arch": "topk",
                "target_l0": 20,
            }
        ],
        layer=12,
    )
    _, errors = resolve_pretrained(bad_release)
    assert len(errors) == 1 and "pretrained[0].release" in errors[0] and repr(release) in errors[0]
    bad_id = _config(
        [
            {
                "name": "a",
                "source": "saelens",
                "release": release,
                "sae_id": "blocks.12.hook_resid_post__trainer_9",
                "arch": "topk",
                "target_l0": 20,
            }
        ],
        layer=12,
    )
    _, errors = resolve_pretrained(bad_id)
    assert len(errors) == 1 and "pretrained[0].sae_id" in errors[0] and "close: 'blocks.12.hook_resid_post__trainer_" in errors[0]
    wrong_layer = _config(
        [
            {
                "name": "a",
                "source": "saelens",
                "release": release,
                "sae_id": "blocks.12.hook_resid_post__trainer_0",
                "arch": "topk",
                "target_l0": 20,
            }
        ],
        layer=11,
    )
    _, errors = resolve_pretrained(wrong_layer)
    assert "reads 'blocks.12.hook_resid_post'" in errors[0]
    scope = _config(
        [{"name": "gs", "source": "saelens", "release": "gemma-scope-2b-pt-res", "sae_id": "layer_12/width_16k/average_l0_82"}],
        layer=12,
    )
    entries, errors = resolve_pretrained(scope)
    assert not errors and (entries[0].arch, entries[0].target_l0) == ("jumprelu", 82)  # published L0
    no_arch = _config(
        [
            {
                "name": "a",
                "source": "saelens",
                "release": release,
                "sae_id": "blocks.12.hook_resid_post__trainer_0",
                "target_l0": 20,
            }
        ],
        layer=12,
    )
    assert "pretrained[0].arch" in resolve_pretrained(no_arch)[1][0]


# ---- the registry path, offline ---------------------------------------------------------------


REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hf_file(hf_home: Path, repo_id: str, relpath: str) -> Path:
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    path = repo / "snapshots" / REVISION / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _dictionary_learning_sae(
    hf_home: Path, repo_id: str, folder: str, dict_class: str, k: int, seed: int, names: str
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(D_IN, D_SAE, generator=gen) * 0.3
    w_dec = torch.randn(D_SAE, D_IN, generator=gen) * 0.3
    b_enc = torch.randn(D_SAE, generator=gen) * 0.2
    b_dec = torch.randn(D_IN, generator=gen) * 0.5
    if names == "linear":  # dictionary_learning's AutoEncoderTopK: nn.Linear layers
        state = {
            "encoder.weight": w_enc.T.contiguous(),
            "encoder.bias": b_enc,
            "decoder.weight": w_dec.T.contiguous(),
            "b_dec": b_dec,
            "k": torch.tensor(k),
            "threshold": torch.tensor(-1.0),
        }
    else:  # dictionary_learning's (Matryoshka) BatchTopKSAE: raw parameters and one threshold
        state = {
            "W_enc": w_enc,
            "W_dec": w_dec,
            "b_enc": b_enc,
            "b_dec": b_dec,
            "k": torch.tensor(k),
            "threshold": torch.tensor(0.6),
        }
    torch.save(state, _hf_file(hf_home, repo_id, f"{folder}/ae.pt"))
    config = {
        "trainer": {
            "dict_class": dict_class,
            "k": k,
            "activation_dim": D_IN,
            "dict_size": D_SAE,
            "layer": 12,
            "lm_name": "google/gemma-2-2b",
        },
        "buffer": {"ctx_len": 128},
    }
    _hf_file(hf_home, repo_id, f"{folder}/config.json").write_text(json.dumps(config))
    return {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": state["threshold"]}


SCRIPT = """
import json, sys
from saesteer.sae.import_pretrained import import_sae
args = json.loads(sys.argv[1])
out = {}
for entry in args["entries"]:
    base = args["out"] + "/" + entry["name"]
    out[entry["name"]] = import_sae(entry, args["cache"], args["training"], layer=12, d_model=args["d_model"],
                                    weights_path=base + "/sae/sae_weights.safetensors", cfg_path=base + "/sae/cfg.json",
                                    summary_path=base + "/train_summary.json")
print(json.dumps(out))
"""


def test_registry_releases_resolve_offline_and_dictionary_learning_is_converted(tmp_path):
    hf_home = tmp_path / "hf"
    topk_release = "sae_bench_gemma-2-2b_topk_width-2pow14_date-1109"
    mat_release = "saebench_gemma-2-2b_width-2pow14_date-0107"
    from saesteer.sae.pretrained import load_registry

    registry = load_registry()
    sid = "blocks.12.hook_resid_post__trainer_0"
    topk_raw = _dictionary_learning_sae(
        hf_home, registry[topk_release].repo_id, registry[topk_release].saes[sid]["path"], "AutoEncoderTopK", 4, 1, "linear"
    )
    mat_raw = _dictionary_learning_sae(
        hf_home, registry[mat_release].repo_id, registry[mat_release].saes[sid]["path"], "MatryoshkaBatchTopKSAE", 6, 2, "raw"
    )
    cfg = _config(
        [
            {"name": "sb-topk-20", "source": "saelens", "release": topk_release, "sae_id": sid, "arch": "topk", "target_l0": 20},
            {
                "name": "sb-mat-20",
                "source": "saelens",
                "release": mat_release,
                "sae_id": sid,
                "arch": "batchtopk",
                "target_l0": 20,
            },
        ],
        layer=12,
    )
    check_config(cfg)
    grid = grid_from_config(cfg)
    assert [c.path for c in grid.cells()] == ["gemma-2-2b/topk/sb-topk-20", "gemma-2-2b/batchtopk/sb-mat-20"]
    x = _activations(3000, seed=9)
    manifest = write_cache(tmp_path / "cache", x, shard_tokens=1000, layer=12, dtype=torch.float32)
    training = {"batch_size": 64, "eval_tokens": 512}
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("HF_HUB_CACHE", None)
    args = {
        "entries": [e.to_dict() for e in grid.pretrained],
        "cache": str(manifest),
        "training": training,
        "out": str(tmp_path / "results"),
        "d_model": D_IN,
    }
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = json.loads(run.stdout.strip().splitlines()[-1])

    # Our imported SAEs compute what dictionary_learning's own inference code computes.
    from saesteer.training.data import CacheSource, ShuffledBatches

    held = torch.cat(list(ShuffledBatches(CacheSource(str(manifest)), 64, 0, eval_tokens=512).eval_batches(512)))
    pre = (held - topk_raw["b_dec"]) @ topk_raw["W_enc"] + topk_raw["b_enc"]
    top = pre.topk(4, dim=-1)
    expected_topk = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    pre = (held - mat_raw["b_dec"]) @ mat_raw["W_enc"] + mat_raw["b_enc"]
    expected_mat = pre.relu() * (pre.relu() > 0.6)
    for name, expected, raw in (("sb-topk-20", expected_topk, topk_raw), ("sb-mat-20", expected_mat, mat_raw)):
        ours = load_saelens(tmp_path / "results" / name / "sae")
        with torch.no_grad():
            codes = ours.encode(held)
            assert torch.allclose(codes, expected, atol=1e-4)
            assert torch.allclose(ours.decode(codes), expected @ raw["W_dec"] + raw["b_dec"], atol=1e-4)
        summary = summaries[name]
        assert summary["trained"] is False and summary["source"] == "saelens" and summary["sae_id"] == sid
        assert summary["conversion"] == "dictionary_learning_1" and summary["target_l0"] == 20
        assert summary["eval_tokens"] == held.shape[0] == 300  # at most 10% of the cache is held out
        assert summary["achieved_l0"] == pytest.approx(float((expected != 0).sum(-1).float().mean()), rel=1e-6)
        assert summary["saelens_check"]["active_agreement"] == 1.0
    assert summaries["sb-topk-20"]["arch"] == "topk" and summaries["sb-mat-20"]["arch"] == "batchtopk"
    assert summaries["sb-topk-20"]["achieved_l0"] == pytest.approx(4.0)

    # Offline and absent from the cache: SAELens cannot fetch it, the import fails naming nothing half-written.
    args["entries"] = [{**args["entries"][0], "sae_id": "blocks.12.hook_resid_post__trainer_1", "name": "absent"}]
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and not (tmp_path / "results" / "absent" / "train_summary.json").exists()


# ---- a trained SAE re-imported as source: path ---------------------------------------------


def test_a_trained_sae_reimported_from_its_folder_gives_the_same_sae_and_outputs(tmp_path, tiny_model, char_tokenizer):
    from saesteer.evals.interp import load_sae
    from saesteer.selection.config import SelectionConfig
    from saesteer.selection.latent_scores import score_latents

    d_model = tiny_model.config.hidden_size
    data = planted_data(4000, d_model, 48, seed=3, scale=4.0)
    manifest = write_cache(tmp_path / "cache", data.activations, shard_tokens=1000, layer=1)
    training = {
        "tokens": 64 * 60,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_warmup_steps": 5,
        "sparsity_warmup_steps": 20,
        "checkpoint_every_steps": 1000,
        "log_every_steps": 20,
        "eval_tokens": 512,
        "device": "cpu",
    }
    trained_dir = tmp_path / "results" / "m" / "topk" / "l0-8"
    trained = train_sae(
        manifest,
        "topk",
        8,
        training,
        {"dict_size": 96},
        threads=1,
        weights_path=trained_dir / "sae" / "sae_weights.safetensors",
        cfg_path=trained_dir / "sae" / "cfg.json",
        curves_path=trained_dir / "training_curves.parquet",
        summary_path=trained_dir / "train_summary.json",
        checkpoint_dir=tmp_path / "ckpt",
    )
    cfg = {
        "models": [
            {
                "name": "m",
                "source": "embedded",
                "embedded": "smollm2-135m-instruct",
                "layer": 1,
                "n_layers": 4,
                "d_model": d_model,
                "prompt_format": "chat",
                "pretrained": [{"name": "again", "source": "path", "path": str(trained_dir / "sae")}],
            }
        ],
        "architectures": ["topk"],
        "sparsities": [8],
    }
    (entry,) = resolve_pretrained(cfg)[0]
    assert (entry.arch, entry.target_l0) == ("topk", 8)
    imported_dir = tmp_path / "results" / "m" / "topk" / "again"
    summary = import_sae(
        {**entry.to_dict(), "field": "x"},
        manifest,
        training,
        layer=1,
        d_model=d_model,
        weights_path=imported_dir / "sae" / "sae_weights.safetensors",
        cfg_path=imported_dir / "sae" / "cfg.json",
        summary_path=imported_dir / "train_summary.json",
    )
    a = load_file(str(trained_dir / "sae" / "sae_weights.safetensors"))
    b = load_file(str(imported_dir / "sae" / "sae_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert summary["achieved_l0"] == pytest.approx(trained["achieved_l0"], rel=1e-6)
    assert summary["explained_variance"] == pytest.approx(trained["explained_variance"], rel=1e-5)
    assert summary["trained"] is False and summary["source"] == "path"

    sae_t, _ = load_sae(trained_dir / "sae")
    sae_i, _ = load_sae(imported_dir / "sae")
    x = data.activations[:256]
    with torch.no_grad():
        assert torch.equal(sae_t.encode(x), sae_i.encode(x))
    # A downstream stage (select_features' scoring) gives identical output for both cells.
    sel = SelectionConfig.from_config({"batch_size": 32})
    st = score_latents(tiny_model, char_tokenizer, sae_t, 1, sel)
    si = score_latents(tiny_model, char_tokenizer, sae_i, 1, sel)
    assert st.columns.keys() == si.columns.keys()
    for key in st.columns:
        assert torch.equal(st.columns[key], si.columns[key]), key


# ---- a mixed grid through the aggregation -----------------------------------------------------


def test_mixed_grid_aggregates_with_a_source_column_everywhere(tmp_path):
    import pyarrow.parquet as pq

    from saesteer.aggregate.job import run_aggregate
    from tests.synthetic_results import fill_results, grid_config, write

    config = grid_config(min_saes=3)
    config["eval_jobs"] = {"group_by": "sae"}  # grids with imported SAEs: one evaluation job per SAE
    smol = config["models"][0]
    pretrained = []
    for k in (20, 40, 80):
        sae = sae_lens.SAE.from_dict(
            {
                "architecture": "topk",
                "k": k,
                "d_in": smol["d_model"],
                "d_sae": 96,
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "metadata": {"hook_name": f"blocks.{smol['layer']}.hook_resid_post"},
            }
        )
        sae.save_model(tmp_path / "pretrained" / f"k{k}")
        pretrained.append({"name": f"public-k{k}", "source": "path", "path": str(tmp_path / "pretrained" / f"k{k}")})
    smol["pretrained"] = pretrained
    check_config(config)
    grid = grid_from_config(config)
    imported = [c for c in grid.cells() if c.source == "imported"]
    assert [c.path for c in imported] == [f"smollm2-135m/topk/public-k{k}" for k in (20, 40, 80)]
    results = tmp_path / "results"
    fill_results(config, results)
    for cell in imported:  # what import_sae writes
        write(
            results / cell.path / "train_summary.json",
            {
                "arch": "topk",
                "target_l0": cell.target_l0,
                "achieved_l0": 1.0 * cell.target_l0,
                "l0_relative_error": 0.0,
                "trained": False,
                "source": "path",
            },
        )
    out = tmp_path / "summary"
    run_aggregate(config, results_dir=results, out_dir=out)
    sae = pq.read_table(out / "sae_table.parquet").to_pandas()
    assert len(sae) == 21 and sae["complete"].all()
    assert sorted(sae.loc[sae.source == "imported", "sparsity"]) == ["public-k20", "public-k40", "public-k80"]
    assert (sae.loc[sae.source == "trained", "sparsity"].str.startswith("l0-")).all()
    for table in ("rank_agreement", "psi", "selection"):
        frame = pq.read_table(out / f"{table}.parquet").to_pandas()
        assert "source" in frame.columns and frame["source"].notna().all(), table
    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    head = rank[(rank.metric == "autointerp") & (rank.target == "steering")].set_index(["scope", "group"])
    assert head.loc[("all", "all"), "source"] == "mixed" and head.loc[("all", "all"), "n"] == 21
    assert head.loc[("source", "imported"), "n"] == 3 and head.loc[("source", "trained"), "n"] == 18
    assert head.loc[("model", "gemma3-270m"), "source"] == "trained"
    selection = pq.read_table(out / "selection.parquet").to_pandas()
    per_sae = selection[selection.scope == "sae"]
    assert (per_sae["source"] == "imported").sum() == 3
    md = (out / "summary.md").read_text()
    assert "18 trained here, 3 imported pretrained SAEs" in md and "Per source" in md

    # A trained cell's folder holding an imported SAE's summary (or the reverse) is not mixed up.
    write(results / imported[0].path / "train_summary.json", {"arch": "topk", "target_l0": 20, "achieved_l0": 20.0})
    run_aggregate(config, results_dir=results, out_dir=out)
    sae = pq.read_table(out / "sae_table.parquet").to_pandas()
    assert "does not fit this imported cell" in " ".join(sae.loc[sae.sparsity == "public-k20", "missing"].iloc[0])


# ---- the workflow -----------------------------------------------------------------------------


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )


def _job_counts(output: str) -> dict[str, int]:
    import re

    return {m.group(1): int(m.group(2)) for line in output.splitlines() if (m := re.fullmatch(r"(\w+)\s+(\d+)", line.strip()))}


def test_dry_run_of_the_pretrained_grid_imports_and_trains_nothing():
    result = _snakemake("-n", "--forceall", "--configfile", "config/pretrained.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout)
    assert "train_sae" not in counts
    assert counts["fetch_sae"] == counts["import_sae"] == 23
    for rule in ("autointerp", "eval_interp", "steer_eval", "select_features", "steer_selected"):
        assert counts[rule] == 23, rule
    assert counts["cache_activations"] == 1 and counts["aggregate"] == 1
    assert "results/gemma-2-2b/jumprelu/gemmascope-82/sae/cfg.json" in result.stdout


def test_mixed_grid_dry_run_and_a_bad_release_stop_before_any_job(tmp_path):
    import yaml

    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    folder = _saelens_folder(
        tmp_path, "jumprelu", d_in=576, apply_b_dec_to_input=False, metadata={"hook_name": "blocks.15.hook_resid_post"}
    )
    demo["models"][0]["pretrained"] = [{"name": "mine", "source": "path", "path": str(folder), "target_l0": 30}]
    demo["eval_jobs"] = {"group_by": "sae"}  # grids with imported SAEs: one evaluation job per SAE
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(yaml.safe_dump(demo))
    result = _snakemake("-n", "--forceall", "--configfile", "config/demo.yaml", str(mixed))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout)
    # training.group_by: model (the demo's): one train_sae job per model co-trains its 15 SAEs
    assert counts["train_sae"] == 2 and counts["import_sae"] == 1 and counts["steer_eval"] == 31
    assert "results/smollm2-135m/jumprelu/mine/train_summary.json" in result.stdout

    demo["models"][0]["pretrained"] = [
        {"name": "x", "source": "saelens", "release": "gemma-scope-2b-pt-rez", "sae_id": "layer_12/width_16k/average_l0_82"}
    ]
    mixed.write_text(yaml.safe_dump(demo))
    result = _snakemake("-n", "--configfile", "config/demo.yaml", str(mixed))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "models[0].pretrained[0].release: 'gemma-scope-2b-pt-rez' is not in SAELens's registry" in output
    assert "'gemma-scope-2b-pt-res'" in output and "Job stats" not in output


def test_adding_pretrained_saes_leaves_the_models_rule_params_unchanged(tmp_path):
    topk = _saelens_folder(tmp_path, "topk", k=5)
    plain = _config([])
    with_sae = _config([{"name": "mine", "source": "path", "path": str(topk)}])
    assert grid_from_config(plain).model_entry("gemma-2-2b") == grid_from_config(with_sae).model_entry("gemma-2-2b")

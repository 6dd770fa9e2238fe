"""Grouped per-SAE jobs (eval_jobs.group_by): one job loads the model and the judge once and
runs several SAEs; each SAE's outputs must equal what a job of its own writes.

The chain runs on a tiny random Llama with SmolLM2's tokenizer and the CI config's blocks
(.test/config/config.yaml), through the rule functions the workflow calls
(saesteer.rule_jobs.RULE_JOBS). Every stage runs once grouped (two SAEs) and once per SAE
on the same inputs; JSON outputs are compared with timings and output paths taken out,
tables and tensors exactly.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from saesteer.grouping import JobCell, all_jobs, job_cells, job_files
from saesteer.rule_jobs import RuleJob, RuleJobError, SaeFiles, make_rule_job, rule_function
from tests.helpers import REPO

CFG = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
# This fixture plants its own tokens (" the", ",", "ing", ...), which the .test run's planted
# corpus (single-token nature and code words, docs/ci.md) does not hold: the stages read the
# installed English corpora, where each planted token occurs.
CFG["corpus"]["sources"] = [
    {"kind": "shakespeare", "name": "shakespeare", "weight": 0.5},
    {"kind": "python_docs", "name": "python-docs", "weight": 0.5},
]
# At factor 0.5 the tiny Llama (output scale 0.003) writes a planted word on one split and not
# the other, so the selection split's tie (both factors 1.2) would pick a factor that fails on
# the held-out split: one factor keeps one right answer per concept.
CFG["steering"]["factors"] = [2.0]
MODEL = "tiny"
CELLS = (JobCell(MODEL, "topk", "l0-8", 8), JobCell(MODEL, "relu", "l0-8", 8))
HOOK = "blocks.2.hook_resid_post"
# The planted fixture (saesteer.planted): per SAE, its only live latents, each reading one
# token and writing along its unembedding. Whole words and punctuation steer (the offline
# judge counts them in the generation); word pieces do not ("inginging" is no word "ing").
PLANTS = {"topk": {3: " the", 17: " and", 40: ",", 77: "ing"}, "relu": {5: " of", 19: "ed", 33: "er"}}
STEERS = {" the", " and", ",", " of"}

# Each per-SAE stage: its per-SAE inputs and outputs (name -> file under results/<cell>/),
# its shared inputs, and the params its rule passes.
STAGES: dict[str, dict[str, Any]] = {
    "autointerp": {
        "in": {"sae_cfg": "sae/cfg.json", "sae_weights": "sae/sae_weights.safetensors"},
        "out": {"table": "autointerp.parquet", "summary": "autointerp.json"},
        "shared": ("model", "eval_data"),
        "params": ("eval", "judge"),
    },
    "eval_interp": {
        "in": {"sae_cfg": "sae/cfg.json", "autointerp": "autointerp.json"},
        "out": {"interp": "interp.json"},
        "shared": ("model", "eval_data"),
        "params": ("eval",),
    },
    "steer_eval": {
        "in": {"sae_cfg": "sae/cfg.json", "autointerp": "autointerp.parquet"},
        "out": {
            "generations": "steering/generations.parquet",
            "concepts": "steering/concepts.json",
            "score": "steering/score.json",
        },
        "shared": ("model", "instructions"),
        "params": ("steering", "judge", "prompt_format"),
    },
    "select_features": {
        "in": {"sae_cfg": "sae/cfg.json", "autointerp": "autointerp.parquet"},
        "out": {"table": "selection/latent_scores.parquet", "summary": "selection/latent_scores.json"},
        "shared": ("model",),
        "params": ("selection",),
    },
    "steer_selected": {
        "in": {
            "sae_cfg": "sae/cfg.json",
            "autointerp": "autointerp.parquet",
            "latent_scores": "selection/latent_scores.parquet",
            "steering_generations": "steering/generations.parquet",
            "steering_score": "steering/score.json",
        },
        "out": {
            "generations": "selection/generations.parquet",
            "concepts": "selection/concepts.json",
            "score": "selection/score.json",
            "latents": "selection/latents.parquet",
        },
        "shared": ("model", "instructions"),
        "params": ("steering", "selection", "judge", "prompt_format"),
    },
    "steering_vectors": {
        "in": {
            "sae_cfg": "sae/cfg.json",
            "autointerp": "autointerp.parquet",
            "steering_concepts": "steering/concepts.json",
            "steering_score": "steering/score.json",
        },
        "out": {
            "score": "steering_vectors/score.json",
            "concepts": "steering_vectors/concepts.parquet",
            "generations": "steering_vectors/generations.parquet",
            "vectors": "steering_vectors/vectors.safetensors",
        },
        "shared": ("model", "eval_data", "instructions"),
        "params": ("eval", "steering", "steering_vectors", "judge"),
    },
}
SHARED = {
    "model": f"results/models/{MODEL}/model.json",
    "eval_data": f"results/{MODEL}/eval_data/manifest.json",
    "instructions": "results/steering/instructions.json",
}


@contextmanager
def inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def params() -> dict[str, Any]:
    judge = {**CFG["judge"], "offline": {**CFG["judge"]["offline"], "reference_model": SHARED["model"]}}
    return {
        "eval": CFG["eval"],
        "judge": judge,
        "steering": CFG["steering"],
        "selection": CFG["selection"],
        "steering_vectors": CFG["steering_vectors"],
        "prompt_format": "chat",
        "corpus": CFG["corpus"],
        "instructions": CFG["steering"].get("instructions"),
    }


def stage_job(stage: str, saes: list[SaeFiles]) -> RuleJob:
    spec = STAGES[stage]
    p = params()
    return RuleJob(
        rule=stage,
        inputs={k: SHARED[k] for k in spec["shared"]},
        saes=tuple(saes),
        params={k: p[k] for k in spec["params"]},
        threads=1,
    )


def sae_files(stage: str, cell: JobCell, out_root: str = "results") -> SaeFiles:
    spec = STAGES[stage]
    return SaeFiles(
        cell,
        {k: Path(f"results/{cell.path}/{v}") for k, v in spec["in"].items()},
        {k: Path(f"{out_root}/{cell.path}/{v}") for k, v in spec["out"].items()},
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smollm2_tokenizer, minilm):
    """Model, eval data, instruction pool and two SAEs of different architectures."""
    from saesteer.planted import embeddings, plant_token_latents
    from saesteer.sae.registry import build_sae
    from saesteer.sae.saelens_io import save_saelens_dir
    from saesteer.tiny_models import write_tiny_model

    root = tmp_path_factory.mktemp("groups")
    info = write_tiny_model("llama", root / "hf-tiny", smollm2_tokenizer)
    spec = {
        "name": MODEL,
        "source": "local",
        "path": str(root / "hf-tiny"),
        "layer": info["layer"],
        "n_layers": info["n_layers"],
        "d_model": info["d_model"],
        "prompt_format": "chat",
    }
    torch.set_num_threads(1)
    with inside(root):
        run = rule_function
        run("prepare_model")(
            RuleJob(
                "prepare_model",
                outputs={"record": SHARED["model"]},
                params={"spec": spec, "weights_dir": "results/models/tiny/hf"},
            )
        )
        run("prepare_eval_data")(
            RuleJob(
                "prepare_eval_data",
                inputs={"model": SHARED["model"]},
                outputs={"manifest": SHARED["eval_data"]},
                params={"spec": spec, "corpus": CFG["corpus"], "eval": CFG["eval"]},
            )
        )
        run("steering_instructions")(
            RuleJob(
                "steering_instructions",
                outputs={"pool": SHARED["instructions"]},
                params={"instructions": params()["instructions"]},
            )
        )
        embed, unembed = embeddings(root / "hf-tiny")
        for i, cell in enumerate(CELLS):
            # Not seed 1: build_tiny_model draws the Llama's unembedding noise from a generator
            # seeded 1, and a random decoder row would then equal a (padding) token's row.
            torch.manual_seed(100 + i)
            sae = build_sae(cell.arch, info["d_model"], 256, target_l0=cell.target_l0)
            sae.reset_parameters()
            plant_token_latents(
                sae, embed, unembed, {lat: token_id(smollm2_tokenizer, text) for lat, text in PLANTS[cell.arch].items()}
            )
            save_saelens_dir(sae, Path(f"results/{cell.path}/sae"), metadata={"hook_name": HOOK})
    return root


def token_id(tokenizer: Any, text: str) -> int:
    (tid,) = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tid


# ---- the planted answer of each stage (outputs of the grouped job, by architecture) ----------------

H211 = 3 / (1 / 2 + 1 + 1)
"""A planted concept's generation at factor 2: concept 2 (every word is the quoted token),
instruction 1 and fluency 1 (a loop: repeats above 0.5, below 1.0; the .test bounds)."""


def planted_latents(folder: Path) -> set[int]:
    """The SAE's planted latents as saesteer.planted defines them from the files."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from saesteer.planted import embeddings, token_latents

    model_dir = Path("hf-tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    found = token_latents(
        load_file(str(folder / "sae/sae_weights.safetensors"))["W_dec"], embeddings(model_dir)[1], lambda t: tokenizer.decode([t])
    )
    assert set(found) == set(PLANTS[folder.parent.name])  # every planted row is found, nothing else
    return {latent for latent, t in found.items() if t.countable}


def _autointerp(out: dict[str, Path]) -> None:
    """The offline judge names each live planted latent by its token; "ing" never fires alone
    in the eval data (dead, not sampled); the ReLU latent of "ed" also fires on other tokens."""
    got = {
        a: {r["latent"]: r["explanation"] for r in pq.read_table(f / "autointerp.parquet").to_pylist()} for a, f in out.items()
    }
    assert got["topk"] == {3: 'the tokens "the"', 40: 'the tokens ","', 17: 'the tokens "and"'}
    assert got["relu"][5] == 'the tokens "of"' and got["relu"][19].startswith('the tokens "ed", ') and len(got["relu"]) == 2


def _eval_interp(out: dict[str, Path]) -> None:
    scores = {a: json.loads((f / "interp.json").read_text())["autointerp"]["score"] for a, f in out.items()}
    assert scores == {a: json.loads((f / "autointerp.json").read_text())["score"] for a, f in out.items()}
    assert scores["relu"] > scores["topk"] > 0.5  # detection of a token latent is mostly right; values differ


def _steer_eval(out: dict[str, Path]) -> None:
    """Planted latents (whole words) steer, the others (a word piece, a comma) do not; the
    SAE's score is the mean over its concepts."""
    for arch, folder in out.items():
        concepts = json.loads((folder / "steering/concepts.json").read_text())["concepts"]
        held = {c["latent"]: c["axbench"]["heldout_score"] for c in concepts}
        good = planted_latents(folder)
        assert held == {lat: pytest.approx(H211) if lat in good else 0.0 for lat in held}, arch
        score = json.loads((folder / "steering/score.json").read_text())["score"]
        assert score == pytest.approx(sum(held.values()) / len(held))
    assert planted_latents(out["topk"]) == {3, 17} and planted_latents(out["relu"]) == {5}
    scores = {a: json.loads((f / "steering/score.json").read_text())["score"] for a, f in out.items()}
    assert scores == {"topk": pytest.approx(2 * H211 / 3), "relu": pytest.approx(H211 / 2)}


def _select_features(out: dict[str, Path]) -> None:
    """TopK: the comma latent fires on the prompt's last token ("From my experience,"), so
    only_max amplification has an a_max and every planted latent makes its token near certain
    (output score near 1, confidence up: Delta C < 0). ReLU: no latent fires there, a_max is 0,
    nothing moves."""
    rows = {a: {r["latent"]: r for r in pq.read_table(f / "selection/latent_scores.parquet").to_pylist()} for a, f in out.items()}
    for lat in (3, 17, 40):
        assert rows["topk"][lat]["output_score"] > 0.9 and rows["topk"][lat]["delta_conf"] < 0
    for lat in (5, 19):
        assert rows["relu"][lat]["output_score"] < 0.01 and abs(rows["relu"][lat]["delta_conf"]) < 1e-4


def _steer_selected(out: dict[str, Path]) -> None:
    """Delta C's DOWN set of one (the most confident, " the") is chosen on the selection half:
    the planted latent; its lift over no selection is 1.2 / 0.8 - 1. Every TopK concept passes
    the output-score threshold (the set is the no-selection set: lift 0); no ReLU latent does."""
    topk = json.loads((out["topk"] / "selection/score.json").read_text())
    assert topk["delta_conf"]["chosen"]["label"] == "delta_conf:down:k=1" and topk["delta_conf"]["latents"] == [3]
    assert 3 in planted_latents(out["topk"])
    assert topk["delta_conf"]["lift"] == pytest.approx(H211 / (2 * H211 / 3) - 1)
    assert topk["output_score"]["latents"] == [3, 40, 17] and topk["output_score"]["lift"] == pytest.approx(0.0, abs=1e-12)
    relu = json.loads((out["relu"] / "selection/score.json").read_text())
    assert relu["output_score"]["latents"] == [] and relu["output_score"]["lift"] is None


def _steering_vectors(out: dict[str, Path]) -> None:
    """The latent's score in the comparison is steer_eval's over the same (first two) concepts."""
    for arch, folder in out.items():
        report = json.loads((folder / "steering_vectors/score.json").read_text())
        concepts = json.loads((folder / "steering/concepts.json").read_text())["concepts"]
        held = {c["latent"]: c["axbench"]["heldout_score"] for c in concepts}
        latents = [c["latent"] for c in report["concepts"]]
        assert (
            report["score_latent"] == pytest.approx(sum(held[lat] for lat in latents) / len(latents)) == pytest.approx(H211 / 2)
        ), arch
    assert [c["latent"] for c in json.loads((out["topk"] / "steering_vectors/score.json").read_text())["concepts"]] == [3, 40]
    from safetensors.torch import load_file

    from saesteer.planted import embeddings

    embed = embeddings(Path("hf-tiny"))[0]
    tokenizer_ids = {lat: token_id_of(arch, lat) for arch in out for lat in PLANTS[arch]}
    for arch, folder in out.items():
        report = json.loads((folder / "steering_vectors/score.json").read_text())
        scores = report["axbench"]["scores"]
        assert scores["diffmean"] > 0 and report["axbench"]["share_of_diffmean"]["latent"] == pytest.approx(
            scores["latent"] / scores["diffmean"]
        )
        # DiffMean (strongly active positions minus random ones) of a token latent points along its token's embedding.
        vectors = load_file(str(folder / "steering_vectors/vectors.safetensors"))
        for c in report["concepts"]:
            v, e = vectors[f"diffmean.{c['latent']}"], embed[tokenizer_ids[c["latent"]]]
            assert torch.nn.functional.cosine_similarity(v, e, dim=0) > 0.7, (arch, c["latent"])


def token_id_of(arch: str, latent: int) -> int:
    from transformers import AutoTokenizer

    return token_id(AutoTokenizer.from_pretrained("hf-tiny"), PLANTS[arch][latent])


PLANTED_ANSWER = {
    "autointerp": _autointerp,
    "eval_interp": _eval_interp,
    "steer_eval": _steer_eval,
    "select_features": _select_features,
    "steer_selected": _steer_selected,
    "steering_vectors": _steering_vectors,
}


def _normalised(value: Any) -> Any:
    """JSON without what may differ between a grouped and a single job: timings and the
    folder the outputs were written to."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if "seconds" not in k and "per_s" not in k and k != "timings"}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, str):
        return value.replace("single/", "results/")
    return value


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two JSON values differ, or None. Floats are equal to 1e-12 relative: a least-
    squares fit (the OMP decomposition of steering_vectors) can differ in its last bit from
    one call to the next in the same process (LAPACK's blocking follows memory alignment)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            found = first_difference(a.get(k), b.get(k), f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) else f"{where}: {a!r} != {b!r}"
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_same_file(a: Path, b: Path) -> None:
    if a.suffix == ".json":
        found = first_difference(_normalised(json.loads(a.read_text())), _normalised(json.loads(b.read_text())))
        assert found is None, (a, found)
    elif a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.schema.equals(tb.schema), a
        found = first_difference(_normalised(ta.to_pylist()), _normalised(tb.to_pylist()))
        assert found is None, (a, found)
    else:
        from safetensors.torch import load_file

        xa, xb = load_file(str(a)), load_file(str(b))
        assert xa.keys() == xb.keys() and all(torch.equal(xa[k], xb[k]) for k in xa), a


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_grouped_jobs_outputs_equal_each_saes_own_job(prepared, stage):
    """Stages run in file order (each reads the previous stages' grouped outputs). Each stage's
    grouped outputs then carry the planted answer (PLANTED_ANSWER)."""
    with inside(prepared):
        rule_function(stage)(stage_job(stage, [sae_files(stage, c) for c in CELLS]))
        for cell in CELLS:
            rule_function(stage)(stage_job(stage, [sae_files(stage, cell, out_root="single")]))
        for cell in CELLS:
            for _name, tail in STAGES[stage]["out"].items():
                assert_same_file(Path(f"results/{cell.path}/{tail}"), Path(f"single/{cell.path}/{tail}"))
        PLANTED_ANSWER[stage]({cell.arch: Path(f"results/{cell.path}") for cell in CELLS})


@pytest.mark.parametrize(
    "stage, loads", [("steer_eval", 1), ("select_features", 1), ("steering_vectors", 1), ("steer_selected", 0)]
)
def test_a_grouped_job_loads_the_model_once(prepared, stage, loads, monkeypatch):
    """What grouping is for: one load of the LLM per job, not per SAE (the loader is the
    real one, counted). steer_selected with the CI config's selection.candidates (concepts,
    the paper's design) chooses among latents steer_eval steered and reuses their
    generations: it loads no model."""
    import saesteer.models as models

    calls = []
    real = models.load_prepared

    def counted(*args: Any, **kwargs: Any):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_prepared", counted)
    with inside(prepared):
        rule_function(stage)(stage_job(stage, [sae_files(stage, c, out_root="loads") for c in CELLS]))
    assert len(calls) == loads


# ---- how a job is cut and translated ------------------------------------------------------------


class _W:
    def __init__(self, **kw: str):
        self.__dict__.update(kw)


def test_job_files_and_cells_pair_up_in_every_grouping():
    from saesteer.config import grid_from_config

    paper = yaml.safe_load((REPO / "config/config.yaml").read_text())
    grid = grid_from_config(paper)
    counts = {"sae": 90, "arch": 15, "model": 3}
    for group_by, n_jobs in counts.items():
        jobs = all_jobs(grid, group_by)
        assert len(jobs) == n_jobs
        cells = [c.path for job in jobs for c in job]
        assert sorted(cells) == sorted(c.path for c in grid.cells())  # every SAE once
        first = jobs[0][0]
        wildcards = _W(model=first.model, arch=first.arch, sparsity=first.sparsity)
        members = job_cells(grid, group_by, wildcards)
        files = job_files(grid, group_by, "interp.json")
        files = [files] if isinstance(files, str) else files
        filled = [f.format(model=first.model, arch=first.arch, sparsity=first.sparsity) for f in files]
        assert filled == [f"results/{c.path}/interp.json" for c in members]


def test_translation_splits_per_sae_and_shared_files_and_refuses_a_wrong_order():
    cells = [c.to_dict() for c in CELLS]
    job = make_rule_job(
        "steer_eval",
        {"model": SHARED["model"], "autointerp": [f"results/{c.path}/autointerp.parquet" for c in CELLS]},
        {"score": [f"results/{c.path}/steering/score.json" for c in CELLS]},
        {"cells": cells, "steering": {}},
    )
    assert job.inputs == {"model": SHARED["model"]} and "cells" not in job.params
    assert [s.inputs["autointerp"] for s in job.saes] == [Path(f"results/{c.path}/autointerp.parquet") for c in CELLS]
    assert [s.cell for s in job.saes] == list(CELLS)
    with pytest.raises(RuleJobError, match="out of the job's SAE order"):
        make_rule_job(
            "steer_eval", {"autointerp": [f"results/{c.path}/autointerp.parquet" for c in reversed(CELLS)]}, {}, {"cells": cells}
        )
    with pytest.raises(RuleJobError, match="1 per-SAE paths for a job of 2 SAEs"):
        make_rule_job("steer_eval", {"autointerp": f"results/{CELLS[0].path}/autointerp.parquet"}, {}, {"cells": cells})


def test_grouped_eval_jobs_refuse_pretrained_entries_naming_the_field():
    from saesteer.config import ConfigError, check_config

    cfg = yaml.safe_load((REPO / "config/pretrained.yaml").read_text())
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    merged = {**base, **cfg, "eval_jobs": {"group_by": "arch"}}
    with pytest.raises(ConfigError, match="eval_jobs.group_by"):
        check_config(merged)


def test_a_grouped_job_killed_after_its_first_sae_resumes_without_redoing_it(prepared, monkeypatch):
    """Snakemake deletes a failed job's outputs; the group keeps each finished SAE's outputs
    in its store entry (results/<cell>/.store/<rule>/, kept after success) and the rerun
    restores them, unless an input's bytes changed since."""
    import shutil

    import saesteer.evals.autointerp as autointerp

    real, ran = autointerp.run_autointerp, []

    def counted(**kwargs: Any):
        ran.append(kwargs["sae_dir"])
        return real(**kwargs)

    monkeypatch.setattr(autointerp, "run_autointerp", counted)
    with inside(prepared):
        outputs = [sae_files("autointerp", c, out_root="results") for c in CELLS]
        job = stage_job("autointerp", outputs)
        weights = Path(f"results/{CELLS[1].path}/sae/sae_weights.safetensors")
        good = weights.read_bytes()
        weights.write_bytes(b"not safetensors")  # the second SAE fails
        try:
            with pytest.raises(Exception, match="sae_weights.safetensors"):
                rule_function("autointerp")(job)
        finally:
            weights.write_bytes(good)
        first = outputs[0].outputs["summary"]
        kept = json.loads(first.read_text())
        for sae in outputs:  # what Snakemake does to a failed job's outputs
            for out in sae.outputs.values():
                Path(out).unlink(missing_ok=True)
        assert Path(f"results/{CELLS[0].path}/.store/autointerp/entry.json").is_file()

        ran.clear()
        rule_function("autointerp")(job)
        assert ran == [outputs[1].sae_dir]  # the first SAE was restored, not recomputed
        assert json.loads(first.read_text()) == kept
        assert all(Path(f"results/{c.path}/.store/autointerp/entry.json").is_file() for c in CELLS)

        # A kept SAE whose inputs changed since is recomputed.
        weights.write_bytes(b"not safetensors")
        try:
            with pytest.raises(Exception):  # noqa: B017 (safetensors raises its own error class for a corrupt file)
                rule_function("autointerp")(job)
        finally:
            weights.write_bytes(good)
        cfg = Path(f"results/{CELLS[0].path}/sae/cfg.json")
        cfg.touch()  # new mtime, same bytes: still restored (the failed second SAE is not)
        ran.clear()
        rule_function("autointerp")(job)
        assert ran == [outputs[1].sae_dir]
        cfg.write_text(json.dumps(json.loads(cfg.read_text()), indent=1))  # new bytes: recomputed
        ran.clear()
        rule_function("autointerp")(job)
        assert ran == [outputs[0].sae_dir]
        shutil.rmtree("loads", ignore_errors=True)

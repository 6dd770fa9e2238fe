"""Steering vectors next to SAE latents (issue 17): DiffMean, Mayne et al.'s diagnostics, the
signed decomposition, user vector files, and the steering job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saesteer.sae.registry import build_sae
from saesteer.steering.vectors import (
    VectorError,
    decompose,
    diffmean,
    load_vector_file,
    mayne_diagnostics,
    omp,
    overlap,
    percentile_of,
    random_positions,
    strong_positions,
    top_latents,
    unit_decoder_rows,
)
from tests.helpers import REPO, assert_schema_block_matches, prose_and_code_corpus, tiny_eval_block

pytestmark = pytest.mark.usefixtures("one_thread")


def orthonormal_sae(d: int = 32, seed: int = 0):
    """A ReLU SAE whose decoder rows are an orthonormal basis, encoder = decoder^T, no biases:
    encode(x) = ReLU(<x, u_i>) exactly, so what a ReLU code can and cannot carry is known."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    sae = build_sae("relu", d, d, target_l0=4)
    with torch.no_grad():
        sae.W_dec.copy_(q.T.float())
        sae.W_enc.copy_(q.float())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def biased_sae(d: int = 32, d_sae: int = 64, seed: int = 0):
    """A ReLU SAE with a positive encoder bias (as trained SAEs have for some latents): encode(0)
    has active latents."""
    g = torch.Generator().manual_seed(seed)
    sae = build_sae("relu", d, d_sae, target_l0=4)
    with torch.no_grad():
        w = torch.nn.functional.normalize(torch.randn(d_sae, d, generator=g), dim=1)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.copy_(torch.rand(d_sae, generator=g) * 2.0 - 0.5)
        sae.b_dec.zero_()
    return sae.eval()


# ---- the signed decomposition on a planted direction ---------------------------------------------


def test_signed_fit_recovers_a_planted_negative_coefficient_and_the_naive_encoding_does_not():
    sae = orthonormal_sae()
    atoms = unit_decoder_rows(sae)
    v = 3.0 * atoms[4] - 2.0 * atoms[9] + 0.5 * atoms[17]
    fit = omp(v, atoms, k=3)
    coefs = dict(zip(fit.latents, fit.coefs))
    assert set(coefs) == {4, 9, 17}
    assert (
        coefs[4] == pytest.approx(3.0, abs=1e-5)
        and coefs[9] == pytest.approx(-2.0, abs=1e-5)
        and coefs[17] == pytest.approx(0.5, abs=1e-5)
    )
    assert fit.explained == pytest.approx(1.0, abs=1e-6)
    assert fit.negative_share == pytest.approx(4.0 / (9.0 + 4.0 + 0.25), rel=1e-5)

    out = decompose(sae, v, latent=4, k=3, n_report=3)
    # The projection on latent 9 is negative and reported as such.
    assert out["top_negative_projections"][0] == {"latent": 9, "value": pytest.approx(-2.0, abs=1e-5)}
    assert out["signed_fit"]["n_negative"] == 1
    # The naive reading: the ReLU code of latent 9 is zero, and the naive reconstruction has
    # no component along d_9 at all, so it recovers 3 d_4 + 0.5 d_17 and loses -2 d_9.
    naive = out["vectors"]["naive"]
    assert float(naive @ atoms[9]) == pytest.approx(0.0, abs=1e-5)
    assert float(naive @ atoms[4]) == pytest.approx(3.0, abs=1e-5)
    assert out["naive"]["negative_share"] == 0.0
    assert out["naive"]["explained_unscaled"] == pytest.approx(1 - 4.0 / 13.25, abs=1e-5)
    assert out["signed_fit"]["explained"] > out["naive"]["explained_unscaled"] + 0.25


def test_omp_picks_the_planted_atoms_among_correlated_ones():
    g = torch.Generator().manual_seed(3)
    atoms = torch.nn.functional.normalize(torch.randn(200, 24, generator=g), dim=1)
    v = 2.0 * atoms[10] - 1.5 * atoms[150] + 0.8 * atoms[42]
    fit = omp(v, atoms, k=3)
    assert dict(zip(fit.latents, [round(c, 4) for c in fit.coefs])) == {10: 2.0, 150: -1.5, 42: 0.8}
    # Fewer terms than planted: explained share below 1, never above.
    assert omp(v, atoms, k=1).explained < 0.99


# ---- the Mayne effect -------------------------------------------------------------------------------


def test_tiny_norm_vector_encodes_like_zero_and_the_diagnostic_flags_it():
    sae = biased_sae()
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(500, 32, generator=g) * 3.0
    norms = acts.norm(dim=1).sort().values
    mean = acts.mean(0)
    direction = sae.W_dec[7].detach()
    tiny = 1e-5 * direction
    d = mayne_diagnostics(sae, tiny, mean, 7, norms, top_k=5, bias_dominated_overlap=0.8)
    assert d["n_active_encode_0"] >= 5
    assert d["overlap_encode_v_with_encode_0"] == 1.0 and d["bias_dominated"] is True
    assert d["norm_percentile"] == 0.0
    assert d["cos_encode_v_with_encode_0"] == pytest.approx(1.0, abs=1e-6)
    assert d["cos_with_decoder_row"] == pytest.approx(1.0, abs=1e-5)
    # The same direction at a typical activation norm is read differently: latent 7 leads.
    big = 20.0 * float(norms[len(norms) // 2]) * direction
    d2 = mayne_diagnostics(sae, big, mean, 7, norms, top_k=5, bias_dominated_overlap=0.8)
    assert d2["bias_dominated"] is False and d2["overlap_encode_v_with_encode_0"] < 0.8
    assert d2["top_latents_encode_v"][0] == 7 and d2["latent_in_top_encode_v"]
    assert d2["norm_percentile"] == 100.0


def test_helpers_top_latents_overlap_percentile():
    code = torch.tensor([0.0, 3.0, 1.0, 3.0, -5.0])
    assert top_latents(code, 2) == [1, 3]
    assert top_latents(code, 2, by_abs=True) == [4, 1]
    assert top_latents(torch.zeros(4), 3) == []
    assert overlap([], [1]) is None and overlap([1, 2], [2, 5]) == 0.5
    assert percentile_of(2.5, torch.tensor([1.0, 2.0, 3.0, 4.0])) == 50.0


# ---- DiffMean -----------------------------------------------------------------------------------------


def test_diffmean_of_planted_concept_positions_recovers_the_concept_direction():
    g = torch.Generator().manual_seed(0)
    n, t, d = 40, 16, 24
    x = torch.randn(n, t, d, generator=g)
    concept = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    acts = torch.zeros(n, t)
    hot = torch.rand(n, t, generator=g) < 0.05
    x[hot] += 6.0 * concept
    acts[hot] = 1.0 + torch.rand(int(hot.sum()), generator=g)
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[:, 0] = False  # BOS
    acts[:, 0] = 100.0  # masked positions never count, however large
    pos = strong_positions(acts, mask, n_positive=1000, min_activation_frac=0.0)
    assert len(pos) == int(hot[:, 1:].sum()) and not bool((pos % t == 0).any())
    strong = strong_positions(acts, mask, n_positive=5, min_activation_frac=0.0)
    assert len(strong) == 5 and float(acts.reshape(-1)[strong].min()) >= float(acts[:, 1:][hot[:, 1:]].sort().values[-5])
    neg = random_positions(mask, 300, torch.Generator().manual_seed(0))
    assert len(neg) == 300 and len(set(neg.tolist())) == 300 and not bool((neg % t == 0).any())
    flat = x.reshape(n * t, d)
    v = diffmean(flat[pos].mean(0), flat[neg].mean(0))
    cos = float(torch.nn.functional.cosine_similarity(v, concept, dim=0))
    assert cos > 0.95
    assert strong_positions(torch.zeros(n, t), mask, 10, 0.5).numel() == 0


# ---- user-supplied vectors ---------------------------------------------------------------------------------


def test_vector_file_is_validated_with_errors_naming_the_tensor(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({"3": torch.ones(8), "5": torch.arange(8, dtype=torch.float32)}, str(good))
    loaded = load_vector_file(good, 8, [3, 5, 7])
    assert set(loaded) == {3, 5} and torch.equal(loaded[5], torch.arange(8, dtype=torch.float32))
    cases = {
        "name": ({"abc": torch.ones(8)}, "names must be latent indices"),
        "unknown": ({"4": torch.ones(8)}, "latent 4 is not one of"),
        "shape": ({"3": torch.ones(7)}, r"shape \[7\], expected \[8\]"),
        "nan": ({"3": torch.tensor([float("nan")] * 8)}, "NaN"),
        "zero": ({"3": torch.zeros(8)}, "zero vector"),
        "int": ({"3": torch.ones(8, dtype=torch.int64)}, "float dtype"),
    }
    for label, (tensors, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(VectorError, match=message):
            load_vector_file(path, 8, [3, 5])
    with pytest.raises(VectorError, match="does not exist"):
        load_vector_file(tmp_path / "missing.safetensors", 8, [3])
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VectorError, match="not a readable safetensors"):
        load_vector_file(tmp_path / "junk.safetensors", 8, [3])


# ---- the per-SAE job on the tiny model ---------------------------------------------------------------

EVAL_BLOCK = tiny_eval_block(n_latents=6)
STEERING = {"n_concepts": 2, "n_instructions": 4, "n_selection": 2, "factors": [0.0, 3.0], "max_new_tokens": 6, "batch_size": 32}


def test_job_on_the_tiny_model_steers_each_vector_with_steer_evals_seeds(tmp_path, minilm):
    """Eval data, autointerp, steer_eval, then the job: outputs validate, the latent's score is
    steer_eval's over the same concepts, every method's rows use the latent's own seeds, and at
    factor 0 every vector's generation is the unsteered generation of that seed."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from saesteer.evals.autointerp import run_autointerp
    from saesteer.evals.config import EvalConfig
    from saesteer.evals.eval_data import build_eval_data
    from saesteer.judges import OfflineJudgeConfig
    from saesteer.judges.offline import OfflineProxyJudge
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.context import SteeringContext, SteeringModels
    from saesteer.steering.evaluate import run_steer_eval
    from saesteer.steering.generate import GenRow, SteeringModel, prompt_ids
    from saesteer.steering.instructions import write_instruction_pool
    from saesteer.steering.vectors_config import SteeringVectorsConfig
    from saesteer.steering.vectors_job import CONCEPTS_SCHEMA, GENERATIONS_SCHEMA, VectorsJobError, run_steering_vectors
    from tests.helpers import (
        CharTokenizer,
        make_tiny_llama,
        plant_x_dimension,
        sae_files,
        save_sae,
        write_model_json,
        x_reading_sae,
    )

    model, tok = make_tiny_llama(), CharTokenizer()
    plant_x_dimension(model)  # "x" gets a dedicated residual dimension, which latent 0 reads
    model_json = write_model_json(tmp_path, model=model, layer=1)
    build_eval_data(
        model,
        tok,
        model_name="tiny",
        layer=1,
        corpus_cfg=prose_and_code_corpus(tmp_path, fox_prefix="x"),
        cfg=EvalConfig.from_config(EVAL_BLOCK),
        out_dir=tmp_path / "eval_data",
    )
    sae_dir = save_sae(x_reading_sae(), tmp_path / "sae", 1)

    class NoEmbedder:
        name = "no-embedder"

    run_autointerp(
        sae_dir=sae_dir,
        eval_dir=tmp_path / "eval_data",
        eval_cfg=EVAL_BLOCK,
        judge_cfg={"kind": "offline"},
        out_parquet=tmp_path / "autointerp.parquet",
        out_json=tmp_path / "autointerp.json",
        model="tiny",
        arch="relu",
        target_l0=4,
        tokenizer=tok,
        judge=OfflineProxyJudge(OfflineJudgeConfig(), None, None, lm_name="tiny", embedder=NoEmbedder()),
    )  # type: ignore[arg-type]
    # The "x" latent first: steer_eval's concepts are the first two by rank, and the DiffMean
    # check below is about it (autointerp's hash order alone would leave it out).
    table = pq.read_table(tmp_path / "autointerp.parquet")
    rows = sorted(table.to_pylist(), key=lambda r: (r["latent"] != 0, r["rank"]))
    assert rows[0]["latent"] == 0 and rows[0]["explain_parsed"]
    pq.write_table(
        pa.Table.from_pylist([{**r, "rank": k} for k, r in enumerate(rows)], schema=table.schema), tmp_path / "autointerp.parquet"
    )
    write_instruction_pool(SteeringConfig.from_config(STEERING).instructions, tmp_path / "instructions.json")
    judge = OfflineProxyJudge(OfflineJudgeConfig(), model, tok, lm_name="tiny", embedder=minilm)
    steer_dir = tmp_path / "steering"

    def context(steering: dict, vectors: dict | None = None, the_judge=judge) -> SteeringContext:
        return SteeringContext(
            model_json=model_json,
            instructions=tmp_path / "instructions.json",
            steering=SteeringConfig.from_config(steering),
            judge={"kind": "offline"},
            prompt_format="base",
            vectors=None if vectors is None else SteeringVectorsConfig.from_config(vectors),
            eval_dir=tmp_path / "eval_data",
            eval_cfg=EVAL_BLOCK,
            models=SteeringModels(model, tok, the_judge),
        )

    autointerp = {"autointerp": tmp_path / "autointerp.parquet"}
    steer_out = {
        k: steer_dir / f
        for k, f in (("generations", "generations.parquet"), ("concepts", "concepts.json"), ("score", "score.json"))
    }
    run_steer_eval(context(STEERING), sae_files(sae_dir, autointerp, steer_out))
    out = tmp_path / "steering_vectors"
    vectors_cfg = {"enabled": True, "n_positive": 8, "n_negative": 256, "top_k": 3, "fit_k": 4, "n_report": 3}
    vector_inputs = {**autointerp, "steering_concepts": steer_dir / "concepts.json", "steering_score": steer_dir / "score.json"}

    def vectors_out(
        folder: Path,
        concepts: str = "concepts.parquet",
        generations: str = "generations.parquet",
        vectors: str = "vectors.safetensors",
    ) -> dict[str, Path]:
        return {
            "score": folder / "score.json",
            "concepts": folder / concepts,
            "generations": folder / generations,
            "vectors": folder / vectors,
        }

    report = run_steering_vectors(context(STEERING, vectors_cfg), sae_files(sae_dir, vector_inputs, vectors_out(out)))
    on_disk = json.loads((out / "score.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    latent_concepts = json.loads((steer_dir / "concepts.json").read_text())["concepts"]
    assert on_disk["n_concepts"] == len(latent_concepts) == 2
    latent_mean = sum(c["axbench"]["heldout_score"] for c in latent_concepts) / 2
    assert on_disk["score_latent"] == pytest.approx(latent_mean)
    scores = on_disk["axbench"]["scores"]
    assert set(scores) == {"latent", "diffmean", "naive", "signed"}
    # Scores here are all 0 (a random model and the char tokenizer give the judge nothing to
    # rate): the share of DiffMean's score and nonzero scores are checked on the planted
    # fixture (tests/test_eval_groups.py, steering_vectors).
    assert on_disk["baselines"] == json.loads((steer_dir / "score.json").read_text())["baselines"]

    rows = pq.read_table(out / "generations.parquet")
    assert rows.schema.equals(GENERATIONS_SCHEMA)
    rows = rows.to_pylist()
    assert len(rows) == on_disk["n_generations"] == 3 * 2 * 2 * 4
    latent_rows = {
        (r["concept_id"], r["factor"], r["instruction_id"]): r
        for r in pq.read_table(steer_dir / "generations.parquet").to_pylist()
        if r["kind"] == "steered"
    }
    steer = SteeringModel.wrap(model, tok, 1, "base")
    for r in rows:
        twin = latent_rows[(r["concept_id"], r["factor"], r["instruction_id"])]
        assert r["seed"] == twin["seed"] and r["coef"] == pytest.approx(twin["coef"])
    zero = [r for r in rows if r["factor"] == 0.0]
    plain, _ = steer.generate(
        [GenRow(tuple(prompt_ids(tok, r["prompt"], "base")), seed=r["seed"]) for r in zero],
        None,
        max_new_tokens=STEERING["max_new_tokens"],
        temperature=1.0,
        top_k=SteeringConfig.from_config(STEERING).top_k,
        batch_size=64,
    )
    assert [r["text"] for r in zero] == [tok.decode(g.token_ids) for g in plain]
    steered = [r for r in rows if r["factor"] == 3.0 and r["method"] == "diffmean"]
    assert any(r["text"] != latent_rows[(r["concept_id"], 0.0, r["instruction_id"])]["text"] for r in steered)

    # The DiffMean vector of the "x" latent points along the dimension "x" writes to.
    by_latent = {c["latent"]: c for c in on_disk["concepts"]}
    assert sorted(by_latent) == [0, 10]
    assert by_latent[0]["diagnostics"]["cos_with_decoder_row"] is not None
    v = load_file(str(out / "vectors.safetensors"))["diffmean.0"]
    assert abs(float(v[0])) / float(v.norm()) > 0.5
    table = pq.read_table(out / "concepts.parquet")
    assert table.schema.equals(CONCEPTS_SCHEMA) and table.num_rows == 2

    # A user vector replaces DiffMean for the concept it names, and is what gets steered.
    from safetensors.torch import save_file

    first = on_disk["concepts"][0]["latent"]
    mine = torch.zeros(32)
    mine[5] = 2.0
    save_file({str(first): mine}, str(tmp_path / "user-relu.safetensors"))
    user_out = tmp_path / "user"
    user_report = run_steering_vectors(
        context(STEERING, {**vectors_cfg, "vectors_file": str(tmp_path / "user-{arch}.safetensors")}),
        sae_files(sae_dir, vector_inputs, vectors_out(user_out, "c.parquet", "g.parquet", "v.safetensors")),
    )
    assert [c["vector_source"] for c in user_report["concepts"]] == ["file", "diffmean"] and user_report["n_user_vectors"] == 1
    assert torch.equal(load_file(str(user_out / "v.safetensors"))[f"diffmean.{first}"], mine)
    assert user_report["concepts"][0]["diagnostics"]["norm"] == pytest.approx(2.0)

    # Another judge than steer_eval's is refused: the latent's scores are steer_eval's.
    other = OfflineProxyJudge(OfflineJudgeConfig(), model, tok, lm_name="another-reference", embedder=minilm)
    with pytest.raises(VectorsJobError, match="differs from the steering evaluation's"):
        run_steering_vectors(
            context(STEERING, vectors_cfg, other), sae_files(sae_dir, vector_inputs, vectors_out(tmp_path / "other"))
        )

    # A changed steering config is refused: the comparison would not be paired.
    with pytest.raises(VectorsJobError, match="another steering config"):
        run_steering_vectors(
            context({**STEERING, "max_new_tokens": 7}, vectors_cfg), sae_files(sae_dir, vector_inputs, vectors_out(out))
        )


# ---- config and cost ---------------------------------------------------------------------------------------


def test_schema_keys_and_defaults_match_the_dataclass_and_bad_values_name_the_field():
    from saesteer.config import load_schema
    from saesteer.steering.vectors_config import SteeringVectorsConfig, VectorsConfigError

    assert_schema_block_matches(SteeringVectorsConfig, load_schema()["properties"]["steering_vectors"], "steering_vectors")
    for bad, field in (
        ({"methods": ["mean"]}, "methods"),
        ({"fit_k": 0}, "fit_k"),
        ({"min_activation_frac": 2}, "min_activation_frac"),
        ({"enabled": "maybe"}, "enabled"),
        ({"nope": 1}, "unknown keys"),
    ):
        with pytest.raises(VectorsConfigError, match=field):
            SteeringVectorsConfig.from_config(bad)
    assert SteeringVectorsConfig.from_config({"enabled": "true"}).enabled is True
    cfg = SteeringVectorsConfig.from_config({"vectors_file": "v/{model}/{arch}-{sparsity}.safetensors"})
    assert cfg.vectors_path("m", "relu", "l0-20") == "v/m/relu-l0-20.safetensors"
    with pytest.raises(VectorsConfigError, match="placeholder"):
        SteeringVectorsConfig.from_config({"vectors_file": "{layer}.safetensors"}).vectors_path("m", "relu", "l0-20")


def test_cost_counts_the_extra_generations_only_when_enabled():
    from saesteer.config import load_config
    from saesteer.cost import judge_estimate, steering_vectors_rows
    from saesteer.cost_shape import format_estimate

    paper = load_config(REPO / "config/config.yaml")
    assert steering_vectors_rows(paper) == 0 and "steering_vectors" not in format_estimate(paper)
    paper["steering_vectors"] = {"enabled": True}
    assert steering_vectors_rows(paper) == 100 * 3 * 10 * 14
    paper["judge"]["kind"] = "llm"
    rows = [r for r in judge_estimate(paper) if r.stage == "steering_vectors"]
    assert len(rows) == 1 and rows[0].estimate.calls == 3 * 90 * 100 * 3 * 10 * 14
    assert "steering_vectors" in format_estimate(paper)
    demo = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    assert steering_vectors_rows(demo) == 3 * 1 * 2 * 2  # 3 vectors x 1 concept x 2 instructions x 2 factors


def test_streamed_top_positions_equal_the_in_memory_choice_ties_included():
    from saesteer.steering.vectors import RunningTop

    g = torch.Generator().manual_seed(5)
    n, t, n_lat = 30, 16, 4
    acts = torch.rand(n, t, n_lat, generator=g)
    acts[acts < 0.6] = 0.0
    acts = (acts * 4).round() / 4  # many ties
    mask = torch.rand(n, t, generator=g) > 0.1
    acts = acts * mask[..., None]
    top = RunningTop(n_lat, 7)
    for start in range(0, n, 4):  # row batches of 4 contexts
        stop = min(n, start + 4)
        top.update(acts[start:stop].reshape(-1, n_lat), torch.arange(start * t, stop * t))
    for j in range(n_lat):
        for frac in (0.0, 0.9):
            assert torch.equal(top.strong(j, frac), strong_positions(acts[..., j], mask, 7, frac)), (j, frac)


def test_an_empty_code_of_v_is_flagged_as_well():
    sae = orthonormal_sae()
    with torch.no_grad():
        sae.b_enc.fill_(-1.0)  # thresholds above a small vector's pre-activations
    acts = torch.randn(100, 32, generator=torch.Generator().manual_seed(0))
    d = mayne_diagnostics(
        sae,
        1e-3 * unit_decoder_rows(sae)[2],
        acts.mean(0),
        2,
        acts.norm(dim=1).sort().values,
        top_k=5,
        bias_dominated_overlap=0.5,
    )
    assert d["encode_v_empty"] and d["bias_dominated"] and d["overlap_encode_v_with_encode_0"] is None
    big = mayne_diagnostics(
        sae,
        10.0 * unit_decoder_rows(sae)[2],
        acts.mean(0),
        2,
        acts.norm(dim=1).sort().values,
        top_k=5,
        bias_dominated_overlap=0.5,
    )
    assert not big["encode_v_empty"] and not big["bias_dominated"] and big["top_latents_encode_v"] == [2]

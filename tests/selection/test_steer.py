"""The steering of selected latent sets (rule steer_selected) on the planted fixture: the tiny
CI Llama (its residual at the hook is the current token's embedding) with SmolLM2's tokenizer,
and a ReLU SAE whose live latents each read one token and write along its unembedding
(saesteer.planted). Latents of whole words (" the", " and", " of") steer: the generation
becomes a loop of the word, which the offline judge (with the .test bounds) rates
concept 2, instruction 1, fluency 1 (score 1.2); word pieces ("ing", "ed") do not (0)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from saesteer.judges import OfflineJudgeConfig
from saesteer.selection.config import SelectionConfig
from saesteer.selection.sets import SelectionError
from saesteer.selection.steer import read_selection_score, run_steer_selected
from saesteer.steering.config import SteeringConfig
from saesteer.steering.context import SteeringContext, SteeringModels
from saesteer.steering.evaluate import PARQUET_SCHEMA, run_steer_eval
from saesteer.steering.instructions import write_instruction_pool
from tests.helpers import REPO, explained_row, random_sae, sae_files, save_sae, write_model_json

LAYER = 2
STEERING = {"n_concepts": 2, "n_instructions": 4, "n_selection": 2, "factors": [0.5, 2.0], "max_new_tokens": 6, "batch_size": 32}
# latent: (autointerp rank, token, output score, Delta C)
LATENTS = {
    3: (0, " the", 0.001, 0.4),
    5: (1, "ing", 0.2, -1.5),
    1: (2, " and", 0.05, 2.0),
    8: (3, "ed", 0.5, -0.2),
    12: (4, " of", 0.0, 0.0),
}
STEERS = {3, 1, 12}
"""The planted latents (whole words); 5 and 8 are word pieces."""
H211 = 3 / (1 / 2 + 1 + 1)
"""Harmonic mean of concept 2, instruction 1, fluency 1: a planted latent's held-out score."""
CI_JUDGE = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())["judge"]["offline"]
NO_CONTROL = {"n_orderings": 0, "output_order": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def explanation(token: str) -> str:
    return f'the tokens "{token.strip()}"'


@pytest.fixture
def setup(tmp_path, minilm, smollm2_tokenizer):
    from saesteer.evals.autointerp import write_table
    from saesteer.judges.offline import OfflineProxyJudge
    from saesteer.planted import plant_token_latents
    from saesteer.tiny_models import _vocab_size, build_tiny_model

    tok = smollm2_tokenizer
    model = build_tiny_model("llama", _vocab_size(tok), tok)
    embed, unembed = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    ids = {lat: tok(text, add_special_tokens=False)["input_ids"] for lat, (_, text, _, _) in LATENTS.items()}
    assert all(len(v) == 1 for v in ids.values())
    sae = random_sae("relu", 64, 16, target_l0=4)
    plant_token_latents(sae, embed, unembed, {lat: v[0] for lat, v in ids.items()})
    sae_dir = save_sae(sae, tmp_path / "sae", LAYER)
    # m_f: the residual norm at the token (its embedding's), as autointerp measures it on the tiny model.
    write_table(
        [
            explained_row(lat, rank, explanation(text), float(embed[ids[lat][0]].norm()))
            for lat, (rank, text, _, _) in LATENTS.items()
        ],
        tmp_path / "autointerp.parquet",
    )
    # Selection scores as select_features writes them (the columns steer_selected reads).
    # The three intervention readings (only_max = the delta_conf column; add_max reversed; scale 0 but one).
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "latent": lat,
                    "output_score": os,
                    "delta_conf": dc,
                    "delta_conf_only_max": dc,
                    "delta_conf_add_max": -dc,
                    "delta_conf_scale": 1.0 if lat == 8 else 0.0,
                }
                for lat, (_, _, os, dc) in LATENTS.items()
            ]
        ),
        tmp_path / "latent_scores.parquet",
    )
    write_instruction_pool(SteeringConfig.from_config(STEERING).instructions, tmp_path / "instructions.json")
    write_model_json(tmp_path, layer=LAYER)
    bounds = {k: tuple(v) for k, v in CI_JUDGE.items() if k.endswith("_thresholds")}
    judge = OfflineProxyJudge(OfflineJudgeConfig(**bounds), model, tok, lm_name="tiny", embedder=minilm)
    common = dict(
        sae_dir=sae_dir,
        autointerp=tmp_path / "autointerp.parquet",
        instructions=tmp_path / "instructions.json",
        model_json=tmp_path / "model.json",
        steering=STEERING,
        prompt_format="base",
        lm=model,
        tokenizer=tok,
        judge=judge,
    )
    steering = tmp_path / "steering"
    outputs = {
        "generations": steering / "generations.parquet",
        "concepts": steering / "concepts.json",
        "score": steering / "score.json",
    }
    run_steer_eval(_context(common), sae_files(sae_dir, {"autointerp": common["autointerp"]}, outputs))
    return tmp_path, common


def _context(common: dict, selection: dict | None = None) -> SteeringContext:
    """The job's shared part as steer_selected's rule builds it (``common``: the test's settings)."""
    return SteeringContext(
        model_json=common["model_json"],
        instructions=common["instructions"],
        steering=SteeringConfig.from_config(common["steering"]),
        judge={"kind": "offline"},
        prompt_format=common["prompt_format"],
        selection=None if selection is None else SelectionConfig.from_config(selection),
        models=SteeringModels(common["lm"], common["tokenizer"], common["judge"]),
    )


def _selected(tmp_path: Path, common: dict, out: str, generations: Path, steering_score: Path, selection: dict) -> dict:
    inputs = {
        "autointerp": common["autointerp"],
        "latent_scores": tmp_path / "latent_scores.parquet",
        "steering_generations": generations,
        "steering_score": steering_score,
    }
    outputs = {
        "generations": tmp_path / out / "generations.parquet",
        "concepts": tmp_path / out / "concepts.json",
        "score": tmp_path / out / "score.json",
        "latents": tmp_path / out / "latents.parquet",
    }
    return run_steer_selected(_context(common, selection), sae_files(common["sae_dir"], inputs, outputs))


def _run(tmp_path: Path, common: dict, out: str, generations: Path, selection: dict | None = None) -> dict:
    selection = selection or {"candidates": "explained", "delta_conf": {"k_values": [1, 2]}, "control": NO_CONTROL}
    return _selected(tmp_path, common, out, generations, tmp_path / "steering" / "score.json", selection)


def test_selected_sets_are_steered_and_scored_with_the_steering_protocol(setup):
    tmp_path, common = setup
    report = _run(tmp_path, common, "selection", tmp_path / "steering" / "generations.parquet")
    assert read_selection_score(tmp_path / "selection" / "score.json") == json.loads(json.dumps(report))
    steering = json.loads((tmp_path / "steering" / "score.json").read_text())
    assert report["no_selection"]["score"] == steering["score"] and report["no_selection"]["latents"] == [3, 5]
    # The planted answer: " the" steers, "ing" does not.
    assert steering["score"] == pytest.approx(H211 / 2)
    # Output score >= 0.01: latents 5, 1, 8 pass; the first two in rank order: "ing" and " and".
    assert report["output_score"]["latents"] == [5, 1] and report["output_score"]["n_candidates_passing"] == 3
    assert report["output_score"]["score"] == pytest.approx(H211 / 2) and report["output_score"]["lift"] == pytest.approx(
        0.0, abs=1e-12
    )
    # Delta C: UP = 1 (2.0), 3 (0.4); DOWN = 5 (-1.5), 8 (-0.2); K in {1, 2}.
    labels = {c["label"]: c["latents"] for c in report["delta_conf"]["candidates"]}
    assert labels == {
        "delta_conf:up:k=1": [1],
        "delta_conf:up:k=2": [1, 3],
        "delta_conf:down:k=1": [5],
        "delta_conf:down:k=2": [5, 8],
    }
    best = max(c["selection_score"] for c in report["delta_conf"]["candidates"])
    chosen = next(c for c in report["delta_conf"]["candidates"] if c["label"] == report["delta_conf"]["chosen"]["label"])
    assert chosen["selection_score"] == best and report["delta_conf"]["score"] == chosen["score"]
    # UP k=1 ([" and"]) and k=2 ([" and", " the"]) both score H211 on the selection half; the
    # smaller wins. DOWN sets hold "ing" ([5]: 0; [5, 8]: 0). Delta C picks the planted latent.
    by_label = {c["label"]: c["selection_score"] for c in report["delta_conf"]["candidates"]}
    assert by_label == {
        "delta_conf:up:k=1": pytest.approx(H211),
        "delta_conf:up:k=2": pytest.approx(H211),
        "delta_conf:down:k=1": 0.0,
        "delta_conf:down:k=2": 0.0,
    }
    assert report["delta_conf"]["latents"] == [1] and set(report["delta_conf"]["latents"]) <= STEERS
    assert report["delta_conf"]["lift"] == pytest.approx(H211 / (H211 / 2) - 1)
    # Latents 3 and 5 were steered by steer_eval: reused; 1 and 8 are new.
    assert report["n_latents_reused"] == 2 and report["n_latents_steered"] == 2
    rows = pq.read_table(tmp_path / "selection" / "generations.parquet")
    assert rows.schema.equals(PARQUET_SCHEMA)
    assert {r["latent"] for r in rows.to_pylist()} == {1, 3, 5, 8}
    assert len(rows) == 4 * len(STEERING["factors"]) * STEERING["n_instructions"]
    none = report["no_selection"]["score"]
    for block in ("output_score", "delta_conf"):
        assert report[block]["lift"] == pytest.approx((report[block]["score"] - none) / none)


def test_the_papers_design_selects_among_the_steered_concepts_and_generates_nothing(setup):
    """selection.candidates: concepts (the default): every set is a subset of steer_eval's
    concepts, so no model, SAE or judge is needed."""
    tmp_path, common = setup
    report = _run(
        tmp_path,
        {**common, "lm": None, "tokenizer": None, "judge": None},
        "concepts",
        tmp_path / "steering" / "generations.parquet",
        {"delta_conf": {"k_values": [1, 2]}},
    )
    assert report["candidates"] == "concepts" and report["n_candidates"] == 2
    assert report["n_latents_steered"] == 0 and report["n_latents_reused"] == 2
    # Among latents 3 (" the": output score 0.001, Delta C 0.4) and 5 ("ing": 0.2, -1.5):
    assert report["output_score"]["latents"] == [5] and report["output_score"]["score"] == 0.0
    assert report["delta_conf"]["latents"] == [3] and report["delta_conf"]["lift"] == pytest.approx(1.0)
    labels = {c["label"]: c["latents"] for c in report["delta_conf"]["candidates"]}
    assert labels == {"delta_conf:up:k=1": [3], "delta_conf:down:k=1": [5]}
    concepts = json.loads((tmp_path / "steering" / "concepts.json").read_text())["concepts"]
    held = {c["latent"]: c["axbench"]["heldout_score"] for c in concepts}
    assert report["output_score"]["score"] == held[5]
    # The control searches the same two concepts in 5 random orders and the output-score order:
    # nothing new to steer. Among 2 candidates an ordering puts one UP and one DOWN.
    control = report["control"]
    assert len(control["random"]["runs"]) == 5 and all(r["n_sets"] == 2 for r in control["random"]["runs"])
    by_label = {c["label"]: c for c in report["delta_conf"]["candidates"]}
    for run in control["random"]["runs"]:
        assert run["latents"] in ([3], [5]) and run["score"] == held[run["latents"][0]]
    # Output-score ordering: 5 (0.2) is UP, 3 (0.001) DOWN: the opposite of Delta C's sets.
    assert control["output_order"]["latents"] in ([3], [5]) and control["output_order"]["n_sets"] == 2
    best = max(by_label.values(), key=lambda c: (c["selection_score"], -c["n_concepts"]))
    assert control["output_order"]["score"] == best["score"]  # same two singletons, same choice rule
    # Every random ordering's best singleton is " the" (the search always finds the planted
    # latent among two): the random-order lift equals Delta C's, net lift 0.
    assert control["random"]["lift_mean"] == pytest.approx(1.0)
    assert control["net_lift"] == pytest.approx(report["delta_conf"]["lift"] - control["random"]["lift_mean"])


def test_the_like_for_like_comparator_and_every_reading_reuse_the_steered_concepts(setup):
    """output_topk: the output score's top-m for each of Delta C's set sizes m (equal K), chosen by
    Delta C's rule; delta_conf_readings: Delta C's selection under only_max, add_max and scale.
    With candidates: concepts nothing is generated for either."""
    tmp_path, common = setup
    report = _run(
        tmp_path,
        {**common, "lm": None, "tokenizer": None, "judge": None},
        "readings",
        tmp_path / "steering" / "generations.parquet",
        {"delta_conf": {"k_values": [1, 2]}, "control": NO_CONTROL},
    )
    assert report["n_latents_steered"] == 0 and report["n_latents_reused"] == 2
    dc_sizes = sorted(c["n_concepts"] for c in report["delta_conf"]["candidates"])
    topk = report["output_topk"]
    assert set(topk["set_sizes"]) == set(dc_sizes) == {1}  # the same subset sizes as Delta C's sets
    # sets of equal size are one set (the output score has one direction): 5 (0.2) beats 3 (0.001)
    assert [c["latents"] for c in topk["candidates"]] == [[5]] and topk["latents"] == [5]
    concepts = json.loads((tmp_path / "steering" / "concepts.json").read_text())["concepts"]
    held = {c["latent"]: c["axbench"]["heldout_score"] for c in concepts}
    assert topk["score"] == held[5] and report["relative_improvement_threshold"] == report["relative_improvement"]
    readings = report["delta_conf_readings"]
    assert set(readings) == {"only_max", "add_max", "scale"} and readings["only_max"]["headline"]
    assert readings["only_max"]["latents"] == report["delta_conf"]["latents"]
    assert readings["only_max"]["score"] == report["delta_conf"]["score"]
    # scale: latent 8 is not a concept, 3 and 5 have Delta C 0: no set, no score
    assert readings["scale"]["n_sets"] == 0 and readings["scale"]["score"] is None
    assert readings["add_max"]["n_sets"] == 2 and readings["add_max"]["latents"] in ([3], [5])


def test_the_per_latent_table_lists_every_explained_latent_with_its_scores_and_steering(setup):
    from saesteer.selection.per_latent import PER_LATENT_SCHEMA, TAU_SCORES
    from saesteer.stats import tau_b

    tmp_path, common = setup
    report = _run(tmp_path, common, "view", tmp_path / "steering" / "generations.parquet")
    table = pq.read_table(tmp_path / "view" / "latents.parquet")
    assert table.schema.equals(PER_LATENT_SCHEMA)
    rows = {r["latent"]: r for r in table.to_pylist()}
    assert list(rows) == [3, 5, 1, 8, 12]  # autointerp rank order
    for lat, (rank, text, os, dc) in LATENTS.items():
        r = rows[lat]
        assert (r["rank"], r["explanation"], r["output_score"], r["delta_conf"], r["abs_delta_conf"]) == (
            rank,
            explanation(text),
            os,
            dc,
            abs(dc),
        )
        assert r["input_score"] is None  # the planted latent_scores table has no input score
    # Steered here or by steer_eval: 1, 3, 5, 8; 12 is in no set.
    assert {lat for lat, r in rows.items() if r["steered"]} == {1, 3, 5, 8} and rows[12]["heldout_score"] is None
    assert [lat for lat, r in rows.items() if r["in_no_selection"]] == [3, 5]
    concepts = {c["latent"]: c for c in json.loads((tmp_path / "view" / "concepts.json").read_text())["concepts"]}
    for lat in (1, 3, 5, 8):
        assert rows[lat]["heldout_score"] == concepts[lat]["axbench"]["heldout_score"]
    view = report["per_latent"]
    assert view["n_latents"] == 5 and view["n_steered"] == 4 and set(view["tau_b"]) == set(TAU_SCORES)
    steered = [r for r in rows.values() if r["steered"]]
    want = tau_b([r["delta_conf"] for r in steered], [r["heldout_score"] for r in steered])
    got = view["tau_b"]["delta_conf"]["tau_b"]
    assert (got is None and want != want) or got == pytest.approx(want)
    assert view["tau_b"]["input_score"] == {"tau_b": None, "n": 0}


def test_high_output_low_input_is_an_optional_criterion_row(setup):
    tmp_path, common = setup
    inputs = {3: 0.0, 5: 0.9, 1: 0.1, 8: None, 12: 0.0}
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"latent": lat, "output_score": os, "delta_conf": dc, "input_score": inputs[lat]}
                for lat, (_, _, os, dc) in LATENTS.items()
            ]
        ),
        tmp_path / "latent_scores.parquet",
    )
    report = _run(tmp_path, common, "holi", tmp_path / "steering" / "generations.parquet")
    # Output score >= 0.01 and input score < 0.5: 5 is high input, 8 has no input score, 3 and 12 low output.
    block = report["output_low_input"]
    assert block["latents"] == [1] and (block["high_output"], block["high_input"]) == (0.01, 0.5)
    concepts = {c["latent"]: c for c in json.loads((tmp_path / "holi" / "concepts.json").read_text())["concepts"]}
    assert block["score"] == concepts[1]["axbench"]["heldout_score"]
    rows = {r["latent"]: r for r in pq.read_table(tmp_path / "holi" / "latents.parquet").to_pylist()}
    assert [rows[lat]["input_score"] for lat in (3, 5, 1, 8, 12)] == [0.0, 0.9, 0.1, None, 0.0]
    assert rows[5]["high_input"] is True and rows[8]["high_input"] is None and rows[1]["high_output"] is True
    assert report["per_latent"]["input_output"]["n_scored"] == 4 and report["per_latent"]["input_output"]["n_high_both"] == 1


def test_the_control_steers_the_latents_its_orderings_pick_among_explained_candidates(setup):
    tmp_path, common = setup
    report = _run(
        tmp_path,
        common,
        "control",
        tmp_path / "steering" / "generations.parquet",
        {"candidates": "explained", "delta_conf": {"k_values": [1, 2]}, "control": {"n_orderings": 3, "seed": 1}},
    )
    control = report["control"]
    picked = {lat for r in [*control["random"]["runs"], control["output_order"]] for lat in r["latents"]}
    concepts = {c["latent"] for c in json.loads((tmp_path / "control" / "concepts.json").read_text())["concepts"]}
    assert picked <= concepts
    # Output-score order: 8 (0.5), 5 (0.2), 1 (0.05), 3 (0.001), 12 (0.0) takes Delta C's values
    # 2.0, 0.4, 0.0, -0.2, -1.5: UP = 8, 5; DOWN = 12, 3.
    assert control["output_order"]["n_sets"] == 4
    assert control["output_order"]["latents"] in ([8], [8, 5], [12], [12, 3])
    assert report["n_latents_steered"] + report["n_latents_reused"] == len(concepts)


def test_reused_generations_are_those_the_job_would_make(setup):
    """A latent's rows depend only on its concept id, factor and instruction: steering it
    again from scratch gives the generations steer_eval made."""
    tmp_path, common = setup
    empty = tmp_path / "empty.parquet"
    pq.write_table(PARQUET_SCHEMA.empty_table(), empty)
    fresh = _run(tmp_path, common, "fresh", empty)
    assert fresh["n_latents_reused"] == 0 and fresh["n_latents_steered"] == 4
    reused = _run(tmp_path, common, "reused", tmp_path / "steering" / "generations.parquet")
    key = lambda r: (r["latent"], r["factor"], r["instruction_id"])  # noqa: E731
    a = {key(r): r["text"] for r in pq.read_table(tmp_path / "fresh" / "generations.parquet").to_pylist()}
    b = {key(r): r["text"] for r in pq.read_table(tmp_path / "reused" / "generations.parquet").to_pylist()}
    assert a == b
    assert fresh["delta_conf"]["candidates"] == reused["delta_conf"]["candidates"]


def test_fixed_concept_lists_and_foreign_tables_are_refused(setup, tmp_path):
    base, common = setup
    with pytest.raises(SelectionError, match="fixed steering.concepts"):
        _run(
            base,
            {**common, "steering": {**STEERING, "concepts": ["the sea"]}},
            "x",
            base / "steering" / "generations.parquet",
        )
    with pytest.raises(SelectionError, match="prompt_format base.*now chat: rerun steer_eval"):
        _run(base, {**common, "prompt_format": "chat"}, "z", base / "steering" / "generations.parquet")
    pq.write_table(pa.Table.from_pylist([{"latent": 3, "output_score": 0.1, "delta_conf": 0.1}]), base / "latent_scores.parquet")
    with pytest.raises(SelectionError, match="no selection score"):
        _run(base, common, "y", base / "steering" / "generations.parquet")


def test_new_generations_rated_with_other_judge_templates_than_steer_evals_are_refused(setup):
    """The selected sets' scores are compared with steer_eval's: both must come from one
    judge and one template set (judge.prompts)."""
    tmp_path, common = setup
    score = json.loads((tmp_path / "steering" / "score.json").read_text())
    assert score["judge_prompts"]["label"] == "none"  # the offline proxy asks no prompt
    score["judge_prompts"] = {
        "label": "axbench-style@0123456789ab",
        "name": "axbench-style",
        "path": "x.yaml",
        "sha256": "0" * 64,
    }
    other = tmp_path / "steering" / "other_score.json"
    other.write_text(json.dumps(score))
    with pytest.raises(SelectionError, match="axbench-style@0123456789ab.*same judge and judge.prompts"):
        _selected(
            tmp_path,
            common,
            "o",
            tmp_path / "steering" / "generations.parquet",
            other,
            {"candidates": "explained", "delta_conf": {"k_values": [1, 2]}},
        )

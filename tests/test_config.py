import copy

import pytest
import yaml

from saesteer.config import ConfigError, check_config, grid_from_config, load_config
from tests.helpers import REPO, assert_schema_block_matches


@pytest.fixture
def paper() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_paper_grid_is_3_models_x_5_archs_x_6_sparsities(paper):
    check_config(paper)
    grid = grid_from_config(paper)
    cells = grid.cells()
    assert len(cells) == 90
    assert len(set(c.path for c in cells)) == 90
    assert grid.model_names == ["gemma-2-2b", "qwen2.5-3b", "gemma-2-9b"]
    assert grid.model("gemma-2-2b").layer == 12
    assert grid.model("gemma-2-2b").hook_name == "blocks.12.hook_resid_post"
    # The paper's hook points (section 3.1): 12, 17, 20.
    assert [grid.model(m).layer for m in grid.model_names] == [12, 17, 20]
    assert grid.model("qwen2.5-3b").hook_name == "blocks.17.hook_resid_post"
    assert cells[0].path == "gemma-2-2b/relu/l0-50"
    assert grid.target_l0("l0-820") == 820


def test_paper_config_has_the_papers_training_set_up(paper):
    # Appendix A: Common Pile v0.1, context 2048, LM batch 4, SAE batch 2048, 5e8 tokens,
    # lr 3e-4, warm-up 1000, sparsity warm-up 5000, decay over the last 20%, AuxK 1/32,
    # BatchTopK threshold momentum 0.999 from step 1000.
    assert [s["path"] for s in paper["corpus"]["sources"]] == ["common-pile/comma_v0.1_training_dataset"]
    assert paper["corpus"]["context_length"] == 2048 and paper["cache"]["batch_size"] == 4
    t = paper["training"]
    assert (t["batch_size"], t["tokens"], t["lr"], t["lr_warmup_steps"], t["sparsity_warmup_steps"]) == (
        2048,
        5e8,
        3e-4,
        1000,
        5000,
    )
    assert t["lr_decay_fraction"] == 0.2 and t["aux_coef"] == 1 / 32
    assert (t["batchtopk_threshold_beta"], t["batchtopk_threshold_start_step"]) == (0.999, 1000)


def test_demo_overrides_merge_like_snakemake():
    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    grid = grid_from_config(config)
    # Lists are replaced whole: no paper model leaks into the demo grid.
    assert grid.model_names == ["smollm2-135m", "gemma3-270m"]
    assert len(grid.architectures) == 5 and len(grid.sparsities) >= 3
    assert [s["kind"] for s in config["corpus"]["sources"]] == ["shakespeare", "python_docs"]


def _broken(paper, mutate):
    config = copy.deepcopy(paper)
    mutate(config)
    with pytest.raises(ConfigError) as info:
        check_config(config)
    return str(info.value)


def test_unknown_architecture_names_the_field(paper):
    msg = _broken(paper, lambda c: c["architectures"].__setitem__(2, "vanilla"))
    assert "architectures[2]" in msg and "vanilla" in msg


def test_sparsity_out_of_range_names_the_field(paper):
    msg = _broken(paper, lambda c: c["sparsities"].__setitem__(0, 0))
    assert "sparsities[0]" in msg
    msg = _broken(paper, lambda c: c["sae"].__setitem__("dict_size", 512))
    assert "sparsities[4]" in msg and "dict_size" in msg  # 520 >= 512


def test_missing_field_is_named(paper):
    msg = _broken(paper, lambda c: c["models"][1].pop("layer"))
    assert "models[1]" in msg and "'layer' is a required property" in msg
    msg = _broken(paper, lambda c: c.pop("corpus"))
    assert "'corpus' is a required property" in msg


def test_wrong_type_is_named(paper):
    msg = _broken(paper, lambda c: c["cache"].__setitem__("tokens", "lots"))
    assert "cache.tokens" in msg and "'lots'" in msg


def test_semantic_errors_are_named(paper):
    msg = _broken(paper, lambda c: c["models"][0].__setitem__("layer", 26))
    assert "models[0].layer" in msg and "n_layers 26" in msg
    msg = _broken(paper, lambda c: c["models"][2].__setitem__("name", "gemma-2-2b"))
    assert "models[2].name" in msg
    msg = _broken(paper, lambda c: c["models"][0].pop("hub_id"))
    assert "models[0]" in msg and "hub_id" in msg


def test_schema_training_keys_match_train_config():
    """TrainConfig refuses unknown keys; the schema must allow exactly its fields, plus the keys
    that shape the grid rather than one SAE's training (training.seeds), which it drops."""
    import dataclasses

    from saesteer.config import load_schema
    from saesteer.training.config import TrainConfig
    from saesteer.training.job import WORKFLOW_KEYS

    schema_keys = set(load_schema()["properties"]["training"]["properties"])
    assert schema_keys == {f.name for f in dataclasses.fields(TrainConfig)} | set(WORKFLOW_KEYS)
    assert TrainConfig.from_dict({"tokens": 64, "batch_size": 8, "seeds": [0, 1]}) == TrainConfig(tokens=64, batch_size=8)


def test_schema_judge_keys_match_judge_config():
    """JudgeConfig refuses unknown keys; the schema must allow exactly its keys (kind, prompts,
    cache and one options block per registered backend), with its defaults."""
    from saesteer.config import load_schema
    from saesteer.judges import JudgeConfig, backend_kinds, get_backend

    judge = load_schema()["properties"]["judge"]
    assert judge["additionalProperties"] is False
    assert set(judge["properties"]) == {"kind", "prompts", "cache", *backend_kinds()}
    top = {k: v for k, v in judge["properties"].items() if k not in backend_kinds()}
    # options (every backend's block) and where (the block it was read from) are no config keys.
    assert_schema_block_matches(
        JudgeConfig,
        {**judge, "properties": {**top, "options": {"default": None}, "where": {"default": "judge"}}},
        "judge",
        skip=("options", "where"),
    )
    for kind in backend_kinds():
        assert_schema_block_matches(get_backend(kind).options_cls, judge["properties"][kind], f"judge.{kind}")


def test_both_configs_have_a_judge_the_judge_layer_accepts(paper):
    from saesteer.judges import JudgeConfig

    assert JudgeConfig.from_dict(paper["judge"]).kind == "llm"
    assert JudgeConfig.from_dict(paper["judge"]).llm.model == "gpt-4o-mini"
    demo = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    cfg = JudgeConfig.from_dict(demo["judge"])
    assert cfg.kind == "offline" and cfg.offline.reference_model == "results/models/smollm2-135m/model.json"


def test_schema_steering_keys_match_steering_config():
    """SteeringConfig refuses unknown keys; the schema must allow exactly its fields, with its defaults."""
    from saesteer.config import load_schema
    from saesteer.steering.config import ConceptSpec, InstructionsConfig, SteeringConfig

    steering = load_schema()["properties"]["steering"]
    # steering.judge is the judge block of the steering stages (saesteer.judges.judge_block),
    # not a SteeringConfig field; its keys are the judge block's (test_backends).
    assert "judge" in steering["properties"]
    steering = {**steering, "properties": {k: v for k, v in steering["properties"].items() if k != "judge"}}
    concept_item = steering["properties"]["concepts"]["items"]["oneOf"][1]
    sections = {
        None: (SteeringConfig, steering),
        "instructions": (InstructionsConfig, steering["properties"]["instructions"]),
        "concepts": (ConceptSpec, concept_item),
    }
    for name, (cls, block) in sections.items():
        assert_schema_block_matches(cls, block, str(name), skip=("instructions",), defaults=cls is not ConceptSpec)


def test_both_configs_have_a_steering_block(paper):
    from saesteer.steering.config import AXBENCH_FACTORS, SteeringConfig

    cfg = SteeringConfig.from_config(paper["steering"])
    assert (cfg.n_concepts, cfg.n_instructions, cfg.n_selection, cfg.max_new_tokens) == (100, 10, 5, 128)
    assert cfg.factors == AXBENCH_FACTORS and cfg.temperature == 1.0 and cfg.m_f_fallback == 50.0
    assert cfg.instructions.source == "hf_dataset" and "alpaca_eval" in cfg.instructions.data_files
    demo = SteeringConfig.from_config(load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])["steering"])
    assert demo.instructions.source == "builtin" and demo.instructions.data_files is None
    assert demo.n_concepts <= 8 and demo.max_new_tokens <= 32


def test_steering_errors_are_named(paper):
    msg = _broken(paper, lambda c: c["steering"].__setitem__("n_selection", 10))
    assert "steering.n_selection" in msg
    msg = _broken(paper, lambda c: c["steering"].__setitem__("n_concepts", 1500))
    assert "steering.n_concepts" in msg and "n_latents" in msg
    msg = _broken(paper, lambda c: c["steering"].__setitem__("factors", []))
    assert "steering.factors" in msg

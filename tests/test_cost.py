import copy

import pytest
from pytest import approx

from saesteer.cli import main
from saesteer.config import grid_from_config, load_config
from saesteer.cost import estimate, eval_flops
from tests.helpers import REPO


def test_paper_cache_disk_is_tokens_times_row_bytes():
    config = load_config(REPO / "config/config.yaml")
    rows = {r.model: r for r in estimate(config)}
    # 500M tokens x (2304 bf16 values + 14 bytes of token/context/position ids)
    assert rows["gemma-2-2b"].cache_bytes == 500_000_000 * (2304 * 2 + 14)
    assert rows["gemma-2-9b"].cache_gpu_hours > rows["gemma-2-2b"].cache_gpu_hours
    assert all(r.n_saes == 30 for r in rows.values())


def test_eval_cost_grows_with_what_is_evaluated():
    config = load_config(REPO / "config/config.yaml")
    spec = grid_from_config(config).model("gemma-2-2b")
    prep, per_sae = eval_flops(spec, config["eval"], 16384)
    bigger = copy.deepcopy(config["eval"])
    bigger["core"]["splice_contexts"] //= 2
    prep2, per_sae2 = eval_flops(spec, bigger, 16384)
    assert per_sae2 < per_sae and prep2 < prep


def test_cost_command_prints_every_stage_and_the_judge_bill(capsys):
    assert main(["cost", "--config", str(REPO / "config/config.yaml")]) == 0
    out = capsys.readouterr().out
    for word in (
        "gemma-2-2b",
        "qwen2.5-3b",
        "gemma-2-9b",
        "cache_activations",
        "train_sae",
        "prepare_eval_data",
        "autointerp: 90 SAEs",
        "steer_eval",
        "steer GPU-h/SAE",
        "steering: 90 SAEs x 100 concepts x 10 instr. x 14 factors",
        "$",
    ):
        assert word in out


def test_steering_cost_follows_the_steering_block():
    from saesteer.cost import judge_estimate, steering_flops, steering_rows

    config = load_config(REPO / "config/config.yaml")
    spec = grid_from_config(config).model("gemma-2-9b")
    # 100 concepts x (10 instructions x 14 factors + 2 baselines x 5 held-out)
    assert steering_rows(config["steering"]) == 100 * (10 * 14 + 2 * 5)
    six = copy.deepcopy(config)
    six["steering"]["factors"] = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    assert steering_flops(spec, six["steering"]) < steering_flops(spec, config["steering"])
    shorter = copy.deepcopy(config)
    shorter["steering"]["max_new_tokens"] = 64
    assert steering_flops(spec, shorter["steering"]) < steering_flops(spec, config["steering"])
    calls = {r.factors: r.estimate.calls for r in judge_estimate(six) if r.stage == "steer_eval"}
    assert calls == {"6 factors (steering.factors)": 3 * 90 * 100 * (10 * 6 + 2 * 5)}


def test_cost_command_refuses_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsities: [0]\n")
    assert main(["cost", "--config", str(REPO / "config/config.yaml"), "--configfile", str(bad)]) == 2
    assert "sparsities[0]" in capsys.readouterr().err


def _paper_config():
    return load_config(REPO / "config/config.yaml")


def test_select_features_cost_is_linear_in_dict_size_for_all_latents():
    from saesteer.cost import select_features_flops, selection_estimate, selection_latents

    config = _paper_config()
    assert config["selection"]["latents"] == "all"
    spec = grid_from_config(config).model("gemma-2-9b")
    flops = {}
    for d in (8192, 16384, 32768):
        c = copy.deepcopy(config)
        c["sae"]["dict_size"] = d
        assert selection_latents(c) == d
        flops[d] = select_features_flops(spec, c["selection"], selection_latents(c))
        hours = {r.model: r for r in selection_estimate(c)}["gemma-2-9b"]
        assert hours.latents == d and hours.select_gpu_hours_per_sae > 0
    # a + b * d: equal steps for equal dict_size steps, and doubling doubles it up to the
    # one prompt forward (a few tokens against tens of thousands of rows)
    assert flops[32768] - flops[16384] == approx(2 * (flops[16384] - flops[8192]), rel=1e-9)
    assert flops[16384] / flops[8192] == approx(2.0, rel=1e-3)
    # per model: the per-SAE cost times the model's SAEs, at cost.mfu (the evaluations' utilisation)
    r = {r.model: r for r in selection_estimate(config)}["gemma-2-9b"]
    assert r.n_saes == 30
    assert r.select_gpu_hours_per_sae == approx(select_features_flops(spec, config["selection"], 16384) / (989e12 * 0.35) / 3600)
    slower = copy.deepcopy(config)
    slower["cost"]["mfu"] = 0.175
    assert {x.model: x for x in selection_estimate(slower)}["gemma-2-9b"].select_gpu_hours_per_sae == approx(
        2 * r.select_gpu_hours_per_sae
    )


def test_select_features_cost_uses_autointerp_latents_and_alpha():
    from saesteer.cost import select_features_flops, selection_estimate, selection_latents, selection_rows_per_latent

    config = _paper_config()
    spec = grid_from_config(config).model("gemma-2-2b")
    c = copy.deepcopy(config)
    c["selection"]["latents"] = "autointerp"
    c["eval"]["autointerp"]["n_latents"] = 100
    assert selection_latents(c) == c["eval"]["autointerp"]["n_latents"] == 100
    bigger = copy.deepcopy(c)
    bigger["sae"]["dict_size"] = 4 * config["sae"]["dict_size"]
    assert selection_latents(bigger) == 100  # independent of dict_size
    per_model = {r.model: r for r in selection_estimate(c)}["gemma-2-2b"]
    assert per_model.latents == 100 and per_model.rows == approx(100 * 2.02)
    assert (
        per_model.select_gpu_hours_per_sae
        < {r.model: r for r in selection_estimate(config)}["gemma-2-2b"].select_gpu_hours_per_sae
    )
    assert select_features_flops(spec, c["selection"], 100) < select_features_flops(spec, c["selection"], 16384)
    # alpha != amplification: add_max takes its own row
    apart = copy.deepcopy(config)
    apart["selection"]["delta_conf"]["alpha"] = 5.0
    assert selection_rows_per_latent(apart["selection"]) == approx(selection_rows_per_latent(config["selection"]) + 1)


def test_steer_selected_bound_grows_with_k_values():
    from saesteer.cost import selection_estimate, steer_selected_flops, steer_selected_latents, steer_selected_rows

    paper = _paper_config()
    # The paper's design: the criteria choose among steer_eval's concepts; nothing is new.
    assert steer_selected_latents(paper) == 0
    explained = copy.deepcopy(paper)
    explained["selection"]["candidates"] = "explained"
    explained["eval"]["autointerp"].update(n_latents=100, score_latents=100)
    # Concept100 is the whole autointerp sample there: every candidate was steered anyway.
    assert steer_selected_latents(explained) == 0
    config = copy.deepcopy(paper)
    config["eval"]["autointerp"]["n_latents"] = 1000
    config["selection"]["candidates"] = "explained"
    spec = grid_from_config(config).model("gemma-2-9b")
    # the output-score set (n_concepts) + 2 directions x max(k_values), none assumed reused
    assert steer_selected_latents(config) == 100 + 2 * 5
    assert steer_selected_rows(config) == 110 * 10 * 14  # no baselines
    more = copy.deepcopy(config)
    more["selection"]["delta_conf"]["k_values"] = [1, 5, 10, 20]
    assert steer_selected_latents(more) == 100 + 2 * 20
    assert steer_selected_flops(spec, more) > steer_selected_flops(spec, config)
    hours = lambda c: {r.model: r for r in selection_estimate(c)}["gemma-2-9b"].steer_gpu_hours_per_sae  # noqa: E731
    assert hours(more) > hours(config)
    one_way = copy.deepcopy(config)
    one_way["selection"]["delta_conf"]["directions"] = ["up"]
    assert steer_selected_latents(one_way) == 100 + 5
    quantile = copy.deepcopy(config)
    quantile["selection"]["delta_conf"]["mode"] = "quantile"
    assert steer_selected_latents(quantile) == 100 + 2 * 100


def test_by_stage_line_names_the_selection_stages(capsys):
    assert main(["cost", "--config", str(REPO / "config/config.yaml")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("GPU-hours by stage:"))
    assert "select_features" in line and "steer_selected" in line
    assert "when it lands" not in out
    assert "upper bound" in out
    assert "select GPU-s/SAE" in out


def test_judge_total_includes_steer_selected():
    from saesteer.cost import format_judge_estimate, judge_estimate, judge_totals
    from saesteer.judges import steering_judge_calls

    config = _paper_config()
    config["eval"]["autointerp"]["n_latents"] = 1000  # candidates beyond Concept100: steer_selected has new latents
    config["selection"]["candidates"] = "explained"
    rows = judge_estimate(config)
    assert [r.stage for r in rows] == ["autointerp", "steer_eval", "steer_selected"]
    selected = rows[2]
    assert selected.estimate.calls == steering_judge_calls(90, 110, 10, 14) > 0
    assert "steer_selected" in selected.task
    ((label, total),) = judge_totals(config).items()
    assert label == selected.factors
    assert total.dollars == approx(sum(r.estimate.dollars for r in rows))
    assert total.dollars > (rows[0].estimate + rows[1].estimate).dollars
    printed = "\n".join(format_judge_estimate(config))
    assert f"${total.dollars:,.2f}" in printed
    # no factor grid in the config: one steer_selected row per grid (AxBench's 14, the paper's 6)
    bare = copy.deepcopy(config)
    del bare["steering"]["factors"]
    stages = [r.stage for r in judge_estimate(bare)]
    assert stages.count("steer_selected") == 2 and len(judge_totals(bare)) == 2


def test_shape_cost_follows_grouping_and_cache_mode():
    from saesteer.config import load_config
    from saesteer.cost import estimate
    from saesteer.cost_shape import shape_estimate

    config = load_config(REPO / "config/config.yaml")
    per_sae = shape_estimate(config, "sae", "disk")
    per_arch = shape_estimate(config, "arch", "disk")
    per_model = shape_estimate(config, "model", "disk")
    # One read of the cache per training job: 30 jobs per model read 30x what one job reads.
    assert per_sae.stage("train_sae").jobs == 90 and per_model.stage("train_sae").jobs == 3
    assert per_sae.stage("train_sae").read_bytes == pytest.approx(30 * per_model.stage("train_sae").read_bytes)
    assert per_arch.stage("train_sae").read_bytes == pytest.approx(5 * per_model.stage("train_sae").read_bytes)
    # The SAE compute is the same; only reads and starts differ.
    assert per_sae.stage("train_sae").compute_hours == pytest.approx(per_model.stage("train_sae").compute_hours)
    disk = sum(r.cache_bytes for r in estimate(config))
    assert per_model.disk_bytes == disk and disk > 5e12
    # Each training job reads training.tokens rows plus the whole cache for its held-out evaluation.
    assert per_model.stage("train_sae").read_bytes == pytest.approx(2 * disk)  # training.tokens == cache.tokens
    stream_model, stream_sae = shape_estimate(config, "model", "stream"), shape_estimate(config, "sae", "stream")
    assert stream_model.disk_bytes == 0 and stream_model.stage("train_sae").read_bytes == 0
    assert stream_model.stage("cache_activations").jobs == 0
    llm = sum(r.cache_gpu_hours for r in estimate(config))
    sae_compute = per_model.stage("train_sae").compute_hours
    assert stream_model.stage("train_sae").compute_hours == pytest.approx(sae_compute + llm)
    assert stream_sae.stage("train_sae").compute_hours == pytest.approx(sae_compute + 30 * llm)
    # The paper grid: co-training at least halves the GPU-hours of getting trained SAEs.
    assert per_sae.training_hours > 2 * per_model.training_hours
    # With one evaluation job per SAE, the per-SAE LLM stages load the model once per SAE.
    one_per_sae = shape_estimate(config, "model", "disk", "sae")
    assert one_per_sae.stage("steer_eval").llm_loads == 90 and one_per_sae.stage("autointerp").llm_loads == 0


def test_cost_command_prints_the_shape_table(capsys):
    assert main(["cost", "--config", str(REPO / "config/config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Workflow shape: training.group_by model, cache.mode disk, eval_jobs.group_by arch" in out
    for mode, group_by in (("disk", "sae"), ("stream", "model")):
        assert any(line.split()[:2] == [mode, group_by] for line in out.splitlines()), (mode, group_by)


def test_eval_stages_load_the_llm_once_per_eval_group():
    from saesteer.cost_shape import shape_estimate

    config = _paper_config()
    assert config["eval_jobs"]["group_by"] == "arch"
    assert shape_estimate(config).eval_group_by == "arch"
    shapes = {g: shape_estimate(config, eval_group_by=g) for g in ("sae", "arch", "model")}
    # 3 models x 5 architectures x 6 sparsities: 90 SAEs, 15 (model, arch) groups, 3 models.
    for g, n in (("sae", 90), ("arch", 15), ("model", 3)):
        s = shapes[g]
        for stage in ("eval_interp", "steer_eval", "select_features"):
            assert s.stage(stage).jobs == s.stage(stage).llm_loads == n, (g, stage)
        assert s.stage("autointerp").jobs == n and s.stage("autointerp").llm_loads == 0
        # candidates: concepts, every selected latent reuses steer_eval's generations: no load
        assert s.stage("steer_selected").jobs == n and s.stage("steer_selected").llm_loads == 0
        assert all(x.judge_loads == 0 for x in s.stages)  # an LLM judge is an API
        assert s.stage("steer_eval").start_hours == pytest.approx(n * 10 / 3600)
        # training and prepare_eval_data do not follow the evaluation grouping
        assert s.stage("train_sae") == shapes["sae"].stage("train_sae")
        assert s.stage("prepare_eval_data").jobs == 3
    # Compute is the same under every grouping; loads, starts and the total fall from sae to model.
    compute = {g: sum(x.compute_hours for x in s.eval_stages) for g, s in shapes.items()}
    assert compute["sae"] > 0
    assert compute["arch"] == pytest.approx(compute["sae"]) and compute["model"] == pytest.approx(compute["sae"])
    load = {g: sum(x.load_hours for x in s.eval_stages) for g, s in shapes.items()}
    assert load["model"] > 0
    assert load["sae"] == pytest.approx(6 * load["arch"]) and load["sae"] == pytest.approx(30 * load["model"])
    assert shapes["sae"].total_hours > shapes["arch"].total_hours > shapes["model"].total_hours
    # steer_eval loads each model once per group in steering.model_dtype (bfloat16): 2 bytes a parameter
    params = sum(m.n_params for m in grid_from_config(config).models)
    assert shapes["model"].stage("steer_eval").load_hours == pytest.approx(params * 2 / 1e9 / 3600)
    with pytest.raises(ValueError, match="eval_jobs.group_by"):
        shape_estimate(config, eval_group_by="layer")


def test_steer_selected_loads_the_llm_when_it_can_steer_new_latents():
    from saesteer.cost import steer_selected_latents
    from saesteer.cost_shape import shape_estimate

    config = _paper_config()
    config["eval"]["autointerp"]["n_latents"] = 1000
    config["selection"]["candidates"] = "explained"
    assert steer_selected_latents(config) > 0
    s = shape_estimate(config, eval_group_by="model")
    assert s.stage("steer_selected").llm_loads == s.stage("steer_selected").jobs == 3
    assert s.stage("steer_selected").load_hours > 0


def test_offline_judge_reference_and_steering_vectors_are_counted_per_group():
    from saesteer.cost_shape import shape_estimate

    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    assert config["judge"]["kind"] == "offline" and config["steering_vectors"]["enabled"]
    assert config["judge"]["offline"]["reference_model"] == "results/models/smollm2-135m/model.json"
    config["steering"]["model_dtype"] = "float32"  # the reuse case first (the demo steers in bfloat16: below)
    names = [m["name"] for m in config["models"]]
    assert len(names) == 2 and "smollm2-135m" in names
    for g, per_model in (("sae", 15), ("arch", 5), ("model", 1)):
        s = shape_estimate(config, eval_group_by=g)
        sv = s.stage("steering_vectors")
        assert sv.jobs == sv.llm_loads == 2 * per_model
        # The SmolLM2 groups rate with the model they steer; the other model's groups load the reference.
        assert s.stage("steer_eval").judge_loads == sv.judge_loads == per_model
        assert s.stage("autointerp").judge_loads == s.stage("select_features").judge_loads == 0
    # In bfloat16 the steered SmolLM2 is not the float32 reference: every group loads it.
    bf16 = copy.deepcopy(config)
    bf16["steering"]["model_dtype"] = "bfloat16"
    assert shape_estimate(bf16, eval_group_by="model").stage("steer_eval").judge_loads == 2
    # Disabled steering vectors: no stage, no jobs.
    off = copy.deepcopy(config)
    off["steering_vectors"]["enabled"] = False
    assert "steering_vectors" not in [x.stage for x in shape_estimate(off).stages]
    bad = copy.deepcopy(config)
    bad["judge"]["offline"]["reference_model"] = "elsewhere/model.json"
    with pytest.raises(ValueError, match="judge.offline.reference_model"):
        shape_estimate(bad)


def test_cost_command_prints_the_eval_grouping_table(capsys):
    assert main(["cost", "--config", str(REPO / "config/config.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("Every evaluation grouping"))
    rows = {x.split()[0]: x.split() for x in lines[start + 2 : start + 5]}
    assert [rows[g][1] for g in ("sae", "arch", "model")] == ["450", "75", "15"]  # 5 stages x 90 / 15 / 3
    assert [rows[g][2] for g in ("sae", "arch", "model")] == ["270", "45", "9"]  # 3 LLM stages
    assert rows["arch"][-1] == "*"


def test_imported_saes_join_the_eval_groups_and_need_no_training_job():
    from saesteer.cost_shape import eval_groups, shape_estimate

    config = load_config(REPO / "config/config.yaml", [REPO / "config/pretrained.yaml"])
    grid = grid_from_config(config)
    assert not grid.architectures and grid.pretrained
    n = sum(grid.n_cells(m) for m in grid.model_names)
    assert sum(eval_groups(config, "sae").values()) == n
    assert sum(eval_groups(config, "model").values()) == len(grid.models)
    assert sum(eval_groups(config, "arch").values()) == len({(p.model, p.arch) for p in grid.pretrained})
    for g in ("sae", "arch", "model"):
        s = shape_estimate(config, g, "disk")
        assert s.stage("train_sae").jobs == 0 and s.stage("train_sae").read_bytes == 0


def test_seed_replicates_grow_training_and_evaluation_but_not_the_cache():
    from saesteer.cost_shape import eval_groups, jobs_per_model, shape_estimate

    one = load_config(REPO / "config/config.yaml")
    two = copy.deepcopy(one)
    two["training"]["seeds"] = [0, 1]
    rows1, rows2 = {r.model: r for r in estimate(one)}, {r.model: r for r in estimate(two)}
    for model, r in rows1.items():
        assert rows2[model].n_saes == 2 * r.n_saes == 60
        assert rows2[model].train_gpu_hours == approx(2 * r.train_gpu_hours)  # one more co-trained member per cell
        assert (rows2[model].cache_bytes, rows2[model].cache_gpu_hours) == (r.cache_bytes, r.cache_gpu_hours)
    for mode in ("disk", "stream"):
        s1, s2 = shape_estimate(one, "model", mode), shape_estimate(two, "model", mode)
        assert s2.stage("cache_activations").total_hours == s1.stage("cache_activations").total_hours
        # one job per model reads the cache (or runs the LLM) once, whatever its members
        assert s2.stage("train_sae").read_bytes == s1.stage("train_sae").read_bytes
        assert s2.stage("train_sae").jobs == s1.stage("train_sae").jobs
        assert s2.stage("train_sae").compute_hours > s1.stage("train_sae").compute_hours
        for stage in ("eval_interp", "steer_eval", "select_features"):
            assert s2.stage(stage).compute_hours == approx(2 * s1.stage(stage).compute_hours)
    assert jobs_per_model(two, "sae") == 2 * jobs_per_model(one, "sae")  # one job per replicate
    assert eval_groups(two, "sae") == {m: 2 * n for m, n in eval_groups(one, "sae").items()}
    assert eval_groups(two, "model") == eval_groups(one, "model")
    from saesteer.cost_shape import format_estimate

    assert "2 seed replicates" in format_estimate(two) and "seed replicates" not in format_estimate(one)

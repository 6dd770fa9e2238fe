import copy
from pathlib import Path

from saesteer.cli import main
from saesteer.config import load_config
from saesteer.cost import estimate, eval_flops
from saesteer.config import grid_from_config

REPO = Path(__file__).resolve().parents[1]


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
    for word in ("gemma-2-2b", "qwen2.5-3b", "gemma-2-9b", "cache_activations", "train_sae", "prepare_eval_data", "autointerp: 90 SAEs",
                 "steer_eval", "steer GPU-h/SAE", "steering: 90 SAEs x 100 concepts x 10 instr. x 14 factors", "$"):
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
    calls = {r.factors: r.estimate.calls for r in judge_estimate(six)[1:]}
    assert calls == {"6 factors (steering.factors)": 3 * 90 * 100 * (10 * 6 + 2 * 5)}


def test_cost_command_refuses_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsities: [0]\n")
    assert main(["cost", "--config", str(REPO / "config/config.yaml"), "--configfile", str(bad)]) == 2
    assert "sparsities[0]" in capsys.readouterr().err

"""Judge sensitivity (issue 24 item 5): tau-b between two judges' rankings of the SAEs they
both rated, per measure, on planted per-SAE tables whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from saesteer.aggregate.judge_agreement import MEASURES, JudgeAgreementError, agreement_markdown, judge_agreement


def planted(values: dict[str, list[float]], judge: str, saes: list[str] | None = None) -> pd.DataFrame:
    """A per-SAE table (judge_table's columns): SAE i is model m, arch relu, sparsity saes[i]."""
    n = len(next(iter(values.values())))
    saes = saes or [f"l0-{i}" for i in range(n)]
    frame = pd.DataFrame({"model": "m", "arch": "relu", "sparsity": saes})
    for measure, column in MEASURES.items():
        frame[column] = values.get(measure, [math.nan] * n)
        frame[f"{measure}_judge"] = judge
    return frame


FAST = {"n_bootstrap": 200, "n_permutations": 200}
X = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4]


def by_measure(table: pd.DataFrame) -> dict[str, dict]:
    return {r["measure"]: r for r in table.to_dict("records")}


def test_identical_rankings_agree_perfectly():
    a = planted({m: X for m in MEASURES}, "offline-proxy/x/none")
    b = planted({m: [10 * v + 3 for v in X] for m in MEASURES}, "llm/gpt-4o-mini/project@1")  # other scale, same order
    rows = by_measure(judge_agreement(a, b, **FAST))
    for measure in MEASURES:
        r = rows[measure]
        assert r["tau_b"] == pytest.approx(1.0) and r["n"] == len(X), measure
        assert (r["judge_a"], r["judge_b"]) == ("offline-proxy/x/none", "llm/gpt-4o-mini/project@1")
        assert r["p_value"] < 0.05


def test_reversed_rankings_disagree_perfectly():
    a = planted({m: X for m in MEASURES}, "A")
    b = planted({m: [-v for v in X] for m in MEASURES}, "B")
    rows = by_measure(judge_agreement(a, b, **FAST))
    assert {m: rows[m]["tau_b"] for m in MEASURES} == pytest.approx({m: -1.0 for m in MEASURES})


def test_a_known_tau_on_the_shared_saes_only():
    """B rated 6 of A's 8 SAEs (plus one A lacks): tau-b on the 6 shared, as scipy computes it."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(3)
    y = list(rng.permutation(8).astype(float))
    a = planted({"steering": X}, "A")
    b = planted({"steering": y[:6] + [5.0]}, "B", saes=[f"l0-{i}" for i in range(6)] + ["l0-99"])
    r = by_measure(judge_agreement(a, b, **FAST))["steering"]
    assert (r["n_a"], r["n_b"], r["n"]) == (8, 7, 6)
    assert r["tau_b"] == pytest.approx(kendalltau(X[:6], y[:6]).statistic)
    assert r["ci_low"] <= r["tau_b"] <= r["ci_high"]
    auto = by_measure(judge_agreement(a, b, **FAST))["autointerp"]  # no autointerp values: undefined, with the reason
    assert auto["n"] == 0 and math.isnan(auto["tau_b"]) and "tau-b needs at least 2" in auto["reason"]


def test_disjoint_saes_are_refused_with_a_clear_message():
    a = planted({"steering": [0.1, 0.2]}, "A", saes=["l0-4", "l0-8"])
    b = planted({"steering": [0.1, 0.2]}, "B", saes=["l0-16", "l0-32"])
    with pytest.raises(JudgeAgreementError, match=r"share no SAE.*A has 2 \(m/relu/l0-4, m/relu/l0-8\), B has 2 \(m/relu/l0-16"):
        judge_agreement(a, b, **FAST)


def test_one_side_mixing_judges_is_refused():
    a = planted({"steering": X}, "A")
    b = planted({"steering": X}, "B")
    b.loc[0, "steering_judge"] = "C"
    with pytest.raises(JudgeAgreementError, match=r"B: the steering results mix judges \['B', 'C'\]"):
        judge_agreement(a, b, **FAST)


def test_the_markdown_reports_n_and_the_interval():
    a = planted({m: X for m in MEASURES}, "A")
    b = planted({m: X for m in MEASURES}, "B")
    text = "\n".join(agreement_markdown(judge_agreement(a, b, **FAST), "a/results", "b/results"))
    assert "## Judge agreement" in text and "| steering | A | B | 8 (8, 8) | +1.000 |" in text


def test_the_aggregation_reports_the_agreement_when_configured(tmp_path):
    """aggregate.compare_judges: the summary gets a "Judge agreement" section and records,
    from real per-SAE files; B is the same grid re-rated by an LLM judge whose steering scores
    run opposite to A's (tau-b -1) and whose autointerp scores keep A's order (tau-b 1). A
    config without it writes no such key (the default summary stays as it was)."""
    import json

    from saesteer.aggregate.job import run_aggregate
    from tests.synthetic_results import fill_results, grid_config

    config = grid_config(min_saes=3)
    a, b = tmp_path / "a" / "results", tmp_path / "b" / "results"
    fill_results(config, a)
    fill_results(config, b)
    for path in b.rglob("steering/score.json"):
        obj = json.loads(path.read_text())
        obj.update(judge="llm", judge_model="gpt-4o-mini", score=1 - obj["score"])
        path.write_text(json.dumps(obj))
    for path in b.rglob("interp.json"):
        obj = json.loads(path.read_text())
        obj["autointerp"].update(judge="llm", judge_model="gpt-4o-mini", score=obj["autointerp"]["score"] / 2)
        path.write_text(json.dumps(obj))
    run_aggregate(
        {**config, "aggregate": {**config["aggregate"], "compare_judges": [str(b)]}}, results_dir=a, out_dir=tmp_path / "s1"
    )
    record = json.loads((tmp_path / "s1" / "summary.json").read_text())
    rows = {r["measure"]: r for r in record["judge_agreement"]}
    assert rows["steering"]["tau_b"] == pytest.approx(-1.0) and rows["steering"]["n"] == 18
    assert rows["autointerp"]["tau_b"] == pytest.approx(1.0) and rows["autointerp"]["judge_b"].startswith("llm/gpt-4o-mini")
    assert rows["selection"]["tau_b"] == pytest.approx(1.0)  # B's selection files are A's: same judge, same values
    assert record["config"]["compare_judges"] == [str(b)]
    assert "## Judge agreement" in (tmp_path / "s1" / "summary.md").read_text()
    assert (tmp_path / "s1" / "judge_agreement.csv").is_file()
    run_aggregate(config, results_dir=a, out_dir=tmp_path / "s2")
    plain = json.loads((tmp_path / "s2" / "summary.json").read_text())
    assert "judge_agreement" not in plain and "compare_judges" not in plain["config"]
    assert "Judge agreement" not in (tmp_path / "s2" / "summary.md").read_text()

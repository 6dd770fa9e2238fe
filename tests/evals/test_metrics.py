"""Interpretability metrics are descriptors (saesteer.evals.metrics): a toy metric registered
from this file flows through one SAE's interp report and the aggregation's tables, as
docs/extending.md ("Adding an interpretability metric") says; the report schema follows the
registry."""

from __future__ import annotations

import dataclasses
import json
import re

import pyarrow.parquet as pq
import pytest
from scipy.stats import kendalltau

from saesteer.aggregate.config import AggregateConfig, AggregateConfigError, interp_metrics
from saesteer.aggregate.job import run_aggregate
from saesteer.evals.config import EvalConfig
from saesteer.evals.eval_data import load_eval_data
from saesteer.evals.interp import ReportError, evaluate_sae, load_model_only, prepare_metrics, validate_report
from saesteer.evals.metrics import (
    BUILTIN_METRICS,
    IN_SCHEMA_FILE,
    REPORT_SCHEMA_PATH,
    Headline,
    MetricDescriptor,
    MetricError,
    evaluated,
    headlines,
    metrics,
    register,
    registered,
    report_schema,
)
from saesteer.tables import grid_table
from tests.evals.test_interp import EVAL_BLOCK, _save_sae, prepared  # noqa: F401 (the fixture)
from tests.helpers import REPO
from tests.synthetic_results import fill_results, grid_config

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- the toy metric: the recipe of docs/extending.md, run as written there ---------------------

SECTION = "## Adding an interpretability metric"


def _recipe() -> dict:
    """The python block of docs/extending.md's metric section, executed."""
    text = (REPO / "docs" / "extending.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code) == 1, "docs/extending.md: the metric section has one python block"
    namespace: dict = {}
    exec(compile(code[0], "docs/extending.md", "exec"), namespace)
    return namespace


RECIPE = _recipe()
PREPARE_CALLS: list[int] = []


def _counted(prepare):
    def wrapper(model, data, cfg):
        PREPARE_CALLS.append(1)
        return prepare(model, data, cfg)

    return wrapper


TOY = dataclasses.replace(RECIPE["TOKEN_ALIGNMENT"], prepare=_counted(RECIPE["TOKEN_ALIGNMENT"].prepare))
_alignment = RECIPE["_alignment"]


@pytest.fixture
def toy():
    PREPARE_CALLS.clear()
    with registered(TOY) as metric:
        yield metric


# ---- one SAE's report -------------------------------------------------------------------------


def test_a_registered_metric_is_evaluated_into_the_report_and_validated(prepared, toy, tmp_path):  # noqa: F811
    model_json, eval_dir = prepared
    cfg = EvalConfig.from_config(EVAL_BLOCK)
    data = load_eval_data(eval_dir)
    llm = load_model_only(model_json, data.manifest["model_dtype"], "cpu")
    per_model = prepare_metrics(llm, data, cfg)  # as the eval_interp job: once for all its SAEs
    reports = []
    for i in range(2):
        sae_dir = _save_sae(tmp_path / f"sae{i}")
        out = tmp_path / f"interp{i}.json"
        evaluate_sae(
            sae_dir, eval_dir, model_json, EVAL_BLOCK, out, model="tiny", arch="topk", target_l0=4, llm=llm, prepared=per_model
        )
        reports.append(json.loads(out.read_text()))
    assert len(PREPARE_CALLS) == 1

    report = reports[0]
    assert list(report)[:10] == [
        "report_version",
        "model",
        "arch",
        "target_l0",
        "hook_name",
        "sae",
        "core",
        "sparse_probing",
        "absorption",
        "token_alignment",
    ]
    assert set(report["timings"]) == {
        "core_seconds",
        "sparse_probing_seconds",
        "absorption_seconds",
        "token_alignment_seconds",
        "load_seconds",
        "total_seconds",
    }
    # The number is the toy's definition, recomputed here from the saved files.
    from saesteer.evals.interp import load_sae

    sae, _ = load_sae(tmp_path / "sae0")
    emb = llm.get_input_embeddings().weight.detach().float()
    emb = emb / emb.norm(dim=1, keepdim=True)
    dec = sae.W_dec.detach().float() / sae.W_dec.detach().float().norm(dim=1, keepdim=True)
    expected = float((dec @ emb.T).abs().max(dim=1).values.mean())
    assert report["token_alignment"] == {"mean_max_cos": pytest.approx(expected, abs=1e-6), "n_latents": 64}

    # The report schema now requires the block and checks it against the toy's schema.
    broken = json.loads(json.dumps(report))
    broken["token_alignment"]["mean_max_cos"] = 1.5
    with pytest.raises(ReportError, match="token_alignment"):
        validate_report(broken)
    del broken["token_alignment"]
    with pytest.raises(ReportError, match="token_alignment"):
        validate_report(broken)


def test_without_the_toy_the_report_is_the_builtin_one(prepared, tmp_path):  # noqa: F811
    model_json, eval_dir = prepared
    out = tmp_path / "interp.json"
    report = evaluate_sae(
        _save_sae(tmp_path / "sae"), eval_dir, model_json, EVAL_BLOCK, out, model="tiny", arch="topk", target_l0=4
    )
    assert "token_alignment" not in report and "token_alignment_seconds" not in report["timings"]


# ---- the aggregation and the tables -----------------------------------------------------------


def test_a_registered_metric_is_ranked_against_steering_in_the_aggregation(toy, tmp_path):
    results = tmp_path / "results"
    config = grid_config(min_saes=7, metrics=["autointerp", "token_alignment"])
    truth = fill_results(config, results)
    cells = sorted(truth)
    # A planted lower-is-better value, not monotone in autointerp or steering.
    planted = {c: ((i * 7) % 11) / 11 for i, c in enumerate(cells)}
    for c in cells:
        path = results / c / "interp.json"
        obj = json.loads(path.read_text())
        obj["token_alignment"] = {"mean_max_cos": planted[c], "n_latents": 256}
        obj["timings"] = {**obj.get("timings", {}), "token_alignment_seconds": 0.1}
        path.write_text(json.dumps(obj))
    out = tmp_path / "summary"
    run_aggregate(config, results_dir=results, out_dir=out)

    sae = pq.read_table(out / "sae_table.parquet").to_pandas().set_index(["model", "arch", "target_l0"])
    for c in cells:
        key = (truth[c]["model"], truth[c]["arch"], truth[c]["target_l0"])
        assert sae.loc[key, "token_alignment_raw"] == pytest.approx(planted[c])
        assert sae.loc[key, "token_alignment"] == pytest.approx(1.0 - planted[c])  # oriented: higher = better
    assert sae["complete"].all()

    rank = pq.read_table(out / "rank_agreement.parquet").to_pandas()
    row = rank[(rank.metric == "token_alignment") & (rank.target == "steering") & (rank.scope == "all")].iloc[0]
    expected = kendalltau([1.0 - planted[c] for c in cells], [truth[c]["steering"] for c in cells], variant="b").statistic
    assert row["n"] == 18 and row["tau_b"] == pytest.approx(expected, abs=1e-12)
    assert abs(expected) < 0.9  # planted, not a copy of steering's order
    summary = (out / "summary.md").read_text()
    assert "1 - decoder-token alignment" in summary

    table = grid_table(config, results)  # `saesteer table`: the raw number, by default
    paths = [f"{m}/{a}/{s}" for m, a, s in zip(table["model"], table["arch"], table["sparsity"])]
    assert sorted(paths) == cells
    assert list(table["token_alignment_raw"]) == pytest.approx([planted[p] for p in paths])


def test_aggregate_metrics_are_checked_against_the_registry(toy):
    assert "token_alignment" in interp_metrics()
    AggregateConfig.from_config({"metrics": ["token_alignment"]})
    with pytest.raises(AggregateConfigError, match="aggregate.metrics"):
        AggregateConfig.from_config({"metrics": ["no_such_metric"]})


# ---- the registry and the schema file -----------------------------------------------------------


def test_builtin_metrics_and_the_schema_file_agree():
    """interp.schema.json spells out exactly the built-in metrics' blocks and timings; every
    other top-level key is the report's frame."""
    schema = json.loads(REPORT_SCHEMA_PATH.read_text())
    frame = {"report_version", "model", "arch", "target_l0", "hook_name", "sae", "timings", "eval_data"}
    assert [m.name for m in metrics()] == [m.name for m in BUILTIN_METRICS]
    assert set(schema["properties"]) - frame == set(IN_SCHEMA_FILE)
    timings = set(schema["properties"]["timings"]["required"]) - {"load_seconds", "total_seconds"}
    assert timings == {m.timing for m in evaluated()}
    assert {m.name for m in evaluated()} <= set(schema["required"])
    assert all(m.schema is not None for m in metrics() if m.name not in IN_SCHEMA_FILE)
    assert report_schema() == schema  # nothing added without an extra metric
    assert [h.column for h in headlines()] == list(interp_metrics())
    assert interp_metrics() == ("autointerp", "autointerp_alt", "ce_loss_score", "explained_variance", "probing", "absorption")


def test_a_malformed_or_duplicate_metric_is_refused_by_name(toy):
    with pytest.raises(MetricError, match="token_alignment.*already registered"):
        register(TOY)
    with pytest.raises(MetricError, match="'probing'"):
        register(
            MetricDescriptor("other", "other", (Headline("probing", "x", lambda b, _: 0.0),), schema={}, evaluate=_alignment)
        )
    with pytest.raises(MetricError, match="exactly one of evaluate and from_stage"):
        register(MetricDescriptor("nothing", "nothing", (Headline("nothing", "x", lambda b, _: 0.0),), schema={}))
    assert "other" not in [m.name for m in metrics()] and "nothing" not in [m.name for m in metrics()]

"""Judge backends: a backend registered from outside the package (the recipe of
docs/extending.md, "Adding a judge backend") is used by the public entry points, steering can
use another judge than autointerp (``steering.judge``), and no module outside
``saesteer.judges`` switches on a judge kind."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saesteer.judges import (
    AUTOINTERP,
    STEERING,
    Detection,
    Explanation,
    JudgeBackend,
    JudgeConfig,
    JudgeConfigError,
    Rating,
    SteeringItem,
    backend_kinds,
    check_judge_config,
    get_backend,
    judge_block,
    judge_config,
    judge_settings,
    make_judge,
    register,
    unregister,
)
from tests.helpers import CharTokenizer, explained_row, make_tiny_llama, random_sae, sae_files, save_sae, write_model_json

REPO = Path(__file__).resolve().parents[2]


# ---- the recipe: a toy backend, written as docs/extending.md says -------------------------


@dataclass(frozen=True)
class ToyOptions:
    """The ``judge.toy`` block: every field has a default."""

    concept: float = 1.5
    """The concept rating the toy judge gives every generation."""


class ToyJudge:
    """Rates every generation ``concept`` / 2 / 2; explains every latent "toy"."""

    kind = "toy-judge"
    prompts_label = "none"

    def __init__(self, options: ToyOptions):
        self.cfg = options
        self.model_label = f"toy-{options.concept}"
        self.calls = 0

    def rate(self, items: Sequence[SteeringItem]) -> list[Rating]:
        self.calls += len(items)
        return [Rating(self.cfg.concept, 2.0, 2.0, self.kind, self.model_label) for _ in items]

    def explain_many(self, top_contexts: Sequence[Any]) -> list[Explanation]:
        return [Explanation("toy", True, self.kind, self.model_label) for _ in top_contexts]

    def detect_many(self, requests: Sequence[tuple[str, Sequence[Any]]]) -> list[Detection]:
        return [Detection((), len(c), True, self.kind, self.model_label) for _, c in requests]

    def explain(self, top_contexts: Sequence[Any]) -> Explanation:
        return self.explain_many([top_contexts])[0]

    def detect(self, explanation: str, contexts: Sequence[Any]) -> Detection:
        return self.detect_many([(explanation, contexts)])[0]

    def stats(self) -> dict[str, Any]:
        return {"judge": self.kind, "judge_model": self.model_label, "judge_prompts": self.prompts_label, "calls": self.calls}

    def close(self) -> None:
        pass


class ToyBackend(JudgeBackend):
    kind = "toy"
    label = "toy-judge"
    options_cls = ToyOptions
    uses_prompts = False
    explanation_kind = "toy"

    def check(self, cfg: JudgeConfig, environ: Mapping[str, str]) -> None:
        if not 0 <= cfg.toy.concept <= 2:
            raise JudgeConfigError(f"{cfg.where}.toy.concept: {cfg.toy.concept} is outside [0, 2]")

    def build(self, cfg: JudgeConfig, **_: Any) -> ToyJudge:
        return ToyJudge(cfg.toy)

    def settings(self, judge: Any) -> dict[str, Any]:
        return {"concept": judge.cfg.concept}


@pytest.fixture
def toy_backend():
    backend = register(ToyBackend())
    yield backend
    unregister("toy")


# ---- tests ---------------------------------------------------------------------------------


def test_the_builtin_backends_are_the_schema_enum_and_their_blocks():
    from saesteer.config import load_schema

    judge = load_schema()["properties"]["judge"]
    assert backend_kinds() == judge["properties"]["kind"]["enum"] == ["llm", "offline"]
    assert set(judge["properties"]) == {"kind", "prompts", "cache", *backend_kinds()}
    for kind in backend_kinds():
        assert getattr(JudgeConfig(), kind) == get_backend(kind).options_cls()


def test_a_toy_backend_registered_in_a_test_rates_a_steering_run(tmp_path, toy_backend):
    """The steering job of one SAE, given only a config naming the toy backend, builds the toy
    judge through the registry (no judge passed in) and records what it rated."""
    from saesteer.evals.autointerp import write_table
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.context import SteeringContext, SteeringModels
    from saesteer.steering.evaluate import run_steer_eval
    from saesteer.steering.instructions import write_instruction_pool

    model, tok = make_tiny_llama(), CharTokenizer()
    sae_dir = save_sae(random_sae("relu", 32, 16, target_l0=4), tmp_path / "sae", 2)
    write_table([explained_row(3, 0, "the sea", 4.0)], tmp_path / "autointerp.parquet")
    steering = {"n_concepts": 1, "n_instructions": 2, "n_selection": 1, "factors": [1.0], "max_new_tokens": 4, "batch_size": 8}
    write_instruction_pool(SteeringConfig.from_config(steering).instructions, tmp_path / "instructions.json")
    write_model_json(tmp_path, layer=2)
    out = tmp_path / "steering"
    ctx = SteeringContext(
        model_json=tmp_path / "model.json",
        instructions=tmp_path / "instructions.json",
        steering=SteeringConfig.from_config(steering),
        judge={"kind": "toy", "toy": {"concept": 1.5}},
        prompt_format="base",
        models=SteeringModels(model, tok),  # no judge: the context builds it from its block
    )
    outputs = {"generations": out / "generations.parquet", "concepts": out / "concepts.json", "score": out / "score.json"}
    with ctx:
        report = run_steer_eval(ctx, sae_files(sae_dir, {"autointerp": tmp_path / "autointerp.parquet"}, outputs))
    on_disk = json.loads((out / "score.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert (on_disk["judge"], on_disk["judge_model"], on_disk["judge_settings"]) == ("toy-judge", "toy-1.5", {"concept": 1.5})
    # AxBench's harmonic mean of (1.5, 2, 2): 3 / (1/1.5 + 1/2 + 1/2) = 1.8
    assert on_disk["score"] == pytest.approx(1.8)


def test_the_toy_backend_is_checked_and_built_like_the_builtin_ones(toy_backend):
    with pytest.raises(JudgeConfigError, match=r"judge.toy.concept"):
        check_judge_config({"kind": "toy", "toy": {"concept": 3}})
    with pytest.raises(JudgeConfigError, match=r"judge.toy: unknown keys \['nope'\]"):
        JudgeConfig.from_dict({"kind": "toy", "toy": {"nope": 1}})
    judge = make_judge({"kind": "toy"}, purpose=AUTOINTERP)
    assert judge.rate([SteeringItem("c", "i", "g")])[0].concept == 1.5
    assert judge_settings(judge) == {"concept": 1.5}
    from saesteer.judges.config import explanation_kind, judge_job_inputs

    assert explanation_kind(judge) == "toy" and judge_job_inputs({"kind": "toy"}, ["m"]) == {}


def test_an_unknown_kind_names_the_registered_ones():
    with pytest.raises(JudgeConfigError, match=r"judge.kind: 'toy' is not one of \['llm', 'offline'\]"):
        check_judge_config({"kind": "toy"})


def test_steering_judge_defaults_to_judge_and_can_differ(toy_backend):
    config: dict[str, Any] = {"judge": {"kind": "offline"}, "steering": {"n_concepts": 3}}
    assert judge_block(config, STEERING) is config["judge"] is judge_block(config, AUTOINTERP)
    assert judge_config(config, STEERING) == judge_config(config, AUTOINTERP)
    config["steering"]["judge"] = None
    assert judge_block(config, STEERING) is config["judge"]
    config["steering"]["judge"] = {"kind": "toy", "toy": {"concept": 0.5}}
    assert judge_config(config, AUTOINTERP).label == "offline-proxy"
    assert judge_config(config, STEERING).label == "toy-judge" and judge_config(config, STEERING).toy.concept == 0.5
    with pytest.raises(JudgeConfigError, match=r"steering.judge: unknown keys \['model'\]"):
        judge_config({"judge": {}, "steering": {"judge": {"model": "x"}}}, STEERING)
    from saesteer.steering.config import SteeringConfig

    assert SteeringConfig.from_config(config["steering"]) == SteeringConfig.from_config({"n_concepts": 3})


def test_the_workflow_checks_both_judges_and_defers_each_missing_key():
    from saesteer.judges.config import check_workflow_judges, judge_params

    config = {"judge": {"kind": "offline"}, "steering": {"judge": {"kind": "llm", "llm": {"api_key_env": "TOY_KEY"}}}}
    judges, missing = check_workflow_judges(config, environ={}, keys_later=True)
    assert (judges[AUTOINTERP].kind, judges[STEERING].kind, missing) == ("offline", "llm", ["TOY_KEY"])
    with pytest.raises(JudgeConfigError, match="TOY_KEY is not set"):
        check_workflow_judges(config, environ={})
    assert judge_params(config) == {"judge": config["judge"], "steering": {"judge": config["steering"]["judge"]}}
    assert judge_params({"judge": {"kind": "offline"}, "steering": {}}) == {"judge": {"kind": "offline"}}


def test_a_bad_value_in_steering_judge_is_named_there_not_in_judge():
    """Backend errors name the block the value came from: ``steering.judge.llm.*`` for the
    steering judge's own block, ``judge.llm.*`` for the shared one."""
    from saesteer.judges.config import check_workflow_judges

    good = {"kind": "offline"}
    cases = [
        ({"kind": "llm", "llm": {"model": ""}}, {}, r"^steering\.judge\.llm\.model is empty"),
        ({"kind": "llm", "llm": {"temperature_rating": 3}}, {}, r"^steering\.judge\.llm\.temperature_rating: 3"),
        ({"kind": "llm", "llm": {"base_url": "ftp://x"}}, {}, r"^steering\.judge\.llm\.base_url"),
        (
            {"kind": "llm", "llm": {"api_key_env": "TOY_KEY"}},
            {},
            r"^steering\.judge\.llm: the environment variable TOY_KEY .* set steering\.judge\.llm\.api_key_env",
        ),
        ({"kind": "sparsemax"}, {}, r"^steering\.judge\.kind: 'sparsemax' is not one of"),
        (
            {"kind": "offline", "offline": {"concept_thresholds": [0.9, 0.1]}},
            {},
            r"^steering\.judge\.offline\.concept_thresholds",
        ),
    ]
    for block, environ, message in cases:
        with pytest.raises(JudgeConfigError, match=message):
            check_workflow_judges({"judge": good, "steering": {"judge": block}}, environ=environ)
        # The same value in the shared block is named there.
        with pytest.raises(JudgeConfigError, match=message.replace("steering\\.judge", "judge")):
            check_workflow_judges({"judge": block, "steering": {}}, environ=environ)
    bad_ref = {"kind": "offline", "offline": {"reference_model": "results/models/other/model.json"}}
    steering = check_workflow_judges({"judge": good, "steering": {"judge": bad_ref}}, environ={})[0][STEERING]
    with pytest.raises(JudgeConfigError, match=r"^steering\.judge\.offline\.reference_model: 'results/models/other"):
        steering.backend.job_inputs(steering, ["tiny"])


# ---- no judge-kind switch outside saesteer.judges -----------------------------------------

_JUDGE_VALUES = r"""["'](?:offline-proxy|offline|llm)["']"""
SWITCH_PATTERNS = [
    re.compile(r"\bkind\b\s*(?:==|!=)\s*" + _JUDGE_VALUES),  # cfg.kind == "offline"
    re.compile(_JUDGE_VALUES + r"\s*(?:==|!=|\bin\b)"),  # "offline-proxy" in used
    re.compile(r"(?:==|!=)\s*(?:" + _JUDGE_VALUES + r"|\b(?:OFFLINE|LLM)_KIND\b)"),  # x == OFFLINE_KIND
    re.compile(r"""\[\s*["']judge["']\s*\]\s*\[\s*["']kind["']\s*\]"""),  # config["judge"]["kind"] read outside
    re.compile(r"\bJUDGE_KINDS\b"),  # the kind -> label table that the registry replaced
]


def judge_kind_switches(root: Path) -> list[str]:
    """``path:line: text`` of every judge-kind comparison under src/ (outside
    src/saesteer/judges/) and workflow/, and in the Snakefile."""
    files = [p for p in (root / "src").rglob("*.py") if "judges" not in p.relative_to(root / "src").parts]
    files += [p for p in (root / "workflow").rglob("*") if p.suffix in (".py", ".smk")] + [root / "Snakefile"]
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in SWITCH_PATTERNS):
                hits.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return hits


def test_no_judge_kind_switch_outside_the_judges_package():
    """Each judge-specific decision (what to load, what to pay, what to warn about) is asked of
    the backend (saesteer.judges.registry.JudgeBackend), never decided by comparing kinds."""
    assert judge_kind_switches(REPO) == []


def test_the_switch_finder_finds_the_switches_it_forbids(tmp_path):
    (tmp_path / "src" / "saesteer" / "judges").mkdir(parents=True)
    (tmp_path / "workflow" / "rules").mkdir(parents=True)
    (tmp_path / "Snakefile").write_text('KEY = config["judge"]["kind"] == "llm"\n')
    (tmp_path / "src" / "saesteer" / "judges" / "ok.py").write_text('if cfg.kind == "offline": pass\n')
    (tmp_path / "src" / "saesteer" / "a.py").write_text(
        'if cfg.kind == "offline": pass\nx = "offline-proxy" in used\ny = judge.kind == OFFLINE_KIND\nz = task.kind == "hf_dataset"\n'
    )
    (tmp_path / "workflow" / "rules" / "b.smk").write_text('E = cfg.kind != "llm"\n')
    hits = judge_kind_switches(tmp_path)
    assert [h.split(":")[0] + ":" + h.split(":")[1] for h in hits] == [
        "src/saesteer/a.py:1",
        "src/saesteer/a.py:2",
        "src/saesteer/a.py:3",
        "workflow/rules/b.smk:1",
        "Snakefile:1",
    ]


def test_the_recipe_in_docs_extending_runs_as_written():
    """docs/extending.md, "Adding a judge backend": its code block, executed as written,
    registers a backend that the public entry points build and rate with."""
    text = (REPO / "docs" / "extending.md").read_text()
    section = text.split("## Adding a judge backend", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the section has no python block"
    try:
        exec(compile(code.group(1), "docs/extending.md", "exec"), {})
        judge = make_judge({"kind": "toy", "toy": {"concept": 1.0}})
        assert judge.rate([SteeringItem("c", "i", "g")])[0] == Rating(1.0, 2.0, 2.0, "toy-judge", "toy-1.0")
        assert judge_config({"judge": {"kind": "toy"}}, STEERING).label == "toy-judge"
        with pytest.raises(JudgeConfigError, match="judge.toy.concept"):
            check_judge_config({"kind": "toy", "toy": {"concept": 5}})
    finally:
        unregister("toy")
    assert "toy" not in backend_kinds()


def _judges_imports() -> dict[str, set[str]]:
    """module -> modules of saesteer.judges it imports (any import: top level, in a function,
    under TYPE_CHECKING), read from the source."""
    import ast

    pkg = REPO / "src" / "saesteer" / "judges"
    modules = {p.stem for p in pkg.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in pkg.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    names = [node.module] if node.module else [a.name for a in node.names]
                elif (node.module or "").startswith("saesteer.judges"):
                    rest = (node.module or "").split(".")[2:]
                    names = rest[:1] if rest else [a.name for a in node.names]
                else:
                    continue
                edges |= {n.split(".")[0] for n in names if n and n.split(".")[0] in modules}
        graph[path.stem] = edges - {path.stem}
    return graph


def test_the_judges_package_has_no_import_circle():
    """Not base <-> prompts (issue 26 item 5) nor any other, counting every import."""
    graph = _judges_imports()
    assert "prompts" not in graph["base"] and "base" in graph["prompts"]
    circles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(path + [start])
                elif nxt not in path and nxt != "__init__":
                    stack.append((nxt, path + [nxt]))
    assert circles == []


def test_the_builtin_backends_build_their_judges(tmp_path):
    """Each built-in backend builds its judge from a config alone (the LLM judge needs no
    server to be built; the offline judge for autointerp loads no LM)."""
    from saesteer.judges.llm import LLMJudge
    from saesteer.judges.offline import OfflineProxyJudge

    llm = make_judge({"kind": "llm", "prompts": "axbench", "cache": str(tmp_path / "c.sqlite"), "llm": {"api_key_env": ""}})
    assert (
        isinstance(llm, LLMJudge)
        and llm.prompts_label.startswith("axbench@")
        and judge_settings(llm)["temperature_rating"] == 0.7
    )
    record = write_model_json(tmp_path)
    offline = make_judge({"kind": "offline", "offline": {"reference_model": str(record)}}, purpose=AUTOINTERP)
    assert isinstance(offline, OfflineProxyJudge) and offline.lm is None and offline.model_label.endswith("+tiny")
    assert judge_settings(offline) == {
        "detect_threshold": offline.cfg.detect_threshold,
        "explain_top_tokens": offline.cfg.explain_top_tokens,
    }


def test_a_steering_jobs_judge_error_names_the_block_the_job_was_given(monkeypatch):
    """Inside a steer_eval / steer_selected / steering_vectors job the judge block arrives as
    a bare dict (the rule's ``judge`` param); its errors still name ``steering.judge.*`` when
    the config set a steering judge of its own, ``judge.*`` when the shared one is used."""
    from saesteer.rule_jobs import RuleJob
    from saesteer.steering.context import SteeringContext, steering_judge

    monkeypatch.delenv("TOY_KEY", raising=False)
    block = {"kind": "llm", "llm": {"api_key_env": "TOY_KEY"}}
    for steering, where in (({"judge": block}, "steering.judge"), ({}, "judge")):
        job = RuleJob(
            rule="steer_eval",
            inputs={"model": "m/model.json", "instructions": "instructions.json"},
            params={"steering": steering, "judge": block},
        )
        ctx = SteeringContext.from_job(job)
        assert ctx.judge.where == where
        with pytest.raises(JudgeConfigError, match=rf"^{re.escape(where)}\.llm: the environment variable TOY_KEY"):
            steering_judge(ctx.judge, Path("m/model.json"), None, None, reuse=False)

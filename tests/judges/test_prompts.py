"""Judge template sets (judge.prompts): a YAML file replaces the wording, is validated with the
file and template named, and every rated output records which set asked; tables that mix
sets are refused. Also: ratings are read as AxBench reads them (decimals in [0, 2])."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from saesteer.judges import (
    JudgeConfig,
    LLMJudgeConfig,
    MixedJudgeError,
    Rating,
    SteeringItem,
    check_judge_config,
    check_single_judge,
    prompts_record,
)
from saesteer.judges.llm import LLMJudge
from saesteer.judges.prompts import (
    PROJECT_PROMPT_SET,
    PROJECT_TEMPLATES,
    TEMPLATE_FIELDS,
    PromptsError,
    load_prompt_set,
)
from tests.helpers import REPO

ITEM = SteeringItem(concept="the ocean", instruction="Describe your morning.", generation="I woke up and saw the sea.")


class Endpoint:
    """An OpenAI-compatible endpoint that records every request and answers ``reply``."""

    def __init__(self, reply: str = "Rating: 1.5"):
        self.reply = reply
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": self.reply}}], "usage": usage})


def judge_with(endpoint: Endpoint, prompts_path: Path | None = None, **cfg: object) -> LLMJudge:
    llm = LLMJudgeConfig(base_url="http://judge.test/v1", model="fake", api_key_env="", **cfg)  # type: ignore[arg-type]
    return LLMJudge(llm, None, prompt_set=load_prompt_set(prompts_path), transport=httpx.MockTransport(endpoint))


def write_set(path: Path, **changes: str) -> Path:
    templates = {**PROJECT_TEMPLATES, **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in templates.items()}, sort_keys=False))
    return path


def test_a_decimal_rating_is_kept_and_the_default_temperature_is_axbenchs():
    endpoint = Endpoint("The concept appears in passing.\nRating: [[1.5]]")
    (rating,) = judge_with(endpoint).rate([ITEM])
    assert (rating.concept, rating.instruction, rating.fluency, rating.n_unparsed) == (1.5, 1.5, 1.5, 0)
    assert {b["temperature"] for b in endpoint.bodies} == {0.7}  # AxBench's evaluation judge
    endpoint = Endpoint("Rating: 2.5")  # outside [0, 2]: unparsed, 0
    (rating,) = judge_with(endpoint).rate([ITEM])
    assert (rating.concept, rating.n_unparsed) == (0.0, 3)


def test_autointerp_calls_use_saebenchs_settings():
    endpoint = Endpoint("Explanation: the sea")
    judge = judge_with(endpoint)
    judge.explain(["I saw the <<sea>>"])
    endpoint.reply = "Answer: 1"
    judge.detect("the sea", ["a sea", "b", "c"])
    explain, detect = endpoint.bodies
    assert (explain["temperature"], explain["max_tokens"]) == (1.0, 30)
    assert (detect["temperature"], detect["max_tokens"]) == (1.0, 2 * 3 + 5)


def test_a_prompts_file_replaces_the_wording_and_its_hash_is_recorded(tmp_path):
    path = write_set(
        tmp_path / "mine.yaml",
        rating_system="",
        concept="CONCEPT CHECK [{concept}] in <{generation}>. Rating: [[score]]",
    )
    endpoint = Endpoint("Rating: [[2]]")
    judge = judge_with(endpoint, path)
    (rating,) = judge.rate([ITEM])
    concept_request = endpoint.bodies[0]["messages"]
    assert concept_request == [
        {"role": "user", "content": "CONCEPT CHECK [the ocean] in <I woke up and saw the sea.>. Rating: [[score]]"}
    ]
    ps = load_prompt_set(path)
    assert ps.label == f"mine@{ps.sha256[:12]}" != PROJECT_PROMPT_SET.label
    assert rating.judge_prompts == ps.label == judge.prompts_label
    assert prompts_record(judge) == {"label": ps.label, "name": "mine", "path": str(path), "sha256": ps.sha256}
    # The hash is of the text: one changed word is another set.
    other = write_set(
        tmp_path / "mine2.yaml", rating_system="", concept="CONCEPT CHECK [{concept}] in <{generation}>! Rating: [[score]]"
    )
    assert load_prompt_set(other).sha256 != ps.sha256
    # The config names the file; the judge it builds uses it.
    cfg = JudgeConfig.from_dict({"kind": "llm", "prompts": str(path), "llm": {"api_key_env": ""}})
    assert check_judge_config(cfg).prompts_label == ps.label
    assert JudgeConfig.from_dict({"kind": "offline", "prompts": str(path)}).prompts_label == "none"  # the proxy asks nothing


@pytest.mark.parametrize(
    "change, message",
    [
        ({"extra": "hello"}, r"unknown templates \['extra'\]"),
        ({"fluency": None}, r"missing templates \['fluency'\]"),
        ({"concept": "Is {concept} there?"}, r"template 'concept' lacks the placeholders \['\{generation\}'\]"),
        ({"fluency": "Rate {generation} for {concept}"}, r"template 'fluency' has unknown placeholders \['\{concept\}'\]"),
        ({"detect": "{explanation} {excerpts} {0}"}, r"template 'detect' has fields"),
        ({"explain": "Look: {excerpts"}, r"template 'explain' is not a valid format string"),
        ({"explain_system": 3}, r"template 'explain_system' must be a string"),
    ],
)
def test_a_bad_prompts_file_is_refused_naming_the_file_and_the_template(tmp_path, change, message):
    templates = {**PROJECT_TEMPLATES, **change}
    templates = {k: v for k, v in templates.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(templates))
    with pytest.raises(PromptsError, match=rf"judge.prompts file {path}: {message}"):
        load_prompt_set(path)
    with pytest.raises(PromptsError, match="bad.yaml"):  # before any job starts
        check_judge_config({"kind": "offline", "prompts": str(path)})


def test_a_prompts_file_that_is_not_a_mapping_or_absent_is_refused(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PromptsError, match="list.yaml: must be a mapping"):
        load_prompt_set(tmp_path / "list.yaml")
    with pytest.raises(PromptsError, match="absent.yaml: cannot be read"):
        load_prompt_set(tmp_path / "absent.yaml")


def test_the_shipped_example_sets_are_valid_and_axbench_style_asks_axbenchs_questions():
    names = sorted(p.name for p in (REPO / "config" / "judge_prompts").glob("*.yaml"))
    assert names == ["axbench-style.yaml", "saebench-style.yaml"]
    ax = load_prompt_set(REPO / "config/judge_prompts/axbench-style.yaml")
    sb = load_prompt_set(REPO / "config/judge_prompts/saebench-style.yaml")
    assert set(ax.templates) == set(sb.templates) == set(TEMPLATE_FIELDS)
    messages = ax.instruction_messages("Describe your morning.", "Waves.")
    assert len(messages) == 1 and "related to the instruction" in messages[0]["content"]
    assert "regardless of grammar, coherence, or informativeness" in messages[0]["content"]
    # SAEBench's reply formats parse: bare numbers, and "This neuron activates on ...".
    endpoint = Endpoint("2, 3")
    judge = LLMJudge(
        LLMJudgeConfig(base_url="http://judge.test/v1", model="fake", api_key_env=""),
        None,
        prompt_set=sb,
        transport=httpx.MockTransport(endpoint),
    )
    assert judge.detect("the sea", ["a", "b sea", "c sea"]).predicted == (1, 2)
    endpoint.reply = "This neuron activates on words about the sea."
    assert judge.explain(["the <<sea>>"]).text == "words about the sea"


def test_tables_that_mix_template_sets_are_refused():
    def rating(prompts: str) -> Rating:
        return Rating(1.0, 1.0, 1.0, judge="llm", judge_model="m", judge_prompts=prompts)

    assert check_single_judge([rating("project@aaa"), rating("project@aaa")]) == "llm/m/project@aaa"
    with pytest.raises(MixedJudgeError, match="judge_prompts"):
        check_single_judge([rating("project@aaa"), rating("axbench-style@bbb")])
    import pandas as pd

    with pytest.raises(MixedJudgeError, match="judge_prompts"):
        check_single_judge(pd.DataFrame([rating("a@1").as_dict(), rating("b@2").as_dict()]))

"""What the steering workers take: the job's shared :class:`SteeringContext`, and the SAE.

The three steering workers (``evaluate.run_steer_eval``, ``selection.steer.run_steer_selected``,
``vectors_job.run_steering_vectors``) run one SAE each and take ``(context, sae)``:

- the **context** is what one job shares across its SAEs: the model record, the instruction
  pool, the parsed stage configs, the judge block, the prompt format, the thread count, and
  the job's model, tokenizer and steering judge (:class:`SteeringModels`, loaded on first use,
  once per job);
- the **SAE** is :class:`saesteer.rule_jobs.SaeFiles`: its :class:`~saesteer.grouping.JobCell`
  (model, arch, sparsity label, target_l0, seed) and its named input and output files, as
  the rule declares them (``sae.inputs["autointerp"]``, ``sae.outputs["score"]``, ...).

A rule's job builds the context with :meth:`SteeringContext.from_job`; a test builds one
directly, handing it its own model (and judge) with :class:`SteeringModels`. Close the
context (``with`` or :meth:`SteeringContext.close`) to close a judge it built.

This module lives in ``saesteer.steering`` because the steering stage owns the shared parts;
``saesteer.selection`` already imports the steering stage (one direction only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.judges import STEERING, JudgeConfig, check_judge_config, judge_config, make_judge
from saesteer.judges.shared import JudgeView
from saesteer.rule_jobs import RuleJob, SaeFiles
from saesteer.selection.config import SelectionConfig
from saesteer.steering.config import SteeringConfig
from saesteer.steering.vectors_config import SteeringVectorsConfig

__all__ = ["SaeFiles", "SteeringContext", "SteeringModels", "steering_judge"]


def steering_judge(
    judge_cfg: JudgeConfig | Mapping[str, Any] | None, model_json: Path, model: Any, tokenizer: Any, reuse: bool
) -> Any:
    """The configured judge, as steering uses it (its backend's ``purpose="steering"``): the
    offline judge reuses the steered model as its reference LM when they are the same
    prepared model in float32 (``reuse``; hooks are off while it rates)."""
    cfg = check_judge_config(judge_cfg)
    if not reuse:
        model = tokenizer = None
    return make_judge(cfg, purpose="steering", lm=model, tokenizer=tokenizer, model_json=model_json)


class SteeringModels:
    """A job's model, tokenizer and steering judge: loaded on the first :meth:`get` (so a job
    none of whose SAEs needs the model never loads it), shared by its SAEs, each of which sees
    the judge through a :class:`JudgeView` (its own usage counts). ``lm``/``tokenizer``/``judge``
    given here are used instead of loading (tests); a judge this object built is closed by
    :meth:`close`, a given one is left to its owner. The offline judge reuses the model as
    its reference LM when it is the same float32 record (:func:`steering_judge`)."""

    def __init__(self, lm: Any = None, tokenizer: Any = None, judge: Any = None):
        self._lm, self._tokenizer, self._judge = lm, tokenizer, judge
        self._own_judge = False

    def get(self, ctx: SteeringContext) -> tuple[Any, Any, JudgeView]:
        """(model, tokenizer, a view of the judge), loaded as ``ctx`` configures them."""
        cfg = ctx.steering
        if self._lm is None or self._tokenizer is None:
            from saesteer.models import load_prepared

            self._lm, self._tokenizer = load_prepared(ctx.model_json, dtype=cfg.model_dtype, device=cfg.device)
        if self._judge is None:
            self._judge = steering_judge(ctx.judge, ctx.model_json, self._lm, self._tokenizer, reuse=cfg.model_dtype == "float32")
            self._own_judge = True
        return self._lm, self._tokenizer, JudgeView(self._judge)

    def close(self) -> None:
        if self._own_judge and self._judge is not None:
            self._judge.close()
            self._judge, self._own_judge = None, False


@dataclass(frozen=True)
class SteeringContext:
    """What one steering job shares across its SAEs (see the module docstring)."""

    model_json: Path
    """The prepared model's record (results/models/<model>/model.json)."""
    instructions: Path
    """The instruction pool (results/steering/instructions.json)."""
    steering: SteeringConfig
    judge: JudgeConfig | Mapping[str, Any] | None
    """The steering judge's block (``steering.judge``, else ``judge``): checked when the judge
    is built, so a job that needs no judge does not need its API key either."""
    prompt_format: str | None = None
    """The model entry's (``chat`` or ``base``, :mod:`saesteer.prompting`): steer_eval's and
    steer_selected's; steering_vectors steers in steer_eval's recorded format instead."""
    threads: int | None = None
    selection: SelectionConfig | None = None
    """steer_selected's block."""
    vectors: SteeringVectorsConfig | None = None
    """steering_vectors' block."""
    eval_dir: Path | None = None
    """steering_vectors: the model's eval data folder (prepare_eval_data's manifest's)."""
    eval_cfg: Mapping[str, Any] | None = None
    """steering_vectors: the ``eval`` block (autointerp's context settings)."""
    models: SteeringModels = field(default_factory=SteeringModels, repr=False, compare=False)
    """The job's model, tokenizer and judge (default: loaded from ``model_json`` when needed)."""

    def loaded(self) -> tuple[Any, Any, JudgeView]:
        """The job's (model, tokenizer, a view of the judge), loaded on the first call."""
        return self.models.get(self)

    @classmethod
    def from_job(cls, job: RuleJob) -> SteeringContext:
        """The context of a steer_eval, steer_selected or steering_vectors job: its shared
        inputs (``model``, ``instructions``, ``eval_data``) and params (``steering``, ``judge``,
        ``prompt_format``, ``selection``, ``steering_vectors``, ``eval``), whichever it has."""
        p = job.params
        eval_data = job.inputs.get("eval_data")
        return cls(
            model_json=Path(job.inputs["model"]),
            instructions=Path(job.inputs["instructions"]),
            steering=SteeringConfig.from_config(p["steering"]),
            # the job's params hold the `steering` block, so the steering judge is resolved (and
            # its errors named, steering.judge.* or judge.*) as for the workflow's own check
            judge=judge_config(p, STEERING),
            prompt_format=p.get("prompt_format"),
            threads=job.threads,
            selection=SelectionConfig.from_config(p["selection"]) if "selection" in p else None,
            vectors=SteeringVectorsConfig.from_config(p["steering_vectors"]) if "steering_vectors" in p else None,
            eval_dir=None if eval_data is None else Path(eval_data).parent,
            eval_cfg=p.get("eval"),
        )

    def needs(self, name: str) -> Any:
        """The field ``name``, which the calling worker requires (a clear error if unset)."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"SteeringContext.{name} is not set: this worker needs it")
        return value

    def close(self) -> None:
        self.models.close()

    def __enter__(self) -> SteeringContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Rules steering_instructions, steer_eval and steering_vectors (workflow/rules/steering.smk,
steering_vectors.smk). The per-SAE rules run a group of SAEs (``eval_jobs.group_by``) in
one process: the model and the judge are loaded once, then each SAE is steered exactly as
in a job of its own (every row has its own seed), into its own files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saesteer.judges.shared import JudgeView
from saesteer.rule_jobs import RuleJob, SaeFiles, each_sae


def steering_instructions(job: RuleJob) -> None:
    """The instruction pool every steering job reads."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.instructions import write_instruction_pool

    cfg = SteeringConfig.from_config({"instructions": job.params["instructions"]})
    write_instruction_pool(cfg.instructions, Path(job.outputs["pool"]))


class SharedSteeringModel:
    """A grouped job's model, tokenizer and judge: loaded on the first :meth:`get` (so a job
    none of whose SAEs needs the model never loads it), closed by the job after its last SAE.
    The offline judge reuses the model as its reference LM when it is the same float32 record."""

    def __init__(self, job: RuleJob, steering_cfg: Any):
        self._model_json = Path(job.inputs["model"])
        self._judge_cfg = job.params["judge"]
        self._cfg = steering_cfg
        self._loaded: tuple[Any, Any, Any] | None = None

    def get(self) -> tuple[Any, Any, JudgeView]:
        """(model, tokenizer, this SAE's view of the judge)."""
        if self._loaded is None:
            from saesteer.models import load_prepared
            from saesteer.steering.evaluate import steering_judge

            cfg = self._cfg
            lm, tokenizer = load_prepared(self._model_json, dtype=cfg.model_dtype, device=cfg.device)
            judge = steering_judge(self._judge_cfg, self._model_json, lm, tokenizer, reuse=cfg.model_dtype == "float32")
            self._loaded = (lm, tokenizer, judge)
        lm, tokenizer, judge = self._loaded
        return lm, tokenizer, JudgeView(judge)

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded[2].close()


def steering_inputs(job: RuleJob) -> dict[str, Any]:
    """What every steering worker (steer_eval, steer_selected, steering_vectors) takes from
    the job itself: the model record, the instruction pool, the steering and judge blocks."""
    return {
        "instructions": Path(job.inputs["instructions"]),
        "model_json": Path(job.inputs["model"]),
        "steering_cfg": job.params["steering"],
        "judge_cfg": job.params["judge"],
        "threads": job.threads,
    }


def steered_saes(job: RuleJob) -> Iterator[tuple[SaeFiles, dict[str, Any]]]:
    """Each SAE of the job to steer, with the model, tokenizer and (its view of) the judge
    loaded once for the job; closes the judge after the last SAE."""
    from saesteer.steering.config import SteeringConfig

    shared = SharedSteeringModel(job, SteeringConfig.from_config(job.params["steering"]))
    try:
        for _, sae in each_sae(job):
            lm, tokenizer, judge = shared.get()
            yield sae, {"lm": lm, "tokenizer": tokenizer, "judge": judge}
    finally:
        shared.close()


def steer_eval(job: RuleJob) -> None:
    """AxBench-protocol steering of each SAE of the job (per SAE: steering/)."""
    from saesteer.steering.evaluate import run_steer_eval

    for sae, loaded in steered_saes(job):
        run_steer_eval(
            sae_dir=sae.sae_dir,
            autointerp_table=sae.inputs["autointerp"],
            out_generations=sae.outputs["generations"],
            out_concepts=sae.outputs["concepts"],
            out_score=sae.outputs["score"],
            prompt_format=job.params["prompt_format"],
            **steering_inputs(job),
            **sae.identity,
            **loaded,
        )


def steering_vectors(job: RuleJob) -> None:
    """Each SAE's latents against DiffMean steering vectors (per SAE: steering_vectors/)."""
    from saesteer.steering.vectors_job import run_steering_vectors

    for sae, loaded in steered_saes(job):
        run_steering_vectors(
            sae_dir=sae.sae_dir,
            eval_dir=Path(job.inputs["eval_data"]).parent,
            eval_cfg=job.params["eval"],
            autointerp_table=sae.inputs["autointerp"],
            steering_concepts=sae.inputs["steering_concepts"],
            steering_score=sae.inputs["steering_score"],
            vectors_cfg=job.params["steering_vectors"],
            out_score=sae.outputs["score"],
            out_concepts=sae.outputs["concepts"],
            out_generations=sae.outputs["generations"],
            out_vectors=sae.outputs["vectors"],
            sparsity=sae.cell.sparsity,
            **steering_inputs(job),
            **sae.identity,
            **loaded,
        )

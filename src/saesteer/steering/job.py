"""Rules steering_instructions, steer_eval and steering_vectors (workflow/rules/steering.smk,
steering_vectors.smk). The per-SAE rules run a group of SAEs (``eval_jobs.group_by``) in
one process: the model and the judge are loaded once, then each SAE is steered exactly as
in a job of its own (every row has its own seed), into its own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saesteer.judges.shared import JudgeView
from saesteer.rule_jobs import RuleJob, each_sae


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
            from saesteer.devices import resolve_device
            from saesteer.models import load_prepared
            from saesteer.steering.evaluate import steering_judge

            cfg = self._cfg
            lm, tokenizer = load_prepared(self._model_json, dtype=cfg.model_dtype, device=str(resolve_device(cfg.device)))
            judge = steering_judge(self._judge_cfg, self._model_json, lm, tokenizer, reuse=cfg.model_dtype == "float32")
            self._loaded = (lm, tokenizer, judge)
        lm, tokenizer, judge = self._loaded
        return lm, tokenizer, JudgeView(judge)

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded[2].close()


def steer_eval(job: RuleJob) -> None:
    """AxBench-protocol steering of each SAE of the job (per SAE: steering/)."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.evaluate import run_steer_eval

    shared = SharedSteeringModel(job, SteeringConfig.from_config(job.params["steering"]))
    try:
        for _, sae in each_sae(job):
            lm, tokenizer, judge = shared.get()
            run_steer_eval(
                sae_dir=sae.sae_dir,
                autointerp_table=sae.inputs["autointerp"],
                instructions=Path(job.inputs["instructions"]),
                model_json=Path(job.inputs["model"]),
                steering_cfg=job.params["steering"],
                judge_cfg=job.params["judge"],
                out_generations=sae.outputs["generations"],
                out_concepts=sae.outputs["concepts"],
                out_score=sae.outputs["score"],
                **sae.identity,
                prompt_format=job.params["prompt_format"],
                threads=job.threads,
                lm=lm,
                tokenizer=tokenizer,
                judge=judge,
            )
    finally:
        shared.close()


def steering_vectors(job: RuleJob) -> None:
    """Each SAE's latents against DiffMean steering vectors (per SAE: steering_vectors/)."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.vectors_job import run_steering_vectors

    shared = SharedSteeringModel(job, SteeringConfig.from_config(job.params["steering"]))
    try:
        for _, sae in each_sae(job):
            lm, tokenizer, judge = shared.get()
            run_steering_vectors(
                sae_dir=sae.sae_dir,
                eval_dir=Path(job.inputs["eval_data"]).parent,
                eval_cfg=job.params["eval"],
                autointerp_table=sae.inputs["autointerp"],
                steering_concepts=sae.inputs["steering_concepts"],
                steering_score=sae.inputs["steering_score"],
                instructions=Path(job.inputs["instructions"]),
                model_json=Path(job.inputs["model"]),
                steering_cfg=job.params["steering"],
                vectors_cfg=job.params["steering_vectors"],
                judge_cfg=job.params["judge"],
                out_score=sae.outputs["score"],
                out_concepts=sae.outputs["concepts"],
                out_generations=sae.outputs["generations"],
                out_vectors=sae.outputs["vectors"],
                **sae.identity,
                sparsity=sae.cell.sparsity,
                threads=job.threads,
                lm=lm,
                tokenizer=tokenizer,
                judge=judge,
            )
    finally:
        shared.close()

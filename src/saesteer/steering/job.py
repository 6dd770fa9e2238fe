"""Rules steering_instructions, steer_eval and steering_vectors (workflow/rules/steering.smk,
steering_vectors.smk). The per-SAE rules run a group of SAEs (``eval_jobs.group_by``) in
one process: the model and the judge are loaded once (the job's
:class:`saesteer.steering.context.SteeringContext`), then each SAE is steered exactly as in
a job of its own (every row has its own seed), into its own files."""

from __future__ import annotations

from pathlib import Path

from saesteer.rule_jobs import RuleJob, each_sae


def steering_instructions(job: RuleJob) -> None:
    """The instruction pool every steering job reads."""
    from saesteer.steering.config import SteeringConfig
    from saesteer.steering.instructions import write_instruction_pool

    cfg = SteeringConfig.from_config({"instructions": job.params["instructions"]})
    write_instruction_pool(cfg.instructions, Path(job.outputs["pool"]))


def steer_eval(job: RuleJob) -> None:
    """AxBench-protocol steering of each SAE of the job (per SAE: steering/)."""
    from saesteer.steering.context import SteeringContext
    from saesteer.steering.evaluate import run_steer_eval

    with SteeringContext.from_job(job) as ctx:
        for _, sae in each_sae(job):
            run_steer_eval(ctx, sae)


def steering_vectors(job: RuleJob) -> None:
    """Each SAE's latents against DiffMean steering vectors (per SAE: steering_vectors/)."""
    from saesteer.steering.context import SteeringContext
    from saesteer.steering.vectors_job import run_steering_vectors

    with SteeringContext.from_job(job) as ctx:
        for _, sae in each_sae(job):
            run_steering_vectors(ctx, sae)

"""Steering evaluation (AxBench protocol): concepts, instructions, batched steered
generation, ratings and the per-SAE steering score (``evaluate.run_steer_eval``)."""

from saesteer.steering.config import AXBENCH_FACTORS, ConceptSpec, InstructionsConfig, SteeringConfig, SteeringConfigError

__all__ = ["AXBENCH_FACTORS", "ConceptSpec", "InstructionsConfig", "SteeringConfig", "SteeringConfigError"]

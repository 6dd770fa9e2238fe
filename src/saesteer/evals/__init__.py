"""Interpretability evaluation without a judge LLM (SAEBench-style; Karvonen et al. 2025,
arXiv 2503.09532): core metrics with the SAE spliced into the model, sparse probing, and
first-letter feature absorption.

Two stages, as in the workflow:

- per model, :func:`~saesteer.evals.eval_data.prepare_eval_data` runs the LLM once on the
  held-out text, probing passages and first-letter prompts and stores what every SAE of
  that model needs (``results/{model}/eval_data/``);
- per SAE, :func:`~saesteer.evals.interp.evaluate_sae` reads it, runs only the blocks above
  the hook with the SAE spliced in, and writes ``interp.json``
  (schema: ``src/saesteer/schemas/interp.schema.json``).
"""

from saesteer.evals.config import EvalConfig
from saesteer.evals.eval_data import EvalDataError, build_eval_data, load_eval_data, prepare_eval_data
from saesteer.evals.interp import SAEFileError, evaluate_loaded, evaluate_sae, load_sae

__all__ = [
    "EvalConfig",
    "EvalDataError",
    "SAEFileError",
    "build_eval_data",
    "evaluate_loaded",
    "evaluate_sae",
    "load_eval_data",
    "load_sae",
    "prepare_eval_data",
]

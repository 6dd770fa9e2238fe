"""Rules prepare_eval_data, autointerp and eval_interp (workflow/rules/eval.smk,
autointerp.smk). The two per-SAE rules run a group of SAEs (``eval_jobs.group_by``) in one
process: the model, its tokenizer and the judge are loaded once, then each SAE is
evaluated exactly as in a job of its own, into its own files."""

from __future__ import annotations

from pathlib import Path

from saesteer.judges.shared import JudgeView
from saesteer.rule_jobs import RuleJob, each_sae


def prepare_eval_data(job: RuleJob) -> None:
    """One model's eval data, shared by every SAE of the model."""
    from saesteer.evals.eval_data import prepare_eval_data as _prepare

    _prepare(
        model_json=Path(job.inputs["model"]),
        model_entry=job.params["spec"],
        corpus_cfg=job.params["corpus"],
        eval_cfg=job.params["eval"],
        out_dir=Path(job.outputs["manifest"]).parent,
        threads=job.threads,
    )


def autointerp(job: RuleJob) -> None:
    """Autointerp of each SAE of the job (per SAE: autointerp.parquet, autointerp.json)."""
    from saesteer.evals.autointerp import autointerp_judge, load_tokenizer, run_autointerp

    model_json = Path(job.inputs["model"])
    tokenizer = load_tokenizer(model_json)
    judge = autointerp_judge(job.params["judge"])
    try:
        for _, sae in each_sae(job):
            run_autointerp(
                sae_dir=sae.sae_dir,
                eval_dir=Path(job.inputs["eval_data"]).parent,
                eval_cfg=job.params["eval"],
                judge_cfg=job.params["judge"],
                out_parquet=sae.outputs["table"],
                out_json=sae.outputs["summary"],
                **sae.identity,
                model_json=model_json,
                tokenizer=tokenizer,
                judge=JudgeView(judge),
                threads=job.threads,
            )
    finally:
        judge.close()


def eval_interp(job: RuleJob) -> None:
    """SAEBench-style report of each SAE of the job (per SAE: interp.json); the LLM is
    loaded once, at the dtype its eval data were made with, and each metric's per-model
    part (``prepare``) made once."""
    from saesteer.evals.config import EvalConfig
    from saesteer.evals.eval_data import load_eval_data
    from saesteer.evals.interp import evaluate_sae, load_model_only, prepare_metrics

    eval_dir = Path(job.inputs["eval_data"]).parent
    model_json = Path(job.inputs["model"])
    cfg = EvalConfig.from_config(job.params["eval"])
    data = load_eval_data(eval_dir)
    llm = load_model_only(model_json, data.manifest["model_dtype"], cfg.device)
    prepared = prepare_metrics(llm, data, cfg)  # what each metric needs from the model, once
    for _, sae in each_sae(job):
        evaluate_sae(
            sae_dir=sae.sae_dir,
            eval_dir=eval_dir,
            model_json=model_json,
            eval_cfg=job.params["eval"],
            out_json=sae.outputs["interp"],
            **sae.identity,
            autointerp_json=sae.inputs["autointerp"],
            threads=job.threads,
            llm=llm,
            prepared=prepared,
        )

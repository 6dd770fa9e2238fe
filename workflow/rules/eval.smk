from saesteer.evals.config import eval_data_block  # noqa: E402


rule prepare_eval_data:
    """Everything the interpretability eval needs the LLM for, once per model: held-out
    contexts with their hook-point residuals and clean / zero-ablated next-token losses,
    sparse-probing passages, first-letter prompts and letter probes, and the held-out
    contexts autointerp draws its examples from. Every SAE of the model reuses them (see
    src/saesteer/evals/eval_data.py)."""
    input:
        model="results/models/{model}/model.json",
    output:
        manifest="results/{model}/eval_data/manifest.json",
    log:
        "logs/{model}/prepare_eval_data.log",
    benchmark:
        "logs/benchmarks/{model}/prepare_eval_data.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        spec=model_entry,
        corpus=config["corpus"],
        # Without the per-SAE autointerp keys: changing them must not rebuild the data.
        eval=eval_data_block(config["eval"]),
    script:
        "../scripts/prepare_eval_data.py"


rule eval_interp:
    """SAEBench-style interpretability report of one SAE: core metrics (with the SAE
    spliced into the model), sparse probing and first-letter absorption, computed here
    without a judge, and the autointerp score of the autointerp rule; validated against
    src/saesteer/schemas/interp.schema.json."""
    input:
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        eval_data="results/{model}/eval_data/manifest.json",
        model="results/models/{model}/model.json",
        autointerp=sae_files("autointerp.json"),
    output:
        interp=sae_files("interp.json"),
    log:
        f"logs/{sae_job_log('eval_interp')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('eval_interp')}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        eval=config["eval"],
    script:
        "../scripts/eval_interp.py"

from saesteer.evals.autointerp import reference_model_input  # noqa: E402

# The offline judge's reference-model record is an input of every autointerp job (so
# prepare_model makes it first); an LLM judge adds none. Checked here, at parse time: the
# record must be that of a model of the grid.
AUTOINTERP_JUDGE_INPUTS = reference_model_input(JUDGE, GRID.model_names)


rule autointerp:
    """SAEBench-style autointerp of one SAE: the judge explains sampled alive latents from
    their top-activating and importance-sampled held-out excerpts, then picks the activating
    ones from a shuffled mix of unseen activating and random excerpts; score = mean
    detection accuracy. The per-latent table (explanations, predictions, max activations)
    gives steering its concepts (see src/saesteer/evals/autointerp.py)."""
    input:
        **AUTOINTERP_JUDGE_INPUTS,
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        eval_data="results/{model}/eval_data/manifest.json",
        model="results/models/{model}/model.json",
    output:
        table=sae_files("autointerp.parquet"),
        summary=sae_files("autointerp.json"),
    log:
        f"logs/{sae_job_log('autointerp')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('autointerp')}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        eval=config["eval"],
        judge=config["judge"],
    script:
        "../scripts/autointerp.py"

# Feature selection (docs/method.md, "Feature selection"): score every latent of an SAE, then
# steer the latents each criterion keeps with the steering evaluation's protocol.


rule select_features:
    """Selection scores of every latent of one SAE, batched over latents on one neutral
    prompt: the output score of Arad et al. 2025 (logit-lens tokens of the decoder row, their
    best rank and probability after amplifying the latent at the last position, with the SAE
    error term added back) and Delta Token Confidence of Wang et al. 2025 (the change of the
    top-k confidence of the next-token distribution), under each reading of "amplify" (see
    src/saesteer/selection/latent_scores.py); and Arad et al.'s input score of the latents with
    autointerp top contexts (src/saesteer/selection/input_score.py)."""
    input:
        # The latents to score with selection.latents: autointerp, and always the top contexts
        # of Arad et al.'s input score.
        autointerp=sae_files("autointerp.parquet"),
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        model="results/models/{model}/model.json",
    output:
        table=sae_files("selection/latent_scores.parquet"),
        summary=sae_files("selection/latent_scores.json"),
    log:
        f"logs/{sae_job_log('select_features')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('select_features')}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        selection=config["selection"],
    script:
        "../scripts/select_features.py"


rule steer_selected:
    """Steering scores of the latents each criterion selects among the autointerp-explained
    ones: none (the steering evaluation's Concept-N), output score above its threshold (the
    same sample, filtered), and Delta Token Confidence UP / DOWN sets (top K or tail
    quantiles), the set reported chosen on the factor-selection instructions only. Latents
    already steered by steer_eval reuse its generations (same seeds); the others are steered
    with the same protocol (see src/saesteer/selection/steer.py). Also the null control of the
    Delta C set search (control.py) and the per-latent table with tau-b of each score vs
    steering across latents (per_latent.py)."""
    input:
        **STEERING_JUDGE_INPUTS,
        latent_scores=sae_files("selection/latent_scores.parquet"),
        autointerp=sae_files("autointerp.parquet"),
        steering_generations=sae_files("steering/generations.parquet"),
        steering_score=sae_files("steering/score.json"),
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        model="results/models/{model}/model.json",
        instructions="results/steering/instructions.json",
    output:
        generations=sae_files("selection/generations.parquet"),
        concepts=sae_files("selection/concepts.json"),
        score=sae_files("selection/score.json"),
        latents=sae_files("selection/latents.parquet"),
    log:
        f"logs/{sae_job_log('steer_selected')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('steer_selected')}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        prompt_format=prompt_format,
        steering=config["steering"],
        selection=config["selection"],
        judge=STEERING_JUDGE_BLOCK,
    script:
        "../scripts/steer_selected.py"

rule train_sae:
    """One SAE of the grid, trained on its model's cached activations and saved in
    SAELens's format. Checkpoints live outside the declared outputs, so a killed or
    preempted job resumes where it stopped."""
    input:
        cache=cache_manifest,
    output:
        weights="results/{model}/{arch}/{sparsity}/sae/sae_weights.safetensors",
        cfg="results/{model}/{arch}/{sparsity}/sae/cfg.json",
        curves="results/{model}/{arch}/{sparsity}/training_curves.parquet",
        summary="results/{model}/{arch}/{sparsity}/train_summary.json",
    log:
        "logs/{model}/{arch}/{sparsity}/train_sae.log",
    benchmark:
        "logs/benchmarks/{model}/{arch}/{sparsity}/train_sae.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        arch=lambda wildcards: wildcards.arch,
        target_l0=target_l0,
        sae=config["sae"],
        training=config["training"],
        checkpoint_dir=lambda wildcards: f"results/{wildcards.model}/{wildcards.arch}/{wildcards.sparsity}/checkpoints",
    script:
        "../scripts/train_sae.py"

rule cache_activations:
    """Residual-stream activations of one model at its hook layer, on the train split of
    the corpus: sharded, checksummed, resumable (shards/progress.jsonl survives a failed
    job because only the manifest is a declared output)."""
    input:
        model="results/models/{model}/model.json",
    output:
        manifest="results/{model}/activations/layer-{layer}/manifest.json",
    log:
        "logs/{model}/cache_activations.layer-{layer}.log",
    benchmark:
        "logs/benchmarks/{model}/cache_activations.layer-{layer}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        spec=model_entry,
        corpus=config["corpus"],
        cache=config["cache"],
    script:
        "../scripts/cache_activations.py"

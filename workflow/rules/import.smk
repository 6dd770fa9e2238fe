# Pretrained SAEs (config models[].pretrained, docs/pretrained-saes.md): each imported cell
# gets its sae/ folder and train_summary.json from import_sae instead of train_sae.


ruleorder: import_sae > train_sae


rule fetch_sae:
    """Bring a pretrained SAE's files local: a SAELens registry SAE into the Hugging Face
    cache (with SAELens's own loader), a local folder's checksums recorded. A local rule:
    it runs where Snakemake runs, where the hub is reachable (`--until fetch_sae`)."""
    input:
        unpack(pretrained_files),
    output:
        record="results/{model}/{arch}/{sparsity}/sae_fetch.json",
    log:
        "logs/{model}/{arch}/{sparsity}/fetch_sae.log",
    wildcard_constraints:
        sparsity=IMPORTED_SPARSITY,
    localrule: True
    conda:
        "../../envs/saesteer.yaml"
    params:
        entry=pretrained_entry,
    script:
        "../scripts/fetch_sae.py"


rule import_sae:
    """One pretrained SAE as a cell of the grid: loaded offline with SAELens (its converter
    for Gemma Scope / dictionary_learning releases), converted to our classes and checked
    against SAELens's encode/decode, measured on the model's held-out activations, and
    written as the same sae/ folder and train_summary.json (trained: false) that
    train_sae writes."""
    input:
        record="results/{model}/{arch}/{sparsity}/sae_fetch.json",
        cache=cache_manifest,
    output:
        weights="results/{model}/{arch}/{sparsity}/sae/sae_weights.safetensors",
        cfg="results/{model}/{arch}/{sparsity}/sae/cfg.json",
        summary="results/{model}/{arch}/{sparsity}/train_summary.json",
    log:
        "logs/{model}/{arch}/{sparsity}/import_sae.log",
    benchmark:
        "logs/benchmarks/{model}/{arch}/{sparsity}/import_sae.tsv"
    wildcard_constraints:
        sparsity=IMPORTED_SPARSITY,
    conda:
        "../../envs/saesteer.yaml"
    params:
        entry=pretrained_entry,
        training=config["training"],
        layer=lambda wildcards: GRID.model(wildcards.model).layer,
        d_model=lambda wildcards: GRID.model(wildcards.model).d_model,
    script:
        "../scripts/import_sae.py"

from saesteer.evals.autointerp import reference_model_input  # noqa: E402

# Like autointerp: the offline judge's reference-model record is an input of every
# steer_eval job (prepare_model makes it first); an LLM judge adds none.
STEERING_JUDGE_INPUTS = reference_model_input(JUDGE, GRID.model_names)


rule steering_instructions:
    """The instruction pool of the steering evaluation, read once per run from
    steering.instructions (the package's everyday requests, a local file, or a Hugging Face
    dataset such as AlpacaEval) into one JSON file every steer_eval job reads. A local rule:
    on a cluster it runs where snakemake runs, which is where the hub is reachable."""
    output:
        pool="results/steering/instructions.json",
    log:
        "logs/steering/steering_instructions.log",
    localrule: True
    conda:
        "../../envs/saesteer.yaml"
    params:
        instructions=config["steering"]["instructions"],
    script:
        "../scripts/steering_instructions.py"


rule steer_eval:
    """AxBench-protocol steering of one SAE: each concept (an autointerp explanation, or a
    configured concept) is steered along its latent's unit decoder row, x <- x + factor *
    m_f * v_f at the SAE's hook point, on every position; every (concept, factor,
    instruction) row is generated in large batches with its own vector and seed; the judge
    rates concept, instruction and fluency; the factor is chosen per concept on the selection
    instructions, the score is the held-out mean at it; unsteered and prompted baselines on
    the same instructions (see src/saesteer/steering/evaluate.py)."""
    input:
        **STEERING_JUDGE_INPUTS,
        autointerp="results/{model}/{arch}/{sparsity}/autointerp.parquet",
        sae_cfg="results/{model}/{arch}/{sparsity}/sae/cfg.json",
        sae_weights="results/{model}/{arch}/{sparsity}/sae/sae_weights.safetensors",
        model="results/models/{model}/model.json",
        instructions="results/steering/instructions.json",
    output:
        generations="results/{model}/{arch}/{sparsity}/steering/generations.parquet",
        concepts="results/{model}/{arch}/{sparsity}/steering/concepts.json",
        score="results/{model}/{arch}/{sparsity}/steering/score.json",
    log:
        "logs/{model}/{arch}/{sparsity}/steer_eval.log",
    benchmark:
        "logs/benchmarks/{model}/{arch}/{sparsity}/steer_eval.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        target_l0=target_l0,
        prompt_format=prompt_format,
        steering=config["steering"],
        judge=config["judge"],
    script:
        "../scripts/steer_eval.py"

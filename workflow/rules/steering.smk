from saesteer.evals.autointerp import reference_model_input  # noqa: E402

# Like autointerp, for the steering judge (steering.judge, else judge): the offline judge's
# reference-model record is an input of every steer_eval job (prepare_model makes it
# first); an LLM judge adds none.
STEERING_JUDGE_INPUTS = reference_model_input(STEERING_JUDGE, GRID.model_names)


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
        autointerp=sae_files("autointerp.parquet"),
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        model="results/models/{model}/model.json",
        instructions="results/steering/instructions.json",
    output:
        generations=sae_files("steering/generations.parquet"),
        concepts=sae_files("steering/concepts.json"),
        score=sae_files("steering/score.json"),
    log:
        f"logs/{sae_job_log('steer_eval')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('steer_eval')}.tsv"
    # steer_eval -> steering_vectors is the longest tail of a model's chain: on a few cores
    # (the demo, a workstation) they start before eval_interp / select_features, which then
    # fill the other cores, instead of leaving one core to run them alone at the end
    # (simulated on the demo's job times: 657-710 s of workflow -> 638-641 s).
    priority: 1
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        prompt_format=prompt_format,
        steering=config["steering"],
        judge=STEERING_JUDGE_BLOCK,
    script:
        "../scripts/steer_eval.py"

# training.group_by (docs/scaling.md) decides what one train_sae job trains: one SAE
# (sae), all sparsities of one (model, architecture) (arch), or all SAEs of a model (model),
# co-trained from one pass over its activations. A job's declared outputs are exactly its
# SAEs' single-SAE outputs (saesteer.training.job), so asking for one SAE's sae/cfg.json
# runs its group and every downstream rule is the same in all modes. Checkpoints live per
# SAE outside the declared outputs (Snakemake deletes a failed job's outputs): a killed or
# preempted job resumes every SAE where it stopped, whatever the grouping. With
# cache.mode: stream the job reads the prepared model instead of an activation cache and
# runs the LLM up to the hook itself (saesteer.cache.stream).


rule train_sae:
    """The SAEs of one training group, trained on their model's activations (cached, or
    streamed: cache.mode) and saved in SAELens's format, each exactly as if trained alone.
    """
    input:
        data=train_data_input,
    output:
        weights=train_job_outputs(GRID, TRAIN_GROUP_BY, "weights"),
        cfg=train_job_outputs(GRID, TRAIN_GROUP_BY, "cfg"),
        curves=train_job_outputs(GRID, TRAIN_GROUP_BY, "curves"),
        summary=train_job_outputs(GRID, TRAIN_GROUP_BY, "summary"),
    log:
        f"logs/{train_job_log(TRAIN_GROUP_BY)}.log",
    benchmark:
        f"logs/benchmarks/{train_job_log(TRAIN_GROUP_BY)}.tsv"
    conda:
        "../../envs/saesteer.yaml"
    resources:
        # per SAE of the group, times the attempt (common.smk); the SLURM profile adds the
        # partition and the GPU
        runtime=train_job_runtime,
        mem_mb=train_job_mem_mb,
    params:
        cells=lambda wildcards: train_job_cells(GRID, TRAIN_GROUP_BY, wildcards),
        sae=config["sae"],
        training=training_block(config["training"]),
        cache=config["cache"],
        corpus=config["corpus"],
        model=model_entry,
        # how the random-decoder controls' encoders are made (controls.random_decoder)
        control_encoder=GRID.control_encoder,
    script:
        "../scripts/train_sae.py"

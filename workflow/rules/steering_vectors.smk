# Steering vectors next to the SAE latents (optional: steering_vectors.enabled; issue 17,
# docs/steering-vectors.md): per SAE, a DiffMean vector per steered concept, Mayne et al.'s
# diagnostics of reading it through the SAE, its signed decomposition, and steering with the
# vector, its naive reconstruction and its signed fit on steer_eval's protocol and seeds.

from saesteer.steering.vectors_config import SteeringVectorsConfig  # noqa: E402

STEERING_VECTORS = SteeringVectorsConfig.from_config(config.get("steering_vectors"))


rule steering_vectors:
    """Per concept steer_eval steered: DiffMean (mean residual where its latent is strongly
    active minus mean at random held-out positions; or a user vector), its norm against the
    activation norms, encode(v) vs encode(0) (the Mayne effect), projections on every
    decoder row and a signed k-term OMP fit; each of the vector, decode(encode(v)) -
    decode(0) and the signed fit steered at the latent's norm on the factor grid, rated by
    steer_eval's judge on its instructions and seeds (see src/saesteer/steering/vectors_job.py).
    """
    input:
        # the user's vector file of each SAE (steering_vectors.vectors_file), if one is configured
        unpack(
            lambda w: {
                f"vectors_file_{i}": path
                for i, c in enumerate(sae_job_cells(w))
                for path in STEERING_VECTORS.vectors_input(
                    c["model"], c["arch"], c["sparsity"]
                ).values()
            }
        ),
        **STEERING_JUDGE_INPUTS,
        autointerp=sae_files("autointerp.parquet"),
        steering_concepts=sae_files("steering/concepts.json"),
        steering_score=sae_files("steering/score.json"),
        sae_cfg=sae_files("sae/cfg.json"),
        sae_weights=sae_files("sae/sae_weights.safetensors"),
        eval_data="results/{model}/eval_data/manifest.json",
        model="results/models/{model}/model.json",
        instructions="results/steering/instructions.json",
    output:
        score=sae_files("steering_vectors/score.json"),
        concepts=sae_files("steering_vectors/concepts.parquet"),
        generations=sae_files("steering_vectors/generations.parquet"),
        vectors=sae_files("steering_vectors/vectors.safetensors"),
    log:
        f"logs/{sae_job_log('steering_vectors')}.log",
    benchmark:
        f"logs/benchmarks/{sae_job_log('steering_vectors')}.tsv"
    # steer_eval -> steering_vectors is the longest tail of a model's chain: on a few cores
    # (the demo, a workstation) they start before eval_interp / select_features, which then
    # fill the other cores, instead of leaving one core to run them alone at the end
    # (simulated on the demo's job times: 657-710 s of workflow -> 638-641 s).
    priority: 1
    conda:
        "../../envs/saesteer.yaml"
    params:
        cells=sae_job_cells,
        eval=config["eval"],
        steering=config["steering"],
        steering_vectors=config.get("steering_vectors", {}),
        judge=STEERING_JUDGE_BLOCK,
    script:
        "../scripts/steering_vectors.py"


from saesteer.aggregate.job import aggregate_params  # noqa: E402
from saesteer.aggregate.steering_vectors import input_files as _sv_inputs  # noqa: E402
from saesteer.aggregate.steering_vectors import (
    output_paths as _sv_outputs,
)  # noqa: E402

_SV_SUMMARY = {
    name: str(path)
    for name, path in _sv_outputs("results/summary/steering_vectors").items()
}


rule aggregate_steering_vectors:
    """DiffMean-vs-latent and naive-vs-signed gaps per model, architecture and sparsity, and
    tau-b of each interpretability metric with the share of DiffMean's steering score a
    latent reaches (see src/saesteer/aggregate/steering_vectors.py)."""
    input:
        lambda wildcards: _sv_inputs(GRID, "results", partial=AGGREGATE.partial),
    output:
        sae_table=_SV_SUMMARY["sae_table.csv"],
        sae_table_parquet=_SV_SUMMARY["sae_table.parquet"],
        gaps=_SV_SUMMARY["gaps.csv"],
        gaps_parquet=_SV_SUMMARY["gaps.parquet"],
        rank_agreement=_SV_SUMMARY["rank_agreement.csv"],
        rank_agreement_parquet=_SV_SUMMARY["rank_agreement.parquet"],
        markdown=_SV_SUMMARY["summary.md"],
        plot=_SV_SUMMARY["plot"],
    log:
        "logs/summary/aggregate_steering_vectors.log",
    benchmark:
        "logs/benchmarks/summary/aggregate_steering_vectors.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        config=aggregate_params(config),
    script:
        "../scripts/aggregate_steering_vectors.py"

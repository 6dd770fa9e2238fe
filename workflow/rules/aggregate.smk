# The aggregation stage: every SAE's interpretability, steering and selection scores ->
# rank agreement, psi, selection lifts, summary and plots in results/summary/.

from saesteer.aggregate import AggregateConfig  # noqa: E402
from saesteer.aggregate.collect import cell_files  # noqa: E402
from saesteer.aggregate.latents import latent_files  # noqa: E402
from saesteer.aggregate.job import output_paths  # noqa: E402
from saesteer.aggregate.signal import unit_files  # noqa: E402

AGGREGATE = AggregateConfig.from_config(config.get("aggregate"))
SUMMARY_DIR = "results/summary"
_SUMMARY = {name: str(path) for name, path in output_paths(SUMMARY_DIR).items()}
# Per grid cell: train_summary.json, interp.json, steering/score.json, selection/score.json.
# With aggregate.partial only those that exist, so that after a --keep-going run with failures
# `snakemake aggregate --config aggregate='{partial: true}'` summarises what is there (the
# summary names what is missing) instead of retrying the failed jobs.


rule aggregate:
    """Kendall tau-b (BCa intervals, permutation p-values) of each interpretability metric vs
    the steering scores, over all SAEs and per model / architecture / sparsity; the
    axis-conditioned psi; steering scores before and after feature selection; next to the
    paper's numbers; the set-search control, and the per-latent view (tau-b of each selection
    score with steering across latents, input vs output score) (see src/saesteer/aggregate).
    """
    input:
        cells=lambda wildcards: cell_files(GRID, "results", partial=AGGREGATE.partial),
        latents=lambda wildcards: latent_files(
            GRID, "results", partial=AGGREGATE.partial
        ),
        units=lambda wildcards: unit_files(GRID, "results", partial=AGGREGATE.partial),
    output:
        sae_table=report(
            _SUMMARY["sae_table.csv"],
            caption="../report/sae_table.rst",
            category="Tables",
        ),
        sae_table_parquet=_SUMMARY["sae_table.parquet"],
        rank_agreement=report(
            _SUMMARY["rank_agreement.csv"],
            caption="../report/rank_agreement.rst",
            category="Tables",
        ),
        rank_agreement_parquet=_SUMMARY["rank_agreement.parquet"],
        psi=report(_SUMMARY["psi.csv"], caption="../report/psi.rst", category="Tables"),
        psi_parquet=_SUMMARY["psi.parquet"],
        selection=report(
            _SUMMARY["selection.csv"],
            caption="../report/selection.rst",
            category="Tables",
        ),
        selection_parquet=_SUMMARY["selection.parquet"],
        paper_tables=report(
            _SUMMARY["paper_tables.csv"],
            caption="../report/paper_tables.rst",
            category="Tables",
        ),
        paper_tables_parquet=_SUMMARY["paper_tables.parquet"],
        per_latent=report(
            _SUMMARY["per_latent.csv"],
            caption="../report/per_latent.rst",
            category="Feature selection",
        ),
        per_latent_parquet=_SUMMARY["per_latent.parquet"],
        latent_tau=report(
            _SUMMARY["latent_tau.csv"],
            caption="../report/latent_tau.rst",
            category="Feature selection",
        ),
        latent_tau_parquet=_SUMMARY["latent_tau.parquet"],
        reliability=report(
            _SUMMARY["reliability.csv"],
            caption="../report/reliability.rst",
            category="How much is signal",
        ),
        reliability_parquet=_SUMMARY["reliability.parquet"],
        noise_ceiling=report(
            _SUMMARY["noise_ceiling.csv"],
            caption="../report/noise_ceiling.rst",
            category="How much is signal",
        ),
        noise_ceiling_parquet=_SUMMARY["noise_ceiling.parquet"],
        markdown=_SUMMARY["summary.md"],
        json=_SUMMARY["summary.json"],
        interp_vs_steering=report(
            _SUMMARY["plots/interp_vs_steering"],
            caption="../report/interp_vs_steering.rst",
            category="Rank agreement",
        ),
        metrics_vs_steering=report(
            _SUMMARY["plots/metrics_vs_steering"],
            caption="../report/metrics_vs_steering.rst",
            category="Rank agreement",
        ),
        tau_by_subgroup=report(
            _SUMMARY["plots/tau_by_subgroup"],
            caption="../report/tau_by_subgroup.rst",
            category="Rank agreement",
        ),
        selection_plot=report(
            _SUMMARY["plots/selection"],
            caption="../report/selection_plot.rst",
            category="Feature selection",
        ),
        achieved_l0=report(
            _SUMMARY["plots/achieved_l0"],
            caption="../report/achieved_l0.rst",
            category="Training",
        ),
        input_output=report(
            _SUMMARY["plots/input_output"],
            caption="../report/input_output.rst",
            category="Feature selection",
        ),
    log:
        "logs/summary/aggregate.log",
    benchmark:
        "logs/benchmarks/summary/aggregate.tsv"
    conda:
        "../../envs/saesteer.yaml"
    params:
        config={
            "models": config["models"],
            "architectures": config["architectures"],
            "sparsities": config["sparsities"],
            **JUDGE_PARAMS,
            "aggregate": config.get("aggregate", {}),
        },
    script:
        "../scripts/aggregate.py"

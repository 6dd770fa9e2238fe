"""Command line: `saesteer cost`, `saesteer grid` (inspect a config before running it),
`saesteer table` (what the grid's jobs have produced so far), `saesteer tiny-models` (the
tiny random paper-family models of tests and CI), `saesteer check-run` (a finished
workflow run's outputs: present, valid against their schemas, agreeing with each other, every
SAE a working one), `saesteer judge-agreement` (two judges' rankings of the same grid's SAEs
compared, per measure), `saesteer config-docs` (config/README.md, generated from the config
schema) and `saesteer rerun` (compute one SAE of a grouped rule again: docs/running.md)."""

from __future__ import annotations

import argparse
import sys

from saesteer.config import ConfigError, grid_from_config, load_config
from saesteer.cost_shape import format_estimate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saesteer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("cost", "disk and GPU-hour estimate of a grid"),
        ("grid", "list the SAEs of a grid"),
        ("table", "training and evaluation figures of every SAE (markdown, or --csv)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default="config/config.yaml", help="base config (default: %(default)s)")
        p.add_argument("--configfile", action="append", default=[], help="overrides, merged like snakemake --configfile")
        if name == "table":
            p.add_argument("--results", default="results", help="results directory (default: %(default)s)")
            p.add_argument("--csv", help="also write the full table to this CSV file")
    tiny = sub.add_parser("tiny-models", help="write tiny random Gemma-2 / Qwen-2.5 / Llama models (tests, CI)")
    tiny.add_argument("out_dir", help="folder receiving tiny-{family}/ model folders")
    tiny.add_argument("--hf-home", help="also lay them out as a Hugging Face cache here (HF_HOME), for source: hub")
    tiny.add_argument("--families", nargs="+", help="subset of gemma2 qwen2 llama (default: all)")
    tiny.add_argument("--seed", type=int, default=0)
    check = sub.add_parser("check-run", help="check a finished run: every per-SAE file present and valid, no missing cell")
    check.add_argument("--directory", default=".", help="the run's working directory (default: %(default)s)")
    check.add_argument("--configfile", dest="run_config", help="its config (default: DIRECTORY/config/config.yaml)")
    check.add_argument("--l0-tolerance", type=float, help="achieved L0 within this fraction of the target (default 0.3)")
    check.add_argument("--min-explained-variance", type=float, help="explained variance floor of every SAE (default 0.2)")
    check.add_argument("--sae-tokens", type=int, help="held-out activations each SAE is evaluated on, 0 for none (default 4096)")
    check.add_argument(
        "--no-cache-checksums", action="store_true", help="do not hash the activation shards (TBs on the paper grid)"
    )
    check.add_argument(
        "--no-planted-check", action="store_true", help="skip the CI grid's planted-answer check (for a subset of that grid)"
    )
    agree = sub.add_parser(
        "judge-agreement", help="tau-b between two judges' rankings of the same grid's SAEs, per measure (docs/judges.md)"
    )
    agree.add_argument("results_a", help="results directory rated by judge A (e.g. .test/results)")
    agree.add_argument("results_b", help="results directory of the same grid rated by judge B (e.g. .test/llm-judge/results)")
    agree.add_argument("--config", default="config/config.yaml", help="the grid's config (default: %(default)s)")
    agree.add_argument("--configfile", action="append", default=[], help="overrides, merged like snakemake --configfile")
    agree.add_argument("--out", help="also write judge_agreement.csv and judge_agreement.md to this folder")
    docs = sub.add_parser("config-docs", help="print config/README.md, generated from the config schema")
    docs.add_argument("--output", help="write it to this file instead of stdout")
    rerun = sub.add_parser(
        "rerun",
        help="compute SAEs' outputs of a rule again, restoring the rest of their group (arguments after -- go to snakemake)",
        epilog="arguments after -- go to snakemake, e.g. -- --profile slurm (with -n among them no store entry is removed); docs/running.md",
    )
    rerun.add_argument("--rule", required=True, help="the per-SAE rule, e.g. steer_eval")
    rerun.add_argument("targets", nargs="*", help="SAE folders results/<model>/<arch>/<sparsity> (or files in them)")
    rerun.add_argument("--all", dest="every_sae", action="store_true", help="every SAE of the rule (the store bypassed)")
    rerun.add_argument(
        "--directory", default=".", help="the run's working directory, also passed to snakemake (default: %(default)s)"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.command == "rerun":
        from saesteer.sae_rerun import RerunError
        from saesteer.sae_rerun import rerun as run_rerun

        try:
            return run_rerun(args.rule, args.targets, args.every_sae, args.directory, passed)
        except RerunError as exc:
            print(exc, file=sys.stderr)
            return 2
    if args.command == "tiny-models":
        import logging
        from pathlib import Path

        from saesteer.tiny_models import write_all

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        write_all(Path(args.out_dir), Path(args.hf_home) if args.hf_home else None, args.families, args.seed)
        return 0
    if args.command == "check-run":
        from dataclasses import replace
        from pathlib import Path

        from saesteer.checks.health import CheckSettings
        from saesteer.run_check import check_run

        directory = Path(args.directory)
        given = {
            "l0_tolerance": args.l0_tolerance,
            "min_explained_variance": args.min_explained_variance,
            "max_tokens": args.sae_tokens,
            "verify_caches": False if args.no_cache_checksums else None,
            "planted_answer": False if args.no_planted_check else None,
        }
        settings = replace(CheckSettings(), **{k: v for k, v in given.items() if v is not None})
        problems, checked = check_run(
            directory, Path(args.run_config) if args.run_config else directory / "config" / "config.yaml", settings
        )
        for line in problems:
            print(f"FAIL {line}", file=sys.stderr)
        print(f"check-run: {checked} files and checks, {len(problems)} problems")
        return 1 if problems else 0
    if args.command == "config-docs":
        from saesteer.config_docs import render, write

        if args.output:
            write(args.output)
        else:
            sys.stdout.write(render())
        return 0
    try:
        config = load_config(args.config, args.configfile)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "cost":
        print(format_estimate(config))
    elif args.command == "judge-agreement":
        from saesteer.aggregate.config import AggregateConfig
        from saesteer.aggregate.judge_agreement import JudgeAgreementError, agreement_markdown, compare_results, write_agreement

        cfg = AggregateConfig.from_config(config.get("aggregate"))
        try:
            table = compare_results(
                grid_from_config(config),
                args.results_a,
                args.results_b,
                n_bootstrap=cfg.n_bootstrap,
                n_permutations=cfg.n_permutations,
                confidence=cfg.confidence,
                seed=cfg.seed,
            )
        except JudgeAgreementError as exc:
            print(f"judge-agreement: {exc}", file=sys.stderr)
            return 2
        lines = agreement_markdown(table, args.results_a, args.results_b, cfg.confidence)
        if args.out:
            write_agreement(table, args.out, lines)
        print("\n".join(lines))
    elif args.command == "table":
        from saesteer.tables import grid_table, to_markdown

        frame = grid_table(config, args.results)
        if args.csv:
            frame.to_csv(args.csv, index=False)
        print(to_markdown(frame))
        missing = frame[~frame["trained"] | ~frame["evaluated"]]
        if len(missing):
            print(f"\n{len(missing)} of {len(frame)} SAEs not yet trained or evaluated.")
    else:
        for cell in grid_from_config(config).cells():
            print(f"results/{cell.path}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The config's ``aggregate`` block as a dataclass (defaults = src/saesteer/schemas/config.schema.yaml).

The aggregation stage ranks SAEs by interpretability and by steering and asks whether the
rankings agree (docs/method.md, "Rank agreement"): Kendall tau-b, 95% BCa bootstrap intervals
(Efron 1987) and permutation p-values, over all SAEs, per model / architecture / sparsity,
and the axis-conditioned psi of Wang, Hu, Wang & Zou 2025 (arXiv 2510.03659).

The defaults are the schema's (``saesteer.schemas.schema_defaults``; tests/test_config_defaults.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults


def interp_metrics() -> tuple[str, ...]:
    """Interpretability metrics that can be ranked against steering: the headline numbers of
    the registered metrics (saesteer.evals.metrics), each oriented so that higher is better.
    Built in: autointerp score (the paper's interpretability score; random detection excerpts
    labelled by eval.autointerp.random_labels), autointerp_alt (the same judge calls, random
    excerpts labelled by the other rule: SAEBench's code vs the paper's appendix B.1),
    CE-loss-recovered, explained variance, sparse-probing accuracy of the top-k SAE latents
    (k = ``probing_k``), and absorption as 1 - mean absorption fraction (absorption is worse
    when higher)."""
    from saesteer.evals.metrics import headlines

    return tuple(h.column for h in headlines())


_TRUE = {"true": True, "false": False}


class AggregateConfigError(ValueError):
    """The ``aggregate`` block is invalid; the message names the field."""


_D = schema_defaults("aggregate")


@dataclass(frozen=True)
class AggregateConfig:
    partial: bool = _D["partial"]
    """Aggregate only the per-SAE files that exist (after a ``--keep-going`` run with
    failures); without it the aggregate rule asks for every SAE of the grid."""
    min_saes: int = _D["min_saes"]
    """No statistic over fewer SAEs than this: the row keeps n and a reason, the value is null."""
    n_bootstrap: int = _D["n_bootstrap"]
    """Bootstrap resamples of the SAEs (pairs of scores) for the BCa intervals."""
    n_permutations: int = _D["n_permutations"]
    """Permutations of the steering scores for the two-sided permutation p-values."""
    confidence: float = _D["confidence"]
    seed: int = _D["seed"]
    """Seed of the numpy Generator behind every resample and permutation."""
    metrics: tuple[str, ...] = tuple(_D["metrics"])
    """Interpretability metrics to rank (a subset of interp_metrics()); autointerp heads the summary."""
    probing_k: int = _D["probing_k"]
    """Sparse probing: the accuracy of the probe on the top-k SAE latents, this k."""
    compare_judges: tuple[str, ...] = ()
    """Results directories of this grid rated by another judge: the summary reports the
    agreement of the two judges' rankings (``judge_agreement``)."""

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> AggregateConfig:
        block = dict(block or {})
        reject_unknown_keys("aggregate", block, cls, AggregateConfigError)
        if "partial" in block:
            block["partial"] = _as_bool(block["partial"])
        for name in _INTEGER_FIELDS:
            if name in block:
                block[name] = _as_number(name, block[name], int)
        if "confidence" in block:
            block["confidence"] = _as_number("confidence", block["confidence"], float)
        if "metrics" in block:
            block["metrics"] = tuple(block["metrics"])
        if "compare_judges" in block:
            value = block["compare_judges"]
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value or ()):
                raise AggregateConfigError(f"aggregate.compare_judges: {value!r} must be a list of results directories")
            block["compare_judges"] = tuple(value)
        cfg = cls(**block)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not isinstance(self.min_saes, int) or self.min_saes < 2:
            raise AggregateConfigError(f"aggregate.min_saes: {self.min_saes!r} must be an integer >= 2 (tau-b needs a pair)")
        for name in ("n_bootstrap", "n_permutations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AggregateConfigError(f"aggregate.{name}: {value!r} must be a positive integer")
        if not 0.0 < float(self.confidence) < 1.0:
            raise AggregateConfigError(f"aggregate.confidence: {self.confidence!r} must lie strictly between 0 and 1")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise AggregateConfigError(f"aggregate.seed: {self.seed!r} must be a non-negative integer")
        known = interp_metrics()
        unknown = [m for m in self.metrics if m not in known]
        if unknown or not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise AggregateConfigError(
                f"aggregate.metrics: {list(self.metrics)} must be distinct, non-empty names from {list(known)}"
            )
        if not isinstance(self.probing_k, int) or self.probing_k < 1:
            raise AggregateConfigError(f"aggregate.probing_k: {self.probing_k!r} must be a positive integer")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = list(self.metrics)
        if self.compare_judges:
            out["compare_judges"] = list(self.compare_judges)
        else:  # recorded only when set: a summary without it stays as it was
            del out["compare_judges"]
        return out


_INTEGER_FIELDS = ("min_saes", "n_bootstrap", "n_permutations", "seed", "probing_k")


# ``snakemake --config aggregate='{partial: true, min_saes: 3}'`` parses the nested value with
# YAML's BaseLoader (snakemake.cli.parse_config), which leaves every scalar a string ("true",
# "3"); the schema accepts such strings for this block and these helpers convert them.


def _as_number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise AggregateConfigError(f"aggregate.{name}: {value!r} is not a {kind.__name__}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AggregateConfigError(f"aggregate.{name}: {value!r} is not a {kind.__name__}")
    if kind is int and not isinstance(value, int):
        raise AggregateConfigError(f"aggregate.{name}: {value!r} is not an integer")
    return kind(value)


def _as_bool(value: Any) -> bool:
    """``partial`` as given in a config file (a boolean) or on the command line ("true")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE:
        return _TRUE[value.lower()]
    raise AggregateConfigError(f"aggregate.partial: {value!r} is not a boolean (true or false)")

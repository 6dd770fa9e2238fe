"""The config's ``steering_vectors`` block (defaults = src/saesteer/schemas/config.schema.yaml).

Steering vectors next to the SAE latents (docs/steering-vectors.md; Mayne et al. 2024,
arXiv 2411.08790; AxBench's DiffMean, Wu et al. 2025, arXiv 2501.17148). Off by default: the
rule ``steering_vectors`` adds ``len(methods) x`` steer_eval's steered generations per SAE.
The defaults are the schema's (``saesteer.schemas.schema_defaults``; tests/test_config_defaults.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from saesteer.config_blocks import reject_unknown_keys
from saesteer.schemas import schema_defaults

METHODS = ("diffmean", "naive", "signed")
"""What is steered: the DiffMean (or user) vector, its naive SAE reconstruction
decode(encode(v)) - decode(0), its signed k-term fit over the decoder rows."""
_TRUE = {"true": True, "false": False}


class VectorsConfigError(ValueError):
    """The ``steering_vectors`` block is inconsistent; the message names the field."""


_D = schema_defaults("steering_vectors")


@dataclass(frozen=True)
class SteeringVectorsConfig:
    enabled: bool = _D["enabled"]
    """Run the rule per SAE and its aggregation (adds generations: see ``make cost``)."""
    methods: tuple[str, ...] = tuple(_D["methods"])
    max_concepts: int = _D["max_concepts"]
    """Steer only steer_eval's first this many concepts (0 = all); the latent's score is then
    taken over the same concepts."""
    n_positive: int = _D["n_positive"]
    """Positive positions per concept: the latent's largest held-out activations..."""
    min_activation_frac: float = _D["min_activation_frac"]
    """...among positions where it reaches at least this fraction of its held-out maximum."""
    n_negative: int = _D["n_negative"]
    """Negative positions: uniformly random held-out positions (BOS/EOS/padding excluded)."""
    top_k: int = _D["top_k"]
    """Top-k latents compared between encode(v), encode(0) and the in-distribution difference."""
    bias_dominated_overlap: float = _D["bias_dominated_overlap"]
    """encode(v)'s top-k overlapping encode(0)'s by at least this flags the Mayne effect."""
    fit_k: int = _D["fit_k"]
    """Terms of the signed (orthogonal matching pursuit) fit over the unit decoder rows."""
    n_report: int = _D["n_report"]
    """Top positive / negative latents reported (with autointerp explanations where known)."""
    vectors_file: str | None = _D["vectors_file"]
    """A safetensors file of user vectors, tensor name = latent index; placeholders {model},
    {arch}, {sparsity}. Concepts it does not name get DiffMean."""
    seed: int = _D["seed"]
    """Seed of the random negative positions."""
    device: str = _D["device"]

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> SteeringVectorsConfig:
        block = dict(block or {})
        reject_unknown_keys("steering_vectors", block, cls, VectorsConfigError)
        if isinstance(block.get("enabled"), str):  # snakemake --config leaves strings
            value = block["enabled"].strip().lower()
            if value not in _TRUE:
                raise VectorsConfigError(f"steering_vectors.enabled: {block['enabled']!r} is not true or false")
            block["enabled"] = _TRUE[value]
        if "methods" in block:
            block["methods"] = tuple(block["methods"])
        cfg = cls(**block)
        cfg.check()
        return cfg

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise VectorsConfigError(
                f"steering_vectors.methods: {list(self.methods)}; distinct values among {list(METHODS)}, at least one"
            )
        for name in ("n_positive", "n_negative", "top_k", "fit_k", "n_report"):
            if int(getattr(self, name)) < 1:
                raise VectorsConfigError(f"steering_vectors.{name}: {getattr(self, name)} must be at least 1")
        if self.max_concepts < 0:
            raise VectorsConfigError(f"steering_vectors.max_concepts: {self.max_concepts} must be 0 (all) or more")
        if not 0.0 <= self.min_activation_frac <= 1.0:
            raise VectorsConfigError(f"steering_vectors.min_activation_frac: {self.min_activation_frac} must be in [0, 1]")
        if not 0.0 < self.bias_dominated_overlap <= 1.0:
            raise VectorsConfigError(f"steering_vectors.bias_dominated_overlap: {self.bias_dominated_overlap} must be in (0, 1]")

    def vectors_path(self, model: str, arch: str, sparsity: str) -> str | None:
        if not self.vectors_file:
            return None
        try:
            return self.vectors_file.format(model=model, arch=arch, sparsity=sparsity)
        except (KeyError, IndexError) as exc:
            raise VectorsConfigError(
                f"steering_vectors.vectors_file: {self.vectors_file!r} has an unknown placeholder {exc}; use {{model}}, {{arch}}, {{sparsity}}"
            ) from exc

    def vectors_input(self, model: str, arch: str, sparsity: str) -> dict[str, str]:
        """The rule's extra input: {"vectors_file": path} when a file is configured, else {}."""
        path = self.vectors_path(model, arch, sparsity)
        return {"vectors_file": path} if path else {}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

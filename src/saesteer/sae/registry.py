"""Architecture descriptors: everything the project knows about an SAE architecture, by name.

Each architecture module (``saesteer/sae/<arch>.py``) ends with ``register(ArchSpec(...))``:
its name (the config's ``architectures`` entry and the results folder), label and colour
(plots), its SAE class and options dataclass, how its sparsity is set (``k``: the target
L0 is k; ``penalty``: a coefficient the trainer calibrates toward the target; ``target``:
the loss takes the target itself), how it is saved in SAELens's format and read back, and
its optimiser hints. Every table keyed by architecture name (training options, SAELens
folding, pretrained import, required tensors, plot colours, the config check) is read from
these descriptors, so adding an architecture is one new file (docs/extending.md).

The registry finds the built-in architectures by importing every module of this package
except the infrastructure ones (:data:`_NOT_ARCHITECTURES`); code elsewhere (a plug-in, a
test) may call :func:`register` itself. Names are listed in ``order`` (then by name), so the
listing does not depend on import order.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from saesteer.sae.base import BaseSAE

ArchSparsity = Literal["k", "penalty", "target"]

BASE_TENSORS: dict[str, tuple[str, ...]] = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)}
"""Tensors every SAELens-format SAE holds, with their shapes."""


@dataclass(frozen=True)
class NoOptions:
    """Options dataclass of an architecture without options."""


def _default_saelens_state(spec: ArchSpec, sae: BaseSAE) -> dict[str, Tensor]:
    return {name: getattr(sae, name).detach().float() for name in spec.tensors}


def _default_shift(state: dict[str, Tensor], shift: Tensor) -> None:
    state["b_enc"] = state["b_enc"] + shift


@dataclass(frozen=True)
class ArchSpec:
    """One SAE architecture, as the rest of the project sees it."""

    name: str
    """Config and folder name (``architectures: [...]``, ``results/{model}/{name}/``)."""
    sae_class: type[BaseSAE]
    label: str
    """Display name in plots and tables."""
    colour: str
    """Plot colour (hex)."""
    sparsity: ArchSparsity
    """``k``: built with k = target L0; ``penalty``: the trainer's controller sets the
    coefficient toward the target; ``target``: built with the target L0, and the trainer
    still supplies a (fixed or calibrated) coefficient."""
    saelens_arch: str
    """SAELens's inference ``architecture`` it is saved as (cfg.json)."""
    options: type = NoOptions
    """Frozen dataclass of the architecture's keyword arguments (defaults included)."""
    order: int = 1000
    """Position in listings (the five of the paper: 10-50)."""
    saelens_native: bool = False
    """Importing a SAELens SAE of ``saelens_arch`` gives this architecture by default."""
    tensors: tuple[str, ...] = ("b_enc",)
    """SAELens tensors beyond W_enc, W_dec, b_dec; each of shape [d_sae]."""
    legacy_training_keys: Mapping[str, str] = field(default_factory=dict)
    """``training.<key>`` -> option field: the flat training keys that set this
    architecture's options (kept working; ``training.arch_options.<name>`` overrides them)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas when ``training.adam_betas`` is null."""
    coef_init: Mapping[str, float] = field(default_factory=dict)
    """Starting sparsity coefficient per coefficient key (:meth:`key_for_coef`: the name, or
    what ``coef_key`` returns), for penalty/target architectures: the defaults of
    ``training.sparsity_coef_init``, which the config overrides key by key."""
    coef_key: Callable[[Any], str] | None = None
    """Options -> key in the coefficient tables (default: the name)."""
    calibrates: Callable[[Any], bool] | None = None
    """Options -> whether the controller tunes the coefficient (default: sparsity is ``penalty``)."""
    saelens_state: Callable[[ArchSpec, BaseSAE], dict[str, Tensor]] = _default_saelens_state
    """The code-space tensors written beside W_enc/W_dec/b_dec (unscaled)."""
    saelens_cfg: Callable[[BaseSAE], dict[str, Any]] = lambda sae: {}
    """Extra cfg.json keys (e.g. TopK's ``k``)."""
    shift_encoder_bias: Callable[[dict[str, Tensor], Tensor], None] = _default_shift
    """Adds a pre-activation shift to the encoder bias tensors of a SAELens state (moves
    ``apply_b_dec_to_input`` between conventions)."""
    unfold_saelens: Callable[[BaseSAE, dict[str, Tensor], dict[str, Any], str], None] | None = None
    """Adapts a SAELens state (in place) before it is copied into a fresh ``sae``."""

    def make_options(self, options: Any = None) -> Any:
        """The options dataclass from an instance, or from a mapping (keys that are not
        fields, or are None, are ignored: one flat mapping may serve every architecture)."""
        if isinstance(options, self.options):
            return options
        fields = {f.name for f in dataclasses.fields(self.options)}
        given = {k: v for k, v in dict(options or {}).items() if k in fields and v is not None}
        return self.options(**given)

    def build(self, d_in: int, d_sae: int, target_l0: int, act_scale: float = 1.0, options: Any = None) -> BaseSAE:
        kwargs = dataclasses.asdict(self.make_options(options))
        if self.sparsity == "k":
            kwargs["k"] = int(target_l0)
        elif self.sparsity == "target":
            kwargs["target_l0"] = float(target_l0)
        return self.sae_class(d_in, d_sae, act_scale=act_scale, **kwargs)

    def key_for_coef(self, options: Any) -> str:
        return self.coef_key(self.make_options(options)) if self.coef_key else self.name

    def calibrated(self, options: Any) -> bool:
        if self.calibrates is not None:
            return bool(self.calibrates(self.make_options(options)))
        return self.sparsity == "penalty"

    def required_tensors(self) -> dict[str, tuple[str, ...]]:
        return {**BASE_TENSORS, **{name: ("d_sae",) for name in self.tensors}}


_REGISTRY: dict[str, ArchSpec] = {}
_LOCK = threading.RLock()
_DISCOVERED = False

_NOT_ARCHITECTURES = frozenset(
    {"base", "sparse", "registry", "saelens_io", "pretrained", "import_pretrained", "job", "random_decoder"}
)
"""Modules of this package that hold no architecture (not imported by the discovery)."""


def register(spec: ArchSpec, *, replace: bool = False) -> ArchSpec:
    """Add ``spec`` to the registry (its module calls this at import); returns it."""
    if not spec.name or not spec.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"architecture name {spec.name!r}: use letters, digits, '_' or '-'")
    if not dataclasses.is_dataclass(spec.options):
        raise TypeError(f"architecture {spec.name!r}: options must be a dataclass, got {spec.options!r}")
    with _LOCK:
        old = _REGISTRY.get(spec.name)
        if old is not None and not replace and old.sae_class is not spec.sae_class:
            raise ValueError(f"architecture {spec.name!r} is already registered (by {old.sae_class.__module__})")
        _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove ``name`` (tests that register a toy architecture)."""
    with _LOCK:
        _REGISTRY.pop(name, None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    with _LOCK:
        if _DISCOVERED:
            return
        _DISCOVERED = True
        package = importlib.import_module("saesteer.sae")
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if module.name.startswith("_") or module.name in _NOT_ARCHITECTURES:
                continue
            importlib.import_module(f"saesteer.sae.{module.name}")


def specs() -> list[ArchSpec]:
    """Every registered architecture, in listing order."""
    _discover()
    with _LOCK:
        return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def names() -> tuple[str, ...]:
    return tuple(s.name for s in specs())


def get_arch(name: str) -> ArchSpec:
    _discover()
    with _LOCK:
        spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown SAE architecture {name!r}; known: {', '.join(names())}")
    return spec


def arch_label(name: str) -> str:
    """The display label of architecture ``name`` (its descriptor's ``label``); an
    unregistered name (a results folder of an architecture not installed here) as is."""
    _discover()
    with _LOCK:
        spec = _REGISTRY.get(name)
    return name if spec is None else spec.label


def coef_inits() -> dict[str, float]:
    """Every registered architecture's starting coefficients (``ArchSpec.coef_init``), by
    coefficient key, in listing order: the defaults of ``training.sparsity_coef_init``."""
    out: dict[str, float] = {}
    owner: dict[str, str] = {}
    for spec in specs():
        for key, value in spec.coef_init.items():
            if key in owner:
                raise ValueError(f"coefficient key {key!r} of architecture {spec.name!r} is already {owner[key]!r}'s")
            out[key], owner[key] = float(value), spec.name
    return out


def get_sae_class(arch: str) -> type[BaseSAE]:
    return get_arch(arch).sae_class


def build_sae(
    arch: str,
    d_in: int,
    d_sae: int,
    target_l0: int,
    act_scale: float = 1.0,
    options: Any = None,
) -> BaseSAE:
    """Instantiate (uninitialised weights) an SAE of ``arch`` aiming at ``target_l0``.

    ``options``: the architecture's options dataclass, or a mapping whose keys that
    ``arch`` does not take are ignored (so one options dict can serve every architecture).
    """
    return get_arch(arch).build(d_in, d_sae, target_l0, act_scale, options)


# ---- tables derived from the descriptors -------------------------------------------------


class ArchTable(Mapping[str, Any]):
    """A read-only ``{architecture name: descriptor attribute}`` view of the registry
    (e.g. ``ArchTable("colour")``), current at every access."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str) -> Any:
        try:
            spec = get_arch(name)
        except ValueError:
            raise KeyError(name) from None
        return getattr(spec, self.attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(names())

    def __repr__(self) -> str:
        return f"ArchTable({self.attribute!r}, {dict(self)!r})"


def saelens_to_ours() -> dict[str, tuple[str, ...]]:
    """SAELens inference architecture -> ours that it can hold (the native one first)."""
    out: dict[str, list[str]] = {}
    for spec in sorted(specs(), key=lambda s: not s.saelens_native):
        out.setdefault(spec.saelens_arch, []).append(spec.name)
    return {k: tuple(v) for k, v in out.items()}


def saelens_native(saelens_arch: str) -> str | None:
    """Our architecture a SAELens ``saelens_arch`` SAE becomes by default (None: unknown)."""
    held = saelens_to_ours().get(saelens_arch)
    return held[0] if held else None


def saelens_required_tensors() -> dict[str, dict[str, tuple[str, ...]]]:
    """SAELens architecture -> the tensors (and shapes) its files must hold."""
    return {s.saelens_arch: s.required_tensors() for s in specs() if s.saelens_native}


def known_tensors() -> set[str]:
    """Every tensor name some architecture saves."""
    return set(BASE_TENSORS).union(*(s.tensors for s in specs()))


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

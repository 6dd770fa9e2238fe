"""The architecture registry is the one table of architectures: schemas enumerate none (or
exactly the registered ones), derived tables cover every name, old training keys still set
the options, and a config without ``arch_options`` keeps its summaries byte for byte."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from saesteer.sae import registry
from saesteer.schemas import SCHEMA_DIR
from saesteer.training.config import TrainConfig

PAPER_ARCHS = ("relu", "topk", "batchtopk", "gated", "jumprelu")


def _enums(node: Any, path: str = "") -> Iterator[tuple[str, list[Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("enum"), list):
            yield path, node["enum"]
        for key, value in node.items():
            yield from _enums(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _enums(value, f"{path}[{i}]")


@pytest.mark.parametrize("schema", sorted(p.name for p in SCHEMA_DIR.iterdir() if p.suffix in (".json", ".yaml")))
def test_every_schema_enum_of_architectures_equals_the_registry(schema):
    path = SCHEMA_DIR / schema
    data = yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())
    names = set(registry.names())
    for where, enum in _enums(data):
        if names & set(map(str, enum)):
            assert set(enum) == names, f"{schema}{where}: enumerates {enum}, the registry holds {sorted(names)}"


def test_registry_lists_the_paper_architectures_first_and_derives_its_tables():
    names = registry.names()
    assert names[:5] == PAPER_ARCHS and "matryoshka_batchtopk" in names
    for name in names:
        spec = registry.get_arch(name)
        assert spec.sae_class.arch == name
        assert set(spec.required_tensors()) >= {"W_enc", "W_dec", "b_dec", *spec.tensors}
    from saesteer.aggregate.plots import ARCH_COLOURS, ARCH_NAMES
    from saesteer.sae.saelens_io import SAELENS_ARCH

    assert list(ARCH_COLOURS) == list(ARCH_NAMES) == list(SAELENS_ARCH) == list(names)
    assert len(set(ARCH_COLOURS.values())) == len(names)  # one colour each
    # SAELens -> ours: each SAELens architecture's native one first
    assert registry.saelens_to_ours() == {
        "standard": ("relu",),
        "topk": ("topk",),
        "gated": ("gated",),
        "jumprelu": ("jumprelu", "batchtopk", "matryoshka_batchtopk"),
    }
    with pytest.raises(ValueError, match="unknown SAE architecture 'standard'"):
        registry.get_arch("standard")


def test_old_training_keys_set_the_options_and_arch_options_override_them():
    cfg = TrainConfig(jumprelu_bandwidth=0.01, batchtopk_threshold_beta=0.9, aux_k=7)
    assert cfg.options_for("jumprelu").bandwidth == 0.01
    assert cfg.options_for("batchtopk").threshold_beta == 0.9
    assert cfg.options_for("matryoshka_batchtopk").aux_k == cfg.options_for("topk").aux_k == 7
    over = TrainConfig.from_dict(
        {
            "jumprelu_bandwidth": 0.01,
            "arch_options": {"jumprelu": {"bandwidth": 0.02}, "matryoshka_batchtopk": {"group_fractions": [0.25, 0.75]}},
        }
    )
    assert over.options_for("jumprelu").bandwidth == 0.02
    assert over.options_for("matryoshka_batchtopk").group_fractions == [0.25, 0.75]
    assert over.to_dict()["arch_options"]["jumprelu"] == {"bandwidth": 0.02}  # part of the fingerprint
    with pytest.raises(ValueError, match=r"training.arch_options.jumprelu: unknown option\(s\) \['bandwith'\]"):
        TrainConfig.from_dict({"arch_options": {"jumprelu": {"bandwith": 0.02}}})
    with pytest.raises(ValueError, match="training.arch_options.sparsemax: unknown architecture"):
        TrainConfig.from_dict({"arch_options": {"sparsemax": {}}})
    # optimiser hints and coefficient keys come from the descriptors
    assert cfg.adam_betas_for("jumprelu") == (0.0, 0.999) and cfg.adam_betas_for("matryoshka_batchtopk") == (0.9, 0.999)
    l0 = TrainConfig(jumprelu_sparsity_loss="l0")
    assert (cfg.coef_key("jumprelu"), l0.coef_key("jumprelu")) == ("jumprelu", "jumprelu_l0")
    assert (cfg.calibrates("jumprelu"), l0.calibrates("jumprelu"), cfg.calibrates("relu")) == (False, True, True)


def test_a_config_without_arch_options_keeps_its_training_record():
    """train_summary.json's ``training`` and the checkpoint fingerprint are ``to_dict``: an
    unused ``arch_options`` must not appear (outputs of existing configs unchanged)."""
    cfg = TrainConfig.from_dict({"arch_options": {}})
    assert "arch_options" not in cfg.to_dict() and "arch_options" not in cfg.result_fields()


def test_config_check_uses_the_registry():
    from saesteer.config import architecture_errors

    assert architecture_errors({"architectures": list(registry.names())}) == []
    errors = architecture_errors({"architectures": ["topk"], "models": [{"pretrained": [{"arch": "sparsemax"}]}]})
    assert errors == [f"config field models[0].pretrained[0].arch: 'sparsemax' is not one of {list(registry.names())}"]


def test_registering_twice_is_refused_and_unregister_removes():
    spec = registry.get_arch("topk")
    registry.register(spec)  # the same class again: a re-import, accepted
    with pytest.raises(ValueError, match="already registered"):
        registry.register(
            registry.ArchSpec(
                name="topk",
                sae_class=registry.get_sae_class("relu"),
                label="x",
                colour="#000000",
                sparsity="k",
                saelens_arch="topk",
            )
        )
    assert registry.get_arch("topk") is spec


def test_starting_coefficients_come_from_the_descriptors_and_unknown_keys_are_refused():
    """training.sparsity_coef_init enumerates no architecture: its defaults are the descriptors'
    coef_init (the values the schema listed before, in its order), a config entry overrides one
    key, and a key no registered architecture uses is refused naming the field."""
    from saesteer.schemas import config_block_schema

    node = config_block_schema("training", "sparsity_coef_init")
    assert "properties" not in node and node["additionalProperties"] == {"type": "number", "exclusiveMinimum": 0}
    assert list(registry.coef_inits().items()) == [("relu", 0.03), ("gated", 0.03), ("jumprelu", 1.0), ("jumprelu_l0", 0.001)]
    assert TrainConfig().sparsity_coef_init == registry.coef_inits()
    cfg = TrainConfig.from_dict({"tokens": 64, "batch_size": 64, "sparsity_coef_init": {"gated": 0.5}})
    assert cfg.initial_coef("gated", 20) == 0.5 and cfg.initial_coef("relu", 20) == 0.03
    assert cfg.sparsity_coef_init == {**registry.coef_inits(), "gated": 0.5}
    for bad, match in (({"sparsemax": 0.1}, "sparsity_coef_init.sparsemax: no registered"), ({"relu": 0}, "relu must be > 0")):
        with pytest.raises(ValueError, match=match):
            TrainConfig.from_dict({"tokens": 64, "batch_size": 64, "sparsity_coef_init": bad})
    # A penalty architecture registered from a test brings its own default: no schema edit.
    relu = registry.get_arch("relu")
    toy = dataclasses.replace(relu, name="toy_penalty", order=999, coef_init={"toy_penalty": 0.2})
    registry.register(toy)
    try:
        assert registry.coef_inits()["toy_penalty"] == 0.2
        assert TrainConfig.from_dict({"tokens": 64, "batch_size": 64}).initial_coef("toy_penalty", 20) == 0.2
    finally:
        registry.unregister("toy_penalty")


def test_the_workflow_config_gets_the_registry_defaults_as_validate_gave_the_schemas():
    """After Snakemake's validate(), fill_registry_defaults completes training.sparsity_coef_init
    as validate() did when the schema listed the keys: the config's entries first, then the
    missing defaults (so the rules' params, and their jobs, are unchanged)."""
    from snakemake.utils import validate

    from saesteer.config import fill_registry_defaults, load_config
    from saesteer.schemas import schema_path
    from tests.helpers import REPO

    config = load_config(REPO / ".test" / "config" / "config.yaml")
    config["training"]["sparsity_coef_init"] = {"jumprelu_l0": 0.5}
    validate(config, schema=str(schema_path("config.schema.yaml")))
    fill_registry_defaults(config)
    assert list(config["training"]["sparsity_coef_init"].items()) == [
        ("jumprelu_l0", 0.5),
        ("relu", 0.03),
        ("gated", 0.03),
        ("jumprelu", 1.0),
    ]
    assert "fill_registry_defaults(config)" in (REPO / "workflow" / "rules" / "common.smk").read_text()

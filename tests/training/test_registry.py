"""One registry mechanism: families register themselves, every config's names resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_server import REPO
from training.config import load_config
from training.registry import (
    ATTACKS,
    DATASETS,
    DEFENSES,
    DISTANCES,
    GAN_LOSSES,
    MODELS,
    SURROGATES,
    TRAINERS,
    Registry,
)


def test_an_unknown_name_says_which_registry_and_lists_the_known_ones():
    widgets: Registry[int] = Registry("widget")
    widgets.add("b", 2)
    widgets.add("a", 1)
    with pytest.raises(KeyError, match=r"unknown widget 'c'; known: \['a', 'b'\]"):
        widgets["c"]
    assert dict(widgets) == {"b": 2, "a": 1} and "a" in widgets and len(widgets) == 2


def test_a_name_registered_twice_is_refused():
    things: Registry[object] = Registry("thing")

    @things.register("x", "alias")
    def x() -> int:
        return 1

    assert things["alias"] is things["x"] is x
    with pytest.raises(ValueError, match="thing 'x' is registered twice"):
        things.add("x", x)


def test_build_calls_the_named_entry_with_the_other_keys():
    shapes: Registry[type] = Registry("shape", key="type")
    shapes.add("box", dict)
    assert shapes.build({"type": "box", "w": 2}) == {"w": 2}


def test_importing_each_package_fills_its_registry():
    import training.attacks
    import training.data.registry
    import training.defenses
    import training.losses
    import training.methods
    import training.models  # noqa: F401

    assert {"nrp", "guided_unet", "cas", "mobilenet_v2_imagenet"} <= set(MODELS)
    assert set(TRAINERS) == {"classifier", "nrp", "cafd", "arn", "adversarial", "guided", "prior"}
    assert set(DATASETS) == {"fashion_mnist", "photos"}
    assert {"fgsm", "pgd", "ssp", "stadv", "pgd_cas", "uniform_noise"} <= set(ATTACKS)
    assert set(SURROGATES) == {"cas_heads", "cas_straight_through"}
    assert set(DEFENSES) == {
        "none",
        "jpeg",
        "bit_depth",
        "median",
        "tv",
        "onnx",
        "ffdnet",
        "noise_then_denoise",
    }
    assert {"l1", "l2", "cosine"} <= set(DISTANCES) and set(GAN_LOSSES) == {"ragan", "standard"}


def names_in(config: dict, key: str) -> list[str]:
    """Every value of `key` anywhere in a config."""
    found: list[str] = []
    stack: list[object] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get(key), str):
                found.append(node[key])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


@pytest.mark.parametrize(
    "path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_name_a_committed_config_uses_is_registered(path: Path):
    import training.attacks
    import training.defenses
    import training.methods  # noqa: F401

    config = load_config(path)
    for arch in names_in(config, "arch"):
        MODELS[arch]
    for method in names_in(config, "method"):
        TRAINERS[method]
    if "data" in config:  # (cards also say `dataset:`, in words)
        DATASETS[config["data"].get("dataset", "fashion_mnist")]
    for kind in names_in(config.get("attacks", []), "kind"):
        ATTACKS[kind]
    for kind in names_in(config.get("defenses", {}), "kind"):
        DEFENSES[kind]

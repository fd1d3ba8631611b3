"""Fixture factories of the toy-world trainer tests: a tiny world from the real builder, a tiny judge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# An attribute classifier for 32 px images that trains in well under a second (untrained in effect: the
# tests that use it check plumbing, not accuracy).
TINY_CLASSIFIER = [
    "model.image_size=32",
    "model.widths=[8,16]",
    "model.hidden=32",
    "train.steps=3",
    "train.batch_size=16",
]


@pytest.fixture(scope="session")
def make_world(tmp_path_factory) -> Callable[..., Path]:
    """``make_world(name, n_train, n_val)``: a 32 px world with one pair per MMVP pattern."""
    from toyworld.build import WorldConfig, build_world

    def make(name: str, n_train: int, n_val: int) -> Path:
        root = tmp_path_factory.mktemp(name) / "world"
        build_world(WorldConfig(image_size=32, n_train=n_train, n_val=n_val, pairs_per_pattern=1), root)
        return root

    return make


@pytest.fixture(scope="session")
def make_classifier(tmp_path_factory) -> Callable[[Path, str], Path]:
    """``make_classifier(world, name)``: a tiny attribute classifier of ``world`` (TINY_CLASSIFIER)."""
    from genhancer.utils.config import load_config
    from toyworld.attributes import AttributesConfig, train_attributes

    def make(world: Path, name: str) -> Path:
        out = tmp_path_factory.mktemp(name) / "clf"
        train_attributes(load_config(AttributesConfig, None, TINY_CLASSIFIER), world, out)
        return out

    return make

"""Fixtures of the toy-CLIP tests: a tiny toy world on disk (the real generator) and a tiny CLIP's config."""

from __future__ import annotations

import pytest

TINY_OVERRIDES = [
    "model.image_size=32",
    "model.patch_size=8",
    "model.vision_width=32",
    "model.vision_layers=1",
    "model.vision_heads=2",
    "model.text_width=32",
    "model.text_layers=1",
    "model.text_heads=2",
    "model.projection_dim=16",
    "tokenizer.vocab_size=300",
    "train.batch_size=32",
    "train.warmup_steps=2",
    "train.log_every=5",
    "eval_batch_size=16",
]


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    """A tiny world from ``toyworld.build``: 96 train / 24 val images at 32 px, 2 pairs per pattern."""
    from toyworld.build import WorldConfig, build_world

    root = tmp_path_factory.mktemp("toyclip_world") / "world"
    build_world(WorldConfig(image_size=32, n_train=96, n_val=24, pairs_per_pattern=2), root)
    return root


@pytest.fixture
def tiny_overrides():
    """Config overrides for a tiny CLIP that trains in about a second (each test adds its steps)."""
    return list(TINY_OVERRIDES)

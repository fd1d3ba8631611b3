"""Shared fixtures: tiny models built from config and saved to temporary directories (no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOY_TEXTS = [
    "a photo of a red triangle pointing left",
    "two blue circles on the right",
    "a green square with a dot",
    "three yellow arrows pointing up",
    "a purple star with stripes",
    "an orange hexagon seen from above",
]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIPModel directory (32 px, patch 8) with processor and tokenizer, built from config."""
    from toyworld.models import (
        ToyClipShape,
        clip_processor,
        new_toy_clip,
        save_clip_dir,
        train_clip_tokenizer,
    )

    out = tmp_path_factory.mktemp("tiny_clip")
    tok = train_clip_tokenizer(TOY_TEXTS * 4, vocab_size=300)
    shape = ToyClipShape(
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        vision_heads=2,
        text_width=32,
        text_layers=2,
        text_heads=2,
        projection_dim=16,
    )
    model = new_toy_clip(tok, shape, seed=0)
    return save_clip_dir(model, clip_processor(tok, shape.image_size), out)

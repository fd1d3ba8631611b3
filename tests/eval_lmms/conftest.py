"""Fixtures for the lmms-eval tests: a tiny HF LLaVA directory built from config.

See ``eval.lmms.tiny``; the toy lmms data is written once per session by the toy world's writer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.lmms.tiny import build_tiny_llava


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "llava")


@pytest.fixture(scope="session")
def broken_llava_dir(tiny_llava_dir, tmp_path_factory) -> Path:
    """The tiny LLaVA whose processor expands <image> into 15 tokens for 16 image features: every forward
    pass with an image fails inside transformers (a real generation failure, not a mock)."""
    out = tmp_path_factory.mktemp("broken_llava") / "llava"
    shutil.copytree(tiny_llava_dir, out)
    cfg_path = out / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_additional_image_tokens"] = 0
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> Path:
    """A directory holding only the toy world's lmms-eval data (``<world>/lmms/``), small counts."""
    from toyworld.lmms_data import write_lmms_data

    world = tmp_path_factory.mktemp("toy_world")
    write_lmms_data(
        world / "lmms",
        seed=0,
        image_size=32,
        supersample=1,
        mmvp_pairs_per_pattern=2,
        pope_images_per_split=6,
        cv_bench_per_task=4,
        vqa_per_type=2,
    )
    return world

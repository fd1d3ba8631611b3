"""Fixtures of the stage-1 cache tests: a tiny image folder, a tiny AutoencoderKL, and a config maker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.genhancer_train.worlds import make_folder


@pytest.fixture(scope="session")
def cache_world(tmp_path_factory) -> Path:
    """12 PNG scenes of 40 px (the crops are resized to the tiny CLIP's 32 px)."""
    return make_folder(tmp_path_factory.mktemp("cache_world") / "train", 12)


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """A tiny AutoencoderKL (2x downsampling, 4 latent channels) saved as a directory."""
    from diffusers import AutoencoderKL

    out = tmp_path_factory.mktemp("cache_vae")
    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def make_cfg(tiny_clip_dir, cache_world, tmp_path):
    """``make_cfg(*overrides)`` -> GenHancerConfig: tiny CLIP, toy denoiser, pixel space, cache in
    tmp_path."""
    from genhancer.config import load_genhancer_config

    def make(*overrides: str):
        base = [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "data.source=folder",
            "data.num_workers=0",
            "train.grad_accum=1",
            f"data.path={cache_world}",
            "cache.enabled=true",
            "cache.views=3",
            "cache.build_batch_size=8",
            f"cache.dir={tmp_path / 'cache'}",
            f"train.run_dir={tmp_path / 'run'}",
            "train.batch_size=4",
        ]
        return load_genhancer_config(None, [*base, *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_vq(tmp_path_factory, cache_world) -> Path:
    """A 4x4-patch k-means tokenizer with 16 codes (32 px crops -> 8x8 ids), trained on the cache world."""
    from toyworld.vq import main

    out = tmp_path_factory.mktemp("cache_vq") / "vq"
    args = [
        "--images",
        str(cache_world),
        "--out",
        str(out),
        "patch_size=4",
        "codebook_size=16",
        "iters=3",
        "image_size=32",
        "val_fraction=0.1",
    ]
    assert main(args) == 0
    return out

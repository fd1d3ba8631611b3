"""Fixtures of the discrete-denoiser tests: toy-world pictures (rendered by the toy world's own renderer), a
patch k-means tokenizer trained on them through the real CLI, a tiny random diffusers VQModel, and a config
helper for the discrete family on the tiny CLIP."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
import torch

IMAGE_SIZE = 32  # = the tiny CLIP's input size (tests/conftest.py)


def render_world(root: Path, n: int, seed: int, size: int = IMAGE_SIZE) -> Path:
    """``root/images/00000.png ...``: n random toy scenes."""
    from toyworld.render import render_scene
    from toyworld.scene import sample_scene

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        render_scene(sample_scene(rng), size=size).save(root / "images" / f"{i:05d}.png")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> Path:
    """A tiny train split of toy scenes (32 px)."""
    return render_world(tmp_path_factory.mktemp("toy_world") / "train", 64, seed=0)


@pytest.fixture(scope="session")
def toy_world64(tmp_path_factory) -> Path:
    """Toy scenes at the toy world's own size (64 px) for the tokenizer's reconstruction test."""
    return render_world(tmp_path_factory.mktemp("toy_world64") / "train", 96, seed=0, size=64)


@pytest.fixture(scope="session")
def toy_heldout64(tmp_path_factory) -> Path:
    return render_world(tmp_path_factory.mktemp("toy_heldout64") / "val", 16, seed=1, size=64)


@pytest.fixture(scope="session")
def toy_vq64_dir(tmp_path_factory, toy_world64) -> Path:
    """The CLI's default tokenizer shape (4x4 patches: 64 px -> 16x16 tokens) with 256 codes."""
    from toyworld.vq import main

    out = tmp_path_factory.mktemp("toy_vq64") / "vq"
    assert main(["--images", str(toy_world64), "--out", str(out), "codebook_size=256", "iters=10"]) == 0
    return out


@pytest.fixture(scope="session")
def toy_vq_dir(tmp_path_factory, toy_world) -> Path:
    """A 4x4-patch, 128-code k-means tokenizer (32 px -> 8x8 tokens), trained by
    ``python -m toyworld train-vq``."""
    from toyworld.vq import main

    out = tmp_path_factory.mktemp("toy_vq") / "vq"
    assert (
        main(
            [
                "--images",
                str(toy_world),
                "--out",
                str(out),
                "patch_size=4",
                "codebook_size=128",
                "iters=5",
                "val_fraction=0.1",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tiny_vqmodel_dir(tmp_path_factory) -> Path:
    """A tiny random diffusers VQModel (2 blocks -> 2x downsampling, 32 codes) under a 'vqvae' subfolder,
    the way aMUSEd's repository holds its VQ-GAN."""
    from diffusers import VQModel

    out = tmp_path_factory.mktemp("tiny_vq_repo")
    torch.manual_seed(0)
    VQModel(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        num_vq_embeddings=32,
        norm_num_groups=4,
        sample_size=16,
    ).save_pretrained(out / "vqvae", safe_serialization=True)
    return out


@pytest.fixture
def discrete_overrides(tiny_clip_dir, toy_vq_dir):
    """Config overrides for the discrete family (toy preset) on the tiny CLIP + toy tokenizer."""
    return [
        f"encoder.path={tiny_clip_dir}",
        "denoiser.type=discrete",
        "denoiser.preset=toy",
        "latent.space=vq",
        f"latent.vae_path={toy_vq_dir}",
        "latent.vae_subfolder=null",
        "latent.patch_size=1",
        "flow.sample_steps=4",
        "data.source=folder",
        "data.num_workers=0",
        "train.grad_accum=1",
    ]


@pytest.fixture
def make_discrete_cfg(discrete_overrides):
    from genhancer.config import load_genhancer_config

    def make(*overrides: str):
        return load_genhancer_config(None, [*discrete_overrides, *overrides])

    return make


@pytest.fixture
def single_process_env(monkeypatch):
    """What a launcher would set for one process (DeepSpeed needs it; otherwise it tries MPI)."""
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
    }.items():
        monkeypatch.setenv(key, value)

"""Fixtures of the GenHancer model tests: a tiny SigLIP and a tiny AutoencoderKL, built from config and saved
to temporary directories (loaded back through the real from_pretrained paths), plus a config helper."""

from __future__ import annotations

import pytest
import torch

SIGLIP_TEXTS = ["a photo of a red square", "two blue circles", "a green star", "a yellow arrow"]


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    """A tiny SiglipModel directory (32 px, patch 8, MAP head) with a SigLIP image processor and a small
    byte-level BPE tokenizer (the real SigLIP's sentencepiece model is not needed by anything under test)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    from toyworld.models import train_clip_tokenizer

    out = tmp_path_factory.mktemp("tiny_siglip")
    tok = train_clip_tokenizer(SIGLIP_TEXTS * 4, vocab_size=300, max_length=64)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
    )
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(out)
    image_processor = SiglipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    SiglipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A tiny AutoencoderKL (2 blocks -> 2x downsampling, 4 latent channels) saved under a 'vae' subfolder,
    the way FLUX.1's repository holds its VAE."""
    from diffusers import AutoencoderKL

    out = tmp_path_factory.mktemp("tiny_vae_repo")
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    vae.save_pretrained(out / "vae", safe_serialization=True)
    return out


@pytest.fixture
def make_cfg(tiny_clip_dir):
    """``make_cfg(*overrides, yaml=None)`` -> GenHancerConfig on the tiny CLIP with the toy denoiser."""
    from genhancer.config import load_genhancer_config

    def make(*overrides: str, yaml: str | None = None):
        base = [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "flow.sample_steps=2",
        ]
        return load_genhancer_config(yaml, [*base, *overrides])

    return make

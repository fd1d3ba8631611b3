"""Architecture cards (configs/cards): each paper model built from its card on the meta device has the
published parameter count (within 1%: a wrong width, depth or vocabulary fails), every model the paper recipes
name has a card, and the encoder cards' image processors give the input size and normalisation the hub id
and the family table say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks.paper_shapes import (
    GENHANCER_CONFIGS,
    LLAVA_CONFIGS,
    build_genhancer,
    genhancer_config,
    llava_config,
)
from genhancer.utils.cards import CARDS_ROOT, card_dir, known_cards
from genhancer.utils.errors import ConfigError
from genhancer.utils.families import family_for_model_type

REPO = Path(__file__).resolve().parents[2]

# published parameter counts: the vision side GenHancer trains (CLIP: tower + visual projection; SigLIP:
# tower + attention-pool head), the FLUX.1 autoencoder, Vicuna v1.5 (Llama-2 shapes)
VISION = {
    "openai/clip-vit-large-patch14": 304e6,  # ViT-L/14
    "openai/clip-vit-large-patch14-336": 304e6,
    "facebook/metaclip-l14-fullcc2.5b": 304e6,
    "facebook/metaclip-h14-fullcc2.5b": 632e6,  # ViT-H/14
    "google/siglip-so400m-patch14-224": 428e6,  # SoViT-400m/14
    "google/siglip-so400m-patch14-384": 428e6,
}
FLUX_VAE = 84e6
LIGHTWEIGHT = 1.30e9  # the 2+4 Flux denoiser of the paper
VICUNA = {"vicuna-7b": 6.74e9, "vicuna-13b": 13.0e9}


def _near(n: int, published: float, tol: float = 0.01) -> bool:
    return abs(n - published) <= tol * published


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_model_the_recipes_name_has_a_card():
    named = set()
    for name in GENHANCER_CONFIGS:
        cfg = genhancer_config(name)
        named |= {cfg.encoder.path, f"{cfg.latent.vae_path}/{cfg.latent.vae_subfolder}"}
    for name in LLAVA_CONFIGS:
        cfg = llava_config(name)
        named |= {cfg.model.encoder, cfg.model.llm}
    assert set(known_cards()) == named  # every model has a card, and no card is an orphan


def test_card_lookup():
    assert card_dir("lmsys/vicuna-7b-v1.5") == CARDS_ROOT / "lmsys/vicuna-7b-v1.5"
    assert card_dir("black-forest-labs/FLUX.1-dev", "vae") == CARDS_ROOT / "black-forest-labs/FLUX.1-dev"
    own = CARDS_ROOT / "openai/clip-vit-large-patch14"
    assert card_dir(str(own)) == own  # a directory holding a config describes itself
    with pytest.raises(
        ConfigError, match=r"encoder\.path='someone/unknown'.*known cards.*lmsys/vicuna-7b-v1\.5"
    ):
        card_dir("someone/unknown", key="encoder.path")


@pytest.mark.parametrize("name", GENHANCER_CONFIGS)
def test_genhancer_recipe_parts_have_published_sizes(name):
    """The recipe's encoder (vision side), VAE and denoiser, built by GenHancerModel.build on the meta
    device, and the encoder's input size from its processor (the size the hub id names)."""
    cfg = genhancer_config(name)
    model = build_genhancer(cfg, "meta")
    assert _near(_numel(model.encoder), VISION[cfg.encoder.path])
    assert _near(_numel(model.latent), FLUX_VAE) and model.latent.channels == 16
    assert _near(_numel(model.denoiser), LIGHTWEIGHT)
    size = re.search(r"-(\d{3})$", cfg.encoder.path)
    assert model.encoder_image_spec()["image_size"] == (int(size.group(1)) if size else 224)
    assert model.encoder.backbone.vision_model.config.patch_size == 14


@pytest.mark.parametrize("name", LLAVA_CONFIGS)
def test_llava_recipe_on_the_meta_device(name):
    from benchmarks.paper_shapes import meta_llava

    model = meta_llava(llava_config(name))
    assert next(model.parameters()).device == torch.device("meta")
    llm = _numel(model.model.language_model) + _numel(model.lm_head)
    assert _near(llm, VICUNA[name])
    assert _near(_numel(model.model.vision_tower), 304e6)  # CLIP ViT-L/14-336, without the projection
    assert model.config.image_seq_length == 576  # 24 x 24 patches at 336 px, CLS dropped


@pytest.mark.parametrize("hub_id", sorted(VISION))
def test_encoder_card_processors(hub_id):
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor

    config = AutoConfig.from_pretrained(card_dir(hub_id))
    facts = family_for_model_type(config.model_type)
    proc = AutoImageProcessor.from_pretrained(card_dir(hub_id))
    assert (tuple(proc.image_mean), tuple(proc.image_std)) == (facts.image_mean, facts.image_std)
    size = config.vision_config.image_size
    out = proc(images=[Image.new("RGB", (size + 40, size + 10))], return_tensors="pt")["pixel_values"]
    assert tuple(out.shape) == (1, 3, size, size)

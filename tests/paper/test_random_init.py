"""``init: random`` on tiny cards: the model is built from the card's config (not its weights), every output
says so, and both exports refuse it with a message naming the setting."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from genhancer.config import GenHancerConfig, LatentConfig
from genhancer.utils.cards import RANDOM_INIT_NOTE
from genhancer.utils.errors import ConfigError, ModelDirError


def _tiny_cfg(clip_dir, tmp_path, **encoder) -> GenHancerConfig:
    from genhancer.config import load_genhancer_config

    return load_genhancer_config(
        None,
        [
            f"encoder.path={clip_dir}",
            *(f"encoder.{k}={v}" for k, v in encoder.items()),
            "latent.space=pixel",
            "denoiser.preset=toy",
            "lora.r=2",
            "lora.alpha=2",
            f"train.run_dir={tmp_path / 'run'}",
        ],
    )


def test_random_encoder_has_the_card_shapes_not_its_weights(tiny_clip_dir):
    from genhancer.encoders import VisionEncoder

    loaded = VisionEncoder.load("clip", str(tiny_clip_dir))
    torch.manual_seed(1)  # the fixture drew its weights from seed 0
    random = VisionEncoder.load("clip", str(tiny_clip_dir), init="random")
    a, b = loaded.state_dict(), random.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(
        a["backbone.vision_model.encoder.layers.0.mlp.fc1.weight"],
        b["backbone.vision_model.encoder.layers.0.mlp.fc1.weight"],
    )
    assert random.image_spec == loaded.image_spec  # the card's processor


def test_flux_vae_from_its_card():
    from genhancer.latents import build_latent_space

    with torch.device("meta"):
        space = build_latent_space(LatentConfig(init="random"))  # the recipe: FLUX.1-dev's vae/ subfolder
    assert (space.channels, space.downsample, space.scale, space.shift) == (16, 8, 0.3611, 0.1159)
    with pytest.raises(ConfigError, match="latent.init=random"):
        build_latent_space(LatentConfig(space="pixel", init="random"))


def test_stage_outputs_are_marked_and_export_refuses(tiny_clip_dir, tmp_path):
    from benchmarks.paper_shapes import build_genhancer, enter_stage
    from genhancer.export import export_encoder

    cfg = _tiny_cfg(tiny_clip_dir, tmp_path, init="random")
    assert cfg.random_init == ["encoder.init"]
    model = build_genhancer(cfg)
    enter_stage(model, "stage2")
    out = model.save_pretrained(tmp_path / "final")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["extra"]["random_init"] == ["encoder.init"] and prov["extra"]["note"] == RANDOM_INIT_NOTE
    assert yaml.safe_load((out / "genhancer.yaml").read_text())["encoder"]["init"] == "random"
    with pytest.raises(ModelDirError, match=r"encoder\.init=random.*export refuses"):
        export_encoder(out, tmp_path / "encoder")
    assert not (tmp_path / "encoder").exists()


def test_pretrained_outputs_carry_no_mark(tiny_clip_dir, tmp_path):
    from genhancer.module import random_init_marks

    cfg = _tiny_cfg(tiny_clip_dir, tmp_path)
    assert cfg.random_init == [] and random_init_marks(cfg) == {}


@pytest.fixture(scope="module")
def tiny_llm_card(tmp_path_factory):
    """A tiny Llama config (no weights) and a stand-in tokenizer directory."""
    from transformers import LlamaConfig

    from benchmarks.paper_shapes import write_tokenizer

    root = tmp_path_factory.mktemp("tiny_llm_card")
    LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2
    ).save_pretrained(root / "llm")
    return root / "llm", write_tokenizer(root / "tokenizer")


def test_llava_random_assembly_is_marked_and_refused(tiny_clip_dir, tiny_llm_card, tmp_path):
    from llava_integration.build import build
    from llava_integration.config import ModelConfig
    from llava_integration.export import export

    llm, tok = tiny_llm_card
    cfg = ModelConfig(
        encoder=str(tiny_clip_dir), llm=str(llm), init="random", tokenizer=str(tok), llm_layers=2
    )
    out = build(cfg, tmp_path / "assembled")
    config = json.loads((out / "config.json").read_text())
    assert config["random_init"] == RANDOM_INIT_NOTE
    assert config["text_config"]["num_hidden_layers"] == 2  # model.llm_layers cut the card's 3
    assert config["text_config"]["vocab_size"] == 512  # the card's rows, not the stand-in tokenizer's
    assert json.loads((out / "provenance.json").read_text())["extra"]["random_init"] == RANDOM_INIT_NOTE
    trainer = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(random_init=RANDOM_INIT_NOTE)))
    with pytest.raises(ModelDirError, match="random_init.*model.init=pretrained"):
        export(trainer, None, out, None, tmp_path / "model", {})
    assert not (tmp_path / "model").exists()


def test_llava_random_needs_a_tokenizer(tiny_clip_dir, tiny_llm_card):
    from llava_integration.build import load_tokenizer
    from llava_integration.config import ModelConfig

    with pytest.raises(ConfigError, match="set model.tokenizer"):
        load_tokenizer(ModelConfig(encoder=str(tiny_clip_dir), llm=str(tiny_llm_card[0]), init="random"))

"""Assembly: vision weights == the encoder dir's, processor agreement checks, provenance,
reload + generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genhancer.utils.errors import ModelDirError


def test_vision_weights_equal_the_encoder_dir(assembled_dir, tiny_clip_dir):
    from transformers import CLIPVisionModel, LlavaForConditionalGeneration

    llava = LlavaForConditionalGeneration.from_pretrained(assembled_dir)
    ref = CLIPVisionModel.from_pretrained(tiny_clip_dir).state_dict()
    got = llava.model.vision_tower.state_dict()
    assert set(ref) == set(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    cfg = llava.config
    assert cfg.vision_feature_layer == -2 and cfg.vision_feature_select_strategy == "default"
    assert cfg.image_seq_length == (32 // 8) ** 2  # CLS dropped
    assert cfg.projector_hidden_act == "gelu"


def test_llm_weights_kept_and_tokens_added(assembled_dir, toy_llm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration

    llava = LlavaForConditionalGeneration.from_pretrained(assembled_dir)
    lm = AutoModelForCausalLM.from_pretrained(toy_llm_dir)
    base_tok = AutoTokenizer.from_pretrained(toy_llm_dir)
    n = len(base_tok)
    emb = llava.get_input_embeddings().weight
    assert emb.shape[0] == n + 2  # <image> and <pad>
    assert torch.equal(emb[:n], lm.get_input_embeddings().weight)
    assert torch.equal(
        llava.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight
    )
    assert llava.config.image_token_id == n or llava.config.image_token_id == n + 1


def test_processor_and_provenance(assembled_dir, assembled_processor, tiny_clip_dir, toy_llm_dir):
    from llava_integration.templates import TEMPLATES

    assert assembled_processor.chat_template == TEMPLATES["vicuna_v1"].chat_template
    assert assembled_processor.tokenizer.pad_token is not None
    prov = json.loads((assembled_dir / "provenance.json").read_text())
    assert prov["kind"] == "llava"
    assert [p["path"] for p in prov["parents"]] == [str(tiny_clip_dir.resolve()), str(toy_llm_dir.resolve())]
    assert not list(assembled_dir.glob("*.bin"))


def test_reload_with_plain_transformers_and_generate(assembled_dir, llava_world):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(assembled_dir)
    proc = AutoProcessor.from_pretrained(assembled_dir)
    prompt = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
        add_generation_prompt=True,
    )
    img = Image.open(llava_world / "val" / "images" / "000000.png").convert("RGB")
    inputs = proc(images=[img], text=[prompt], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == model.config.image_seq_length
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_mismatched_processor_is_named(tmp_path, tiny_clip_dir):
    import shutil

    from llava_integration.build import inspect_encoder

    bad = tmp_path / "bad_clip"
    shutil.copytree(tiny_clip_dir, bad)
    cfg_file = next(
        p for p in (bad / "processor_config.json", bad / "preprocessor_config.json") if p.is_file()
    )
    cfg = json.loads(cfg_file.read_text())
    ip = cfg.get("image_processor", cfg)
    ip["crop_size"] = {"height": 48, "width": 48}
    ip["size"] = {"shortest_edge": 48}
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"outputs \(3, 48, 48\) but the encoder expects \(3, 32, 32\)"):
        inspect_encoder(str(bad))


def test_unknown_template_and_encoder_are_named(tmp_path, toy_llm_dir, tiny_clip_dir):
    from genhancer.utils.errors import ConfigError
    from llava_integration.build import assemble
    from llava_integration.config import ModelConfig

    with pytest.raises(ConfigError, match="known conversation templates: llama3, plain, qwen2, vicuna_v1"):
        assemble(ModelConfig(encoder=str(tiny_clip_dir), llm=str(toy_llm_dir), template="vicuna"))
    with pytest.raises(ModelDirError, match="supported encoder model types"):
        assemble(ModelConfig(encoder=str(toy_llm_dir), llm=str(toy_llm_dir)))


@pytest.mark.parametrize("part", ["encoder", "llm"])
def test_pickle_only_encoder_or_llm_is_refused(tmp_path, toy_llm_dir, tiny_clip_dir, part):
    from llava_integration.build import assemble
    from llava_integration.config import ModelConfig
    from tests.pickled import pickle_only_copy

    dirs = {"encoder": str(tiny_clip_dir), "llm": str(toy_llm_dir)}
    dirs[part] = str(pickle_only_copy(Path(dirs[part]), tmp_path / part))
    loader = "CLIPVisionModel" if part == "encoder" else "AutoModelForCausalLM"
    with pytest.raises(
        ModelDirError, match=f"(?i){part} directory .* only pickled weights .*{loader}.from_pretrained"
    ):
        assemble(ModelConfig(**dirs))


def test_projector_init_scale_shrinks_only_the_output_layer(tiny_clip_dir, toy_llm_dir):
    from genhancer.utils.errors import ConfigError
    from llava_integration.build import assemble
    from llava_integration.config import ModelConfig

    dirs = {"encoder": str(tiny_clip_dir), "llm": str(toy_llm_dir)}
    full, _ = assemble(ModelConfig(**dirs), seed=3)
    small, _ = assemble(ModelConfig(**dirs, projector_init_scale=0.05), seed=3)
    a, b = full.model.multi_modal_projector, small.model.multi_modal_projector
    assert torch.equal(a.linear_1.weight, b.linear_1.weight) and torch.equal(a.linear_1.bias, b.linear_1.bias)
    assert torch.allclose(b.linear_2.weight, 0.05 * a.linear_2.weight)
    assert torch.allclose(b.linear_2.bias, 0.05 * a.linear_2.bias)
    assert not torch.allclose(a.linear_2.weight, b.linear_2.weight)
    with pytest.raises(ConfigError, match="model.projector_init_scale must be > 0"):
        ModelConfig(**dirs, projector_init_scale=0)


def test_a_list_of_feature_layers_concatenates_their_tokens(tiny_clip_dir, toy_llm_dir, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from genhancer.utils.config import load_config
    from genhancer.utils.errors import ConfigError
    from llava_integration.build import build
    from llava_integration.config import ModelConfig

    dirs = {"encoder": str(tiny_clip_dir), "llm": str(toy_llm_dir)}
    cfg_file = tmp_path / "model.yaml"
    cfg_file.write_text(f"encoder: {dirs['encoder']}\nllm: {dirs['llm']}\n")
    cfg = load_config(ModelConfig, cfg_file, ["vision_feature_layer=[0, -1]"])
    assert cfg.vision_feature_layer == [0, -1]
    llava = LlavaForConditionalGeneration.from_pretrained(build(cfg, tmp_path / "assembled")).eval()
    assert llava.config.vision_feature_layer == [0, -1]
    width = llava.config.vision_config.hidden_size
    assert llava.model.multi_modal_projector.linear_1.in_features == 2 * width
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = llava.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        want = llava.model.multi_modal_projector(torch.cat([hidden[0], hidden[-1]], -1)[:, 1:])
        got = llava.model.get_image_features(pixel_values=pixels)
    got = got.pooler_output if hasattr(got, "pooler_output") else got
    got = torch.cat(list(got)) if isinstance(got, (list, tuple)) else got
    assert torch.allclose(got.reshape(want.shape), want, atol=1e-5)
    with pytest.raises(ConfigError, match="model.vision_feature_layer"):
        ModelConfig(**dirs, vision_feature_layer=[])

"""Generic encoder loading: family from config.json's model_type, clear errors for incomplete directories,
and batched embeddings whose logits equal the model's own logits_per_text."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from eval.encoders import (
    check_model_dir,
    encode_images,
    encode_texts,
    load_encoder,
    text_image_logits,
    text_max_length,
    tokenize,
)
from genhancer.utils.errors import ModelDirError


def test_family_comes_from_model_type_not_the_path(tiny_clip_dir, tiny_siglip_dir, tmp_path):
    misleading = tmp_path / "siglip-so400m-but-really-clip"
    shutil.copytree(tiny_clip_dir, misleading)
    assert check_model_dir(misleading).name == "clip"
    assert check_model_dir(tiny_siglip_dir).name == "siglip"


def test_unknown_model_type_lists_known_families(tiny_clip_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_clip_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(
        ModelDirError,
        match=r"config.json: model_type 'llama'.*known model types: clip, "
        r"clip_vision_model, siglip, siglip_vision_model",
    ):
        check_model_dir(d)


def test_a_bare_vision_tower_is_refused_naming_the_full_model(tiny_clip_dir, tmp_path):
    d = tmp_path / "vision-only"
    shutil.copytree(tiny_clip_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "clip_vision_model"}))
    with pytest.raises(
        ModelDirError, match=r"bare CLIPVisionModel; scoring needs the full image\+text CLIPModel"
    ):
        check_model_dir(d)


@pytest.mark.parametrize(
    "remove, message",
    [
        (["processor_config.json"], r"missing image processor config \(preprocessor_config.json"),
        (["tokenizer.json"], r"missing tokenizer files \(tokenizer.json or vocab.json \+ merges.txt"),
        (["model.safetensors"], r"missing weights"),
    ],
)
def test_incomplete_model_dir_names_what_is_missing_and_the_fix(tiny_clip_dir, tmp_path, remove, message):
    d = tmp_path / "export"
    shutil.copytree(tiny_clip_dir, d)
    for name in remove:
        (d / name).unlink()
    with pytest.raises(ModelDirError, match=message) as err:
        load_encoder(d)
    assert str(d) in str(err.value) and "AutoProcessor.from_pretrained(BASE_MODEL).save_pretrained" in str(
        err.value
    )


def test_missing_dir_and_config(tmp_path):
    with pytest.raises(ModelDirError, match="model directory not found"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        check_model_dir(tmp_path)


@pytest.mark.parametrize("which, max_len", [("tiny_clip_dir", 77), ("tiny_siglip_dir", 64)])
def test_batched_logits_equal_model_forward(which, max_len, request, bench_factory):
    from PIL import Image

    model, processor = load_encoder(request.getfixturevalue(which))
    assert text_max_length(model, processor) == max_len
    bench = bench_factory()
    paths = sorted((bench / "MLLM_VLM Images").rglob("*.jpg"))[:3]
    texts = ["a photo of a square", "a photo of a dot on the left"]
    img = encode_images(model, processor, paths, batch_size=2, show_progress=False)  # (3, D)
    txt = encode_texts(model, processor, texts, batch_size=1, show_progress=False)  # (2, D)
    ours = text_image_logits(model, txt, img)  # (2, 3)

    pixels = processor.image_processor(
        images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt"
    )["pixel_values"]
    enc = tokenize(model, processor, texts)
    assert enc["input_ids"].shape == (2, max_len)
    with torch.no_grad():
        ref = model(pixel_values=pixels, **enc).logits_per_text  # (2, 3)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "which, inputs", [("tiny_clip_dir", {"input_ids", "attention_mask"}), ("tiny_siglip_dir", {"input_ids"})]
)
def test_mmvp_and_zeroshot_give_the_text_tower_the_family_text_inputs(
    which, inputs, request, bench_factory, monkeypatch
):
    """SigLIP is used on max-length padding without an attention mask; CLIP with its mask."""
    import transformers

    from eval.mmvp_vlm import evaluate_mmvp_vlm
    from eval.zeroshot import evaluate_zeroshot

    model_dir = request.getfixturevalue(which)
    cls = getattr(transformers, check_model_dir(model_dir).full_model_class)
    original, seen = cls.get_text_features, []

    def spy(self, *args, **kwargs):
        seen.append(set(kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "get_text_features", spy)
    bench = bench_factory()
    evaluate_mmvp_vlm(model_dir, bench, show_progress=False)
    n_mmvp = len(seen)
    items = [
        {"image": str(p.relative_to(bench)), "label": "dot"}
        for p in sorted((bench / "MLLM_VLM Images").rglob("*.jpg"))[:2]
    ]
    (bench / "spec.json").write_text(
        json.dumps({"template": "a photo of a {}.", "classes": ["dot", "star"], "items": items})
    )
    evaluate_zeroshot(model_dir, bench / "spec.json", show_progress=False)
    assert n_mmvp >= 1 and len(seen) > n_mmvp
    assert all(s == inputs for s in seen), seen


def test_siglip_text_embedding_is_the_unmasked_one(tiny_siglip_dir):
    model, processor = load_encoder(tiny_siglip_dir)
    text = ["a photo of a square with a white dot on the left"]
    enc = processor.tokenizer(text, padding="max_length", max_length=64, return_tensors="pt")
    assert "attention_mask" in enc  # the tokenizer offers one; the family's text-input rule drops it
    assert set(tokenize(model, processor, text)) == {"input_ids"}
    ours = encode_texts(model, processor, text, show_progress=False)  # (1, D)
    with torch.no_grad():
        unmasked = F.normalize(model.get_text_features(input_ids=enc["input_ids"]).pooler_output, dim=-1)
        masked = F.normalize(model.get_text_features(**enc).pooler_output, dim=-1)
    torch.testing.assert_close(ours, unmasked)
    assert not torch.allclose(ours, masked, atol=1e-3)  # the mask would change what SigLIP says

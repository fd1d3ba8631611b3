"""The baseline toy CLIP: loss pieces, the saved HF directory, caching, determinism and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genhancer.utils.config import config_hash, load_config
from toyworld import pretrain_clip as pc

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ unit
def test_multi_positive_targets_spread_over_duplicate_captions():
    t = pc.multi_positive_targets(torch.tensor([0, 1, 0, 2]))
    expected = torch.tensor([[0.5, 0, 0.5, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1.0]])
    assert torch.equal(t, expected)


def test_contrastive_loss_does_not_push_identical_captions_apart():
    # Items 0 and 2 share a caption. Logits that match images 0 and 2 equally well to both copies of it are
    # optimal for multi-positive targets (zero gradient); one-hot targets would push the copies apart.
    logits = torch.full((3, 3), -5.0)
    logits[0, 0] = logits[0, 2] = logits[2, 0] = logits[2, 2] = logits[1, 1] = 5.0
    multi = logits.clone().requires_grad_(True)
    pc.contrastive_loss(multi, torch.tensor([0, 1, 0])).backward()
    one_hot = logits.clone().requires_grad_(True)
    pc.contrastive_loss(one_hot, torch.tensor([0, 1, 2])).backward()
    assert multi.grad.abs().max() < 1e-3
    assert one_hot.grad[0, 2] > 0.1  # gradient descent would lower the logit of the duplicate caption


def test_random_shift_translates_with_edge_padding():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(pc.random_shift(img, 0, gen), img)
    out = pc.random_shift(img, 2, gen)
    assert out.shape == img.shape and out.dtype == img.dtype
    for b in range(2):  # every output is some translate of its own input (centre 4x4 appears in the input)
        centre = out[b, :, 2:6, 2:6]
        found = any(
            torch.equal(centre, img[b, :, 2 + dy : 6 + dy, 2 + dx : 6 + dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = pc.TrainConfig(steps=100, warmup_steps=10)
    f = pc.lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.01
    assert pc.lr_lambda(pc.TrainConfig(steps=100, warmup_steps=10, schedule="constant"))(99) == 1.0


def test_yaml_instance_equals_the_schema_defaults():
    assert (
        load_config(pc.PretrainClipConfig, REPO / "configs" / "toyworld" / "clip.yaml")
        == pc.PretrainClipConfig()
    )


# ------------------------------------------------------------------------------------------ integration
def _run(world: Path, out: Path, overrides: list[str], *flags: str) -> int:
    return pc.main(["--world", str(world), "--out", str(out), *flags, *overrides])


@pytest.mark.slow
def test_pretrain_saves_a_loadable_hf_clip_and_reports(toy_world, tmp_path, tiny_overrides, capsys):
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer, CLIPModel

    out = tmp_path / "clip"
    assert _run(toy_world, out, tiny_overrides + ["train.steps=30"]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot shape accuracy" in printed and "images/s" in printed

    # a normal HF directory, loaded through the real from_pretrained paths
    model = CLIPModel.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vision_config.image_size == 32
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))

    # the in-memory normalisation used for training is exactly the saved processor's
    zs = json.loads((toy_world / "val" / "zeroshot_shape.json").read_text())
    paths = [toy_world / "val" / it["image"] for it in zs["items"][:4]]
    ours = pc.normalise(pc.load_images(paths, 32))
    theirs = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.allclose(ours, theirs, atol=1e-5)
    with torch.no_grad():
        enc = tokenizer(["a photo of a circle."], padding="max_length", return_tensors="pt")
        logits = model(**enc, pixel_values=theirs).logits_per_text
    assert logits.shape == (1, 4)

    # reports: summary, metrics, provenance, resolved config
    summary = json.loads((out / pc.SUMMARY_FILE).read_text())
    assert summary["steps"] == 30 and summary["batch_size"] == 32
    assert summary["zeroshot_chance"] == 1 / len(zs["classes"])
    # the reported accuracy is the saved model's, recomputed here through eval.zeroshot's scoring
    from eval.zeroshot import read_spec

    spec = read_spec(toy_world / "val" / "zeroshot_shape.json")
    assert summary["zeroshot_items"] == len(spec["items"])
    assert summary["zeroshot_shape_accuracy"] == pytest.approx(
        pc.zeroshot_accuracy(model.eval(), processor, spec, batch_size=64), abs=1e-9
    )
    assert summary["mmvp_vlm"] is not None and "average" in summary["mmvp_vlm"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["kind"] == "toy-clip" and prov["config_hash"] == summary["config_hash"]
    assert prov["parents"][0]["path"] == str(toy_world.resolve())
    # the resolved config.yaml is the config that ran (same hash as the summary's)
    assert config_hash(load_config(pc.PretrainClipConfig, out / "config.yaml")) == summary["config_hash"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]  # atomic: no leftovers


@pytest.mark.slow
def test_cached_unless_forced_or_config_changes(toy_world, tmp_path, tiny_overrides, capsys):
    out = tmp_path / "clip"
    args = tiny_overrides + ["train.steps=3"]
    assert _run(toy_world, out, args) == 0
    weights = out / "model.safetensors"
    first = weights.stat().st_mtime_ns
    capsys.readouterr()

    assert _run(toy_world, out, args) == 0
    assert capsys.readouterr().out.startswith("cached")
    assert weights.stat().st_mtime_ns == first

    assert _run(toy_world, out, args, "--force") == 0
    assert not capsys.readouterr().out.startswith("cached")
    assert _run(toy_world, out, tiny_overrides + ["train.steps=4"]) == 0
    assert not capsys.readouterr().out.startswith("cached")
    assert json.loads((out / pc.SUMMARY_FILE).read_text())["steps"] == 4


@pytest.mark.slow
def test_same_seed_same_weights(toy_world, tmp_path, tiny_overrides):
    from safetensors.torch import load_file

    args = tiny_overrides + ["train.steps=4"]
    assert _run(toy_world, tmp_path / "a", args) == 0
    assert _run(toy_world, tmp_path / "b", args) == 0
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ user errors
def test_missing_world_is_one_clear_error(tmp_path, capsys):
    assert pc.main(["--world", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "toyworld build" in err
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_lists_valid_keys(toy_world, tmp_path, capsys):
    assert pc.main(["--world", str(toy_world), "--out", str(tmp_path / "o"), "train.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "train.stepz" in err and "steps" in err


def test_print_config_round_trips(capsys):
    assert pc.main(["--print-config", "train.steps=7"]) == 0
    import yaml

    data = yaml.safe_load(capsys.readouterr().out)
    assert (
        data["train"]["steps"] == 7
        and data["model"]["image_size"] == pc.PretrainClipConfig().model.image_size
    )

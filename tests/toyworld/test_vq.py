"""The toy VQ trainer (``python -m toyworld train-vq``): k-means, its config, and unreadable images."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from genhancer.utils.config import ConfigError, load_config
from genhancer.vq import load_tokenizer
from tests import image_zoo as zoo
from toyworld import vq
from toyworld.render import render_scene
from toyworld.scene import sample_scene

REPO = Path(__file__).resolve().parents[2]


def test_kmeans_recovers_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    codebook, history = vq.kmeans(x, 3, 10, torch.Generator().manual_seed(1))
    found = sorted(codebook.round().tolist())
    assert found == sorted(centres.tolist()) and history[-1] < 0.02 and history[-1] <= history[0]


def test_yaml_instance_equals_the_schema_defaults(capsys):
    assert load_config(vq.TrainVQConfig, REPO / "configs" / "toyworld" / "vq.yaml") == vq.TrainVQConfig()
    assert vq.main(["--print-config", "codebook_size=64"]) == 0
    assert "codebook_size: 64" in capsys.readouterr().out


def test_hyperparameters_are_keys_not_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vq.main(["--images", str(tmp_path), "--out", str(tmp_path / "o"), "--codebook-size", "8"])
    assert vq.main(["--images", str(tmp_path), "--out", str(tmp_path / "o"), "codebook_sise=8"]) == 2
    assert "codebook_sise" in capsys.readouterr().err


def _named(entries: list[dict]) -> dict[str, str]:
    return {Path(e["key"]).name: e["reason"] for e in entries}


def test_bad_image_zoo_is_converted_or_skipped_and_named(tmp_path, capsys):
    root = zoo.write_folder(tmp_path)  # the zoo in tmp_path/images, beside 12 rendered scenes
    images = root / "images"
    rng = random.Random(0)
    for i in range(12):
        render_scene(sample_scene(rng), size=16).save(images / f"{i:03d}.png")
    x, skipped = vq.load_images(str(images), 16, None, seed=0)
    assert x.shape == (12 + len(zoo.LOADS), 3, 16, 16) and _named(skipped.as_list()) == zoo.SKIPS
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    flat = [img for img in u8 if int((img.amax((1, 2)) - img.amin((1, 2))).max()) <= zoo.TOLERANCE]
    colours = [zoo.colour_of(img.numpy()) for img in flat]
    for name, colour in zoo.LOADS.items():  # each loadable kind is there, as its right colour
        assert any(zoo.close(c, colour) for c in colours), (name, colours)

    out = tmp_path / "vq"
    argv = ["--images", str(images), "--out", str(out), "codebook_size=8", "iters=2", "image_size=16"]
    assert vq.main(argv) == 0
    assert f"{len(zoo.SKIPS)} unreadable skipped" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert _named(stats["skipped_files"]) == zoo.SKIPS and stats["skipped_images"] == len(zoo.SKIPS)
    assert stats["images"] + stats["heldout_images"] == 12 + len(zoo.LOADS)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["extra"]["skipped_images"] == len(zoo.SKIPS) and prov["config"]["codebook_size"] == 8
    assert load_tokenizer(str(out)).codebook_size == 8
    assert vq.eval_main(["--tokenizer", str(out), "--images", str(images), "image_size=16"]) == 0
    assert _named(json.loads(capsys.readouterr().out)["skipped_files"]) == zoo.SKIPS


def test_pixel_cap_is_a_checked_key(tmp_path):
    with pytest.raises(ConfigError, match="max_image_pixels=0: must be between 1 and 178956970"):
        load_config(vq.TrainVQConfig, None, ["max_image_pixels=0"])

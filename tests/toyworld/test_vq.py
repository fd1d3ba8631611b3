"""The toy VQ trainer (``python -m toyworld train-vq``): k-means, its config, and unreadable images."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from genhancer.utils.config import load_config
from genhancer.vq import load_tokenizer
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


def test_unreadable_images_are_skipped_and_counted(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = random.Random(0)
    for i in range(12):
        render_scene(sample_scene(rng), size=16).save(images / f"{i:03d}.png")
    for name in ("broken.png", "empty.png", "notes.jpg"):
        (images / name).write_bytes(b"" if name == "empty.png" else b"not an image")
    out = tmp_path / "vq"
    assert vq.main(["--images", str(images), "--out", str(out), "codebook_size=8", "iters=2"]) == 0
    assert "3 unreadable skipped" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped_images"] == 3 and stats["images"] + stats["heldout_images"] == 12
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["extra"]["skipped_images"] == 3 and prov["config"]["codebook_size"] == 8
    assert load_tokenizer(str(out)).codebook_size == 8
    assert vq.eval_main(["--tokenizer", str(out), "--images", str(images)]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_images"] == 3

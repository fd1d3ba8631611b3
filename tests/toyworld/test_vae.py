"""The toy VAE: a few training steps on a tiny world, measured latent factors, caching,
GenHancer's vae space."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genhancer.config import LatentConfig
from genhancer.latents import build_latent_space
from genhancer.utils.config import config_hash, load_config
from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import read_json, read_jsonl, write_json
from toyworld import vae as tv
from toyworld.__main__ import main as toyworld_main
from toyworld.attributes import read_split
from toyworld.pretrain_clip import load_images

# 32 px -> 8x8x4 latents; a few steps take about a second.
TINY = [
    "model.image_size=32",
    "model.block_out_channels=[8,16,16]",
    "model.norm_num_groups=4",
    "train.steps=4",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "train.log_every=2",
    "stats_images=48",
    "eval_images=16",
    "eval_batch_size=16",
]


@pytest.fixture(scope="module")
def world(make_world) -> Path:
    return make_world("vae_world", n_train=64, n_val=16)


@pytest.fixture(scope="module")
def classifier(world, make_classifier) -> Path:
    return make_classifier(world, "vae_clf")


@pytest.fixture(scope="module")
def vae_dir(world, classifier, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("vae") / "vae"
    summary = tv.pretrain_vae(
        load_config(tv.PretrainVaeConfig, None, TINY), world, out, classifier=classifier
    )
    return out, summary


def stats_images(world: Path, n: int = 48) -> torch.Tensor:
    """The train images the factors are measured on (the same seeded subset as pretrain_vae)."""
    paths, _ = read_split(world, "train")
    images = load_images(paths, 32)
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]]


def test_saved_factors_are_the_measured_ones(vae_dir, world):
    from diffusers import AutoencoderKL

    out, summary = vae_dir
    vae = AutoencoderKL.from_pretrained(out).eval()
    assert vae.config.shift_factor == summary["shift_factor"]
    assert vae.config.scaling_factor == summary["scaling_factor"]
    assert summary["latent_shape"] == [4, 8, 8]
    # recompute from the saved weights: latents sampled from the posterior of the same images
    with torch.no_grad():
        dist = vae.encode(stats_images(world).float() / 127.5 - 1).latent_dist
        draws = torch.stack([dist.sample(torch.Generator().manual_seed(s)) for s in range(200)])
    assert summary["shift_factor"] == pytest.approx(float(dist.mean.mean()), rel=1e-4, abs=1e-6)
    assert summary["scaling_factor"] == pytest.approx(1 / float(draws.double().std()), rel=0.02)


def test_genhancer_reads_the_factors_from_the_vae_config(vae_dir, world):
    out, summary = vae_dir
    space = build_latent_space(
        LatentConfig(space="vae", vae_path=str(out), shift=None, scale=None, patch_size=2)
    )
    assert (space.shift, space.scale) == (summary["shift_factor"], summary["scaling_factor"])
    assert space.latent_shape(32) == (4, 8, 8)
    # GenHancer's latents of the measured images are standardised
    x = stats_images(world).float() / 127.5 - 1
    z = space.encode(x, torch.Generator().manual_seed(0))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    # explicit numbers still win (the FLUX.1 defaults are untouched)
    flux = build_latent_space(LatentConfig(space="vae", vae_path=str(out), patch_size=2))
    assert (flux.shift, flux.scale) == (0.1159, 0.3611)


def test_scale_null_needs_a_scaling_factor(vae_dir, tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir[0])
    vae.register_to_config(scaling_factor=None)
    vae.save_pretrained(tmp_path / "noscale")
    with pytest.raises(ConfigError, match="scaling_factor"):
        build_latent_space(LatentConfig(space="vae", vae_path=str(tmp_path / "noscale"), scale=None))


def test_summary_and_attribute_check(vae_dir, world):
    import numpy as np
    from PIL import Image

    out, summary = vae_dir
    assert summary["cached"] is False and summary["steps"] == 4
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [2, 4]
    assert math.isclose(summary["val_psnr_db"], 10 * math.log10(4 / summary["val_mse"]))
    check = summary["attributes"]
    assert check["originals"]["n_images"] == check["reconstructions"]["n_images"] == 16
    assert set(check["originals"]["attributes"]) == set(check["reconstructions"]["attributes"])
    assert read_json(out / tv.SUMMARY_FILE)["attributes"] == check
    # the grid: the 16 val originals on top, their reconstructions below -- the very pairs val_mse measures
    grid = np.asarray(Image.open(out / tv.GRID_FILE)).astype(np.float64)
    assert grid.shape == (2 * 32, 16 * 32, 3)
    originals = load_images(read_split(world, "val")[0][:16], 32)  # (16, 3, 32, 32) uint8
    assert np.array_equal(grid[:32], torch.cat(list(originals), dim=2).permute(1, 2, 0).numpy())
    mse = (((grid[32:] - grid[:32]) / 127.5) ** 2).mean()
    assert mse == pytest.approx(summary["val_mse"], rel=1e-5) and mse > 0


def test_cache_and_late_attribute_check(vae_dir, world, classifier, capsys):
    out, summary = vae_dir
    args = ["pretrain-vae", "--world", str(world), "--out", str(out), *TINY]
    assert toyworld_main(args) == 0
    assert "cached" in capsys.readouterr().out
    # a cached VAE without the check gets it when a classifier is given, without retraining
    stripped = {k: v for k, v in read_json(out / tv.SUMMARY_FILE).items() if k != "attributes"}
    write_json(out / tv.SUMMARY_FILE, stripped)
    weights = (out / "diffusion_pytorch_model.safetensors").read_bytes()
    assert toyworld_main([*args, "--classifier", str(classifier)]) == 0
    assert read_json(out / tv.SUMMARY_FILE)["attributes"] == summary["attributes"]
    assert (out / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    other = load_config(tv.PretrainVaeConfig, None, [*TINY, "train.steps=5"])
    assert tv.cached_summary(out, config_hash(other), summary["world_fingerprint"]) is None


def test_foreground_mask_finds_the_object_even_when_it_touches_the_border():
    x = torch.full((2, 3, 16, 16), 0.5)  # a flat background
    x[0, :, 4:8, 5:9] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]  # a red square
    x[1, :, :, :6] = -1.0  # a close-up object covering the left border (a quarter of the border pixels)
    mask = tv.foreground(x)
    assert mask.shape == (2, 1, 16, 16)
    assert mask[0, 0].nonzero().tolist() == [[r, c] for r in range(4, 8) for c in range(5, 9)]
    assert mask[1, 0, :, :6].eq(1).all() and mask[1, 0, :, 6:].eq(0).all()


def test_bad_shape_and_missing_world(tmp_path, capsys):
    with pytest.raises(ConfigError, match="norm_num_groups"):
        load_config(
            tv.PretrainVaeConfig, None, ["model.block_out_channels=[8,12]", "model.norm_num_groups=8"]
        )
    assert (
        toyworld_main(["pretrain-vae", "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "build the world first" in capsys.readouterr().err

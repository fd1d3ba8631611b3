"""benchmarks/bench_stage1_cache.py measures the toy recipe as configs/genhancer/toy.yaml sets it."""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_stage1_cache import measure, toy_setup
from genhancer.config import load_genhancer_config

TOY = "configs/genhancer/toy.yaml"


def test_toy_row_is_the_toy_recipe_on_its_own_vae(tmp_path):
    overrides = toy_setup(tmp_path, argparse.Namespace(toy_images=6))
    recipe = load_genhancer_config(TOY)
    cfg = load_genhancer_config(
        TOY, [*overrides, "cache.enabled=true", f"cache.dir={tmp_path / 'cache'}", "train.batch_size=4"]
    )
    # the recipe's views and latent space, and a VAE of the toy shape built in the benchmark's own folder
    # (never runs/toy/vae, which a fresh clone does not have)
    assert cfg.cache.views == recipe.cache.views
    assert cfg.latent.space == recipe.latent.space == "vae"
    assert cfg.latent.vae_path == str(tmp_path / "vae")
    assert load_genhancer_config(TOY, overrides).train.batch_size == recipe.train.batch_size
    row = measure("toy", cfg, torch.device("cpu"), steps=1, repeats=1)
    assert (row["batch"], row["views"], row["images"]) == (4, recipe.cache.views, 6)
    assert set(row["ms_per_step"]) == {"uncached", "cached"}
    assert all(v > 0 for v in row["ms_per_step"].values())

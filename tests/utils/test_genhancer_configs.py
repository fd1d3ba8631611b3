"""configs/genhancer/: short deltas over the schema's paper recipe; toy.yaml holds every toy value.

The pinned values below are what the runs compute with; a refactor of the YAMLs must not move them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.utils.config import to_dict
from genhancer.utils.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "genhancer"
ALL_YAMLS = sorted(CONFIG_DIR.rglob("*.yaml"))
LONG_OK = {"toy.yaml", "toy-discrete.yaml"}  # and everything under recipes/
SIGLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def _is_paper(p: Path) -> bool:
    return p.name not in LONG_OK and p.parent == CONFIG_DIR


def test_the_directory_holds_the_configs():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in ALL_YAMLS}
    assert {
        "toy.yaml",
        "toy-discrete.yaml",
        "openai-clip-l14.yaml",
        "recipes/continuous.yaml",
        "recipes/discrete.yaml",
    } <= names
    assert sum(_is_paper(p) for p in ALL_YAMLS) == 9


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_every_yaml_loads_and_paper_ones_are_short(path):
    cfg = load_genhancer_config(path)
    assert cfg.train.run_dir == f"runs/{cfg.name}/stage1"
    if _is_paper(path):
        n = len(path.read_text().splitlines())
        assert n <= 25, f"{path.name} has {n} lines: state only how it differs from its recipe"
        assert path.stem == cfg.name  # the file names the run directory


def test_toy_values():
    cfg = load_genhancer_config(CONFIG_DIR / "toy.yaml")
    assert (cfg.name, cfg.stage, cfg.init_from) == ("toy", "stage1", None)
    assert (cfg.encoder.family, cfg.encoder.path) == ("clip", "runs/toy/clip")
    assert (cfg.denoiser.type, cfg.denoiser.preset, cfg.denoiser.guidance) == ("continuous", "toy-64", None)
    assert (cfg.latent.space, cfg.latent.patch_size, cfg.latent.vae_path, cfg.latent.vae_subfolder) == (
        "vae",
        2,
        "runs/toy/vae",
        None,
    )
    assert (cfg.latent.shift, cfg.latent.scale) == (None, None)  # measured, from the toy VAE's config
    assert (cfg.cache.enabled, cfg.cache.views) == (True, 2)
    assert (cfg.flow.t_sampling, cfg.flow.logit_scale, cfg.flow.sample_steps) == ("logit_normal", 1.0, 20)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets) == (8, 8, 0.0, SIGLIP_TARGETS)
    assert (cfg.conditioning.hidden_width, cfg.conditioning.hidden_mult) == ("input", 1.0)
    assert {k: (s.steps, s.lr, s.warmup_steps, s.encoder_lr) for k, s in cfg.schedule.items()} == {
        "stage1": (1000, 1e-3, 20, None),
        "stage2": (300, 3e-4, 10, None),
        "stage2-all": (300, 1e-4, 10, None),
        "end-to-end": (1300, 1e-3, 20, 3e-4),  # derived: stage 1 + stage 2 steps, the LoRA at stage 2's lr
    }
    assert (cfg.data.source, cfg.data.path, cfg.data.num_workers) == ("folder", "runs/toyworld/train", 0)
    t = cfg.train
    assert (t.run_dir, t.batch_size, t.grad_accum, t.mixed_precision, t.save_every, t.log_every) == (
        "runs/toy/stage1",
        64,
        1,
        "auto",
        100,
        10,
    )
    assert t.deepspeed == "configs/deepspeed/zero2.json"


def test_run_dir_follows_stage_unless_given():
    path = CONFIG_DIR / "toy.yaml"
    assert load_genhancer_config(path, ["stage=stage2"]).train.run_dir == "runs/toy/stage2"
    assert load_genhancer_config(path, ["stage=stage2", "train.run_dir=out/s2"]).train.run_dir == "out/s2"
    assert load_genhancer_config(path, ["name=other"]).train.run_dir == "runs/other/stage1"


def test_toy_discrete_is_toy_with_the_discrete_sections():
    toy = to_dict(load_genhancer_config(CONFIG_DIR / "toy.yaml"))
    disc = to_dict(load_genhancer_config(CONFIG_DIR / "toy-discrete.yaml"))
    assert disc["denoiser"] == {
        "type": "discrete",
        "preset": "toy",
        "guidance": None,
        "overrides": {"mask_ratio": 0.7},
    }
    assert disc["latent"] == {**toy["latent"], "space": "vq", "patch_size": 1, "vae_path": "runs/toy/vq"}
    assert disc["flow"] == {**toy["flow"], "sample_steps": 12}
    assert disc["train"] == {**toy["train"], "run_dir": "runs/toy-discrete/stage1"}
    for section in ("encoder", "conditioning", "lora", "schedule", "data"):
        assert disc[section] == toy[section], section


def test_schema_defaults_are_the_paper_recipe():
    cfg = GenHancerConfig()
    assert cfg.encoder.path == "openai/clip-vit-large-patch14"
    assert (cfg.denoiser.type, cfg.denoiser.preset, cfg.latent.space, cfg.latent.patch_size) == (
        "continuous",
        "lightweight",
        "vae",
        2,
    )
    assert (cfg.latent.vae_path, cfg.latent.vae_subfolder) == ("black-forest-labs/FLUX.1-dev", "vae")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.bias) == (16, 16, 0.1, "lora_only")
    assert (cfg.conditioning.hidden_width, cfg.conditioning.hidden_mult) == ("output", 1.0)  # official shape
    assert (cfg.schedule["stage1"].steps, cfg.schedule["stage1"].lr, cfg.schedule["stage1"].warmup_steps) == (
        100_000,
        1e-4,
        10,
    )
    assert (cfg.schedule["stage2"].steps, cfg.schedule["stage2"].lr) == (1000, 1e-5)
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.weight_decay) == (16, 2, 0.01)
    assert cfg.train.mixed_precision == "auto" and cfg.data.source == "webdataset"
    strings = [v for v in _leaves(to_dict(cfg)) if isinstance(v, str)]
    assert not [s for s in strings if "toy" in s], "a toy value is left in the schema defaults"


def _leaves(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _leaves(v)
        elif isinstance(v, list):
            yield from v
        else:
            yield v


def test_paper_continuous_config_is_the_recipe():
    cfg = load_genhancer_config(CONFIG_DIR / "openai-clip-l14.yaml")
    expected = to_dict(GenHancerConfig(name="openai-clip-l14"))
    expected["train"]["mixed_precision"] = "bf16"
    assert to_dict(cfg) == expected
    assert cfg.train.run_dir == "runs/openai-clip-l14/stage1" and "MUST-OVERRIDE" in cfg.data.path


def test_paper_discrete_siglip_config():
    cfg = load_genhancer_config(CONFIG_DIR / "siglip-so400m-384-discrete.yaml")
    assert (cfg.encoder.family, cfg.encoder.path) == ("siglip", "google/siglip-so400m-patch14-384")
    assert cfg.lora.targets == SIGLIP_TARGETS and cfg.lora.r == 16 and cfg.lora.dropout == 0.1
    assert (cfg.denoiser.type, cfg.denoiser.preset, cfg.denoiser.overrides) == (
        "discrete",
        "6",
        {"mask_ratio": 0.7},
    )
    assert (cfg.latent.space, cfg.latent.patch_size, cfg.latent.vae_path, cfg.latent.vae_subfolder) == (
        "vq",
        1,
        "amused/amused-256",
        "vqvae",
    )
    assert (cfg.flow.sample_steps, cfg.flow.logit_scale) == (12, 1.0)
    assert (cfg.train.mixed_precision, cfg.train.grad_accum, cfg.data.num_workers) == ("bf16", 2, 8)
    assert cfg.schedule["stage2"].lr == 1e-5


def test_end_to_end_schedule_derives_from_the_two_stage_run():
    paper = load_genhancer_config(CONFIG_DIR / "openai-clip-l14.yaml").schedule["end-to-end"]
    # 100k + 1k steps; the denoiser at stage 1's 1e-4, the LoRA at stage 2's 1e-5 (not 100k steps at 1e-4)
    assert (paper.steps, paper.lr, paper.warmup_steps, paper.encoder_lr) == (101_000, 1e-4, 10, 1e-5)
    short = load_genhancer_config(None, ["schedule.stage1.steps=40", "schedule.stage2.lr=2e-5"])
    assert (short.schedule["end-to-end"].steps, short.schedule["end-to-end"].encoder_lr) == (1_040, 2e-5)
    part = load_genhancer_config(None, ["schedule.end-to-end.steps=7"]).schedule["end-to-end"]
    assert (part.steps, part.lr, part.encoder_lr) == (7, 1e-4, 1e-5)  # the keys not given stay derived
    with pytest.raises(ConfigError, match="schedule.stage1"):
        load_genhancer_config(None, ["schedule.stage1.steps=null"])

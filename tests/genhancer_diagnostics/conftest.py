"""Fixtures of the diagnostics tests: a small MMVP-style folder and tiny stage-1 directories on the tiny CLIP,
one untrained and one trained for a few dozen steps on the folder's own images (so its denoiser has learned
to use the condition)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.eval_mmvp.conftest import write_bench
from tests.genhancer_discrete.conftest import toy_vq_dir, toy_world  # noqa: F401 (fixtures, shared)

TRAIN_STEPS = 40


@pytest.fixture(scope="session")
def pair_bench(tmp_path_factory) -> Path:
    """2 patterns x 4 pairs; the two images of a pair differ in colour and in the side of a white dot."""
    return write_bench(tmp_path_factory.mktemp("pairs") / "bench", pairs_per_pattern=4)


def _config(tiny_clip_dir: Path):
    from genhancer.config import load_genhancer_config

    return load_genhancer_config(
        None,
        [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "flow.sample_steps=2",
        ],
    )


@pytest.fixture(scope="session")
def stage_runs(tmp_path_factory, tiny_clip_dir, pair_bench) -> dict[str, Path]:
    """{"untrained": <run dir>, "trained": <run dir>}, each holding final/ (a stage output directory)."""
    from genhancer.module import GenHancerModel
    from genhancer.sample import load_batch
    from genhancer.utils.mmvp import read_benchmark

    root = tmp_path_factory.mktemp("stage_runs")
    torch.manual_seed(0)
    model = GenHancerModel.build(_config(tiny_clip_dir))
    model.save_pretrained(root / "untrained" / "final")
    paths = [img for pair in read_benchmark(pair_bench) for img in pair.images]
    pixel_values, targets = load_batch(paths, model.encoder_image_spec())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        loss = model(pixel_values, targets, generator)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(root / "trained" / "final", extra={"step": TRAIN_STEPS})
    return {"untrained": root / "untrained", "trained": root / "trained"}


@pytest.fixture(scope="session")
def discrete_run(tmp_path_factory, tiny_clip_dir, request) -> Path:
    """An untrained stage-1 run of the discrete family (masked VQ-token prediction) on the toy tokenizer."""
    from genhancer.config import load_genhancer_config
    from genhancer.module import GenHancerModel

    vq_dir = request.getfixturevalue("toy_vq_dir")  # the discrete tests' tokenizer fixture
    cfg = load_genhancer_config(
        None,
        [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.type=discrete",
            "denoiser.preset=toy",
            "latent.space=vq",
            f"latent.vae_path={vq_dir}",
            "latent.vae_subfolder=null",
            "latent.patch_size=1",
            "flow.sample_steps=2",
        ],
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("discrete_run")
    GenHancerModel.build(cfg).save_pretrained(out / "final")
    return out

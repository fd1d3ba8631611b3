"""Fixtures of the trainer tests: a tiny image world, single-process launcher env, run overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.genhancer_train.worlds import free_port, make_folder


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tiny_world") / "train", 24)


@pytest.fixture
def single_process_env(monkeypatch):
    """What a launcher would set for one process (DeepSpeed needs it; otherwise it tries MPI)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")


@pytest.fixture
def train_args(tiny_clip_dir, tiny_world):
    """``train_args(run_dir, *overrides)`` -> argv for genhancer.train.main on the tiny CLIP + tiny world."""

    def make(run_dir: Path, *overrides: str) -> list[str]:
        return [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "flow.sample_steps=2",
            "data.source=folder",
            f"data.path={tiny_world}",
            "data.num_workers=0",
            f"train.run_dir={run_dir}",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.log_every=1",
            "train.save_every=2",
            "schedule.stage1.steps=4",
            "schedule.stage1.warmup_steps=1",
            "schedule.stage2.steps=2",
            "lora.r=4",
            "lora.alpha=4",
            *overrides,
        ]

    return make

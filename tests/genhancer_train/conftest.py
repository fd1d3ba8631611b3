"""Fixtures of the trainer tests: a tiny image world, single-process launcher env, run overrides, and one
stage-1 and one stage-2 run shared by the end-to-end and the kill/resume tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
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


# Long enough to kill and resume in between: checkpoints every 3 (stage 1) / 2 (stage 2) steps, and a warm-up
# longer than the run, so a resume that restarted the LR schedule would change the weights.
STAGE1 = ("schedule.stage1.steps=8", "train.save_every=3", "schedule.stage1.warmup_steps=20")
STAGE2 = ("stage=stage2", "schedule.stage2.steps=5", "train.save_every=2", "schedule.stage2.warmup_steps=20")


def train_in_process(argv: list[str]) -> None:
    """``genhancer.train.main`` in this interpreter on one thread: bit-identical to a subprocess run with
    ``OMP_NUM_THREADS=1`` (the kill/resume tests compare the two with ``torch.equal``)."""
    from genhancer.train import main as train_main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(argv) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stage1_run(train_args, tmp_path_factory) -> Path:
    """A stage-1 run of ``STAGE1`` (ZeRO-2, one process)."""
    run = tmp_path_factory.mktemp("stage1") / "run"
    train_in_process(train_args(run, *STAGE1))
    return run


@pytest.fixture(scope="session")
def stage2_run(train_args, stage1_run, tmp_path_factory) -> Path:
    """A stage-2 (LoRA) run of ``STAGE2`` on top of ``stage1_run``."""
    run = tmp_path_factory.mktemp("stage2") / "run"
    train_in_process(train_args(run, *STAGE2, f"init_from={stage1_run / 'final'}"))
    return run

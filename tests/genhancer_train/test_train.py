"""The trainer end to end on CPU: ZeRO-2 in one process (in-process ``main``), exact resume, the NaN stop,
stage 1 -> stage 2 -> export, and two torchrun ranks on gloo that see disjoint data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genhancer.train import main as train_main
from tests.genhancer_train.worlds import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def sample_keys(run: Path, rank: int = 0) -> list[list[str]]:
    lines = (run / "debug" / f"samples-rank{rank:05d}.jsonl").read_text().splitlines()
    return [json.loads(line)["keys"] for line in lines]


def test_stage1_stage2_export(tmp_path, train_args, single_process_env, tiny_clip_dir):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert train_main(train_args(s1)) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "final/provenance.json",
        "checkpoints/latest",
    ):
        assert (s1 / name).is_file(), name
    assert list((s1 / "tb").iterdir())  # tensorboard events
    summary = json.loads((s1 / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["zero_stage"] == 2 and summary["images_per_s"] > 0
    assert [m["step"] for m in metrics(s1)] == [1, 2, 3, 4]
    assert all(m["loss"] > 0 for m in metrics(s1))
    prov = json.loads((s1 / "final" / "provenance.json").read_text())
    assert prov["kind"] == "genhancer-stage" and prov["parents"][0]["path"] == str(tiny_clip_dir)
    ckpt = s1 / "checkpoints" / (s1 / "checkpoints" / "latest").read_text().strip()
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "rank-00000.json",
        "rank-00000.safetensors",
        "scheduler.json",
    ]
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))

    assert train_main(train_args(s2, "stage=stage2", f"init_from={s1}/final")) == 0
    trained = load_file(str(s2 / "checkpoints" / "step-000002" / "model.safetensors"))
    # stage 2 trains the encoder's LoRA (and, with bias=lora_only, the adapted layers' biases) only
    assert any("lora_" in k for k in trained) and all(k.startswith("encoder.") for k in trained)
    from genhancer.export import main as export_main

    out = tmp_path / "encoder"
    assert export_main(["--run", str(s2), "--out", str(out)]) == 0
    from transformers import CLIPModel

    CLIPModel.from_pretrained(out)


def test_resume_continues_exactly(tmp_path, train_args, single_process_env, monkeypatch):
    interrupted, straight = tmp_path / "a", tmp_path / "b"
    common = ("train.debug_log_samples=true", "train.save_every=3")
    assert train_main(train_args(interrupted, *common, "schedule.stage1.steps=3")) == 0
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert train_main(train_args(interrupted, *common, "schedule.stage1.steps=5")) == 0
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["resumed_from"].endswith("step-000003")
    assert [m["step"] for m in metrics(interrupted)] == [1, 2, 3, 4, 5]
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert train_main(train_args(straight, *common, "schedule.stage1.steps=5")) == 0

    # the same samples in the same order, and the same weights and optimizer state as a run never stopped
    assert sample_keys(interrupted) == sample_keys(straight)
    for name in ("model.safetensors", "rank-00000.safetensors"):
        a = load_file(str(interrupted / "checkpoints" / "step-000005" / name))
        b = load_file(str(straight / "checkpoints" / "step-000005" / name))
        assert a.keys() == b.keys()
        for k in a:
            if ".rng.numpy" not in k:  # numpy's global RNG is unused by training and unseeded at start
                assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6), k
    steps = [v for k, v in a.items() if k.endswith(".step")]  # AdamW's step count came back with the state
    assert steps and all(float(s) == 5 for s in steps)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, train_args, single_process_env, monkeypatch, capsys
):
    from genhancer.module import GenHancerModel

    real_forward = GenHancerModel.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # step 3
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(GenHancerModel, "forward", forward)
    run = tmp_path / "nan"
    assert train_main(train_args(run, "schedule.stage1.steps=6")) == 2
    err = capsys.readouterr().err
    assert "nan at step 3" in err and "step-000002" in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()] == ["step-000002"]
    assert not (run / "final").exists()


def test_two_torchrun_ranks_see_disjoint_data(tmp_path, train_args, tiny_world):
    run = tmp_path / "ddp"
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "genhancer.train",
        *train_args(run, "train.debug_log_samples=true", "schedule.stage1.steps=3", "train.save_every=3"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [{k for keys in sample_keys(run, r) for k in keys} for r in range(2)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert ranks[0] | ranks[1] <= {str(p) for p in tiny_world.rglob("*.png")}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["batch_per_step"] == 8
    ckpt = run / "checkpoints" / "step-000003"
    assert (ckpt / "rank-00000.safetensors").is_file() and (ckpt / "rank-00001.safetensors").is_file()

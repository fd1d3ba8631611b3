"""The end-to-end stage trains at the budget of the two-stage run it is compared with: stage1 + stage2 steps,
the denoiser and projectors at stage 1's lr, the encoder LoRA at stage 2's (two AdamW groups), and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genhancer.train import main
from tests.genhancer_train.worlds import free_port

pytestmark = pytest.mark.slow


def test_end_to_end_trains_at_the_two_stage_budget_and_resumes(
    tmp_path, train_args, single_process_env, monkeypatch
):
    import accelerate

    optimizers, real_prepare = [], accelerate.Accelerator.prepare

    def prepare(self, *args, **kwargs):
        optimizers.append(args[1])  # the torch AdamW, before DeepSpeed wraps it
        return real_prepare(self, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "prepare", prepare)
    common = ("stage=end-to-end", "schedule.stage1.steps=2", "schedule.stage2.steps=1", "train.save_every=2")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(train_args(straight, *common)) == 0
    assert json.loads((straight / "summary.json").read_text())["steps"] == 2 + 1
    # toy.yaml: stage 1 at lr 1e-3 (warmup 1, over by now), stage 2 at 3e-4
    (opt,) = optimizers
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 3e-4])

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert main(train_args(interrupted, *common, "schedule.end-to-end.steps=2")) == 0
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert main(train_args(interrupted, *common)) == 0
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"].endswith("step-000002")
    a = load_file(str(interrupted / "checkpoints" / "step-000003" / "model.safetensors"))
    b = load_file(str(straight / "checkpoints" / "step-000003" / "model.safetensors"))
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6), k

"""The trainer end to end on CPU: ZeRO-2 in one process (in-process ``main``), stage 1 -> stage 2 -> export,
and the NaN stop (kill/resume and two torchrun ranks: test_resume.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from genhancer.train import main as train_main

pytestmark = pytest.mark.slow


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage1_stage2_export(tmp_path, stage1_run, stage2_run, tiny_clip_dir):
    s1, s2 = stage1_run, stage2_run
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
    assert summary["steps"] == 8 and summary["zero_stage"] == 2 and summary["images_per_s"] > 0
    assert [m["step"] for m in metrics(s1)] == list(range(1, 9))
    assert all(m["loss"] > 0 for m in metrics(s1))
    lrs = [m["lr"] for m in metrics(s1)]  # warm-up of 20 steps: lr rises linearly through the whole run
    assert lrs == pytest.approx([lrs[0] * k for k in range(1, 9)])
    prov = json.loads((s1 / "final" / "provenance.json").read_text())
    assert prov["kind"] == "genhancer-stage" and prov["parents"][0]["path"] == str(tiny_clip_dir)
    ckpt = s1 / "checkpoints" / (s1 / "checkpoints" / "latest").read_text().strip()
    assert ckpt.name == "step-000008"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "manifest.json",
        "meta.json",
        "model.safetensors",
        "rank-00000.json",
        "rank-00000.safetensors",
        "scheduler.json",
    ]
    # keep_checkpoints=2 of steps 3, 6, 8; nothing left in the staging area
    assert sorted(p.name for p in (s1 / "checkpoints").iterdir()) == ["latest", "step-000006", "step-000008"]
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))

    trained = load_file(str(s2 / "checkpoints" / "step-000005" / "model.safetensors"))
    # stage 2 trains the encoder's LoRA (and, with bias=lora_only, the adapted layers' biases) only
    assert any("lora_" in k for k in trained) and all(k.startswith("encoder.") for k in trained)
    from genhancer.export import main as export_main

    out = tmp_path / "encoder"
    assert export_main(["--run", str(s2), "--out", str(out)]) == 0
    from transformers import CLIPModel

    CLIPModel.from_pretrained(out)


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
    assert "loss is nan at step 3" in err and "stopped before applying the update" in err
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-000002'}" in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()] == ["step-000002"]
    assert not (run / "final").exists()

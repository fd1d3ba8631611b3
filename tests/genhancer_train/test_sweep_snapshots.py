"""schedule.stage2.eval_at: stage 2 keeps its encoder LoRA at those steps; a snapshot exports like final/."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genhancer.config import OFFICIAL_STAGE2_EVAL_AT, load_genhancer_config
from genhancer.export import main as export_main
from genhancer.train import main as train_main
from genhancer.utils.errors import ConfigError


def test_official_eval_at_is_the_default_and_survives_a_yaml_schedule():
    assert OFFICIAL_STAGE2_EVAL_AT[:8] == (50, 100, 200, 300, 500, 1000, 2000, 3000)
    assert OFFICIAL_STAGE2_EVAL_AT[8:] == tuple(range(3500, 10_001, 500))
    cfg = load_genhancer_config("configs/genhancer/openai-clip-l14.yaml")
    assert cfg.schedule["stage2"].eval_at == list(OFFICIAL_STAGE2_EVAL_AT)
    assert cfg.schedule["stage1"].eval_at == []
    # a YAML that sets stage2's steps and lr keeps the rest of the section (the toy sets its own list)
    cfg = load_genhancer_config(None, ["schedule.stage2.steps=7"])
    assert cfg.schedule["stage2"].eval_at == list(OFFICIAL_STAGE2_EVAL_AT)


def test_eval_at_must_be_positive():
    with pytest.raises(ConfigError, match="eval_at steps must be positive"):
        load_genhancer_config(None, ["schedule.stage2.eval_at=[0, 5]"])


def test_stage2_keeps_snapshots_and_the_last_exports_like_final(tmp_path, train_args, single_process_env):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert train_main(train_args(s1, "schedule.stage1.eval_at=[1, 2]")) == 0
    assert not (s1 / "sweep").exists()  # stage 1 does not tune the encoder: nothing to keep
    args = train_args(s2, "stage=stage2", f"init_from={s1}/final", "schedule.stage2.eval_at=[1, 2, 50]")
    assert train_main(args) == 0
    kept = sorted(p.name for p in (s2 / "sweep").iterdir())
    assert kept == ["step-000001", "step-000002"]  # 50 is past the run's 2 steps
    first, last = (
        load_file(str(s2 / "sweep" / k / "encoder_lora" / "adapter_model.safetensors")) for k in kept
    )
    assert any(not torch.equal(first[k], last[k]) for k in first)  # step 2 trained on after step 1
    assert not (s2 / "sweep" / "step-000002" / "denoiser").exists()  # the encoder's LoRA only

    outs = {}
    for name, run in (("snap", s2 / "sweep" / "step-000002"), ("final", s2)):
        outs[name] = tmp_path / f"enc-{name}"
        assert export_main(["--run", str(run), "--out", str(outs[name])]) == 0
    snap, final = (load_file(str(outs[n] / "model.safetensors")) for n in ("snap", "final"))
    assert snap.keys() == final.keys() and all(torch.equal(snap[k], final[k]) for k in snap)

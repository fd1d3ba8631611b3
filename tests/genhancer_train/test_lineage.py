"""Resuming refuses checkpoints trained from another stage or another stage-1 output; rerunning a finished
stage keeps its output, so the runs built on it still resume."""

from __future__ import annotations

import json

import pytest

from genhancer.train import _check_lineage
from genhancer.utils.errors import ConfigError
from tests.genhancer_train.conftest import train_in_process


def _ckpt(tmp_path, lineage):
    d = tmp_path / "run" / "checkpoints" / "step-000010"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"step": 10, "lineage": lineage}))
    return d


def test_same_lineage_resumes(tmp_path):
    lineage = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t1", "config_hash": "h"}}
    _check_lineage(_ckpt(tmp_path, lineage), json.loads(json.dumps(lineage)))


def test_retrained_stage1_is_refused(tmp_path):
    old = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t1", "config_hash": "h"}}
    new = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t2", "config_hash": "h"}}
    with pytest.raises(ConfigError, match=r"remove .*run.*train\.resume=never"):
        _check_lineage(_ckpt(tmp_path, old), new)


def test_other_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="was trained from"):
        _check_lineage(
            _ckpt(tmp_path, {"stage": "stage1", "init_from": None}), {"stage": "stage2", "init_from": None}
        )


@pytest.mark.slow
def test_rerun_of_a_finished_stage1_keeps_final_so_stage2_still_resumes(train_args, tmp_path):
    """``enhance_clip.sh`` run again: stage 1 resumes at its last step and must leave final/ as it was (its
    creation time is in stage 2's lineage); a rewritten final/ would make stage 2 refuse to resume."""
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    s1 = train_args(stage1, "schedule.stage1.steps=2")
    s2 = train_args(stage2, "stage=stage2", "schedule.stage2.steps=2", f"init_from={stage1 / 'final'}")
    train_in_process(s1)
    train_in_process(s2)
    outputs = [stage1 / "summary.json", *(p for p in (stage1 / "final").rglob("*") if p.is_file())]
    before = {p: p.read_bytes() for p in outputs}
    assert json.loads(before[stage1 / "summary.json"])["final_loss"] > 0
    train_in_process(s1)
    assert {p: p.read_bytes() for p in outputs} == before  # the summary of the training, not of the rerun
    summary2 = (stage2 / "summary.json").read_bytes()
    train_in_process(s2)  # resumes at its last step instead of raising "was trained from ..."
    assert (stage2 / "summary.json").read_bytes() == summary2


@pytest.mark.slow
def test_rerun_with_another_config_rewrites_final(train_args, tmp_path):
    """A finished stage rerun under a changed config (here the clip norm, which no checkpoint refuses) writes
    final/ again: final/ must say what produced it."""
    run = tmp_path / "stage1"
    train_in_process(train_args(run, "schedule.stage1.steps=2"))
    train_in_process(train_args(run, "schedule.stage1.steps=2", "train.grad_clip=0.5"))
    saved = json.loads((run / "final" / "provenance.json").read_text())["config"]
    assert saved["train"]["grad_clip"] == 0.5


def test_a_resumed_run_learns_at_the_configs_rate(train_args, tmp_path, caplog):
    """A longer run resumed under a new ``schedule.stage1.lr`` (e.g. to anneal) takes the new rate and says
    so; the checkpoint's scheduler state alone would keep the old one."""
    run = tmp_path / "stage1"
    common = ("schedule.stage1.warmup_steps=0", "train.save_every=2")
    train_in_process(train_args(run, *common, "schedule.stage1.steps=2", "schedule.stage1.lr=1.0e-3"))
    train_in_process(train_args(run, *common, "schedule.stage1.steps=4", "schedule.stage1.lr=1.0e-4"))
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert "schedule lr changed since the checkpoint ([0.001] -> [0.0001])" in caplog.text

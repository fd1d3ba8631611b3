"""Bad images end to end: a training run skips every unusable file of the image zoo once and names it, with
its reason, in ``summary.json`` -- from a folder and from webdataset shards, and across a resume (the
skipped files travel in the checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genhancer.train import main as train_main
from tests import image_zoo as zoo
from tests.genhancer_train.worlds import draw_scene, free_port, make_folder

pytestmark = pytest.mark.slow


def _skipped(run: Path) -> tuple[dict[str, str], int]:
    summary = json.loads((run / "summary.json").read_text())
    names = {Path(e["key"].split(":")[-1]).name: e["reason"] for e in summary["skipped_files"]}
    assert len(names) == len(summary["skipped_files"])  # each file once
    return names, summary["skipped_images"]


def test_folder_zoo_is_named_in_summary_across_a_resume(
    tmp_path, train_args, single_process_env, monkeypatch
):
    world = zoo.write_folder(make_folder(tmp_path / "world", 4))  # 10 usable files of 14
    run = tmp_path / "run"
    common = (f"data.path={world}", "train.save_every=2")
    assert train_main(train_args(run, *common, "schedule.stage1.steps=2")) == 0
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert train_main(train_args(run, *common, "schedule.stage1.steps=3")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("step-000002")
    assert _skipped(run) == (zoo.SKIPS, len(zoo.SKIPS))


def test_webdataset_zoo_is_named_in_summary(tmp_path, train_args, single_process_env):
    good = {f"good{i}.jpg": zoo._encode(draw_scene(i), "JPEG") for i in range(4)}
    zoo.write_shard(tmp_path / "wds" / "00000.tar", good)
    run = tmp_path / "run"
    args = train_args(
        run, "data.source=webdataset", f"data.path={tmp_path / 'wds'}", "schedule.stage1.steps=3"
    )
    assert train_main(args) == 0
    assert _skipped(run) == ({**zoo.SKIPS, "cut.jpg": "bad-tar-member"}, len(zoo.SKIPS) + 1)

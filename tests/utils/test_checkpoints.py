"""genhancer.utils.checkpoints: complete-or-absent directories, the manifest check, cleanup, and the NaN stop
that all ranks agree on (two real gloo processes)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genhancer.utils.checkpoints import (
    MANIFEST,
    STAGING,
    commit,
    newest_complete,
    prune,
    remove_incomplete,
    resume_point,
    saving,
    scan,
    stop_if_not_finite,
    verify,
)
from genhancer.utils.errors import DataError, TrainingDiverged

STEP = re.compile(r"step-(\d+)")
LOG = logging.getLogger("test")
REPO = Path(__file__).resolve().parents[2]


def save(root: Path, step: int, *, keep: int | None = None) -> Path:
    with saving(root, f"step-{step}", pattern=STEP, keep=keep) as d:
        (d / "weights.bin").write_bytes(bytes([step]) * 64)
        (d / "sub").mkdir()
        (d / "sub" / "state.json").write_text(f'{{"step": {step}}}')
    return root / f"step-{step}"


def test_a_committed_checkpoint_lists_every_file_and_the_staging_area_is_gone(tmp_path):
    d = save(tmp_path, 3)
    import json

    files = json.loads((d / MANIFEST).read_text())["files"]
    assert sorted(files) == ["sub/state.json", "weights.bin"]
    assert files["weights.bin"]["bytes"] == 64 and len(files["weights.bin"]["sha256"]) == 64
    assert not (tmp_path / STAGING).exists()
    verify(d)  # as written: passes


def test_newest_complete_skips_interrupted_saves_and_cleanup_names_them(tmp_path, caplog):
    save(tmp_path, 2)
    save(tmp_path, 4)
    # a save killed after the rename, before its marker; and one killed while still staged
    (tmp_path / "step-6").mkdir()
    (tmp_path / "step-6" / "weights.bin").write_bytes(b"half")
    staged = tmp_path / STAGING / "step-8"
    staged.mkdir(parents=True)
    assert newest_complete(tmp_path, STEP) == tmp_path / "step-4"
    assert scan(tmp_path, STEP).incomplete == [tmp_path / "step-6", staged]
    with caplog.at_level(logging.WARNING, logger="test"):
        assert resume_point(tmp_path, STEP, LOG) == tmp_path / "step-4"
    assert f"removing incomplete checkpoint {tmp_path / 'step-6'}" in caplog.text
    assert f"removing incomplete checkpoint {staged}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-4"]


def test_an_exception_inside_the_save_commits_nothing(tmp_path):
    save(tmp_path, 2)
    with pytest.raises(OSError, match="disk full"), saving(tmp_path, "step-4", pattern=STEP, keep=1) as d:
        (d / "weights.bin").write_bytes(b"partial")
        raise OSError("disk full")
    assert scan(tmp_path, STEP).complete == [tmp_path / "step-2"]
    assert not (tmp_path / "step-4").exists()


def test_prune_keeps_the_newest_complete_and_resaving_a_step_replaces_it(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=2)
    assert [p.name for p in scan(tmp_path, STEP).complete] == ["step-2", "step-3"]
    save(tmp_path, 3, keep=2)  # e.g. train.resume=never over an old run
    assert [p.name for p in scan(tmp_path, STEP).complete] == ["step-2", "step-3"]
    prune(tmp_path, STEP, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "weights.bin").write_bytes(b"\x00" * 64),
            "weights.bin was modified after it was saved",
        ),
        (lambda d: (d / "sub" / "state.json").unlink(), "state.json is listed in"),
        (lambda d: (d / "sub" / "extra.pt").write_bytes(b"pickle"), "extra.pt was not written by the save"),
        (lambda d: (d / MANIFEST).unlink(), "is not a complete checkpoint"),
        (lambda d: (d / MANIFEST).write_text("{"), "not a valid checkpoint manifest"),
    ],
    ids=["modified", "missing", "added", "no-manifest", "bad-manifest"],
)
def test_verify_refuses_a_changed_checkpoint_naming_the_file(tmp_path, damage, message):
    d = save(tmp_path, 1)
    damage(d)
    with pytest.raises(DataError, match=re.escape(message)):
        verify(d)


def test_commit_is_rename_then_marker(tmp_path, monkeypatch):
    """A commit interrupted just before the marker leaves the final name without a manifest: incomplete."""
    import genhancer.utils.checkpoints as ckpt

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for SIGKILL here (the subprocess tests send the real one)

    monkeypatch.setattr(ckpt, "_write_manifest", killed)
    staging = tmp_path / STAGING / "step-5"
    staging.mkdir(parents=True)
    (staging / "w").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        commit(tmp_path, "step-5")
    assert (tmp_path / "step-5" / "w").is_file() and scan(tmp_path, STEP).incomplete == [tmp_path / "step-5"]
    assert remove_incomplete(tmp_path, STEP, LOG) == [tmp_path / "step-5"] and not any(tmp_path.iterdir())


def test_single_process_nan_stop_names_the_last_good_checkpoint(tmp_path):
    stop_if_not_finite(torch.tensor(1.5), step=1, last_good=lambda: None, hint="h")  # finite: nothing
    with pytest.raises(
        TrainingDiverged, match=r"loss is inf at step 7 .*last good checkpoint is /x/step-6 \(h\)"
    ):
        stop_if_not_finite(torch.tensor(float("inf")), step=7, last_good=lambda: Path("/x/step-6"), hint="h")


RANKS = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from genhancer.utils.checkpoints import stop_if_not_finite
    from genhancer.utils.errors import TrainingDiverged
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=rank, world_size=2)
    loss = torch.tensor(float("nan") if rank == 1 else 0.5)
    try:
        stop_if_not_finite(loss, step=3, last_good=lambda: "ck-2", hint="h")
        print("went on")
    except TrainingDiverged as e:
        print("stopped:", e)
    dist.destroy_process_group()
    """
)


def test_two_ranks_agree_to_stop_when_one_sees_nan():
    from tests.genhancer_train.worlds import free_port

    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANKS, port],
            cwd=REPO,
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    out = [p.communicate(timeout=120)[0] for p in procs]
    assert "stopped: loss is not finite at step 3 (1 rank(s)" in out[0], out[0]
    assert "stopped: loss is nan at step 3 (1 rank(s)" in out[1], out[1]
    assert all("the last good checkpoint is ck-2" in o for o in out)

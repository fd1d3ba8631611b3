"""Killed and resumed: real processes are SIGKILLed between checkpoints and in the middle of a save, then
resumed, and must end bit-identical (``torch.equal``) to a run never stopped -- stage 1, stage 2 (LoRA) and
two torchrun ranks. The warm-up is longer than every run, so a scheduler that restarted would change the
learning rate and the weights. A tampered checkpoint is refused before anything is loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genhancer.train import main as train_main
from tests.genhancer_train.conftest import STAGE1, STAGE2
from tests.genhancer_train.worlds import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def train(args: list[str], *, interrupt: tuple[str, ...] = (), nproc: int = 1) -> subprocess.CompletedProcess:
    """``genhancer.train`` in a fresh process (under torchrun for ``nproc`` > 1), one thread per rank."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable]
    if nproc > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(free_port()),
        ]
    cmd = [*launcher, "-m", "tests.interrupt", *interrupt, "--", "genhancer.train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def killed(proc: subprocess.CompletedProcess, *, torchrun: bool = False) -> None:
    """The run died of SIGKILL (under torchrun: a rank did, and the launcher failed)."""
    assert proc.returncode == (1 if torchrun else -signal.SIGKILL), proc.stderr[-3000:]


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def assert_same_state(a: Path, b: Path, step: int) -> None:
    """Exported weights, checkpointed weights and every rank's optimizer state are bit-identical."""
    ckpt = f"checkpoints/step-{step:06d}"
    names = [p.relative_to(a).as_posix() for p in sorted(a.glob("final/**/*.safetensors"))]
    names += [f"{ckpt}/{p.name}" for p in sorted((a / ckpt).glob("*.safetensors"))]
    assert any(n.startswith("final/") for n in names) and f"{ckpt}/rank-00000.safetensors" in names
    for name in names:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        # numpy's global RNG is unused by training and unseeded at start: only a resumed run restores it
        differ = [k for k in x if ".rng.numpy" not in k and not torch.equal(x[k], y[k])]
        assert differ == [], f"{name}: {differ[:5]}"


def test_stage1_killed_in_a_save_then_between_checkpoints_resumes_exactly(stage1_run, train_args, tmp_path):
    run = tmp_path / "s1"
    # 1) killed while committing step 6: files written and renamed into place, manifest (the marker) not yet
    killed(train(train_args(run, *STAGE1), interrupt=("--kill-before-marker", "2")))
    ckpts = run / "checkpoints"
    assert (ckpts / "step-000006" / "model.safetensors").is_file()
    assert not (ckpts / "step-000006" / "manifest.json").exists()
    assert (ckpts / "latest").read_text().strip() == "step-000003"
    # 2) resumes from step 3 (steps 4-6 lost), removing the incomplete step 6; killed before step 8
    proc = train(train_args(run, *STAGE1), interrupt=("--model", "GenHancerModel", "--kill-in-forward", "5"))
    killed(proc)
    assert f"removing incomplete checkpoint {ckpts / 'step-000006'}" in proc.stderr
    assert f"resumed from {ckpts / 'step-000003'} at step 3" in proc.stderr
    # 3) resumes from step 6 (step 7 lost) and finishes
    assert f"resumed from {ckpts / 'step-000006'} at step 6" in ok(train(train_args(run, *STAGE1)))
    assert_same_state(run, stage1_run, 8)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))  # lost steps logged once
    assert json.loads((run / "summary.json").read_text())["resumed_from"] == str(ckpts / "step-000006")


def test_stage2_lora_killed_between_checkpoints_resumes_exactly(stage1_run, stage2_run, train_args, tmp_path):
    run, init = tmp_path / "s2", f"init_from={stage1_run / 'final'}"
    killed(
        train(
            train_args(run, *STAGE2, init), interrupt=("--model", "GenHancerModel", "--kill-in-forward", "4")
        )
    )
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002"]
    assert "at step 2" in ok(train(train_args(run, *STAGE2, init)))
    assert_same_state(run, stage2_run, 5)


def test_a_tampered_checkpoint_is_refused_naming_the_file(
    stage1_run, train_args, tmp_path, single_process_env, capsys
):
    import shutil

    run = tmp_path / "s1"
    shutil.copytree(stage1_run, run)
    victim = run / "checkpoints" / "step-000008" / "rank-00000.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1  # one bit of the optimizer state
    victim.write_bytes(bytes(data))
    assert train_main(train_args(run, *STAGE1[1:], "schedule.stage1.steps=9")) == 2
    err = capsys.readouterr().err
    assert f"{victim} was modified after it was saved" in err and "refusing to resume" in err
    assert not (run / "checkpoints" / "step-000009").exists()


def test_two_torchrun_ranks_killed_resume_exactly(tmp_path, train_args, tiny_world):
    """Also the reference of the two-rank run: ranks see disjoint data and each writes its optimizer part."""
    args = ("schedule.stage1.steps=5", "train.save_every=2", "schedule.stage1.warmup_steps=20")
    straight, run = tmp_path / "straight", tmp_path / "killed"
    ok(train(train_args(straight, *args, "train.debug_log_samples=true"), nproc=2))
    ranks = [{k for keys in sample_keys(straight, r) for k in keys} for r in range(2)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert ranks[0] | ranks[1] <= {str(p) for p in tiny_world.rglob("*.png")}

    killed(
        train(
            train_args(run, *args),
            interrupt=("--rank", "1", "--model", "GenHancerModel", "--kill-in-forward", "4"),
            nproc=2,
        ),
        torchrun=True,
    )
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002"]
    assert "at step 2" in ok(train(train_args(run, *args), nproc=2))
    assert_same_state(run, straight, 5)
    assert (run / "checkpoints" / "step-000005" / "rank-00001.safetensors").is_file()


def sample_keys(run: Path, rank: int) -> list[list[str]]:
    lines = (run / "debug" / f"samples-rank{rank:05d}.jsonl").read_text().splitlines()
    return [json.loads(line)["keys"] for line in lines]

"""safetensors + JSON checkpoints: flattening arbitrary state, RNG, the collective writer and its pointer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from genhancer.checkpoint import (
    CheckpointWriter,
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    read_checkpoint,
    rng_state,
    save_state,
    set_rng_state,
    unflatten_state,
)
from genhancer.utils.errors import DataError


class Opaque:  # stands in for DeepSpeed's loss-scaler object inside an optimizer state dict
    pass


def test_flatten_round_trip_keeps_types(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    live = Opaque()
    state = {
        "optimizer": opt.state_dict(),
        "tuple": (1, 2.5, "x"),
        "ints": {0: "a", 7: [None, True]},
        "array": np.arange(5, dtype=np.uint32),
        "scalar": torch.tensor(3.0),
        "obj": Opaque(),
    }
    skeleton, tensors = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    save_state(state, tmp_path / "s")
    back = load_state(tmp_path / "s", fallback={"obj": live})
    assert back["tuple"] == (1, 2.5, "x") and back["ints"] == {0: "a", 7: [None, True]}
    assert back["array"].dtype == np.uint32 and list(back["array"]) == [0, 1, 2, 3, 4]
    assert back["obj"] is live  # an object is taken from the live state, never unpickled
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert unflatten_state(skeleton, tensors)["scalar"].item() == 3.0


def test_rng_state_round_trip(tmp_path):
    save_state(rng_state(), tmp_path / "rng")
    a = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(load_state(tmp_path / "rng"))
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def _write(writer: CheckpointWriter, step: int) -> None:
    writer.write(
        step,
        meta={"stage": "stage1"},
        model_state=lambda: {"w": torch.full((2,), float(step))},
        scheduler_state={"last_epoch": step},
        rank_state={"data": {"epoch": 0, "index": step}},
    )


def test_writer_keeps_last_n_and_moves_pointer_last(tmp_path):
    writer = CheckpointWriter(tmp_path, rank=0, world_size=1, keep=2)
    for step in (2, 4, 6):
        _write(writer, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000006"]
    assert latest_checkpoint(tmp_path).name == "step-000006"
    assert not list(tmp_path.glob(".tmp-*"))
    ck = read_checkpoint(latest_checkpoint(tmp_path), rank=0, world_size=1)
    assert ck["meta"]["step"] == 6 and ck["model"]["w"][0] == 6 and ck["scheduler"]["last_epoch"] == 6
    assert ck["rank"]["data"] == {"epoch": 0, "index": 6}
    with pytest.raises(DataError, match="same number of processes"):
        read_checkpoint(latest_checkpoint(tmp_path), rank=0, world_size=2)


def test_a_write_failing_halfway_leaves_the_previous_checkpoint_newest(tmp_path, monkeypatch, caplog):
    import logging

    import genhancer.checkpoint as checkpoint
    from genhancer.utils.checkpoints import STAGING, resume_point

    writer = CheckpointWriter(tmp_path, rank=0, world_size=1, keep=3)
    _write(writer, 2)

    real_save = checkpoint.save_file

    def disk_full(tensors, path):  # the rank state is written; the weights stop after 100 bytes
        if not path.endswith("model.safetensors"):
            return real_save(tensors, path)
        Path(path).write_bytes(b"\0" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        _write(writer, 4)
    staged = tmp_path / STAGING / "step-000004"
    assert (staged / "rank-00000.json").is_file() and (staged / "model.safetensors").stat().st_size == 100
    assert latest_checkpoint(tmp_path).name == "step-000002"
    assert (tmp_path / "latest").read_text().strip() == "step-000002"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002"]
    with caplog.at_level(logging.WARNING):
        assert resume_point(tmp_path, checkpoint.STEP_RE, logging.getLogger("t")).name == "step-000002"
    assert f"removing incomplete checkpoint {staged}" in caplog.text and not staged.exists()

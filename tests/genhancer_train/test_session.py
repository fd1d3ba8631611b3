"""The training session and its shared DeepSpeed plumbing: launcher variables for a bare process (and put
back afterwards), the one DeepSpeed-config reader, the precision resolver, the meters, and whole runs
started without any launcher."""

from __future__ import annotations

import json
import os

import pytest

from genhancer.train import RunningMean, Throughput
from genhancer.train import main as train_main
from genhancer.utils.deepspeed import (
    HIDDEN_SIZE_AUTO,
    LAUNCHER_VARS,
    deepspeed_config,
    distributed_process,
    resolve_mixed_precision,
    single_process_env,
)
from genhancer.utils.errors import ConfigError


@pytest.fixture
def no_launcher(monkeypatch):
    """A plain ``python`` process: none of the variables torchrun / accelerate launch would set."""
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)


# ---------------------------------------------------------------------------------------------- launcher
def test_single_process_env_fills_only_what_is_absent():
    filled = single_process_env({"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "1"})
    assert set(filled) == {"MASTER_PORT", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
    assert filled["RANK"] == "0" and int(filled["MASTER_PORT"]) > 0
    assert single_process_env(dict.fromkeys(LAUNCHER_VARS, "x")) == {}


def test_distributed_process_fills_launcher_vars_and_puts_everything_back(no_launcher, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    with distributed_process():
        assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what accelerate does for the whole process
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
    assert not [k for k in LAUNCHER_VARS if k in os.environ]
    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ and os.environ["ACCELERATE_MIXED_PRECISION"] == "no"


def test_a_launched_process_keeps_its_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with distributed_process():
        assert os.environ["RANK"] == "3" and "MASTER_PORT" not in os.environ


# --------------------------------------------------------------------------------------- deepspeed config
def _ds(tmp_path, **entries):
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_clipping": 1.0,
                "zero_optimization": {
                    "stage": 3,
                    "reduce_bucket_size": "auto",
                    "allgather_bucket_size": "auto",
                    "stage3_prefetch_bucket_size": 1000,
                },
                **entries,
            }
        )
    )
    return path


def test_deepspeed_config_fills_our_autos_and_drops_the_unfillable(tmp_path):
    ds = deepspeed_config(
        _ds(tmp_path),
        key="train.deepspeed",
        settings={"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0},
    )
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_clipping"] == 1.0
    # nothing derives these for us: DeepSpeed's own defaults apply; explicit values stay
    assert ds["zero_optimization"] == {"stage": 3, "stage3_prefetch_bucket_size": 1000}


def test_deepspeed_config_keeps_the_autos_a_trainer_fills(tmp_path):
    ds = deepspeed_config(_ds(tmp_path), key="finetune.deepspeed", keep_auto=HIDDEN_SIZE_AUTO)
    assert ds["train_micro_batch_size_per_gpu"] == "auto"
    assert ds["zero_optimization"]["reduce_bucket_size"] == "auto"
    assert "allgather_bucket_size" not in ds["zero_optimization"]


def test_deepspeed_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"'gradient_clipping' is 1.0 but the run config says 0.5"):
        deepspeed_config(_ds(tmp_path), key="train.deepspeed", settings={"gradient_clipping": 0.5})
    with pytest.raises(ConfigError, match="remove the 'optimizer' block"):
        deepspeed_config(
            _ds(tmp_path, optimizer={"type": "AdamW"}), key="train.deepspeed", torch_optimizer=True
        )
    with pytest.raises(ConfigError, match=r"^pretrain\.deepspeed: DeepSpeed config .*nope\.json' not found"):
        deepspeed_config(tmp_path / "nope.json", key="pretrain.deepspeed")


def test_resolve_mixed_precision():
    assert resolve_mixed_precision("auto", use_cpu=True) == "no"
    assert resolve_mixed_precision("fp32") == "no"
    assert resolve_mixed_precision("bf16") == "bf16" and resolve_mixed_precision("fp16") == "fp16"


# ------------------------------------------------------------------------------------------------ meters
def test_running_mean_is_the_mean_of_its_window():
    m = RunningMean()
    for v in (1.0, 2.0, 6.0):
        m.add(v)
    assert m.mean == 3.0
    m.reset()
    m.add(5.0)
    assert m.mean == 5.0


def test_throughput_counts_items_since_reset(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("genhancer.train.time.time", lambda: now[0])
    t = Throughput()
    t.add(8)
    t.add(2)
    now[0] = 102.0
    assert t.rate == 5.0 and t.seconds == 2.0  # 10 items in 2 s
    t.reset()
    t.add(3)
    now[0] = 103.0
    assert t.rate == 3.0 and t.items == 3


# ------------------------------------------------------------------------------------------- whole runs
@pytest.mark.slow
def test_bare_python_run_needs_no_launcher_and_leaves_the_process_clean(tmp_path, train_args, no_launcher):
    import torch.distributed as dist

    run = tmp_path / "bare"
    assert train_main(train_args(run, "schedule.stage1.steps=2")) == 0
    assert json.loads((run / "summary.json").read_text())["zero_stage"] == 2
    assert not [k for k in LAUNCHER_VARS if k in os.environ] and "ACCELERATE_USE_DEEPSPEED" not in os.environ
    assert not dist.is_initialized()


@pytest.mark.slow
def test_plain_accelerate_run_under_a_launcher_env(tmp_path, train_args, single_process_env):
    # DeepSpeed is imported but never joins: the teardown must not reach for its process group
    run = tmp_path / "plain"
    assert train_main(train_args(run, "train.deepspeed=null", "schedule.stage1.steps=2")) == 0
    assert json.loads((run / "summary.json").read_text())["zero_stage"] == 0

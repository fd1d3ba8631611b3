"""DeepSpeed plumbing both trainers share (GenHancer's accelerate loop and the LLaVA Trainer).

- ``resolve_mixed_precision``: the one reading of a precision setting ("auto" -> bf16 on a bf16 GPU, else
  fp32).
- ``deepspeed_config``: the one reader of a DeepSpeed JSON, filling the "auto" entries the caller owns.
- ``distributed_process``: the launcher variables a plain ``python`` process lacks, filled in while a run
  lasts, and the process-group teardown when it ends.

No model code here: ``llava_integration`` imports this module, never GenHancer's models.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import read_json

# What torchrun / accelerate launch / deepspeed set for every process.
LAUNCHER_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")

# zero_optimization entries whose "auto" the HF Trainer derives from the model's hidden size.
HIDDEN_SIZE_AUTO = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")


# ----------------------------------------------------------------------------------------------- precision
def resolve_mixed_precision(requested: str, *, use_cpu: bool = False) -> str:
    """``auto`` -> ``bf16`` on a GPU that supports it (and not ``use_cpu``), else ``no``; ``fp32`` is ``no``.

    Returns one of accelerate's names: ``no`` | ``bf16`` | ``fp16`` (anything else is passed through).
    """
    if requested == "fp32":
        return "no"
    if requested != "auto":
        return requested
    if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def precision_dtype(precision: str) -> torch.dtype:
    """The parameter dtype of a resolved precision: bf16 / fp16, else fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


# ---------------------------------------------------------------------------------------------- ds config
def deepspeed_config(
    path: str | Path,
    *,
    key: str,
    settings: Mapping[str, Any] | None = None,
    keep_auto: Iterable[str] = (),
    torch_optimizer: bool = False,
) -> dict[str, Any]:
    """Read a DeepSpeed JSON and settle its "auto" entries (one setting, one place).

    ``settings``: top-level entries the run config owns; "auto" takes the value, an explicit value that
    disagrees is a ConfigError naming ``key``. ``keep_auto``: ``zero_optimization`` entries whose "auto" a
    library fills later (the HF Trainer: ``HIDDEN_SIZE_AUTO``); every other "auto" there is dropped, so
    DeepSpeed's own default applies (nothing else could fill it). ``torch_optimizer``: the caller builds a
    torch optimizer and LR schedule itself, so an ``optimizer``/``scheduler`` block is refused.
    """
    path = Path(path)
    ds = read_json(
        path,
        ConfigError,
        missing=(
            f"{key}: DeepSpeed config {str(path)!r} not found (give a JSON file such as "
            "configs/deepspeed/zero2.json, or null to train without DeepSpeed)"
        ),
    )
    if torch_optimizer:
        for block in ("optimizer", "scheduler"):
            if block in ds:
                raise ConfigError(
                    f"{path}: remove the '{block}' block; the trainer builds a torch AdamW and "
                    "the LR schedule from the run config"
                )
    for name, value in (settings or {}).items():
        current = ds.get(name, "auto")
        if current == "auto":
            ds[name] = value
        elif float(current) != float(value):
            raise ConfigError(
                f"{path}: '{name}' is {current} but the run config says {value}; set it to \"auto\""
            )
    zero = ds.get("zero_optimization", {})
    keep = set(keep_auto)
    for name in [n for n, v in zero.items() if v == "auto" and n not in keep]:
        del zero[name]
    return ds


# ------------------------------------------------------------------------------------------------ process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The launcher variables a plain ``python`` run lacks (only those absent from ``env`` are returned)."""
    defaults = {
        "MASTER_ADDR": "127.0.0.1",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
    }
    missing = {k: v for k, v in defaults.items() if k not in env}
    if "MASTER_PORT" not in env:
        missing["MASTER_PORT"] = str(free_port())
    return missing


def destroy_process_group() -> None:
    """DeepSpeed's group first (it also drops DeepSpeed's cached group handles), then torch's if one is left;
    gloo aborts at interpreter exit otherwise. Does nothing when there is no group.

    ``destroy_process_group`` only drops torch's own references: a group still held by a finished run's
    objects (a Trainer's engine, ZeRO's partition groups, often in reference cycles) would be freed during
    interpreter finalisation, where gloo's worker threads abort the process ("terminate called without an
    active exception") after all the work is done. Collecting garbage before and after frees them here."""
    gc.collect()
    if "deepspeed.comm" in sys.modules:
        import deepspeed.comm as ds_comm

        if ds_comm.is_initialized():
            ds_comm.destroy_process_group()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


@contextmanager
def distributed_process() -> Iterator[None]:
    """One run's stay in this process.

    Without a launcher (``RANK`` unset) the launcher variables of a single process are set: DeepSpeed
    otherwise looks for MPI, and a CPU Trainer on gloo finds no process group. On exit the process group is
    destroyed and the launcher and ``ACCELERATE_*`` variables are put back as they were (accelerate sets
    some for the whole process), so another run can follow in the same interpreter.
    """
    saved = _snapshot()
    if "RANK" not in os.environ:
        os.environ.update(single_process_env(os.environ))
    try:
        yield
    finally:
        try:
            destroy_process_group()
        finally:
            _restore(saved)


def _snapshot() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in LAUNCHER_VARS or k.startswith("ACCELERATE_")}


def _restore(saved: Mapping[str, str]) -> None:
    for k in set(_snapshot()) - set(saved):
        del os.environ[k]
    os.environ.update(saved)


__all__ = [
    "HIDDEN_SIZE_AUTO",
    "LAUNCHER_VARS",
    "deepspeed_config",
    "destroy_process_group",
    "distributed_process",
    "free_port",
    "precision_dtype",
    "resolve_mixed_precision",
    "single_process_env",
]

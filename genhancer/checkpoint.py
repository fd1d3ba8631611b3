"""Training checkpoints as safetensors + JSON only (no pickles), written atomically by all ranks together.

Layout of ``<run>/checkpoints/step-000500/``::

    meta.json                    step, world size, ZeRO stage, format version
    model.safetensors            the trainable weights (rank 0; gathered under ZeRO-3)
    scheduler.json               the LR scheduler's state
    rank-00000.safetensors/.json this rank's optimizer state (ZeRO partitions are per rank), RNG states
                                 (python / numpy / torch) and data position
    ...

Complete-or-absent (``genhancer.utils.checkpoints``): the files are written into
``checkpoints/.incomplete/step-000500/``, fsynced and hashed, the directory is renamed into place and its
``manifest.json`` (sha256 per file) is written last; only then are checkpoints beyond ``keep`` removed and
``checkpoints/latest`` (the newest complete checkpoint's name, for people and scripts) rewritten. Resume
takes the newest directory with a manifest, whatever ``latest`` says, and verifies every file first.

Arbitrary nested state (an optimizer's ``state_dict()``, RNG states) is split by ``flatten_state`` into a
flat ``{name: tensor}`` mapping (safetensors) and a JSON skeleton that points at those names. Objects that
are neither tensors, arrays nor JSON values (e.g. DeepSpeed's loss-scaler object or its parameter-slice
mappings) are recorded as placeholders and, on load, taken from the live optimizer's current state dict —
they are rebuilt by the optimizer itself and carry no training progress (bf16/fp32 training has no dynamic
loss scale).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genhancer.utils.checkpoints import newest_complete, saving, scan
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import atomic_write_text, read_json, write_json

FORMAT = "genhancer-checkpoint/1"
LATEST = "latest"
STEP_RE = re.compile(r"^step-(\d+)$")

_T, _ND, _TUP, _DICT, _OBJ = "__tensor__", "__ndarray__", "__tuple__", "__items__", "__object__"
_MARKERS = {_T, _ND, _TUP, _DICT, _OBJ}


# ------------------------------------------------------------------------------------- flatten/unflatten
def flatten_state(obj: Any, prefix: str = "s") -> tuple[Any, dict[str, torch.Tensor]]:
    """Nested state -> (JSON skeleton, {name: tensor}). Tensors are cloned contiguous (safetensors needs
    it)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().to("cpu").contiguous().clone()
            return {_T: path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(
                np.ascontiguousarray(x).astype(np.int64 if x.dtype.kind in "iu" else x.dtype)
            ).clone()
            return {_ND: path, "dtype": str(x.dtype)}
        if isinstance(x, Enum):
            return walk(x.value, path)
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, tuple):
            return {_TUP: [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and k not in _MARKERS for k in x):
                return {k: walk(v, f"{path}.{k}") for k, v in x.items()}
            return {
                _DICT: [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(x.items())
                ]
            }
        return {_OBJ: type(x).__name__}

    return walk(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor], fallback: Any = None) -> Any:
    """Inverse of ``flatten_state``; ``{"__object__"}`` placeholders take the value at the same place in
    ``fallback`` (e.g. the live optimizer's state dict), or None."""

    def sub(fb: Any, key: Any) -> Any:
        try:
            return fb[key] if fb is not None else None
        except (KeyError, IndexError, TypeError):
            return None

    def walk(x: Any, fb: Any) -> Any:
        if isinstance(x, list):
            return [walk(v, sub(fb, i)) for i, v in enumerate(x)]
        if not isinstance(x, dict):
            return x
        if _T in x:
            return tensors[x[_T]]
        if _ND in x:
            return tensors[x[_ND]].numpy().astype(x["dtype"])
        if _TUP in x:
            return tuple(walk(v, sub(fb, i)) for i, v in enumerate(x[_TUP]))
        if _DICT in x:
            out = {}
            for k, v in x[_DICT]:
                key = walk(k, None)
                out[key] = walk(v, sub(fb, key))
            return out
        if _OBJ in x:
            return fb
        return {k: walk(v, sub(fb, k)) for k, v in x.items()}

    return walk(skeleton, fallback)


def save_state(state: Any, stem: Path) -> None:
    """``stem.safetensors`` + ``stem.json``."""
    skeleton, tensors = flatten_state(state)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    write_json(stem.with_suffix(".json"), skeleton)


def load_state(stem: Path, fallback: Any = None) -> Any:
    tensors = (
        load_file(str(stem.with_suffix(".safetensors"))) if stem.with_suffix(".safetensors").is_file() else {}
    )
    return unflatten_state(read_json(stem.with_suffix(".json")), tensors, fallback)


# --------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(tuple(np_state))  # type: ignore[arg-type]
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in state["cuda"]])


# ------------------------------------------------------------------------------------------ directories
def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def latest_checkpoint(checkpoints: str | Path) -> Path | None:
    """The newest complete checkpoint (one with its manifest), or None."""
    return newest_complete(checkpoints, STEP_RE)


def list_checkpoints(checkpoints: str | Path) -> list[Path]:
    """The complete checkpoints, oldest first (interrupted saves are not listed)."""
    return scan(checkpoints, STEP_RE).complete


class CheckpointWriter:
    """Collective checkpoint write. Every rank calls ``write``; rank 0 owns the directory moves.

    The run directory must be on a file system all ranks share (multi-node: a shared mount).
    """

    def __init__(self, checkpoints: str | Path, *, rank: int, world_size: int, keep: int):
        self.root = Path(checkpoints)
        self.rank = rank
        self.world_size = world_size
        self.keep = max(1, keep)

    def write(
        self,
        step: int,
        *,
        meta: dict[str, Any],
        model_state: Callable[[], dict[str, torch.Tensor]],
        scheduler_state: dict[str, Any],
        rank_state: dict[str, Any],
    ) -> Path:
        """``model_state`` is called on every rank (ZeRO-3 gathering is collective); rank 0 writes it."""
        name = step_dir_name(step)
        final = self.root / name

        def every_rank_wrote() -> None:
            missing = [r for r in range(self.world_size) if not (tmp / f"rank-{r:05d}.json").is_file()]
            if missing:
                raise DataError(
                    f"checkpoint {final}: ranks {missing} wrote no state into {tmp} "
                    "(is the run directory on a file system every node shares?)"
                )

        with saving(self.root, name, pattern=STEP_RE, keep=self.keep, before_commit=every_rank_wrote) as tmp:
            weights = model_state()
            save_state(rank_state, tmp / f"rank-{self.rank:05d}")
            if self.rank == 0:
                save_file(
                    {k: v.detach().to("cpu").contiguous() for k, v in weights.items()},
                    str(tmp / "model.safetensors"),
                )
                write_json(tmp / "scheduler.json", flatten_state(scheduler_state)[0])
                write_json(
                    tmp / "meta.json", {"format": FORMAT, "step": step, "world_size": self.world_size, **meta}
                )
        if self.rank == 0:  # for people and scripts; resume looks for the newest manifest itself
            atomic_write_text(self.root / LATEST, name + "\n")
        return final


def read_checkpoint(
    directory: str | Path, *, rank: int, world_size: int, optimizer_fallback: Any = None
) -> dict[str, Any]:
    """Everything one rank needs to resume: meta, model weights, scheduler state, its own rank state."""
    d = Path(directory)
    meta = read_json(d / "meta.json")
    if meta.get("format") != FORMAT:
        raise DataError(f"{d}: not a {FORMAT} checkpoint (meta.json format {meta.get('format')!r})")
    if int(meta["world_size"]) != world_size:
        raise DataError(
            f"{d} was written by {meta['world_size']} processes, this run has {world_size}; "
            "optimizer partitions and data positions are per process, so resume with the same number of "
            "processes (or start a new run from <run>/final)"
        )
    return {
        "meta": meta,
        "model": load_file(str(d / "model.safetensors")),
        "scheduler": unflatten_state(read_json(d / "scheduler.json"), {}),
        "rank": load_state(d / f"rank-{rank:05d}", fallback={"optimizer": optimizer_fallback}),
    }

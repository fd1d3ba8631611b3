"""Run a training entry point with a planned failure, as a real process (tests only).

    python -m tests.interrupt [--rank R] --kill-in-forward N --model GenHancerModel -- genhancer.train ARGS...
    python -m tests.interrupt --kill-before-marker N -- llava_integration.train ARGS...
    python -m tests.interrupt --nan-at-forward N --model LlavaForConditionalGeneration -- ...

``--kill-in-forward N``: SIGKILL in the N-th forward of the ``--model`` class, i.e. in step N without
gradient accumulation (steps 1..N-1 are done; those after the last checkpoint are lost).
``--kill-before-marker N``: SIGKILL inside the N-th checkpoint commit, after every file was written and the
directory renamed, before its manifest (the completeness marker) is written. ``--nan-at-forward N``: the
N-th forward of ``--model`` returns a NaN loss. ``--rank``: only that rank (RANK of the launcher) fails;
default every rank. Works under torchrun (``-m tests.interrupt``).
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
from typing import Any


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _nth(n: int, action: Any) -> Any:
    """A callable that runs ``action`` on its n-th call."""
    calls = {"n": 0}

    def hook(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            return action(*args, **kwargs)
        return None

    return hook


def kill_before_marker(n: int) -> None:
    import genhancer.utils.checkpoints as ckpt

    real, calls = ckpt._write_manifest, {"n": 0}

    def write_manifest(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            _die()
        real(*args, **kwargs)

    ckpt._write_manifest = write_manifest


def on_forward(n: int, model_class: str, action: Any) -> None:
    """Run ``action(output)`` (its result replaces the output) in the n-th forward of ``model_class``."""
    import torch

    hook = _nth(n, lambda module, args, output: action(output))

    def forward_hook(module: Any, args: Any, output: Any) -> Any:
        return hook(module, args, output) if type(module).__name__ == model_class else None

    torch.nn.modules.module.register_module_forward_hook(forward_hook)


def _poison(output: Any) -> Any:
    output["loss"] = output["loss"] * float("nan")
    return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--model", default="LlavaForConditionalGeneration", help="class whose forward counts")
    parser.add_argument("--kill-in-forward", type=int)
    parser.add_argument("--kill-before-marker", type=int)
    parser.add_argument("--nan-at-forward", type=int)
    parser.add_argument("module")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    if a.rank is None or a.rank == int(os.environ.get("RANK", "0")):
        if a.kill_in_forward:
            on_forward(a.kill_in_forward, a.model, lambda output: _die())
        if a.kill_before_marker:
            kill_before_marker(a.kill_before_marker)
        if a.nan_at_forward:
            on_forward(a.nan_at_forward, a.model, _poison)
    sys.argv = [a.module, *a.args]
    runpy.run_module(a.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

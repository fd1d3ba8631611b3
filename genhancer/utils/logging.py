"""Rank-aware logging and progress bars: only the main process (rank 0) prints."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def process_rank() -> int:
    """Global rank: from torch.distributed once initialised, else the launcher's RANK (0 when not
    launched)."""
    dist = sys.modules.get("torch.distributed")  # not imported yet -> no process group (and no 2 s import)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return is_main_process() or record.levelno >= logging.WARNING


def get_logger(name: str) -> logging.Logger:
    """A logger that prints INFO on rank 0 only (warnings and errors on every rank)."""
    logger = logging.getLogger(name)
    if not getattr(logger, "_genhancer_configured", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
        handler.addFilter(_RankFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger._genhancer_configured = True  # type: ignore[attr-defined]
    return logger


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """tqdm bar shown on rank 0 only (``disable`` may still be passed to hide it everywhere)."""
    kwargs["disable"] = kwargs.get("disable", False) or not is_main_process()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)

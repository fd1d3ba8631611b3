"""Files written so that a crash never leaves a half-written artifact.

``atomic_directory(final)`` yields a temporary sibling directory; on success it is renamed onto ``final``
(an existing ``final`` is replaced), on error it is removed and ``final`` is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genhancer.utils.errors import DataError, UserError


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path, error: type[UserError] = DataError, missing: str | None = None) -> Any:
    """Parse a JSON file; a missing file (message ``missing`` if given) or bad JSON raises ``error``."""
    p = Path(path)
    if not p.is_file():
        raise error(missing or f"file not found: {p}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{p}: not valid JSON ({e})") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is a DataError naming file and line number."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {p}")
    out = []
    with p.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}, line {i}: not valid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{p}, line {i}: expected a JSON object, got {type(rec).__name__}")
            out.append(rec)
    return out


def drop_lines_after_step(path: str | Path, step: int) -> None:
    """A resumed run's ``metrics.jsonl``: drop the lines logged after its checkpoint's ``step`` (the crashed
    tail is logged again). No file: nothing to do."""
    p = Path(path)
    if not p.is_file():
        return
    keep = [line for line in p.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(p, "".join(line + "\n" for line in keep))


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure to ``path`` (parent folders made); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out

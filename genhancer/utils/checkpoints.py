"""Complete-or-absent checkpoint directories, shared by both trainers (GenHancer's loop, the LLaVA Trainer).

A save writes every file of checkpoint ``NAME`` into the staging area ``ROOT/.incomplete/NAME``; then
``commit`` (rank 0, once every rank has written its part) fsyncs and hashes every file, renames the
directory to ``ROOT/NAME`` (fsyncing the parent) and writes the marker last: ``manifest.json``, the sha256
and size of every file. A checkpoint is *complete* when it has its final name and its manifest; anything
else -- a directory under ``.incomplete/``, a final name without a manifest -- is what a save killed halfway
leaves behind, and ``resume_point`` removes it with a warning naming it.

``verify`` recomputes every hash before anything in a checkpoint is loaded: a changed, missing or added file
refuses to resume, naming the file. That is the rule that makes unpickling DeepSpeed's and the Trainer's
state (``torch.load(weights_only=False)`` inside them) acceptable: only files proven to be the ones this
code wrote are ever loaded.

Collectives (a barrier, one all-reduce) go through torch.distributed directly, like
``genhancer.session.ProcessGroup``; without a process group they do nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from logging import Logger
from pathlib import Path
from typing import Any

import torch

from genhancer.utils.errors import DataError, TrainingDiverged
from genhancer.utils.logging import process_rank

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "checkpoint-manifest/1"
STAGING = ".incomplete"
_CHUNK = 1 << 24  # 16 MiB per read while hashing


# ------------------------------------------------------------------------------------------------ ranks
def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def barrier() -> None:
    if (dist := _dist()) is not None:
        dist.barrier()


def ranks_with(flag: bool) -> int:
    """How many ranks pass ``flag=True`` (one all-reduce; every rank must call it)."""
    dist = _dist()
    if dist is None:
        return int(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return int(t.item())


# ------------------------------------------------------------------------------------------------ write
def staging_area(root: str | Path) -> Path:
    """The directory under which checkpoints of ``root`` are written before ``commit``."""
    return Path(root) / STAGING


def staging_dir(root: str | Path, name: str) -> Path:
    """Where checkpoint ``name`` is written before ``commit`` renames it to ``root/name``."""
    return staging_area(root) / name


@contextmanager
def saving(
    root: str | Path,
    name: str,
    *,
    pattern: re.Pattern[str],
    keep: int | None,
    before_commit: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Collective save of checkpoint ``name``: every rank writes its part into the yielded staging directory
    inside the block; once all have (barrier), rank 0 runs ``before_commit`` (e.g. checks that every rank's
    part is there), commits and prunes to the newest ``keep``. An exception inside the block commits nothing.
    """
    staging = staging_dir(root, name)
    if process_rank() == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    yield staging
    barrier()  # every rank has written (ZeRO-3: each rank its own shards)
    if process_rank() == 0:
        if before_commit is not None:
            before_commit()
        commit(root, name)
        prune(root, pattern, keep)
    barrier()


def commit(root: str | Path, name: str) -> Path:
    """Rank 0, after every rank wrote its files into ``staging_dir(root, name)``: fsync and hash them, rename
    the directory to ``root/name``, then write the marker ``manifest.json``. Returns ``root/name``."""
    staging, final = staging_dir(root, name), Path(root) / name
    written = _files(staging)
    files = {str(p.relative_to(staging)): _describe(p) for p in written}
    for d in sorted({p.parent for p in written} | {staging}, reverse=True):  # the entries, deepest first
        _fsync(d)
    if final.exists():  # an older save of the same step (e.g. after resume=never)
        _discard(root, final)
    os.replace(staging, final)
    _fsync(final.parent)
    _write_manifest(final, files)
    _tidy(root)
    return final


def _write_manifest(final: Path, files: dict[str, dict[str, Any]]) -> None:
    """The marker: written last, atomically and durably (a rename of an fsynced file, then the directory)."""
    tmp = final / f".tmp-{MANIFEST}"
    with tmp.open("w") as f:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final / MANIFEST)
    _fsync(final)


def _describe(path: Path) -> dict[str, Any]:
    _fsync(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------- find
@dataclass
class Scan:
    """The checkpoints under a root: complete ones (oldest first) and the traces of interrupted saves."""

    complete: list[Path]
    incomplete: list[Path]


def scan(root: str | Path, pattern: re.Pattern[str]) -> Scan:
    """``pattern`` matches a checkpoint's final name and captures its step number (e.g. ``step-(\\d+)``)."""
    root = Path(root)
    if not root.is_dir():
        return Scan([], [])
    named = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name))]
    complete = [p for _, p in sorted(named) if (p / MANIFEST).is_file()]
    incomplete = [p for _, p in sorted(named) if not (p / MANIFEST).is_file()]
    if staging_area(root).is_dir():
        incomplete += sorted(staging_area(root).iterdir())
    return Scan(complete, incomplete)


def newest_complete(root: str | Path, pattern: re.Pattern[str]) -> Path | None:
    found = scan(root, pattern).complete
    return found[-1] if found else None


def remove_incomplete(root: str | Path, pattern: re.Pattern[str], log: Logger) -> list[Path]:
    """Delete what interrupted saves left behind (rank 0 only); a warning names each."""
    gone = scan(root, pattern).incomplete
    for p in gone:
        log.warning("removing incomplete checkpoint %s (a save was interrupted; it is never resumed from)", p)
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if staging_area(root).is_dir():
        shutil.rmtree(staging_area(root))
    return gone


def prune(root: str | Path, pattern: re.Pattern[str], keep: int | None) -> None:
    """Keep the newest ``keep`` complete checkpoints (rank 0, after a commit); None keeps all."""
    if keep is None:
        return
    for old in scan(root, pattern).complete[: -max(1, keep)]:
        _discard(root, old)


def _discard(root: str | Path, directory: Path) -> None:
    """Move out of sight first (one rename), then delete: a kill halfway never leaves a checkpoint that
    still looks complete with files missing."""
    parked = staging_dir(root, f"removed-{directory.name}")
    parked.parent.mkdir(parents=True, exist_ok=True)
    if parked.exists():
        shutil.rmtree(parked)
    os.replace(directory, parked)
    shutil.rmtree(parked)
    _tidy(root)


def _tidy(root: str | Path) -> None:
    """Drop the staging area once it is empty."""
    area = staging_area(root)
    if area.is_dir() and not any(area.iterdir()):
        area.rmdir()


# ------------------------------------------------------------------------------------------------ check
def verify(directory: str | Path) -> None:
    """Every file of the checkpoint is the one written at save (sha256), none is missing or added; else a
    DataError naming the file."""
    d = Path(directory)
    manifest = d / MANIFEST
    if not manifest.is_file():
        raise DataError(
            f"{d} is not a complete checkpoint (no {MANIFEST}: its save was interrupted, or another program "
            "wrote it); resume from another checkpoint or set train.resume=never to start afresh"
        )
    try:
        content = json.loads(manifest.read_text())
        if content["format"] != MANIFEST_FORMAT:
            raise KeyError("format")
        listed = content["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(
            f"{manifest}: not a valid checkpoint manifest; the checkpoint cannot be trusted"
        ) from None
    refuse = f"refusing to resume from {d} (delete it to resume from an older checkpoint)"
    for rel, want in listed.items():
        path = d / rel
        if not path.is_file():
            raise DataError(f"{path} is listed in {manifest} but missing; {refuse}")
        if path.stat().st_size != want["bytes"] or sha256_file(path) != want["sha256"]:
            raise DataError(
                f"{path} was modified after it was saved (sha256 differs from {MANIFEST}); {refuse}"
            )
    for path in _files(d):
        if str(path.relative_to(d)) not in listed:
            raise DataError(f"{path} was not written by the save (not in {MANIFEST}); {refuse}")


def verify_on_all_ranks(directory: str | Path) -> None:
    """Rank 0 verifies, every rank learns the verdict (no rank goes on to load while another stops)."""
    error: DataError | None = None
    if process_rank() == 0:
        try:
            verify(directory)
        except DataError as e:
            error = e
    if ranks_with(error is not None):
        raise error or DataError(f"{directory} failed verification on rank 0 (its message names the file)")


def resume_point(root: str | Path, pattern: re.Pattern[str], log: Logger) -> Path | None:
    """The newest complete checkpoint under ``root``, verified; incomplete ones are removed first.
    Collective: every rank calls it and gets the same answer."""
    if process_rank() == 0:
        remove_incomplete(root, pattern, log)
    barrier()
    found = newest_complete(root, pattern)
    if found is not None:
        verify_on_all_ranks(found)
    return found


# ---------------------------------------------------------------------------------------------- diverged
def stop_if_not_finite(
    loss: torch.Tensor, *, step: int, last_good: Callable[[], Path | None], hint: str
) -> None:
    """Every rank calls this before ``backward``: if the loss is NaN/inf on any rank, all ranks raise
    ``TrainingDiverged`` together, so no rank applies the update and no checkpoint is taken from it.
    ``last_good()`` names the checkpoint a rerun would resume from (asked only when stopping)."""
    finite = bool(torch.isfinite(loss.detach()).all())
    bad = ranks_with(not finite)
    if not bad:
        return
    value = f"loss is {float(loss.detach().float().mean())}" if not finite else "loss is not finite"
    good = last_good()
    where = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
    raise TrainingDiverged(
        f"{value} at step {step} ({bad} rank(s) saw a non-finite loss): training stopped before applying "
        f"the update; {where} ({hint})"
    )


__all__ = [
    "MANIFEST",
    "STAGING",
    "Scan",
    "barrier",
    "commit",
    "newest_complete",
    "prune",
    "ranks_with",
    "remove_incomplete",
    "resume_point",
    "saving",
    "scan",
    "sha256_file",
    "staging_area",
    "staging_dir",
    "stop_if_not_finite",
    "verify",
    "verify_on_all_ranks",
]

"""Provenance manifests: every exported directory says what it was made from and how.

``provenance.json`` = {kind, created, command, git: {revision, dirty}, config, config_hash, parents: [{path,
kind, config_hash}], packages: {name: version}, extra}. The leaderboard reads it to name a row's encoder/LLM.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from genhancer.utils.config import config_hash, to_dict
from genhancer.utils.fsio import read_json, write_json

FILENAME = "provenance.json"
_PACKAGES = (
    "torch",
    "transformers",
    "diffusers",
    "peft",
    "accelerate",
    "deepspeed",
    "lmms-eval",
    "genhancer-suite",
)


def git_revision(path: str | Path | None = None) -> dict[str, Any]:
    """Revision of the checkout holding this package (or ``path``); 'unknown' outside git."""
    cwd = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
        return {"revision": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": "unknown", "dirty": None}


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def read_provenance(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / FILENAME
    return read_json(p) if p.is_file() else None


def write_provenance(
    directory: str | Path,
    kind: str,
    *,
    config: Any = None,
    parents: Iterable[str | Path] = (),
    command: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``directory/provenance.json``. ``config`` may be a dataclass or a dict."""
    cfg = config
    if cfg is not None and dataclasses.is_dataclass(cfg):
        cfg = to_dict(cfg)
    parent_rows = []
    for parent in parents:
        prov = read_provenance(parent) or {}
        parent_rows.append(
            {
                "path": str(Path(parent).resolve()) if Path(parent).exists() else str(parent),
                "kind": prov.get("kind"),
                "config_hash": prov.get("config_hash"),
            }
        )
    manifest = {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]],
        "git": git_revision(),
        "config": cfg,
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "parents": parent_rows,
        "packages": package_versions(),
        "extra": dict(extra or {}),
    }
    return write_json(Path(directory) / FILENAME, manifest)

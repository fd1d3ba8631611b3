"""What the toy world's trainers (toy CLIP, toy VAE, attribute classifier) share.

Each one trains a model from a world into OUT and caches it: OUT is reused when its provenance names the
same kind, the same config hash and the same world fingerprint. This module holds that cache check, the
files written beside every model (resolved ``config.yaml``, ``metrics.jsonl``, the summary,
``provenance.json``), the training-loop bookkeeping (running means -> metrics rows) and the common command
line (``--world --out --config overrides --force --threads --print-config``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from genhancer.utils.config import dump_yaml, load_config, to_dict
from genhancer.utils.errors import DataError, UserError
from genhancer.utils.fsio import read_json, write_json, write_jsonl
from genhancer.utils.provenance import read_provenance, write_provenance

T = TypeVar("T")
THREADS_HELP = (
    "torch CPU threads (default: torch's choice, all cores). On a machine shared with other jobs use 1: "
    "oversubscribed threads can be 10x slower"
)


# ---------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class CachedRun:
    """One kind of cached training output: its provenance kind, summary file and the files it needs."""

    kind: str
    summary_file: str
    required_files: tuple[str, ...]  # anything missing means: not cached, retrain

    def cached_summary(self, out: Path, cfg_hash: str, fingerprint: str) -> dict[str, Any] | None:
        """OUT's summary when OUT is a finished run of this kind, config hash and world; else None."""
        if not all((out / f).is_file() for f in self.required_files):
            return None
        try:
            prov = read_provenance(out) or {}
            summary = read_json(out / self.summary_file)
        except DataError:
            return None
        same = (
            prov.get("kind") == self.kind
            and prov.get("config_hash") == cfg_hash
            and (prov.get("extra") or {}).get("world_fingerprint") == fingerprint
        )
        return summary if same else None

    def write_records(
        self,
        tmp: Path,
        cfg: Any,
        rows: list[dict[str, float]],
        summary: dict[str, Any],
        t0: float,
        *,
        parents: Sequence[str | Path],
        command: list[str] | None,
        fingerprint: str,
    ) -> None:
        """Write config.yaml, metrics.jsonl, the summary (with ``wall_seconds`` since ``t0``, set in place)
        and provenance.json into ``tmp``; provenance last, as the mark of a finished run."""
        dump_yaml(cfg, tmp / "config.yaml")
        write_jsonl(tmp / "metrics.jsonl", rows)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / self.summary_file, summary)
        write_provenance(
            tmp,
            self.kind,
            config=cfg,
            parents=parents,
            command=command,
            extra={"world_fingerprint": fingerprint},
        )


# ---------------------------------------------------------------------------------------------- training
def training_summary(
    steps: int, batch_size: int, images: int, parameters: int, secs: float, cpu_secs: float
) -> dict:
    """The fields every toy trainer's summary opens with (``batch_size`` as run: at most ``images``)."""
    return {
        "steps": steps,
        "batch_size": min(batch_size, images),
        "train_images": images,
        "parameters": parameters,
        "threads": torch.get_num_threads(),
        "train_seconds": round(secs, 2),
        "train_cpu_seconds": round(cpu_secs, 2),
    }


def warmup_cosine(warmup_steps: int, steps: int) -> Callable[[int], float]:
    """LR factor: linear warmup over ``warmup_steps`` times a cosine decay to 0 over all ``steps``."""
    return lambda s: (
        min(1.0, (s + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )


class MetricsLog:
    """Running means of per-step scalars, turned into one metrics row every ``log_every`` steps (and at
    the last step); ``seconds`` in a row counts from the log's creation."""

    def __init__(self, steps: int, log_every: int) -> None:
        self.steps, self.log_every = steps, log_every
        self.rows: list[dict[str, float]] = []
        self.start = time.perf_counter()
        self._sums: dict[str, float] = {}
        self._seen = 0

    def add(self, step: int, **values: torch.Tensor | float) -> bool:
        """Accumulate step ``step``'s (0-based) values; True when a row is due (call :meth:`flush`)."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
        self._seen += 1
        return (step + 1) % self.log_every == 0 or step + 1 == self.steps

    def flush(self, step: int, **extra: float) -> dict[str, float]:
        """Append and return the row {step, means..., extra..., seconds}; the running means restart."""
        row = {
            "step": step + 1,
            **{k: v / self._seen for k, v in self._sums.items()},
            **extra,
            "seconds": round(time.perf_counter() - self.start, 3),
        }
        self.rows.append(row)
        self._sums, self._seen = {}, 0
        return row

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ---------------------------------------------------------------------------------------------- CLI
def run_parser(
    name: str, doc: str, *, out_help: str, config_help: str, force_help: str, threads_help: str = THREADS_HELP
) -> argparse.ArgumentParser:
    """The parser of ``python -m toyworld NAME`` with the arguments every cached trainer takes."""
    p = argparse.ArgumentParser(
        prog=f"python -m toyworld {name}",
        description=doc.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--world", help="toy world directory (python -m toyworld build --out DIR)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--config", help=config_help)
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. train.steps=200")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def start_run(
    name: str, parser: argparse.ArgumentParser, schema: type[T], argv: Sequence[str] | None
) -> tuple[argparse.Namespace, T, list[str]] | None:
    """Parse ``argv``, resolve the config, apply ``--threads``; returns (args, config, provenance command),
    or None when ``--print-config`` printed the config (the command is then done)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    cfg = load_config(schema, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return None
    if not args.world or not args.out:
        raise UserError(f"{name} needs --world DIR and --out DIR (see --help)")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, cfg, ["python", "-m", "toyworld", name, *argv]

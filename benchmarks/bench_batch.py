"""Benchmark: evaluation commands as separate ``python -m`` processes vs one ``genhancer.utils.batch``.

    python -m benchmarks.bench_batch [--model DIR] [--benchmark DIR] [--out JSON] [--repeats 2]

The commands are what ``scripts/enhance_clip.sh`` runs per MMVP-VLM benchmark: score the base encoder,
score the "enhanced" one (here the same directory), compare the two -- three times over, as the script does
for its three benchmarks (nine commands). Without --model / --benchmark it builds a toy-world-sized CLIP
from config and a synthetic benchmark of the official size in a temporary directory, so it runs anywhere
offline. Both ways run as child processes, interleaved, best of --repeats rounds (wall time); the result
files of the two ways must be equal but for timings and creation stamps (asserted). The ratio goes to
stdout and to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_mmvp_vlm import make_synthetic_benchmark, make_toy_clip
from genhancer.utils.cli import entry_point
from genhancer.utils.fsio import write_json

REPO = Path(__file__).resolve().parents[1]
VOLATILE = ("seconds", "created")


def commands(model: Path, bench: Path, out: Path, rounds: int = 3) -> list[list[str]]:
    """The argv (after ``python -m``) of ``rounds`` before/after/compare trios writing under ``out``."""
    cmds = []
    for i in range(rounds):
        a, b = out / f"{i}_before.json", out / f"{i}_after.json"
        cmds += [
            ["eval.mmvp_vlm", "--model", str(model), "--benchmark", str(bench), "--out", str(a)],
            ["eval.mmvp_vlm", "--model", str(model), "--benchmark", str(bench), "--out", str(b)],
            ["eval.mmvp_vlm", "--compare", str(a), str(b), "--out", str(out / f"{i}_change.json")],
        ]
    return cmds


def _separate(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, check=True, capture_output=True)


def _batched(cmds: list[list[str]]) -> None:
    lines = "\n".join(shlex.join(c) for c in cmds)
    batch = [sys.executable, "-m", "genhancer.utils.batch"]
    subprocess.run(batch, cwd=REPO, input=lines, text=True, check=True, capture_output=True)


def _stripped(value):
    if isinstance(value, dict):
        return {k: _stripped(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stripped(v) for v in value]
    return value


def _same_results(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.json"))
    assert names and names == sorted(p.name for p in b.glob("*.json")), names

    def read(directory: Path, name: str):  # the compare files name their inputs: the run's own directory
        return _stripped(json.loads((directory / name).read_text().replace(str(directory), "OUT")))

    return all(read(a, n) == read(b, n) for n in names)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", help="CLIP/SigLIP dir (default: a toy CLIP built from config)")
    p.add_argument("--benchmark", help="MMVP-VLM folder (default: synthetic, official size)")
    p.add_argument("--out", default="runs/benchmarks/bench_batch.json")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = Path(args.model).resolve() if args.model else make_toy_clip(root / "toy_clip")
        bench = Path(args.benchmark).resolve() if args.benchmark else make_synthetic_benchmark(root / "mmvp")
        best = {"separate": float("inf"), "batched": float("inf")}
        for r in range(args.repeats):
            for name, run in (("separate", _separate), ("batched", _batched)):
                out = root / f"{name}-{r}"
                out.mkdir()
                t0 = time.perf_counter()
                run(commands(model, bench, out))
                best[name] = min(best[name], time.perf_counter() - t0)
        same = _same_results(root / "separate-0", root / "batched-0")
        assert same, "the batch's result files differ from the separate processes'"
        n = len(commands(model, bench, root))

    result = {
        "benchmark": "bench_batch",
        "model_dir": args.model or "toy CLIP built from config (ToyClipShape defaults)",
        "bench_dir": args.benchmark or "synthetic, 9 patterns x 15 pairs",
        "commands": n,
        "platform": platform.platform(),
        "repeats": args.repeats,
        "seconds": best,
        "seconds_per_command": {k: v / n for k, v in best.items()},
        "speedup": best["separate"] / best["batched"],
        "identical_results": same,
    }
    write_json(args.out, result)
    print(
        f"{n} commands: separate processes {best['separate']:.1f} s, one batch {best['batched']:.1f} s: "
        f"{result['speedup']:.1f}x faster, identical results; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

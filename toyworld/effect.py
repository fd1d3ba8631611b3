"""The effect study: does stage 2 put fine detail into the encoder, beyond what the controls show?

    python -m toyworld effect --world runs/toyworld --clip runs/toy/clip --out runs/effect --seeds 0 1 2
    python -m toyworld effect --out runs/effect --report-only  # re-read finished runs, rewrite the report

For each training seed, three arms, each an ordinary run through the real entry points (``genhancer.train``,
``genhancer.export``; the same commands ``scripts/enhance_clip.sh`` runs):
  genhancer        stage 1 -> stage 2 -> export (the run config as it is)
  zero-condition   control: stage 1 with ``conditioning.zero_condition=true`` (the denoiser never sees the
                   global token), then the same stage 2 -> export
  random-update    control: the genhancer arm's stage 2 exported with a random LoRA update of the same size
                   (``genhancer.export --random-update``)
Every exported encoder is scored against the base CLIP on the linear probes (val scenes), the 150-pair
MMVP-VLM decision set and the zero-shot spec; each stage 1 gets its conditioning gap on the validation pairs.
The report pools the seeds: per item, the change averaged over seeds, with a percentile-bootstrap 95%
interval over items (MMVP-VLM: over pairs, within each pattern), plus every seed's own change. Finished steps
are skipped on rerun, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.zeroshot import read_spec
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import atomic_write_text, read_json, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.stats import bootstrap_means, percentile_interval, stratified_bootstrap_means

log = get_logger("toyworld.effect")
COARSE = ("color", "shape", "background")  # whole-object attributes; the rest are the fine ones


@dataclass(frozen=True)
class Arm:
    """One arm of the study: extra stage-1 overrides, or an export of another arm's stage 2 as a control."""

    name: str
    stage1: tuple[str, ...] = ()
    export_of: str | None = None  # reuse this arm's stage 2 and export it with --random-update <seed>


ARMS = (
    Arm("genhancer"),
    Arm("zero-condition", stage1=("conditioning.zero_condition=true",)),
    Arm("random-update", export_of="genhancer"),
)


@dataclass(frozen=True)
class Paths:
    world: Path
    clip: Path
    config: Path
    out: Path

    def arm(self, seed: int, arm: str) -> Path:
        return self.out / f"seed-{seed}" / arm


def _run(cmd: list[str], done: Path) -> None:
    """Run one entry point unless its output ``done`` exists (a rerun skips finished steps)."""
    if done.exists():
        return
    log.info("$ %s", " ".join(cmd))
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", *cmd], check=False)
    if proc.returncode != 0:
        raise DataError(f"step failed (exit {proc.returncode}): python -m {' '.join(cmd)}")
    log.info("  %.0f s", time.time() - start)


def _evaluate(p: Paths, model: Path, dest: Path) -> None:
    """Probes, MMVP-VLM decision set and zero-shot of one encoder directory into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    w = p.world
    _run(
        [
            "eval.probes",
            "--model",
            str(model),
            "--train",
            str(w / "train"),
            "--val",
            str(w / "val"),
            "--out",
            str(dest / "probes.json"),
        ],
        dest / "probes.json",
    )
    _run(
        [
            "eval.mmvp_vlm",
            "--model",
            str(model),
            "--benchmark",
            str(w / "mmvp_vlm_decision"),
            "--out",
            str(dest / "mmvp_decision.json"),
        ],
        dest / "mmvp_decision.json",
    )
    _run(
        [
            "eval.zeroshot",
            "--model",
            str(model),
            "--spec",
            str(w / "val" / "zeroshot_shape.json"),
            "--out",
            str(dest / "zeroshot.json"),
        ],
        dest / "zeroshot.json",
    )


def _train_arm(p: Paths, seed: int, arm: Arm) -> Path:
    """Stage 1 and stage 2 of one arm and seed; returns the stage-2 run directory."""
    root = p.arm(seed, arm.name)
    common = [
        "--config",
        str(p.config),
        f"encoder.path={p.clip}",
        f"data.path={p.world / 'train'}",
        f"train.seed={seed}",
        f"cache.dir={p.out / 'cache'}",
    ]
    _run(
        ["genhancer.train", *common, *arm.stage1, f"train.run_dir={root / 'stage1'}"],
        root / "stage1" / "final",
    )
    _run(
        [
            "genhancer.diagnostics",
            "cond-gap",
            "--stage-dir",
            str(root / "stage1"),
            "--benchmark",
            str(p.world / "mmvp_vlm_val"),
            "--out",
            str(root / "cond_gap.json"),
        ],
        root / "cond_gap.json",
    )
    _run(
        [
            "genhancer.train",
            *common,
            "stage=stage2",
            f"init_from={root / 'stage1' / 'final'}",
            f"train.run_dir={root / 'stage2'}",
        ],
        root / "stage2" / "final",
    )
    return root / "stage2"


def run_study(p: Paths, seeds: Sequence[int], control_seeds: Sequence[int] | None = None) -> None:
    """``control_seeds``: the seeds the zero-condition control trains on (default: all; it costs a stage 1
    and a stage 2 per seed)."""
    _evaluate(p, p.clip, p.out / "base")
    for seed in seeds:
        for arm in ARMS:
            if arm.stage1 and control_seeds is not None and seed not in control_seeds:
                continue
            root = p.arm(seed, arm.name)
            if arm.export_of is None:
                stage2 = _train_arm(p, seed, arm)
                export = ["genhancer.export", "--run", str(stage2), "--out", str(root / "encoder")]
            else:
                stage2 = p.arm(seed, arm.export_of) / "stage2"
                export = [
                    "genhancer.export",
                    "--run",
                    str(stage2),
                    "--out",
                    str(root / "encoder"),
                    "--random-update",
                    str(seed),
                ]
            _run(export, root / "encoder" / "config.json")
            _evaluate(p, root / "encoder", root / "eval")


# ---------------------------------------------------------------------------------------------- report
def _interval(boots: np.ndarray) -> list[float]:
    lo, hi = percentile_interval(boots)
    return [float(lo), float(hi)]


def _probe_diffs(base: dict[str, Any], after: dict[str, Any], feature: str = "global") -> np.ndarray:
    """Per val item, the mean over fine attributes of (after correct - before correct): (M,)."""
    if base["items"] != after["items"]:
        raise DataError("probe results on different val items: rerun the study's evaluations")
    pa, pb = base["probes"][feature], after["probes"][feature]
    fine = [k for k in pa if k in pb and k not in COARSE]
    return np.array(
        [[float(y) - float(x) for x, y in zip(pa[k]["correct"], pb[k]["correct"])] for k in fine]
    ).mean(axis=0)


def _pair_correct(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rec in result["pairs"]:
        out.setdefault(rec["pattern"], {})[",".join(map(str, rec["qids"]))] = float(rec["correct"])
    return out


def _mmvp_diffs(base: dict[str, Any], after: dict[str, Any]) -> list[np.ndarray]:
    """Per pattern, per pair: after correct - before correct (x100, so means are score points)."""
    a, b = _pair_correct(base), _pair_correct(after)
    return [100.0 * np.array([b[p][k] - a[p][k] for k in a[p]]) for p in a]


def _zeroshot_diffs(base: dict[str, Any], after: dict[str, Any], labels: list[str]) -> np.ndarray:
    return 100.0 * np.array(
        [float(y == t) - float(x == t) for x, y, t in zip(base["predictions"], after["predictions"], labels)]
    )


def _pooled(per_seed: list[Any], stratified: bool) -> dict[str, Any]:
    """Seed-averaged per-item change, its bootstrap interval over items, and every seed's own change."""
    if stratified:
        groups = [np.mean([s[g] for s in per_seed], axis=0) for g in range(len(per_seed[0]))]
        boots = stratified_bootstrap_means(groups, seed=0).mean(axis=1)
        seeds = [float(np.mean([g.mean() for g in s])) for s in per_seed]
        mean = float(np.mean([g.mean() for g in groups]))
    else:
        pooled = np.mean(per_seed, axis=0)
        boots, seeds, mean = (
            bootstrap_means(pooled, seed=0),
            [float(s.mean()) for s in per_seed],
            float(pooled.mean()),
        )
    return {"delta": mean, "interval": _interval(boots), "per_seed": seeds}


def _gap_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    rep = read_json(path)
    rows = rep.get("patterns", {})
    return {p: {"gap": r.get("gap"), "interval": r.get("gap_interval")} for p, r in rows.items()}


def build_report(out: Path) -> dict[str, Any]:
    base = {k: read_json(out / "base" / f"{k}.json") for k in ("probes", "mmvp_decision", "zeroshot")}
    labels = [it["label"] for it in read_spec(base["zeroshot"]["spec"])["items"]]
    seeds = sorted(int(d.name.split("-")[1]) for d in out.glob("seed-*"))
    report: dict[str, Any] = {
        "seeds": seeds,
        "base": {"mmvp_decision": base["mmvp_decision"]["average"], "zeroshot": base["zeroshot"]["accuracy"]},
        "arms": {},
    }
    for arm in ARMS:
        evals = [out / f"seed-{s}" / arm.name / "eval" for s in seeds]
        evals = [e for e in evals if (e / "zeroshot.json").is_file()]
        if not evals:
            continue
        res = [{k: read_json(e / f"{k}.json") for k in base} for e in evals]
        report["arms"][arm.name] = {
            "seeds": len(evals),
            "probe_fine_mean": _pooled([_probe_diffs(base["probes"], r["probes"]) for r in res], False),
            "mmvp_decision": _pooled(
                [_mmvp_diffs(base["mmvp_decision"], r["mmvp_decision"]) for r in res], True
            ),
            "zeroshot": _pooled(
                [_zeroshot_diffs(base["zeroshot"], r["zeroshot"], labels) for r in res], False
            ),
            "cond_gap_stage1": [_gap_summary(e.parent / "cond_gap.json") for e in evals],
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Effect study, seeds {report['seeds']} (change vs the base encoder; seeds pooled per item; "
        "95% bootstrap interval over items)",
        "",
        "| arm | fine-probe mean (points) | MMVP-VLM-150 average (points) | zero-shot (points) |",
        "|---|---|---|---|",
    ]

    def cell(d: dict[str, Any], scale: float = 1.0) -> str:
        lo, hi = (x * scale for x in d["interval"])
        seeds = ", ".join(f"{s * scale:+.1f}" for s in d["per_seed"])
        return f"{d['delta'] * scale:+.2f} [{lo:+.2f}, {hi:+.2f}] (seeds {seeds})"

    for name, arm in report["arms"].items():
        lines.append(
            f"| {name} | {cell(arm['probe_fine_mean'], 100.0)} | {cell(arm['mmvp_decision'])} | "
            f"{cell(arm['zeroshot'])} |"
        )
    return "\n".join(lines) + "\n"


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld effect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=Path("runs/toyworld"), help="toy world directory")
    parser.add_argument("--clip", type=Path, default=Path("runs/toy/clip"), help="the base CLIP directory")
    parser.add_argument("--config", type=Path, default=Path("configs/genhancer/toy.yaml"), help="run config")
    parser.add_argument("--out", type=Path, default=Path("runs/effect"), help="study directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--control-seeds",
        type=int,
        nargs="*",
        default=None,
        help="seeds the zero-condition control trains on (default: every seed)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from finished runs"
    )
    args = parser.parse_args(argv)
    if not args.report_only:
        run_study(Paths(args.world, args.clip, args.config, args.out), args.seeds, args.control_seeds)
    report = build_report(args.out)
    write_json(args.out / "report.json", report)
    text = format_report(report)
    atomic_write_text(args.out / "report.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

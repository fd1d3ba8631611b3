"""Pick a stage-2 length on a validation benchmark, report the choice on the test benchmark.

Usage::

    python -m eval.sweep --root SWEEP_EVAL_DIR [--fixed-step N] [--out-name sweep]

``SWEEP_EVAL_DIR/step-NNNNNN/{val,test}.json`` are MMVP-VLM results (``python -m eval.mmvp_vlm``) of the
encoder kept at each stage-2 step (``schedule.stage2.eval_at``; ``scripts/stage2_sweep.sh`` writes them).
The step with the best *validation* average is chosen (ties: the earlier step); the test benchmark is only
read to report: the chosen step's test score next to the fixed-step run's (``--fixed-step``, default the
last step), with the paired-bootstrap 95% interval of their difference. Nothing is selected on the test set.

Writes ``ROOT/sweep.json``, ``ROOT/sweep.md`` and ``ROOT/sweep.png`` (score vs stage-2 step, validation and
test, with their bootstrap intervals).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.mmvp_vlm import load_result, paired_comparison, score_intervals
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import save_figure, write_json
from genhancer.utils.logging import get_logger

log = get_logger("eval.sweep")

STEP_DIR = re.compile(r"^step-(\d+)$")
SPLITS = ("val", "test")


def read_sweep(root: str | Path) -> dict[int, dict[str, dict]]:
    """{step: {"val": result, "test": result}} from ``root/step-NNNNNN/{val,test}.json``."""
    root = Path(root)
    steps: dict[int, dict[str, dict]] = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = STEP_DIR.match(d.name)
        if not (m and d.is_dir()):
            continue
        missing = [f"{s}.json" for s in SPLITS if not (d / f"{s}.json").is_file()]
        if missing:
            raise DataError(
                f"{d}: missing {', '.join(missing)} (score the step's encoder on both benchmarks)"
            )
        steps[int(m.group(1))] = {s: load_result(d / f"{s}.json") for s in SPLITS}
    if not steps:
        raise DataError(f"{root}: no step-NNNNNN/ folders with val.json and test.json")
    return steps


def _interval(result: dict) -> list[float] | None:
    iv = result.get("intervals") or score_intervals(result)
    return list(iv["average"]) if iv else None


def choose(steps: dict[int, dict[str, dict]]) -> int:
    """The step with the highest validation average; the earliest of equals (the shorter run)."""
    return max(sorted(steps), key=lambda s: (steps[s]["val"]["average"], -s))


def summarise(steps: dict[int, dict[str, dict]], fixed_step: int | None = None) -> dict[str, Any]:
    """Per-step scores with intervals, the validation choice, and its test score against the fixed step's."""
    fixed = max(steps) if fixed_step is None else fixed_step
    if fixed not in steps:
        raise ConfigError(f"--fixed-step {fixed} was not evaluated; evaluated steps: {sorted(steps)}")
    chosen = choose(steps)
    rows = [
        {
            "step": s,
            **{f"{k}_average": steps[s][k]["average"] for k in SPLITS},
            **{f"{k}_interval": _interval(steps[s][k]) for k in SPLITS},
        }
        for s in sorted(steps)
    ]
    cmp = paired_comparison(steps[fixed]["test"], steps[chosen]["test"])
    return {
        "selection": "best validation average (ties: the earlier step); test read only to report",
        "steps": rows,
        "chosen_step": chosen,
        "fixed_step": fixed,
        "test": {
            "chosen": steps[chosen]["test"]["average"],
            "fixed": steps[fixed]["test"]["average"],
            "difference": cmp["average"]["delta"],
            "difference_interval": cmp["average"].get("delta_interval"),
            "p_value": cmp["average"].get("p_value"),
        },
    }


def _cell(v: float, iv: Sequence[float] | None) -> str:
    return f"{v:.1f} [{iv[0]:.1f}, {iv[1]:.1f}]" if iv else f"{v:.1f}"


def table(summary: dict[str, Any]) -> str:
    """Markdown: one row per step, the chosen and the fixed step marked, then the test comparison."""
    lines = [
        "| stage-2 step | validation average | test average | |",
        "|---|---|---|---|",
    ]
    for r in summary["steps"]:
        mark = " ".join(
            m
            for m, s in (("chosen on validation", summary["chosen_step"]), ("fixed", summary["fixed_step"]))
            if r["step"] == s
        )
        lines.append(
            f"| {r['step']} | {_cell(r['val_average'], r['val_interval'])} | "
            f"{_cell(r['test_average'], r['test_interval'])} | {mark} |"
        )
    t = summary["test"]
    iv = t["difference_interval"]
    diff = f"{t['difference']:+.1f}" + (f" [{iv[0]:+.1f}, {iv[1]:+.1f}]" if iv else "")
    lines += [
        "",
        f"Test: step {summary['chosen_step']} (chosen on validation) {t['chosen']:.1f} vs step "
        f"{summary['fixed_step']} (fixed) {t['fixed']:.1f}: {diff} (paired bootstrap 95% interval).",
    ]
    return "\n".join(lines)


def plot(summary: dict[str, Any], out_png: str | Path) -> Path:
    """Score vs stage-2 step (log axis), validation and test, with bootstrap interval bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    xs = [r["step"] for r in summary["steps"]]
    for split, label in (("val", "validation"), ("test", "test")):
        ys = [r[f"{split}_average"] for r in summary["steps"]]
        ivs = [r[f"{split}_interval"] or [y, y] for r, y in zip(summary["steps"], ys)]
        yerr = [[y - lo for y, (lo, _) in zip(ys, ivs)], [hi - y for y, (_, hi) in zip(ys, ivs)]]
        ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, label=label)
    ax.axvline(
        summary["chosen_step"], color="grey", linestyle="--", linewidth=0.8, label="chosen on validation"
    )
    ax.set_xscale("log")
    ax.set_xlabel("stage-2 step")
    ax.set_ylabel("MMVP-VLM average (%)")
    ax.set_title("Stage-2 length sweep (95% bootstrap intervals)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="folder of step-NNNNNN/{val,test}.json")
    parser.add_argument("--fixed-step", type=int, default=None, help="the fixed-length run (default: last)")
    parser.add_argument("--out-name", default="sweep", help="ROOT/<name>.{json,md,png} (default sweep)")
    args = parser.parse_args(argv)
    summary = summarise(read_sweep(args.root), args.fixed_step)
    md = table(summary)
    write_json(args.root / f"{args.out_name}.json", summary)
    (args.root / f"{args.out_name}.md").write_text(md + "\n")
    plot(summary, args.root / f"{args.out_name}.png")
    print(md)
    log.info("wrote %s/%s.{json,md,png}", args.root, args.out_name)
    return 0


__all__ = ["choose", "main", "plot", "read_sweep", "summarise", "table"]

if __name__ == "__main__":
    raise SystemExit(main())

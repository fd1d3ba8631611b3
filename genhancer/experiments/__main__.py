"""``python -m genhancer.experiments run|report``: run an ablation grid, or (re)write its report.

run     --grid YAML --out DIR [--seeds S ...] [--quick] [--dry-run] [key=value ...]
        Runs every step not done yet (a rerun skips finished steps; a failed step blocks only what needs
        it), then writes the report. Exit 1 when a step failed, after running everything else.
report  DIR   re-reads the finished evaluations and writes DIR/report.{json,csv,md,png}
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path

from genhancer.experiments.grid import Step, load_grid, plan
from genhancer.experiments.report import build_report, format_report, plot, plot_snapshots, to_csv
from genhancer.experiments.runner import failures, run_plan
from genhancer.utils.cli import entry_point
from genhancer.utils.config import dump_yaml, to_dict
from genhancer.utils.fsio import atomic_write_text, read_json, write_json
from genhancer.utils.logging import get_logger

log = get_logger("genhancer.experiments")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m genhancer.experiments", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid (finished steps are skipped), then write its report")
    run.add_argument(
        "--grid", type=Path, required=True, help="grid file, e.g. configs/experiments/paper-toy.yaml"
    )
    run.add_argument("--out", type=Path, required=True, help="grid directory (runs, evaluations, report)")
    run.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="training seeds (default: the grid's)"
    )
    run.add_argument(
        "--quick", action="store_true", help="the grid's quick variant (fewer cells, shorter runs)"
    )
    run.add_argument(
        "--cells",
        nargs="+",
        default=None,
        help="run only these cells (and the cells whose runs they export); the report keeps earlier ones",
    )
    run.add_argument("--dry-run", action="store_true", help="print the steps and exit")
    run.add_argument("overrides", nargs="*", help="key.sub=value overrides of the grid file")
    report = sub.add_parser("report", help="(re)write the report of a grid directory")
    report.add_argument("out", type=Path, help="grid directory")
    return parser


def write_plan(args: argparse.Namespace) -> list[Step]:
    """The plan's steps in order; ``<out>/plan.json`` and ``<out>/grid.yaml`` record it for the report."""
    grid = load_grid(args.grid, args.overrides)
    p = plan(grid, args.out, args.quick, args.seeds, args.cells)
    steps = p.ordered()
    previous = args.out / "plan.json"
    # a rerun with other seeds or cells adds their runs to the earlier ones of this grid's cells (a cell
    # dropped from the grid leaves the report)
    before = read_json(previous)["entries"] if previous.is_file() else {}
    entries = {n: e for n, e in before.items() if n == "base" or n.split("@")[0] in grid.cells}
    entries.update(
        {
            name: {**e, "seeds": {**before.get(name, {}).get("seeds", {}), **e["seeds"]}}
            for name, e in p.entries.items()
        }
    )
    dump_yaml(to_dict(grid), args.out / "grid.yaml")
    write_json(
        previous,
        {
            "grid": grid.name,
            "metrics": {n: c.kind for n, c in grid.evaluations.items()},
            "stage1_metrics": {n: c.kind for n, c in grid.diagnostics.items()},
            "findings": [to_dict(f) for f in grid.findings],
            "entries": entries,
            "steps": [{"name": s.name, "argv": s.argv, "done": str(s.done), "after": s.after} for s in steps],
        },
    )
    return steps


def write_report(out: Path) -> str:
    report = build_report(out)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.csv", to_csv(report))
    text = format_report(report)
    atomic_write_text(out / "report.md", text)
    plot(report, out / "report.png")
    steps = {n: e["step"] for n, e in read_json(out / "plan.json")["entries"].items() if "step" in e}
    plot_snapshots(report, steps, out / "snapshots.png")
    return text


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        print(write_report(args.out))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    steps = write_plan(args)
    if args.dry_run:
        for s in steps:
            print(f"{s.name}\n    {shlex.join(s.command())}")
        return 0
    status = run_plan(steps, args.out)
    print(write_report(args.out))
    bad = failures(status)
    for line in bad:
        log.error("%s", line)
    log.info("grid directory: %s (report.md, report.png, status.json, logs/)", args.out)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

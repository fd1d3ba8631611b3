"""Loss curves from training runs: ``python -m genhancer.plots --runs RUN [RUN ...] --out curves.png``.

Each RUN is a run directory holding ``metrics.jsonl`` (written by ``genhancer.train``). One panel per run
(stages have different losses and step counts), the logged loss with a smoothed line over it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import read_json, read_jsonl, save_figure


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{run}: no metrics.jsonl (is it a genhancer.train run directory?)")
    rows = [r for r in read_jsonl(path) if "step" in r and r.get("loss") is not None]
    if not rows:
        raise DataError(f"{path}: no loss records yet")
    return rows


def smooth(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average (bias-corrected), as tensorboard draws it."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_runs(runs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [read_metrics(r) for r in runs]
    names = list(labels) if labels else [_label(Path(r)) for r in runs]
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.4), squeeze=False)
    for ax, rows, name in zip(axes[0], data, names):
        steps = [r["step"] for r in rows]
        loss = [float(r["loss"]) for r in rows]
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=1, label="logged")
        ax.plot(steps, smooth(loss), color="tab:blue", linewidth=2, label="smoothed")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("flow-matching loss")
        ax.grid(alpha=0.3)
        ips = [r["images_per_s"] for r in rows if r.get("images_per_s")]
        if ips:
            ax.text(
                0.98,
                0.95,
                f"{sorted(ips)[len(ips) // 2]:.0f} img/s",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                color="0.4",
            )
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return Path(out)


def _label(run: Path) -> str:
    summary = run / "summary.json"
    stage = read_json(summary).get("stage") if summary.is_file() else None
    return f"{run.name} ({stage})" if stage and stage != run.name else run.name


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories with metrics.jsonl")
    parser.add_argument("--labels", nargs="+", default=None, help="panel titles (default: the run names)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        raise DataError(f"--labels has {len(args.labels)} names for {len(args.runs)} runs")
    print(plot_runs(args.runs, args.out, args.labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

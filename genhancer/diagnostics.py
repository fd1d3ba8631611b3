"""Diagnostics of a GenHancer stage directory.

    python -m genhancer.diagnostics cond-gap --stage-dir RUN --benchmark MMVP_DIR [--out GAP.json]
        [--plot PNG] [--draws 8] [--seed 0] [--max-pairs N] [--batch-pairs 16] [--device cpu]
        [--bootstrap 10000]

``cond-gap``: does the denoiser *use* the detail that tells the two images of an MMVP-style pair apart? A
frozen stage-1 denoiser can only pass gradient to the encoder along directions of the condition it learned to
use, so before stage 2 this says which patterns stage 2 can possibly improve. For each pair (A, B) of an
MMVP-VLM folder (consecutive rows of Questions.csv; the images differ in one attribute) the denoiser's own
training loss on image A is computed twice with *common random numbers* (the same ``draws`` noise samples and
timesteps, or masks for the discrete family): conditioned on A's own global token and on the twin B's; and
the same for B. The pair's gap is ``loss(twin condition) - loss(own condition)``, averaged over both
directions and the draws; a gap near 0 means the denoiser reconstructs A equally well from B's token, i.e. it
ignores the difference. Reported per pattern: the mean own / twin loss, the mean gap with a percentile
bootstrap 95% interval over pairs, the gap relative to the own loss, and the share of pairs with a positive
gap. The stage directory is loaded like ``genhancer.sample`` does (a run directory with ``final/`` or the
stage output directory itself); images are resized and centre-cropped to the encoder's input size.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genhancer.module import GenHancerModel, resolve_stage_dir
from genhancer.sample import load_batch
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import save_figure, write_json
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.mmvp import MMVPPair, read_benchmark
from genhancer.utils.stats import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL, bootstrap_means, percentile_interval

log = get_logger("genhancer.diagnostics")


# ----------------------------------------------------------------------------------------------- compute
def select_pairs(pairs: Sequence[MMVPPair], max_per_pattern: int | None) -> list[MMVPPair]:
    """The first ``max_per_pattern`` pairs of every pattern (all when None), in benchmark order."""
    if max_per_pattern is None:
        return list(pairs)
    seen: dict[str, int] = {}
    out = []
    for pair in pairs:
        seen[pair.pattern] = seen.get(pair.pattern, 0) + 1
        if seen[pair.pattern] <= max_per_pattern:
            out.append(pair)
    return out


def _pair_seed(seed: int, index: int) -> int:
    # one stream per pair, independent of batching: the same pair always sees the same draws
    return seed * 1_000_003 + index


@torch.no_grad()
def pair_losses(
    model: GenHancerModel, pixel_values: torch.Tensor, targets: torch.Tensor, draws: int, seeds: Sequence[int]
) -> torch.Tensor:
    """Own- and twin-conditioned training loss of every pair of a batch.

    pixel_values / targets: (2P, 3, S, S), rows 2i and 2i + 1 the two images of pair i (encoder-normalised /
    in [-1, 1]); seeds: P generator seeds. Returns (P, 2): [own, twin] loss of each pair, each the mean over
    both images and ``draws`` draws. Own and twin share every random draw (same generator seed, same batch
    layout), so their difference is due to the condition alone.
    """
    device = pixel_values.device
    pooled, context = model.condition(pixel_values)  # (2P, Dp), (2P, T, J)
    latents = model.latent.encode(targets, torch.Generator(device=device).manual_seed(0))
    out = torch.empty(len(seeds), 2)
    for i, seed in enumerate(seeds):
        a, b = 2 * i, 2 * i + 1
        images = torch.tensor([a] * draws + [b] * draws, device=device)  # (2K,): A K times, then B
        twins = torch.tensor([b] * draws + [a] * draws, device=device)
        for col, cond in enumerate((images, twins)):
            generator = torch.Generator(device=device).manual_seed(seed)
            res = model.denoiser.training_loss(latents[images], pooled[cond], context[cond], generator)
            out[i, col] = float(res["loss"])
    return out


def conditioning_gap(
    stage_dir: str | Path,
    bench_dir: str | Path,
    draws: int = 8,
    seed: int = 0,
    max_pairs_per_pattern: int | None = None,
    batch_pairs: int = 16,
    device: str = "cpu",
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The cond-gap report (see the module docstring) of a stage directory on an MMVP-VLM folder."""
    if draws < 1 or batch_pairs < 1 or n_boot < 1:
        raise ConfigError(
            f"draws, batch_pairs and bootstrap must be >= 1 (got {draws}, {batch_pairs}, {n_boot})"
        )
    pairs = select_pairs(read_benchmark(bench_dir), max_pairs_per_pattern)  # check the data before the model
    directory = resolve_stage_dir(stage_dir, what="--stage-dir")
    model = GenHancerModel.from_pretrained(directory).to(device)
    spec = model.encoder_image_spec()
    start = time.perf_counter()
    losses = []
    for s in progress(
        range(0, len(pairs), batch_pairs), desc="cond-gap", unit="batch", disable=not show_progress
    ):
        chunk = pairs[s : s + batch_pairs]
        pixel_values, targets = load_batch([img for pair in chunk for img in pair.images], spec)
        seeds = [_pair_seed(seed, s + i) for i in range(len(chunk))]
        losses.append(pair_losses(model, pixel_values.to(device), targets.to(device), draws, seeds))
    per_pair = torch.cat(losses).double().numpy()  # (P, 2)
    report = summarise(pairs, per_pair, n_boot, level, seed)
    return {
        "diagnostic": "conditioning_gap",
        "stage_dir": str(directory),
        "benchmark": str(bench_dir),
        "stage": model.cfg.stage,
        "denoiser": model.cfg.denoiser.type,
        "latent": model.cfg.latent.space,
        "draws": draws,
        "seed": seed,
        "level": level,
        "n_boot": n_boot,
        **report,
        "seconds": time.perf_counter() - start,
    }


def summarise(
    pairs: Sequence[MMVPPair], per_pair: np.ndarray, n_boot: int, level: float, seed: int
) -> dict[str, Any]:
    """per_pair (P, 2) [own, twin] -> {"patterns": {pattern: stats}, "overall": stats, "pairs": [...]}."""
    gaps = per_pair[:, 1] - per_pair[:, 0]
    names = list(dict.fromkeys(p.pattern for p in pairs))
    groups = {name: np.array([i for i, p in enumerate(pairs) if p.pattern == name]) for name in names}
    patterns = {name: _stats(per_pair[idx], gaps[idx], n_boot, level, seed) for name, idx in groups.items()}
    records = [
        {"qids": list(p.qids), "pattern": p.pattern, "own": float(o), "twin": float(t), "gap": float(t - o)}
        for p, (o, t) in zip(pairs, per_pair)
    ]
    return {"patterns": patterns, "overall": _stats(per_pair, gaps, n_boot, level, seed), "pairs": records}


def _stats(losses: np.ndarray, gaps: np.ndarray, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    own, twin, gap = float(losses[:, 0].mean()), float(losses[:, 1].mean()), float(gaps.mean())
    lo, hi = percentile_interval(bootstrap_means(gaps, n_boot, seed), level)
    return {
        "pairs": int(len(gaps)),
        "own": own,
        "twin": twin,
        "gap": gap,
        "gap_interval": [float(lo), float(hi)],
        "relative_gap": gap / own if own else float("nan"),
        "positive_fraction": float((gaps > 0).mean()),
    }


# ----------------------------------------------------------------------------------------------- output
def format_table(report: dict[str, Any]) -> str:
    """Per-pattern table: pairs, own / twin loss, gap with its interval, relative gap, share of positive
    gaps."""
    rows = {**report["patterns"], "overall": report["overall"]}
    width = max(map(len, rows))
    pct = f"{round(100 * report['level'])}% interval"
    # gaps span orders of magnitude (an untrained denoiser: ~1e-6; a colour-aware one: ~0.1):
    # 3 significant digits
    head = (
        f"{'pattern':<{width}}  {'pairs':>5}  {'own':>8}  {'twin':>8}  {'gap':>10}  {pct:>23}  {'rel.':>8}"
        f"  {'>0':>5}"
    )
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        if name == "overall":
            lines.append("-" * len(head))
        lo, hi = r["gap_interval"]
        lines.append(
            f"{name:<{width}}  {r['pairs']:>5}  {r['own']:>8.4f}  {r['twin']:>8.4f}  {r['gap']:>+10.3g}  "
            f"{f'[{lo:+.3g}, {hi:+.3g}]':>23}  {r['relative_gap']:>+8.2%}  {r['positive_fraction']:>5.2f}"
        )
    return "\n".join(lines)


def plot_gap(report: dict[str, Any], out_png: str | Path) -> Path:
    """Bars: mean gap per pattern (+ overall) with its bootstrap interval."""
    from matplotlib.figure import Figure

    rows = {**report["patterns"], "overall": report["overall"]}
    gaps = [r["gap"] for r in rows.values()]
    err = [
        [r["gap"] - r["gap_interval"][0] for r in rows.values()],
        [r["gap_interval"][1] - r["gap"] for r in rows.values()],
    ]
    fig = Figure(figsize=(max(6.0, 1.0 * len(rows)), 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(
        range(len(rows)),
        gaps,
        yerr=err,
        capsize=3,
        color=["tab:gray" if k == "overall" else "tab:blue" for k in rows],
    )
    ax.axhline(0.0, color="black", linewidth=0.8)
    names = [textwrap.fill(k.replace(" and ", " & "), width=15, break_long_words=False) for k in rows]
    ax.set_xticks(range(len(rows)), names, fontsize=7)
    ax.set_ylabel("loss(twin condition) - loss(own condition)")
    ax.set_title(
        f"conditioning gap: {report['stage_dir']} ({report['draws']} draws per image, "
        f"{round(100 * report['level'])}% bootstrap over pairs)",
        fontsize=8,
    )
    return save_figure(fig, out_png)


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m genhancer.diagnostics", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gap = sub.add_parser("cond-gap", help="denoiser loss with the twin image's condition minus with its own")
    gap.add_argument("--stage-dir", required=True, help="a stage output directory (or a run dir with final/)")
    gap.add_argument(
        "--benchmark", required=True, help="MMVP-VLM folder (Questions.csv + 'MLLM_VLM Images/')"
    )
    gap.add_argument("--out", help="GAP.json to write")
    gap.add_argument("--plot", help="PNG bar chart to write")
    gap.add_argument("--draws", type=int, default=8, help="noise/timestep draws per image (default 8)")
    gap.add_argument("--seed", type=int, default=0)
    gap.add_argument(
        "--max-pairs", type=int, default=None, help="first N pairs of each pattern (default all)"
    )
    gap.add_argument("--batch-pairs", type=int, default=16, help="pairs whose images are encoded together")
    gap.add_argument("--device", default="cpu")
    gap.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (10000)")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    report = conditioning_gap(
        args.stage_dir,
        args.benchmark,
        draws=args.draws,
        seed=args.seed,
        max_pairs_per_pattern=args.max_pairs,
        batch_pairs=args.batch_pairs,
        device=args.device,
        n_boot=args.bootstrap,
    )
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
        log.info("wrote %s (%d pairs, %.1f s)", args.out, report["overall"]["pairs"], report["seconds"])
    if args.plot:
        log.info("wrote %s", plot_gap(report, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

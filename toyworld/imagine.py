"""``python -m toyworld imagine``: what the denoiser draws.

    python -m toyworld imagine --stage-dir RUN --classifier DIR --world DIR --out DIR

GenHancer's stage 2 can only teach the encoder what the frozen stage-1 denoiser reads from the global token.
This command measures it: the first ``--n`` val images of the world are encoded to their global tokens, the
stage's denoiser draws an image from each token alone (``genhancer.sample.reconstruct_images``: Euler from
noise, ``--steps`` steps), and the attribute classifier (``python -m toyworld train-attributes``) scores the
drawings against the source images' scene labels -- beside its score on the source images themselves.

OUT holds ``imagine.json`` (both accuracy tables, per attribute with the majority-class rate, plus the
settings), ``attributes.png`` (a bar chart of the two per attribute), ``grid.png`` (the first ``--grid-n``
sources above their drawings) and ``reconstructions/`` (every drawing as a PNG named like its source, so
``python -m toyworld judge --images OUT/reconstructions --scenes WORLD/val/scenes.jsonl`` re-scores them).
``imagine.json`` also keeps, per attribute and image, whether the classifier was right on the drawing, so

    python -m toyworld imagine --compare A/imagine.json B/imagine.json [--names a b] [--out CMP.json]
                               [--plot CMP.png]

compares what two denoisers draw from the same val images: the accuracy change per attribute and of the mean
over the fine attributes (all but ``--coarse``: colour, shape, background), each with a paired percentile
bootstrap interval over the images (the same resample for every attribute).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.probes import accuracy_changes, compare_table, plot_comparison
from genhancer.module import GenHancerModel, resolve_stage_dir
from genhancer.sample import reconstruct_images, save_grid
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError, UserError
from genhancer.utils.fsio import read_json, save_figure, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.stats import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL
from toyworld.attributes import (
    correctness,
    format_accuracy,
    label_matrix,
    load_classifier,
    read_split,
    score_predictions,
)

RESULT_FILE = "imagine.json"
CHART_FILE = "attributes.png"
GRID_FILE = "grid.png"
RECON_DIR = "reconstructions"
COARSE = ("color", "shape", "background")  # left out of the fine-attribute mean


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images (N, 3, S, S) in [-1, 1] -> uint8 (N, 3, S, S), as they would be saved to PNG."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_pngs(images: torch.Tensor, names: Sequence[str], folder: Path) -> None:
    """uint8 images (N, 3, S, S) -> ``folder/<name>`` PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names):
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(folder / name)


def plot_attributes(originals: dict[str, Any], recon: dict[str, Any], out: Path, title: str) -> Path:
    """Grouped bars per attribute: classifier accuracy on the sources and on the drawings, majority ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(originals["attributes"])
    x = torch.arange(len(names)).tolist()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(names) + 1.5), 3.6))
    ax.bar(
        [i - 0.2 for i in x],
        [originals["attributes"][n]["accuracy"] for n in names],
        0.4,
        label="source images",
        color="tab:gray",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [recon["attributes"][n]["accuracy"] for n in names],
        0.4,
        label="denoiser's drawings",
        color="tab:blue",
    )
    ax.hlines(
        [originals["attributes"][n]["majority"] for n in names],
        [i - 0.4 for i in x],
        [i + 0.4 for i in x],
        colors="tab:red",
        linewidth=1.5,
        label="majority class",
    )
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylim(0, 1.25)  # head room for the legend above the bars
    ax.set_ylabel("classifier accuracy")
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return Path(out)


def imagine(
    stage_dir: str | Path,
    classifier: str | Path,
    world: str | Path,
    out: str | Path,
    n: int = 256,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    grid_n: int = 8,
) -> dict[str, Any]:
    """Draw from the global tokens of ``n`` val images, judge per attribute, write OUT; returns the result."""
    if n < 1 or batch_size < 1:
        raise UserError(f"--n and --batch-size must be >= 1 (got {n}, {batch_size})")
    stage = resolve_stage_dir(stage_dir, what="--stage-dir")
    clf = load_classifier(classifier)
    paths, scenes = read_split(world, "val")
    paths, scenes = paths[:n], scenes[:n]
    model = GenHancerModel.from_pretrained(stage)
    originals, recon = reconstruct_images(model, paths, steps=steps, seed=seed, batch_size=batch_size)
    settings = {
        "stage_dir": str(stage),
        "classifier": str(classifier),
        "world": str(world),
        "steps": steps or model.cfg.flow.sample_steps,
        "seed": seed,
        "batch_size": batch_size,
    }
    title = f"{stage}: {len(paths)} val images, {settings['steps']} Euler steps"
    return judge_drawings(clf, originals, recon, paths, scenes, out, settings, title, grid_n)


def judge_drawings(
    clf: Any,
    originals: torch.Tensor,
    recon: torch.Tensor,
    paths: Sequence[Path],
    scenes: Sequence[dict[str, Any]],
    out: str | Path,
    settings: dict[str, Any],
    title: str,
    grid_n: int = 8,
) -> dict[str, Any]:
    """Score drawings (and their sources, both (N, 3, S, S) in [-1, 1]) per attribute with the classifier
    ``clf`` against the scenes' labels; write OUT as ``imagine`` does (``settings`` join the result)."""
    originals, recon = to_uint8(originals), to_uint8(recon)  # score exactly what the PNGs hold
    labels, names = label_matrix(scenes), list(clf.attributes)
    pred = {"originals": clf.predict(originals), "reconstructions": clf.predict(recon)}
    result = {
        **settings,
        "n_images": len(paths),
        **{k: score_predictions(v, labels, names) for k, v in pred.items()},
        "items": [p.name for p in paths],
        "correct": {k: correctness(v, labels, names) for k, v in pred.items()},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_pngs(recon, [p.name for p in paths], out / RECON_DIR)
    save_grid([originals[:grid_n].float() / 127.5 - 1, recon[:grid_n].float() / 127.5 - 1], out / GRID_FILE)
    plot_attributes(result["originals"], result["reconstructions"], out / CHART_FILE, title)
    write_json(out / RESULT_FILE, result)
    get_logger("toyworld.imagine").info(
        "wrote %s, %s, %s and %s/", RESULT_FILE, CHART_FILE, GRID_FILE, RECON_DIR
    )
    return result


def compare_imagined(
    a: dict[str, Any],
    b: dict[str, Any],
    coarse: Sequence[str] = COARSE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Change from imagine result ``a`` to ``b`` (drawings of the same val images), per attribute and for the
    fine mean, with paired bootstrap intervals; laid out like ``eval.probes.compare_probes`` (one "feature":
    ``drawings``). An attribute's change is over the images it applies to: its per-image differences are
    scaled by n / applicable, so every attribute is resampled with the same images."""
    if "correct" not in a or "correct" not in b:
        raise DataError("an imagine.json without per-image results (older than --compare): rerun imagine")
    if a["items"] != b["items"]:
        raise DataError(
            "the two imagine results drew different val images (or in another order): use one --n"
        )
    ca, cb = a["correct"]["reconstructions"], b["correct"]["reconstructions"]
    attrs = [k for k in ca if k in cb]
    cols = []
    for k in attrs:
        applies = sum(x is not None for x in ca[k])
        diff = np.array([(y or 0) - (x or 0) for x, y in zip(ca[k], cb[k])], dtype=float)
        cols.append(diff * len(diff) / max(1, applies))
    acc_a, acc_b = a["reconstructions"]["attributes"], b["reconstructions"]["attributes"]
    before, after = [acc_a[k]["accuracy"] for k in attrs], [acc_b[k]["accuracy"] for k in attrs]
    drawings = accuracy_changes(attrs, before, after, np.stack(cols, axis=1), coarse, n_boot, level, seed)
    return {
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "coarse": list(coarse),
        "num_items": len(a["items"]),
        "features": {"drawings": drawings},
    }


def _read_imagined(path: str) -> dict[str, Any]:
    """An imagine.json, checked for what ``--compare`` reads; a broken one is named by file and key."""
    result = read_json(path, missing=f"no imagine result at {path}")
    rerun = "rerun `python -m toyworld imagine` for it"
    try:
        n = len(result["items"])
        marks = result["correct"]["reconstructions"]
        accuracy = {k: result["reconstructions"]["attributes"][k]["accuracy"] for k in marks}
    except KeyError as exc:
        raise DataError(f"{path}: not a complete imagine.json (no {exc} in it): {rerun}") from None
    except TypeError as exc:
        raise DataError(f"{path}: not laid out as an imagine.json ({exc}): {rerun}") from None
    short = sorted(k for k in accuracy if len(marks[k]) != n)
    if short:
        raise DataError(f"{path}: attributes {short} do not mark each of the {n} items: {rerun}")
    return result


def _run_compare(args: argparse.Namespace) -> int:
    if args.stage_dir or args.classifier or args.world:
        raise UserError("--compare takes two imagine.json files, not --stage-dir, --classifier or --world")
    a, b = (_read_imagined(p) for p in args.compare)
    cmp = compare_imagined(a, b, args.coarse, n_boot=args.bootstrap)
    print(compare_table(cmp, args.names))
    if args.out:
        write_json(
            args.out,
            {
                "diagnostic": "imagine_comparison",
                "names": list(args.names),
                "results": list(args.compare),
                **cmp,
            },
        )
    if args.plot:
        plot_comparison(cmp, args.plot, args.names)
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m toyworld imagine",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stage-dir", help="a GenHancer stage output directory (or a run dir with final/)")
    p.add_argument("--classifier", help="directory written by python -m toyworld train-attributes")
    p.add_argument("--world", help="toy world directory (its val split is drawn from)")
    p.add_argument("--out", help="output directory (with --compare: the comparison JSON)")
    p.add_argument("--n", type=int, default=256, help="val images to draw from (default 256)")
    p.add_argument(
        "--steps", type=int, default=None, help="Euler steps (default: the stage's flow.sample_steps)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--grid-n", type=int, default=8, help="images in grid.png (default 8)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two imagine.json files")
    p.add_argument(
        "--names", nargs=2, default=["A", "B"], metavar=("A", "B"), help="their names in the table"
    )
    p.add_argument(
        "--coarse", nargs="*", default=list(COARSE), help="left out of the fine mean (%(default)s)"
    )
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (10000)")
    p.add_argument("--plot", help="with --compare: a PNG chart of the changes")
    args = p.parse_args(argv)
    if args.compare:
        return _run_compare(args)
    needed = {
        "--stage-dir": args.stage_dir,
        "--classifier": args.classifier,
        "--world": args.world,
        "--out": args.out,
    }
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or --compare A.json B.json)")
    result = imagine(
        args.stage_dir,
        args.classifier,
        args.world,
        args.out,
        n=args.n,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        grid_n=args.grid_n,
    )
    print(f"{result['n_images']} val images drawn by {result['stage_dir']} ({result['steps']} Euler steps):")
    print(format_accuracy(result["originals"], result["reconstructions"], ("sources", "drawings")))
    print(f"wrote {args.out}/{RESULT_FILE}, {CHART_FILE}, {GRID_FILE}, {RECON_DIR}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

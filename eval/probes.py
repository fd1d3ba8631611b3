"""Linear probes: how much of each labelled image attribute can a linear classifier read off an encoder's
image features? A check of what the *image* side holds, independent of how the text side lines up with it.

Usage::

    python -m eval.probes --model MODEL_DIR --train TRAIN --val VAL --out PROBES.json [--plot PNG]
        [--labels scenes.jsonl] [--image-key image] [--attribute-key scene] [--attributes A B ...]
        [--max-train 6000] [--max-val 1000] [--features global mean_patch] [--l2 1e-3]
    python -m eval.probes --compare BEFORE.json AFTER.json [--names before after] [--coarse color shape]
        [--out CMP.json] [--plot PNG] [--bootstrap 10000] [--seed 0]

Labels: ``TRAIN`` / ``VAL`` is a JSONL file, or a folder holding one (``--labels``, default ``scenes.jsonl``),
with one object per image: the image path (key ``--image-key``, relative to the JSONL's folder) and the
attributes, at the top level or under ``--attribute-key``. Every scalar attribute (string, number, bool or
null; null is its own class, "none") is probed unless ``--attributes`` names some; the first ``--max-train``
/ ``--max-val`` records are used.

Features (any CLIP/SigLIP directory ``eval.encoders`` loads), from one vision forward per batch:
  * ``global``: the model's own image embedding before normalisation (CLIP: ``visual_projection(
    pooler_output)``; SigLIP: the attention-pooling head's output);
  * ``mean_patch``: the mean of the last layer's patch tokens (class token excluded).
Each is standardised with the training mean / std. Probe: multinomial logistic regression (L2 weight
``--l2``, fixed, never tuned on the val split), full-batch preconditioned L-BFGS from zero weights in
float64 -- a convex problem with no random draw, so the same features give the same probe. Output per
feature and attribute: val accuracy (0-1), the majority-class baseline, train accuracy and the per-item
correctness (0/1, in the order of ``items``) that ``--compare`` resamples: the change of each accuracy and
of the fine-attribute mean (every attribute except ``--coarse``), with paired-bootstrap intervals over val
items.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.encoders import family_of, load_encoder, load_image
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import read_json, read_jsonl, save_figure, write_json
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import read_provenance
from genhancer.utils.stats import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL, bootstrap_means, percentile_interval

FEATURES = ("global", "mean_patch")
NULL_CLASS = "none"
DEFAULT_COARSE = ("color", "shape")
log = get_logger("eval.probes")


# ----------------------------------------------------------------------------------------------- labels
def resolve_labels(source: str | Path, labels_name: str) -> Path:
    """A JSONL file itself, or ``<folder>/<labels_name>``; anything else is a ``DataError``."""
    p = Path(source)
    path = p / labels_name if p.is_dir() else p
    if not path.is_file():
        raise DataError(
            f"{path}: label file not found; give a JSONL file or a folder holding {labels_name} "
            "(--labels names the file inside a folder)"
        )
    return path


def read_split(
    source: str | Path,
    labels_name: str = "scenes.jsonl",
    image_key: str = "image",
    attribute_key: str | None = "scene",
    limit: int | None = None,
) -> tuple[Path, list[Path], list[dict[str, Any]]]:
    """-> (label file, image paths, attribute dicts) of the first ``limit`` records; a record without the
    image key or the attribute object is a ``DataError`` naming file and line."""
    path = resolve_labels(source, labels_name)
    records = read_jsonl(path)[:limit]
    if not records:
        raise DataError(f"{path}: no records")
    images, attrs = [], []
    for i, rec in enumerate(records, 1):
        if image_key not in rec:
            raise DataError(f"{path}, record {i}: no {image_key!r} key (set --image-key)")
        a = rec.get(attribute_key) if attribute_key else rec
        if not isinstance(a, dict):
            raise DataError(
                f"{path}, record {i}: no attribute object under {attribute_key!r} (set "
                "--attribute-key, or pass an empty one for top-level attributes)"
            )
        images.append(path.parent / rec[image_key])
        attrs.append(a)
    return path, images, attrs


def scalar_attributes(attrs: Sequence[dict[str, Any]], exclude: Sequence[str] = ()) -> list[str]:
    """Keys whose values are scalars (str/int/float/bool/None) in every record, in first-record order."""
    keys = [k for k in attrs[0] if k not in exclude]
    return [
        k
        for k in keys
        if all(isinstance(a.get(k), (str, int, float, bool)) or a.get(k) is None for a in attrs)
    ]


def label_name(value: Any) -> str:
    """A class name for an attribute value (null is the class ``none``)."""
    return NULL_CLASS if value is None else str(value)


def encode_labels(
    train: Sequence[dict], val: Sequence[dict], attribute: str
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """-> (classes seen in train, y_train (N,), y_val (M,)); a val value never seen in train gets -1 (the
    probe cannot predict it, so it counts as wrong)."""
    classes = sorted({label_name(a.get(attribute)) for a in train})
    index = {c: i for i, c in enumerate(classes)}
    y_train = torch.tensor([index[label_name(a.get(attribute))] for a in train])
    y_val = torch.tensor([index.get(label_name(a.get(attribute)), -1) for a in val])
    return classes, y_train, y_val


# ----------------------------------------------------------------------------------------------- features
@torch.no_grad()
def image_features(
    model: Any, processor: Any, paths: Sequence[Path], batch_size: int = 64, show_progress: bool = True
) -> dict[str, torch.Tensor]:
    """Image files -> {"global": (N, D), "mean_patch": (N, Dv)} float64 on the CPU (not normalised)."""
    p = next(model.parameters())
    vision = model.config.vision_config
    n_patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
    out: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}
    for s in progress(
        range(0, len(paths), batch_size), desc="features", leave=False, disable=not show_progress
    ):
        pixels = processor.image_processor(
            images=[load_image(x) for x in paths[s : s + batch_size]], return_tensors="pt"
        )["pixel_values"].to(p.device, p.dtype)
        # transformers 5: the family's own global embedding in pooler_output, the tokens beside it
        res = model.get_image_features(pixel_values=pixels)
        out["global"].append(res.pooler_output.double().cpu())
        # the last n_patches positions are the patches (CLIP puts its class token first, SigLIP has none)
        out["mean_patch"].append(res.last_hidden_state[:, -n_patches:].mean(dim=1).double().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def standardise(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale both by the training mean / std (N, D), (M, D)."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-8)
    return (train - mean) / std, (val - mean) / std


# ----------------------------------------------------------------------------------------------- probe
def preconditioner(x: torch.Tensor, l2: float) -> torch.Tensor:
    """(x^T x / N + l2 I)^(-1/2) for x (N, D): (D, D), symmetric, float64."""
    x = x.double()
    ev, u = torch.linalg.eigh(x.T @ x / x.shape[0])  # (D,), (D, D)
    return (u * (ev.clamp_min(0) + l2).rsqrt()) @ u.T


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l2: float = 1e-3,
    max_iter: int = 200,
    precond: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: x (N, D), y (N,) in [0, C) -> (W (D, C), b (C,)).

    Minimises mean cross-entropy + l2/2 * |W|^2 by full-batch L-BFGS (strong Wolfe) from zero weights.
    Image features are strongly correlated, which makes that problem badly conditioned; it is solved in the
    coordinates W = P V with P = ``preconditioner(x, l2)`` (the same objective, hence the same optimum), where
    L-BFGS needs several times fewer iterations. ``precond`` may be passed in to share it between probes.
    """
    x = x.double()
    precond = preconditioner(x, l2) if precond is None else precond
    z = x @ precond  # (N, D)
    v = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [v, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = precond @ v
        loss = torch.nn.functional.cross_entropy(z @ v + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (precond @ v).detach(), b.detach()


def probe_attribute(
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    classes: list[str],
    y_train: torch.Tensor,
    y_val: torch.Tensor,
    l2: float,
    max_iter: int,
    precond: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fit on train, score on val: {classes, accuracy, chance, train_accuracy, correct [0/1 per val item]}."""
    w, b = fit_logistic(x_train, y_train, len(classes), l2, max_iter, precond)
    correct = ((x_val @ w + b).argmax(dim=1) == y_val).to(torch.int64)
    majority = int(torch.bincount(y_train, minlength=len(classes)).argmax())
    return {
        "classes": classes,
        "accuracy": float(correct.double().mean()),
        "chance": float((y_val == majority).double().mean()),
        "train_accuracy": float(((x_train @ w + b).argmax(dim=1) == y_train).double().mean()),
        "correct": correct.tolist(),
    }


def run_probes(
    model_dir: str | Path,
    train: str | Path,
    val: str | Path,
    *,
    labels: str = "scenes.jsonl",
    image_key: str = "image",
    attribute_key: str | None = "scene",
    attributes: Sequence[str] | None = None,
    max_train: int | None = 6000,
    max_val: int | None = 1000,
    features: Sequence[str] = FEATURES,
    l2: float = 1e-3,
    max_iter: int = 200,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Probe every attribute on every feature; returns the PROBES.json dict (see the module docstring)."""
    _check_settings(features, l2, max_iter, batch_size)
    train_file, train_imgs, train_attrs = read_split(train, labels, image_key, attribute_key, max_train)
    val_file, val_imgs, val_attrs = read_split(val, labels, image_key, attribute_key, max_val)
    attributes = _choose_attributes(train_attrs, val_attrs, attributes, train_file)
    model, processor = load_encoder(model_dir, device=device)
    start = time.perf_counter()
    feats_train = image_features(model, processor, train_imgs, batch_size, show_progress)
    feats_val = image_features(model, processor, val_imgs, batch_size, show_progress)
    extracted = time.perf_counter()
    probes: dict[str, dict[str, Any]] = {}
    for feature in features:
        x_train, x_val = standardise(feats_train[feature], feats_val[feature])
        precond = preconditioner(x_train, l2)
        probes[feature] = {}
        for attr in attributes:
            classes, y_train, y_val = encode_labels(train_attrs, val_attrs, attr)
            probes[feature][attr] = probe_attribute(
                x_train, x_val, classes, y_train, y_val, l2, max_iter, precond
            )
    return {
        "benchmark": "linear_probes",
        "model_dir": str(model_dir),
        "model_family": family_of(model).name,
        "train": str(train_file),
        "val": str(val_file),
        "num_train": len(train_imgs),
        "num_val": len(val_imgs),
        "attributes": list(attributes),
        "features": list(features),
        "settings": {
            "classifier": "multinomial logistic regression, full-batch preconditioned L-BFGS "
            "from zero, float64",
            "standardised": "train mean / std",
            "l2": l2,
            "max_iter": max_iter,
            "null_class": NULL_CLASS,
        },
        "items": [str(p.relative_to(val_file.parent)) for p in val_imgs],
        "probes": probes,
        "provenance": read_provenance(model_dir),
        "seconds": {"features": extracted - start, "probes": time.perf_counter() - extracted},
    }


def _check_settings(features: Sequence[str], l2: float, max_iter: int, batch_size: int) -> None:
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
        raise ConfigError(f"--features {' '.join(features)}: choose from {', '.join(FEATURES)}")
    # l2 > 0: correlated features leave the unregularised problem without a unique optimum
    if l2 <= 0 or max_iter < 1 or batch_size < 1:
        raise ConfigError(f"need l2 > 0, max_iter >= 1, batch_size >= 1 (got {l2}, {max_iter}, {batch_size})")


def _choose_attributes(
    train: Sequence[dict], val: Sequence[dict], wanted: Sequence[str] | None, train_file: Path
) -> list[str]:
    """The named attributes (each must be scalar in both splits), or every scalar one with >= 2 classes."""
    available = [k for k in scalar_attributes(train) if k in scalar_attributes(val)]
    if wanted:
        missing = [a for a in wanted if a not in available]
        if missing:
            raise DataError(
                f"{train_file}: attribute(s) {', '.join(missing)} not found as scalar values in "
                f"both splits; available: {', '.join(available)}"
            )
        chosen = list(wanted)
    else:
        chosen = available
    single = [a for a in chosen if len({label_name(r.get(a)) for r in train}) < 2]
    if single:
        log.warning("skipping attribute(s) with one class in the training split: %s", ", ".join(single))
    chosen = [a for a in chosen if a not in single]
    if not chosen:
        raise DataError(f"{train_file}: no attribute with at least two classes to probe")
    return chosen


# ----------------------------------------------------------------------------------------------- compare
def load_probes(path: str | Path) -> dict[str, Any]:
    res = read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("probes"), dict) or "items" not in res:
        raise DataError(
            f"{path}: not a probe result (needs 'probes' and 'items'); write one with "
            f"`python -m eval.probes --model ... --train ... --val ... --out {path}`"
        )
    return res


def compare_probes(
    a: dict[str, Any],
    b: dict[str, Any],
    coarse: Sequence[str] = DEFAULT_COARSE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Change from probe result ``a`` to ``b`` on the same val items, per feature: every shared attribute's
    accuracy change and the fine-attribute mean change (attributes not in ``coarse``), each with a paired
    percentile-bootstrap interval (val items resampled, the same resample for every attribute)."""
    if a["items"] != b["items"]:
        raise DataError(
            "the two probe results were scored on different val items (or in another order); "
            "run both with the same --val, --labels and --max-val"
        )
    out: dict[str, Any] = {
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "coarse": list(coarse),
        "num_items": len(a["items"]),
        "features": {},
    }
    for feature in [f for f in a["probes"] if f in b["probes"]]:
        pa, pb = a["probes"][feature], b["probes"][feature]
        attrs = [k for k in pa if k in pb]
        diff = np.array(
            [[y - x for x, y in zip(pa[k]["correct"], pb[k]["correct"])] for k in attrs]
        ).T  # (M, A)
        before, after = [pa[k]["accuracy"] for k in attrs], [pb[k]["accuracy"] for k in attrs]
        out["features"][feature] = accuracy_changes(attrs, before, after, diff, coarse, n_boot, level, seed)
    if not out["features"]:
        raise DataError("the two probe results share no feature kind")
    return out


def accuracy_changes(
    attrs: Sequence[str],
    before: Sequence[float],
    after: Sequence[float],
    diff: np.ndarray,
    coarse: Sequence[str],
    n_boot: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Per attribute: accuracy before, after, change and its paired interval; and the same for the mean over
    the attributes not in ``coarse``. ``diff`` (items, attributes): per-item changes whose column means are
    the changes (the items are resampled together, one resample for every attribute)."""
    boots = bootstrap_means(diff, n_boot, seed)  # (B, A)
    ci = percentile_interval(boots, level)  # (2, A)
    rows = {
        k: {"before": x, "after": y, "delta": y - x, "delta_interval": [ci[0, j], ci[1, j]]}
        for j, (k, x, y) in enumerate(zip(attrs, before, after))
    }
    fine = [j for j, k in enumerate(attrs) if k not in coarse]
    summary = None
    if fine:
        fci = percentile_interval(boots[:, fine].mean(axis=1), level)
        b, a = float(np.mean([before[j] for j in fine])), float(np.mean([after[j] for j in fine]))
        summary = {
            "attributes": [attrs[j] for j in fine],
            "before": b,
            "after": a,
            "delta": a - b,
            "delta_interval": [float(fci[0]), float(fci[1])],
        }
    return {"attributes": _floats(rows), "fine_mean": summary}


def _floats(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """numpy scalars -> float (for JSON)."""
    return {
        k: {kk: ([float(x) for x in v] if isinstance(v, list) else float(v)) for kk, v in r.items()}
        for k, r in rows.items()
    }


# ----------------------------------------------------------------------------------------------- output
def format_table(result: dict[str, Any]) -> str:
    """Per-attribute val accuracy of every feature, with the majority-class baseline."""
    attrs = result["attributes"]
    width = max(len("attribute"), *map(len, attrs))
    head = (
        f"{'attribute':<{width}}  " + "  ".join(f"{f:>10}" for f in result["features"]) + f"  {'majority':>8}"
    )
    lines = [head, "-" * len(head)]
    for a in attrs:
        first = result["probes"][result["features"][0]][a]
        accs = "  ".join(f"{result['probes'][f][a]['accuracy']:>10.3f}" for f in result["features"])
        lines.append(f"{a:<{width}}  {accs}  {first['chance']:>8.3f}")
    return "\n".join(lines)


def compare_table(cmp: dict[str, Any], names: Sequence[str] = ("before", "after")) -> str:
    """One block per feature: before, after, change and its interval per attribute, then the fine mean."""
    pct = f"{round(100 * cmp['level'])}% interval"
    blocks = []
    for feature, block in cmp["features"].items():
        rows = dict(block["attributes"])
        if block["fine_mean"]:
            rows["fine mean"] = block["fine_mean"]
        width = max(len(feature), *map(len, rows))
        w = max(7, *map(len, names))
        head = f"{feature:<{width}}  {names[0]:>{w}}  {names[1]:>{w}}  {'delta':>8}  {pct:>19}"
        lines = [head, "-" * len(head)]
        for k, r in rows.items():
            if k == "fine mean":
                lines.append("-" * len(head))
            lo, hi = r["delta_interval"]
            lines.append(
                f"{k:<{width}}  {r['before']:>{w}.3f}  {r['after']:>{w}.3f}  {r['delta']:>+8.4f}  "
                f"{f'[{lo:+.4f}, {hi:+.4f}]':>19}"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_probes(result: dict[str, Any], out_png: str | Path) -> Path:
    """Bars: val accuracy per attribute for each feature, the majority-class baseline as ticks."""
    from matplotlib.figure import Figure

    attrs, feats = result["attributes"], result["features"]
    fig = Figure(figsize=(max(6.0, 0.7 * len(attrs)), 4.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(feats)
    for k, f in enumerate(feats):
        xs = np.arange(len(attrs)) + (k - (len(feats) - 1) / 2) * width
        ax.bar(xs, [result["probes"][f][a]["accuracy"] for a in attrs], width=width, label=f)
    ax.scatter(
        range(len(attrs)),
        [result["probes"][feats[0]][a]["chance"] for a in attrs],
        marker="_",
        s=200,
        color="black",
        label="majority class",
        zorder=3,
    )
    ax.set_xticks(range(len(attrs)), attrs, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("val accuracy")
    ax.set_title(f"linear probes: {Path(result['model_dir']).name}", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_comparison(cmp: dict[str, Any], out_png: str | Path, names: Sequence[str]) -> Path:
    """Bars: accuracy change per attribute (+ fine mean) with the paired intervals as error bars."""
    from matplotlib.figure import Figure

    feats = list(cmp["features"])
    fig = Figure(figsize=(7.0, 3.2 * len(feats)), layout="constrained")
    for i, f in enumerate(feats):
        ax = fig.add_subplot(len(feats), 1, i + 1)
        rows = dict(cmp["features"][f]["attributes"])
        if cmp["features"][f]["fine_mean"]:
            rows["fine mean"] = cmp["features"][f]["fine_mean"]
        deltas = [r["delta"] for r in rows.values()]
        err = [
            [r["delta"] - r["delta_interval"][0] for r in rows.values()],
            [r["delta_interval"][1] - r["delta"] for r in rows.values()],
        ]
        colors = ["tab:gray" if k == "fine mean" else "tab:blue" for k in rows]
        ax.bar(range(len(rows)), deltas, yerr=err, color=colors, capsize=3)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)), list(rows), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("accuracy change")
        ax.set_title(
            f"{f}: {names[1]} - {names[0]} ({round(100 * cmp['level'])}% paired bootstrap)", fontsize=9
        )
    return save_figure(fig, out_png)


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.probes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF CLIP or SigLIP directory")
    p.add_argument("--train", help="training labels: a JSONL file or a folder holding --labels")
    p.add_argument("--val", help="validation labels: a JSONL file or a folder holding --labels")
    p.add_argument("--labels", default="scenes.jsonl", help="label JSONL name inside a folder (scenes.jsonl)")
    p.add_argument("--image-key", default="image", help="record key of the image path (image)")
    p.add_argument(
        "--attribute-key", default="scene", help="record key of the attribute object; '' = top level"
    )
    p.add_argument("--attributes", nargs="+", help="attributes to probe (default: every scalar one)")
    p.add_argument("--max-train", type=int, default=6000, help="first N training records (6000; 0 = all)")
    p.add_argument("--max-val", type=int, default=1000, help="first N val records (1000; 0 = all)")
    p.add_argument("--features", nargs="+", default=list(FEATURES), help="global and/or mean_patch")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 weight of the probe (fixed; 1e-3)")
    p.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations (200)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="PROBES.json to write (with --compare: the comparison JSON)")
    p.add_argument("--plot", help="PNG chart to write")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE.json", "AFTER.json"), help="compare two results")
    p.add_argument("--names", nargs=2, default=["before", "after"], metavar=("A", "B"))
    p.add_argument(
        "--coarse",
        nargs="*",
        default=list(DEFAULT_COARSE),
        help="attributes left out of the fine-attribute mean (color shape)",
    )
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    return p


def _run_compare(args: argparse.Namespace) -> int:
    if args.model or args.train or args.val:
        raise ConfigError("--compare takes two probe results; do not combine it with --model/--train/--val")
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    a, b = (load_probes(p) for p in args.compare)
    cmp = compare_probes(a, b, args.coarse, n_boot=args.bootstrap, seed=args.seed)
    print(compare_table(cmp, args.names))
    if args.out:
        write_json(
            args.out,
            {
                "benchmark": "linear_probes_comparison",
                "names": list(args.names),
                "results": list(args.compare),
                **cmp,
            },
        )
        log.info("wrote %s", args.out)
    if args.plot:
        log.info("wrote %s", plot_comparison(cmp, args.plot, args.names))
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare:
        return _run_compare(args)
    missing = [f"--{k}" for k in ("model", "train", "val", "out") if not getattr(args, k)]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: usage `python -m eval.probes --model MODEL_DIR --train "
            "TRAIN --val VAL --out PROBES.json` (or --compare BEFORE.json AFTER.json)"
        )
    result = run_probes(
        args.model,
        args.train,
        args.val,
        labels=args.labels,
        image_key=args.image_key,
        attribute_key=args.attribute_key or None,
        attributes=args.attributes,
        max_train=args.max_train or None,
        max_val=args.max_val or None,
        features=args.features,
        l2=args.l2,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        device=args.device,
    )
    write_json(args.out, result)
    print(format_table(result))
    log.info(
        "wrote %s (%d train / %d val images; features %.1f s, probes %.1f s)",
        args.out,
        result["num_train"],
        result["num_val"],
        result["seconds"]["features"],
        result["seconds"]["probes"],
    )
    if args.plot:
        log.info("wrote %s", plot_probes(result, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

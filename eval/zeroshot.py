"""Zero-shot classification check: does an enhanced encoder keep its global semantics?

Usage::

    python -m eval.zeroshot --model MODEL_DIR --spec SPEC.json [--out RESULT.json] [--batch-size 32]

SPEC.json = ``{"template": "a photo of a {}.", "classes": ["circle", ...],
"items": [{"image": "images/000123.png", "label": "circle"}, ...]}``; image paths are relative to the spec's
folder. Each image is classified by the argmax over the classes of its image->text logits (each class
prompt = template with the class name, padded like MMVP-VLM); accuracy is reported overall and per class.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.encoders import encode_images, encode_texts, family_of, load_encoder, text_image_logits
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance


def read_spec(spec_path: str | Path) -> dict[str, Any]:
    """Read and validate SPEC.json; returns {template, classes, items: [{image: Path, label}]}.

    Every problem is a ``DataError`` naming the spec file and the key or item index.
    """
    path = Path(spec_path)
    spec = read_json(path)
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a JSON object with 'template', 'classes', 'items'")
    for key in ("template", "classes", "items"):
        if key not in spec:
            raise DataError(f"{path}: missing key {key!r} (a spec has 'template', 'classes', 'items')")
    template = spec["template"]
    if not isinstance(template, str) or template.count("{}") != 1:
        raise DataError(
            f"{path}: 'template' must be a string with one '{{}}' for the class name, got {template!r}"
        )
    classes = spec["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' must be a list of at least 2 class names")
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: 'classes' has duplicates")
    if not isinstance(spec["items"], list) or not spec["items"]:
        raise DataError(f"{path}: 'items' must be a non-empty list of {{'image', 'label'}} objects")
    known = set(classes)
    items = []
    for i, item in enumerate(spec["items"]):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f"{path}: items[{i}] must be an object with 'image' and 'label', got {item!r}")
        if item["label"] not in known:
            raise DataError(f"{path}: items[{i}] has label {item['label']!r}, which is not in 'classes'")
        img = path.parent / item["image"]
        if not img.is_file():
            raise DataError(f"{path}: items[{i}] image not found: {img}")
        items.append({"image": img, "label": item["label"]})
    return {"template": template, "classes": classes, "items": items}


def predict_classes(
    model: Any,
    processor: Any,
    template: str,
    classes: Sequence[str],
    images: Sequence[str | Path],
    batch_size: int = 32,
    show_progress: bool = True,
) -> list[int]:
    """Class index per image (N,): argmax over the classes of its image->text logits, for a loaded model."""
    text_emb = encode_texts(
        model, processor, [template.format(c) for c in classes], batch_size, show_progress
    )  # (C, D)
    image_emb = encode_images(model, processor, images, batch_size, show_progress)  # (N, D)
    logits = text_image_logits(model, text_emb, image_emb)  # (C, N)
    return logits.argmax(dim=0).tolist()


def evaluate_zeroshot(
    model_dir: str | Path,
    spec_path: str | Path,
    batch_size: int = 32,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict:
    """Zero-shot accuracy of an HF CLIP/SigLIP directory on SPEC.json.

    Returns {benchmark, model_dir, spec, template, classes, accuracy (0-100), per_class {class: {accuracy,
    correct, n}}, num_items, predictions [class per item], provenance, seconds}.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    spec = read_spec(spec_path)
    model, processor = load_encoder(model_dir, device=device)
    start = time.perf_counter()
    classes, items = spec["classes"], spec["items"]
    pred = predict_classes(
        model, processor, spec["template"], classes, [it["image"] for it in items], batch_size, show_progress
    )
    seconds = time.perf_counter() - start

    per_class = {c: {"correct": 0, "n": 0} for c in classes}
    for it, p in zip(items, pred):
        row = per_class[it["label"]]
        row["n"] += 1
        row["correct"] += int(classes[p] == it["label"])
    for row in per_class.values():
        row["accuracy"] = 100.0 * row["correct"] / row["n"] if row["n"] else None
    correct = sum(r["correct"] for r in per_class.values())
    return {
        "benchmark": "zeroshot",
        "model_dir": str(model_dir),
        "spec": str(spec_path),
        "model_family": family_of(model).name,
        "template": spec["template"],
        "classes": classes,
        "accuracy": 100.0 * correct / len(items),
        "per_class": per_class,
        "num_items": len(items),
        "predictions": [classes[p] for p in pred],
        "provenance": read_provenance(model_dir),
        "seconds": seconds,
    }


def format_table(result: dict) -> str:
    """Per-class console table of one zero-shot result."""
    width = max([len("overall"), *map(len, result["per_class"])])
    lines = [f"{'class':<{width}}      n  correct  accuracy", "-" * (width + 27)]
    for c, r in result["per_class"].items():
        acc = f"{r['accuracy']:8.1f}" if r["accuracy"] is not None else f"{'-':>8}"
        lines.append(f"{c:<{width}}  {r['n']:>5}  {r['correct']:>7}  {acc}")
    total = sum(r["correct"] for r in result["per_class"].values())
    lines += [
        "-" * (width + 27),
        f"{'overall':<{width}}  {result['num_items']:>5}  {total:>7}  {result['accuracy']:8.1f}",
    ]
    return "\n".join(lines)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.zeroshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF CLIP or SigLIP directory")
    p.add_argument("--spec", required=True, help="SPEC.json (template, classes, items)")
    p.add_argument("--out", help="RESULT.json to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    result = evaluate_zeroshot(args.model, args.spec, batch_size=args.batch_size, device=args.device)
    print(format_table(result))
    if args.out:
        write_json(args.out, result)
        get_logger("eval.zeroshot").info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

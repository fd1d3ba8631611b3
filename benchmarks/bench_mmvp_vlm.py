"""Benchmark: batched MMVP-VLM evaluation vs the official per-pair loop, side by side in one run.

    python benchmarks/bench_mmvp_vlm.py [--model DIR] [--benchmark DIR] [--out JSON] [--repeats 3]

Without --model / --benchmark it builds, in a temporary directory, a toy-world-sized CLIP from config and a
synthetic benchmark of the official size (9 patterns x 15 pairs = 270 images), so it runs anywhere offline.
Three ways of getting the (P, 2, 2) pair logits are timed (best of --repeats interleaved rounds, after one
warm-up round):

- ``official``: per pair, preprocess the 2 images, one full forward per statement (the official script);
- ``per_pair``: per pair, one full forward with both statements;
- ``batched``: every image and statement embedded once in batches (what ``eval.mmvp_vlm`` does).

All three must give identical predictions (asserted); the speed ratios and the time per pair go to stdout
and to the JSON file. Timings include reading the images from disk in every variant.
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from eval.encoders import load_encoder
from eval.mmvp_vlm import (
    IMAGES_DIR,
    QUESTIONS_FILE,
    MMVPPair,
    pair_logits_batched,
    pair_logits_per_pair,
    read_benchmark,
    score_pairs,
)
from genhancer.utils.cli import entry_point
from genhancer.utils.fsio import write_json

OFFICIAL_PATTERNS = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)


def make_synthetic_benchmark(root: Path, pairs_per_pattern: int = 15, image_size: int = 96) -> Path:
    """Official layout with random-noise JPEGs: Questions.csv + 'MLLM_VLM Images/<type>/<qid>.jpg'."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows, qid = [], 0
    for pattern in OFFICIAL_PATTERNS:
        (root / IMAGES_DIR / pattern).mkdir(parents=True, exist_ok=True)
        for _ in range(pairs_per_pattern):
            for side in ("left", "right"):
                qid += 1
                pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)  # (H, W, 3)
                Image.fromarray(pixels).save(root / IMAGES_DIR / pattern / f"{qid}.jpg")
                rows.append([qid, pattern, f"the object is facing {side} in scene {qid // 2}"])
    with (root / QUESTIONS_FILE).open("w", newline="") as f:
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], *rows])
    return root


def make_toy_clip(root: Path) -> Path:
    """A randomly initialised toy-world-sized CLIP directory (64 px, the toy 'OpenAI CLIP' shape)."""
    from toyworld.models import (  # local: heavy (pulls transformers)
        ToyClipShape,
        clip_processor,
        new_toy_clip,
        save_clip_dir,
        train_clip_tokenizer,
    )

    texts = [
        f"a photo of the object is facing {s} in scene {i}" for s in ("left", "right") for i in range(50)
    ]
    tok = train_clip_tokenizer(texts, vocab_size=400)
    shape = ToyClipShape()
    return save_clip_dir(new_toy_clip(tok, shape, seed=0), clip_processor(tok, shape.image_size), root)


def interleaved_best_times(
    variants: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Best wall time per variant over ``repeats`` rounds, variants interleaved within each round (so load
    from other processes hits all of them alike), after one warm-up round; also the last outputs."""
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outputs


def _predictions(logits: torch.Tensor, pairs: Sequence[MMVPPair]) -> list[list[int]]:
    res = score_pairs(logits, [p.qids for p in pairs], [p.pattern for p in pairs])
    return [r["predictions"] for r in res["pairs"]]


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="CLIP/SigLIP dir (default: a toy CLIP built from config)")
    p.add_argument("--benchmark", help="MMVP-VLM folder (default: synthetic, official size)")
    p.add_argument("--out", default="runs/benchmarks/bench_mmvp_vlm.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else make_toy_clip(Path(tmp) / "toy_clip")
        bench_dir = Path(args.benchmark) if args.benchmark else make_synthetic_benchmark(Path(tmp) / "mmvp")
        pairs = read_benchmark(bench_dir)
        model, processor = load_encoder(model_dir, device=args.device)
        variants = {
            "official": lambda: pair_logits_per_pair(model, processor, pairs, forwards_per_pair=2),
            "per_pair": lambda: pair_logits_per_pair(model, processor, pairs, forwards_per_pair=1),
            "batched": lambda: pair_logits_batched(
                model, processor, pairs, args.batch_size, show_progress=False
            ),
        }
        seconds, logits = interleaved_best_times(variants, args.repeats)
        preds = {name: _predictions(lg, pairs) for name, lg in logits.items()}
        for name in ("official", "per_pair"):
            assert preds[name] == preds["batched"], f"{name} predictions differ from batched"
        max_abs = max(float((logits[n] - logits["batched"]).abs().max()) for n in ("official", "per_pair"))

    result = {
        "benchmark": "bench_mmvp_vlm",
        "model_dir": args.model or "toy CLIP built from config (ToyClipShape defaults)",
        "bench_dir": args.benchmark or "synthetic, 9 patterns x 15 pairs",
        "num_pairs": len(pairs),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds": seconds,
        "ms_per_pair": {k: 1000 * v / len(pairs) for k, v in seconds.items()},
        "speedup_vs_official": seconds["official"] / seconds["batched"],
        "speedup_vs_per_pair": seconds["per_pair"] / seconds["batched"],
        "identical_predictions": True,
        "max_abs_logit_difference": max_abs,
    }
    write_json(args.out, result)
    for name, s in seconds.items():
        print(f"{name:>9}: {s:7.3f} s  ({result['ms_per_pair'][name]:6.2f} ms/pair)")
    print(
        f"batched is {result['speedup_vs_official']:.1f}x faster than the official loop and "
        f"{result['speedup_vs_per_pair']:.1f}x faster than one forward per pair; identical predictions on "
        f"{len(pairs)} pairs (max |logit diff| {max_abs:.2e}); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

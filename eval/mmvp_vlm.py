"""MMVP-VLM: the encoder-level benchmark of "Eyes Wide Shut?", scored exactly as the official protocol.

Usage::

    python -m eval.mmvp_vlm --model MODEL_DIR --benchmark BENCH_DIR --out RESULT.json [--plot PNG]
    python -m eval.mmvp_vlm --compare A.json B.json [--labels before after] [--plot PNG]

Benchmark folder (official or toy): ``Questions.csv`` (header row; columns question id, type, statement,
read by position) and ``MLLM_VLM Images/<type>/<qid>.jpg``; consecutive rows form a pair.

Protocol (METHOD.md): text = "a photo of " + statement, padded to the tokenizer's max length; for each
statement, softmax over the pair's two images of the text->image logits; predict image 1 if p > 0.5; ground
truth is image 1 for an odd qid; a pair is correct only if both statements are; pattern = the type column;
pattern score = correct pairs / pairs x 100; average = mean of the pattern scores.

Unlike the official script (two forward passes per pair), every image and statement is embedded once,
batched, and the pair logits are gathered from the (texts x images) logit matrix; benchmarks/bench_mmvp_vlm.py
shows the predictions are identical.
"""

from __future__ import annotations

import argparse
import csv
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval.encoders import (
    encode_images,
    encode_texts,
    family_of,
    load_encoder,
    load_image,
    text_image_logits,
    text_max_length,
    tokenize,
)
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance

QUESTIONS_FILE = "Questions.csv"
IMAGES_DIR = "MLLM_VLM Images"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the official folder is .jpg; the others are tolerated
TEXT_PREFIX = "a photo of "
THRESHOLD = 0.5


@dataclass(frozen=True)
class MMVPPair:
    """Two consecutive rows of Questions.csv: statement s belongs with image s (s = 0, 1) when qid s is odd."""

    qids: tuple[int, int]
    pattern: str
    statements: tuple[str, str]
    images: tuple[Path, Path]
    lines: tuple[int, int]


# ----------------------------------------------------------------------------------------------- reading
def _parse_row(row: list[str], line: int, path: Path) -> tuple[int, str, str]:
    cells = list(row)
    while cells and not cells[-1].strip():  # trailing empty cells from spreadsheet exports
        cells.pop()
    if len(cells) != 3:
        raise DataError(f"{path}, line {line}: expected 3 columns (question id, type, statement), got "
                        f"{len(cells)}: {row!r}")
    qid_s, pattern, statement = (c.strip() for c in cells)
    try:
        qid = int(qid_s)
    except ValueError:
        raise DataError(f"{path}, line {line}: question id {qid_s!r} is not an integer") from None
    if not pattern or not statement:
        raise DataError(f"{path}, line {line}: empty {'type' if not pattern else 'statement'}")
    return qid, pattern, statement


def _image_path(images_dir: Path, pattern: str, qid: int) -> Path:
    for ext in IMAGE_EXTENSIONS:
        p = images_dir / pattern / f"{qid}{ext}"
        if p.is_file():
            return p
    return images_dir / pattern / f"{qid}.jpg"


def read_benchmark(bench_dir: str | Path) -> list[MMVPPair]:
    """Read and validate an MMVP-VLM folder; every problem is a ``DataError`` naming the file and line/qids."""
    bench = Path(bench_dir)
    path = bench / QUESTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: an MMVP-VLM folder holds {QUESTIONS_FILE} and '{IMAGES_DIR}/'")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        raw = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    # The official file has a header ("Question ID, Type, Statement" in some spelling): a first row whose
    # first cell is not an integer is a header.
    if raw and not raw[0][1][0].strip().lstrip("-").isdigit():
        raw = raw[1:]
    if not raw:
        raise DataError(f"{path}: no question rows")
    rows = [(line, *_parse_row(r, line, path)) for line, r in raw]
    if len(rows) % 2:
        line, qid, _, _ = rows[-1]
        raise DataError(f"{path}: odd number of question rows ({len(rows)}); consecutive rows form pairs, so "
                        f"the last row (line {line}, qid {qid}) has no partner")

    images_dir = bench / IMAGES_DIR
    pairs, missing = [], []
    for (l1, q1, t1, s1), (l2, q2, t2, s2) in zip(rows[0::2], rows[1::2]):
        if t1 != t2:
            raise DataError(f"{path}, lines {l1}-{l2}: the pair of qids {q1} and {q2} has different types "
                            f"({t1!r} vs {t2!r}); both rows of a pair must have the same type")
        if not (q1 % 2 == 1 and q2 == q1 + 1):
            raise DataError(f"{path}, lines {l1}-{l2}: qids {q1}, {q2} do not form a pair; the protocol needs "
                            f"consecutive rows with qids 2k-1, 2k (odd qid = image 1)")
        imgs = (_image_path(images_dir, t1, q1), _image_path(images_dir, t1, q2))
        missing += [str(p) for p in imgs if not p.is_file()]
        pairs.append(MMVPPair((q1, q2), t1, (s1, s2), imgs, (l1, l2)))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataError(f"{len(missing)} image(s) missing, e.g. {', '.join(missing[:3])}{more}; expected "
                        f"'{IMAGES_DIR}/<type>/<qid>.jpg' under {bench}")
    return pairs


# ----------------------------------------------------------------------------------------------- scoring
def score_pairs(pair_logits: torch.Tensor, qids: Sequence[tuple[int, int]], patterns: Sequence[str]) -> dict:
    """Score MMVP-VLM from pair logits (pure: no model, no files).

    Args:
        pair_logits: (P, 2, 2); ``[p, s, i]`` = text->image logit of statement s of pair p against the pair's
            image i (image i is the image of qid i; i = 0 is "image 1").
        qids: P tuples (qid of row 1, qid of row 2).
        patterns: P pattern names (the type column).

    Returns:
        ``{"scores": {pattern: 0-100}, "counts": {pattern: {"correct", "pairs"}}, "average", "num_pairs",
        "pairs": [{"qids", "pattern", "probs_image1": [2], "predictions": [2], "ground_truth": [2],
        "correct"}]}``; predictions/ground truth are image numbers 1 or 2. Patterns keep first-seen order.
    """
    if pair_logits.ndim != 3 or pair_logits.shape[1:] != (2, 2):
        raise ValueError(f"pair_logits must be (P, 2, 2), got {tuple(pair_logits.shape)}")
    if not (len(qids) == len(patterns) == pair_logits.shape[0]):
        raise ValueError("pair_logits, qids and patterns must have the same length")
    probs = pair_logits.float().softmax(dim=-1)[..., 0]  # (P, 2): p(image 1) per statement
    pred = torch.where(probs > THRESHOLD, 1, 2)  # (P, 2)
    gt = torch.tensor([[1 if q % 2 == 1 else 2 for q in pq] for pq in qids], dtype=pred.dtype).reshape(-1, 2)
    correct = (pred == gt).all(dim=-1)  # (P,)

    counts: dict[str, dict[str, int]] = {}
    records = []
    for i, (pq, pattern) in enumerate(zip(qids, patterns)):
        c = counts.setdefault(pattern, {"correct": 0, "pairs": 0})
        c["pairs"] += 1
        c["correct"] += int(correct[i])
        records.append({"qids": list(pq), "pattern": pattern, "probs_image1": probs[i].tolist(),
                        "predictions": pred[i].tolist(), "ground_truth": gt[i].tolist(),
                        "correct": bool(correct[i])})
    scores = {p: 100.0 * c["correct"] / c["pairs"] for p, c in counts.items()}
    average = sum(scores.values()) / len(scores) if scores else 0.0
    return {"scores": scores, "counts": counts, "average": average, "num_pairs": len(records),
            "pairs": records}


# ----------------------------------------------------------------------------------------------- logits
def pair_logits_batched(model: Any, processor: Any, pairs: Sequence[MMVPPair], batch_size: int = 32,
                        show_progress: bool = True) -> torch.Tensor:
    """Embed every image and statement once (batched), then gather (P, 2, 2) pair logits."""
    images = list(dict.fromkeys(p for pair in pairs for p in pair.images))
    texts = list(dict.fromkeys(TEXT_PREFIX + s for pair in pairs for s in pair.statements))
    img_idx = {p: i for i, p in enumerate(images)}
    txt_idx = {t: i for i, t in enumerate(texts)}
    image_emb = encode_images(model, processor, images, batch_size, show_progress)  # (N, D)
    text_emb = encode_texts(model, processor, texts, batch_size, show_progress)  # (M, D)
    logits = text_image_logits(model, text_emb, image_emb)  # (M, N)
    t = torch.tensor([[txt_idx[TEXT_PREFIX + s] for s in pair.statements] for pair in pairs])  # (P, 2)
    i = torch.tensor([[img_idx[p] for p in pair.images] for pair in pairs])  # (P, 2)
    return logits[t[:, :, None], i[:, None, :]].cpu()  # (P, 2, 2)


@torch.no_grad()
def pair_logits_per_pair(model: Any, processor: Any, pairs: Sequence[MMVPPair],
                         forwards_per_pair: int = 1) -> torch.Tensor:
    """The official loop, for comparison: per pair, preprocess 2 images + texts and run the full model.

    ``forwards_per_pair=2`` is exactly the official script (one forward per statement, both images each time);
    1 runs both statements in one forward. Returns (P, 2, 2) logits_per_text.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = []
    for pair in pairs:
        pixels = processor.image_processor(images=[load_image(p) for p in pair.images],
                                           return_tensors="pt")["pixel_values"].to(device, dtype)
        texts = [TEXT_PREFIX + s for s in pair.statements]
        groups = [texts] if forwards_per_pair == 1 else [[t] for t in texts]
        rows = []
        for g in groups:
            enc = {k: v.to(device) for k, v in tokenize(model, processor, g).items()}
            rows.append(model(pixel_values=pixels, **enc).logits_per_text.float())  # (len(g), 2)
        out.append(torch.cat(rows))
    return torch.stack(out).cpu()  # (P, 2, 2)


# ----------------------------------------------------------------------------------------------- API
def evaluate_mmvp_vlm(model_dir: str | Path, bench_dir: str | Path, batch_size: int = 32,
                      device: str = "cpu", show_progress: bool = True) -> dict:
    """Evaluate an HF CLIP/SigLIP directory on an MMVP-VLM folder; returns the RESULT.json dict.

    Keys: benchmark, model_dir, bench_dir, model_family, protocol, scores {pattern: 0-100}, counts, average,
    num_pairs, pairs (per pair: qids, pattern, statements, probs_image1, logits (2, 2), predictions,
    ground_truth, correct), provenance (the model dir's provenance.json or None), seconds.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    pairs = read_benchmark(bench_dir)  # validate the data before paying for the model
    model, processor = load_encoder(model_dir, device=device)
    start = time.perf_counter()
    logits = pair_logits_batched(model, processor, pairs, batch_size, show_progress)  # (P, 2, 2)
    seconds = time.perf_counter() - start
    scored = score_pairs(logits, [p.qids for p in pairs], [p.pattern for p in pairs])
    for rec, pair, lg in zip(scored["pairs"], pairs, logits):
        rec["statements"] = list(pair.statements)
        rec["logits"] = lg.tolist()
    return {
        "benchmark": "mmvp_vlm",
        "model_dir": str(model_dir),
        "bench_dir": str(bench_dir),
        "model_family": family_of(model).name,
        "protocol": {"text_prefix": TEXT_PREFIX, "padding": "max_length",
                     "max_length": text_max_length(model, processor), "threshold": THRESHOLD,
                     "ground_truth": "image 1 for odd qid", "pair_correct": "both statements"},
        **{k: scored[k] for k in ("scores", "counts", "average", "num_pairs")},
        "pairs": scored["pairs"],
        "provenance": read_provenance(model_dir),
        "seconds": seconds,
    }


def format_table(result: dict) -> str:
    """A per-pattern console table of one result."""
    width = max([len("average"), *map(len, result["scores"])])
    lines = [f"{'pattern':<{width}}  pairs  correct   score", "-" * (width + 25)]
    for pattern, score in result["scores"].items():
        c = result["counts"][pattern]
        lines.append(f"{pattern:<{width}}  {c['pairs']:>5}  {c['correct']:>7}  {score:6.1f}")
    lines += ["-" * (width + 25), f"{'average':<{width}}  {result['num_pairs']:>5}  "
              f"{sum(c['correct'] for c in result['counts'].values()):>7}  {result['average']:6.1f}"]
    return "\n".join(lines)


def load_result(path: str | Path) -> dict:
    """Read a RESULT.json written by this module; a file without scores is a ``DataError``."""
    res = read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("scores"), dict) or "average" not in res:
        raise DataError(f"{path}: not an MMVP-VLM result (needs 'scores' and 'average'); write one with "
                        f"`python -m eval.mmvp_vlm --model ... --benchmark ... --out {path}`")
    return res


def compare_table(a: dict, b: dict, labels: tuple[str, str] = ("before", "after")) -> str:
    """Per-pattern before/after table with deltas (patterns missing on one side show '-')."""
    patterns = list(dict.fromkeys([*a["scores"], *b["scores"]]))
    width = max([len("average"), *map(len, patterns)])
    w = max(8, *map(len, labels))

    def cell(v: float | None) -> str:
        return f"{v:>{w}.1f}" if v is not None else f"{'-':>{w}}"

    def row(name: str, x: float | None, y: float | None) -> str:
        delta = f"{y - x:+7.1f}" if x is not None and y is not None else f"{'-':>7}"
        return f"{name:<{width}}  {cell(x)}  {cell(y)}  {delta}"

    lines = [f"{'pattern':<{width}}  {labels[0]:>{w}}  {labels[1]:>{w}}  {'delta':>7}", "-" * (width + 2 * w + 13)]
    lines += [row(p, a["scores"].get(p), b["scores"].get(p)) for p in patterns]
    lines += ["-" * (width + 2 * w + 13), row("average", a["average"], b["average"])]
    return "\n".join(lines)


def plot_scores(results: Sequence[dict], labels: Sequence[str], out_png: str | Path, title: str) -> Path:
    """Grouped bar chart: per-pattern scores (+ average) of one or more results."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    patterns = list(dict.fromkeys(p for r in results for p in r["scores"])) + ["average"]
    fig = Figure(figsize=(max(6.0, 1.1 * len(patterns)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for k, (res, label) in enumerate(zip(results, labels)):
        vals = [res["scores"].get(p, 0.0) for p in patterns[:-1]] + [res["average"]]
        xs = [x + (k - (len(results) - 1) / 2) * width for x in range(len(patterns))]
        ax.bar(xs, vals, width=width, label=label)
    labels = [textwrap.fill(p.replace(" and ", " & "), width=15, break_long_words=False) for p in patterns]  # no overlapping names
    ax.set_xticks(range(len(patterns)), labels, fontsize=7)
    ax.set_ylabel("MMVP-VLM score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    if len(results) > 1:
        ax.legend()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.mmvp_vlm", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF CLIP or SigLIP directory (with processor + tokenizer)")
    p.add_argument("--benchmark", help="MMVP-VLM folder (Questions.csv + 'MLLM_VLM Images/')")
    p.add_argument("--out", help="RESULT.json to write")
    p.add_argument("--plot", help="PNG bar chart to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two results instead")
    p.add_argument("--labels", nargs=2, default=["before", "after"], metavar=("A", "B"))
    return p


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = get_logger("eval.mmvp_vlm")
    if args.compare:
        if args.model or args.benchmark or args.out:
            raise ConfigError("--compare takes two RESULT.json files; do not combine it with --model/--benchmark/--out")
        a, b = (load_result(p) for p in args.compare)
        print(compare_table(a, b, tuple(args.labels)))
        if args.plot:
            log.info("wrote %s", plot_scores([a, b], args.labels, args.plot, "MMVP-VLM: "
                                             + " vs ".join(args.labels)))
        return 0
    missing = [f"--{k}" for k in ("model", "benchmark", "out") if not getattr(args, k)]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}: usage `python -m eval.mmvp_vlm --model MODEL_DIR "
                          "--benchmark BENCH_DIR --out RESULT.json [--plot PNG]` (or --compare A.json B.json)")
    result = evaluate_mmvp_vlm(args.model, args.benchmark, batch_size=args.batch_size, device=args.device)
    write_json(args.out, result)
    print(format_table(result))
    log.info("wrote %s (%d pairs, %.1f s)", args.out, result["num_pairs"], result["seconds"])
    if args.plot:
        log.info("wrote %s", plot_scores([result], [Path(args.model).name], args.plot,
                                         f"MMVP-VLM: {Path(args.model).name} (average {result['average']:.1f})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""MMVP-VLM: the encoder-level benchmark of "Eyes Wide Shut?", scored exactly as the official protocol.

Usage::

    python -m eval.mmvp_vlm --model MODEL_DIR --benchmark BENCH_DIR --out RESULT.json [--plot PNG]
    python -m eval.mmvp_vlm --compare A.json B.json [--labels before after] [--plot PNG] [--out CMP.json]

Benchmark folder (official or toy): ``Questions.csv`` (header row; columns question id, type, statement,
read by position) and ``MLLM_VLM Images/<type>/<qid>.jpg``; consecutive rows form a pair.

Protocol (docs/method.md): text = "a photo of " + statement, padded to the tokenizer's max length; for each
statement, softmax over the pair's two images of the text->image logits; predict image 1 if p > 0.5; ground
truth is image 1 for an odd qid; a pair is correct only if both statements are; pattern = the type column;
pattern score = correct pairs / pairs x 100; average = mean of the pattern scores.

Uncertainty: the result carries percentile-bootstrap 95% intervals of every pattern score and of the average
(pairs resampled within each pattern). ``--compare`` adds, when both results hold per-pair records of the same
pairs, the paired-bootstrap interval of each change and the exact McNemar test on the pairs that flipped.

Unlike the official script (two forward passes per pair), every image and statement is embedded once,
batched, and the pair logits are gathered from the (texts x images) logit matrix; benchmarks/bench_mmvp_vlm.py
shows the predictions are identical.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from genhancer.utils.fsio import read_json, save_figure, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.mmvp import IMAGES_DIR, QUESTIONS_FILE, MMVPPair, read_benchmark  # noqa: F401 (re-exported)
from genhancer.utils.provenance import read_provenance
from genhancer.utils.stats import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    percentile_interval,
    sign_test_p,
    stratified_bootstrap_means,
)

TEXT_PREFIX = "a photo of "
THRESHOLD = 0.5


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
        records.append(
            {
                "qids": list(pq),
                "pattern": pattern,
                "probs_image1": probs[i].tolist(),
                "predictions": pred[i].tolist(),
                "ground_truth": gt[i].tolist(),
                "correct": bool(correct[i]),
            }
        )
    scores = {p: 100.0 * c["correct"] / c["pairs"] for p, c in counts.items()}
    average = sum(scores.values()) / len(scores) if scores else 0.0
    return {
        "scores": scores,
        "counts": counts,
        "average": average,
        "num_pairs": len(records),
        "pairs": records,
    }


# ----------------------------------------------------------------------------------------------- logits
@dataclass
class PairEmbeddings:
    """Every image and statement of a benchmark embedded once (unit vectors), and where each pair's are."""

    images: torch.Tensor  # (N, D) distinct images
    texts: torch.Tensor  # (M, D) distinct prefixed statements
    image_index: torch.Tensor  # (P, 2) rows of ``images`` of each pair's two images
    text_index: torch.Tensor  # (P, 2) rows of ``texts`` of each pair's two statements

    def logits(self, model: Any) -> torch.Tensor:
        """(P, 2, 2) pair logits, gathered from the (texts x images) logit matrix."""
        logits = text_image_logits(model, self.texts, self.images)  # (M, N)
        return logits[self.text_index[:, :, None], self.image_index[:, None, :]].cpu()

    def geometry(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair (P,): how far apart its two images are (the norm of the difference of their unit
        embeddings) and the cosine between that difference and its two statements' difference: the image-side
        separation an encoder change can add, and whether it lies along what the text side tells apart."""
        image, text = self.images[self.image_index].float(), self.texts[self.text_index].float()  # (P, 2, D)
        d_image, d_text = image[:, 0] - image[:, 1], text[:, 0] - text[:, 1]  # (P, D)
        alignment = torch.nn.functional.cosine_similarity(d_image, d_text, dim=-1, eps=1e-8)
        return d_image.norm(dim=-1).cpu(), alignment.cpu()


def embed_pairs(
    model: Any, processor: Any, pairs: Sequence[MMVPPair], batch_size: int = 32, show_progress: bool = True
) -> PairEmbeddings:
    """Embed every image and statement once (batched)."""
    images = list(dict.fromkeys(p for pair in pairs for p in pair.images))
    texts = list(dict.fromkeys(TEXT_PREFIX + s for pair in pairs for s in pair.statements))
    img_idx = {p: i for i, p in enumerate(images)}
    txt_idx = {t: i for i, t in enumerate(texts)}
    return PairEmbeddings(
        images=encode_images(model, processor, images, batch_size, show_progress),
        texts=encode_texts(model, processor, texts, batch_size, show_progress),
        image_index=torch.tensor([[img_idx[p] for p in pair.images] for pair in pairs]),
        text_index=torch.tensor([[txt_idx[TEXT_PREFIX + s] for s in pair.statements] for pair in pairs]),
    )


def pair_logits_batched(
    model: Any, processor: Any, pairs: Sequence[MMVPPair], batch_size: int = 32, show_progress: bool = True
) -> torch.Tensor:
    """Embed every image and statement once (batched), then gather (P, 2, 2) pair logits."""
    return embed_pairs(model, processor, pairs, batch_size, show_progress).logits(model)


@torch.no_grad()
def pair_logits_per_pair(
    model: Any, processor: Any, pairs: Sequence[MMVPPair], forwards_per_pair: int = 1
) -> torch.Tensor:
    """The official loop, for comparison: per pair, preprocess 2 images + texts and run the full model.

    ``forwards_per_pair=2`` is exactly the official script (one forward per statement, both images each time);
    1 runs both statements in one forward. Returns (P, 2, 2) logits_per_text.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = []
    for pair in pairs:
        pixels = processor.image_processor(images=[load_image(p) for p in pair.images], return_tensors="pt")[
            "pixel_values"
        ].to(device, dtype)
        texts = [TEXT_PREFIX + s for s in pair.statements]
        groups = [texts] if forwards_per_pair == 1 else [[t] for t in texts]
        rows = []
        for g in groups:
            enc = {k: v.to(device) for k, v in tokenize(model, processor, g).items()}
            rows.append(model(pixel_values=pixels, **enc).logits_per_text.float())  # (len(g), 2)
        out.append(torch.cat(rows))
    return torch.stack(out).cpu()  # (P, 2, 2)


# ----------------------------------------------------------------------------------------------- statistics
def _correct_by_pattern(result: dict) -> dict[str, dict[tuple[int, ...], bool]] | None:
    """{pattern: {qids: correct}} from a result's per-pair records (None when it has none)."""
    records = result.get("pairs")
    if not isinstance(records, list) or not records:
        return None
    out: dict[str, dict[tuple[int, ...], bool]] = {}
    for rec in records:
        out.setdefault(rec["pattern"], {})[tuple(rec["qids"])] = bool(rec["correct"])
    return out


def score_intervals(
    result: dict, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0
) -> dict | None:
    """Percentile-bootstrap intervals of every pattern score and of the average (0-100).

    Pairs are resampled *within* each pattern (the pattern sizes stay fixed), one resample for all patterns
    at once, so the average's interval is that of the mean of the resampled pattern scores. None when the
    result has no per-pair records.
    """
    by_pattern = _correct_by_pattern(result)
    if by_pattern is None:
        return None
    patterns = list(by_pattern)
    groups = [np.array(list(by_pattern[p].values()), dtype=np.float64) for p in patterns]
    means = 100.0 * stratified_bootstrap_means(groups, n_boot, seed)  # (B, G)
    per_pattern = percentile_interval(means, level)  # (2, G)
    avg = percentile_interval(means.mean(axis=1), level)
    return {
        "method": "percentile bootstrap over pairs, resampled within each pattern",
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "scores": {p: [float(per_pattern[0, g]), float(per_pattern[1, g])] for g, p in enumerate(patterns)},
        "average": [float(avg[0]), float(avg[1])],
    }


def _flips(before: dict[tuple[int, ...], bool], after: dict[tuple[int, ...], bool]) -> tuple[int, int]:
    """(wrong -> right, right -> wrong) counts over the pairs of one pattern."""
    gained = sum(1 for k, ok in after.items() if ok and not before[k])
    lost = sum(1 for k, ok in after.items() if not ok and before[k])
    return gained, lost


def score_changes(a: dict, b: dict) -> dict:
    """{"paired": False, "patterns": {p: {"before", "after", "delta"}}, "average": {...}}; a pattern missing
    on one side has None there (patterns keep first-seen order, ``a``'s first)."""
    patterns = list(dict.fromkeys([*a["scores"], *b["scores"]]))
    rows = {p: {"before": a["scores"].get(p), "after": b["scores"].get(p)} for p in patterns}
    for r in rows.values():
        r["delta"] = r["after"] - r["before"] if None not in (r["before"], r["after"]) else None
    return {
        "paired": False,
        "patterns": rows,
        "average": {"before": a["average"], "after": b["average"], "delta": b["average"] - a["average"]},
    }


def paired_comparison(
    a: dict, b: dict, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0
) -> dict:
    """Change from result ``a`` to result ``b`` on the same benchmark, pair by pair.

    Per pattern and for the average: the score change, the paired-bootstrap interval of that change (the same
    resampled pairs for both sides, within each pattern), the pairs that flipped (wrong -> right,
    right -> wrong) and the exact McNemar p-value on them. Without per-pair records on both sides, or when
    the two results hold different pairs, only the score changes are given (``"paired": false``).
    """
    out = score_changes(a, b)
    rows = out["patterns"]
    ca, cb = _correct_by_pattern(a), _correct_by_pattern(b)
    if ca is None or cb is None or {p: set(v) for p, v in ca.items()} != {p: set(v) for p, v in cb.items()}:
        out["why_unpaired"] = (
            "a result has no per-pair records"
            if ca is None or cb is None
            else "the two results do not hold the same pairs (different benchmarks?)"
        )
        return out
    groups = [np.array([float(cb[p][k]) - float(ca[p][k]) for k in ca[p]]) for p in ca]
    means = 100.0 * stratified_bootstrap_means(groups, n_boot, seed)  # (B, G) paired differences
    per_pattern, avg = percentile_interval(means, level), percentile_interval(means.mean(axis=1), level)
    total = [0, 0]
    for g, p in enumerate(ca):
        gained, lost = _flips(ca[p], cb[p])
        total = [total[0] + gained, total[1] + lost]
        rows[p].update(
            delta_interval=[float(per_pattern[0, g]), float(per_pattern[1, g])],
            wrong_to_right=gained,
            right_to_wrong=lost,
            p_value=sign_test_p(gained, lost),
        )
    out["average"].update(
        delta_interval=[float(avg[0]), float(avg[1])],
        wrong_to_right=total[0],
        right_to_wrong=total[1],
        p_value=sign_test_p(*total),
    )
    out.update(
        paired=True,
        test="exact McNemar (two-sided sign test on the pairs that flipped)",
        interval="paired percentile bootstrap over pairs, resampled within each pattern",
        level=level,
        n_boot=n_boot,
        seed=seed,
    )
    return out


# ----------------------------------------------------------------------------------------------- geometry
GEOMETRY = ("image_separation", "text_alignment")


def _geometry_by_pattern(result: dict) -> dict[str, dict[tuple[int, ...], tuple[float, float]]] | None:
    """{pattern: {qids: (separation, alignment)}}; None when the result has no per-pair geometry (older
    results)."""
    records = result.get("pairs")
    if not isinstance(records, list) or not records or any(k not in records[0] for k in GEOMETRY):
        return None
    out: dict[str, dict[tuple[int, ...], tuple[float, float]]] = {}
    for rec in records:
        out.setdefault(rec["pattern"], {})[tuple(rec["qids"])] = (
            rec["image_separation"],
            rec["text_alignment"],
        )
    return out


def geometry_summary(result: dict) -> dict | None:
    """{pattern: {"image_separation", "text_alignment"}} means over each pattern's pairs, and "average" over
    the patterns; None without per-pair geometry."""
    by_pattern = _geometry_by_pattern(result)
    if by_pattern is None:
        return None
    means = {
        p: dict(zip(GEOMETRY, np.mean(list(v.values()), axis=0).tolist())) for p, v in by_pattern.items()
    }
    means["average"] = {k: float(np.mean([m[k] for m in means.values()])) for k in GEOMETRY}
    return means


def geometry_changes(
    a: dict, b: dict, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0
) -> dict | None:
    """Pair by pair, the change of each geometry measure from ``a`` to ``b`` per pattern and on the average
    over patterns, with paired percentile-bootstrap intervals (pairs resampled within each pattern); None
    unless both results hold per-pair geometry of the same pairs."""
    ga, gb = _geometry_by_pattern(a), _geometry_by_pattern(b)
    if ga is None or gb is None or {p: set(v) for p, v in ga.items()} != {p: set(v) for p, v in gb.items()}:
        return None
    out: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed, "measures": {}}
    for k, name in enumerate(GEOMETRY):
        groups = [np.array([gb[p][q][k] - ga[p][q][k] for q in ga[p]]) for p in ga]
        means = stratified_bootstrap_means(groups, n_boot, seed)  # (B, G)
        per_pattern, avg = percentile_interval(means, level), percentile_interval(means.mean(axis=1), level)
        rows = {}
        for g, p in enumerate(ga):
            before = float(np.mean([ga[p][q][k] for q in ga[p]]))
            after = float(np.mean([gb[p][q][k] for q in ga[p]]))
            rows[p] = {"before": before, "after": after, "delta": after - before}
            rows[p]["delta_interval"] = [float(per_pattern[0, g]), float(per_pattern[1, g])]
        average = {
            key: float(np.mean([r[key] for r in rows.values()])) for key in ("before", "after", "delta")
        }
        out["measures"][name] = {
            **rows,
            "average": {**average, "delta_interval": [float(avg[0]), float(avg[1])]},
        }
    return out


def geometry_table(changes: dict, labels: tuple[str, str] = ("before", "after")) -> str:
    """Per pattern: image separation and text alignment before -> after, each change with its interval."""
    measures = [changes["measures"][k] for k in GEOMETRY]
    width = max(len(p) for p in measures[0])
    level = f"{round(100 * changes['level'])}%"

    def cells(r: dict) -> str:
        lo, hi = r["delta_interval"]
        values, delta = f"{r['before']:.3f} -> {r['after']:.3f}", f"{r['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        return f"  {values:>22}  {delta:>27}"

    head = f"{'pattern':<{width}}" + "".join(
        f"  {title:>22}  {'delta [' + level + ' interval]':>27}"
        for title in ("image separation", "text alignment")
    )
    lines = [
        f"image side, {labels[0]} -> {labels[1]}: separation |i1 - i2| of a pair's unit image embeddings, "
        "and its alignment (cosine) with the difference of the pair's statements",
        head,
        "-" * len(head),
    ]
    patterns = [p for p in measures[0] if p != "average"]
    lines += [f"{p:<{width}}" + "".join(cells(m[p]) for m in measures) for p in patterns]
    lines += ["-" * len(head), f"{'average':<{width}}" + "".join(cells(m["average"]) for m in measures)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- API
def evaluate_mmvp_vlm(
    model_dir: str | Path,
    bench_dir: str | Path,
    batch_size: int = 32,
    device: str = "cpu",
    show_progress: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """Evaluate an HF CLIP/SigLIP directory on an MMVP-VLM folder; returns the RESULT.json dict.

    Keys: benchmark, model_dir, bench_dir, model_family, protocol, scores {pattern: 0-100}, counts, average,
    num_pairs, pairs (per pair: qids, pattern, statements, probs_image1, logits (2, 2), predictions,
    ground_truth, correct), intervals (``score_intervals``: bootstrap intervals of every pattern score and
    of the average), provenance (the model dir's provenance.json or None), seconds.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    pairs = read_benchmark(bench_dir)  # validate the data before paying for the model
    model, processor = load_encoder(model_dir, device=device)
    start = time.perf_counter()
    embedded = embed_pairs(model, processor, pairs, batch_size, show_progress)
    logits = embedded.logits(model)  # (P, 2, 2)
    separation, alignment = embedded.geometry()  # (P,) each
    seconds = time.perf_counter() - start
    scored = score_pairs(logits, [p.qids for p in pairs], [p.pattern for p in pairs])
    for rec, pair, lg, sep, al in zip(scored["pairs"], pairs, logits, separation, alignment):
        rec["statements"] = list(pair.statements)
        rec["logits"] = lg.tolist()
        rec["image_separation"], rec["text_alignment"] = float(sep), float(al)
    result = {
        "benchmark": "mmvp_vlm",
        "model_dir": str(model_dir),
        "bench_dir": str(bench_dir),
        "model_family": family_of(model).name,
        "protocol": {
            "text_prefix": TEXT_PREFIX,
            "padding": "max_length",
            "max_length": text_max_length(model, processor),
            "threshold": THRESHOLD,
            "ground_truth": "image 1 for odd qid",
            "pair_correct": "both statements",
        },
        **{k: scored[k] for k in ("scores", "counts", "average", "num_pairs")},
        "pairs": scored["pairs"],
        "provenance": read_provenance(model_dir),
        "seconds": seconds,
    }
    result["intervals"] = score_intervals(result, n_boot=n_boot, seed=seed)
    result["geometry"] = geometry_summary(result)
    return result


def _interval_cell(iv: Sequence[float] | None, width: int = 13) -> str:
    return f"{f'[{iv[0]:.1f}, {iv[1]:.1f}]':>{width}}" if iv else f"{'-':>{width}}"


def _p_cell(p: float) -> str:
    return f"{p:7.3f}" if p >= 0.001 else f"{'<0.001':>7}"


def format_table(result: dict) -> str:
    """A per-pattern console table of one result (with the 95% intervals when the result has them)."""
    width = max([len("average"), *map(len, result["scores"])])
    iv = result.get("intervals") or {}
    ci_head = f"{str(round(100 * iv['level'])) + '% interval':>15}" if iv else ""
    lines = [f"{'pattern':<{width}}  pairs  correct   score{ci_head}", "-" * (width + 25 + len(ci_head))]
    for pattern, score in result["scores"].items():
        c = result["counts"][pattern]
        ci = "  " + _interval_cell(iv["scores"].get(pattern)) if iv else ""
        lines.append(f"{pattern:<{width}}  {c['pairs']:>5}  {c['correct']:>7}  {score:6.1f}{ci}")
    ci = "  " + _interval_cell(iv["average"]) if iv else ""
    lines += [
        "-" * (width + 25 + len(ci_head)),
        f"{'average':<{width}}  {result['num_pairs']:>5}  "
        f"{sum(c['correct'] for c in result['counts'].values()):>7}  {result['average']:6.1f}{ci}",
    ]
    return "\n".join(lines)


def load_result(path: str | Path) -> dict:
    """Read a RESULT.json written by this module; a file without scores is a ``DataError``."""
    res = read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("scores"), dict) or "average" not in res:
        raise DataError(
            f"{path}: not an MMVP-VLM result (needs 'scores' and 'average'); write one with "
            f"`python -m eval.mmvp_vlm --model ... --benchmark ... --out {path}`"
        )
    return res


def compare_table(
    a: dict, b: dict, labels: tuple[str, str] = ("before", "after"), comparison: dict | None = None
) -> str:
    """Per-pattern before/after table with deltas (patterns missing on one side show '-').

    With a paired ``comparison`` (``paired_comparison(a, b)``) each row also shows the interval of the
    change, the flipped pairs (wrong -> right / right -> wrong) and the exact McNemar p-value.
    """
    cmp = comparison if comparison is not None else score_changes(a, b)
    patterns = list(cmp["patterns"])
    width = max([len("average"), *map(len, patterns)])
    w = max(8, *map(len, labels))
    paired = cmp["paired"]

    def cell(v: float | None) -> str:
        return f"{v:>{w}.1f}" if v is not None else f"{'-':>{w}}"

    def row(name: str, r: dict) -> str:
        delta = f"{r['delta']:+7.1f}" if r["delta"] is not None else f"{'-':>7}"
        text = f"{name:<{width}}  {cell(r['before'])}  {cell(r['after'])}  {delta}"
        if paired and "p_value" in r:
            text += (
                f"  {_interval_cell(r['delta_interval'], 15)}  "
                f"{str(r['wrong_to_right']) + '/' + str(r['right_to_wrong']):>9}  {_p_cell(r['p_value'])}"
            )
        return text

    head = f"{'pattern':<{width}}  {labels[0]:>{w}}  {labels[1]:>{w}}  {'delta':>7}"
    if paired:
        head += f"  {str(round(100 * cmp['level'])) + '% int. (delta)':>15}  {'flips +/-':>9}  {'p':>7}"
    rule = "-" * len(head)
    lines = [
        head,
        rule,
        *(row(p, cmp["patterns"][p]) for p in patterns),
        rule,
        row("average", cmp["average"]),
    ]
    return "\n".join(lines)


def plot_scores(results: Sequence[dict], labels: Sequence[str], out_png: str | Path, title: str) -> Path:
    """Grouped bar chart: per-pattern scores (+ average) of one or more results; error bars show the
    results' bootstrap intervals when they carry them."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    patterns = list(dict.fromkeys(p for r in results for p in r["scores"])) + ["average"]
    fig = Figure(figsize=(max(6.0, 1.1 * len(patterns)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for k, (res, label) in enumerate(zip(results, labels)):
        vals = [res["scores"].get(p, 0.0) for p in patterns[:-1]] + [res["average"]]
        xs = [x + (k - (len(results) - 1) / 2) * width for x in range(len(patterns))]
        iv = res.get("intervals")
        yerr = None
        if iv:
            bounds = [iv["scores"].get(p, [v, v]) for p, v in zip(patterns[:-1], vals)] + [iv["average"]]
            yerr = [
                [max(0.0, v - lo) for v, (lo, _) in zip(vals, bounds)],
                [max(0.0, hi - v) for v, (_, hi) in zip(vals, bounds)],
            ]
        ax.bar(xs, vals, width=width, label=label, yerr=yerr, capsize=2, error_kw={"elinewidth": 0.8})
    names = [textwrap.fill(p.replace(" and ", " & "), width=15, break_long_words=False) for p in patterns]
    ax.set_xticks(range(len(patterns)), names, fontsize=7)
    ax.set_ylabel("MMVP-VLM score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    if len(results) > 1:
        ax.legend()
    return save_figure(fig, out_png)


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.mmvp_vlm", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF CLIP or SigLIP directory (with processor + tokenizer)")
    p.add_argument("--benchmark", help="MMVP-VLM folder (Questions.csv + 'MLLM_VLM Images/')")
    p.add_argument("--out", help="RESULT.json to write (with --compare: the comparison JSON)")
    p.add_argument("--plot", help="PNG bar chart to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two results instead")
    p.add_argument("--labels", nargs=2, default=["before", "after"], metavar=("A", "B"))
    p.add_argument(
        "--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default 10000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    return p


def _run_compare(args: argparse.Namespace) -> int:
    log = get_logger("eval.mmvp_vlm")
    if args.model or args.benchmark:
        raise ConfigError("--compare takes two RESULT.json files; do not combine it with --model/--benchmark")
    a, b = (load_result(p) for p in args.compare)
    cmp = paired_comparison(a, b, n_boot=args.bootstrap, seed=args.seed)
    print(compare_table(a, b, tuple(args.labels), cmp))
    if not cmp["paired"]:
        log.warning("no paired statistics: %s", cmp["why_unpaired"])
    geometry = geometry_changes(a, b, n_boot=args.bootstrap, seed=args.seed)
    if geometry is not None:
        print("\n" + geometry_table(geometry, tuple(args.labels)))
    if args.out:
        write_json(
            args.out,
            {
                "benchmark": "mmvp_vlm_comparison",
                "labels": list(args.labels),
                "results": list(args.compare),
                **cmp,
                "geometry": geometry,
            },
        )
        log.info("wrote %s", args.out)
    if args.plot:
        log.info(
            "wrote %s", plot_scores([a, b], args.labels, args.plot, "MMVP-VLM: " + " vs ".join(args.labels))
        )
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = get_logger("eval.mmvp_vlm")
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    if args.compare:
        return _run_compare(args)
    missing = [f"--{k}" for k in ("model", "benchmark", "out") if not getattr(args, k)]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: usage `python -m eval.mmvp_vlm --model MODEL_DIR "
            "--benchmark BENCH_DIR --out RESULT.json [--plot PNG]` (or --compare A.json B.json)"
        )
    result = evaluate_mmvp_vlm(
        args.model,
        args.benchmark,
        batch_size=args.batch_size,
        device=args.device,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    write_json(args.out, result)
    print(format_table(result))
    log.info("wrote %s (%d pairs, %.1f s)", args.out, result["num_pairs"], result["seconds"])
    if args.plot:
        log.info(
            "wrote %s",
            plot_scores(
                [result],
                [Path(args.model).name],
                args.plot,
                f"MMVP-VLM: {Path(args.model).name} (average {result['average']:.1f})",
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

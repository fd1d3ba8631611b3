"""Does a LLaVA read its image? The answer loss of each record with its own image against another record's.

    python -m llava_integration.image_use --model DIR --data FILE.json --image-root DIR
        [--start S] [--limit N] [--template NAME] [--out FILE.json]

Every image record of the data (LLaVA JSON, encoded exactly as in training: the same chat template, masks
and image padding) is scored twice by the model: with its own image, and with the image of another record
(a random derangement, so no record keeps its own). Where the answer depends on the picture and the model
reads it, the loss with the own image is lower. The report gives the mean loss per answer token both ways
and its gain (another image's loss minus the own image's) with a percentile-bootstrap 95% interval over
records, and the same per word for the first ``--words`` words of the answers (a word's loss: the sum over
its tokens). In captions written in a fixed order (the toy's "three large solid orange arrows ...") word k
is one attribute, so the table shows which attributes the model takes from the picture. A gain of zero
means the model answers from the text alone.

Use records the model did not train on (``--start`` skips the first records of the file). The template is
the one stored in the model's processor unless ``--template`` names another (e.g. ``plain`` to score a
finetuned model on captions).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError, ModelDirError
from genhancer.utils.logging import get_logger
from genhancer.utils.stats import bootstrap_interval
from llava_integration.config import DataConfig
from llava_integration.data import IGNORE_INDEX, LlavaCollator, LlavaDataset
from llava_integration.templates import TEMPLATES, get_template

log = get_logger(__name__)


def derangement(n: int, seed: int = 0) -> list[int]:
    """A random permutation of ``range(n)`` without fixed points (``n >= 2``): entry i is whose image record i
    gets. One random cycle through all records."""
    if n < 2:
        raise DataError(f"comparing images needs at least 2 image records, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out = [0] * n
    for k, i in enumerate(order):
        out[i] = order[(k + 1) % n]
    return out


def answer_token_losses(model: Any, batch: dict[str, Any]) -> list[np.ndarray]:
    """Per record of ``batch``, the loss of each supervised token, in order (labels != -100)."""
    import torch

    inputs = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        logits = model(**inputs).logits.float().cpu()  # (B, T, V)
    labels = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at t
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T-1)
    return [(-picked[b][labels[b] != IGNORE_INDEX]).numpy() for b in range(len(labels))]


def score(
    model: Any, dataset: LlavaDataset, indices: Sequence[int], image_of: Sequence[int], batch_size: int
) -> list[np.ndarray]:
    """Answer-token losses of records ``indices``; record ``indices[k]`` is shown ``image_of[k]``'s image."""
    collate = LlavaCollator(pad_token_id=dataset.tokenizer.pad_token_id)
    out: list[np.ndarray] = []
    for start in range(0, len(indices), batch_size):
        items = []
        for i, j in zip(indices[start : start + batch_size], image_of[start : start + batch_size]):
            item = dataset.encode(i)
            if j != i:
                item["pixel_values"] = dataset.encode(j)["pixel_values"]
            items.append(item)
        out += answer_token_losses(model, collate(items))
    return out


WORD_STARTS = ("\u2581", "\u0120", " ")  # sentencepiece, byte-level BPE and plain markers of a leading space


def words(ids: Sequence[int], tokenizer: Any) -> list[list[int]]:
    """Token positions of ``ids`` grouped into words: a token whose piece starts with a space marker opens a
    word ("one" = "\u2581on" + "e" is one word; a comma stays with the word before it)."""
    groups: list[list[int]] = []
    for t, piece in enumerate(tokenizer.convert_ids_to_tokens(list(ids))):
        if not groups or str(piece).startswith(WORD_STARTS):
            groups.append([])
        groups[-1].append(t)
    return groups


def _compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    lo, hi = bootstrap_interval(b - a)
    return {"own": float(a.mean()), "other": float(b.mean()), "gain": float((b - a).mean()), "ci95": [lo, hi]}


def summarise(
    own: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    answers: Sequence[list[int]],
    tokenizer: Any,
    k: int,
) -> dict[str, Any]:
    """Mean answer loss with the own vs another image: per token of each record, and per word (the sum of its
    tokens' losses) at each of the first ``k`` words of the answers."""
    per_record = _compare(np.array([x.mean() for x in own]), np.array([x.mean() for x in other]))
    spans = [words(ids, tokenizer) for ids in answers]
    positions = []
    for p in range(k):
        rows = [r for r, w in enumerate(spans) if len(w) > p]
        if len(rows) < 2:
            break
        texts = [tokenizer.decode([answers[r][t] for t in spans[r][p]]).strip() for r in rows]
        common, count = Counter(texts).most_common(1)[0]
        a = np.array([own[r][spans[r][p]].sum() for r in rows])
        b = np.array([other[r][spans[r][p]].sum() for r in rows])
        row = _compare(a, b)
        row.update(word=p + 1, records=len(rows), commonest=common, share=count / len(rows))
        positions.append(row)
    return {"records": len(own), "per_record": per_record, "words": positions}


def format_report(report: dict[str, Any]) -> str:
    r = report["per_record"]
    lines = [
        f"image use: {report['model']} on {report['data']} ({report['records']} image records, "
        f"template {report['template']})",
        f"answer loss per token: own image {r['own']:.3f}, another record's {r['other']:.3f}, "
        f"gain {r['gain']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
        f"{'word':>5}  {'commonest (share)':<24} {'own':>6} {'other':>6} {'gain [95% interval]':>26}",
    ]
    for p in report["words"]:
        word = f"{p['commonest']!r} ({p['share']:.2f})"
        ci = f"{p['gain']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]"
        lines.append(f"{p['word']:>5}  {word:<24} {p['own']:>6.3f} {p['other']:>6.3f} {ci:>26}")
    return "\n".join(lines)


def image_use(
    model_dir: str | Path,
    data: DataConfig,
    start: int = 0,
    limit: int | None = 300,
    template: str | None = None,
    n_words: int = 8,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """The report of the module docstring, as a dict (``format_report`` prints it)."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if not (Path(model_dir) / "config.json").is_file():
        raise ModelDirError(f"{model_dir}: not a model directory (no config.json); pass a LLaVA directory")
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoProcessor.from_pretrained(model_dir)
    chat_template = get_template(template).chat_template if template else processor.chat_template
    dataset = LlavaDataset(data, processor, chat_template, model.config.image_seq_length)
    indices = [i for i in range(start, len(dataset)) if dataset.has_image[i]]
    if limit is not None:
        indices = indices[:limit]
    if len(indices) < 2:
        raise DataError(
            f"{data.path}: {len(indices)} image record(s) from record {start} on; the check needs at least 2 "
            "(lower --start)"
        )
    swap = derangement(len(indices), seed)
    log.info("scoring %d image records of %s, own image and another's", len(indices), data.path)
    own = score(model, dataset, indices, indices, batch_size)
    other = score(model, dataset, indices, [indices[s] for s in swap], batch_size)
    answers = [[t for t in dataset.encode(i)["labels"].tolist() if t != IGNORE_INDEX] for i in indices]
    report = summarise(own, other, answers, dataset.tokenizer, n_words)
    report.update(model=str(model_dir), data=data.path, start=start, template=template or "the model's")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llava_integration.image_use", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, help="a LLaVA directory (LlavaForConditionalGeneration)")
    p.add_argument("--data", required=True, help="LLaVA JSON/JSONL records with images")
    p.add_argument("--image-root", default="", help="folder the records' image paths are relative to")
    p.add_argument("--start", type=int, default=0, help="skip the first S records of the file")
    p.add_argument("--limit", type=int, default=300, help="score N image records (default 300)")
    p.add_argument("--template", choices=sorted(TEMPLATES), help="default: the model processor's template")
    p.add_argument(
        "--aspect", choices=["pad", "square"], default="pad", help="image_aspect_ratio, as trained"
    )
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--words", type=int, default=8, help="report the first N words of the answers (default 8)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the image derangement")
    p.add_argument("--out", type=Path, help="also write the report as JSON")
    return p


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = DataConfig(
        path=args.data,
        image_root=args.image_root,
        image_aspect_ratio=args.aspect,
        max_length=args.max_length,
    )
    report = image_use(
        args.model, data, args.start, args.limit, args.template, args.words, args.batch_size, args.seed
    )
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

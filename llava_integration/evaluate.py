"""Exact-match accuracy of a LLaVA directory on held-out LLaVA-format questions, per question type.

``python -m llava_integration.evaluate --model DIR --data heldout.json --image-root DIR --out R.json``
``python -m llava_integration.evaluate compare R1.json R2.json [--names baseline enhanced]``

Each record's first human turn is the question and the first gpt turn the answer; ``question_type`` (if
present) groups the scores. The prompt is made by the model's own processor chat template
(``apply_chat_template`` with ``{"type": "image"}`` content), i.e. exactly as lmms-eval's ``llava_hf`` does,
and images are padded to square with the mean colour as in training (``--image-aspect-ratio``).
Greedy decoding; an answer is correct when it equals the reference after lower-casing and stripping
punctuation.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError, ModelDirError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.logging import get_logger, progress
from llava_integration.config import DataConfig
from llava_integration.templates import IMAGE_TOKEN

log = get_logger("llava_integration.evaluate")


def normalize(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text).strip().lower()


def questions(data: str | Path, image_root: str | Path) -> list[dict[str, Any]]:
    """Held-out items ``{id, type, image, question, answer}`` (records validated like training data)."""
    from llava_integration.data import load_records

    recs = load_records(DataConfig(path=str(data), image_root=str(image_root)))
    out = []
    for r in recs:
        conv = r["conversations"]
        out.append({"id": r.get("id"), "type": r.get("question_type", "all"), "image": r.get("image"),
                    "question": conv[0]["value"].replace(IMAGE_TOKEN, "").strip(), "answer": conv[1]["value"]})
    return out


def evaluate(model_dir: str | Path, data: str | Path, image_root: str | Path, batch_size: int = 16,
             max_new_tokens: int = 8, image_aspect_ratio: str = "pad", limit: int | None = None) -> dict[str, Any]:
    """Run greedy generation on every held-out question; return the results dict (see module docstring)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from llava_integration.data import expand2square

    if not (Path(model_dir) / "config.json").is_file():
        raise ModelDirError(f"{model_dir}: not a model directory (no config.json)")
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"  # batched generation continues from the right edge
    items = questions(data, image_root)[:limit]
    mean = tuple(int(x * 255) for x in processor.image_processor.image_mean)
    samples = []
    t0 = time.perf_counter()
    for s in progress(range(0, len(items), batch_size), desc="evaluating"):
        batch = items[s: s + batch_size]
        prompts, images = [], []
        for it in batch:
            content: list[dict[str, Any]] = [{"type": "text", "text": it["question"]}]
            if it["image"] is not None:
                with Image.open(Path(image_root) / it["image"]) as im:
                    img = im.convert("RGB")
                images.append(expand2square(img, mean) if image_aspect_ratio == "pad" else img)
                content.insert(0, {"type": "image"})
            prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                         add_generation_prompt=True))
        inputs = processor(images=images or None, text=prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for it, pred in zip(batch, texts):
            samples.append({**{k: it[k] for k in ("id", "type", "question", "answer")},
                            "prediction": pred.strip(), "correct": normalize(pred) == normalize(it["answer"])})
    per_type: dict[str, dict[str, Any]] = {}
    for smp in samples:
        row = per_type.setdefault(smp["type"], {"n": 0, "correct": 0})
        row["n"] += 1
        row["correct"] += int(smp["correct"])
    for row in per_type.values():
        row["accuracy"] = round(100.0 * row["correct"] / row["n"], 2)
    n = len(samples)
    return {"model": str(model_dir), "data": str(data), "n": n,
            "accuracy": round(100.0 * sum(s["correct"] for s in samples) / max(n, 1), 2),
            "per_type": dict(sorted(per_type.items())), "seconds": round(time.perf_counter() - t0, 1),
            "samples": samples}


def comparison_table(results: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """A plain-text table: one row per question type, one column per result file (accuracy %, n)."""
    types = sorted({t for r in results for t in r["per_type"]})
    width = max(10, *(len(n) for n in names))
    lines = [f"{'question type':<14}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for t in types:
        cells = [r["per_type"].get(t) for r in results]
        shown = [format(c["accuracy"], ".1f") if c else "-" for c in cells]
        lines.append(f"{t:<14}" + "".join(f"{v:>{width + 2}}" for v in shown))
    lines.append(f"{'all':<14}" + "".join(f"{r['accuracy']:>{width + 2}.1f}" for r in results))
    lines.append(f"{'(questions)':<14}" + "".join(f"{r['n']:>{width + 2}}" for r in results))
    return "\n".join(lines)


def _compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_integration.evaluate compare")
    parser.add_argument("results", nargs="+", type=Path, help="results JSON files of `evaluate`")
    parser.add_argument("--names", nargs="+", help="column names (default: the file stems)")
    args = parser.parse_args(argv)
    names = args.names or [p.stem for p in args.results]
    if len(names) != len(args.results):
        raise DataError(f"{len(names)} names for {len(args.results)} result files")
    print(comparison_table([read_json(p) for p in args.results], names))
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return _compare(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m llava_integration.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="LLaVA directory")
    parser.add_argument("--data", required=True, type=Path, help="LLaVA JSON with held-out questions")
    parser.add_argument("--image-root", required=True, type=Path, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, type=Path, help="results JSON to write")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--image-aspect-ratio", choices=["pad", "square"], default="pad")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    args = parser.parse_args(argv)
    res = evaluate(args.model, args.data, args.image_root, args.batch_size, args.max_new_tokens,
                   args.image_aspect_ratio, args.limit)
    write_json(args.out, res)
    print(comparison_table([res], [args.model.name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

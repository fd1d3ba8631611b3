"""``python -m toyworld check-llava --model DIR --world DIR``: what does a toy LLaVA read from the picture,
and can it answer it by the option's letter?

The dev check of the toy LLaVA's chain, on the world's validation images: no LLaVA stage trains on them
(``llava_data`` writes its records from the train split) and no reported benchmark asks about them (the
lmms-eval tasks draw scenes of their own), so recipe choices can be judged here without touching the sets
the README reports. Every question type of ``toyworld.llava_data`` is asked about the first ``--n`` val
scenes free-form (the finetuning's single-word suffix, scored like ``check-llm``: the reply's first word),
and every closed-set type once more as multiple choice in toy-CV-Bench's listing ("(A) x", two options for
size and position as there, two or three for the others), answered by the letter (type ``<type>_mc``).

A type read free-form but not by letter is read from the picture but not matched to its option: toy
CV-Bench and toy MMVP ask by letter only. Prints accuracy, items and the majority answer's rate per type;
``--out`` writes the same as JSON with each item's hit (for paired comparisons between two LLaVAs).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.fsio import write_json
from genhancer.utils.logging import progress
from toyworld.llava_data import (
    ANSWER_SUFFIX,
    LETTER_SUFFIX,
    QUESTION_TYPES,
    answer_set,
    option_letter,
    option_listing,
    question,
    scene_rows,
)
from toyworld.llm_check import format_table, hits_by_type, score

MC = "_mc"  # suffix of a type asked as multiple choice
TWO_OPTIONS = ("size", "position")  # as toy-CV-Bench asks them (Size, Relation)


def dev_items(world: str | Path, n: int = 300, seed: int = 0) -> list[dict[str, str]]:
    """Questions about the first ``n`` val scenes: ``{"type", "image" (relative to WORLD/val), "question",
    "answer"}``; each applicable type free-form, each closed-set type also as ``<type>_mc``."""
    rng = random.Random(f"{seed}:check-llava")
    items = []
    for row in scene_rows(Path(world), "val")[:n]:
        for qtype in QUESTION_TYPES:
            qa = question(row["scene"], qtype, rng)
            if qa is None:
                continue
            q, a = qa
            items.append({"type": qtype, "image": row["image"], "question": q + ANSWER_SUFFIX, "answer": a})
            others = [x for x in answer_set(qtype) if x != a]
            if others:
                k = 1 if qtype in TWO_OPTIONS else min(len(others), rng.choice((1, 2)))
                options = [a, *rng.sample(others, k)]
                rng.shuffle(options)
                listing = option_listing(options, mmvp=False)
                items.append(
                    {
                        "type": qtype + MC,
                        "image": row["image"],
                        "question": f"{q}\nSelect from the following choices.\n{listing}{LETTER_SUFFIX}",
                        "answer": option_letter(options, a),
                    }
                )
    return items


def _image(path: Path, image_module: Any) -> Any:
    """The RGB image at ``path``; a missing or unreadable file is a DataError that names it."""
    from genhancer.utils.errors import DataError

    try:
        with image_module.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot read this val image ({type(e).__name__}: {e}); rebuild the world "
            "(python -m toyworld build) or restore the file"
        ) from e


def greedy_answers(
    model: Any, processor: Any, world: Path, items: Sequence[dict[str, str]], batch_size: int
) -> list[str]:
    """The LLaVA's greedy replies (up to 4 new tokens) to ``items``, one image each, left-padded batches."""
    import torch
    from PIL import Image

    processor.tokenizer.padding_side = "left"
    replies: list[str] = []
    for i in progress(range(0, len(items), batch_size), desc="check-llava", unit="batch"):
        batch = items[i : i + batch_size]
        texts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": it["question"]}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for it in batch
        ]
        images = [_image(world / "val" / it["image"], Image) for it in batch]
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        replies += processor.tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return replies


def run(model_dir: Path, world: Path, n: int, batch_size: int = 32) -> dict[str, Any]:
    """Load the LLaVA directory (safetensors only) and ask it :func:`dev_items`; per-type scores and hits."""
    from genhancer.utils.errors import ModelDirError

    if not (model_dir / "config.json").is_file():
        raise ModelDirError(f"{model_dir}: no config.json (a LLaVA directory, e.g. RUN/finetune/model)")
    if not (world / "val" / "scenes.jsonl").is_file():
        raise ModelDirError(f"{world}: no val/scenes.jsonl (build the world: python -m toyworld build)")
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    items = dev_items(world, n)
    replies = greedy_answers(model, processor, world, items, batch_size)
    return {"types": score(items, replies), "hits": hits_by_type(items, replies)}


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toyworld check-llava", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, type=Path, help="LLaVA directory (e.g. RUN/finetune/model)")
    parser.add_argument("--world", required=True, type=Path, help="toy world directory")
    parser.add_argument("--n", type=int, default=300, help="val scenes to ask about (default 300)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, help="JSON file to write the result to")
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch_size < 1:
        parser.error(f"--n and --batch-size must be at least 1, got {args.n} and {args.batch_size}")
    result = run(args.model, args.world, args.n, args.batch_size)
    print(format_table(result["types"]))
    if args.out:
        write_json(
            args.out, {"model": str(args.model), "world": str(args.world), "n_scenes": args.n, **result}
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m toyworld check-llm --llm DIR --world DIR``: does the toy LLM answer from a text description?

The first link of the toy LLaVA's chain. The toy LLM stands in for an instruction-tuned LLM (Vicuna): given
a full text description of a scene in place of the image, it should answer the toy questions about it. A
question type it cannot answer from text is one the toy LLaVA has to learn from the image alone during its
short finetuning -- or not at all. The check asks every question type of ``toyworld.llava_data`` about
``--n`` validation scenes in the finetuning format (vicuna_v1, the single-word answer suffix), decodes the
answer greedily and scores the reply's first word against the gold answer. Two more types split multiple
choice in two: ``choice`` (a closed-set question about the description, answered by the option's letter)
and ``lookup`` (which letter does a named option have: nothing to read, only the letter to find). Type
``moved`` asks the shape with the description's clauses reordered after a (never empty) lead-in
(``llava_data.moved_description``): how far the LLM reads the shape by what the word says rather than
where it stands (a LLaVA's image tokens are not words in a description's order). It is reported, not
required: an LLM that read the moved shape at 1.00 still gave a LLaVA that fell back on the answer prior
(docs/llava.md).

Prints one line per question type (accuracy, items, the majority answer's rate beside it), a ``missing:``
line for each skill the toy LLaVA needs from its LLM that is not there (:data:`NEEDED`) and, with
``--out``, writes the same as JSON. ``pretrain-llm`` runs it on the model it has just trained and keeps the
result in the model's ``provenance.json`` (``extra.text_qa``).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.fsio import write_json
from toyworld.llava_data import QUESTION_TYPES

TYPES: tuple[str, ...] = QUESTION_TYPES
CHOICE = "choice"  # the closed-set types asked as multiple choice, answered by the option's letter
LOOKUP = "lookup"  # the letter of a named option, nothing to read first (llava_data.lookup_drill)
MOVED = "moved"  # the shape, read from a description with its clauses reordered (moved_description)
# Skills the toy LLaVA cannot learn from the image in its short finetuning when its LLM lacks them from text,
# with what then falls back on the answer prior.
NEEDED = {
    "object": 'the POPE question "Is there a <shape>?"',
    LOOKUP: "multiple choice (toy CV-Bench, toy MMVP)",
}
MIN_GAIN = 0.2  # a skill counts as there when its accuracy beats the majority answer's rate by this much


def text_qa_items(world: str | Path, n: int = 200, seed: int = 0) -> list[dict[str, str]]:
    """Up to ``n`` questions per type about the first ``n`` val scenes, each with the scene's description
    where a LLaVA record has its image: ``{"type", "prompt" (ends with 'ASSISTANT:'), "answer"}``. Type
    ``choice``: one closed-set question per scene as multiple choice (as in the finetuning data, CV-Bench and
    MMVP), answered by a letter. Type ``lookup``: one option-letter drill per scene, the half of multiple
    choice that needs no reading (which letter does the named option have)."""
    from toyworld.llava_data import (
        ANSWER_SUFFIX,
        LEAD_INS,
        as_choice,
        chat_text,
        describe,
        lookup_drill,
        moved_description,
        question,
        scene_rows,
    )

    rng = random.Random(f"{seed}:check-llm")
    moved_rng = random.Random(f"{seed}:check-llm-moved")
    items = []

    def add_text(qtype: str, text: str) -> None:
        cut = text.rindex("ASSISTANT:") + len("ASSISTANT:")
        items.append({"type": qtype, "prompt": text[:cut], "answer": text[cut:].strip()})

    def add(qtype: str, description: str, q: str, a: str) -> None:
        add_text(qtype, chat_text(description, [(q, a)]))

    for row in scene_rows(Path(world), "val")[:n]:
        description, choices = describe(row["scene"]), []
        for qtype in TYPES:
            qa = question(row["scene"], qtype, rng)
            if qa is not None:
                add(qtype, description, qa[0] + ANSWER_SUFFIX, qa[1])
                choices.append(as_choice(qtype, *qa, rng))
        choices = [c for c in choices if c is not None]
        if choices:
            add(CHOICE, description, *rng.choice(choices))
        add_text(LOOKUP, lookup_drill(rng))
        shape_q, shape = question(row["scene"], "shape", moved_rng)
        moved = moved_description(description, moved_rng, lead=moved_rng.choice(LEAD_INS[1:]))
        add(MOVED, moved, shape_q + ANSWER_SUFFIX, shape)
    return items


def first_word(reply: str) -> str:
    """The reply's first word, lower case, without punctuation ("Blue." -> "blue")."""
    words = reply.strip().split()
    return words[0].strip(".,!?;:").lower() if words else ""


def hits_by_type(items: Sequence[dict[str, str]], replies: Sequence[str]) -> dict[str, list[bool]]:
    """Per question type, in item order: whether each reply's first word is the item's answer."""
    if len(items) != len(replies):
        raise ValueError(f"{len(items)} items but {len(replies)} replies")
    hits: dict[str, list[bool]] = defaultdict(list)
    for item, reply in zip(items, replies):
        hits[item["type"]].append(first_word(reply) == item["answer"].lower())
    return dict(hits)


def score(items: Sequence[dict[str, str]], replies: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per question type: accuracy of ``replies`` (first word == answer), items, and the rate of the most
    common gold answer (what always giving one answer would score)."""
    hits = hits_by_type(items, replies)
    golds: dict[str, Counter] = defaultdict(Counter)
    for item in items:
        golds[item["type"]][item["answer"].lower()] += 1
    return {
        t: {
            "accuracy": sum(h) / len(h),
            "n": len(h),
            "majority": golds[t].most_common(1)[0][1] / len(h),
        }
        for t, h in hits.items()
    }


def greedy_replies(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 64) -> list[str]:
    """Greedy replies (up to 4 new tokens) of a causal LM to ``prompts``, left-padded batches."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p).input_ids for p in prompts[i : i + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, e in enumerate(encoded):
            ids[k, width - len(e) :] = torch.tensor(e)
            mask[k, width - len(e) :] = 1
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=pad
            )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def check_text_qa(model: Any, tokenizer: Any, world: str | Path, n: int = 200) -> dict[str, dict[str, float]]:
    """:func:`score` of ``model``'s greedy replies to :func:`text_qa_items`."""
    items = text_qa_items(world, n)
    return score(items, greedy_replies(model, tokenizer, [it["prompt"] for it in items]))


def format_table(result: dict[str, dict[str, float]]) -> str:
    lines = [f"{'question type':14s} {'accuracy':>8s} {'items':>6s} {'majority':>8s}"]
    for t, r in result.items():
        lines.append(f"{t:14s} {r['accuracy']:8.2f} {r['n']:6d} {r['majority']:8.2f}")
    return "\n".join(lines)


def missing_skills(result: dict[str, dict[str, float]]) -> list[str]:
    """One line per :data:`NEEDED` skill that ``result`` (:func:`check_text_qa`) shows missing."""
    return [
        f"{t} {result[t]['accuracy']:.2f} (majority {result[t]['majority']:.2f}): a toy LLaVA on this LLM "
        f"will fall back on the answer prior for {what}"
        for t, what in NEEDED.items()
        if t in result and result[t]["accuracy"] < result[t]["majority"] + MIN_GAIN
    ]


def plot_skill_curve(curve: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Accuracy per question type against pretraining step (``ToyLlmConfig.check_every``), the skills the
    toy LLaVA needs (:data:`NEEDED`) drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve]
    types = [t for t in curve[-1] if t != "step"]
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    others = iter(plt.get_cmap("tab20").colors)  # more types than tab10 has colours
    needed_colours = iter(("black", "crimson"))
    for t in types:
        needed = t in NEEDED
        ax.plot(
            steps,
            [p.get(t) for p in curve],
            color=next(needed_colours) if needed else next(others),
            lw=2.5 if needed else 1,
            alpha=1 if needed else 0.7,
            marker="o" if needed else None,
            label=t + (" (needed)" if needed else ""),
        )
    ax.set(xlabel="pretraining step", ylabel="accuracy from a text description", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run(llm: Path, world: Path, n: int) -> dict:
    """Load the toy LLM directory ``llm`` (safetensors only) and :func:`check_text_qa` it on ``world``."""
    from genhancer.utils.errors import ModelDirError

    if not (llm / "config.json").is_file():
        raise ModelDirError(f"{llm}: no config.json (a toy LLM directory from `toyworld pretrain-llm`)")
    if not (world / "val" / "scenes.jsonl").is_file():
        raise ModelDirError(f"{world}: no val/scenes.jsonl (build the world: python -m toyworld build)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(llm, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    return check_text_qa(model, tokenizer, world, n)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld check-llm", description=__doc__.split("\n")[0])
    parser.add_argument("--llm", required=True, type=Path, help="toy LLM directory (pretrain-llm's OUT)")
    parser.add_argument("--world", required=True, type=Path, help="toy world directory")
    parser.add_argument("--n", type=int, default=200, help="val scenes to ask about (default 200)")
    parser.add_argument("--out", type=Path, help="JSON file to write the result to")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1 (val scenes to ask about), got {args.n}")
    result = run(args.llm, args.world, args.n)
    print(format_table(result))
    for line in missing_skills(result):
        print(f"missing: {line}")
    if args.out:
        write_json(
            args.out, {"llm": str(args.llm), "world": str(args.world), "n_scenes": args.n, "types": result}
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The toy world's LLaVA data: LLaVA-format JSON derived from the scene descriptions.

Written under ``WORLD/llava/`` (image paths relative to ``WORLD``, the image root), in the exact record
format of LCS-558K and llava_v1_5_mix665k, so ``llava_integration`` reads them like the real files:

- ``pretrain.json``: one caption record per training image (LCS-558K style: "<image>\\n<describe>" -> caption)
- ``finetune.json``: multi-turn question-answer records on the training images in mix665k's two answer
  styles: a single word ("Answer the question using a single word or phrase.") or, for closed-set
  questions, an option letter ("Answer with the option's letter from the given choices directly.", options
  listed "A. x" or "(A) x" as in MMVP / CV-Bench), plus a few text-only records
- ``heldout.json``: one question per validation image, balanced over question types; each record also
  carries ``question_type`` (ignored by training, used by ``llava_integration.evaluate``)

Question types (answers are single words that need the picture's fine detail): color, shape, count,
position, orientation, presence (of a dot / ring / letter), object (is there a <shape>; POPE-style), text
(which letter).

``python -m toyworld.llava_data --world DIR`` rewrites the files of an existing world; the world
builder calls :func:`write_llava_data` itself.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import read_jsonl, write_json
from toyworld.scene import vocabularies

QUESTION_TYPES: tuple[str, ...] = (
    "color", "shape", "count", "position", "orientation", "presence", "object", "text",
)
ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
MARKS = ("dot", "ring", "letter")
# LCS-558K-style caption instructions (the plain template drops them; kept for the record format).
CAPTION_PROMPTS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Give a short and clear explanation of the subsequent image.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
)
TEXT_ONLY = (
    ("Which shapes can point in a direction?", "triangle and arrow"),
    ("How many sides does a square have?", "four"),
    ("How many sides does a triangle have?", "three"),
    ("Which letters can be written on an object?", "A, E, H, L, T and X"),
    ("What is the opposite of left?", "right"),
    ("What is the opposite of up?", "down"),
)


def _plural(shape: str) -> str:
    return shape + "es" if shape.endswith("s") else shape + "s"


def question(scene: dict[str, Any], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """One (question, answer) of ``qtype`` about ``scene``, or None where the type does not apply."""
    shape, count = scene["shape"], int(scene.get("count", 1))
    noun = shape if count == 1 else _plural(shape)
    be = "is" if count == 1 else "are"
    if qtype == "color":
        return f"What color {be} the {noun}?", scene["color"]
    if qtype == "shape":
        return "What shape is shown in the picture?", shape
    if qtype == "count":
        return f"How many {_plural(shape)} are there?", NUMBER_WORDS.get(count, str(count))
    if qtype == "position":
        if count != 1:
            return None
        return f"Where is the {shape} in the picture?", scene["position"]
    if qtype == "orientation":
        if not scene.get("orientation"):
            return None
        does = "does" if count == 1 else "do"
        return f"Which way {does} the {noun} point?", scene["orientation"]
    if qtype == "presence":
        present = scene.get("feature") or ("letter" if scene.get("text") else None)
        # Half the questions ask about the mark that is there (if any), half about a random one.
        mark = present if present and rng.random() < 0.5 else rng.choice(MARKS)
        where = f"on the {shape}" if count == 1 else f"on the {noun}"
        return f"Is there a {mark} {where}?", "yes" if mark == present else "no"
    if qtype == "object":
        asked = shape if rng.random() < 0.5 else rng.choice([s for s in vocabularies()["shapes"] if s != shape])
        return f"Is there a {asked} in the image?", "yes" if asked == shape else "no"
    if qtype == "text":
        if not scene.get("text"):
            return None
        return f"What letter is written on the {noun}?", scene["text"]
    raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def applicable(scene: dict[str, Any], rng: random.Random) -> list[tuple[str, str, str]]:
    """Every (type, question, answer) that applies to ``scene``."""
    out = []
    for t in QUESTION_TYPES:
        qa = question(scene, t, rng)
        if qa is not None:
            out.append((t, *qa))
    return out


def answer_set(qtype: str) -> list[str]:
    """The closed set of answers of a question type ([] for yes/no types, which stay single-word)."""
    v = vocabularies()
    return {
        "color": v["colors"], "shape": v["shapes"], "count": [NUMBER_WORDS[c] for c in v["counts"]],
        "position": v["positions"], "orientation": v["orientations"], "text": v["letters"],
    }.get(qtype, [])


def as_choice(qtype: str, q: str, a: str, rng: random.Random) -> tuple[str, str] | None:
    """``q``/``a`` as a multiple-choice question answered by its option letter (2-4 options, MMVP "A. x" or
    CV-Bench "(A) x" listing), or None for yes/no types."""
    pool = [x for x in answer_set(qtype) if x != a]
    if not pool:
        return None
    options = [a, *rng.sample(pool, min(len(pool), rng.choice((1, 2, 3))))]
    rng.shuffle(options)
    letters = [chr(65 + i) for i in range(len(options))]
    if rng.random() < 0.5:
        listing = "\n".join(f"{ltr}. {o}" for ltr, o in zip(letters, options))
        prompt = f"{q}\n{listing}"
    else:
        listing = "\n".join(f"({ltr}) {o}" for ltr, o in zip(letters, options))
        prompt = f"{q}\nSelect from the following choices.\n{listing}"
    return prompt + LETTER_SUFFIX, letters[options.index(a)]


def _turns(pairs: Sequence[tuple[str, str]], image: bool) -> list[dict[str, str]]:
    """pairs: (question with its answer-style suffix, answer)."""
    conv = []
    for i, (q, a) in enumerate(pairs):
        value = ("<image>\n" if image and i == 0 else "") + q
        conv += [{"from": "human", "value": value}, {"from": "gpt", "value": a}]
    return conv


def _image_path(split: str, row: dict[str, Any]) -> str:
    return f"{split}/{row['image']}"


def pretrain_records(rows: Sequence[dict[str, Any]], split: str, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"id": f"{split}-cap-{i:06d}", "image": _image_path(split, r),
         "conversations": [{"from": "human", "value": "<image>\n" + rng.choice(CAPTION_PROMPTS)},
                           {"from": "gpt", "value": r["caption"]}]}
        for i, r in enumerate(rows)
    ]


def finetune_records(rows: Sequence[dict[str, Any]], split: str, rng: random.Random,
                     turns: int = 3, text_only_every: int = 50, choice_fraction: float = 0.3) -> list[dict[str, Any]]:
    """``choice_fraction`` of the closed-set turns are asked as multiple choice (answered by letter)."""
    out = []
    for i, r in enumerate(rows):
        qas = applicable(r["scene"], rng)
        rng.shuffle(qas)
        pairs = []
        for t, q, a in qas[:turns]:
            mc = as_choice(t, q, a, rng) if rng.random() < choice_fraction else None
            pairs.append(mc or (q + ANSWER_SUFFIX, a))
        out.append({"id": f"{split}-qa-{i:06d}", "image": _image_path(split, r),
                    "conversations": _turns(pairs, image=True)})
        if text_only_every and i % text_only_every == text_only_every - 1:
            q, a = rng.choice(TEXT_ONLY)
            out.append({"id": f"{split}-text-{i:06d}", "conversations": _turns([(q + ANSWER_SUFFIX, a)], image=False)})
    return out


def heldout_records(rows: Sequence[dict[str, Any]], split: str, rng: random.Random,
                    per_type: int = 100) -> list[dict[str, Any]]:
    """One question per image; types assigned round-robin (the rarest applicable type first)."""
    counts = dict.fromkeys(QUESTION_TYPES, 0)
    out = []
    for i, r in enumerate(rows):
        options = [qa for qa in applicable(r["scene"], rng) if counts[qa[0]] < per_type]
        if not options:
            continue
        t, q, a = min(options, key=lambda qa: (counts[qa[0]], QUESTION_TYPES.index(qa[0])))
        counts[t] += 1
        out.append({"id": f"{split}-heldout-{i:06d}", "image": _image_path(split, r), "question_type": t,
                    "conversations": _turns([(q + ANSWER_SUFFIX, a)], image=True)})
    return out


def _rows(world: Path, split: str) -> list[dict[str, Any]]:
    path = world / split / "scenes.jsonl"
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        if not {"image", "caption", "scene"} <= set(r):
            raise DataError(f"{path}, line {i + 1}: expected keys image, caption, scene; got {sorted(r)}")
    return rows


def write_llava_data(world: str | Path, seed: int = 0, heldout_per_type: int = 100) -> dict[str, Any]:
    """Write ``WORLD/llava/{pretrain,finetune,heldout}.json``; return what was written (for world.json)."""
    world = Path(world)
    train, val = _rows(world, "train"), _rows(world, "val")
    rng = random.Random(f"{seed}:llava")
    files = {
        "pretrain": pretrain_records(train, "train", rng),
        "finetune": finetune_records(train, "train", rng),
        "heldout": heldout_records(val, "val", rng, per_type=heldout_per_type),
    }
    info: dict[str, Any] = {"image_root": ".", "question_types": list(QUESTION_TYPES)}
    for name, records in files.items():
        write_json(world / "llava" / f"{name}.json", records)
        info[name] = {"path": f"llava/{name}.json", "records": len(records)}
    return info


def llm_texts(world: str | Path, seed: int = 0) -> list[str]:
    """Plain text of the toy world for the toy LLM: captions and question-answer pairs of the train split."""
    rng = random.Random(f"{seed}:llm-text")
    rows = _rows(Path(world), "train")
    texts = [r["caption"] for r in rows]
    for r in rows:
        for t, q, a in applicable(r["scene"], rng):
            mc = as_choice(t, q, a, rng) if rng.random() < 0.3 else None
            texts.append(f"{mc[0]} {mc[1]}" if mc else f"{q}{ANSWER_SUFFIX} {a}")
    texts += [f"{q} {a}" for q, a in TEXT_ONLY]
    return texts


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.llava_data", description=__doc__.split("\n")[0])
    parser.add_argument("--world", required=True, type=Path, help="toy world directory (from `toyworld build`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-per-type", type=int, default=100)
    args = parser.parse_args(argv)
    info = write_llava_data(args.world, args.seed, args.heldout_per_type)
    print({k: v["records"] for k, v in info.items() if isinstance(v, dict)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

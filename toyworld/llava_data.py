"""The toy world's LLaVA data: LLaVA-format JSON derived from the scene descriptions.

Written under ``WORLD/llava/`` (image paths relative to ``WORLD``, the image root), in the exact record
format of LCS-558K and llava_v1_5_mix665k, so ``llava_integration`` reads them like the real files:

- ``pretrain.json``: one caption record per training image (LCS-558K style: "<image>\\n<describe>" -> a
  caption naming every attribute, like LCS-558K's synthetic captions)
- ``finetune.json``: multi-turn question-answer records on the training images in mix665k's two answer
  styles: a single word ("Answer the question using a single word or phrase.") or, for closed-set
  questions, an option letter ("Answer with the option's letter from the given choices directly.", options
  listed "A. x" or "(A) x" as in MMVP / CV-Bench; half the closed-set turns), a quarter of them opening
  with an MMVP-style choice between two statements; detailed-description records for a third of the
  images; a few text-only records
- ``info.json``: the writer's format version, the seed and the record counts

Question types (answers are single words that need the picture): color, shape, count, position,
orientation, size, presence (of a dot / ring / letter), object (is there a <shape>; POPE-style), text
(which letter). The held-out questions of the same types, about new scenes, are the lmms-eval task
``toy_vqa`` (``toyworld.lmms_data``).

Each record asks at most one question whose answer is the shape (``SHAPE_TYPES``), first: every other
question names the shape, so otherwise a later turn could be answered from the text of an earlier one.

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
from genhancer.utils.fsio import read_json, read_jsonl, write_json
from toyworld.scene import (
    COLORS,
    COUNTS,
    FEATURES,
    FILLS,
    LETTERS,
    ORIENTATIONS,
    PATTERNS,
    POSITIONS,
    TEXTURES,
    VIEWPOINTS,
    Scene,
    statement,
    vocabularies,
)

QUESTION_TYPES: tuple[str, ...] = (
    "color",
    "shape",
    "count",
    "position",
    "orientation",
    "size",
    "presence",
    "object",
    "text",
)
# Types whose answer is the object's shape (or whether it is a given one). Every other question names the
# shape, so in a multi-turn record these come first and at most one of them is asked: a later turn could
# otherwise be answered by copying the shape from an earlier question instead of reading the picture.
SHAPE_TYPES: tuple[str, ...] = ("shape", "object")
# The shape that looks most like each shape (POPE's "adversarial" negative in a one-object world).
LOOKALIKE = {
    "arrow": "triangle",
    "triangle": "arrow",
    "square": "circle",
    "circle": "square",
    "star": "triangle",
}
ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
MMVP_QUESTION = "Which statement is true of the picture?"
DATA_FORMAT = "toy-llava/5"  # bump when the records change, so scripts rewrite stale files
LLM_TEXT_FORMAT = f"{DATA_FORMAT}+llm/2"  # bump when llm_texts changes, so a cached toy LLM is rebuilt
# Half the closed-set turns are multiple choice: answering by letter (CV-Bench, MMVP) is the harder habit
# for a small model to learn. A quarter of the records open with an MMVP-style statement choice.
CHOICE_FRACTION = 0.5
STATEMENT_FRACTION = 0.25
# Share of the other records that open with a POPE-style "Is there a <shape>?" turn: comparing a named
# shape with the picture is what a small model learns last.
OBJECT_FRACTION = 0.35
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# The option-letter drills (lookup_drill): answer sets to draw the options from, and the first user turn
# (where a description or an image would be).
LOOKUP_TYPES = ("color", "shape", "count", "position", "orientation", "size", "text")
LOOKUP_PROMPT = "Read the choices."
MARKS = ("dot", "ring", "letter")
# LCS-558K-style caption instructions (the plain template drops them; kept for the record format).
CAPTION_PROMPTS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Give a short and clear explanation of the subsequent image.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
)
DETAIL_PROMPTS = (
    "Describe the picture in detail.",
    "What is in the image? Describe everything you see.",
    "Give a detailed description of the image.",
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
        where = rng.choice(("are there", "are in the image"))
        return f"How many {_plural(shape)} {where}?", NUMBER_WORDS.get(count, str(count))
    if qtype == "position":
        if count != 1:
            return None
        if rng.random() < 0.5:
            return f"Where is the {shape} in the picture?", scene["position"]
        return f"Which part of the picture is the {shape} in?", scene["position"]
    if qtype == "size":
        # Only at the normal distance: close up or far away the apparent size says little.
        if count != 1 or scene.get("viewpoint", "normal") != "normal":
            return None
        return f"Is the {shape} large or small?", scene["size"]
    if qtype == "orientation":
        if not scene.get("orientation"):
            return None
        does = "does" if count == 1 else "do"
        return f"Which way {does} the {noun} point?", scene["orientation"]
    if qtype == "presence":
        present = scene.get("feature") or ("letter" if scene.get("text") else None)
        # Mostly about the mark that is there (if any), else a random one: about half the answers are yes.
        mark = present if present and rng.random() < 0.9 else rng.choice(MARKS)
        where = f"on the {shape}" if count == 1 else f"on the {noun}"
        return f"Is there a {mark} {where}?", "yes" if mark == present else "no"
    if qtype == "object":
        # POPE-style: half positives; negatives half the look-alike shape, half another one
        others = [s for s in vocabularies()["shapes"] if s != shape]
        asked = (
            shape if rng.random() < 0.5 else LOOKALIKE[shape] if rng.random() < 0.5 else rng.choice(others)
        )
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
        "color": v["colors"],
        "shape": v["shapes"],
        "count": [NUMBER_WORDS[c] for c in v["counts"]],
        "position": v["positions"],
        "orientation": v["orientations"],
        "size": v["sizes"],
        "text": v["letters"],
    }.get(qtype, [])


def as_choice(qtype: str, q: str, a: str, rng: random.Random) -> tuple[str, str] | None:
    """``q``/``a`` as a multiple-choice question answered by its option letter (2-4 options, MMVP "A. x" or
    CV-Bench "(A) x" listing), or None for yes/no types."""
    pool = [x for x in answer_set(qtype) if x != a]
    if not pool:
        return None
    options = [a, *rng.sample(pool, min(len(pool), rng.choice((1, 2, 3))))]
    rng.shuffle(options)
    mmvp = rng.random() < 0.5
    listing = option_listing(options, mmvp)
    prompt = f"{q}\n{listing}" if mmvp else f"{q}\nSelect from the following choices.\n{listing}"
    return prompt + LETTER_SUFFIX, option_letter(options, a)


def option_listing(options: Sequence[str], mmvp: bool) -> str:
    """One option per line, lettered from A: MMVP's "A. x" or CV-Bench's "(A) x"."""
    lines = (f"{chr(65 + i)}. {o}" if mmvp else f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
    return "\n".join(lines)


def option_letter(options: Sequence[str], option: str) -> str:
    return chr(65 + list(options).index(option))


_POSITION_WORDS = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
_VIEWPOINT_WORDS = {
    "normal": "seen from a normal distance",
    "close": "seen up close",
    "far": "seen from far away",
}


def describe(scene: dict[str, Any]) -> str:
    """A full description of ``scene`` in the answers' own words (what the toy LLM reads in place of a
    picture): "two large striped red arrows pointing up, in the center, with a black dot, seen up close,
    on a white background"."""
    count = int(scene.get("count", 1))
    look = (
        scene["texture"]
        if scene.get("fill") == "solid" and scene.get("texture") != "plain"
        else ("outlined" if scene.get("fill") == "outline" else "solid")
    )
    head = f"{NUMBER_WORDS[count]} {scene['size']} {look} {scene['color']} "
    head += scene["shape"] if count == 1 else _plural(scene["shape"])
    if scene.get("orientation"):
        head += f" pointing {scene['orientation']}"
    mark = (
        f"with a black {scene['feature']}"
        if scene.get("feature")
        else f"with the letter {scene['text']}"
        if scene.get("text")
        else "with no mark"
    )
    return ", ".join(
        (
            head,
            _POSITION_WORDS[scene["position"]],
            mark,
            _VIEWPOINT_WORDS[scene["viewpoint"]],
            f"on a {scene['background']} background",
        )
    )


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
    """One caption record per image. The caption is the scene's full description (:func:`describe`), the toy
    counterpart of LCS-558K's synthetic BLIP captions: every attribute is named, so the projector is taught
    to carry all of them (the world's alt-text captions name little more than shape and colour)."""
    return [
        {
            "id": f"{split}-cap-{i:06d}",
            "image": _image_path(split, r),
            "conversations": [
                {"from": "human", "value": "<image>\n" + rng.choice(CAPTION_PROMPTS)},
                {"from": "gpt", "value": describe(r["scene"])},
            ],
        }
        for i, r in enumerate(rows)
    ]


# The scene attribute each question type asks about (a statement turn on that attribute is not repeated).
_ATTRIBUTE = {
    "color": "color",
    "count": "count",
    "position": "position",
    "orientation": "orientation",
    "size": "size",
    "presence": "feature",
    "text": "text",
}


def _alternative(scene: Scene, attr: str, rng: random.Random) -> Scene | None:
    """``scene`` with ``attr`` changed to another value that keeps it valid, or None where there is none."""
    if attr != "count" and scene.count != 1:
        return None
    pool = {
        "orientation": ORIENTATIONS if scene.orientation else (),
        "feature": (None, *FEATURES) if scene.text is None else (),
        "fill": FILLS if scene.texture == "plain" else (),
        "count": COUNTS if scene.position == "center" else (),
        "position": POSITIONS,
        "color": COLORS,
        "texture": TEXTURES if scene.fill == "solid" else (),
        "text": LETTERS if scene.text else (),
        "viewpoint": VIEWPOINTS,
    }[attr]
    others = [v for v in pool if v != getattr(scene, attr)]
    return scene.replace(**{attr: rng.choice(others)}) if others else None


def statement_choice(scene_dict: dict[str, Any], rng: random.Random) -> tuple[str, str, str] | None:
    """An MMVP-style turn: which of two statements (one per value of an attribute) is true of the picture?
    Returns (prompt with the letter suffix, answer letter, the attribute), or None where no pattern
    applies."""
    scene = Scene.from_dict(scene_dict)
    patterns = list(PATTERNS)
    rng.shuffle(patterns)
    for pattern in patterns:
        attr = PATTERNS[pattern]
        alt = _alternative(scene, attr, rng)
        if alt is None:
            continue
        true, false = statement(scene, pattern), statement(alt, pattern)
        options = [true, false] if rng.random() < 0.5 else [false, true]
        listing = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))
        return f"{MMVP_QUESTION}\n{listing}{LETTER_SUFFIX}", chr(65 + options.index(true)), attr
    return None


def conversation(
    scene: dict[str, Any],
    rng: random.Random,
    turns: int,
    choice_fraction: float,
    statement_fraction: float,
    object_fraction: float = OBJECT_FRACTION,
) -> list[tuple[str, str]]:
    """The (question with its answer-style suffix, answer) turns of one finetuning record.

    At most one shape-revealing turn (``SHAPE_TYPES``, or an MMVP-style statement turn), and it comes first:
    every other question names the shape, so a shape question after it could be answered from the text.
    """
    qas = applicable(scene, rng)
    rng.shuffle(qas)
    stmt = statement_choice(scene, rng) if rng.random() < statement_fraction else None
    if stmt is not None:
        qas = [qa for qa in qas if qa[0] not in SHAPE_TYPES and _ATTRIBUTE.get(qa[0]) != stmt[2]][: turns - 1]
    elif rng.random() < object_fraction:
        obj = next(qa for qa in qas if qa[0] == "object")
        qas = [obj] + [qa for qa in qas if qa[0] not in SHAPE_TYPES][: turns - 1]
    else:
        shape_qas = [qa for qa in qas[:turns] if qa[0] in SHAPE_TYPES][:1]
        qas = shape_qas + [qa for qa in qas if qa[0] not in SHAPE_TYPES][: turns - len(shape_qas)]
    pairs = [stmt[:2]] if stmt is not None else []
    for t, q, a in qas:
        mc = as_choice(t, q, a, rng) if rng.random() < choice_fraction else None
        pairs.append(mc or (q + ANSWER_SUFFIX, a))
    return pairs


def finetune_records(
    rows: Sequence[dict[str, Any]],
    split: str,
    rng: random.Random,
    turns: int = 3,
    text_only_every: int = 50,
    choice_fraction: float = CHOICE_FRACTION,
    statement_fraction: float = STATEMENT_FRACTION,
    describe_every: int = 3,
) -> list[dict[str, Any]]:
    """``choice_fraction`` of the closed-set turns are asked as multiple choice (answered by letter);
    ``statement_fraction`` of the records open with an MMVP-style statement choice; every
    ``describe_every``-th image also gets a detailed-description record of its own (as LLaVA-Instruct's
    detailed descriptions sit beside the question answering in mix665k)."""
    out = []
    for i, r in enumerate(rows):
        pairs = conversation(r["scene"], rng, turns, choice_fraction, statement_fraction)
        out.append(
            {
                "id": f"{split}-qa-{i:06d}",
                "image": _image_path(split, r),
                "conversations": _turns(pairs, image=True),
            }
        )
        if describe_every and i % describe_every == 0:
            out.append(
                {
                    "id": f"{split}-detail-{i:06d}",
                    "image": _image_path(split, r),
                    "conversations": _turns([(rng.choice(DETAIL_PROMPTS), describe(r["scene"]))], image=True),
                }
            )
        if text_only_every and i % text_only_every == text_only_every - 1:
            q, a = rng.choice(TEXT_ONLY)
            out.append(
                {
                    "id": f"{split}-text-{i:06d}",
                    "conversations": _turns([(q + ANSWER_SUFFIX, a)], image=False),
                }
            )
    return out


def scene_rows(world: Path, split: str) -> list[dict[str, Any]]:
    """The records of WORLD/SPLIT/scenes.jsonl; a record without image, caption and scene is a DataError."""
    path = world / split / "scenes.jsonl"
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        if not {"image", "caption", "scene"} <= set(r):
            raise DataError(f"{path}, line {i + 1}: expected keys image, caption, scene; got {sorted(r)}")
    return rows


def write_llava_data(world: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write ``WORLD/llava/{pretrain,finetune}.json`` and ``info.json``; return the info (for world.json)."""
    world = Path(world)
    train = scene_rows(world, "train")
    rng = random.Random(f"{seed}:llava")
    files = {
        "pretrain": pretrain_records(train, "train", rng),
        "finetune": finetune_records(train, "train", rng),
    }
    info: dict[str, Any] = {
        "format": DATA_FORMAT,
        "seed": seed,
        "image_root": ".",
        "question_types": list(QUESTION_TYPES),
    }
    for name, records in files.items():
        write_json(world / "llava" / f"{name}.json", records)
        info[name] = {"path": f"llava/{name}.json", "records": len(records)}
    write_json(world / "llava" / "info.json", info)
    return info


def is_current(world: str | Path, seed: int) -> bool:
    """Whether ``WORLD/llava`` was written by this version of the writer with ``seed``."""
    path = Path(world) / "llava" / "info.json"
    if not path.is_file():
        return False
    info = read_json(path)
    return info.get("format") == DATA_FORMAT and info.get("seed") == seed


def chat_text(description: str, pairs: Sequence[tuple[str, str]]) -> str:
    """A LLaVA-1.5 (vicuna_v1) conversation whose first user turn opens with ``description`` where a LLaVA
    conversation has its image; the final end-of-turn is left to the packer's EOS."""
    from llava_integration.templates import get_template, render_with_spans

    messages = []
    for i, (q, a) in enumerate(pairs):
        messages += [
            {"role": "user", "content": f"{description}\n{q}" if i == 0 else q},
            {"role": "assistant", "content": a},
        ]
    text, _ = render_with_spans(get_template("vicuna_v1").chat_template, messages)
    return text.removesuffix("</s>")


# Lead-ins of a moved description (``moved_description``): the attributes no longer stand at fixed places.
LEAD_INS = ("", "the picture shows", "in this image there is", "here we see", "a photo of")


def moved_description(description: str, rng: random.Random, lead: str | None = None) -> str:
    """``description`` with its clauses in a random order after a random lead-in ("in this image there is
    on a white background, two large solid red arrows pointing up, in the center, ..."). The toy LLM learns
    from descriptions in :func:`describe`'s fixed order and may read an attribute partly by where it
    stands instead of what it says; ``toyworld check-llm`` measures that (type ``moved``). ``lead``: the
    lead-in (default: one of ``LEAD_INS`` at random)."""
    clauses = description.split(", ")
    rng.shuffle(clauses)
    lead = rng.choice(LEAD_INS) if lead is None else lead
    return f"{lead} {', '.join(clauses)}" if lead else ", ".join(clauses)


def lookup_drill(rng: random.Random) -> str:
    """A text-only conversation that asks for the letter of a named option: the 2-4 options of one answer
    set listed as in the finetuning data ("A. x" or "(A) x"), then "Which choice says <x>?" and the letter
    suffix, answered by the letter. The half of multiple choice that needs no reading (find the option, give
    its letter): ``toyworld check-llm`` asks it as type ``lookup``."""
    pool = answer_set(rng.choice(LOOKUP_TYPES))
    options = rng.sample(pool, min(len(pool), rng.choice((2, 3, 4))))
    answer = rng.choice(options)
    question = f"{option_listing(options, rng.random() < 0.5)}\nWhich choice says {answer}?{LETTER_SUFFIX}"
    return chat_text(LOOKUP_PROMPT, [(question, option_letter(options, answer))])


def balanced_drills(rows: Sequence[dict[str, Any]], qtypes: Sequence[str], rng: random.Random) -> list[str]:
    """Reading drills for question types whose answers are unevenly common: per type, the scenes of ``rows``
    it applies to, every answer kept as often as the rarest one, each scene asked once free-form and once by
    letter (``as_choice``), answered from the scene's description. Size is "large" in 70% of the scenes: an
    LLM that always says "large" is right that often, and the toy LLM stays there unless the answers are
    balanced. A type without a closed answer set (yes/no) is a ValueError."""
    texts = []
    for qtype in qtypes:
        if not answer_set(qtype):
            raise ValueError(f"balanced drills need a closed-set question type, not {qtype!r}")
        by_answer: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for r in rows:
            qa = question(r["scene"], qtype, rng)
            if qa is not None:
                by_answer.setdefault(qa[1], []).append((r["scene"], qa[0]))
        least = min(len(by_answer.get(a, ())) for a in answer_set(qtype))  # 0 if an answer never occurs
        for answer, items in sorted(by_answer.items()):
            for scene, q in rng.sample(items, least):
                text = describe(scene)
                texts.append(chat_text(text, [(q + ANSWER_SUFFIX, answer)]))
                texts.append(chat_text(text, [as_choice(qtype, q, answer, rng)]))
    return texts


def llm_texts(
    world: str | Path, seed: int = 0, turns: int = 3, drills: int = 1, balanced: Sequence[str] = ()
) -> list[str]:
    """The toy LLM's text, from the train split, shuffled: the captions; per scene one conversation in the
    LLaVA finetuning format whose questions are answered from a full description of the scene (the toy
    stand-in for an instruction-tuned LLM such as Vicuna: it can answer questions about what is in its
    context); ``drills`` option-letter drills per scene (``lookup_drill``), so the LLM knows how to give
    the letter of the option it means before finetuning asks it to; and reading drills with balanced
    answers for the question types in ``balanced`` (``balanced_drills``)."""
    rng = random.Random(f"{seed}:llm-text")
    rows = scene_rows(Path(world), "train")
    texts = [r["caption"] for r in rows]
    for r in rows:
        pairs = conversation(r["scene"], rng, turns, CHOICE_FRACTION, STATEMENT_FRACTION)
        texts.append(chat_text(describe(r["scene"]), pairs))
    texts += [f"{q} {a}" for q, a in TEXT_ONLY]
    texts += [lookup_drill(rng) for _ in range(drills * len(rows))]
    texts += balanced_drills(rows, balanced, random.Random(f"{seed}:balanced-drills"))
    rng.shuffle(texts)
    return texts


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.llava_data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world", required=True, type=Path, help="toy world directory (from `toyworld build`)"
    )
    parser.add_argument("--seed", type=int, help="default: the world's seed (world.json)")
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="do nothing when the files are already this writer's, with this seed",
    )
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        seed = int(
            read_json(
                args.world / "world.json",
                missing=f"{args.world}/world.json not found: build the "
                "world first (python -m toyworld build --out DIR)",
            ).get("seed", 0)
        )
    if args.if_stale and is_current(args.world, seed):
        print(f"{args.world}/llava is up to date")
        return 0
    info = write_llava_data(args.world, seed)
    print({k: v["records"] for k, v in info.items() if isinstance(v, dict)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

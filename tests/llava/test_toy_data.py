"""The toy world's LLaVA JSON: no shortcut through the question text, MMVP-style statement turns,
staleness."""

from __future__ import annotations

import json
import random
import re

from toyworld.llava_data import (
    DATA_FORMAT,
    MMVP_QUESTION,
    SHAPE_TYPES,
    conversation,
    is_current,
    question,
    statement_choice,
    write_llava_data,
)
from toyworld.scene import SHAPES, Scene, sample_scene


def _kind(q: str) -> str:
    """shape / object / statement for the turns whose answer gives the shape away, else other."""
    if q.startswith("What shape"):
        return "shape"
    if q.startswith(MMVP_QUESTION):
        return "statement"
    m = re.match(r"Is there an? (\w+) in the image\?", q)
    return "object" if m and m.group(1) in SHAPES else "other"


def test_no_turn_can_copy_the_shape_from_an_earlier_question():
    rng = random.Random(0)
    first = []
    for _ in range(400):
        scene = sample_scene(rng).to_dict()
        pairs = conversation(scene, rng, turns=3, choice_fraction=0.3, statement_fraction=0.25)
        assert 1 <= len(pairs) <= 3
        assert [_kind(q) for q, _ in pairs[1:]] == ["other"] * (len(pairs) - 1)
        first.append(_kind(pairs[0][0]))
    # shape-revealing turns are neither always first nor rare
    assert 100 < sum(k != "other" for k in first) < 380 and {"shape", "object", "statement"} <= set(first)


def test_statement_choice_answers_the_true_statement():
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        scene = sample_scene(rng, count=1)
        out = statement_choice(scene.to_dict(), rng)
        assert out is not None
        prompt, letter, attr = out
        seen.add(attr)
        lines = prompt.split("\n")
        assert lines[0] == MMVP_QUESTION and lines[1].startswith("A. ") and lines[2].startswith("B. ")
        chosen = lines[1 if letter == "A" else 2][3:]
        other = lines[2 if letter == "A" else 1][3:]
        assert chosen != other
        from toyworld.scene import PATTERNS, statement

        pattern = next(p for p, a in PATTERNS.items() if a == attr)
        assert chosen == statement(scene, pattern)
    assert len(seen) >= 7  # most MMVP patterns are asked


def test_size_is_asked_only_at_the_normal_distance():
    rng = random.Random(2)
    assert question(Scene(size="small").to_dict(), "size", rng) == ("Is the circle large or small?", "small")
    assert question(Scene(viewpoint="close").to_dict(), "size", rng) is None
    assert question(Scene(count=2).to_dict(), "size", rng) is None
    assert set(SHAPE_TYPES) == {"shape", "object"}


def test_writer_marks_its_format(llava_world):
    info = json.loads((llava_world / "llava" / "info.json").read_text())
    assert info["format"] == DATA_FORMAT and info["finetune"]["records"] > 0
    assert is_current(llava_world, 0) and not is_current(llava_world, 1)
    assert not (llava_world / "llava" / "heldout.json").exists()  # held-out questions are the toy_vqa task


def test_rewrite_with_another_seed(tmp_path, llava_world):
    import shutil

    world = tmp_path / "w"
    shutil.copytree(llava_world, world)
    write_llava_data(world, seed=1)
    assert is_current(world, 1) and not is_current(world, 0)


def test_description_names_every_answer_and_feeds_captions_and_detail_records(llava_world):
    from toyworld.llava_data import NUMBER_WORDS, describe

    scene = Scene(
        shape="arrow",
        color="blue",
        size="small",
        orientation="left",
        position="top",
        feature="ring",
        viewpoint="close",
        background="gray",
    ).to_dict()
    text = describe(scene)
    assert text == (
        "one small solid blue arrow pointing left, at the top, with a black ring, seen up close, "
        "on a gray background"
    )
    three = describe(Scene(count=3, text="T", fill="outline").to_dict())
    assert three.startswith(f"{NUMBER_WORDS[3]} large outlined red circles") and "with the letter T" in three
    pre = json.loads((llava_world / "llava" / "pretrain.json").read_text())
    rows = [json.loads(line) for line in (llava_world / "train" / "scenes.jsonl").read_text().splitlines()]
    assert pre[0]["conversations"][1]["value"] == describe(rows[0]["scene"])
    fin = json.loads((llava_world / "llava" / "finetune.json").read_text())
    detail = [r for r in fin if "-detail-" in r["id"]]
    assert len(detail) == (len(rows) + 2) // 3 and all(len(r["conversations"]) == 2 for r in detail)

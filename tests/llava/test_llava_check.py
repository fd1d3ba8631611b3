"""check-llava: the toy LLaVA's dev check on val images, free-form and by the option's letter."""

from __future__ import annotations

import json
import random
import re

import pytest


def test_dev_items_ask_every_type_of_val_scenes_free_form_and_by_letter(llava_world):
    from toyworld.llava_check import MC, dev_items
    from toyworld.llava_data import answer_set, applicable

    items = dev_items(llava_world, n=12)
    val = [json.loads(line) for line in (llava_world / "val" / "scenes.jsonl").open()][:12]
    assert {it["image"] for it in items} == {r["image"] for r in val}  # val images only, every one asked
    for row in val:
        mine = [it for it in items if it["image"] == row["image"]]
        free = {it["type"] for it in mine if not it["type"].endswith(MC)}
        assert free == {t for t, _, _ in applicable(row["scene"], random.Random(0))}
        assert {it["type"] for it in mine if it["type"].endswith(MC)} == {
            t + MC for t in free if answer_set(t)
        }
    for it in (it for it in items if it["type"].endswith(MC)):
        options = re.findall(r"^\(([A-D])\) (.+)$", it["question"], flags=re.M)
        assert it["answer"] in {letter for letter, _ in options}
        assert len(options) == 2 if it["type"] in ("size_mc", "position_mc") else 2 <= len(options) <= 3
        assert it["question"].endswith("Answer with the option's letter from the given choices directly.")
    assert dev_items(llava_world, n=12) == items  # deterministic


def test_scores_are_the_first_word_against_the_answer(monkeypatch, llava_world, assembled_dir):
    import toyworld.llava_check as check

    items = check.dev_items(llava_world, n=6)
    gold = [it["answer"] + "." for it in items]  # "Red." / "B." count as the answer
    monkeypatch.setattr(check, "greedy_answers", lambda *a, **k: gold)
    right = check.run(assembled_dir, llava_world, 6)
    assert {t: r["accuracy"] for t, r in right["types"].items()} == dict.fromkeys(right["types"], 1.0)
    monkeypatch.setattr(check, "greedy_answers", lambda *a, **k: ["zzz"] * len(items))
    wrong = check.run(assembled_dir, llava_world, 6)
    assert {r["accuracy"] for r in wrong["types"].values()} == {0.0}
    assert {t: len(h) for t, h in wrong["hits"].items()} == {t: r["n"] for t, r in wrong["types"].items()}


@pytest.mark.slow
def test_check_llava_runs_a_real_llava_and_writes_the_hits(tmp_path, llava_world, assembled_dir, capsys):
    from toyworld.llava_check import main

    out = tmp_path / "dev.json"
    assert (
        main(["--model", str(assembled_dir), "--world", str(llava_world), "--n", "3", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert result["n_scenes"] == 3 and "color_mc" in result["types"]
    for t, r in result["types"].items():
        assert r["accuracy"] == sum(result["hits"][t]) / r["n"]
    assert "question type" in capsys.readouterr().out


def test_check_llava_names_a_missing_model_dir(tmp_path, llava_world, capsys):
    from toyworld.llava_check import main

    assert main(["--model", str(tmp_path / "nope"), "--world", str(llava_world)]) == 2
    assert f"{tmp_path / 'nope'}: no config.json" in capsys.readouterr().err


def test_a_corrupt_val_image_is_named(tmp_path, llava_world, assembled_dir, capsys):
    import shutil

    from toyworld.llava_check import main

    world = tmp_path / "world"
    shutil.copytree(llava_world, world)
    first = json.loads((world / "val" / "scenes.jsonl").open().readline())["image"]
    (world / "val" / first).write_bytes(b"not a png")
    assert main(["--model", str(assembled_dir), "--world", str(world), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{world / 'val' / first}: cannot read this val image" in err and "toyworld build" in err

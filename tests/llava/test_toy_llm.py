"""The toy LLM: whole-document batches, the texts it learns from, and its build cache."""

from __future__ import annotations

import pytest

from toyworld.llava_data import DATA_FORMAT, LLM_TEXT_FORMAT, describe, llm_texts
from toyworld.llm import ToyLlmConfig, build_toy_llm, document_batch, is_cached


def test_document_batch_pads_and_masks_whole_documents():
    ids, labels = document_batch([[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 9, 9, 9, 2]], pad_id=2, seq_len=5)
    assert ids.tolist() == [[1, 5, 6, 2, 2], [1, 7, 2, 2, 2], [1, 8, 9, 9, 9]]
    assert labels.tolist() == [[1, 5, 6, 2, -100], [1, 7, 2, -100, -100], [1, 8, 9, 9, 9]]


def _clauses(description: str) -> list[str]:
    """The clauses of a description, in order or moved (its lead-in dropped), sorted."""
    from toyworld.llava_data import LEAD_INS

    lead = next((x for x in LEAD_INS if x and description.startswith(x + " ")), "")
    return sorted(description.removeprefix(f"{lead} " if lead else "").split(", "))


def test_a_moved_description_keeps_every_clause_in_another_order_after_a_lead_in():
    import random

    from toyworld.llava_data import LEAD_INS, moved_description

    scene = {"count": 2, "size": "large", "fill": "solid", "texture": "striped", "color": "red"}
    scene |= {"shape": "arrow", "orientation": "up", "position": "center", "feature": "dot"}
    scene |= {"viewpoint": "close", "background": "white"}
    text = describe(scene)
    rng = random.Random(0)
    moved = [moved_description(text, rng) for _ in range(50)]
    assert all(_clauses(m) == _clauses(text) for m in moved)
    assert sum(m == text for m in moved) < 10  # rarely left as it was
    assert {next((x for x in LEAD_INS if x and m.startswith(x + " ")), "") for m in moved} == set(LEAD_INS)
    heads = {next(i for i, c in enumerate(m.split(", ")) if "arrows" in c) for m in moved}
    assert len(heads) >= 4  # the shape no longer stands at one place


def test_texts_are_captions_conversations_about_a_description_and_letter_drills(llava_world):
    import json
    import re

    from toyworld.llava_data import LETTER_SUFFIX, LOOKUP_PROMPT, TEXT_ONLY

    rows = [json.loads(line) for line in (llava_world / "train" / "scenes.jsonl").read_text().splitlines()]
    texts = llm_texts(llava_world)
    assert texts != llm_texts(llava_world, seed=1)  # the seed draws the questions, drills and order
    assert len(texts) == 3 * len(rows) + len(TEXT_ONLY)
    assert texts[: len(rows)] != [r["caption"] for r in rows]  # shuffled, so no kind comes in one block
    assert {r["caption"] for r in rows} <= set(texts)
    chats = [t for t in texts if t.startswith("A chat between a curious user")]
    drills = [c for c in chats if f"USER: {LOOKUP_PROMPT}\n" in c]
    assert len(drills) == len(chats) - len(rows) == len(rows)
    for r in rows:  # the other conversations are about a scene's description
        chat = next(c for c in chats if f"USER: {describe(r['scene'])}\n" in c)
        assert "ASSISTANT:" in chat and not chat.endswith("</s>")  # the packer adds the end-of-document token
    for d in drills:  # the letter answered is the one listed beside the option asked for
        asked = re.search(r"Which choice says (.+)\?" + re.escape(LETTER_SUFFIX), d).group(1)
        letter = d.rsplit("ASSISTANT: ", 1)[1]
        assert re.search(rf"^\(?{letter}[.)] {re.escape(asked)}$", d, re.M), d
    more = llm_texts(llava_world, drills=3)  # drills_per_scene: only the number of drills changes
    assert len(more) == 5 * len(rows) + len(TEXT_ONLY)
    assert sum(f"USER: {LOOKUP_PROMPT}\n" in t for t in more) == 3 * len(rows)


def test_balanced_drills_ask_every_answer_equally_often_free_form_and_by_letter():
    import random
    import re
    from collections import Counter

    from toyworld.llava_data import LETTER_SUFFIX, balanced_drills
    from toyworld.scene import sample_scene

    rng = random.Random(0)
    # three copies: no size question
    fixed = [("star", 1, "large")] * 7 + [("circle", 1, "small")] * 3 + [("arrow", 3, "small")]
    scenes = [sample_scene(rng, shape=sh, count=n, size=sz, viewpoint="normal") for sh, n, sz in fixed]
    rows = [{"scene": s.to_dict()} for s in scenes]
    texts = balanced_drills(rows, ["size"], rng)
    free = [t for t in texts if not t.endswith(tuple("ABCD"))]
    letter = [t for t in texts if t not in free]
    assert len(free) == len(letter) == 6  # the 3 small scenes and 3 of the 7 large ones, each asked twice
    assert Counter(t.rsplit("ASSISTANT: ", 1)[1] for t in free) == {"large": 3, "small": 3}
    for t in letter:  # the letter answered is the one listed beside the scene's size
        size = "large" if "USER: one large " in t else "small"
        answer = t.rsplit("ASSISTANT: ", 1)[1]
        assert LETTER_SUFFIX in t and re.search(rf"^\(?{answer}[.)] {size}$", t, re.M), t
    assert "arrows" not in "".join(texts)
    with pytest.raises(ValueError, match="closed-set question type, not 'object'"):
        balanced_drills(rows, ["object"], rng)


def test_balanced_drills_are_added_to_the_llm_texts(llava_world):
    import random

    from toyworld.llava_data import answer_set, question, scene_rows

    asked = [question(r["scene"], "shape", random.Random(0)) for r in scene_rows(llava_world, "train")]
    least = min([qa[1] for qa in asked].count(s) for s in answer_set("shape"))
    plain, drilled = llm_texts(llava_world), llm_texts(llava_world, balanced=["shape"])
    assert least > 0 and len(drilled) - len(plain) == 2 * len(answer_set("shape")) * least
    assert set(plain) <= set(drilled)
    # every size in this world is "large": no answer to balance it against, so nothing is added
    assert llm_texts(llava_world, balanced=["size"]) == plain


def test_balanced_drills_must_name_closed_set_types(tmp_path, llava_world):
    from genhancer.utils.errors import ConfigError
    from toyworld.llm import build_until_skilled

    with pytest.raises(ConfigError, match=r"^balanced_drills: \['presence'\] are not closed-set .*size"):
        cfg = ToyLlmConfig(balanced_drills=("presence",))
        build_until_skilled(llava_world, tmp_path / "llm", cfg, LLM_TEXT_FORMAT)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_build_is_cached_per_world_config_and_text_format(tmp_path, llava_world):
    cfg = ToyLlmConfig(
        vocab_size=400,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        steps=2,
        batch_size=2,
    )
    out = build_toy_llm(
        llm_texts(llava_world)[:200],
        tmp_path / "llm",
        cfg,
        parents=[llava_world],
        extra={"data_format": LLM_TEXT_FORMAT},
        check_world=llava_world,
    )
    assert is_cached(out, llava_world, cfg, LLM_TEXT_FORMAT)
    from genhancer.utils.provenance import read_provenance
    from toyworld.llm_check import CHOICE, LOOKUP, MOVED, TYPES

    text_qa = read_provenance(out)["extra"]["text_qa"]  # the trained model's answers from a description
    kinds = {CHOICE, LOOKUP, MOVED}
    assert {"color", "shape", "object", *kinds} <= set(text_qa) <= {*TYPES, *kinds}
    assert all(
        r["n"] > 0 and r["accuracy"] in [k / r["n"] for k in range(r["n"] + 1)] for r in text_qa.values()
    )
    assert not is_cached(out, llava_world, ToyLlmConfig(**{**cfg.__dict__, "steps": 3}), LLM_TEXT_FORMAT)
    assert not is_cached(out, llava_world, cfg, "toy-llava/0")
    assert not is_cached(out, llava_world, cfg, DATA_FORMAT)  # an LLM from the texts before the drills
    assert not is_cached(out, tmp_path, cfg, LLM_TEXT_FORMAT)


@pytest.mark.slow
def test_the_skill_curve_watches_training_without_changing_it(tmp_path, llava_world):
    from safetensors.torch import load_file

    from genhancer.utils.provenance import read_provenance
    from toyworld.llm_check import LOOKUP

    texts = llm_texts(llava_world)[:200]
    tiny = dict(vocab_size=400, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)
    tiny |= dict(num_kv_heads=1, steps=5, batch_size=2, seed=3)
    watched = ToyLlmConfig(**tiny, check_every=2, check_scenes=4)
    out = build_toy_llm(texts, tmp_path / "watched", watched, check_world=llava_world)
    plain = build_toy_llm(texts, tmp_path / "plain", ToyLlmConfig(**tiny))
    curve = read_provenance(out)["extra"]["skill_curve"]
    assert [p["step"] for p in curve] == [2, 4, 5]  # every check_every steps, and the end
    quarters = [k / 4 for k in range(5)]  # one question per type about each of 4 scenes
    assert all(p["object"] in quarters and p[LOOKUP] in quarters for p in curve)
    assert (out / "skill_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (plain / "skill_curve.png").exists()
    weights, reference = load_file(out / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all((weights[k] == reference[k]).all() for k in reference)  # the checks draw no random numbers


# ------------------------------------------------------------------ check-llm: answering from a description
def test_text_qa_items_put_the_description_where_the_image_goes(llava_world):
    from toyworld.llm_check import CHOICE, LOOKUP, MOVED, TYPES, text_qa_items

    items = text_qa_items(llava_world, n=20)
    types = {it["type"] for it in items}
    assert {"color", "shape", "object", CHOICE, LOOKUP, MOVED} <= types <= {*TYPES, CHOICE, LOOKUP, MOVED}
    for it in items:
        assert it["prompt"].startswith("A chat between a curious user")
        assert it["prompt"].endswith("ASSISTANT:")
        assert it["answer"] and not it["prompt"].endswith(it["answer"] + " ASSISTANT:")
        first_turn = it["prompt"].split("USER: ")[1]
        if it["type"] == LOOKUP:  # the option list, then the question naming one option
            named = first_turn.split("Which choice says ")[1].split("?")[0]
            assert f"\n{it['answer']}. {named}\n" in first_turn or f"({it['answer']}) {named}\n" in first_turn
            continue
        description = first_turn.split("\n")[0]
        assert "on a " in description  # the scene, in words
        if it["type"] == MOVED:  # the shape asked about a moved description
            assert it["answer"] in description and first_turn.split("\n")[1].startswith("What shape")
        else:
            assert description.endswith("background")
    moved = [it for it in items if it["type"] == MOVED]
    assert (
        len(moved) == 20
        and sum(it["prompt"].split("USER: ")[1].startswith(("one ", "two ", "three ")) for it in moved) < 10
    )
    assert {it["answer"] for it in items if it["type"] == "object"} == {"yes", "no"}
    choices = [it for it in items if it["type"] == CHOICE]  # one multiple-choice question per scene
    assert len(choices) == 20 and {it["answer"] for it in choices} <= set("ABCD")
    for it in choices:
        assert f"\n{it['answer']}. " in it["prompt"] or f"\n({it['answer']}) " in it["prompt"]


def test_score_is_first_word_accuracy_per_type_with_the_majority_rate():
    from toyworld.llm_check import first_word, score

    items = [
        {"type": "object", "answer": "yes"},
        {"type": "object", "answer": "no"},
        {"type": "object", "answer": "no"},
        {"type": "color", "answer": "blue"},
    ]
    assert first_word(" Blue. it is") == "blue" and first_word("") == ""
    perfect = score(items, ["yes", "No.", "no", "blue"])
    assert perfect["object"] == {"accuracy": 1.0, "n": 3, "majority": 2 / 3}
    always_no = score(items, ["no", "no", "no", "red"])
    assert always_no["object"]["accuracy"] == pytest.approx(2 / 3) and always_no["color"]["accuracy"] == 0.0
    with pytest.raises(ValueError, match="4 items but 3 replies"):
        score(items, ["no"] * 3)


def test_missing_skills_names_each_needed_skill_not_beating_the_majority_by_the_margin():
    from toyworld.llm_check import LOOKUP, MIN_GAIN, missing_skills

    ok = {"object": {"accuracy": 1.0, "majority": 0.52}, LOOKUP: {"accuracy": 0.79, "majority": 0.39}}
    assert missing_skills(ok) == []
    weak = {**ok, LOOKUP: {"accuracy": 0.39 + MIN_GAIN - 0.01, "majority": 0.39}, "color": ok["object"]}
    (line,) = missing_skills(weak)
    assert line.startswith("lookup 0.58 (majority 0.39)") and "multiple choice" in line
    assert [m.split()[0] for m in missing_skills({**weak, "object": weak[LOOKUP]})] == ["object", "lookup"]


def test_check_llm_names_a_missing_model_dir(tmp_path, llava_world, capsys):
    from toyworld.llm_check import main

    assert main(["--llm", str(tmp_path / "nope"), "--world", str(llava_world)]) == 2
    assert f"{tmp_path / 'nope'}: no config.json" in capsys.readouterr().err


def test_check_llm_refuses_an_empty_sample(tmp_path, llava_world, capsys):
    from toyworld.llm_check import main

    with pytest.raises(SystemExit) as e:
        main(["--llm", str(tmp_path), "--world", str(llava_world), "--n", "0"])
    assert e.value.code == 2 and "--n must be at least 1" in capsys.readouterr().err


def _fake_checks(monkeypatch, skills_per_attempt):
    """check-llm replaced by results in which attempt k has skills_per_attempt[k] of the two needed skills."""
    import toyworld.llm_check as llm_check

    calls = iter(skills_per_attempt)

    def check_text_qa(model, tokenizer, world):
        have = next(calls)
        return {
            t: {"accuracy": 1.0 if i < have else 0.5, "n": 10, "majority": 0.5}
            for i, t in enumerate(llm_check.NEEDED)
        }

    monkeypatch.setattr(llm_check, "check_text_qa", check_text_qa)


@pytest.mark.parametrize(("skills", "kept"), [([0, 2, 2], 4), ([1, 0, 1], 3), ([2, 0, 0], 3)])
def test_attempts_keep_the_first_instance_with_the_skills_else_the_fewest_missing(
    tmp_path, llava_world, monkeypatch, skills, kept
):
    from genhancer.utils.provenance import read_provenance
    from toyworld.llm import build_until_skilled

    _fake_checks(monkeypatch, skills)
    cfg = ToyLlmConfig(
        vocab_size=400, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
        steps=0, seed=3, attempts=3, max_texts=200,
    )  # fmt: skip
    out = build_until_skilled(llava_world, tmp_path / "llm", cfg, LLM_TEXT_FORMAT)
    prov = read_provenance(out)
    tried = [a["seed"] for a in prov["extra"]["attempts"]]
    assert tried == ([3, 4] if skills[1] == 2 else [3] if skills[0] == 2 else [3, 4, 5])
    assert prov["extra"]["seed_kept"] == kept
    assert [len(a["missing"]) for a in prov["extra"]["attempts"]] == [2 - s for s in skills[: len(tried)]]
    assert is_cached(out, llava_world, cfg, LLM_TEXT_FORMAT)  # the requested config, not the attempt's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm"]  # the other attempts are removed


@pytest.mark.parametrize(
    ("key", "value", "least"),
    [("attempts", 0, 1), ("drills_per_scene", -1, 0), ("check_every", -2, 0), ("check_scenes", 0, 1)],
)
def test_bounded_keys_are_named_before_any_training(tmp_path, llava_world, key, value, least):
    from genhancer.utils.errors import ConfigError
    from toyworld.llm import build_until_skilled

    with pytest.raises(ConfigError, match=rf"^{key} must be >= {least} \(.*\), got {value}$"):
        build_until_skilled(llava_world, tmp_path / "llm", ToyLlmConfig(**{key: value}), LLM_TEXT_FORMAT)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written

"""The toy world's lmms-eval parquet files: real benchmark layouts, held-out scenes, deterministic."""

from __future__ import annotations

import json

import pandas as pd

from toyworld.llava_data import QUESTION_TYPES
from toyworld.lmms_data import write_lmms_data


def test_layouts_and_balance(toy_world):
    root = toy_world / "lmms"
    mmvp = pd.read_parquet(root / "toy_mmvp" / "test.parquet")
    assert list(mmvp.columns)[:4] == ["Index", "Question", "Options", "Correct Answer"]
    assert len(mmvp) == 9 * 2 * 2 and list(mmvp["Index"]) == list(range(1, len(mmvp) + 1))
    for k in range(0, len(mmvp), 2):  # a pair: same question and options, opposite answers
        a, b = mmvp.iloc[k], mmvp.iloc[k + 1]
        assert a["Options"] == b["Options"] and {a["Correct Answer"], b["Correct Answer"]} == {"(a)", "(b)"}
    assert isinstance(mmvp.iloc[0]["image"]["bytes"], bytes)
    for split in ("random", "popular", "adversarial"):
        pope = pd.read_parquet(root / "toy_pope" / f"{split}.parquet")
        assert (pope["answer"] == "yes").sum() == (pope["answer"] == "no").sum() == 6
        assert set(pope["category"]) == {split}
    cvb = pd.read_parquet(root / "toy_cv_bench" / "test.parquet")
    assert set(cvb["task"]) == {"Count", "Relation", "Size"}
    assert all(row["answer"].strip("()") in "ABC" for _, row in cvb.iterrows())
    vqa = pd.read_parquet(root / "toy_vqa" / "test.parquet")
    assert list(vqa.columns)[:4] == ["question_id", "question_type", "question", "answer"]
    assert vqa["question_type"].value_counts().to_dict() == dict.fromkeys(QUESTION_TYPES, 2)


def test_toy_vqa_task_knows_every_question_type_and_scores_exact_words():
    from eval.lmms.tasks.toy_vqa import utils

    assert utils.QUESTION_TYPES == QUESTION_TYPES  # the task's per-type metrics cover the data's types
    doc = {
        "question_id": "q1",
        "question_type": "color",
        "question": "What color is the star?",
        "answer": "red",
    }
    assert utils.process_results(doc, [" Red."])["vqa_color_acc"]["score"] == 1.0
    assert utils.process_results(doc, ["dark red"])["vqa_accuracy"]["score"] == 0.0
    recs = [
        utils.process_results({**doc, "question_type": t}, [a])["vqa_accuracy"]
        for t, a in (("color", "red"), ("color", "blue"), ("shape", "red"))
    ]
    assert utils.aggregate_color(recs) == 0.5 and utils.aggregate_shape(recs) == 1.0
    assert utils.aggregate_accuracy(recs) == 2 / 3


def test_held_out_and_deterministic(tmp_path):
    from toyworld.scene import Scene

    kw = dict(
        seed=3,
        image_size=32,
        supersample=1,
        mmvp_pairs_per_pattern=1,
        pope_images_per_split=3,
        cv_bench_per_task=2,
        vqa_per_type=1,
    )
    a = write_lmms_data(tmp_path / "a", **kw)
    b = write_lmms_data(tmp_path / "b", **kw)
    assert a["files"] == b["files"]
    for rel in (f for d in a["files"].values() for f in d.values()):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()

    def keys(root):
        return {
            Scene.from_dict(json.loads(s)).key()
            for rel in (f for d in a["files"].values() for f in d.values())
            for s in pd.read_parquet(root / rel)["scene"]
        }

    taken = keys(tmp_path / "a")
    write_lmms_data(tmp_path / "c", exclude=set(taken), **kw)  # excluded scenes are redrawn
    assert not keys(tmp_path / "c") & taken


def test_rewrite_an_existing_worlds_lmms_data_keeps_its_scenes_out(tmp_path):
    import random

    from genhancer.utils.fsio import write_json, write_jsonl
    from toyworld.lmms_data import OPTIONAL_SCENE_FILES, WORLD_SCENE_FILES, rewrite_world_lmms
    from toyworld.scene import Scene, sample_scene

    rng = random.Random(0)
    used = {}
    for rel in WORLD_SCENE_FILES + OPTIONAL_SCENE_FILES:
        scenes = [sample_scene(rng) for _ in range(200)]
        used.update({s.key(): s for s in scenes})
        write_jsonl(tmp_path / rel, [{"scene": s.to_dict()} for s in scenes])
    write_json(
        tmp_path / "world.json", {"seed": 0, "config": {"seed": 0, "image_size": 16, "supersample": 1}}
    )
    manifest = rewrite_world_lmms(tmp_path)
    assert manifest["counts"]["toy_vqa"] == 100 * len(QUESTION_TYPES)
    assert json.loads((tmp_path / "world.json").read_text())["derived"]["lmms_eval"] == manifest
    drawn = {
        Scene.from_dict(json.loads(s)).key()
        for d in manifest["files"].values()
        for rel in d.values()
        for s in pd.read_parquet(tmp_path / "lmms" / rel)["scene"]
    }
    assert drawn and not drawn & set(used)


def test_a_rewrite_reproduces_the_world_builders_lmms_data(tmp_path):
    """``python -m toyworld.lmms_data --world`` on a built world writes the same questions about the same
    scenes as ``toyworld build`` did (both keep the same scenes out, the extra benchmarks included)."""
    import shutil

    from toyworld.build import WorldConfig, build_world
    from toyworld.lmms_data import rewrite_world_lmms

    cfg = WorldConfig(
        image_size=16,
        n_train=40,
        n_val=10,
        pairs_per_pattern=1,
        decision_pairs_per_pattern=3,
        val_pairs_per_pattern=2,
        supersample=1,
    )
    world = tmp_path / "world"
    build_world(cfg, world)
    shutil.copytree(world / "lmms", tmp_path / "built")
    manifest = rewrite_world_lmms(world)
    for rels in manifest["files"].values():
        for rel in rels.values():
            built, again = pd.read_parquet(tmp_path / "built" / rel), pd.read_parquet(world / "lmms" / rel)
            text = [c for c in built.columns if c != "image"]
            assert built[text].astype(str).equals(again[text].astype(str)), rel

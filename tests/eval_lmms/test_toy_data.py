"""The toy world's lmms-eval parquet files: real benchmark layouts, held-out scenes, deterministic."""

from __future__ import annotations

import json

import pandas as pd

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


def test_held_out_and_deterministic(tmp_path):
    from toyworld.scene import Scene

    kw = dict(seed=3, image_size=32, supersample=1, mmvp_pairs_per_pattern=1, pope_images_per_split=3,
              cv_bench_per_task=2)
    a = write_lmms_data(tmp_path / "a", **kw)
    b = write_lmms_data(tmp_path / "b", **kw)
    assert a["files"] == b["files"]
    for rel in (f for d in a["files"].values() for f in d.values()):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    def keys(root):
        return {Scene.from_dict(json.loads(s)).key() for rel in (f for d in a["files"].values() for f in d.values())
                for s in pd.read_parquet(root / rel)["scene"]}

    taken = keys(tmp_path / "a")
    write_lmms_data(tmp_path / "c", exclude=set(taken), **kw)  # excluded scenes are redrawn
    assert not keys(tmp_path / "c") & taken

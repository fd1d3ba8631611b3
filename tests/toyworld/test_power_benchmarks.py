"""The decision and validation benchmarks beside mmvp_vlm/: official layout, own random streams, disjoint from
each other and from every split, sizes from the world config, and no effect on the 15-pair set."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import read_json, read_jsonl
from genhancer.utils.mmvp import read_benchmark
from toyworld import build
from toyworld.captions import statement_in_caption_words
from toyworld.scene import PATTERNS, Scene

SMALL = ["n_train=30", "n_val=10", "pairs_per_pattern=2", "seed=3"]
BENCHES = {"mmvp_vlm": 2, "mmvp_vlm_decision": 4, "mmvp_vlm_val": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("power") / "world"
    assert (
        build.main(["--out", str(out), *SMALL, "decision_pairs_per_pattern=4", "val_pairs_per_pattern=3"])
        == 0
    )
    return out


def _keys(path: Path) -> set[tuple]:
    return {Scene.from_dict(r["scene"]).key() for r in read_jsonl(path)}


def test_official_layout_and_sizes_from_the_config(world):
    for name, n in BENCHES.items():
        pairs = read_benchmark(world / name)  # the evaluators' reader: layout, pairing and images all valid
        assert len(pairs) == n * len(PATTERNS)
        assert [p.pattern for p in pairs] == [p for p in PATTERNS for _ in range(n)]
    w = read_json(world / "world.json")
    assert w["benchmarks"] == {
        "mmvp_vlm_decision": {"pairs_per_pattern": 4, "images": 72},
        "mmvp_vlm_decision_words": {
            "pairs_per_pattern": 4,
            "images": 72,
            "statements_of": "mmvp_vlm_decision",
        },
        "mmvp_vlm_val": {"pairs_per_pattern": 3, "images": 54},
    }
    assert w["config"]["decision_pairs_per_pattern"] == 4 and w["config"]["val_pairs_per_pattern"] == 3


def test_every_benchmark_and_split_is_disjoint(world):
    keys = {name: _keys(world / name / "scenes.jsonl") for name in BENCHES}
    keys |= {split: _keys(world / split / "scenes.jsonl") for split in ("train", "val")}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
    assert all(len(keys[name]) == 2 * n * len(PATTERNS) for name, n in BENCHES.items())  # no repeated image


def test_the_words_set_is_the_decision_set_with_statements_in_caption_words(world):
    decision, words = world / "mmvp_vlm_decision", world / "mmvp_vlm_decision_words"
    recs, word_recs = read_jsonl(decision / "scenes.jsonl"), read_jsonl(words / "scenes.jsonl")
    assert [(r["qid"], r["type"], r["scene"]) for r in word_recs] == [
        (r["qid"], r["type"], r["scene"]) for r in recs
    ]
    for r, w in zip(recs, word_recs):
        assert (words / w["image"]).read_bytes() == (decision / r["image"]).read_bytes()
        assert w["statement"] == statement_in_caption_words(Scene.from_dict(r["scene"]), r["type"])
        assert w["statement"].startswith("a photo of ") and w["statement"] != r["statement"]
    assert len(read_benchmark(words)) == 4 * len(PATTERNS)


def test_the_reported_set_does_not_change_when_the_others_are_added(world, tmp_path):
    plain = tmp_path / "plain"
    assert (
        build.main(["--out", str(plain), *SMALL, "decision_pairs_per_pattern=0", "val_pairs_per_pattern=0"])
        == 0
    )
    assert not any(
        (plain / name).exists() for name in ("mmvp_vlm_decision", "mmvp_vlm_decision_words", "mmvp_vlm_val")
    )
    assert read_json(plain / "world.json")["benchmarks"] == {}
    for rel in ("mmvp_vlm/Questions.csv", "mmvp_vlm/scenes.jsonl"):
        assert (plain / rel).read_bytes() == (world / rel).read_bytes(), rel


def test_negative_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="val_pairs_per_pattern"):
        build.WorldConfig(val_pairs_per_pattern=-1)

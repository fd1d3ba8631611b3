"""The benchmark writer (official MMVP-VLM layout, pairing, qid parity) and the build CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genhancer.utils.config import to_dict
from genhancer.utils.fsio import read_json, read_jsonl
from toyworld import build
from toyworld.__main__ import main as toyworld_main
from toyworld.render import render_scene
from toyworld.scene import PATTERNS, SHAPES, Scene, statement

K = 3  # pairs per pattern in these tests
# the decision / validation benchmarks are tested in test_power_benchmarks.py; kept small here
ARGS = [
    "n_train=40",
    "n_val=25",
    f"pairs_per_pattern={K}",
    "decision_pairs_per_pattern=2",
    "val_pairs_per_pattern=1",
    "seed=5",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tw") / "world"
    assert toyworld_main(["build", "--out", str(out), *ARGS]) == 0
    return out


def read_questions(bench: Path) -> tuple[list[str], list[list[str]]]:
    with (bench / "Questions.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_layout(world):
    assert sorted(p.name for p in world.iterdir()) == [
        "llava",
        "lmms",
        "mmvp_vlm",
        "mmvp_vlm_decision",
        "mmvp_vlm_decision_words",
        "mmvp_vlm_val",
        "provenance.json",
        "train",
        "val",
        "world.json",
    ]
    for split, n in (("train", 40), ("val", 25)):
        recs = read_jsonl(world / split / "scenes.jsonl")
        assert len(recs) == n
        assert [r["image"] for r in recs] == [f"images/{i:06d}.png" for i in range(n)]
        assert sorted(p.name for p in (world / split / "images").iterdir()) == [
            f"{i:06d}.png" for i in range(n)
        ]
        for r in recs:
            assert set(r) == {"image", "caption", "scene"} and r["caption"]
            scene = Scene.from_dict(r["scene"])
            # the image on disk is the rendering of its scene
            on_disk = np.asarray(Image.open(world / split / r["image"]).convert("RGB"))
            assert on_disk.shape == (64, 64, 3)
            assert (on_disk == np.asarray(render_scene(scene, 64))).all()
    assert not list(world.parent.glob(".tmp-*"))  # the atomic build left no temporary folder


def test_zeroshot_spec(world):
    spec = read_json(world / "val" / "zeroshot_shape.json")
    assert spec["template"] == "a photo of a {}."
    assert spec["classes"] == list(SHAPES)
    val = read_jsonl(world / "val" / "scenes.jsonl")
    assert spec["items"] == [{"image": r["image"], "label": r["scene"]["shape"]} for r in val]
    assert all((world / "val" / it["image"]).is_file() for it in spec["items"])


def test_world_json_and_provenance(world):
    w = read_json(world / "world.json")
    assert w["seed"] == 5 and w["image_size"] == 64
    assert w["counts"] == {
        "train": 40,
        "val": 25,
        "mmvp_vlm_images": 2 * K * 9,
        "mmvp_vlm_pairs_per_pattern": K,
    }
    assert w["vocabularies"]["shapes"] == list(SHAPES)
    assert w["vocabularies"]["patterns"] == list(PATTERNS)
    from toyworld.captions import CaptionProbs

    assert w["caption_probs"] == to_dict(CaptionProbs())  # what the captions were drawn with (the defaults)
    assert w["version"] and w["derived"]["lmms_eval"]["format"] == "genhancer-toy-lmms/1"
    prov = read_json(world / "provenance.json")
    assert prov["kind"] == "toyworld" and prov["config"]["seed"] == 5


def test_benchmark_layout_pairing_and_qid_parity(world):
    bench = world / "mmvp_vlm"
    header, rows = read_questions(bench)
    assert header == ["Question ID", "Type", "Statement"]
    assert [int(r[0]) for r in rows] == list(range(1, 2 * K * 9 + 1))
    assert [r[1] for r in rows] == [p for p in PATTERNS for _ in range(2 * K)]
    image_files = sorted((bench / "MLLM_VLM Images").rglob("*"))
    assert len([p for p in image_files if p.is_file()]) == len(rows)
    scenes = read_jsonl(bench / "scenes.jsonl")
    assert [s["qid"] for s in scenes] == [int(r[0]) for r in rows]
    for i in range(0, len(rows), 2):
        (q1, t1, s1), (q2, t2, s2) = rows[i], rows[i + 1]
        assert int(q1) % 2 == 1 and int(q2) == int(q1) + 1 and t1 == t2 and s1 != s2
        a, b = Scene.from_dict(scenes[i]["scene"]), Scene.from_dict(scenes[i + 1]["scene"])
        da, db = a.to_dict(), b.to_dict()
        assert [k for k in da if da[k] != db[k]] == [PATTERNS[t1]]
        # the statement of row qid describes image qid
        assert s1 == statement(a, t1) and s2 == statement(b, t2)
        for qid, scene in ((q1, a), (q2, b)):
            path = bench / "MLLM_VLM Images" / t1 / f"{qid}.jpg"
            img = Image.open(path)
            assert img.format == "JPEG" and img.size == (64, 64)
            err = np.abs(
                np.asarray(img.convert("RGB"), dtype=int) - np.asarray(render_scene(scene), dtype=int)
            )
            assert err.mean() < 4  # high-quality JPEG of exactly this scene
        # the two images of a pair really differ
        ia = np.asarray(Image.open(bench / "MLLM_VLM Images" / t1 / f"{q1}.jpg"), dtype=int)
        ib = np.asarray(Image.open(bench / "MLLM_VLM Images" / t1 / f"{q2}.jpg"), dtype=int)
        assert (np.abs(ia - ib).sum(-1) > 60).sum() >= 30


def test_splits_are_disjoint(world):
    keys = {}
    for split in ("train", "val"):
        keys[split] = {Scene.from_dict(r["scene"]).key() for r in read_jsonl(world / split / "scenes.jsonl")}
    bench = {Scene.from_dict(r["scene"]).key() for r in read_jsonl(world / "mmvp_vlm" / "scenes.jsonl")}
    assert not keys["train"] & bench and not keys["val"] & bench and not keys["train"] & keys["val"]
    # with a larger train split, redraws really happen (and are counted)
    rng = build.split_rng(0, "train")
    scenes, redrawn = build.sample_split(rng, 3000, bench)
    assert redrawn > 0 and not {s.key() for s in scenes} & bench


def test_same_seed_same_world_other_seed_other_world(world, tmp_path):
    again = tmp_path / "again"
    assert build.main(["--out", str(again), *ARGS]) == 0
    for rel in (
        "train/scenes.jsonl",
        "val/scenes.jsonl",
        "mmvp_vlm/Questions.csv",
        "mmvp_vlm/scenes.jsonl",
        "train/images/000007.png",
        "val/zeroshot_shape.json",
    ):
        assert (again / rel).read_bytes() == (world / rel).read_bytes(), rel
    other = tmp_path / "other"
    assert build.main(["--out", str(other), *ARGS[:-1], "seed=6"]) == 0
    assert (other / "train/scenes.jsonl").read_bytes() != (world / "train/scenes.jsonl").read_bytes()
    assert (other / "mmvp_vlm/scenes.jsonl").read_bytes() != (world / "mmvp_vlm/scenes.jsonl").read_bytes()


def test_existing_directory_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "w"
    small = ["n_train=3", "n_val=2", "pairs_per_pattern=1"]
    assert build.main(["--out", str(out), *small]) == 0
    first = (out / "train/scenes.jsonl").read_bytes()
    assert build.main(["--out", str(out), *small, "seed=1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "train/scenes.jsonl").read_bytes() == first  # untouched
    assert build.main(["--out", str(out), *small, "seed=1", "--overwrite"]) == 0
    assert json.loads((out / "world.json").read_text())["seed"] == 1
    # --overwrite never deletes a folder that is not a toy world
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert build.main(["--out", str(other), *small, "--overwrite"]) == 2
    assert "not a toy world" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"


def test_config_overrides_and_errors(tmp_path, capsys):
    out = tmp_path / "w"
    rc = build.main(
        [
            "--out",
            str(out),
            "n_train=20",
            "n_val=2",
            "pairs_per_pattern=1",
            "image_size=32",
            "captions.color=0.0",
            "captions.shape=1.0",
        ]
    )
    assert rc == 0
    recs = read_jsonl(out / "train" / "scenes.jsonl")
    assert all(r["scene"]["color"] not in r["caption"] for r in recs)
    assert all(r["scene"]["shape"] in r["caption"] for r in recs)
    assert Image.open(out / "train" / recs[0]["image"]).size == (32, 32)
    assert build.main(["--out", str(tmp_path / "x"), "captions.colour=0.5"]) == 2
    assert "colour" in capsys.readouterr().err
    assert build.main(["--out", str(tmp_path / "y"), "pairs_per_pattern=0"]) == 2
    assert "pairs_per_pattern" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_hyperparameters_are_config_keys_not_flags(capsys):
    """Flags name paths only; configs/toyworld/world.yaml is the schema's defaults (regenerate it with
    ``python -m toyworld build --print-config``)."""
    from genhancer.utils.config import load_config

    repo = Path(__file__).resolve().parents[2]
    assert load_config(build.WorldConfig, repo / "configs" / "toyworld" / "world.yaml") == build.WorldConfig()
    assert build.main(["--print-config", "seed=9"]) == 0
    assert "seed: 9" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build.main(["--out", "x", "--seed", "9"])

"""The attribute classifier: labels from scenes, scoring, training/saving/caching, and the judge command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from genhancer.utils.config import config_hash, load_config
from genhancer.utils.errors import DataError, ModelDirError
from genhancer.utils.fsio import read_json
from toyworld import attributes as at
from toyworld.__main__ import main as toyworld_main
from toyworld.scene import Scene

# A classifier for 32 px images that trains in a couple of seconds.
TINY = [
    "model.image_size=32",
    "model.widths=[8,16,32]",
    "model.hidden=64",
    "train.batch_size=32",
    "train.warmup_steps=5",
    "train.log_every=20",
    "eval_batch_size=64",
]


@pytest.fixture(scope="module")
def world(make_world) -> Path:
    """A tiny world from the real builder: 160 train / 40 val images at 32 px."""
    return make_world("attr_world", n_train=160, n_val=40)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("attr_clf") / "clf"
    cfg = load_config(at.AttributesConfig, None, [*TINY, "train.steps=200"])
    return out, at.train_attributes(cfg, world, out)


# ------------------------------------------------------------------------------------------ labels
def test_scene_labels_map_every_attribute():
    s = Scene(
        shape="arrow",
        color="blue",
        count=2,
        orientation="left",
        fill="outline",
        text="H",
        viewpoint="far",
        background="gray",
    ).to_dict()
    labels = dict(zip(at.ATTRIBUTES, at.scene_labels(s)))
    assert labels["shape"] == at.ATTRIBUTES["shape"].index("arrow")
    assert labels["count"] == 1  # classes "1", "2", "3"
    assert labels["orientation"] == at.ATTRIBUTES["orientation"].index("left")
    assert labels["feature"] == 0 and at.ATTRIBUTES["feature"][0] == "none"  # no mark is a class
    assert labels["text"] == at.ATTRIBUTES["text"].index("H")
    assert labels["background"] == at.ATTRIBUTES["background"].index("gray")
    # a circle has no orientation: not scored, rather than a class "none"
    circle = dict(zip(at.ATTRIBUTES, at.scene_labels(Scene(shape="circle").to_dict())))
    assert circle["orientation"] == at.IGNORE


def test_scene_labels_name_the_bad_record():
    bad = Scene().to_dict() | {"color": "pink"}
    with pytest.raises(DataError, match=r"scenes\[1\].*color='pink'"):
        at.label_matrix([Scene().to_dict(), bad])
    missing = {k: v for k, v in Scene().to_dict().items() if k != "viewpoint"}
    with pytest.raises(DataError, match="no key 'viewpoint'"):
        at.scene_labels(missing)


def test_score_predictions_counts_applicable_labels_only():
    names = list(at.ATTRIBUTES)
    labels = torch.zeros(4, len(names), dtype=torch.long)
    o = names.index("orientation")
    labels[:, o] = torch.tensor([1, 1, at.IGNORE, at.IGNORE])
    labels[:, names.index("color")] = torch.tensor([0, 0, 0, 2])
    pred = labels.clone()
    pred[0, o] = 3  # one of the two oriented scenes wrong
    pred[2, o] = 0  # a guess on a circle does not count
    pred[3, names.index("color")] = 1  # one colour of four wrong
    table = at.score_predictions(pred, labels, names)
    assert table["attributes"]["orientation"] == {"accuracy": 0.5, "n": 2, "majority": 1.0}
    assert table["attributes"]["color"] == {"accuracy": 0.75, "n": 4, "majority": 0.75}
    assert table["attributes"]["shape"]["accuracy"] == 1.0
    assert table["all_correct"] == 0.5  # images 0 and 3 each have a wrong attribute
    assert table["mean"] == pytest.approx((len(names) - 2 + 0.5 + 0.75) / len(names))


# ------------------------------------------------------------------------------------------ training
def test_train_save_load_and_cache(trained, world):
    out, summary = trained
    assert summary["cached"] is False
    spec = read_json(out / at.SPEC_FILE)
    assert spec["attributes"]["text"] == ["none", "A", "E", "H", "L", "T", "X"]
    # the saved classifier scores the val split exactly as the summary says
    clf = at.load_classifier(out)
    paths, scenes = at.read_split(world, "val")
    images = at.load_images(paths, 32)
    assert at.attribute_accuracy(clf, images, scenes) == summary["val"]
    # it learned: the background (a third of every picture) is read off every val image
    bg = summary["val"]["attributes"]["background"]
    assert bg["accuracy"] > max(0.9, bg["majority"])
    cfg = load_config(at.AttributesConfig, None, [*TINY, "train.steps=200"])
    assert at.train_attributes(cfg, world, out)["cached"] is True
    other = load_config(at.AttributesConfig, None, [*TINY, "train.steps=3"])
    assert at.cached_summary(out, config_hash(other), summary["world_fingerprint"]) is None


def test_load_classifier_errors(tmp_path, trained):
    with pytest.raises(ModelDirError, match="train-attributes"):
        at.load_classifier(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    spec = read_json(broken / at.SPEC_FILE)
    spec["model"]["hidden"] = 65
    at.write_json(broken / at.SPEC_FILE, spec)
    with pytest.raises(ModelDirError, match="does not fit"):
        at.load_classifier(broken)


# ------------------------------------------------------------------------------------------ judge
def test_judge_matches_by_path_and_by_name(trained, world, tmp_path, capsys):
    out, summary = trained
    report_file = tmp_path / "report.json"
    # scenes.jsonl is found beside <world>/val/images
    assert (
        toyworld_main(
            [
                "judge",
                "--classifier",
                str(out),
                "--images",
                str(world / "val" / "images"),
                "--out",
                str(report_file),
            ]
        )
        == 0
    )
    report = read_json(report_file)
    assert report["attributes"] == summary["val"]["attributes"] and report["unmatched_images"] == 0
    assert "background" in capsys.readouterr().out
    # a folder of copies named like the originals (e.g. reconstructions) is matched by file name;
    # an image without a record is skipped and counted
    copies = tmp_path / "recons"
    copies.mkdir()
    for name in ("000003.png", "000007.png"):
        shutil.copy(world / "val" / "images" / name, copies / name)
    shutil.copy(world / "val" / "images" / "000001.png", copies / "stray.png")
    from toyworld.judge import judge

    report = judge(out, copies, world / "val" / "scenes.jsonl")
    assert report["n_images"] == 2 and report["unmatched_images"] == 1


def test_judge_errors(trained, world, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert toyworld_main(["judge", "--classifier", str(trained[0]), "--images", str(empty)]) == 2
    assert "no scenes.jsonl" in capsys.readouterr().err
    shutil.copy(world / "val" / "images" / "000000.png", empty / "x.png")
    assert (
        toyworld_main(
            [
                "judge",
                "--classifier",
                str(trained[0]),
                "--images",
                str(empty),
                "--scenes",
                str(world / "val" / "scenes.jsonl"),
            ]
        )
        == 2
    )
    assert "none of the 1 images" in capsys.readouterr().err

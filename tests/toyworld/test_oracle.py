"""``python -m toyworld oracle-draw``: the scene code holds exactly the chosen labels; a tiny run trains,
draws and writes imagine results that ``imagine --compare`` reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genhancer.utils.errors import UserError
from genhancer.utils.fsio import read_json
from toyworld.__main__ import main as toyworld_main
from toyworld.attributes import ATTRIBUTES, IGNORE
from toyworld.oracle import scene_code

NAMES = list(ATTRIBUTES)


def _labels(*changes: dict[str, int]) -> torch.Tensor:
    """One row per ``changes``: class 0 everywhere except the given attributes."""
    rows = torch.zeros(len(changes), len(NAMES), dtype=torch.long)
    for i, change in enumerate(changes):
        for name, value in change.items():
            rows[i, NAMES.index(name)] = value
    return rows


def test_scene_code_holds_the_chosen_attributes_only():
    labels = _labels({}, {}, {"shape": 1}, {"position": 1}, {"orientation": IGNORE})
    code = scene_code(labels, 16, ["shape", "color", "orientation"], seed=3)
    assert code.shape == (5, 16)
    assert torch.equal(code[0], code[1])  # the same scene, the same code
    assert not torch.allclose(code[0], code[2])  # a chosen attribute changes it
    assert torch.equal(code[0], code[3])  # an attribute left out does not
    assert not torch.allclose(code[0], code[4])  # a chosen attribute that does not apply adds nothing
    # a class's vector is the same whichever attributes are chosen: the codes are sums of the parts
    parts = [scene_code(labels, 16, [a], seed=3) for a in ("shape", "color", "orientation")]
    torch.testing.assert_close(code * 3**0.5, sum(parts))
    assert not torch.allclose(scene_code(labels, 16, ["shape"], seed=4), parts[0])  # the seed draws them
    with pytest.raises(UserError, match="'hue'"):
        scene_code(labels, 16, ["shape", "hue"])


@pytest.fixture(scope="module")
def world(make_world) -> Path:
    return make_world("oracle_world", n_train=24, n_val=6)


@pytest.fixture(scope="module")
def classifier(world, make_classifier) -> Path:
    return make_classifier(world, "oracle_clf")


def _run(tiny_clip_dir, world, classifier, out, *extra) -> int:
    overrides = [  # before the options: --eval-at and --attributes take every word after them
        f"encoder.path={tiny_clip_dir}",
        "latent.space=pixel",
        "latent.vae_path=null",
        "latent.patch_size=4",
        "cache.enabled=false",
        "flow.sample_steps=2",
        "train.batch_size=4",
    ]
    args = ["--world", str(world), "--classifier", str(classifier), "--out", str(out), "--n", "6"]
    return toyworld_main(["oracle-draw", *overrides, *args, *extra])


def test_oracle_draw_trains_draws_and_judges(tiny_clip_dir, world, classifier, tmp_path, capsys):
    out = tmp_path / "scene"
    assert _run(tiny_clip_dir, world, classifier, out, "--steps", "3", "--eval-at", "3", "2") == 0
    assert "after 3 steps (scene condition)" in capsys.readouterr().out
    summary = read_json(out / "oracle-draw.json")
    assert summary["condition"] == "scene" and summary["attributes"] == NAMES
    assert summary["train_images"] == 24 and summary["val_images"] == 6
    assert [r["step"] for r in summary["loss"]] == [3] and summary["loss"][0]["loss"] > 0
    assert sorted(summary["evals"]) == ["2", "3"]
    first, last = (read_json(out / f"step-00000{k}" / "imagine.json") for k in (2, 3))
    assert first["train_steps"] == 2 and last["n_images"] == 6
    assert sorted(p.name for p in (out / "step-000003" / "reconstructions").iterdir())[0] == "000000.png"
    assert last["reconstructions"]["mean"] == summary["evals"]["3"]["mean"]
    # the two steps drew different pictures of the same val images: --compare reads them
    assert last["items"] == first["items"]
    cmp = tmp_path / "cmp.json"
    files = [str(out / f"step-00000{k}" / "imagine.json") for k in (2, 3)]
    assert toyworld_main(["imagine", "--compare", *files, "--out", str(cmp)]) == 0
    assert read_json(cmp)["num_items"] == 6


def test_oracle_draw_token_condition_and_bad_arguments(tiny_clip_dir, world, classifier, tmp_path, capsys):
    out = tmp_path / "token"
    assert _run(tiny_clip_dir, world, classifier, out, "--condition", "token", "--steps", "1") == 0
    assert read_json(out / "oracle-draw.json")["attributes"] is None
    capsys.readouterr()
    cases = [
        (["--condition", "token", "--attributes", "shape"], "use it with --condition scene"),
        (["--steps", "2", "--eval-at", "3"], "every --eval-at in 1..2"),
        (["--steps", "0"], "got --steps 0"),
        (["--train-n", "0"], "--train-n 0"),
        (["--attributes", "hue"], "'hue'"),
    ]
    for extra, message in cases:
        assert _run(tiny_clip_dir, world, classifier, tmp_path / "bad", *extra) == 2
        assert message in capsys.readouterr().err

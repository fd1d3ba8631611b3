"""``python -m toyworld imagine``: a tiny stage directory draws from val tokens; the drawings are judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhancer.utils.fsio import read_json
from toyworld.__main__ import main as toyworld_main


@pytest.fixture(scope="module")
def world(make_world) -> Path:
    return make_world("imagine_world", n_train=32, n_val=12)


@pytest.fixture(scope="module")
def classifier(world, make_classifier) -> Path:
    return make_classifier(world, "imagine_clf")


@pytest.fixture(scope="module")
def stage_dir(tiny_clip_dir, tmp_path_factory) -> Path:
    """An untrained stage-1 output directory on the tiny 32 px CLIP (pixel space, toy denoiser)."""
    from genhancer.config import load_genhancer_config
    from genhancer.module import GenHancerModel

    cfg = load_genhancer_config(
        None,
        [
            f"encoder.path={tiny_clip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "flow.sample_steps=2",
        ],
    )
    out = tmp_path_factory.mktemp("imagine_stage") / "final"
    return GenHancerModel.build(cfg).save_pretrained(out)


def test_imagine_writes_judged_drawings(stage_dir, classifier, world, tmp_path, capsys):
    def run(out: Path) -> int:
        return toyworld_main(
            [
                "imagine",
                "--stage-dir",
                str(stage_dir),
                "--classifier",
                str(classifier),
                "--world",
                str(world),
                "--out",
                str(out),
                "--n",
                "5",
                "--batch-size",
                "2",
                "--grid-n",
                "3",
            ]
        )

    out = tmp_path / "imagine"
    assert run(out) == 0
    assert "drawings" in capsys.readouterr().out
    result = read_json(out / "imagine.json")
    assert result["n_images"] == 5 and result["steps"] == 2
    assert result["originals"]["n_images"] == result["reconstructions"]["n_images"] == 5
    names = sorted(p.name for p in (out / "reconstructions").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]  # named like their val sources
    for f in ("attributes.png", "grid.png"):
        assert (out / f).stat().st_size > 1000
    # the judge re-scores the saved drawings to the same table
    from toyworld.judge import judge

    report = judge(classifier, out / "reconstructions", world / "val" / "scenes.jsonl")
    assert report["attributes"] == result["reconstructions"]["attributes"]
    # same seed, same drawings
    assert run(tmp_path / "again") == 0
    again = (tmp_path / "again" / "reconstructions" / "000004.png").read_bytes()
    assert again == (out / "reconstructions" / "000004.png").read_bytes()


def test_imagine_errors(stage_dir, classifier, world, tmp_path, capsys):
    base = ["imagine", "--classifier", str(classifier), "--world", str(world), "--out", str(tmp_path / "o")]
    assert toyworld_main([*base, "--stage-dir", str(tmp_path)]) == 2
    assert "stage output directory" in capsys.readouterr().err
    assert toyworld_main([*base, "--stage-dir", str(stage_dir), "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err

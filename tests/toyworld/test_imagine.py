"""``python -m toyworld imagine``: a tiny stage directory draws from val tokens; the drawings are judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhancer.utils.errors import DataError
from genhancer.utils.fsio import read_json, write_json
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
    # per image and attribute, what the accuracy is the mean of (None where the attribute does not apply)
    assert result["items"] == names
    for attr, row in result["reconstructions"]["attributes"].items():
        marks = [x for x in result["correct"]["reconstructions"][attr] if x is not None]
        assert len(marks) == row["n"] and sum(marks) / len(marks) == pytest.approx(row["accuracy"])
    # a result compared with itself changes by exactly 0
    assert toyworld_main(["imagine", "--compare", str(out / "imagine.json"), str(out / "imagine.json")]) == 0
    assert "fine mean" in capsys.readouterr().out
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


def _imagined(items: list[str], **correct: list[int | None]) -> dict:
    """An imagine.json's drawings part: per-image marks per attribute and the accuracies they make."""
    attrs = {}
    for k, marks in correct.items():
        seen = [x for x in marks if x is not None]
        attrs[k] = {"accuracy": sum(seen) / len(seen), "n": len(seen), "majority": 0.5}
    return {"items": items, "reconstructions": {"attributes": attrs}, "correct": {"reconstructions": correct}}


def test_compare_is_paired_and_counts_only_images_an_attribute_applies_to(tmp_path, capsys):
    from toyworld.imagine import compare_imagined

    items = [f"{i:06d}.png" for i in range(40)]
    a = _imagined(items, color=[0, 1] * 20, orientation=[0, None] * 20, count=[1] * 40)
    b = _imagined(items, color=[1, 1] * 20, orientation=[1, None] * 20, count=[1] * 40)
    cmp = compare_imagined(a, b, coarse=("color",), n_boot=2000)
    rows = cmp["features"]["drawings"]["attributes"]
    assert rows["color"]["delta"] == pytest.approx(0.5)  # 20 of 40 images now right
    assert rows["orientation"]["delta"] == pytest.approx(1.0)  # all 20 images it applies to
    lo, hi = rows["orientation"]["delta_interval"]
    assert 0.6 < lo <= 1.0 <= hi < 1.4  # scaled by 40/20, so the interval sits around the change
    assert rows["count"]["delta_interval"] == [0.0, 0.0]
    fine = cmp["features"]["drawings"]["fine_mean"]
    assert fine["attributes"] == ["orientation", "count"] and fine["delta"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="different val images"):
        compare_imagined(a, _imagined(items[::-1], color=[1] * 40), n_boot=10)
    with pytest.raises(DataError, match="rerun imagine"):
        compare_imagined({"items": items}, b, n_boot=10)
    for name, r in (("a.json", a), ("b.json", b)):
        write_json(tmp_path / name, r)
    args = [
        "imagine",
        "--compare",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        "--names",
        "1k",
        "10k",
    ]
    assert (
        toyworld_main([*args, "--out", str(tmp_path / "cmp.json"), "--plot", str(tmp_path / "cmp.png")]) == 0
    )
    assert "10k" in capsys.readouterr().out
    assert read_json(tmp_path / "cmp.json")["features"]["drawings"]["attributes"]["color"]["delta"] == 0.5
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    broken = {"items": items, "correct": a["correct"], "reconstructions": {}}
    write_json(tmp_path / "broken.json", broken)
    compare = ["imagine", "--compare"]
    assert toyworld_main([*compare, str(tmp_path / "a.json"), str(tmp_path / "broken.json")]) == 2
    assert "broken.json: not a complete imagine.json (no 'attributes' in it)" in capsys.readouterr().err
    write_json(tmp_path / "list.json", [a])
    assert toyworld_main([*compare, str(tmp_path / "list.json"), str(tmp_path / "b.json")]) == 2
    assert "list.json: not laid out as an imagine.json" in capsys.readouterr().err
    write_json(tmp_path / "short.json", {**a, "items": items[:-1]})
    assert toyworld_main([*compare, str(tmp_path / "short.json"), str(tmp_path / "b.json")]) == 2
    assert "short.json: attributes ['color', 'count', 'orientation'] do not mark each of the 39" in (
        capsys.readouterr().err
    )
    assert toyworld_main([*args, "--world", str(tmp_path)]) == 2  # the two modes do not mix
    assert "--compare takes two imagine.json" in capsys.readouterr().err
    assert toyworld_main(["imagine", "--out", str(tmp_path / "o")]) == 2
    assert "missing --stage-dir, --classifier, --world" in capsys.readouterr().err

"""The conditioning gap: common random numbers, the real training objective, and a denoiser that has learned
to use its condition against one that has not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from genhancer import diagnostics
from genhancer.diagnostics import conditioning_gap, pair_losses
from genhancer.module import GenHancerModel
from genhancer.sample import load_batch
from genhancer.utils.mmvp import read_benchmark


def test_identical_twins_have_exactly_zero_gap(stage_runs, pair_bench, tmp_path):
    """Both images of every pair the same: own and twin conditions are equal, so with shared draws the two
    losses must be bit-identical (independent draws would differ by the sampling noise)."""
    twins = tmp_path / "twins"
    shutil.copytree(pair_bench, twins)
    for pair in read_benchmark(twins):
        shutil.copyfile(pair.images[0], pair.images[1])
    rep = conditioning_gap(stage_runs["trained"], twins, draws=3, n_boot=100, show_progress=False)
    assert all(r["gap"] == 0.0 and r["own"] > 0 for r in rep["pairs"])
    assert rep["overall"]["gap_interval"] == [0.0, 0.0]


def test_own_loss_is_the_training_objective(stage_runs, pair_bench):
    model = GenHancerModel.from_pretrained(stage_runs["untrained"] / "final")
    pair = read_benchmark(pair_bench)[0]
    pixel_values, targets = load_batch(list(pair.images), model.encoder_image_spec())
    got = pair_losses(model, pixel_values, targets, draws=3, seeds=[7])  # (1, 2)
    rows = [0, 0, 0, 1, 1, 1]
    with torch.no_grad():
        own = model(pixel_values[rows], targets[rows], torch.Generator().manual_seed(7))["loss"]
        pooled, context = model.condition(pixel_values)
        twin = model.denoiser.training_loss(
            targets[rows],
            pooled[[1, 1, 1, 0, 0, 0]],
            context[[1, 1, 1, 0, 0, 0]],
            torch.Generator().manual_seed(7),
        )["loss"]
    torch.testing.assert_close(got[0], torch.stack([own, twin]).float(), rtol=1e-5, atol=1e-6)
    assert got[0, 0] != got[0, 1]  # the two images really give different conditions


def test_a_trained_denoiser_uses_the_condition_an_untrained_one_does_not(stage_runs, pair_bench):
    trained = conditioning_gap(stage_runs["trained"], pair_bench, n_boot=2000, show_progress=False)
    untrained = conditioning_gap(stage_runs["untrained"], pair_bench, n_boot=2000, show_progress=False)
    assert trained["stage"] == "stage1" and trained["draws"] == 8 and trained["overall"]["pairs"] == 8
    lo, hi = trained["overall"]["gap_interval"]
    assert 0 < lo < trained["overall"]["gap"] < hi
    assert all(r["gap"] > 0 for r in trained["patterns"].values())
    assert trained["overall"]["positive_fraction"] >= 0.75
    ulo, uhi = untrained["overall"]["gap_interval"]
    assert ulo < 0 < uhi  # a random denoiser ignores the condition, up to noise
    assert abs(untrained["overall"]["gap"]) < trained["overall"]["gap"] / 10
    # the gap is the mean of the per-pair gaps, each twin - own
    per_pair = [r["twin"] - r["own"] for r in trained["pairs"]]
    assert trained["overall"]["gap"] == pytest.approx(sum(per_pair) / len(per_pair))


def test_batching_does_not_change_the_draws(stage_runs, pair_bench):
    a = conditioning_gap(
        stage_runs["trained"], pair_bench, draws=2, batch_pairs=3, n_boot=10, show_progress=False
    )
    b = conditioning_gap(
        stage_runs["trained"], pair_bench, draws=2, batch_pairs=16, n_boot=10, show_progress=False
    )
    assert [r["qids"] for r in a["pairs"]] == [r["qids"] for r in b["pairs"]]
    for ra, rb in zip(a["pairs"], b["pairs"]):
        assert ra["own"] == pytest.approx(rb["own"], rel=1e-5) and ra["twin"] == pytest.approx(
            rb["twin"], rel=1e-5
        )
    c = conditioning_gap(stage_runs["trained"], pair_bench, draws=2, seed=1, n_boot=10, show_progress=False)
    assert c["pairs"][0]["own"] != a["pairs"][0]["own"]  # another seed, other draws


def test_cli_table_json_plot_and_errors(stage_runs, pair_bench, tmp_path, capsys):
    out, png = tmp_path / "gap.json", tmp_path / "gap.png"
    rc = diagnostics.main(
        [
            "cond-gap",
            "--stage-dir",
            str(stage_runs["trained"]),
            "--benchmark",
            str(pair_bench),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--max-pairs",
            "2",
            "--draws",
            "2",
            "--bootstrap",
            "200",
        ]
    )
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["stage_dir"] == str(stage_runs["trained"] / "final") and rep["n_boot"] == 200
    assert {k: v["pairs"] for k, v in rep["patterns"].items()} == {
        "Orientation and Direction": 2,
        "Color and Appearance": 2,
    }
    assert [r["qids"] for r in rep["pairs"]] == [[1, 2], [3, 4], [9, 10], [11, 12]]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["pattern", "pairs", "own", "twin", "gap"]
    assert lines[-1].startswith("overall") and len(lines) == 6
    assert png.read_bytes()[:4] == b"\x89PNG"

    assert diagnostics.main(["cond-gap", "--stage-dir", str(tmp_path), "--benchmark", str(pair_bench)]) == 2
    assert "not a GenHancer stage output directory" in capsys.readouterr().err
    assert (
        diagnostics.main(
            ["cond-gap", "--stage-dir", str(stage_runs["trained"]), "--benchmark", str(tmp_path)]
        )
        == 2
    )
    assert "Questions.csv" in capsys.readouterr().err


def test_discrete_family_shares_its_masks(discrete_run, pair_bench, tmp_path):
    """The masked-token objective draws masks instead of noise: shared too, so identical twins give 0."""
    rep = conditioning_gap(discrete_run, pair_bench, draws=2, n_boot=100, show_progress=False)
    assert rep["denoiser"] == "discrete" and rep["latent"] == "vq"
    assert all(r["own"] > 0 and r["twin"] > 0 for r in rep["pairs"])
    assert any(r["gap"] != 0 for r in rep["pairs"])
    twins = tmp_path / "twins"
    shutil.copytree(pair_bench, twins)
    for pair in read_benchmark(twins):
        shutil.copyfile(pair.images[0], pair.images[1])
    same = conditioning_gap(discrete_run, twins, draws=2, n_boot=100, show_progress=False)
    assert all(r["gap"] == 0.0 for r in same["pairs"])

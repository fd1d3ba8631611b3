"""Bootstrap intervals and the exact McNemar test, alone and through `eval.mmvp_vlm` results and --compare."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import mmvp_vlm
from eval.mmvp_vlm import geometry_changes, geometry_summary, paired_comparison, score_intervals
from genhancer.utils.stats import (
    bootstrap_interval,
    bootstrap_means,
    percentile_interval,
    sign_test_p,
    stratified_bootstrap_means,
)


def test_sign_test_matches_hand_computed_binomial_tails():
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test_p(1, 9) == sign_test_p(9, 1)  # two-sided: symmetric
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(0, 1) == 1.0  # one flip is never evidence
    # large counts: exact integers, no float overflow; 600 vs 800 is a clear imbalance
    assert 0.0 < sign_test_p(600, 800) < 1e-6
    assert sign_test_p(700, 700) == 1.0
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_bootstrap_is_deterministic_and_has_the_textbook_width():
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.5).astype(float)
    a, b = bootstrap_means(x, 4000, seed=7), bootstrap_means(x, 4000, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, bootstrap_means(x, 4000, seed=8))
    lo, hi = bootstrap_interval(x, 4000, seed=7)
    # normal approximation: 2 * 1.96 * sd / sqrt(n)
    expected = 2 * 1.96 * x.std() / np.sqrt(len(x))
    assert hi - lo == pytest.approx(expected, rel=0.1)
    assert lo < x.mean() < hi
    # columns of one item stay together: identical columns give identical resampled means
    both = bootstrap_means(np.stack([x, x], axis=1), 100, seed=0)
    assert both.shape == (100, 2) and np.array_equal(both[:, 0], both[:, 1])


def test_stratified_bootstrap_keeps_group_sizes():
    ones, zeros, mixed = np.ones(5), np.zeros(50), np.array([0.0, 1.0] * 10)
    means = stratified_bootstrap_means([ones, zeros, mixed], 500, seed=3)
    assert means.shape == (500, 3)
    assert (means[:, 0] == 1).all() and (means[:, 1] == 0).all()  # constant groups never move
    assert means[:, 2].std() > 0.05
    # multiples of 1/20: every resample has exactly 20 items of the mixed group
    assert np.allclose(means[:, 2] * 20, np.round(means[:, 2] * 20))
    lo, hi = percentile_interval(means.mean(axis=1))
    assert lo < (1 + 0 + 0.5) / 3 < hi


def _result(correct_by_pattern: dict[str, list[bool]], first_qid: int = 1) -> dict:
    """A minimal RESULT.json dict: per-pair records + scores + average."""
    pairs, scores, qid = [], {}, first_qid
    for pattern, correct in correct_by_pattern.items():
        for c in correct:
            pairs.append({"qids": [qid, qid + 1], "pattern": pattern, "correct": c})
            qid += 2
        scores[pattern] = 100.0 * sum(correct) / len(correct)
    return {
        "scores": scores,
        "average": sum(scores.values()) / len(scores),
        "pairs": pairs,
        "num_pairs": len(pairs),
    }


def test_score_intervals_of_a_result():
    res = _result({"Texts": [True] * 10, "Quantity and Count": [True, False] * 20})
    iv = score_intervals(res, n_boot=2000, seed=0)
    assert iv["scores"]["Texts"] == [100.0, 100.0]  # every pair right: nothing to resample
    lo, hi = iv["scores"]["Quantity and Count"]
    assert 25 < lo < 50 < hi < 75 and hi - lo > 20
    alo, ahi = iv["average"]
    # the average interval is half as wide: the other pattern is fixed at 100
    assert alo < res["average"] < ahi and (ahi - alo) == pytest.approx((hi - lo) / 2, rel=0.1)
    assert score_intervals({"scores": {"Texts": 1.0}, "average": 1.0}) is None  # no per-pair records


def test_paired_comparison_counts_flips_and_tests_them():
    before = _result({"Texts": [False] * 10, "Quantity and Count": [True, False] * 5})
    after = _result({"Texts": [True] * 6 + [False] * 4, "Quantity and Count": [True, False] * 5})
    cmp = paired_comparison(before, after, n_boot=2000, seed=0)
    assert cmp["paired"]
    t = cmp["patterns"]["Texts"]
    assert (t["wrong_to_right"], t["right_to_wrong"], t["delta"]) == (6, 0, 60.0)
    assert t["p_value"] == pytest.approx(2 / 64)
    assert t["delta_interval"][0] > 0  # six gains, no loss: the interval excludes 0
    q = cmp["patterns"]["Quantity and Count"]
    assert q["delta_interval"] == [0.0, 0.0] and q["p_value"] == 1.0
    avg = cmp["average"]
    assert avg["delta"] == pytest.approx(30.0) and (avg["wrong_to_right"], avg["right_to_wrong"]) == (6, 0)
    assert avg["delta_interval"][0] > 0 and avg["delta_interval"][1] <= 60.0

    # swaps between pairs with equal totals: no score change, but the flips are visible
    a = _result({"Texts": [True] * 5 + [False] * 5})
    b = _result({"Texts": [False] * 5 + [True] * 5})
    swap = paired_comparison(a, b, n_boot=2000)
    assert swap["average"]["delta"] == 0
    assert (swap["average"]["wrong_to_right"], swap["average"]["right_to_wrong"]) == (5, 5)
    lo, hi = swap["average"]["delta_interval"]
    assert lo < -20 and hi > 20  # the paired interval sees ten changed pairs


def test_different_pairs_are_not_paired():
    a = _result({"Texts": [True, False]})
    b = _result({"Texts": [True, False]}, first_qid=11)
    cmp = paired_comparison(a, b)
    assert not cmp["paired"] and "same pairs" in cmp["why_unpaired"]
    assert "p_value" not in cmp["average"] and cmp["average"]["delta"] == 0


def test_compare_cli_writes_paired_json_and_table(tmp_path, capsys):
    before = _result({"Texts": [False] * 10, "Color and Appearance": [True] * 10})
    after = _result({"Texts": [True] * 6 + [False] * 4, "Color and Appearance": [True] * 9 + [False]})
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    assert mmvp_vlm.main(["--compare", str(a), str(b), "--out", str(out), "--bootstrap", "500"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "p" in lines[0].split() and "flips +/-" in lines[0]
    texts = next(line for line in lines if line.startswith("Texts"))
    assert "+60.0" in texts and "6/0" in texts and "0.031" in texts
    color = next(line for line in lines if line.startswith("Color"))
    assert "-10.0" in color and "0/1" in color and "1.000" in color
    saved = json.loads(out.read_text())
    assert saved["paired"] and saved["labels"] == ["before", "after"] and saved["n_boot"] == 500
    assert saved["average"]["wrong_to_right"] == 6 and saved["average"]["right_to_wrong"] == 1
    assert saved["average"]["p_value"] == pytest.approx(sign_test_p(6, 1))
    assert saved["geometry"] is None and not any(
        "separation" in line for line in lines
    )  # no geometry: no table


def _with_geometry(result: dict, separation: list[float], alignment: list[float]) -> dict:
    pairs = [
        {**p, "image_separation": s, "text_alignment": a}
        for p, s, a in zip(result["pairs"], separation, alignment)
    ]
    return {**result, "pairs": pairs}


def test_geometry_changes_are_paired_per_pattern_with_intervals(tmp_path, capsys):
    base = _result({"Texts": [False] * 4, "Color and Appearance": [True] * 4})
    before = _with_geometry(base, [0.2, 0.3, 0.2, 0.3, 0.9, 0.8, 0.9, 0.8], [0.1] * 8)
    after = _with_geometry(base, [0.3, 0.4, 0.3, 0.4, 0.9, 0.8, 0.9, 0.8], [0.1] * 4 + [0.2, 0.3, 0.2, 0.3])
    summary = geometry_summary(before)
    assert summary["Texts"]["image_separation"] == pytest.approx(0.25)
    assert summary["average"]["image_separation"] == pytest.approx((0.25 + 0.85) / 2)
    cmp = geometry_changes(before, after, n_boot=500)
    sep, al = cmp["measures"]["image_separation"], cmp["measures"]["text_alignment"]
    assert sep["Texts"]["delta"] == pytest.approx(0.1) and sep["Texts"]["delta_interval"] == pytest.approx(
        [0.1, 0.1]
    )
    assert sep["Color and Appearance"]["delta"] == 0 and al["Texts"]["delta"] == 0
    lo, hi = al["Color and Appearance"]["delta_interval"]
    assert al["Color and Appearance"]["delta"] == pytest.approx(0.15) and 0.1 <= lo < 0.15 < hi <= 0.2
    assert sep["average"]["delta"] == pytest.approx(0.05)
    assert geometry_changes(base, after) is None and geometry_summary(base) is None  # older results
    assert (
        geometry_changes(before, _with_geometry(_result({"Texts": [False] * 4}), [0.1] * 4, [0.1] * 4))
        is None
    )

    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    assert mmvp_vlm.main(["--compare", str(a), str(b), "--out", str(out), "--bootstrap", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    texts = [line for line in lines if line.startswith("Texts")]
    assert len(texts) == 2 and "0.250 -> 0.350" in texts[1] and "+0.1000 [+0.1000, +0.1000]" in texts[1]
    assert json.loads(out.read_text())["geometry"]["measures"]["image_separation"]["Texts"]["after"] == 0.35

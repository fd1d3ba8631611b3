"""The effect study's report: seeds pooled per item, intervals over items, controls reported beside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toyworld import effect

PATTERNS = ("Orientation and Direction", "Color and Appearance")


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _probes(correct_fine: list[int]) -> dict:
    n = len(correct_fine)
    return {
        "items": [f"{i}.png" for i in range(n)],
        "probes": {"global": {"color": {"correct": [1] * n}, "orientation": {"correct": correct_fine}}},
    }


def _mmvp(correct: dict[str, list[bool]]) -> dict:
    pairs = [
        {"pattern": p, "qids": [2 * i + 1, 2 * i + 2], "correct": c}
        for p, cs in correct.items()
        for i, c in enumerate(cs)
    ]
    return {"average": 0.0, "pairs": pairs}


def _zeroshot(spec: Path, predictions: list[str]) -> dict:
    return {"spec": str(spec), "accuracy": 0.0, "predictions": predictions}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    spec = tmp_path / "zs.json"
    images = []
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(b"")
        images.append({"image": f"{i}.png", "label": "circle" if i % 2 else "star"})
    spec.write_text(
        json.dumps({"template": "a photo of a {}.", "classes": ["circle", "star"], "items": images})
    )
    labels = [it["label"] for it in images]
    base = tmp_path / "base"
    _write(base / "probes.json", _probes([0, 0, 0, 0, 1, 1, 1, 1]))
    _write(base / "mmvp_decision.json", _mmvp({p: [False] * 4 for p in PATTERNS}))
    _write(base / "zeroshot.json", _zeroshot(spec, labels))
    for seed in (0, 1):
        ev = tmp_path / f"seed-{seed}" / "genhancer" / "eval"  # every seed: 2 more fine items right
        _write(ev / "probes.json", _probes([1, 1, 0, 0, 1, 1, 1, 1]))
        _write(
            ev / "mmvp_decision.json",
            _mmvp({PATTERNS[0]: [True, True, False, False], PATTERNS[1]: [False] * 4}),
        )
        _write(ev / "zeroshot.json", _zeroshot(spec, labels))
        ctrl = tmp_path / f"seed-{seed}" / "random-update" / "eval"  # the control: nothing changes
        _write(ctrl / "probes.json", _probes([0, 0, 0, 0, 1, 1, 1, 1]))
        _write(ctrl / "mmvp_decision.json", _mmvp({p: [False] * 4 for p in PATTERNS}))
        _write(ctrl / "zeroshot.json", _zeroshot(spec, labels))
    return tmp_path


def test_report_pools_seeds_and_separates_method_from_control(study: Path):
    report = effect.build_report(study)
    assert report["seeds"] == [0, 1]
    method, control = report["arms"]["genhancer"], report["arms"]["random-update"]
    # fine attributes = all but colour/shape/background: orientation only here -> 2 of 8 items gained
    assert method["probe_fine_mean"]["delta"] == pytest.approx(0.25)
    assert method["probe_fine_mean"]["per_seed"] == pytest.approx([0.25, 0.25])
    lo, hi = method["probe_fine_mean"]["interval"]
    assert 0.0 <= lo < 0.25 < hi
    # MMVP: pattern 1 gains 50 points, pattern 2 none -> average +25
    assert method["mmvp_decision"]["delta"] == pytest.approx(25.0)
    assert control["mmvp_decision"]["delta"] == 0.0 and control["mmvp_decision"]["interval"] == [0.0, 0.0]
    assert method["zeroshot"]["delta"] == 0.0
    assert "zero-condition" not in report["arms"]  # no runs of that arm: left out, not reported as zero
    text = effect.format_report(report)
    assert "| genhancer | +25.00" in text and "| random-update | +0.00" in text


def test_report_refuses_probe_results_on_different_items(study: Path):
    bad = _probes([1, 1, 0, 0, 1, 1, 1, 1])
    bad["items"] = list(reversed(bad["items"]))
    _write(study / "seed-0" / "genhancer" / "eval" / "probes.json", bad)
    with pytest.raises(effect.DataError, match="different val items"):
        effect.build_report(study)

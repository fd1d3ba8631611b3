"""The grid report: seeds pooled per item, intervals over items, differences paired, findings judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genhancer.experiments import report as rp
from genhancer.utils.errors import DataError

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


def _pairs(key: str, values: dict[str, list]) -> dict:
    """An MMVP-style result: per pattern, pair i (qids 2i+1, 2i+2) with ``key`` set to values[pattern][i]."""
    pairs = [
        {"pattern": p, "qids": [2 * i + 1, 2 * i + 2], key: v}
        for p, vs in values.items()
        for i, v in enumerate(vs)
    ]
    return {"pairs": pairs}


def _mmvp(correct: dict[str, list[bool]]) -> dict:
    return _pairs("correct", correct)


def _gap(gaps: dict[str, list[float]]) -> dict:
    return _pairs("gap", gaps)


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    """base + 'method' (2 seeds: +3 pairs of pattern 1 each) + 'control' (2 seeds: unchanged) + 'worse'."""
    spec = tmp_path / "zs.json"
    labels = ["circle" if i % 2 else "star" for i in range(4)]
    spec.write_text(json.dumps({"items": [{"image": f"{i}.png", "label": x} for i, x in enumerate(labels)]}))
    flat = {p: [False] * 4 for p in PATTERNS}
    entries = {
        "base": {
            "group": "",
            "label": "base",
            "seeds": {"-": {"eval": str(tmp_path / "base"), "stage1": None}},
        }
    }
    evals = {
        "base": (_probes([0, 0, 0, 0, 1, 1, 1, 1]), _mmvp(flat), labels),
        "method": (
            _probes([1, 1, 0, 0, 1, 1, 1, 1]),
            _mmvp({PATTERNS[0]: [True, True, True, False], PATTERNS[1]: [False] * 4}),
            labels,
        ),
        "control": (_probes([0, 0, 0, 0, 1, 1, 1, 1]), _mmvp(flat), labels),
        "worse": (_probes([0, 0, 0, 0, 0, 0, 0, 0]), _mmvp(flat), ["circle"] * 4),
    }
    for name, (probes, mmvp, preds) in evals.items():
        seeds = ["-"] if name == "base" else ["0", "1"]
        for s in seeds:
            ev = tmp_path / "base" if name == "base" else tmp_path / "cells" / name / f"seed-{s}" / "eval"
            _write(ev / "probes.json", probes)
            _write(ev / "mmvp.json", mmvp)
            _write(ev / "zeroshot.json", {"spec": str(spec), "predictions": preds})
            if name != "base":
                run1 = tmp_path / "stage1" / name / f"seed-{s}"
                gap = 1.0 if name == "method" else 0.0
                _write(
                    run1.parent / f"{run1.name}.cond_gap.json",
                    _gap({p: [gap, gap, gap, -0.5 * gap] for p in PATTERNS}),
                )
                entries.setdefault(name, {"group": "g", "label": name, "seeds": {}})["seeds"][s] = {
                    "eval": str(ev),
                    "stage1": str(run1),
                }
    findings = [
        {"name": "method helps", "paper": "1 -> 2", "metric": "mmvp", "claims": [["method", "base"]]},
        {
            "name": "beats controls",
            "paper": "",
            "metric": "mmvp",
            "claims": [["method", "control"], ["control", "base"]],
        },
        {"name": "probe drop", "paper": "", "metric": "probes", "claims": [["method", "worse"]]},
        {"name": "not run", "paper": "", "metric": "mmvp", "claims": [["method", "nope"]]},
        {"name": "pending", "paper": "", "metric": "mmvp", "claims": [["pending", "base"]]},
    ]
    plan = {
        "grid": "t",
        "metrics": {"mmvp": "mmvp_vlm", "probes": "probes", "zeroshot": "zeroshot"},
        "stage1_metrics": {"cond_gap": "cond_gap"},
        "findings": findings,
        "entries": entries,
    }
    pending = {"eval": str(tmp_path / "cells" / "pending" / "seed-0" / "eval"), "stage1": None}
    entries["pending"] = {"group": "g", "label": "pending", "seeds": {"0": pending}}  # planned, not run yet
    _write(tmp_path / "plan.json", plan)
    return tmp_path


def test_entries_pool_seeds_and_differences_are_paired(grid_dir: Path):
    report = rp.build_report(grid_dir)
    method = report["entries"]["method"]["metrics"]
    # MMVP: pattern 1 gains 3 of 4 pairs (75 points), pattern 2 none -> average 37.5, the same in both seeds
    assert method["mmvp"]["mean"] == pytest.approx(37.5) and method["mmvp"]["per_seed"] == [37.5, 37.5]
    assert method["mmvp"]["vs_base"]["mean"] == pytest.approx(37.5)
    assert method["mmvp"]["groups"] == {PATTERNS[0]: 75.0, PATTERNS[1]: 0.0}
    lo, hi = method["mmvp"]["vs_base"]["interval"]
    assert 0.0 < lo < 37.5 < hi <= 50.0
    # probes: fine = all but colour / shape / background -> orientation only: 6 of 8 vs 4 of 8
    assert method["probes"]["mean"] == pytest.approx(75.0) and method["probes"]["vs_base"][
        "mean"
    ] == pytest.approx(25.0)
    assert method["zeroshot"]["mean"] == 100.0 and method["zeroshot"]["vs_base"]["interval"] == [0.0, 0.0]
    assert report["entries"]["worse"]["metrics"]["zeroshot"]["mean"] == 50.0
    # the stage-1 diagnostic: mean gap (1 + 1 + 1 - 0.5) / 4 x 100
    assert method["cond_gap"]["mean"] == pytest.approx(62.5) and "vs_base" not in method["cond_gap"]
    assert report["entries"]["base"]["metrics"]["cond_gap"] is None
    control = report["entries"]["control"]["metrics"]["mmvp"]
    assert control["vs_base"]["mean"] == 0.0 and control["vs_base"]["interval"] == [0.0, 0.0]


def test_findings_are_judged_from_the_paired_interval(grid_dir: Path):
    findings = {f["name"]: f for f in rp.build_report(grid_dir)["findings"]}
    assert findings["method helps"]["verdict"] == "reproduced"
    claims = findings["beats controls"]["claims"]
    assert [c["verdict"] for c in claims] == ["reproduced", "inconclusive"]
    assert findings["beats controls"]["verdict"] == "mixed"
    assert findings["probe drop"]["claims"][0]["difference"] == pytest.approx(75.0)
    assert "not run" not in findings  # its claim names a cell this grid run did not plan
    assert findings["pending"]["verdict"] == "not finished"
    assert (
        rp.verdict([-3.0, -1.0]) == "opposite"
        and rp.finding_verdict(["opposite", "inconclusive"]) == "not reproduced"
    )


def test_tables_csv_and_plots(grid_dir: Path):
    report = rp.build_report(grid_dir)
    text = rp.format_report(report)
    assert "| g | method | 2 | 37.5 [" in text
    assert "method helps — **reproduced**" in text and "| method > control (mmvp) | +37.5 [" in text
    assert "| method | 75.0 | 0.0 | 37.5 |" in text  # per-pattern table
    assert "| g | pending | 0 | – | – |" in text
    rows = rp.to_csv(report).splitlines()
    assert rows[0].startswith("entry,group,metric,mean,low,high") and any(
        r.startswith("method,g,mmvp,37.5000") for r in rows
    )
    png = rp.plot(report, grid_dir / "r.png")
    assert png.stat().st_size > 10_000
    report["entries"]["method@10"] = report["entries"]["method"]
    assert (
        rp.plot_snapshots(report, {"method@10": 10, "method": 100}, grid_dir / "s.png").stat().st_size
        > 10_000
    )
    assert rp.plot_snapshots(report, {}, grid_dir / "none.png") is None


def test_results_on_different_items_are_refused(grid_dir: Path):
    other = _mmvp({"Texts": [True] * 4})
    _write(grid_dir / "cells" / "worse" / "seed-0" / "eval" / "mmvp.json", other)
    _write(grid_dir / "cells" / "worse" / "seed-1" / "eval" / "mmvp.json", other)
    with pytest.raises(DataError, match="no items in common"):
        rp.build_report(grid_dir)


def test_a_missing_plan_says_what_to_run(tmp_path: Path):
    with pytest.raises(DataError, match="no plan.json.*genhancer.experiments run --out"):
        rp.build_report(tmp_path)


def test_wall_time_is_summed_by_kind_of_step(grid_dir: Path):
    steps = {
        "prepare/vq": 1.0,
        "base/eval/mmvp": 2.0,
        "stage1/abc/seed-0": 10.0,
        "stage1/abc/seed-0/cond_gap": 3.0,
        "cells/a/seed-0/tune": 20.0,
        "cells/a/seed-0/export": 4.0,
        "cells/a/seed-0/eval/mmvp": 5.0,
        "cells/a/seed-0/steps/step-000010/export": 6.0,
        "cells/a/seed-0/steps/step-000010/eval/probes": 7.0,
    }
    status = {"steps": {k: {"state": "done", "seconds": v} for k, v in steps.items()}, "step_seconds": 58.0}
    _write(grid_dir / "status.json", status)
    wall = rp.build_report(grid_dir)["wall"]
    assert wall["seconds"] == 58.0
    assert wall["by_kind"] == {
        "prepare": 1.0,
        "evaluations": 14.0,
        "stage1": 10.0,
        "cond_gap": 3.0,
        "tune": 20.0,
        "export": 10.0,
    }
    assert "Compute wall time of the steps: 1.0 min (tune 0.3 min" in rp.format_report(
        rp.build_report(grid_dir)
    )

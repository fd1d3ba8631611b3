"""Leaderboard merging on hand-written result files: deltas, protocol marks, missing cells, outputs, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from eval.leaderboard import main, make_leaderboard
from genhancer.utils.errors import ConfigError, DataError

PATTERNS = ["Orientation and Direction", "Quantity and Count", "Color and Appearance"]


def lmms_result(path: Path, model: str, scores: dict, *, limit=None, protocol=None, encoder=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps({
        "format": "genhancer-lmms-results/1",
        "model": {"path": model, "kind": "llava", "encoder": encoder, "llm": "/runs/toy/llm"},
        "backend": "genhancer_llava", "suite": "toy", "tasks": list(scores), "limit": limit,
        "scores": scores, "protocol": protocol or {t: {"mode": "generation"} for t in scores},
    }))
    return path


def pope(f1: float) -> dict:
    return {"pope_accuracy": f1, "pope_f1_score": f1, "pope_precision": f1, "pope_recall": f1}


@pytest.fixture
def runs(tmp_path):
    base = lmms_result(tmp_path / "lmms" / "baseline", "/runs/toy/llava/baseline/final", {
        "toy_mmvp": {"mmvp_accuracy": 0.5, "mmvp_pair_accuracy": 0.25},
        "toy_pope_random": pope(0.6),
        "mmvp": {"mmvp_accuracy": 0.6, "mmvp_pair_accuracy": 0.3},
        "pope_random": pope(0.85), "pope_pop": pope(0.84), "pope_adv": pope(0.80),
        "naturalbench": {"naturalbench_ACC": 0.7, "naturalbench_G_ACC": 0.2},
    }, encoder="/runs/toy/clip")
    enh = lmms_result(tmp_path / "lmms" / "enhanced", "/runs/toy/llava/enhanced/final", {
        "toy_mmvp": {"mmvp_accuracy": 0.6, "mmvp_pair_accuracy": 0.40},
        "toy_mmvp_ll": {"mmvp_accuracy": 0.7, "mmvp_pair_accuracy": 0.5},
        "mmvp": {"mmvp_accuracy": 0.7, "mmvp_pair_accuracy": 0.35},
        "naturalbench": {"naturalbench_ACC": 0.72, "naturalbench_G_ACC": 0.25},
    }, limit=8, protocol={"naturalbench": {"mode": "likelihood"}}, encoder="/runs/toy/genhancer/export")
    vlm = tmp_path / "vlm.json"
    vlm.write_text(json.dumps({"benchmark": "mmvp_vlm", "model_dir": "/runs/toy/genhancer/export",
                               "scores": {p: 40.0 for p in PATTERNS}, "average": 40.0, "num_pairs": 45}))
    return base, enh, vlm


def test_deltas_marks_missing_cells_and_outputs(runs, tmp_path):
    out = tmp_path / "board"
    table = make_leaderboard(list(runs), out, baseline="baseline", references=[], columns="toy")
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows) == {"baseline", "enhanced", "genhancer"}
    enh = rows["enhanced"]["cells"]
    assert enh["toy_mmvp"]["value"] == pytest.approx(40.0)
    assert enh["toy_mmvp"]["delta"] == pytest.approx(15.0)
    assert enh["toy_mmvp"]["protocol_differs"] == {"subset": {"this": "first 8 per task (--limit)",
                                                              "compared": "full"}}
    assert enh["toy_pope_f1_random"] is None  # missing cell
    assert enh["toy_mmvp_ll"]["delta"] is None  # the baseline has no such cell
    assert rows["baseline"]["is_baseline"] and rows["baseline"]["cells"]["toy_mmvp"]["delta"] is None
    assert rows["genhancer"]["kind"] == "encoder" and rows["genhancer"]["cells"]["mmvp_vlm"]["value"] == 40.0

    md = (out / "leaderboard.md").read_text()
    assert "| **baseline** (baseline) |" in md
    assert "40.0 (+15.0)†" in md and "–" in md
    assert "enhanced / toy_mmvp: subset: first 8 per task (--limit) vs full" in md
    rows_csv = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    enh_csv = next(r for r in rows_csv if r["model"] == "enhanced")
    assert float(enh_csv["toy_mmvp"]) == pytest.approx(40.0)
    assert float(enh_csv["delta:toy_mmvp"]) == pytest.approx(15.0)
    assert enh_csv["toy_pope_f1_random"] == "" and enh_csv["protocol_differs:toy_mmvp"] == "subset"
    assert json.loads((out / "leaderboard.json").read_text())["baseline"] == "baseline"
    assert (out / "leaderboard.png").stat().st_size > 1000


def test_against_published_baseline_marks_protocol_differences(runs, tmp_path):
    table = make_leaderboard(list(runs[:2]), tmp_path / "b", baseline="LLaVA-1.5-7B (CLIP-L/14-336)",
                             columns="real", chart=False)
    rows = {r["name"]: r for r in table["rows"]}
    ours = rows["baseline"]["cells"]
    assert ours["mmvp"]["value"] == pytest.approx(30.0) and ours["mmvp"]["delta"] == pytest.approx(30.0 - 24.7)
    assert set(ours["mmvp"]["protocol_differs"]) == {"answers"}  # lmms-eval's corrected MMVP answers
    assert ours["pope_f1_random"]["protocol_differs"] == {}  # F1 vs F1, generation vs generation
    assert ours["pope_f1_avg"]["value"] == pytest.approx(100 * (0.85 + 0.84 + 0.80) / 3)
    nb = rows["enhanced"]["cells"]["naturalbench_acc"]["protocol_differs"]
    assert nb["mode"] == {"this": "likelihood", "compared": "generation"} and "subset" in nb
    assert rows["LLaVA-1.5-7B (model zoo)"]["cells"]["pope_f1_avg"]["value"] == 85.9
    assert "LLaVA-1.5-13B (GenHancer CLIP)" in rows


def test_bad_inputs_give_one_clear_message(runs, tmp_path, capsys):
    raw = tmp_path / "raw_results.json"
    raw.write_text(json.dumps({"results": {"mmvp": {}}, "lmms_eval_version": "0.7.3"}))
    with pytest.raises(DataError, match="lmms-eval's raw results file; pass the run directory"):
        make_leaderboard([raw], tmp_path / "o", references=[])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(DataError, match="not a results file of eval.lmms"):
        make_leaderboard([other], tmp_path / "o", references=[])
    newer = lmms_result(tmp_path / "newer", "/m", {"toy_mmvp": {"mmvp_accuracy": 0.1}})
    data = json.loads((newer / "results.json").read_text())
    with pytest.raises(DataError, match="task 'toy_mmvp' has no metric 'mmvp_pair_accuracy'"):
        make_leaderboard([newer], tmp_path / "o", references=[])
    data["format"] = "genhancer-lmms-results/9"
    (newer / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="format 'genhancer-lmms-results/9' is not supported"):
        make_leaderboard([newer], tmp_path / "o", references=[])
    with pytest.raises(ConfigError, match="--baseline 'nosuch' matches no row; rows: baseline"):
        make_leaderboard(list(runs), tmp_path / "o", baseline="nosuch", references=[])
    ref = tmp_path / "ref.yaml"
    ref.write_text("source: x\nrows:\n  - {name: m, scores: {mmvpp: 1.0}}\n")
    with pytest.raises(ConfigError, match=r"ref.yaml, rows\[0\]: unknown column 'mmvpp'"):
        make_leaderboard(list(runs), tmp_path / "o", references=[ref])
    assert main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_cli_prints_markdown(runs, tmp_path, capsys):
    assert main(["--runs", *map(str, runs), "--baseline", "baseline", "--out", str(tmp_path / "o"),
                 "--no-chart", "--references", "none"]) == 0
    out = capsys.readouterr().out
    assert "| model | kind | encoder | LLM | source |" in out and "leaderboard ->" in out


def test_encoder_and_llm_come_from_the_model_dirs_provenance(tmp_path):
    from genhancer.utils.provenance import write_provenance

    enc, llm, model = tmp_path / "enc", tmp_path / "llm", tmp_path / "llava_a"
    for d in (enc, llm, model):
        d.mkdir()
    write_provenance(model, "llava", parents=[enc, llm], command=["test"])
    run = lmms_result(tmp_path / "run", str(model), {"toy_mmvp": {"mmvp_pair_accuracy": 0.5}})
    row = make_leaderboard([run], tmp_path / "o", references=[], chart=False)["rows"][0]
    assert (row["encoder"], row["llm"]) == (str(enc.resolve()), str(llm.resolve()))
    assert "| llava_a | llava | enc | llm | ours |" in (tmp_path / "o" / "leaderboard.md").read_text()

"""Leaderboard on hand-written result files: two tables, deltas, intervals, protocol marks, table width,
chart panels only where there is data, bad input."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from eval.leaderboard import (
    COLUMNS,
    MAX_MD_COLUMNS,
    _figure,
    chart_bands,
    main,
    make_leaderboard,
    parse_interval,
    split_columns,
)
from genhancer.utils.errors import ConfigError, DataError

REFS = Path(__file__).resolve().parents[2] / "eval" / "references"
PATTERNS = ["Orientation and Direction", "Quantity and Count", "Color and Appearance"]


def lmms_result(
    path: Path, model: str, scores: dict, *, limit=None, protocol=None, encoder=None, **extra
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(
        json.dumps(
            {
                "format": "genhancer-lmms-results/1",
                "model": {"path": model, "kind": "llava", "encoder": encoder, "llm": "/runs/toy/llm"},
                "backend": "genhancer_llava",
                "suite": "toy",
                "tasks": list(scores),
                "limit": limit,
                "scores": scores,
                "protocol": protocol or {t: {"mode": "generation"} for t in scores},
                **extra,
            }
        )
    )
    return path


def vlm_result(path: Path, model_dir: str, scores: dict, **extra) -> Path:
    path.write_text(
        json.dumps(
            {
                "benchmark": "mmvp_vlm",
                "model_dir": model_dir,
                "bench_dir": "/w/mmvp_vlm",
                "scores": scores,
                "average": sum(scores.values()) / len(scores),
                "num_pairs": 15 * len(scores),
                **extra,
            }
        )
    )
    return path


def pope(f1: float) -> dict:
    return {"pope_accuracy": f1, "pope_f1_score": f1, "pope_precision": f1, "pope_recall": f1}


@pytest.fixture
def runs(tmp_path):
    return write_runs(tmp_path)


def write_runs(tmp_path: Path) -> tuple[Path, ...]:
    """Two toy LLaVAs (one with --limit, some intervals) and the MMVP-VLM results of their encoders."""
    base = lmms_result(
        tmp_path / "lmms" / "baseline",
        "/runs/toy/llava/baseline/final",
        {
            "toy_mmvp": {
                "mmvp_accuracy": 0.5,
                "mmvp_pair_accuracy": 0.25,
                "mmvp_pair_accuracy_ci95": [0.1, 0.4],
            },
            "toy_pope_random": pope(0.6),
            "mmvp": {"mmvp_accuracy": 0.6, "mmvp_pair_accuracy": 0.3},
            "pope_random": pope(0.85),
            "pope_pop": pope(0.84),
            "pope_adv": pope(0.80),
            "naturalbench": {"naturalbench_ACC": 0.7, "naturalbench_G_ACC": 0.2},
        },
        encoder="/runs/toy/clip",
    )
    enh = lmms_result(
        tmp_path / "lmms" / "enhanced",
        "/runs/toy/llava/enhanced/final",
        {
            "toy_mmvp": {"mmvp_accuracy": 0.6, "mmvp_pair_accuracy": 0.40},
            "toy_mmvp_ll": {
                "mmvp_accuracy": 0.7,
                "mmvp_pair_accuracy": 0.5,
                "mmvp_pair_accuracy_stderr": 0.05,
            },
            "mmvp": {"mmvp_accuracy": 0.7, "mmvp_pair_accuracy": 0.35},
            "naturalbench": {"naturalbench_ACC": 0.72, "naturalbench_G_ACC": 0.25},
        },
        limit=8,
        protocol={"naturalbench": {"mode": "likelihood"}},
        encoder="/runs/toy/genhancer/export",
        ci95={"toy_mmvp": {"mmvp_pair_accuracy": {"lo": 0.3, "hi": 0.5}}},
    )
    before = vlm_result(
        tmp_path / "mmvp_before.json",
        "/runs/toy/clip",
        {p: 20.0 for p in PATTERNS},
        ci95={"average": [10.0, 30.0], PATTERNS[0]: [5.0, 40.0]},
    )
    after = vlm_result(
        tmp_path / "mmvp_after.json",
        "/runs/toy/genhancer/export",
        {PATTERNS[0]: 40.0, PATTERNS[1]: 40.0, PATTERNS[2]: 100.0},
        average_ci95=[45.0, 75.0],
        scores_ci95={PATTERNS[2]: [90.0, 100.0]},
    )
    return base, enh, before, after


def md_tables(md: str) -> list[list[str]]:
    """Each markdown table of ``md`` as its header cells."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for prev, line in zip([""] + md.splitlines(), md.splitlines())
        if line.startswith("|") and not prev.startswith("|")
    ]


def test_two_tables_deltas_intervals_and_outputs(runs, tmp_path):
    out = tmp_path / "board"
    board = make_leaderboard(
        list(runs), out, baseline="baseline", references=[REFS / "mmvp_vlm_table1.yaml"], columns="toy"
    )
    mllm, enc = board["tables"]["mllms"], board["tables"]["encoders"]
    assert [r["name"] for r in mllm["rows"]] == ["baseline", "enhanced"]
    assert [r["name"] for r in enc["rows"]][:3] == ["clip", "genhancer", "OpenAI CLIP-L/14@224"]
    assert {c["id"] for c in mllm["columns"]}.isdisjoint({c["id"] for c in enc["columns"]})
    rows = {r["name"]: r for r in mllm["rows"]}
    enh = rows["enhanced"]["cells"]
    assert enh["toy_mmvp"]["value"] == pytest.approx(40.0) and enh["toy_mmvp"]["delta"] == pytest.approx(15.0)
    assert enh["toy_mmvp"]["ci95"] == pytest.approx([30.0, 50.0])  # top-level ci95, 0-1 -> percent
    assert (
        enh["toy_mmvp_ll"]["ci95"] == pytest.approx([50 - 9.8, 50 + 9.8])
        and enh["toy_mmvp_ll"]["delta"] is None
    )
    assert rows["baseline"]["cells"]["toy_mmvp"]["ci95"] == pytest.approx([10.0, 40.0])
    assert enh["toy_mmvp"]["protocol_differs"] == {
        "subset": {"this": "first 8 per task (--limit)", "compared": "full"}
    }
    assert enh["toy_pope_f1_random"] is None  # missing cell
    assert rows["baseline"]["is_baseline"] and rows["baseline"]["cells"]["toy_mmvp"]["delta"] is None
    # the encoder table's baseline is the MLLM baseline's encoder (runs/toy/clip)
    assert enc["baseline"] == "clip" and "encoder of the MLLM baseline `baseline`" in enc["baseline_reason"]
    after = {r["name"]: r for r in enc["rows"]}["genhancer"]["cells"]
    assert after["mmvp_vlm"]["delta"] == pytest.approx(60.0 - 20.0) and after["mmvp_vlm"]["ci95"] == [
        45.0,
        75.0,
    ]
    assert after["mmvp_vlm:Color and Appearance"]["ci95"] == [90.0, 100.0]

    md = (out / "leaderboard.md").read_text()
    assert "| **baseline** (baseline) | ours |" in md
    assert "40.0 (+15.0) [30.0–50.0]†" in md and "–" in md
    assert "60.0 (+40.0) [45.0–75.0]" in md
    assert "- † toy-MMVP (subset: first 8 per task (--limit) vs full): enhanced\n" in md
    # published encoder rows were measured on other images than our toy folder: said once, for all of them
    assert (
        "- † average (data: the official MMVP-VLM (135 pairs) vs /w/mmvp_vlm (45 pairs)): "
        "OpenAI CLIP-L/14@224, OpenAI CLIP-L/14@224 + DIVA, " in md
    )
    assert "Deltas (in parentheses) are against **clip** (the encoder of the MLLM baseline `baseline`)." in md
    cells = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    one = next(c for c in cells if c["model"] == "enhanced" and c["column"] == "toy_mmvp")
    assert (one["table"], float(one["value"]), float(one["delta"])) == ("mllms", 40.0, 15.0)
    assert (float(one["ci95_lo"]), float(one["ci95_hi"]), one["protocol_differs"]) == (30.0, 50.0, "subset")
    assert not any(c["model"] == "enhanced" and c["column"] == "toy_pope_f1_random" for c in cells)
    assert json.loads((out / "leaderboard.json").read_text())["baseline"] == {
        "mllms": "baseline",
        "encoders": "clip",
    }
    assert (out / "leaderboard.png").stat().st_size > 10_000


def test_against_published_baseline_marks_protocol_differences(runs, tmp_path):
    board = make_leaderboard(
        list(runs), tmp_path / "b", baseline="LLaVA-1.5-7B (CLIP-L/14-336)", columns="real", chart=False
    )
    rows = {r["name"]: r for r in board["tables"]["mllms"]["rows"]}
    ours = rows["baseline"]["cells"]
    assert ours["mmvp"]["value"] == pytest.approx(30.0) and ours["mmvp"]["delta"] == pytest.approx(
        30.0 - 24.7
    )
    assert set(ours["mmvp"]["protocol_differs"]) == {"answers"}  # lmms-eval's corrected MMVP answers
    assert ours["pope_f1_random"]["protocol_differs"] == {}  # F1 vs F1, generation vs generation
    assert ours["pope_f1_avg"]["value"] == pytest.approx(100 * (0.85 + 0.84 + 0.80) / 3)
    nb = rows["enhanced"]["cells"]["naturalbench_acc"]["protocol_differs"]
    assert nb["mode"] == {"this": "likelihood", "compared": "generation"} and "subset" in nb
    assert rows["LLaVA-1.5-7B (model zoo)"]["cells"]["pope_f1_avg"]["value"] == 85.9
    assert "LLaVA-1.5-13B (GenHancer CLIP)" in rows
    # published encoder rows sit beside ours in the encoder table; no MLLM row lands there
    enc = board["tables"]["encoders"]
    assert {r["origin"] for r in enc["rows"]} == {"ours", "GenHancer (arXiv 2503.19480), Table 1"}
    assert all(r["kind"] == "encoder" for r in enc["rows"]) and enc["baseline"] is None
    md = board["markdown"]
    assert "| OpenAI CLIP-L/14@224 | GenHancer T1 | 19.3 |" in md
    assert "- GenHancer T1: GenHancer (arXiv 2503.19480), Table 1\n" in md
    assert (
        "- † average (data: /w/mmvp_vlm (45 pairs) vs the official MMVP-VLM (135 pairs)): clip, genhancer"
        in md
    )


def test_markdown_tables_stay_narrow_and_lose_no_column(runs, tmp_path):
    """Every column with data (here 20+ MLLM columns) appears in some table of at most MAX_MD_COLUMNS."""
    scores = {t: {c.metric: 0.5 for c in COLUMNS if c.task == t} for t in {c.task for c in COLUMNS if c.task}}
    wide = lmms_result(tmp_path / "wide", "/runs/wide/model", scores)
    board = make_leaderboard([wide, *runs], tmp_path / "w", references=None, columns="all", chart=False)
    tables = md_tables(board["markdown"])
    assert len(tables) >= 3 and all(len(h) <= MAX_MD_COLUMNS for h in tables)
    shown = [h for t in tables for h in t[2:]]
    expected = [c["label"] for tb in board["tables"].values() for c in tb["columns"]]
    assert sorted(shown) == sorted(expected) and len(expected) > MAX_MD_COLUMNS
    assert all(h[:2] == ["model", "source"] for h in tables)


def test_split_columns_cuts_between_benchmarks():
    cols = [
        {"id": f"{g}{i}", "group": g} for g, n in (("a", 4), ("b", 5), ("c", 3), ("d", 12)) for i in range(n)
    ]
    chunks = split_columns(cols, width=10)
    assert [len(c) for c in chunks] == [9, 3, 10, 2]
    assert [{x["group"] for x in c} for c in chunks[:2]] == [{"a", "b"}, {"c"}]
    assert [x for c in chunks for x in c] == cols


def test_chart_draws_only_panels_with_data(runs, tmp_path):
    board = make_leaderboard(
        list(runs), tmp_path / "c", baseline="baseline", references=None, columns="all", chart=False
    )
    # a column whose every cell is empty (e.g. a board written by hand or by another tool) gets no panel
    mllm = board["tables"]["mllms"]
    mllm["columns"].append(
        {"id": "gqa", "label": "GQA", "group": "GQA", "short": "accuracy", "family": "real", "percent": True}
    )
    for r in mllm["rows"]:
        r["cells"]["gqa"] = None
    with_data = {
        c["id"]
        for tb in board["tables"].values()
        for c in tb["columns"]
        if any(r["cells"][c["id"]] for r in tb["rows"])
    }
    assert "gqa" not in with_data and len(with_data) < len(COLUMNS)
    bands = chart_bands(board)
    assert sorted(p.column["id"] for b in bands for p in b.panels) == sorted(with_data)
    assert [b.title for b in bands][:6] == [
        "MMVP-VLM",
        "MMVP-VLM per pattern",
        "MMVP",
        "NaturalBench",
        "CV-Bench",
        "POPE",
    ]
    fig = _figure(board)
    axes = [ax for sub in fig.subfigs for ax in sub.axes if ax.get_visible()]
    assert len(axes) == len(with_data)
    for ax in axes:  # every drawn panel has at least one bar
        assert len(ax.patches) >= 1, ax.get_title()
    whiskers = sum(len(ax.collections) for ax in axes)
    cis = sum(
        1
        for tb in board["tables"].values()
        for r in tb["rows"]
        for c in r["cells"].values()
        if c and c["ci95"]
    )
    assert whiskers == cis > 0
    assert min(t.get_fontsize() for ax in axes for t in ax.get_yticklabels()) >= 8  # legible at 100%


def test_intervals_are_checked():
    assert parse_interval([1, 2], "x") == (1.0, 2.0)
    assert parse_interval({"low": 1, "high": 2}, "x") == (1.0, 2.0)
    for bad in ([2, 1], [1], "1-2", {"lo": 1}, [True, 2]):
        with pytest.raises(DataError, match="x: an interval must be"):
            parse_interval(bad, "x")


def test_interval_on_the_wrong_scale_is_an_error(tmp_path):
    bad = lmms_result(
        tmp_path / "bad", "/m", {"toy_mmvp": {"mmvp_pair_accuracy": 0.4, "mmvp_pair_accuracy_ci95": [30, 50]}}
    )
    with pytest.raises(
        DataError,
        match=r"scores.toy_mmvp.mmvp_pair_accuracy_ci95: interval \[30, 50\] does not "
        r"contain the value 0.4",
    ):
        make_leaderboard([bad], tmp_path / "o", references=[], chart=False)
    vlm = vlm_result(tmp_path / "v.json", "/e", {PATTERNS[0]: 40.0}, ci95={"Texts": [1, 2]})
    with pytest.raises(DataError, match="interval for 'Texts', which has no score"):
        make_leaderboard([vlm], tmp_path / "o", references=[], chart=False)


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
    with pytest.raises(
        ConfigError, match="--baseline 'nosuch' matches no row; rows: clip, genhancer, baseline, enhanced"
    ):
        make_leaderboard(list(runs), tmp_path / "o", baseline="nosuch", references=[])
    with pytest.raises(ConfigError, match="--baseline 'e' matches 2 rows of the mllms table"):
        make_leaderboard(list(runs), tmp_path / "o", baseline="e", references=[])
    with pytest.raises(ConfigError, match="'baseline' and 'enhanced' are both rows of the mllms table"):
        make_leaderboard(list(runs), tmp_path / "o", baseline=["baseline", "enhanced"], references=[])
    ref = tmp_path / "ref.yaml"
    ref.write_text("source: x\nrows:\n  - {name: m, scores: {mmvpp: 1.0}}\n")
    with pytest.raises(ConfigError, match=r"ref.yaml, rows\[0\]: unknown column 'mmvpp'"):
        make_leaderboard(list(runs), tmp_path / "o", references=[ref])
    assert main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_cli_as_compare_leaderboard_sh_calls_it(runs, tmp_path, capsys):
    """scripts/compare_leaderboard.sh: `--runs ... --baseline NAME --out DIR` (the chart on)."""
    assert main(["--runs", *map(str, runs), "--baseline", "baseline", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "## Encoders: MMVP-VLM" in out and "## MLLMs:" in out and "leaderboard ->" in out
    # the chart draws the baseline's bars and ours, each in its colour
    from eval.leaderboard import COLOURS

    for who in ("baseline", "ours"):
        assert _colour_area(tmp_path / "o" / "leaderboard.png", COLOURS[who]) > 500, who
    assert (
        main(
            [
                "--runs",
                *map(str, runs),
                "--baseline",
                "baseline",
                "clip",
                "--out",
                str(tmp_path / "p"),
                "--no-chart",
                "--references",
                "none",
            ]
        )
        == 0
    )
    board = json.loads((tmp_path / "p" / "leaderboard.json").read_text())
    assert board["tables"]["encoders"]["baseline_reason"] == "--baseline clip"


def test_encoder_and_llm_come_from_the_model_dirs_provenance(tmp_path):
    from genhancer.utils.provenance import write_provenance

    enc, llm, model = tmp_path / "enc", tmp_path / "llm", tmp_path / "llava_a"
    for d in (enc, llm, model):
        d.mkdir()
    write_provenance(model, "llava", parents=[enc, llm], command=["test"])
    run = lmms_result(tmp_path / "run", str(model), {"toy_mmvp": {"mmvp_pair_accuracy": 0.5}})
    row = make_leaderboard([run], tmp_path / "o", references=[], chart=False)["tables"]["mllms"]["rows"][0]
    assert (row["encoder"], row["llm"]) == (str(enc.resolve()), str(llm.resolve()))
    md = (tmp_path / "o" / "leaderboard.md").read_text()
    assert re.search(r"- \*\*llava_a\*\* \(ours\): `.*llava_a`; encoder `enc`; LLM `llm`", md)


def _colour_area(png: Path, hex_colour: str) -> int:
    """Pixels of ``png`` within a few levels of ``hex_colour``."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).sum(-1) <= 6).sum())


def test_mmvp_vlm_results_of_our_own_writer_get_their_whiskers(tmp_path):
    import torch

    from eval.mmvp_vlm import score_intervals, score_pairs

    n = 30
    logits = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(0))
    result = score_pairs(
        logits, [(2 * i + 1, 2 * i + 2) for i in range(n)], [PATTERNS[i % 3] for i in range(n)]
    )
    result.update(benchmark="mmvp_vlm", model_dir="/e", bench_dir="/w/mmvp_vlm")
    result["intervals"] = score_intervals(result, n_boot=200)
    path = tmp_path / "v.json"
    path.write_text(json.dumps(result))
    board = make_leaderboard([path], tmp_path / "o", references=[], chart=False)
    cells = board["tables"]["encoders"]["rows"][0]["cells"]
    assert cells["mmvp_vlm"]["ci95"] == pytest.approx(result["intervals"]["average"])
    own = result["intervals"]["scores"][PATTERNS[1]]
    assert cells[f"mmvp_vlm:{PATTERNS[1]}"]["ci95"] == pytest.approx(own) and own[0] < own[1]

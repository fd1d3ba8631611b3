"""``python -m eval.lmms compare``: metrics recomputed from per-sample logs with the tasks' own aggregations,
paired bootstrap intervals, MMVP pairs resampled whole, several seeds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eval.lmms import suites
from eval.lmms.compare import aggregations, compare_runs, parse_runs, run_samples, score_intervals, task_yaml
from eval.lmms.tasks.toy_mmvp import utils as mmvp_utils
from eval.lmms.tasks.toy_vqa import utils as vqa_utils
from genhancer.utils.errors import ConfigError


def _vqa_docs(n: int) -> list[dict]:
    types = vqa_utils.QUESTION_TYPES
    return [
        {"question_id": f"q{i}", "question_type": types[i % len(types)], "question": "?", "answer": "red"}
        for i in range(n)
    ]


def fake_run(root: Path, toy_world: Path, answers: dict[str, list[tuple[dict, str]]]) -> Path:
    """An eval.lmms run dir: include dir, per-sample logs in lmms-eval's format, results.json listing them."""
    suites.write_include_dir(list(answers), root / "lmms_tasks", toy_data=toy_world)
    samples = []
    for task, rows in answers.items():
        utils = {"toy_vqa": vqa_utils, "toy_mmvp": mmvp_utils}[task]
        path = root / "lmms_out" / f"20260101_samples_{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for i, (doc, reply) in enumerate(rows):
                f.write(
                    json.dumps({"doc_id": i, "filtered_resps": reply, **utils.process_results(doc, [reply])})
                    + "\n"
                )
        samples.append(str(path))
    (root / "results.json").write_text(json.dumps({"format": "genhancer-lmms-results/1", "samples": samples}))
    return root


def _replies(docs: list[dict], p_correct: float, rng: random.Random) -> list[tuple[dict, str]]:
    return [(d, d["answer"] if rng.random() < p_correct else "blue") for d in docs]


def test_identical_runs_differ_by_exactly_zero(tmp_path, toy_world):
    docs = _vqa_docs(90)
    rows = _replies(docs, 0.6, random.Random(0))
    a = fake_run(tmp_path / "a", toy_world, {"toy_vqa": rows})
    b = fake_run(tmp_path / "b", toy_world, {"toy_vqa": rows})
    res = compare_runs({"a": [a], "b": [b]}, "a", iters=200)
    m = res["comparisons"]["b"]["toy_vqa"]["vqa_accuracy"]
    assert m["baseline"] == m["other"] == pytest.approx(sum(r[1] == "red" for r in rows) / 90)
    assert m["diff"] == 0 and m["ci95"] == [0, 0]


def test_a_real_difference_is_found_and_a_tiny_one_is_not(tmp_path, toy_world):
    docs = _vqa_docs(360)
    base = fake_run(tmp_path / "base", toy_world, {"toy_vqa": _replies(docs, 0.5, random.Random(1))})
    good = fake_run(tmp_path / "good", toy_world, {"toy_vqa": _replies(docs, 0.9, random.Random(2))})
    same = fake_run(tmp_path / "same", toy_world, {"toy_vqa": _replies(docs, 0.5, random.Random(3))})
    res = compare_runs({"base": [base], "good": [good], "same": [same]}, "base", iters=400)
    up = res["comparisons"]["good"]["toy_vqa"]["vqa_accuracy"]
    lo, hi = up["ci95"]
    assert 0.3 < up["diff"] < 0.5 and lo > 0.2 and lo < up["diff"] < hi
    flat = res["comparisons"]["same"]["toy_vqa"]["vqa_accuracy"]
    assert flat["ci95"][0] < 0 < flat["ci95"][1]
    # every question type has its own metric, recomputed with the task's aggregation
    assert set(res["comparisons"]["good"]["toy_vqa"]) == set(vqa_utils.METRICS)


def test_mmvp_pairs_are_resampled_whole(tmp_path, toy_world):
    docs = []
    for k in range(40):
        for j in range(2):
            docs.append(
                {
                    "Index": 2 * k + j + 1,
                    "Options": "(a) x (b) y",
                    "Correct Answer": "(a)" if j == 0 else "(b)",
                    "pattern": "Color and Appearance",
                }
            )
    rng = random.Random(4)
    rows_a = [(d, "A" if rng.random() < 0.7 else "B") for d in docs]
    rows_b = [(d, mmvp_utils.doc_to_target(d)) for d in docs]  # always right
    a = fake_run(tmp_path / "a", toy_world, {"toy_mmvp": rows_a})
    b = fake_run(tmp_path / "b", toy_world, {"toy_mmvp": rows_b})
    res = compare_runs({"a": [a], "b": [b]}, "a", iters=300)
    pair = res["comparisons"]["b"]["toy_mmvp"]["mmvp_pair_accuracy"]
    assert pair["units"] == 40  # pairs, not images
    assert pair["other"] == 1.0
    recs = [mmvp_utils.process_results(d, [r])["mmvp_pair_accuracy"] for d, r in rows_a]
    assert pair["baseline"] == pytest.approx(mmvp_utils.aggregate_pair_accuracy(recs))
    assert 0 < pair["ci95"][0] <= pair["diff"] <= pair["ci95"][1]


def test_seeds_are_paired_and_averaged(tmp_path, toy_world):
    docs = _vqa_docs(90)
    runs = {"base": [], "enh": []}
    for seed, (pb, pe) in enumerate(((0.5, 0.6), (0.4, 0.7))):
        runs["base"].append(
            fake_run(tmp_path / f"b{seed}", toy_world, {"toy_vqa": _replies(docs, pb, random.Random(seed))})
        )
        runs["enh"].append(
            fake_run(
                tmp_path / f"e{seed}", toy_world, {"toy_vqa": _replies(docs, pe, random.Random(9 + seed))}
            )
        )
    m = compare_runs(runs, "base", iters=200)["comparisons"]["enh"]["toy_vqa"]["vqa_accuracy"]
    assert m["seeds"] == 2 and len(m["baseline_per_seed"]) == 2
    assert m["diff"] == pytest.approx(sum(m["other_per_seed"]) / 2 - sum(m["baseline_per_seed"]) / 2)


def _list_samples(run: Path, relative_to: Path) -> None:
    """Rewrite RUN/results.json so it lists its per-sample logs relative to ``relative_to``."""
    summary = json.loads((run / "results.json").read_text())
    summary["samples"] = [str(Path(s).relative_to(relative_to)) for s in summary["samples"]]
    (run / "results.json").write_text(json.dumps(summary))


def test_a_moved_run_directory_is_read_from_anywhere(tmp_path, toy_world, monkeypatch):
    rows = _replies(_vqa_docs(30), 0.5, random.Random(2))
    run = fake_run(tmp_path / "a", toy_world, {"toy_vqa": rows})
    _list_samples(run, run)  # as eval.lmms run lists them: relative to the run directory
    moved = run.rename(tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_samples(moved) == {"toy_vqa": moved / "lmms_out" / "20260101_samples_toy_vqa.jsonl"}
    res = compare_runs({"a": [moved], "b": [moved]}, "a", iters=50)
    m = res["comparisons"]["b"]["toy_vqa"]["vqa_accuracy"]
    assert m["diff"] == 0 and m["baseline"] == pytest.approx(sum(r[1] == "red" for r in rows) / 30)
    # results written before: the logs listed relative to the working directory of the run
    old = fake_run(tmp_path / "old", toy_world, {"toy_vqa": rows})
    _list_samples(old, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert run_samples(Path("old")) == {"toy_vqa": Path("old/lmms_out/20260101_samples_toy_vqa.jsonl")}
    monkeypatch.chdir(tmp_path / "elsewhere")  # ... and from another directory: found by name in the run dir
    assert run_samples(tmp_path / "old") == {"toy_vqa": old / "lmms_out" / "20260101_samples_toy_vqa.jsonl"}


def test_yaml_aggregations_and_errors(tmp_path, toy_world):
    run = fake_run(tmp_path / "r", toy_world, {"toy_vqa": _replies(_vqa_docs(9), 1.0, random.Random(0))})
    aggs = aggregations(task_yaml(run, "toy_vqa"))
    assert set(aggs) == set(vqa_utils.METRICS)  # the YAML lists a metric for every question type
    with pytest.raises(ConfigError, match="NAME=RUN_DIR"):
        parse_runs(["a", "b=x"])
    with pytest.raises(ConfigError, match="same number of runs"):
        compare_runs({"a": [run], "b": [run, run]}, "a")


def _summary(run: Path, scores: dict) -> dict:
    """What eval.lmms run holds in memory before writing results.json: its scores and per-sample logs."""
    return {"samples": json.loads((run / "results.json").read_text())["samples"], "scores": scores}


def test_one_runs_score_intervals(tmp_path, toy_world):
    docs = _vqa_docs(200)
    rows = _replies(docs, 0.5, random.Random(1))
    value = sum(r[1] == "red" for r in rows) / len(rows)
    run = fake_run(tmp_path / "a", toy_world, {"toy_vqa": rows})
    ci = score_intervals(_summary(run, {"toy_vqa": {"vqa_accuracy": value}}), run, iters=400)
    assert set(ci) == {"toy_vqa"} and set(ci["toy_vqa"]) == {"vqa_accuracy"}  # only what the run scores
    lo, hi = ci["toy_vqa"]["vqa_accuracy"]
    assert lo < value < hi and 0.1 < hi - lo < 0.18  # binomial, n = 200: 2 x 1.96 x 0.035 = 0.139
    perfect = fake_run(tmp_path / "b", toy_world, {"toy_vqa": _replies(docs, 1.0, random.Random(1))})
    ci = score_intervals(_summary(perfect, {"toy_vqa": {"vqa_accuracy": 1.0}}), perfect, iters=50)
    assert ci["toy_vqa"]["vqa_accuracy"] == [1.0, 1.0]

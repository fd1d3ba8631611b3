"""``python -m eval.lmms run`` drives the real lmms-eval CLI (subprocess) with --include_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.lmms import suites
from eval.lmms.run import find_failure, main


@pytest.mark.slow
def test_toy_suite_end_to_end_through_cli(tiny_llava_dir, toy_world, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "run",
            "--model",
            str(tiny_llava_dir),
            "--suite",
            "toy",
            "--world",
            str(toy_world),
            "--out",
            str(out),
            "--limit",
            "2",
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    assert summary["format"] == "genhancer-lmms-results/1"
    assert summary["model_backend"].startswith(
        "eval.lmms.adapter.GenhancerLlava"
    )  # found via the entry point
    assert set(summary["scores"]) == {
        "toy_vqa",
        "toy_mmvp",
        "toy_mmvp_ll",
        "toy_pope_adversarial",
        "toy_pope_popular",
        "toy_pope_random",
        "toy_cv_bench",
    }
    assert summary["protocol"]["toy_mmvp_ll"]["mode"] == "likelihood"
    assert summary["protocol"]["toy_mmvp"]["mode"] == "generation"
    assert all(v["effective"] == 2 for v in summary["n_samples"].values())
    # the raw results and per-sample logs are listed relative to the run directory, the hand-off
    assert not Path(summary["raw_results"]).is_absolute() and (out / summary["samples"][0]).is_file()
    raw = json.loads((out / summary["raw_results"]).read_text())
    # our scores are lmms-eval's numbers, and POPE's F1 is the harmonic mean of its precision and recall
    pope = summary["scores"]["toy_pope_random"]
    assert pope["pope_f1_score"] == raw["results"]["toy_pope_random"]["pope_f1_score,none"]
    p, r = pope["pope_precision"], pope["pope_recall"]
    assert pope["pope_f1_score"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert raw["config"]["batch_size"] in ("4", 4)
    assert "--include_path" in summary["command"]
    # every score's bootstrap interval from the per-sample logs, on the scores' 0-1 scale
    assert set(summary["ci95"]) == set(summary["scores"]) and "bootstrap" in summary["ci95_method"]
    for task, metrics in summary["ci95"].items():
        for metric, (lo, hi) in metrics.items():
            assert 0 <= lo <= summary["scores"][task][metric] <= hi <= 1, (task, metric)


@pytest.mark.slow
def test_failing_generation_fails_the_run(broken_llava_dir, toy_world, tmp_path, capsys):
    rc = main(
        [
            "run",
            "--model",
            str(broken_llava_dir),
            "--suite",
            "toy_pope_random",
            "--world",
            str(toy_world),
            "--out",
            str(tmp_path / "run"),
            "--limit",
            "2",
            "--batch-size",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "generation failed for task 'toy_pope_random', doc_id(s) [" in err
    assert "lmms_eval.log" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_log_scan_finds_swallowed_errors():
    # lmms-eval exits 0 after these; llava_hf logs the first and scores an empty answer
    assert find_failure("x | ERROR | Error CUDA OOM in generating\n") == "Error CUDA OOM in generating"
    assert "Error during evaluation: boom" in find_failure("\x1b[31mError during evaluation: boom\x1b[0m")
    assert find_failure("all good\n") is None


def test_unknown_task_and_bad_model_dir_messages(tiny_llava_dir, tmp_path, capsys):
    rc = main(
        ["run", "--model", str(tiny_llava_dir), "--suite", "toy,mmvp_typo", "--out", str(tmp_path / "r")]
    )
    assert rc == 2
    assert "unknown task or suite 'mmvp_typo'; known: toy, vision-centric" in capsys.readouterr().err
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text('{"model_type": "clip"}')
    rc = main(["run", "--model", str(clip), "--suite", "toy", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "is not a LLaVA directory" in capsys.readouterr().err


def test_toy_tasks_need_the_world(tmp_path, capsys):
    rc = main(["tasks", "--suite", "toy", "--out", str(tmp_path / "inc")])
    assert rc == 2 and "pass --world DIR" in capsys.readouterr().err
    rc = main(["tasks", "--suite", "toy", "--world", str(tmp_path), "--out", str(tmp_path / "inc")])
    assert rc == 2 and "build the toy world first" in capsys.readouterr().err


def test_include_dir_anchors_toy_data(toy_world, tmp_path):
    include, names = suites.write_include_dir(suites.expand("toy"), tmp_path / "inc", toy_data=toy_world)
    assert names == ["toy_vqa", "toy_mmvp", "toy_mmvp_ll", "toy_pope", "toy_cv_bench"]
    cfg = suites.read_task_yaml(include / "toy" / "toy_pope_popular.yaml")
    assert cfg["include"].endswith("eval/lmms/tasks/toy_pope/toy_pope_popular.yaml")
    path = cfg["dataset_kwargs"]["data_files"]["test"]
    assert path == str((toy_world / "lmms" / "toy_pope" / "popular.parquet").resolve())
    assert suites.read_task_yaml(include / "toy" / "toy_pope.yaml")["task"] == [
        "toy_pope_adversarial",
        "toy_pope_popular",
        "toy_pope_random",
    ]

"""eval.sweep: the stage-2 step is chosen on validation only; the test set is read to report."""

from __future__ import annotations

import json

import pytest

from eval.sweep import choose, main, read_sweep, summarise
from genhancer.utils.errors import ConfigError, DataError

PATTERNS = ("Orientation", "Color")


def _result(correct: dict[str, list[bool]]) -> dict:
    pairs = [
        {"pattern": p, "qids": [2 * i + 1, 2 * i + 2], "correct": ok}
        for p, oks in correct.items()
        for i, ok in enumerate(oks)
    ]
    scores = {p: 100.0 * sum(oks) / len(oks) for p, oks in correct.items()}
    return {"scores": scores, "average": sum(scores.values()) / len(scores), "pairs": pairs}


def _write(root, step: int, val: int, test: int, n: int = 10) -> None:
    """val / test: how many of the n pairs of each pattern are right."""
    d = root / f"step-{step:06d}"
    d.mkdir(parents=True)
    for name, k in (("val", val), ("test", test)):
        res = _result({p: [i < k for i in range(n)] for p in PATTERNS})
        (d / f"{name}.json").write_text(json.dumps(res))


def test_the_choice_follows_validation_not_test(tmp_path):
    _write(tmp_path, 50, val=3, test=2)
    _write(tmp_path, 100, val=6, test=4)  # best on validation
    _write(tmp_path, 300, val=5, test=9)  # best on test: must not be chosen
    s = summarise(read_sweep(tmp_path))
    assert s["chosen_step"] == 100 and s["fixed_step"] == 300
    assert s["test"]["chosen"] == 40.0 and s["test"]["fixed"] == 90.0
    assert s["test"]["difference"] == -50.0
    lo, hi = s["test"]["difference_interval"]
    assert hi < 0  # 5 pairs per pattern flipped right -> wrong, none the other way
    assert [r["step"] for r in s["steps"]] == [50, 100, 300]


def test_ties_go_to_the_shorter_run(tmp_path):
    _write(tmp_path, 200, val=5, test=5)
    _write(tmp_path, 100, val=5, test=1)
    assert choose(read_sweep(tmp_path)) == 100


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    _write(tmp_path, 50, val=3, test=2)
    _write(tmp_path, 100, val=6, test=4)
    assert main(["--root", str(tmp_path), "--fixed-step", "50"]) == 0
    md = (tmp_path / "sweep.md").read_text()
    assert "| 100 | 60.0 [" in md and "chosen on validation" in md and "| 50 |" in md
    assert json.loads((tmp_path / "sweep.json").read_text())["chosen_step"] == 100
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="no step-NNNNNN"):
        read_sweep(tmp_path)
    (tmp_path / "step-000050").mkdir()
    (tmp_path / "step-000050" / "val.json").write_text(json.dumps(_result({"Color": [True]})))
    with pytest.raises(DataError, match="step-000050: missing test.json"):
        read_sweep(tmp_path)
    _write(tmp_path, 100, val=1, test=1)
    (tmp_path / "step-000050" / "test.json").write_text(json.dumps(_result({"Color": [True]})))
    with pytest.raises(ConfigError, match="--fixed-step 7 was not evaluated"):
        summarise(read_sweep(tmp_path), fixed_step=7)

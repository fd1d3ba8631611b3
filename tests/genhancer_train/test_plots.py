"""Loss-curve plotter reading metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from genhancer.plots import main, smooth


def test_plots_write_a_png(tmp_path, capsys):
    runs = []
    for name, n in (("stage1", 12), ("stage2", 5)):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text(
            "".join(
                json.dumps({"step": i, "loss": 1.0 / i, "images_per_s": 50.0}) + "\n" for i in range(1, n + 1)
            )
        )
        runs.append(str(run))
    out = tmp_path / "curves.png"
    assert main(["--runs", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--runs", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_smoothing_starts_at_the_first_value():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])

"""Running a plan: finished steps skipped, failures isolated and named, wall time kept across reruns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genhancer.experiments.grid import Step
from genhancer.experiments.runner import failures, run_plan

FAKE = """
import pathlib, sys
out, code = pathlib.Path(sys.argv[1]), int(sys.argv[2])
with open(out.parent / "calls.txt", "a") as f:
    f.write(out.name + "\\n")
print("working on", out.name)
if code == 0:
    out.write_text("done")
sys.exit(code)
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "fakestep.py").write_text(FAKE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return tmp_path


def _step(root: Path, name: str, code: int = 0, after: tuple[str, ...] = ()) -> Step:
    return Step(name, ["fakestep", str(root / name), str(code)], root / name, list(after))


def _calls(root: Path) -> list[str]:
    p = root / "calls.txt"
    return p.read_text().split() if p.is_file() else []


def test_a_failure_blocks_only_what_needs_it_and_a_rerun_skips_finished_steps(fake: Path):
    out = fake / "grid"
    steps = [
        _step(fake, "a"),
        _step(fake, "bad", code=3),
        _step(fake, "needs-bad", after=("bad",)),
        _step(fake, "needs-needs-bad", after=("needs-bad",)),
        _step(fake, "c", after=("a",)),
    ]
    status = run_plan(steps, out)
    states = {n: r["state"] for n, r in status["steps"].items()}
    assert states == {
        "a": "ran",
        "bad": "failed",
        "needs-bad": "blocked",
        "needs-needs-bad": "blocked",
        "c": "ran",
    }
    assert _calls(fake) == ["a", "bad", "c"]
    assert status["steps"]["bad"]["error"] == "exit 3"
    assert "working on bad" in Path(status["steps"]["bad"]["log"]).read_text()
    assert status["steps"]["needs-needs-bad"]["error"] == "needs needs-bad, which did not finish"
    assert [line.split(":")[0] for line in failures(status)] == ["bad", "needs-bad", "needs-needs-bad"]
    assert json.loads((out / "status.json").read_text())["steps"]["c"]["state"] == "ran"

    first_seconds = status["steps"]["a"]["seconds"]
    steps[1] = _step(fake, "bad", code=0)  # fixed: the rerun runs only what is not done
    status = run_plan(steps, out)
    assert _calls(fake) == ["a", "bad", "c", "bad", "needs-bad", "needs-needs-bad"]
    assert status["steps"]["a"] == {**status["steps"]["a"], "state": "done", "seconds": first_seconds}
    assert failures(status) == []
    assert status["step_seconds"] == pytest.approx(sum(r["seconds"] for r in status["steps"].values()))


def test_a_step_that_exits_0_without_its_output_is_a_failure(fake: Path):
    step = Step("quiet", ["fakestep", str(fake / "elsewhere"), "0"], fake / "never", [])
    status = run_plan([step], fake / "grid")
    assert status["steps"]["quiet"]["state"] == "failed"
    assert "was not written" in status["steps"]["quiet"]["error"]

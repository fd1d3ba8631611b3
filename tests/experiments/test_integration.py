"""A real grid on tiny models: every step a real command (train, diagnostics, export, MMVP-VLM), a broken
cell reported while the others finish, a rerun that skips what is done, and the report from the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from genhancer.experiments.__main__ import main
from tests.eval_mmvp.conftest import PATTERNS, write_bench
from tests.experiments.conftest import write_grid
from tests.genhancer_train.worlds import make_folder

TINY_RUN = {
    "name": "tiny",
    "denoiser": {"preset": "toy"},
    "latent": {"space": "pixel", "patch_size": 4},
    "flow": {"sample_steps": 2},
    "lora": {"r": 4, "alpha": 4},
    "data": {"source": "folder", "num_workers": 0},
    "train": {"batch_size": 4, "grad_accum": 1, "log_every": 1, "save_every": 2},
    "schedule": {
        "stage1": {"steps": 4, "lr": 1.0e-3, "warmup_steps": 1},
        "stage2": {"steps": 4, "lr": 1.0e-3, "warmup_steps": 1, "eval_at": [2]},
    },
}


@pytest.mark.slow
def test_a_grid_runs_isolates_a_broken_cell_resumes_and_reports(tmp_path: Path, tiny_clip_dir: Path):
    run_config = tmp_path / "tiny.yaml"
    run_config.write_text(yaml.safe_dump(TINY_RUN))
    grid = write_grid(
        tmp_path / "grid.yaml",
        {
            "name": "tiny-grid",
            "config": str(run_config),
            "inputs": {
                "encoder": str(tiny_clip_dir),
                "world": str(make_folder(tmp_path / "world", 12)),
                "bench": str(write_bench(tmp_path / "bench", pairs_per_pattern=3)),
            },
            "common": ["encoder.path={encoder}", "data.path={world}"],
            "seeds": [0],
            "evaluations": {
                "mmvp": {
                    "kind": "mmvp_vlm",
                    "command": "eval.mmvp_vlm --model {model} --benchmark {bench} --out {out}",
                }
            },
            "diagnostics": {
                "cond_gap": {
                    "kind": "cond_gap",
                    "command": "genhancer.diagnostics cond-gap --stage-dir {stage_dir} --benchmark {bench} "
                    "--draws 1 --out {out}",
                }
            },
            "cells": {
                "recipe": {"snapshots": True},
                "control": {"tune_of": "recipe", "export": ["--random-update", "{seed}"]},
                "e2e": {"stage": "end-to-end"},
                "broken": {"overrides": ["denoiser.overrides.no_such_argument=1"]},
            },
            "findings": [
                {"name": "gain", "paper": "19.3 -> 31.9", "metric": "mmvp", "claims": [["recipe", "base"]]}
            ],
        },
    )
    out = tmp_path / "grid"
    assert main(["run", "--grid", str(grid), "--out", str(out)]) == 1  # the broken cell fails; the rest run
    status = json.loads((out / "status.json").read_text())["steps"]
    states = {name: rec["state"] for name, rec in status.items()}
    assert (
        states["cells/broken/seed-0/tune"] == "blocked"
        and states["cells/broken/seed-0/eval/mmvp"] == "blocked"
    )
    failed = [n for n, s in states.items() if s == "failed"]
    assert len(failed) == 1 and failed[0].startswith("stage1/")
    assert "no_such_argument" in Path(status[failed[0]]["log"]).read_text()
    ran = {n for n, s in states.items() if s == "ran"}
    assert {"cells/recipe/seed-0/eval/mmvp", "cells/recipe/seed-0/steps/step-000002/eval/mmvp"} <= ran
    assert {"cells/control/seed-0/eval/mmvp", "cells/e2e/seed-0/eval/mmvp", "base/eval/mmvp"} <= ran
    assert not (out / "cells" / "control" / "seed-0" / "tune").exists()  # the control reuses the recipe's run
    assert (out / "cells/e2e/seed-0/tune/final").is_dir()

    # fixed by dropping the cell: the rerun runs nothing (every step is done) and the report is whole
    assert main(["run", "--grid", str(grid), "--out", str(out), "cells.broken.enabled=false"]) == 0
    rerun = json.loads((out / "status.json").read_text())["steps"]
    assert {r["state"] for r in rerun.values()} == {"done"}
    assert rerun["cells/recipe/seed-0/tune"]["seconds"] == status["cells/recipe/seed-0/tune"]["seconds"]
    report = json.loads((out / "report.json").read_text())
    assert "broken" not in report["entries"]  # a dropped cell leaves the report
    recipe = report["entries"]["recipe"]["metrics"]
    assert recipe["mmvp"]["seeds"] == 1 and set(recipe["mmvp"]["groups"]) == set(PATTERNS)
    assert recipe["cond_gap"] is not None and report["entries"]["e2e"]["metrics"]["cond_gap"] is None
    assert report["entries"]["recipe@2"]["metrics"]["mmvp"]["seeds"] == 1
    assert report["findings"][0]["claims"][0]["verdict"] in ("reproduced", "opposite", "inconclusive")
    text = (out / "report.md").read_text()
    assert "| recipe | 1 |" in text and "gain —" in text
    assert (out / "report.png").stat().st_size > 10_000 and (out / "snapshots.png").stat().st_size > 10_000

    # a run of some cells only keeps the other cells' finished runs in the report
    args = ["run", "--grid", str(grid), "--out", str(out), "cells.broken.enabled=false", "--cells", "control"]
    assert main(args) == 0
    assert set(json.loads((out / "report.json").read_text())["entries"]) == set(report["entries"])

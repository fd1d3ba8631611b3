"""Fixtures of the experiment-grid tests: grid files written into temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def write_grid(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


EVALS = {
    "mmvp": {"kind": "mmvp_vlm", "command": "eval.mmvp_vlm --model {model} --benchmark {bench} --out {out}"}
}


@pytest.fixture
def grid_file(tmp_path: Path):
    """``grid_file(cells, **top-level keys)`` -> a grid YAML on configs/genhancer/toy.yaml."""

    def make(cells: dict, **kw) -> Path:
        data = {
            "name": "t",
            "config": "configs/genhancer/toy.yaml",
            "inputs": {"encoder": "runs/toy/clip", "bench": "bench"},
            "evaluations": EVALS,
            "cells": cells,
            **kw,
        }
        return write_grid(tmp_path / "grid.yaml", data)

    return make

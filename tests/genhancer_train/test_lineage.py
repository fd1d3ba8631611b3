"""Resuming refuses checkpoints trained from another stage or another stage-1 output."""

from __future__ import annotations

import json

import pytest

from genhancer.train import _check_lineage
from genhancer.utils.errors import ConfigError


def _ckpt(tmp_path, lineage):
    d = tmp_path / "run" / "checkpoints" / "step-000010"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"step": 10, "lineage": lineage}))
    return d


def test_same_lineage_resumes(tmp_path):
    lineage = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t1", "config_hash": "h"}}
    _check_lineage(_ckpt(tmp_path, lineage), json.loads(json.dumps(lineage)))


def test_retrained_stage1_is_refused(tmp_path):
    old = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t1", "config_hash": "h"}}
    new = {"stage": "stage2", "init_from": {"path": "/x/final", "created": "t2", "config_hash": "h"}}
    with pytest.raises(ConfigError, match=r"remove .*run.*train\.resume=never"):
        _check_lineage(_ckpt(tmp_path, old), new)


def test_other_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="was trained from"):
        _check_lineage(
            _ckpt(tmp_path, {"stage": "stage1", "init_from": None}), {"stage": "stage2", "init_from": None}
        )

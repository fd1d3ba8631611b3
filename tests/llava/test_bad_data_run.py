"""A LLaVA stage on the bad-image zoo, through the real CLI with two DataLoader workers: every unusable file
is named once with its reason in ``summary.json``, though the workers (other processes) met them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import image_zoo as zoo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_pretrain_names_the_zoo_in_summary(tmp_path, llava_world, tiny_clip_dir, toy_llm_dir):
    images = zoo.write_folder(tmp_path / "images")
    good = [str(p) for p in sorted((llava_world / "train" / "images").glob("*.png"))]  # absolute paths
    paths = good[:6] + [f"images/{name}" for name in zoo.zoo()]
    records = [
        {
            "id": f"r{k}",
            "image": p,
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a shape"}],
        }
        for k, p in enumerate(paths)
    ]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    args = [
        f"run_dir={run}",
        f"model.encoder={tiny_clip_dir}",
        f"model.llm={toy_llm_dir}",
        "train.report_to=[]",
        f"pretrain.data.path={data}",
        f"pretrain.data.image_root={images}",
        "pretrain.data.on_bad_record=skip",
        "pretrain.data.num_workers=2",
        "pretrain.max_steps=5",  # 12 usable of 16 records, batch 4: past one epoch
        "pretrain.per_device_batch_size=4",
    ]
    p = subprocess.run(
        [sys.executable, "-m", "llava_integration.train", "stage=pretrain", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    summary = json.loads((run / "pretrain" / "summary.json").read_text())
    assert {Path(e["key"]).name: e["reason"] for e in summary["skipped_files"]} == zoo.SKIPS
    assert len(summary["skipped_files"]) == len(zoo.SKIPS)
    assert sorted(e["key"] for e in summary["skipped_records"]) == sorted(
        f"record #{paths.index(f'images/{n}')} (id='r{paths.index(f'images/{n}')}')" for n in zoo.SKIPS
    )
    assert summary["steps"] == 5
    prov = json.loads((run / "pretrain" / "model" / "provenance.json").read_text())
    assert prov["extra"]["data"]["skipped_files"] == len(zoo.SKIPS)

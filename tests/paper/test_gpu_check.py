"""benchmarks.gpu_check runs on CPU with --tiny (tiny cards, the same code as on a GPU) and writes one JSON
whose every figure is a positive, finite number."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import gpu_check

pytestmark = pytest.mark.slow


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_run_writes_the_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--tiny", "--peak-tflops", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tiny"] is True and report["device"] == "cpu"
    gen = report["genhancer"]
    assert "error" not in gen, gen.get("traceback")
    for stage in ("stage1", "stage2"):
        assert all(
            _positive(gen[stage][k]) for k in ("s_per_it", "peak_memory_gib", "tflops_per_s", "tflop_per_it")
        )
        assert math.isfinite(gen[stage]["loss"]) and len(gen[stage]["seconds"]) == 2
    llava = report["llava"]
    assert "error" not in llava.get("sdpa", {}), llava.get("sdpa", {}).get("traceback")
    sdpa = llava["sdpa"]
    assert all(
        _positive(sdpa[k]) for k in ("s_per_it", "tokens_per_s", "tflops_per_s", "mfu", "peak_memory_gib")
    )
    assert sdpa["zero_stage"] == 3 and sdpa["image_tokens"] == 16  # tiny CLIP: 32 px / patch 8, CLS dropped
    assert "skipped" in llava["flash_attention_2"]  # no CUDA here
    lmms = report["lmms_adapter"]
    assert "error" not in lmms, lmms.get("traceback")
    for batch in (1, 8, 32):
        row = lmms[f"batch_{batch}"]
        assert (
            row["samples"] > 0 and _positive(row["samples_per_s"]) and _positive(row["model_samples_per_s"])
        )

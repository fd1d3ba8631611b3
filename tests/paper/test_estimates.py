"""benchmarks.paper_estimates: the ZeRO accounting, and the table kept in docs/performance.md is what the
script computes now (one GenHancer recipe and the LLaVA-7B recipe are recomputed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.paper_estimates import BEGIN, END, all_rows, markdown, model_state_bytes, replace_block

DOC = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def test_zero_partitions_what_each_stage_partitions():
    total, trainable = 1000, 100  # bf16 weights 2000, bf16 grads 200, fp32 master + AdamW 1200
    assert model_state_bytes(total, trainable, 0, 8) == 2000 + 200 + 1200
    assert model_state_bytes(total, trainable, 2, 8) == 2000 + (200 + 1200) / 8
    assert model_state_bytes(total, trainable, 3, 8) == (2000 + 200 + 1200) / 8
    assert all(model_state_bytes(total, trainable, z, 1) == 3400 for z in (0, 2, 3))


def test_replace_block():
    doc = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert replace_block(doc, "new") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(SystemExit):
        replace_block("no markers", "new")


def test_the_documented_table_is_current():
    rows = all_rows(("openai-clip-l14",), ("vicuna-7b",))
    assert [(r.config, r.stage) for r in rows] == [
        ("openai-clip-l14", "stage1"),
        ("openai-clip-l14", "stage2"),
        ("llava-vicuna-7b", "pretrain"),
        ("llava-vicuna-7b", "finetune"),
    ]
    doc = DOC.read_text()
    for line in markdown(rows).splitlines()[2:]:
        assert line in doc, (
            f"docs/performance.md is stale; run python -m benchmarks.paper_estimates --write {DOC}"
        )

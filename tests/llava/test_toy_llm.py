"""The toy LLM: whole-document batches, the texts it learns from, and its build cache."""

from __future__ import annotations

import pytest

from toyworld.llava_data import DATA_FORMAT, describe, llm_texts
from toyworld.llm import ToyLlmConfig, build_toy_llm, document_batch, is_cached


def test_document_batch_pads_and_masks_whole_documents():
    ids, labels = document_batch([[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 9, 9, 9, 2]], pad_id=2, seq_len=5)
    assert ids.tolist() == [[1, 5, 6, 2, 2], [1, 7, 2, 2, 2], [1, 8, 9, 9, 9]]
    assert labels.tolist() == [[1, 5, 6, 2, -100], [1, 7, 2, -100, -100], [1, 8, 9, 9, 9]]


def test_texts_are_captions_and_conversations_about_a_description(llava_world):
    import json

    rows = [json.loads(line) for line in (llava_world / "train" / "scenes.jsonl").read_text().splitlines()]
    texts = llm_texts(llava_world)
    assert texts[: len(rows)] == [r["caption"] for r in rows]
    chat = texts[len(rows)]
    assert chat.startswith("A chat between a curious user")
    assert f"USER: {describe(rows[0]['scene'])}\n" in chat and "ASSISTANT:" in chat
    assert not chat.endswith("</s>")  # the packer adds the end-of-document token


@pytest.mark.slow
def test_build_is_cached_per_world_config_and_text_format(tmp_path, llava_world):
    cfg = ToyLlmConfig(
        vocab_size=400,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        steps=2,
        batch_size=2,
    )
    out = build_toy_llm(
        llm_texts(llava_world)[:200],
        tmp_path / "llm",
        cfg,
        parents=[llava_world],
        extra={"data_format": DATA_FORMAT},
    )
    assert is_cached(out, llava_world, cfg, DATA_FORMAT)
    assert not is_cached(out, llava_world, ToyLlmConfig(**{**cfg.__dict__, "steps": 3}), DATA_FORMAT)
    assert not is_cached(out, llava_world, cfg, "toy-llava/0")
    assert not is_cached(out, tmp_path, cfg, DATA_FORMAT)

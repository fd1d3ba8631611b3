"""Fixtures for the MMVP-VLM / zero-shot evaluator tests: small benchmark folders written with PIL, and a
tiny SigLIP directory (sentencepiece tokenizer trained on the fly) beside the shared ``tiny_clip_dir``."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

PATTERNS = ("Orientation and Direction", "Color and Appearance")
COLORS = [
    (220, 30, 30),
    (30, 30, 220),
    (30, 200, 30),
    (230, 200, 20),
    (150, 40, 180),
    (240, 130, 20),
    (20, 200, 200),
    (120, 120, 120),
]


def write_bench(
    root: Path,
    patterns: Sequence[str] = PATTERNS,
    pairs_per_pattern: int = 2,
    header: Sequence[str] | None = ("Question ID", "Type", "Statement"),
    bom: bool = False,
) -> Path:
    """An official-layout MMVP-VLM folder: Questions.csv + 'MLLM_VLM Images/<type>/<qid>.jpg' (32 px)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows, qid = [], 0
    for pattern in patterns:
        (root / "MLLM_VLM Images" / pattern).mkdir(parents=True, exist_ok=True)
        for _ in range(pairs_per_pattern):
            for side in ("left", "right"):
                qid += 1
                color = COLORS[qid % len(COLORS)]
                img = Image.new("RGB", (40, 32), color)  # not square: exercises resize + crop
                img.paste((255, 255, 255), (4, 4, 14, 14) if side == "left" else (26, 18, 36, 28))
                img.save(root / "MLLM_VLM Images" / pattern / f"{qid}.jpg")
                rows.append([str(qid), pattern, f"a square with a white dot on the {side}"])
    with (root / "Questions.csv").open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return root


@pytest.fixture
def bench_factory(tmp_path) -> Callable[..., Path]:
    """``bench_factory(name="bench", **write_bench kwargs)`` -> a fresh benchmark folder."""
    return lambda name="bench", **kw: write_bench(tmp_path / name, **kw)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A tiny SiglipModel directory (32 px) with a SiglipProcessor and a sentencepiece tokenizer (max 64)."""
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    work = tmp_path_factory.mktemp("spm")
    texts = [
        "a photo of a square with a white dot on the left",
        "a photo of a red triangle pointing up",
        "two blue circles on the right",
        "a green square seen from above",
    ] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(work / "spiece"),
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    tok = SiglipTokenizer(str(work / "spiece.model"), model_max_length=64)
    proc = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok
    )
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            projection_size=32,
            **ids,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
    )
    import torch

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_siglip")
    SiglipModel(cfg).save_pretrained(out)
    proc.save_pretrained(out)
    return out

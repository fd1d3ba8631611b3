"""LLaVA records: bad records named, the image-token budget, the no-cut rule, labels, the grouping sampler."""

from __future__ import annotations

import json

import pytest
import torch

from genhancer.utils.errors import ConfigError, DataError
from llava_integration.config import DataConfig
from llava_integration.data import (
    IGNORE_INDEX,
    LlavaCollator,
    LlavaDataset,
    ModalityLengthGroupedSampler,
    OverLength,
    encode_record,
    load_records,
    to_messages,
)
from llava_integration.templates import TEMPLATES

VICUNA = TEMPLATES["vicuna_v1"].chat_template


def _write(tmp_path, records, name="data.json"):
    p = tmp_path / name
    if name.endswith(".jsonl"):
        p.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        p.write_text(json.dumps(records))
    return p


GOOD = {
    "id": "ok",
    "image": "train/images/000000.png",
    "conversations": [{"from": "human", "value": "<image>\nColor?"}, {"from": "gpt", "value": "red"}],
}
BAD = {
    "no conversations": {"id": "b1", "image": "train/images/000000.png"},
    "turn 0 is from 'gpt'": {
        "id": "b2",
        "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}],
    },
    "2 '<image>' tokens": {
        "id": "b3",
        "image": "train/images/000000.png",
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nColor?"},
            {"from": "gpt", "value": "red"},
        ],
    },
    "image file not found": {
        "id": "b4",
        "image": "train/images/nope.png",
        "conversations": GOOD["conversations"],
    },
    "no 'image'": {"id": "b5", "conversations": GOOD["conversations"]},
    "must end with a 'gpt' answer": {"id": "b6", "conversations": [{"from": "human", "value": "hi"}]},
}


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_record_is_named_by_index_and_id(tmp_path, llava_world, problem):
    path = _write(tmp_path, [GOOD, GOOD, BAD[problem]])
    with pytest.raises(DataError) as e:
        load_records(DataConfig(path=str(path), image_root=str(llava_world)))
    msg = str(e.value)
    assert f"record #2 (id={BAD[problem]['id']!r})" in msg and problem in msg
    assert "on_bad_record=skip" in msg


def test_bad_records_skipped_and_counted(tmp_path, llava_world):
    from llava_integration.data import SkipReport

    path = _write(tmp_path, [GOOD, *BAD.values(), GOOD], name="data.jsonl")
    report = SkipReport()
    recs = load_records(DataConfig(path=str(path), image_root=str(llava_world), on_bad_record="skip"), report)
    assert len(recs) == 2 and len(report.bad_records) == len(BAD)


def _enc(tok, rec, max_length, n_img=16, over="truncate"):
    return encode_record(
        to_messages(rec),
        chat_template=VICUNA,
        tokenizer=tok,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_tokens=n_img,
        has_image=rec.get("image") is not None,
        max_length=max_length,
        over_length=over,
    )


def test_576_image_token_budget():
    from genhancer.utils.families import FAMILIES
    from llava_integration.build import num_image_tokens

    assert num_image_tokens(336, 14, FAMILIES["clip"], "default") == 576  # CLIP-L/14-336, CLS dropped
    assert num_image_tokens(336, 14, FAMILIES["clip"], "full") == 577
    assert num_image_tokens(384, 14, FAMILIES["siglip"], "full") == 729  # SigLIP: no CLS


def test_image_tokens_expand_inside_max_length_and_are_never_cut(assembled_processor):
    tok = assembled_processor.tokenizer
    long = dict(
        GOOD,
        conversations=[{"from": "human", "value": "<image>\nColor?"}, {"from": "gpt", "value": "red " * 200}],
    )
    full = _enc(tok, long, 10_000, n_img=576)
    assert full["input_ids"].count(tok.convert_tokens_to_ids("<image>")) == 576
    image_end = (
        max(i for i, t in enumerate(full["input_ids"]) if t == tok.convert_tokens_to_ids("<image>")) + 1
    )
    # Truncated after the image tokens: the budget counts all 576, labels there are -100.
    cut = _enc(tok, long, image_end + 30, n_img=576)
    assert cut["truncated"] and len(cut["input_ids"]) == image_end + 30
    assert cut["input_ids"][:image_end] == full["input_ids"][:image_end]
    assert all(lab == IGNORE_INDEX for lab in cut["labels"][:image_end])
    assert any(lab != IGNORE_INDEX for lab in cut["labels"])
    # A max_length that would cut through the image tokens: skipped, never cut.
    with pytest.raises(OverLength, match="image tokens"):
        _enc(tok, long, image_end - 1, n_img=576)
    with pytest.raises(OverLength):
        _enc(tok, long, image_end + 30, n_img=576, over="skip")


def test_dataset_skips_and_counts_over_length(tmp_path, llava_world, assembled_processor):
    long = dict(
        GOOD,
        id="long",
        conversations=[
            {"from": "human", "value": "<image>\n" + "why " * 300},
            {"from": "gpt", "value": "red"},
        ],
    )
    path = _write(tmp_path, [long, GOOD])
    ds = LlavaDataset(
        DataConfig(path=str(path), image_root=str(llava_world), max_length=120),
        assembled_processor,
        VICUNA,
        image_tokens=16,
    )
    item = ds[0]  # record 0 cannot keep its answer within 120 tokens -> replaced by record 1
    assert ds.report.over_length == 1 and len(item["input_ids"]) <= 120
    with pytest.raises(ConfigError, match="cannot hold one image"):
        LlavaDataset(
            DataConfig(path=str(path), image_root=str(llava_world), max_length=16),
            assembled_processor,
            VICUNA,
            image_tokens=16,
        )


def test_training_and_evaluation_prompts_are_identical(llava_world, assembled_processor):
    """The dataset's ids before the answer == what the processor makes at evaluation (apply_chat_template)."""
    from PIL import Image

    ds = LlavaDataset(
        DataConfig(path=str(llava_world / "llava" / "finetune.json"), image_root=str(llava_world)),
        assembled_processor,
        assembled_processor.chat_template,
        image_tokens=16,
    )
    item = ds[0]
    rec = ds.records[0]
    q = rec["conversations"][0]["value"].replace("<image>", "").strip()
    prompt = assembled_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
        add_generation_prompt=True,
    )
    with Image.open(llava_world / rec["image"]) as im:
        ev = assembled_processor(images=[im.convert("RGB")], text=[prompt], return_tensors="pt")
    n = ev["input_ids"].shape[1]
    assert item["input_ids"][:n].tolist() == ev["input_ids"][0].tolist()
    assert (item["labels"][:n] == IGNORE_INDEX).all() and (item["labels"][n:] != IGNORE_INDEX).any()
    assert torch.allclose(item["pixel_values"], ev["pixel_values"][0])  # square images: pad is a no-op


def test_text_only_and_multiturn_records_and_collator(llava_world, assembled_processor):
    ds = LlavaDataset(
        DataConfig(path=str(llava_world / "llava" / "finetune.json"), image_root=str(llava_world)),
        assembled_processor,
        VICUNA,
        image_tokens=16,
    )
    text_only = [i for i, h in enumerate(ds.has_image) if not h]
    assert text_only, "the toy finetune data has text-only records"
    batch = LlavaCollator(assembled_processor.tokenizer.pad_token_id)([ds[0], ds[text_only[0]], ds[1]])
    assert batch["pixel_values"].shape[0] == 2  # one per image record
    n_img = (batch["input_ids"] == assembled_processor.tokenizer.convert_tokens_to_ids("<image>")).sum()
    assert n_img == 2 * 16
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    sup_runs = ((batch["labels"][0][1:] != IGNORE_INDEX) & (batch["labels"][0][:-1] == IGNORE_INDEX)).sum()
    assert sup_runs == len(ds.records[0]["conversations"]) // 2  # one supervised run per answer


def test_sampler_groups_by_modality_and_length():
    lengths = [10, 20, 30, 40, 50, -5, -6, -7, 60, 70, -8]
    s = ModalityLengthGroupedSampler(lengths, group_size=4, seed=0)
    order = list(s)
    assert len(order) == len(s) == 12  # 7 image records -> 8, 4 text-only -> 4
    for g in range(0, len(order), 4):
        group = order[g : g + 4]
        signs = {lengths[i] > 0 for i in group}
        assert len(signs) == 1  # one modality per global micro-batch
        assert [abs(lengths[i]) for i in group] == sorted((abs(lengths[i]) for i in group), reverse=True)
    assert set(order) == set(range(len(lengths)))
    s.set_epoch(1)
    assert list(s) != order

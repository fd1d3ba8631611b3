"""LLaVA records: bad records named, the image-token budget, the no-cut rule, labels, the grouping sampler."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert len(recs) == 2
    skipped = report.collect()["skipped_records"]
    assert [e["key"] for e in skipped] == [
        f"record #{i + 1} (id={r['id']!r})" for i, r in enumerate(BAD.values())
    ]
    assert {e["reason"] for e in skipped} == {"malformed"}
    assert all(problem in e["detail"] for problem, e in zip(BAD, skipped))


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
    assert len(item["input_ids"]) <= 120 and "pixel_values" in item
    ds[0]  # met again (another epoch): still recorded once
    skipped = ds.report.collect()["skipped_records"]
    assert [(e["key"], e["reason"]) for e in skipped] == [("record #0 (id='long')", "over-length")]
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


# --------------------------------------------------------------------------------------------- JSON fuzz
IMG = "train/images/000000.png"
FUZZ = {
    "a list": (["not", "a", "record"], None, "a record must be a JSON object, got list"),
    "a string": ("a record?", None, "a record must be a JSON object, got str"),
    "a number": (42, None, "a record must be a JSON object, got int"),
    "null": (None, None, "a record must be a JSON object, got NoneType"),
    "numeric value": (
        {"id": "f1", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]},
        "f1",
        "turn 0 is not {'from': ..., 'value': <string>}",
    ),
    "numeric role": (
        {"id": "f2", "conversations": [{"from": 1, "value": "q"}, {"from": "gpt", "value": "x"}]},
        "f2",
        "turn 0 is from 1, expected 'human'",
    ),
    "numeric image": ({"id": "f3", "image": 5, "conversations": GOOD["conversations"]}, "f3", "got 5"),
    "conversations a mapping": ({"id": "f4", "conversations": {"0": "hi"}}, "f4", "no conversations"),
    "<image> in an answer": (
        {
            "id": "f5",
            "image": IMG,
            "conversations": [
                {"from": "human", "value": "<image>\nColor?"},
                {"from": "gpt", "value": "it is <image> red"},
            ],
        },
        "f5",
        "turn 1 (a 'gpt' answer) contains '<image>'",
    ),
    "an odd id": ({"id": {"x": [1]}, "conversations": []}, {"x": [1]}, "no conversations"),
}


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("case", sorted(FUZZ))
def test_fuzzed_record_is_named_by_index_and_id(tmp_path, llava_world, case, suffix):
    rec, rid, problem = FUZZ[case]
    path = _write(tmp_path, [GOOD, GOOD, rec], name="data" + suffix)
    cfg = DataConfig(path=str(path), image_root=str(llava_world))
    with pytest.raises(DataError) as e:
        load_records(cfg)
    assert f"record #2 (id={rid!r}): " in str(e.value) and problem in str(e.value)
    from llava_integration.data import SkipReport

    report = SkipReport()
    assert len(load_records(DataConfig(**{**cfg.__dict__, "on_bad_record": "skip"}), report)) == 2
    assert [e["key"] for e in report.collect()["skipped_records"]] == [f"record #2 (id={rid!r})"]


# ------------------------------------------------------------------------------- images at read time
def _image_records(tmp_path, llava_world, names: list[str]) -> Path:
    """``root/<name>`` copies of toy-world images (deletable by a test), one image record each."""
    import shutil

    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    for k, name in enumerate(names):
        shutil.copy(llava_world / "train" / "images" / f"{k:06d}.png", root / name)
    return root


def _img(rid: str, image: str) -> dict:
    return {"id": rid, "image": image, "conversations": GOOD["conversations"]}


def _txt(rid: str) -> dict:
    return {
        "id": rid,
        "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "hello"}],
    }


def test_image_missing_at_read_time_is_named_or_replaced_by_its_modality(
    tmp_path, llava_world, assembled_processor
):
    root = _image_records(tmp_path, llava_world, ["a.png", "b.png"])
    records = [_txt("t0"), _img("gone", "a.png"), _txt("t1"), _img("kept", "b.png")]
    path = _write(tmp_path, records)

    def dataset(on_bad: str) -> LlavaDataset:
        cfg = DataConfig(path=str(path), image_root=str(root), on_bad_record=on_bad)
        return LlavaDataset(cfg, assembled_processor, VICUNA, image_tokens=16)

    strict, lenient = dataset("error"), dataset("skip")
    (root / "a.png").unlink()  # valid when the records were checked, gone when read
    with pytest.raises(DataError) as e:
        strict[1]
    assert f"record #1 (id='gone'): cannot use image {root / 'a.png'}: unreadable" in str(e.value)
    assert "on_bad_record=skip" in str(e.value)
    item = lenient[1]  # replaced by the next *image* record (#3), not by the text-only #2 that follows it
    assert "pixel_values" in item
    assert item["input_ids"].tolist() == lenient[3]["input_ids"].tolist()
    got = lenient.report.collect()
    assert [(x["key"], x["reason"]) for x in got["skipped_files"]] == [(str(root / "a.png"), "unreadable")]
    assert [(x["key"], x["reason"]) for x in got["skipped_records"]] == [
        ("record #1 (id='gone')", "bad-image")
    ]


def test_text_only_record_is_replaced_by_a_text_only_one(tmp_path, llava_world, assembled_processor):
    root = _image_records(tmp_path, llava_world, ["a.png"])
    long = {
        "id": "long",
        "conversations": [{"from": "human", "value": "why " * 300}, GOOD["conversations"][1]],
    }
    path = _write(tmp_path, [long, _img("i", "a.png"), _txt("short")])
    cfg = DataConfig(path=str(path), image_root=str(root), max_length=120, over_length="skip")
    ds = LlavaDataset(cfg, assembled_processor, VICUNA, image_tokens=16)
    item = ds[0]  # over-length: replaced by text-only #2, not by the image record #1 next to it
    assert "pixel_values" not in item and item["input_ids"].tolist() == ds[2]["input_ids"].tolist()


def test_no_usable_record_of_a_modality_is_an_error(tmp_path, llava_world, assembled_processor):
    root = _image_records(tmp_path, llava_world, ["a.png"])
    path = _write(tmp_path, [_img("i", "a.png"), _txt("t")])
    ds = LlavaDataset(
        DataConfig(path=str(path), image_root=str(root), on_bad_record="skip"),
        assembled_processor,
        VICUNA,
        image_tokens=16,
    )
    (root / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 image records can be used .*1 bad-image"):
        ds[0]
    assert "pixel_values" not in ds[1]  # the text-only record is unaffected


# ---------------------------------------------------------------------------------------- the image zoo
def _zoo_dataset(tmp_path, assembled_processor, journal=None) -> LlavaDataset:
    from tests import image_zoo as zoo

    root = zoo.write_folder(tmp_path / "zoo")
    records = [_img(f"z{k}", f"images/{name}") for k, name in enumerate(zoo.zoo())]
    path = _write(tmp_path, records)
    cfg = DataConfig(path=str(path), image_root=str(root), on_bad_record="skip", image_aspect_ratio="square")
    return LlavaDataset(cfg, assembled_processor, VICUNA, image_tokens=16, journal=journal)


def _rgb(pixel_values: torch.Tensor, processor) -> tuple[int, int, int]:
    from tests import image_zoo as zoo

    proc = processor.image_processor
    mean, std = torch.tensor(proc.image_mean).view(3, 1, 1), torch.tensor(proc.image_std).view(3, 1, 1)
    u8 = ((pixel_values * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return zoo.colour_of(u8)


def test_bad_image_zoo_in_llava_records(tmp_path, assembled_processor):
    from tests import image_zoo as zoo

    ds = _zoo_dataset(tmp_path, assembled_processor)
    names = list(zoo.zoo())
    for _epoch in range(2):
        items = [ds[k] for k in range(len(ds))]
    for k, name in enumerate(names):
        if name in zoo.LOADS:  # loaded as itself, as the right colour
            assert zoo.close(_rgb(items[k]["pixel_values"], assembled_processor), zoo.LOADS[name]), name
        else:  # replaced by another image record
            assert "pixel_values" in items[k]
    got = ds.report.collect()
    assert {Path(e["key"]).name: e["reason"] for e in got["skipped_files"]} == zoo.SKIPS
    assert len(got["skipped_files"]) == len(zoo.SKIPS)  # once each over two epochs
    assert sorted(e["key"] for e in got["skipped_records"]) == sorted(
        f"record #{names.index(n)} (id='z{names.index(n)}')" for n in zoo.SKIPS
    )


def test_skips_made_in_dataloader_workers_reach_the_report(tmp_path, assembled_processor):
    from torch.utils.data import DataLoader

    from tests import image_zoo as zoo

    ds = _zoo_dataset(tmp_path, assembled_processor, journal=tmp_path / "skipped")
    loader = DataLoader(
        ds, batch_size=2, num_workers=2, collate_fn=LlavaCollator(assembled_processor.tokenizer.pad_token_id)
    )
    for _epoch in range(2):
        batches = list(loader)
    assert sum(b["pixel_values"].shape[0] for b in batches) == len(ds)  # every slot filled by an image record
    assert len(ds.report.files) == 0  # the main process itself met none of them: the workers did
    got = ds.report.collect()
    assert {Path(e["key"]).name: e["reason"] for e in got["skipped_files"]} == zoo.SKIPS
    assert len(got["skipped_records"]) == len(zoo.SKIPS)

"""``python -m llava_integration.image_use``: the answer loss with the own image against another record's."""

from __future__ import annotations

import json

import pytest
import torch

from genhancer.utils.errors import DataError


def test_derangement_moves_every_record():
    from llava_integration.image_use import derangement

    for n in (2, 3, 10, 101):
        d = derangement(n, seed=n)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))
    assert derangement(50, seed=1) == derangement(50, seed=1) != derangement(50, seed=2)
    with pytest.raises(DataError, match="at least 2 image records"):
        derangement(1)


def test_words_join_pieces_and_keep_punctuation(assembled_processor):
    from llava_integration.image_use import words

    tok = assembled_processor.tokenizer
    ids = tok("three red squares, on the left", add_special_tokens=False)["input_ids"]
    groups = words(ids, tok)
    texts = [tok.decode([ids[t] for t in g]).strip() for g in groups]
    assert texts == ["three", "red", "squares,", "on", "the", "left"]
    assert [t for g in groups for t in g] == list(range(len(ids)))


def _data(world):
    from llava_integration.config import DataConfig

    return DataConfig(path=str(world / "llava" / "pretrain.json"), image_root=str(world), max_length=128)


def test_own_image_losses_are_the_training_loss(assembled_dir, llava_world):
    """The own-image losses are exactly what the model's training loss averages, for the same encoding."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from llava_integration.data import LlavaCollator, LlavaDataset
    from llava_integration.image_use import score

    model = LlavaForConditionalGeneration.from_pretrained(assembled_dir, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(assembled_dir)
    ds = LlavaDataset(_data(llava_world), processor, processor.chat_template, model.config.image_seq_length)
    own = score(model, ds, [0, 1, 2], [0, 1, 2], batch_size=2)
    for i in range(3):
        batch = LlavaCollator(processor.tokenizer.pad_token_id)([ds.encode(i)])
        with torch.no_grad():
            loss = model(**batch).loss
        assert own[i].mean() == pytest.approx(loss.item(), rel=1e-5)
        assert len(own[i]) == int((batch["labels"] != -100).sum())


def test_a_model_blind_to_the_image_gains_nothing(tmp_path, assembled_dir, llava_world):
    """Control: with the projector's output zeroed every image looks alike, so the gain is exactly 0; the
    real projector gives a non-zero gain on the same records."""
    from transformers import LlavaForConditionalGeneration

    from llava_integration.image_use import image_use, main

    report = image_use(assembled_dir, _data(llava_world), limit=12, n_words=3)
    assert report["records"] == 12 and report["per_record"]["gain"] != 0.0

    blind = tmp_path / "blind"
    model = LlavaForConditionalGeneration.from_pretrained(assembled_dir, use_safetensors=True)
    with torch.no_grad():
        for p in model.model.multi_modal_projector.linear_2.parameters():
            p.zero_()
    model.save_pretrained(blind)
    for f in assembled_dir.iterdir():
        if f.suffix in (".json", ".jinja", ".model") and not (blind / f.name).exists():
            (blind / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "report.json"
    argv = ["--model", str(blind), "--data", str(llava_world / "llava" / "pretrain.json")]
    argv += ["--image-root", str(llava_world), "--limit", "12", "--words", "3", "--out", str(out)]
    assert main(argv) == 0
    got = json.loads(out.read_text())
    assert got["per_record"]["gain"] == 0.0 and got["per_record"]["ci95"] == [0.0, 0.0]
    assert [w["word"] for w in got["words"]] == [1, 2, 3]
    assert all(w["gain"] == 0.0 for w in got["words"])


def test_bad_model_dir_and_too_few_records_are_named(tmp_path, assembled_dir, llava_world):
    from genhancer.utils.errors import ModelDirError
    from llava_integration.image_use import image_use

    with pytest.raises(ModelDirError, match="no config.json"):
        image_use(tmp_path, _data(llava_world))
    with pytest.raises(DataError, match=r"pretrain.json: 0 image record\(s\) from record 100000 on"):
        image_use(assembled_dir, _data(llava_world), start=100000)

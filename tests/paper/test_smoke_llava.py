"""Real-width smoke step of the LLaVA-7B recipe on CPU: ``configs/llava/vicuna-7b.yaml`` with
``model.init=random`` (CLIP ViT-L/14-336 and Vicuna-7B from their cards, the LLM cut to 2 decoder layers of
width 4096), assembled by ``llava_integration.build`` and finetuned one step by the project's trainer under
the recipe's ZeRO-3 (DeepSpeed on CPU, one process, bf16 -- fp32 on a CPU without native bf16; plain SGD so
no optimizer state is held), then refused by the export. Wall time and peak RSS are printed (-s)."""

from __future__ import annotations

import math
import resource
import time

import pytest

from benchmarks.paper_shapes import (
    cpu_step_precision,
    finetune_overrides,
    llava_config,
    llava_finetune,
    write_records,
    write_tokenizer,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    work = tmp_path_factory.mktemp("llava7b")
    tok = write_tokenizer(work / "tokenizer")
    data = write_records(work / "data", n=2, words=40)
    overrides = finetune_overrides(work, tok, data, steps=1, batch_size=1)
    cfg = llava_config(
        "vicuna-7b",
        "model.llm_layers=2",
        *overrides,
        "finetune.optim=sgd",
        f"train.precision={cpu_step_precision()}",
    )
    t0 = time.perf_counter()
    out = llava_finetune(cfg)
    out["wall_s"] = time.perf_counter() - t0
    out["rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\nLLaVA-7B (2 layers, {cpu_step_precision()}): assembly + one ZeRO-{out['zero_stage']} finetune "
        f"step {out['wall_s']:.0f} s "
        f"(step {out['step_seconds'][0]:.0f} s), peak RSS {out['rss_gib']:.1f} GiB, {out['parameters']}"
    )
    return out


def test_real_width(finetune):
    config = finetune["config"]
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (4096, 11008, 2)
    assert text.vocab_size == 32000  # the card's rows, whatever the stand-in tokenizer's size
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size, vision.patch_size) == (
        1024,
        24,
        336,
        14,
    )
    assert config.random_init  # the mark the export reads


def test_576_image_tokens(finetune):
    assert finetune["config"].image_seq_length == 576 == finetune["image_tokens"]


def test_one_zero3_finetune_step(finetune):
    assert finetune["zero_stage"] == 3 and len(finetune["step_seconds"]) == 1
    assert math.isfinite(finetune["loss"])
    params = finetune["parameters"]
    assert params["vision"]["trainable"] == 0 and params["vision"]["frozen"] > 300e6
    assert params["projector"] == {"trainable": 1024 * 4096 + 4096 + 4096 * 4096 + 4096, "frozen": 0}
    # two Llama-7B decoder layers + embeddings and head of the 32000-token vocabulary, all trainable
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    assert params["llm"] == {"trainable": 2 * layer + 2 * 32000 * 4096 + 4096, "frozen": 0}


def test_export_refuses_it(finetune):
    assert (
        "random_init" in finetune["export_refused"] and "model.init=pretrained" in finetune["export_refused"]
    )

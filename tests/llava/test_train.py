"""Training stages end to end through the real CLI (subprocesses, CPU, DeepSpeed ZeRO-2/3, tiny shapes).

pretrain (ZeRO-2) changes only the projector; finetune (ZeRO-3, 1 process and 2 processes under torchrun
with gloo) changes projector + LLM and never the vision tower; LoRA finetune exports merged weights; every
exported directory reloads with plain transformers and generates.

Killed and resumed: a pretrain run SIGKILLed between checkpoints, then stopped by a NaN loss, and a finetune
run SIGKILLed in the middle of a save end with weights bit-identical to the runs never stopped (the warm-up
is longer than the run, so a scheduler that restarted would change them); a tampered checkpoint is refused
before the Trainer loads anything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: int = 300, returncode: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == returncode, p.stdout[-3000:] + p.stderr[-5000:]
    return p


def _interrupted(stage: str, common: list[str], *interrupt: str, returncode: int) -> str:
    """``llava_integration.train`` under ``tests.interrupt`` (a planned SIGKILL or NaN); returns stderr."""
    args = ["-m", "tests.interrupt", *interrupt, "--", "llava_integration.train", f"stage={stage}", *common]
    return _run(args, returncode=returncode).stderr


def _common(run_dir, world, clip, llm) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"model.encoder={clip}",
        f"model.llm={llm}",
        "train.report_to=[]",
        "train.logging_steps=1",
        f"pretrain.data.path={world}/llava/pretrain.json",
        f"pretrain.data.image_root={world}",
        f"finetune.data.path={world}/llava/finetune.json",
        f"finetune.data.image_root={world}",
        "pretrain.max_steps=5",
        "finetune.max_steps=5",
        "pretrain.save_steps=2",
        "finetune.save_steps=2",
        # >= 1 is a number of steps: a warm-up longer than the run (a restarted schedule changes the weights)
        "pretrain.warmup_ratio=10",
        "finetune.warmup_ratio=10",
        "pretrain.per_device_batch_size=4",
        "finetune.per_device_batch_size=4",
        "pretrain.data.limit=null",
        "finetune.data.limit=null",
    ]


def _params(d: Path) -> dict[str, torch.Tensor]:
    from transformers import LlavaForConditionalGeneration

    m = LlavaForConditionalGeneration.from_pretrained(d, dtype=torch.float32)
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def _changed(a: dict, b: dict) -> dict[str, bool]:
    from llava_integration.stages import part_of

    out: dict[str, bool] = {}
    for n in a:
        out[part_of(n)] = out.get(part_of(n), False) or not torch.equal(a[n], b[n])
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, llava_world, tiny_clip_dir, toy_llm_dir):
    run = tmp_path_factory.mktemp("llava_run")
    common = _common(run, llava_world, tiny_clip_dir, toy_llm_dir)
    _run(["-m", "llava_integration.train", "stage=pretrain", *common])
    return run, common


def test_pretrain_changes_only_the_projector(pretrained):
    run, _ = pretrained
    before, after = _params(run / "pretrain" / "assembled"), _params(run / "pretrain" / "model")
    assert _changed(before, after) == {"vision": False, "projector": True, "llm": False}
    prov = json.loads((run / "pretrain" / "model" / "provenance.json").read_text())
    assert prov["extra"]["stage"] == "pretrain" and prov["extra"]["steps"] == 5
    assert (run / "pretrain" / "metrics.jsonl").is_file() and (run / "pretrain" / "config.yaml").is_file()


@pytest.fixture(scope="module")
def finetuned(pretrained) -> Path:
    run, common = pretrained
    _run(["-m", "llava_integration.train", "stage=finetune", *common])
    return run / "finetune"


def test_finetune_zero3_changes_projector_and_llm_never_vision(pretrained, finetuned, llava_world):
    run, _ = pretrained
    before, after = _params(run / "pretrain" / "model"), _params(finetuned / "model")
    assert _changed(before, after) == {"vision": False, "projector": True, "llm": True}
    # The exported directory loads with plain transformers and generates an answer to a held-out question.
    _generates(run / "finetune" / "model", llava_world)


def _generates(model_dir: Path, world: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True).eval()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(world / "val" / "images" / "000000.png").convert("RGB")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]  # generated at least one token


def _lora_finetune(pretrained, run_dir: Path) -> Path:
    run, common = pretrained
    _run(
        [
            "-m",
            "llava_integration.train",
            "stage=finetune",
            *common,
            f"run_dir={run_dir}",
            f"finetune.init_from={run / 'pretrain' / 'model'}",
            "finetune.lora.enabled=true",
            "finetune.lora.r=4",
            "finetune.lora.alpha=8",
            "finetune.projector_lr=1e-3",
        ]
    )
    return run_dir / "finetune" / "model"


@pytest.fixture(scope="module")
def lora_model(pretrained, tmp_path_factory) -> Path:
    return _lora_finetune(pretrained, tmp_path_factory.mktemp("lora"))


def test_lora_finetune_exports_merged_weights(pretrained, lora_model):
    run, _ = pretrained
    model_dir = lora_model
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
    assert not (model_dir / "adapter_config.json").exists()
    before, after = _params(run / "pretrain" / "model"), _params(model_dir)
    assert _changed(before, after) == {"vision": False, "projector": True, "llm": True}


def test_lora_finetune_is_reproducible(pretrained, lora_model, tmp_path):
    """The same seed draws the same adapters and trains them to the same merged weights."""
    from safetensors.torch import load_file

    again = load_file(str(_lora_finetune(pretrained, tmp_path / "again") / "model.safetensors"))
    first = load_file(str(lora_model / "model.safetensors"))
    assert first.keys() == again.keys()
    assert [k for k in first if not torch.equal(first[k], again[k])] == []


def test_zero3_two_processes_torchrun(pretrained, tmp_path):
    run, common = pretrained
    two = tmp_path / "two"
    import socket

    with socket.socket() as sock:  # torchrun's --master_port 0 does not rendezvous: pick a free port
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    p = _run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            port,
            "-m",
            "llava_integration.train",
            "stage=finetune",
            *common,
            f"run_dir={two}",
            f"finetune.init_from={run / 'pretrain' / 'model'}",
            "finetune.max_steps=2",
            "finetune.per_device_batch_size=2",
        ],
        timeout=400,
    )
    assert "finetune model ->" in p.stdout
    before, after = _params(run / "pretrain" / "model"), _params(two / "finetune" / "model")
    assert _changed(before, after) == {"vision": False, "projector": True, "llm": True}
    ckpt = two / "finetune" / "checkpoint-2"  # both ranks' ZeRO-3 shards, committed once both wrote them
    listed = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {r for r in (0, 1) for name in listed if f"zero_pp_rank_{r}_" in name} == {0, 1}


def _same_weights(a: Path, b: Path) -> None:
    """The exported models are bit-identical, and so are the losses the two runs logged step by step."""
    from safetensors.torch import load_file

    x, y = (
        load_file(str(a / "model" / "model.safetensors")),
        load_file(str(b / "model" / "model.safetensors")),
    )
    assert x.keys() == y.keys() and [k for k in x if not torch.equal(x[k], y[k])] == []
    logs = [
        json.loads((d / "checkpoint-5" / "trainer_state.json").read_text())["log_history"] for d in (a, b)
    ]
    assert [(h["step"], h["loss"], h["learning_rate"]) for h in logs[0] if "loss" in h] == [
        (h["step"], h["loss"], h["learning_rate"]) for h in logs[1] if "loss" in h
    ]


def test_pretrain_zero2_killed_then_stopped_by_nan_resumes_exactly(pretrained, tmp_path):
    run, common = pretrained
    common = [*common, f"run_dir={tmp_path}", f"pretrain.init_from={run / 'pretrain' / 'assembled'}"]
    stage = tmp_path / "pretrain"
    # SIGKILL in step 4: step 3 is lost, checkpoint-2 is the newest
    _interrupted("pretrain", common, "--kill-in-forward", "4", returncode=-signal.SIGKILL)
    assert sorted(p.name for p in stage.glob("checkpoint-*")) == ["checkpoint-2"]
    # resumed at 2; the third forward (step 5) returns NaN: every rank stops before the update, no
    # checkpoint is written from it, and the message names the last good one
    err = _interrupted("pretrain", common, "--nan-at-forward", "3", returncode=2)
    assert "loss is nan at step 5" in err and f"the last good checkpoint is {stage / 'checkpoint-4'}" in err
    assert sorted(p.name for p in stage.iterdir() if "checkpoint" in p.name) == ["checkpoint-4"]
    assert not (stage / "model").exists() and not (stage / ".incomplete").exists()
    _run(["-m", "llava_integration.train", "stage=pretrain", *common])
    _same_weights(stage, run / "pretrain")
    metrics = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5]  # each lost step logged once


def test_finetune_zero3_killed_in_a_save_resumes_exactly(pretrained, finetuned, tmp_path):
    run, common = pretrained
    common = [*common, f"run_dir={tmp_path}", f"finetune.init_from={run / 'pretrain' / 'model'}"]
    stage = tmp_path / "finetune"
    # SIGKILL while committing checkpoint-4: every file written and renamed into place, no manifest yet
    _interrupted("finetune", common, "--kill-before-marker", "2", returncode=-signal.SIGKILL)
    assert (stage / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (stage / "checkpoint-4" / "manifest.json").exists()
    err = _run(["-m", "llava_integration.train", "stage=finetune", *common]).stderr
    assert f"removing incomplete checkpoint {stage / 'checkpoint-4'}" in err
    assert f"finetune: resuming from {stage / 'checkpoint-2'} (every file verified" in err
    _same_weights(stage, finetuned)


def test_a_tampered_checkpoint_is_refused_before_the_trainer_loads_it(pretrained, tmp_path):
    from genhancer.utils.config import load_config
    from genhancer.utils.errors import DataError
    from llava_integration.config import LlavaTrainConfig
    from llava_integration.train import _resume_point

    run, common = pretrained
    stage = tmp_path / "pretrain"
    shutil.copytree(run / "pretrain" / "checkpoint-5", stage / "checkpoint-5")
    cfg = load_config(LlavaTrainConfig, None, [*common, f"run_dir={tmp_path}"])
    assert _resume_point(cfg, stage) == str(stage / "checkpoint-5")  # as written: accepted
    victim = next((stage / "checkpoint-5").glob("global_step5/*optim_states.pt"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1  # a pickle DeepSpeed would torch.load(weights_only=False)
    victim.write_bytes(bytes(data))
    for resume in ("auto", str(stage / "checkpoint-5")):
        cfg.train.resume = resume
        with pytest.raises(DataError, match=f"{victim} was modified after it was saved"):
            _resume_point(cfg, stage)


def test_projector_lr_gives_the_projector_its_own_optimizer_group():
    """``<stage>.projector_lr`` (LLaVA's mm_projector_lr): the projector at its own rate, the LLM at the
    Trainer's, weight decay kept where the Trainer puts it; the frozen vision tower in no group."""
    from torch import nn

    from llava_integration.train import _param_groups

    model = nn.Module()
    model.vision_tower = nn.Linear(2, 2)
    model.multi_modal_projector = nn.Linear(2, 3)
    model.language_model = nn.Linear(3, 3)
    model.vision_tower.requires_grad_(False)
    decay = {"multi_modal_projector.weight", "language_model.weight"}
    groups = _param_groups(model, decay, weight_decay=0.1, projector_lr=1e-3)
    named = {id(p): n for n, p in model.named_parameters()}
    got = {(g.get("lr"), g["weight_decay"]): sorted(named[id(p)] for p in g["params"]) for g in groups}
    assert got == {
        (1e-3, 0.1): ["multi_modal_projector.weight"],
        (1e-3, 0.0): ["multi_modal_projector.bias"],
        (None, 0.1): ["language_model.weight"],  # None: the Trainer's learning rate
        (None, 0.0): ["language_model.bias"],
    }


def test_a_projector_only_stage_refuses_text_only_records_by_name():
    """A text-only batch gives a projector-only stage no gradient (DeepSpeed would stop on an assertion
    about the loss): the records are named before training, and a stage that trains the LLM takes them."""
    from genhancer.utils.errors import DataError
    from llava_integration.train import _require_images_if_projector_only

    class Records:
        has_image = [True, True, False, True, False]

        def name(self, index: int) -> str:
            return f"record {index}"

    frozen = {"llm": {"trainable": 0}, "vision": {"trainable": 0}, "projector": {"trainable": 8}}
    with pytest.raises(
        DataError, match=r"data\.json: 2 text-only records \(the first: record 2\), but stage pretrain"
    ):
        _require_images_if_projector_only("pretrain", frozen, Records(), "data.json")
    trains_llm = {**frozen, "llm": {"trainable": 5}}
    _require_images_if_projector_only("finetune", trains_llm, Records(), "data.json")
    Records.has_image = [True, True]
    _require_images_if_projector_only("pretrain", frozen, Records(), "data.json")

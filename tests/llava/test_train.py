"""Training stages end to end through the real CLI (subprocesses, CPU, DeepSpeed ZeRO-2/3, tiny shapes).

pretrain (ZeRO-2) changes only the projector; finetune (ZeRO-3, 1 process and 2 processes under torchrun
with gloo) changes projector + LLM and never the vision tower; LoRA finetune exports merged weights; every
exported directory reloads with plain transformers and generates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p


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
        "pretrain.max_steps=3",
        "finetune.max_steps=3",
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
    assert prov["extra"]["stage"] == "pretrain" and prov["extra"]["steps"] == 3
    assert (run / "pretrain" / "metrics.jsonl").is_file() and (run / "pretrain" / "config.yaml").is_file()


def test_finetune_zero3_changes_projector_and_llm_never_vision(pretrained, llava_world):
    run, common = pretrained
    _run(["-m", "llava_integration.train", "stage=finetune", *common])
    before, after = _params(run / "pretrain" / "model"), _params(run / "finetune" / "model")
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
            "finetune.lora.projector_lr=1e-3",
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

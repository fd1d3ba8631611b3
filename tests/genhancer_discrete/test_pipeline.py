"""The discrete family through the shared machinery, in one process: stage 1 (with a resume) -> stage 2
(LoRA through the frozen discrete denoiser) -> export -> reconstruction grid; and the end-to-end stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.genhancer_discrete.conftest import free_port

pytestmark = pytest.mark.slow


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage1_resume_stage2_export_sample(
    tmp_path, discrete_overrides, toy_world, single_process_env, monkeypatch
):
    from genhancer.export import main as export_main
    from genhancer.module import GenHancerModel
    from genhancer.sample import main as sample_main
    from genhancer.train import main as train_main

    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = [
        *discrete_overrides,
        f"data.path={toy_world}",
        "train.batch_size=4",
        "train.log_every=1",
        "train.save_every=1",
        "schedule.stage1.warmup_steps=0",
        "schedule.stage2.steps=2",
        "lora.r=4",
        "lora.alpha=4",
        "denoiser.overrides.mask_ratio_range=[0.5,0.9]",
    ]
    assert train_main([*common, f"train.run_dir={s1}", "schedule.stage1.steps=2"]) == 0
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert train_main([*common, f"train.run_dir={s1}", "schedule.stage1.steps=3"]) == 0  # resumes at 2
    summary = json.loads((s1 / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"].endswith("step-000002")
    assert [m["step"] for m in metrics(s1)] == [1, 2, 3]
    assert all(0 < m["loss"] < 10 for m in metrics(s1))  # cross-entropy over 128 codes starts near ln 128
    den = s1 / "final" / "denoiser"
    assert json.loads((den / "config.json").read_text())["_class_name"] == "MaskedTokenTransformer"
    assert not list(s1.rglob("*.bin")) and not list(s1.rglob("*.pt"))

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert train_main([*common, f"train.run_dir={s2}", "stage=stage2", f"init_from={s1}/final"]) == 0
    trained = load_file(str(s2 / "checkpoints" / "step-000002" / "model.safetensors"))
    # only the encoder's adapter trains (LoRA A/B, + biases with lora.bias=lora_only); the denoiser is frozen
    assert trained and all(k.startswith("encoder.") for k in trained) and any("lora_A" in k for k in trained)
    # ... and still sends gradient to the encoder: the LoRA moved
    s1_model = GenHancerModel.from_pretrained(s1 / "final")
    s2_model = GenHancerModel.from_pretrained(s2 / "final")
    for (n1, p1), (n2, p2) in zip(s1_model.denoiser.named_parameters(), s2_model.denoiser.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero

    out = tmp_path / "encoder"
    assert export_main(["--run", str(s2), "--out", str(out)]) == 0
    from transformers import CLIPModel

    CLIPModel.from_pretrained(out)

    grid = tmp_path / "grid.png"
    assert (
        sample_main(
            [
                "--stage-dir",
                str(s2),
                "--images",
                str(toy_world),
                "--out",
                str(grid),
                "--n",
                "3",
                "--steps",
                "4",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(grid).size == (3 * 34 + 2, 2 * 34 + 2)  # originals row + MaskGIT reconstructions row


def test_reconstruct_gives_tokenizer_images(make_discrete_cfg):
    from genhancer.module import GenHancerModel

    model = GenHancerModel.build(make_discrete_cfg()).eval()
    x = torch.randn(2, 3, 32, 32)
    ids = model.denoiser.generate(*model.condition(x), (8, 8), 4, torch.Generator().manual_seed(0))
    assert ids.shape == (2, 8, 8) and ids.min() >= 0 and ids.max() < 128
    img = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert img.shape == (2, 3, 32, 32) and torch.allclose(img, model.latent.decode(ids))


def test_end_to_end_stage_trains_everything(make_discrete_cfg):
    from genhancer.module import GenHancerModel

    model = GenHancerModel.build(make_discrete_cfg("stage=end-to-end", "lora.r=2", "lora.alpha=2"))
    out = model(torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1)
    assert set(out) == {"loss", "mask_ratio", "masked_accuracy"} and abs(out["mask_ratio"] - 0.7) < 0.02
    out["loss"].backward()
    grads = {
        part: any(
            p.grad is not None and p.grad.abs().sum() > 0
            for p in getattr(model, part).parameters()
            if p.requires_grad
        )
        for part in ("encoder", "conditioner", "denoiser")
    }
    assert grads == {"encoder": True, "conditioner": True, "denoiser": True}


def test_vq_tokenizer_stays_float32_outside_the_trained_module(make_discrete_cfg):
    from genhancer.module import GenHancerModel

    model = GenHancerModel.build(make_discrete_cfg()).to(torch.bfloat16)  # as a bf16 engine casts it
    codebook = model.latent.tokenizer.codebook
    assert codebook.dtype == torch.float32 and not any("tokenizer" in k for k in model.state_dict())
    assert not any(t is codebook for t in (*model.parameters(), *model.buffers()))


def test_config_errors(make_discrete_cfg):
    from genhancer.module import GenHancerModel
    from genhancer.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="latent.space"):
        GenHancerModel.build(make_discrete_cfg("latent.space=pixel"))
    with pytest.raises(ConfigError, match="guidance"):
        GenHancerModel.build(make_discrete_cfg("denoiser.guidance=4.0"))
    with pytest.raises(ConfigError, match="flow.detail_weight is a continuous-denoiser setting; set it to 0"):
        GenHancerModel.build(make_discrete_cfg("flow.detail_weight=1.0"))
    with pytest.raises(ConfigError, match="overrides"):
        GenHancerModel.build(make_discrete_cfg("denoiser.overrides.mask_ratoi=0.5"))

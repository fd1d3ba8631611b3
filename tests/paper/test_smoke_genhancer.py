"""Real-shape smoke steps of two paper recipes on CPU: the encoder and the FLUX.1 VAE built from their cards
with random weights, the 2+4 lightweight denoiser (1.30 B), batch 1 at the encoder's real input size, in bf16
as the recipe's DeepSpeed bf16 holds the model -- or in fp32 on a CPU without native bf16, where emulated bf16
would take hours (``benchmarks.paper_shapes.cpu_step_precision``).

One stage-1 step, then the in-memory hand-off to stage 2 (LoRA r16 on the targets the config names) and one
stage-2 step: finite losses, the stage's trainable set exactly, a gradient on every trainable parameter and on
nothing else, and the update applied. Each step's wall time and the process's peak RSS are printed (-s).
"""

from __future__ import annotations

import math
import re
import resource
import time

import pytest
import torch

from benchmarks.paper_shapes import (
    build_genhancer,
    cpu_step_precision,
    enter_stage,
    genhancer_config,
    sgd_step,
    synthetic_batch,
)

pytestmark = pytest.mark.slow

CONFIGS = ("openai-clip-l14-336", "siglip-so400m-224")
LIGHTWEIGHT = 1_299_925_056  # the 2+4 denoiser at FLUX.1's 16 latent channels (genhancer.denoisers presets)
DTYPE = {"bf16": torch.bfloat16, "fp32": torch.float32}[cpu_step_precision()]


def _timed_step(model, batch) -> tuple:
    t0 = time.perf_counter()
    result = sgd_step(model, batch, dtype=DTYPE)
    return result, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _expected_lora(model) -> int:
    """LoRA r x (in + out) per adapted linear layer plus its bias (bias: lora_only), counted from the bare
    linear layers peft wrapped -- independently of peft's own bookkeeping."""
    r = model.cfg.lora.r
    total = 0
    for name, module in model.encoder.backbone.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            base = module.base_layer
            total += r * (base.in_features + base.out_features) + (
                base.bias.numel() if base.bias is not None else 0
            )
            assert re.search(r"(q_proj|k_proj|v_proj|out_proj|fc1|fc2|visual_projection)$", name), name
    return total


@pytest.fixture(scope="module", params=CONFIGS)
def smoke(request):
    """Both steps of one recipe; the model is dropped before the next recipe is built."""
    torch.manual_seed(0)
    cfg = genhancer_config(request.param)
    t0 = time.perf_counter()
    model = build_genhancer(cfg).to(DTYPE)  # bf16 as DeepSpeed's bf16 holds it: half the memory
    out = {"name": request.param, "build_s": time.perf_counter() - t0}
    out["image_size"] = model.encoder_image_spec()["image_size"]
    out["latent_shape"] = model.latent.latent_shape(out["image_size"])
    batch = synthetic_batch(model, 1)
    out["stage1_counts"] = enter_stage(model, "stage1")
    out["stage1_parts"] = {
        k: _trainable(getattr(model, k)) for k in ("encoder", "conditioner", "denoiser", "latent")
    }
    out["stage1"], out["stage1_s"], out["stage1_rss_gib"] = _timed_step(model, batch)
    out["stage2_counts"] = enter_stage(model, "stage2")
    out["lora_expected"] = _expected_lora(model)
    out["stage2"], out["stage2_s"], out["stage2_rss_gib"] = _timed_step(model, batch)
    out["lora_targets"] = list(model.cfg.lora.targets)
    del model
    print(
        f"\n{out['name']} ({str(DTYPE).removeprefix('torch.')}): build {out['build_s']:.0f} s; "
        f"stage 1 step {out['stage1_s']:.0f} s "
        f"(peak RSS {out['stage1_rss_gib']:.1f} GiB), {out['stage1_counts']['trainable']:,} trainable; "
        f"stage 2 step {out['stage2_s']:.0f} s (peak RSS {out['stage2_rss_gib']:.1f} GiB), "
        f"{out['stage2_counts']['trainable']:,} trainable (LoRA r16 on {out['lora_targets']})"
    )
    return out


def _trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_real_shapes(smoke):
    size = smoke["image_size"]
    assert size == {"openai-clip-l14-336": 336, "siglip-so400m-224": 224}[smoke["name"]]
    assert smoke["latent_shape"] == (16, size // 8, size // 8)  # FLUX.1 VAE: 16 channels, 8x down


def test_stage1_trains_conditioner_and_denoiser_only(smoke):
    parts, step = smoke["stage1_parts"], smoke["stage1"]
    assert parts["denoiser"] == LIGHTWEIGHT
    assert parts["encoder"] == parts["latent"] == 0 and parts["conditioner"] > 0
    assert smoke["stage1_counts"]["trainable"] == parts["conditioner"] + LIGHTWEIGHT
    assert math.isfinite(step.loss)
    assert step.with_grad == step.trainable
    assert step.changed and step.changed <= step.trainable  # the update moved trainable weights only
    assert {n.split(".")[0] for n in step.trainable} == {"conditioner", "denoiser"}


def test_stage2_trains_the_encoder_lora_only(smoke):
    step, counts = smoke["stage2"], smoke["stage2_counts"]
    assert counts["trainable"] == smoke["lora_expected"]
    assert math.isfinite(step.loss)
    assert step.with_grad == step.trainable
    # lora_B starts at zero, so the first step moves B (and the biases) while A's gradient is still zero
    assert {n for n in step.trainable if "lora_B" in n} <= step.changed <= step.trainable
    assert all(n.startswith("encoder.") and ("lora_" in n or n.endswith(".bias")) for n in step.trainable)
    # the MAP head's nn.MultiheadAttention is never adapted (a LoRA there would be bypassed); its MLP's fc1 /
    # fc2 are, as the SigLIP recipe names them
    assert not any(".head.attention." in n for n in step.trainable)

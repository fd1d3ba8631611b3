"""bf16 training keeps the latent space (VAE) float32 and outside the prepared module, and the flow target
float32 (as the official code: the VAE and the velocity target stay fp32 beside the bf16 DeepSpeed module)."""

from __future__ import annotations

import pytest
import torch

from genhancer.train import main
from tests.genhancer_model.conftest import tiny_vae_dir  # noqa: F401 - the tiny AutoencoderKL fixture


@pytest.mark.parametrize(
    "deepspeed, cache, weights",
    [
        ("configs/deepspeed/zero2.json", "true", torch.bfloat16),  # the engine casts its module to bf16
        ("null", "false", torch.float32),  # plain accelerate: bf16 autocast around forward
    ],
)
def test_bf16_run_keeps_the_vae_float32_outside_the_prepared_module(
    tmp_path, train_args, single_process_env, request, monkeypatch, deepspeed, cache, weights
):
    import accelerate

    from genhancer import flow
    from genhancer.latents import VaeSpace
    from genhancer.module import GenHancerModel

    prepared, latents, targets = [], [], []
    real_prepare, real_encode, real_loss = (
        accelerate.Accelerator.prepare,
        VaeSpace.encode_for_cache,
        flow.flow_matching_loss,
    )

    def prepare(self, *args, **kwargs):
        out = real_prepare(self, *args, **kwargs)
        prepared.append((args[0], out[0]))
        return out

    def encode_for_cache(self, x):
        out = real_encode(self, x)
        latents.append((x.dtype, self.vae.dtype, out.dtype))
        return out

    def loss(pred, target):
        targets.append(target.dtype)
        return real_loss(pred, target)

    monkeypatch.setattr(accelerate.Accelerator, "prepare", prepare)
    monkeypatch.setattr(VaeSpace, "encode_for_cache", encode_for_cache)
    monkeypatch.setattr(flow, "flow_matching_loss", loss)
    vae_dir = request.getfixturevalue("tiny_vae_dir")
    argv = train_args(
        tmp_path / "s1",
        "latent.space=vae",
        f"latent.vae_path={vae_dir}",
        "latent.vae_subfolder=vae",
        "latent.patch_size=2",
        "train.mixed_precision=bf16",
        f"train.deepspeed={deepspeed}",
        f"cache.enabled={cache}",
        "schedule.stage1.steps=2",
    )
    assert main(argv) == 0
    ((model, engine),) = prepared
    assert isinstance(model, GenHancerModel)
    assert {p.dtype for p in engine.parameters()} == {weights}
    vae = list(model.latent.parameters())
    assert vae and all(p.dtype == torch.float32 and not p.requires_grad and p.grad is None for p in vae)
    assert not {id(p) for p in engine.parameters()} & {id(p) for p in vae}
    assert not [k for k in engine.state_dict() if "vae" in k]
    # the VAE saw float32 pixels and computed in float32 (no autocast), the flow target was float32
    assert latents and set(latents) == {(torch.float32,) * 3}
    assert len(targets) == 2 and set(targets) == {torch.float32}

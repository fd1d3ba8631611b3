"""GenHancerModel: build per stage, forward/backward in pixel and VAE spaces, stage hand-off, round trips."""

from __future__ import annotations

import pytest
import torch

from genhancer.module import GenHancerModel
from genhancer.utils.errors import ConfigError, ModelDirError


def _batch(b: int = 2, enc: int = 32, tgt: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, enc, enc, generator=g), torch.rand(b, 3, tgt, tgt, generator=g) * 2 - 1


def _trainable_parts(model: GenHancerModel) -> set[str]:
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory, tiny_clip_dir):
    from genhancer.config import load_genhancer_config

    cfg = load_genhancer_config(
        None,
        [f"encoder.path={tiny_clip_dir}", "denoiser.preset=toy", "latent.space=pixel", "latent.patch_size=4"],
    )
    torch.manual_seed(0)
    model = GenHancerModel.build(cfg)
    out = tmp_path_factory.mktemp("s1") / "final"
    model.save_pretrained(out, extra={"step": 7})
    return out


def test_stage1_forward_backward_pixel(make_cfg):
    model = GenHancerModel.build(make_cfg())
    assert _trainable_parts(model) == {"conditioner", "denoiser"}
    x, y = _batch()
    out = model(x, y, generator=torch.Generator().manual_seed(1))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.encoder_image_spec()["image_size"] == 32


def test_forward_is_reproducible_with_a_generator(make_cfg):
    model = GenHancerModel.build(make_cfg())
    x, y = _batch()
    a = model(x, y, generator=torch.Generator().manual_seed(3))["loss"]
    b = model(x, y, generator=torch.Generator().manual_seed(3))["loss"]
    assert torch.equal(a, b)


def test_stage1_forward_backward_vae(make_cfg, tiny_vae_dir):
    cfg = make_cfg(
        "latent.space=vae",
        f"latent.vae_path={tiny_vae_dir}",
        "latent.vae_subfolder=vae",
        "latent.patch_size=2",
    )
    model = GenHancerModel.build(cfg)
    assert model.latent.channels == 4 and model.latent.downsample == 2
    assert model.denoiser.transformer.config.in_channels == 4 * 2 * 2
    x, y = _batch()
    out = model(x, y)
    out["loss"].backward()
    assert not any(p.requires_grad for p in model.latent.parameters())
    rec = model.reconstruct(x, steps=2, generator=torch.Generator().manual_seed(0))
    assert rec.shape == (2, 3, 32, 32)


def test_stage2_needs_init_from(make_cfg):
    with pytest.raises(ConfigError, match="init_from"):
        GenHancerModel.build(make_cfg("stage=stage2"))


def test_init_from_not_a_stage_dir(make_cfg, tmp_path):
    (tmp_path / "genhancer.yaml").write_text("name: x\n")
    with pytest.raises(ModelDirError, match="conditioner.safetensors"):
        GenHancerModel.build(make_cfg("stage=stage2", f"init_from={tmp_path}"))


@pytest.mark.parametrize(
    "stage,parts",
    [
        ("stage2", {"encoder"}),
        ("stage2-all", {"encoder", "conditioner", "denoiser"}),
    ],
)
def test_stage2_loads_stage1_and_trains_lora(make_cfg, stage1_dir, stage, parts):
    s1 = GenHancerModel.from_pretrained(stage1_dir)
    model = GenHancerModel.build(make_cfg(f"stage={stage}", f"init_from={stage1_dir}"))
    assert _trainable_parts(model) == parts
    enc_trainable = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    assert enc_trainable and all("lora_" in n or n.endswith(".bias") for n in enc_trainable)
    for (n, a), (_, b) in zip(s1.denoiser.state_dict().items(), model.denoiser.state_dict().items()):
        assert torch.equal(a, b), n
    for (n, a), (_, b) in zip(s1.conditioner.state_dict().items(), model.conditioner.state_dict().items()):
        assert torch.equal(a, b), n
    x, y = _batch()
    model(x, y)["loss"].backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.encoder.named_parameters()
        if "lora_B" in n
    )


def test_end_to_end_trains_everything_fresh(make_cfg):
    model = GenHancerModel.build(make_cfg("stage=end-to-end"))
    assert _trainable_parts(model) == {"encoder", "conditioner", "denoiser"}
    assert model.encoder.has_lora


def test_save_from_pretrained_round_trip(make_cfg, stage1_dir, tmp_path):
    model = GenHancerModel.build(make_cfg("stage=stage2", f"init_from={stage1_dir}"))
    with torch.no_grad():  # make the adapter non-trivial so the round trip means something
        for n, p in model.encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.save_pretrained(tmp_path / "s2")
    names = {p.name for p in (tmp_path / "s2").iterdir()}
    assert {
        "genhancer.yaml",
        "conditioner.safetensors",
        "denoiser",
        "encoder_lora",
        "provenance.json",
    } <= names
    assert not list((tmp_path / "s2").rglob("*.bin"))
    loaded = GenHancerModel.from_pretrained(tmp_path / "s2")
    assert not any(p.requires_grad for p in loaded.parameters())
    model.eval()
    x, _ = _batch()
    a, b = model.encoder(x), loaded.encoder(x)
    assert torch.allclose(a.global_token, b.global_token, atol=1e-6)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.allclose(model.reconstruct(x, 2, g1), loaded.reconstruct(x, 2, g2), atol=1e-5)


def test_trainable_state_dict_round_trip(make_cfg, stage1_dir):
    from safetensors.torch import load, save

    model = GenHancerModel.build(make_cfg("stage=stage2-all", f"init_from={stage1_dir}"))
    sd = model.trainable_state_dict()
    assert set(sd) == {n for n, p in model.named_parameters() if p.requires_grad}
    blob = save(sd)  # safetensors refuses shared/non-contiguous storage: this is the real check
    other = GenHancerModel.build(make_cfg("stage=stage2-all", f"init_from={stage1_dir}"))
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(1.0)
    other.load_trainable_state_dict(load(blob))
    for n, p in other.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, sd[n]), n
    with pytest.raises(ModelDirError, match="missing"):
        other.load_trainable_state_dict({})


def test_siglip_model_builds_and_trains(make_cfg, tiny_siglip_dir):
    model = GenHancerModel.build(
        make_cfg("encoder.family=siglip", f"encoder.path={tiny_siglip_dir}", "stage=end-to-end")
    )
    assert model.encoder.global_dim == 32
    spec = model.encoder_image_spec()
    assert spec == {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    x, y = _batch()
    model(x, y)["loss"].backward()
    # [IMPORTANT] the MAP head's nn.MultiheadAttention.out_proj must not get a (silently bypassed) LoRA
    assert not any("head.attention" in n and "lora_" in n for n, _ in model.encoder.named_parameters())
    assert any("head.mlp.fc1.lora_A" in n for n, _ in model.encoder.named_parameters())


def test_family_mismatch_is_a_config_error(make_cfg, tiny_siglip_dir):
    with pytest.raises(ConfigError, match="encoder.family"):
        GenHancerModel.build(make_cfg(f"encoder.path={tiny_siglip_dir}"))


def test_local_tokens_lengthen_the_context(make_cfg):
    x, _ = _batch()
    plain = GenHancerModel.build(make_cfg())
    local = GenHancerModel.build(make_cfg("conditioning.local_token_fraction=0.25"))
    _, ctx0 = plain.condition(x)
    _, ctx1 = local.condition(x)
    # tiny CLIP: 32 px / patch 8 = 16 patches; 25% -> 4 local tokens after the global one
    assert ctx0.shape[1] == 1 and ctx1.shape[1] == 1 + 4
    x2, y2 = _batch()
    local(x2, y2)["loss"].backward()


def test_stage_dir_from_before_hidden_width_reads_back_with_input_width_projectors(make_cfg, tmp_path):
    import yaml

    model = GenHancerModel.build(make_cfg("conditioning.hidden_width=input"))
    model.save_pretrained(tmp_path / "old")
    saved = yaml.safe_load((tmp_path / "old" / "genhancer.yaml").read_text())
    del saved["conditioning"]["hidden_width"]  # what a directory written before the key existed holds
    (tmp_path / "old" / "genhancer.yaml").write_text(yaml.safe_dump(saved))
    loaded = GenHancerModel.from_pretrained(tmp_path / "old")
    assert loaded.cfg.conditioning.hidden_width == "input"
    for a, b in zip(model.conditioner.state_dict().values(), loaded.conditioner.state_dict().values()):
        assert torch.equal(a, b)
    # the default (output-width) projectors of the same sizes are wider: 16-d token -> 32-wide denoiser
    assert GenHancerModel.build(make_cfg()).conditioner.to_pooled[1].out_features == 32
    assert loaded.conditioner.to_pooled[1].out_features == 16


def test_latent_space_follows_device_moves_but_not_dtype_casts(make_cfg, tiny_vae_dir):
    model = GenHancerModel.build(
        make_cfg("latent.space=vae", f"latent.vae_path={tiny_vae_dir}", "latent.vae_subfolder=vae")
    )
    vae = list(model.latent.parameters())
    assert vae and not {id(p) for p in vae} & {id(p) for p in model.parameters()}
    model.to(torch.bfloat16)  # what a DeepSpeed bf16 engine does to its module
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in vae} == {torch.float32}
    model.to("meta")
    assert {p.device.type for p in model.latent.parameters()} == {"meta"}
    assert {p.dtype for p in model.latent.parameters()} == {torch.float32}


def test_end_to_end_optimizer_groups_give_the_lora_stage_2s_lr(make_cfg, stage1_dir):
    from genhancer.stages import optimizer_groups

    cfg = make_cfg("stage=end-to-end")
    model = GenHancerModel.build(cfg)
    rest, encoder = optimizer_groups(model, cfg.current_schedule)
    assert (rest["lr"], encoder["lr"]) == (1e-4, 1e-5)  # the paper's stage-1 and stage-2 learning rates
    lora = {id(p) for p in model.encoder.parameters() if p.requires_grad}
    assert lora and {id(p) for p in encoder["params"]} == lora
    assert not lora & {id(p) for p in rest["params"]} and len(rest["params"]) + len(lora) == len(
        [p for p in model.parameters() if p.requires_grad]
    )
    # stages without a distinct encoder lr keep the one group (and the optimizer state checkpoints hold)
    cfg2 = make_cfg("stage=stage2-all", f"init_from={stage1_dir}")
    (group,) = optimizer_groups(GenHancerModel.build(cfg2), cfg2.current_schedule)
    assert group["lr"] == 1e-5

"""Registries, encoders' global tokens, conditioner, latent packing, denoiser presets, the paper YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.paper_shapes import GENHANCER_CONFIGS
from genhancer.conditioning import GlobalTokenConditioner
from genhancer.config import load_genhancer_config
from genhancer.denoisers import DENOISERS
from genhancer.denoisers.continuous import PRESETS, preset_parameter_count, transformer_kwargs
from genhancer.encoders import ENCODERS, VisionEncoder, lora_target_regex
from genhancer.latents import LATENT_SPACES, patchify, token_position_ids, unpatchify
from genhancer.module import GenHancerModel
from genhancer.stages import STAGES
from genhancer.utils.errors import ConfigError, ModelDirError

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs" / "genhancer"
# the continuous-denoiser paper recipes (other YAMLs here belong to other families/owners and have their
# tests)
PAPER_YAMLS = [CONFIG_DIR / f"{n}.yaml" for n in GENHANCER_CONFIGS]


def test_registries_list_known_ids_on_error():
    for registry, known in (
        (ENCODERS, "clip"),
        (DENOISERS, "continuous"),
        (LATENT_SPACES, "pixel"),
        (STAGES, "stage1"),
    ):
        with pytest.raises(ConfigError, match=known):
            registry["nope"]


def test_stage_specs():
    assert {
        k: (s.trains_conditioner, s.trains_denoiser, s.encoder, s.needs_init_from) for k, s in STAGES.items()
    } == {
        "stage1": (True, True, "frozen", False),
        "stage2": (False, False, "lora", True),
        "stage2-all": (True, True, "lora", True),
        "end-to-end": (True, True, "lora", False),
    }


def test_clip_global_token_is_projected_pooled_cls(tiny_clip_dir):
    from transformers import CLIPModel

    enc = VisionEncoder.load("clip", str(tiny_clip_dir))
    ref = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = enc(x)
        want = ref.get_image_features(pixel_values=x).pooler_output  # visual_projection(pooler_output)
        hidden = ref.vision_model(pixel_values=x).last_hidden_state
    assert out.global_token.shape == (2, 16) and torch.allclose(out.global_token, want, atol=1e-6)
    assert torch.allclose(out.patch_tokens, hidden[:, 1:], atol=1e-6) and out.patch_tokens.shape == (
        2,
        16,
        32,
    )
    assert ENCODERS["clip"].tokenizer_max_length == 77


def test_siglip_global_token_is_map_head_output(tiny_siglip_dir):
    from transformers import SiglipModel

    enc = VisionEncoder.load("siglip", str(tiny_siglip_dir))
    ref = SiglipModel.from_pretrained(tiny_siglip_dir).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = enc(x)
        vis = ref.vision_model(pixel_values=x)
        map_head = ref.vision_model.head(vis.last_hidden_state)
    assert torch.allclose(out.global_token, map_head, atol=1e-6) and out.global_token.shape == (2, 32)
    assert out.patch_tokens.shape == (2, 16, 32)
    assert ENCODERS["siglip"].tokenizer_max_length == 64


def test_lora_regex_stays_on_the_vision_side(tiny_clip_dir):
    import re

    enc = VisionEncoder.load("clip", str(tiny_clip_dir))
    rx = lora_target_regex(enc.backbone, ["all-linear"])
    from transformers import CLIPModel

    names = [
        n
        for n, m in CLIPModel.from_pretrained(tiny_clip_dir).named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    hits = [n for n in names if re.fullmatch(rx, n)]
    assert "visual_projection" in hits and all(
        n.startswith(("vision_model.", "visual_projection")) for n in hits
    )
    assert len(hits) == 2 * 6 + 1  # 2 layers x (q, k, v, out, fc1, fc2) + projection
    with pytest.raises(ConfigError, match="match no linear layer"):
        lora_target_regex(enc.backbone, ["query"])


@pytest.mark.parametrize(
    "family, model_dir, leaves, wrapped",
    [
        # tiny CLIP: 2 layers x (q, k, v, out_proj, fc1, fc2) + visual_projection
        (
            "clip",
            "tiny_clip_dir",
            {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "visual_projection"},
            13,
        ),
        # tiny SigLIP: 2 layers x 6 + the MAP head's fc1, fc2 (its MultiheadAttention is skipped)
        ("siglip", "tiny_siglip_dir", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}, 14),
    ],
)
def test_default_lora_targets_are_the_encoder_familys(make_cfg, request, family, model_dir, leaves, wrapped):
    from genhancer.utils.families import FAMILIES

    encoder = (f"encoder.family={family}", f"encoder.path={request.getfixturevalue(model_dir)}")
    assert make_cfg(*encoder).lora.targets == []  # no family's list is the schema's default
    model = GenHancerModel.build(make_cfg(*encoder, "stage=end-to-end"))
    assert model.encoder.lora_targets([]) == list(FAMILIES[family].lora_targets)
    names = [n for n, m in model.encoder.backbone.named_modules() if hasattr(m, "lora_A")]
    assert {n.rsplit(".", 1)[-1] for n in names} == leaves and len(names) == wrapped
    assert model.encoder.lora_targets(["fc1"]) == ["fc1"]  # a configured list wins


def test_conditioner_shapes_and_local_fraction():
    cond = GlobalTokenConditioner(
        global_dim=16, pooled_dim=8, context_dim=12, patch_dim=20, local_token_fraction=0.1
    )
    pooled, ctx = cond(torch.randn(3, 16), torch.randn(3, 49, 20))
    assert pooled.shape == (3, 8) and ctx.shape == (3, 1 + 5, 12)  # ceil(0.1 * 49) = 5
    plain = GlobalTokenConditioner(16, 8, 12)
    assert plain(torch.randn(3, 16))[1].shape == (3, 1, 12) and plain.local_proj is None
    for proj in (plain.to_pooled, plain.to_context):
        assert [type(m).__name__ for m in proj] == ["LayerNorm", "Linear", "GELU", "Linear"]


def test_whitening_gives_the_identity_covariance_and_is_off_by_default():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([10.0, 3.0, 1.0, 0.1, 0.01, 1.0])  # one loud direction, some faint ones
    mix = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    x = (torch.randn(20_000, 6, generator=g) * scales) @ mix.T + 5.0
    cond = GlobalTokenConditioner(6, 4, 4, whiten=True)
    assert torch.equal(cond.whiten_matrix, torch.eye(6))  # identity until fitted
    cond.fit_whitening(len(x), x.double().sum(0), x.double().T @ x.double(), eps=1e-9)
    white = (x - cond.whiten_mean) @ cond.whiten_matrix
    assert torch.allclose(white.mean(0), torch.zeros(6), atol=1e-3)
    assert torch.allclose(torch.cov(white.T), torch.eye(6), atol=1e-2)
    assert {"whiten_mean", "whiten_matrix"} <= set(cond.state_dict())
    assert not {"whiten_mean", "whiten_matrix"} & set(GlobalTokenConditioner(6, 4, 4).state_dict())


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# LayerNorm(d) + Linear(d, h) + Linear(h, out) = 2d + (d*h + h) + (h*out + out), with h = out (the official
# code); out = 768 (pooled) and 4096 (context), the lightweight denoiser's widths; d = the global token width.
@pytest.mark.parametrize(
    "name, d, pooled, context",
    [
        ("openai-clip-l14", 768, 1_182_720, 19_932_672),  # visual_projection output, 768-d
        ("siglip-so400m-224", 1152, 1_478_400, 21_506_304),  # the MAP head's pooler_output, 1152-d
    ],
)
def test_paper_projectors_widen_to_their_output_width(name, d, pooled, context):
    cfg = load_genhancer_config(CONFIG_DIR / f"{name}.yaml")
    kw = transformer_kwargs(cfg.denoiser.preset, in_channels=64, guidance=False)
    assert (kw["pooled_projection_dim"], kw["joint_attention_dim"]) == (768, 4096)
    with torch.device("meta"):
        cond = GlobalTokenConditioner.from_config(cfg.conditioning, d, 768, 4096)
    assert (_n(cond.to_pooled), _n(cond.to_context)) == (pooled, context)
    widths = [(m.in_features, m.out_features) for m in cond.to_context if isinstance(m, torch.nn.Linear)]
    assert widths == [(d, 4096), (4096, 4096)]
    # the input-width hidden layer (the toy's shape) is the 3.7 M context projector the official code lacks
    with torch.device("meta"):
        narrow = GlobalTokenConditioner(d, 768, 4096, hidden_width="input")
    assert _n(narrow.to_context) == 2 * d + (d * d + d) + (d * 4096 + 4096)
    assert name != "openai-clip-l14" or _n(narrow.to_context) == 3_741_952


def test_toy_projectors_keep_the_input_width(make_cfg):
    toy = load_genhancer_config(CONFIG_DIR / "toy.yaml")
    assert toy.conditioning.hidden_width == "input"
    cond = GlobalTokenConditioner.from_config(toy.conditioning, 16, 8, 12, patch_dim=20)
    assert [m.out_features for m in cond.to_context if isinstance(m, torch.nn.Linear)] == [16, 12]
    local = GlobalTokenConditioner.from_config(
        make_cfg("conditioning.local_token_fraction=0.5").conditioning, 16, 8, 12, patch_dim=20
    )
    assert [m.out_features for m in local.local_proj if isinstance(m, torch.nn.Linear)] == [12, 12]


def test_patchify_round_trip_and_ids():
    z = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tok = patchify(z, 2)
    assert tok.shape == (2, 6, 12)
    assert torch.equal(
        tok[0, 0], z[0, :, :2, :2].reshape(-1)
    )  # first token = top-left 2x2 cell, all channels
    assert torch.equal(unpatchify(tok, 2, 3, 4, 6), z)
    ids = token_position_ids(4, 6, 2)
    assert ids.shape == (6, 3) and ids[:, 0].eq(0).all()
    assert ids[1].tolist() == [0, 0, 1] and ids[3].tolist() == [0, 1, 0]


def test_latent_spaces_build(make_cfg, tiny_vae_dir):
    pixel = LATENT_SPACES["pixel"].from_config(make_cfg().latent)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(pixel.decode(pixel.encode(x)), x) and pixel.token_dim == 48
    vae_cfg = make_cfg(
        "latent.space=vae", f"latent.vae_path={tiny_vae_dir}", "latent.vae_subfolder=vae"
    ).latent
    vae = LATENT_SPACES["vae"].from_config(vae_cfg)
    z = vae.encode(x, torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 16, 16) and vae.latent_shape(32) == (4, 16, 16)
    assert vae.decode(z).shape == (2, 3, 32, 32)
    # encode = scale * (z - shift) of the posterior mode when not sampling
    vae.sample_posterior = False
    with torch.no_grad():
        mode = vae.vae.encode(x).latent_dist.mode()
    assert torch.allclose(vae.encode(x), 0.3611 * (mode - 0.1159), atol=1e-6)
    with pytest.raises(ConfigError, match="divisible"):
        vae.latent_shape(30)


def test_every_denoiser_and_preset_kwargs():
    for preset in PRESETS:
        kw = transformer_kwargs(preset, in_channels=64, guidance=False)
        assert sum(kw["axes_dims_rope"]) == kw["attention_head_dim"]
    with pytest.raises(ConfigError, match="axes_dims_rope"):
        transformer_kwargs("toy", 48, False, {"attention_head_dim": 24})
    with pytest.raises(ConfigError, match="derived"):
        transformer_kwargs("toy", 48, False, {"in_channels": 12})
    with pytest.raises(ConfigError, match="lightweight"):
        transformer_kwargs("huge", 48, False)


def test_lightweight_preset_is_the_papers_size():
    # the paper's 1.31 B counts the public code's guidance embedder (its constant guidance = 4 leftover)
    n = preset_parameter_count("lightweight", in_channels=64)
    assert 1.29e9 < n < 1.31e9
    assert 1.305e9 < preset_parameter_count("lightweight", in_channels=64, guidance=True) < 1.315e9
    assert preset_parameter_count("1+2") < n < preset_parameter_count("3+6")


def test_guidance_is_a_config_switch(make_cfg):
    model = GenHancerModel.build(make_cfg("denoiser.guidance=4.0"))
    assert model.denoiser.transformer.config.guidance_embeds
    model(torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32))["loss"].backward()
    assert not GenHancerModel.build(make_cfg()).denoiser.transformer.config.guidance_embeds


def test_detail_weight_adds_the_high_passed_error_to_the_flow_loss(make_cfg):
    plain = GenHancerModel.build(make_cfg())
    weighted = GenHancerModel.build(make_cfg("flow.detail_weight=2.0"))
    weighted.load_state_dict(plain.state_dict())
    latents = torch.randn(2, 3, 8, 8)  # pixel space, patch 4: 4 tokens of 48 values
    pooled = torch.randn(2, plain.denoiser.pooled_dim)
    context = torch.randn(2, 1, plain.denoiser.context_dim)
    plain_res, res = (
        m.denoiser.training_loss(latents, pooled, context, torch.Generator().manual_seed(0))
        for m in (plain, weighted)
    )
    assert set(plain_res) == {"loss", "t_mean"}  # off: the paper's loss, nothing added
    assert torch.equal(res["mse"], plain_res["loss"])  # the same draws and weights: the same plain MSE
    assert res["detail"].item() > 0.01
    assert res["loss"].item() == pytest.approx(res["mse"].item() + 2.0 * res["detail"].item(), rel=1e-6)
    res["loss"].backward()  # the weighted loss trains the denoiser
    assert all(p.grad is not None for p in weighted.denoiser.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="flow.detail_weight must be >= 0"):
        make_cfg("flow.detail_weight=-1")


def test_rope_theta_is_a_config_switch_that_survives_a_reload(make_cfg, tmp_path):
    flux = GenHancerModel.build(make_cfg())
    assert flux.denoiser.transformer.pos_embed.theta == 10000  # Flux's base unless the config says otherwise
    model = GenHancerModel.build(make_cfg("denoiser.overrides.rope_theta=10"))
    pos = model.denoiser.transformer.pos_embed
    assert pos.theta == 10 and list(pos.axes_dim) == list(flux.denoiser.transformer.pos_embed.axes_dim)
    ids = torch.tensor([[0.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    # base 10000 nearly repeats row 0 at row 6 on the toy heads' 6 dims per axis; base 10 keeps them apart
    near = torch.dist(*flux.denoiser.transformer.pos_embed(ids)[0])
    assert torch.dist(*pos(ids)[0]) > 2 * near
    model.save_pretrained(tmp_path / "stage")
    assert GenHancerModel.from_pretrained(tmp_path / "stage").denoiser.transformer.pos_embed.theta == 10
    # the saved denoiser decides, as its weights do: a stage 2 whose config lacks the override keeps base 10
    saved = tmp_path / "stage" / "denoiser"
    family = type(model.denoiser)
    assert family.from_pretrained(saved, make_cfg(), model.latent).transformer.pos_embed.theta == 10
    (saved / "rope.json").unlink()  # saved before the option existed: trained at Flux's base
    assert family.from_pretrained(saved, make_cfg(), model.latent).transformer.pos_embed.theta == 10000
    with pytest.raises(ConfigError, match="rope_theta must be a number > 1"):
        GenHancerModel.build(make_cfg("denoiser.overrides.rope_theta=0.5"))


def test_a_stage_dir_read_from_elsewhere_names_its_relative_encoder_path(
    make_cfg, tiny_clip_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tiny_clip_dir.parent)
    GenHancerModel.build(make_cfg(f"encoder.path={tiny_clip_dir.name}")).save_pretrained(tmp_path / "stage")
    assert GenHancerModel.from_pretrained(tmp_path / "stage").cfg.encoder.path == tiny_clip_dir.name
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelDirError, match=f"names '{tiny_clip_dir.name}' as given at training time"):
        GenHancerModel.from_pretrained(tmp_path / "stage")


@pytest.mark.parametrize("yaml", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_genhancer_yaml_loads(yaml):
    cfg = load_genhancer_config(yaml)
    assert cfg.stage in STAGES and cfg.encoder.family in ENCODERS and cfg.denoiser.type in DENOISERS


@pytest.mark.parametrize("yaml", PAPER_YAMLS, ids=lambda p: p.stem)
def test_paper_yaml_loads_and_builds_tiny(yaml, tiny_clip_dir, tiny_siglip_dir, tiny_vae_dir):
    cfg = load_genhancer_config(yaml)
    assert cfg.denoiser.preset == "lightweight" and cfg.latent.space == "vae" and cfg.latent.patch_size == 2
    assert cfg.latent.vae_path == "black-forest-labs/FLUX.1-dev" and cfg.latent.vae_subfolder == "vae"
    assert cfg.train.batch_size == 16 and cfg.train.grad_accum == 2 and cfg.train.mixed_precision == "bf16"
    assert cfg.schedule["stage1"].steps == 100_000 and cfg.schedule["stage1"].lr == 1e-4
    assert cfg.lora.r == 16 and cfg.lora.alpha == 16 and cfg.lora.bias == "lora_only"
    assert "MUST-OVERRIDE" in cfg.data.path and cfg.data.source == "webdataset"
    tiny_dir = tiny_siglip_dir if cfg.encoder.family == "siglip" else tiny_clip_dir
    cfg = load_genhancer_config(
        yaml,
        [
            f"encoder.path={tiny_dir}",
            f"latent.vae_path={tiny_vae_dir}",
            # the recipe's everything except size: lightweight's depth, a tiny width
            "denoiser.overrides={attention_head_dim: 16, num_attention_heads: 2, joint_attention_dim: 32,"
            " pooled_projection_dim: 32, axes_dims_rope: [4, 6, 6]}",
            "stage=end-to-end",
        ],
    )
    model = GenHancerModel.build(cfg)
    assert len(model.denoiser.transformer.transformer_blocks) == 2
    assert len(model.denoiser.transformer.single_transformer_blocks) == 4
    model(torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1)["loss"].backward()

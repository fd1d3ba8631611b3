"""The continuous denoiser: a randomly initialised Flux MM-DiT trained with rectified flow matching.

diffusers' ``FluxTransformer2DModel`` is used as is, configured small. Its own ``patch_size`` stays 1: the
latent space packs p x p latent cells into one token (``in_channels = C * p * p``), as FLUX.1 does.

Presets (``denoiser.preset``; ``denoiser.overrides`` change any constructor kwarg, and ``rope_theta``, the
base of the RoPE frequencies, which diffusers fixes at Flux's 10000 and this module sets after construction):
  toy          1 double + 2 single blocks, 2 heads x 16 (~90 k params), CPU-fast (tests)
  toy-64       the same at width 64 (4 heads x 16, ~0.34 M params): the toy world's default
  lightweight  2 double + 4 single, 24 heads x 128 (hidden 3072): the paper's ~1.31 B denoiser
  1+2, 3+6     the paper's depth ablation at the same width
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from genhancer import flow
from genhancer.denoisers import DENOISERS, Denoiser
from genhancer.latents import patchify, token_position_ids, unpatchify
from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.weights import require_safetensors

_PAPER_WIDTH = MappingProxyType(
    dict(
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        axes_dims_rope=(16, 56, 56),
    )
)
PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "toy": MappingProxyType(
            dict(
                # sized for 2 CPU cores: the per-token MLP/modulation work dominates, so the width stays at 32
                num_layers=1,
                num_single_layers=2,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=32,
                pooled_projection_dim=32,
                axes_dims_rope=(4, 6, 6),
            )
        ),
        "toy-64": MappingProxyType(
            dict(
                # the toy world's default: the toy preset at width 64 (4 heads x 16), ~0.34 M parameters
                num_layers=1,
                num_single_layers=2,
                attention_head_dim=16,
                num_attention_heads=4,
                joint_attention_dim=64,
                pooled_projection_dim=64,
                axes_dims_rope=(4, 6, 6),
            )
        ),
        "lightweight": MappingProxyType(dict(num_layers=2, num_single_layers=4, **_PAPER_WIDTH)),
        "1+2": MappingProxyType(dict(num_layers=1, num_single_layers=2, **_PAPER_WIDTH)),
        "3+6": MappingProxyType(dict(num_layers=3, num_single_layers=6, **_PAPER_WIDTH)),
    }
)


FLUX_ROPE_THETA = 10000.0  # diffusers' FluxPosEmbed base, as in FLUX.1
ROPE_FILE = "rope.json"  # beside a saved denoiser's config.json: the base it was trained with


def rope_theta(preset: str, overrides: dict[str, Any] | None = None) -> float:
    """The RoPE base of a preset (+ overrides): Flux's 10000 unless ``rope_theta`` says otherwise."""
    theta = {**PRESETS[preset], **(overrides or {})}.get("rope_theta", FLUX_ROPE_THETA)
    if not isinstance(theta, (int, float)) or theta <= 1:
        raise ConfigError(f"denoiser.overrides.rope_theta must be a number > 1, got {theta!r}")
    return float(theta)


def _set_rope_theta(transformer: torch.nn.Module, theta: float) -> torch.nn.Module:
    """Swap the transformer's (parameter-free) rotary embedding for one with base ``theta``."""
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    if float(transformer.pos_embed.theta) != theta:
        transformer.pos_embed = FluxPosEmbed(theta=theta, axes_dim=list(transformer.pos_embed.axes_dim))
    return transformer


def transformer_kwargs(
    preset: str, in_channels: int, guidance: bool, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Constructor kwargs of ``FluxTransformer2DModel`` for a preset (+ overrides), checked; ``rope_theta``
    is not one of them (see :func:`rope_theta`)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown denoiser.preset {preset!r}; known presets: {', '.join(PRESETS)}")
    rope_theta(preset, overrides)
    kwargs: dict[str, Any] = dict(PRESETS[preset])
    kwargs.update(patch_size=1, in_channels=in_channels, guidance_embeds=guidance)
    for key, value in (overrides or {}).items():
        if key in ("in_channels", "patch_size", "guidance_embeds", "out_channels"):
            raise ConfigError(
                f"denoiser.overrides.{key} is derived (in_channels from the latent space and "
                "latent.patch_size, guidance_embeds from denoiser.guidance); remove it"
            )
        kwargs[key] = value
    kwargs.pop("rope_theta", None)
    kwargs["axes_dims_rope"] = tuple(kwargs["axes_dims_rope"])
    if sum(kwargs["axes_dims_rope"]) != kwargs["attention_head_dim"]:
        raise ConfigError(
            f"denoiser: sum(axes_dims_rope)={sum(kwargs['axes_dims_rope'])} must equal attention_head_dim="
            f"{kwargs['attention_head_dim']} (Flux's 3-axis RoPE covers each head exactly)"
        )
    if any(d % 2 for d in kwargs["axes_dims_rope"]):
        raise ConfigError(
            f"denoiser: every axes_dims_rope entry must be even, got {kwargs['axes_dims_rope']}"
        )
    return kwargs


def preset_parameter_count(
    preset: str, in_channels: int = 64, guidance: bool = False, overrides: dict[str, Any] | None = None
) -> int:
    """Parameters of a preset without allocating them (meta device)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        model = FluxTransformer2DModel(**transformer_kwargs(preset, in_channels, guidance, overrides))
    return sum(p.numel() for p in model.parameters())


@DENOISERS.register("continuous")
class ContinuousDenoiser(Denoiser):
    """Flux MM-DiT + flow matching (see ``genhancer.flow`` for the t convention: t = 1 is noise)."""

    latent_spaces = ("pixel", "vae")

    def __init__(
        self, transformer: torch.nn.Module, latent: Any, flow_cfg: Any, guidance: float | None
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.patch_size = latent.patch_size
        self.channels = latent.channels
        self.t_sampling = flow_cfg.t_sampling
        self.logit_scale = float(flow_cfg.logit_scale)
        self.logit_mean = float(flow_cfg.logit_mean)
        self.detail_weight = float(flow_cfg.detail_weight)
        self.guidance = guidance
        self.pooled_dim = int(transformer.config.pooled_projection_dim)
        self.context_dim = int(transformer.config.joint_attention_dim)
        if int(transformer.config.in_channels) != latent.token_dim:
            raise ConfigError(
                f"the denoiser takes {transformer.config.in_channels}-channel tokens "
                "but the latent space gives "
                f"{latent.token_dim} (= {latent.channels} channels x patch {latent.patch_size}^2)"
            )
        if bool(transformer.config.guidance_embeds) != (guidance is not None):
            raise ConfigError(
                f"denoiser.guidance={guidance} does not match the saved denoiser "
                f"(guidance_embeds={transformer.config.guidance_embeds})"
            )

    @classmethod
    def build(cls, cfg: Any, latent: Any) -> ContinuousDenoiser:
        from diffusers import FluxTransformer2DModel

        kwargs = transformer_kwargs(
            cfg.denoiser.preset, latent.token_dim, cfg.denoiser.guidance is not None, cfg.denoiser.overrides
        )
        transformer = _set_rope_theta(
            FluxTransformer2DModel(**kwargs), rope_theta(cfg.denoiser.preset, cfg.denoiser.overrides)
        )
        return cls(transformer, latent, cfg.flow, cfg.denoiser.guidance)

    @classmethod
    def from_pretrained(cls, directory: str | Path, cfg: Any, latent: Any) -> ContinuousDenoiser:
        from diffusers import FluxTransformer2DModel

        directory = cls.saved_directory(directory)
        require_safetensors(directory, loader="diffusers.FluxTransformer2DModel")
        transformer = FluxTransformer2DModel.from_pretrained(directory, use_safetensors=True)
        # the saved denoiser decides, like its weights; one saved before ROPE_FILE existed used Flux's base
        rope = directory / ROPE_FILE
        theta = float(read_json(rope)["rope_theta"]) if rope.is_file() else FLUX_ROPE_THETA
        return cls(_set_rope_theta(transformer, theta), latent, cfg.flow, cfg.denoiser.guidance)

    def save_pretrained(self, directory: str | Path) -> None:
        self.transformer.save_pretrained(str(directory), safe_serialization=True)
        write_json(Path(directory) / ROPE_FILE, {"rope_theta": float(self.transformer.pos_embed.theta)})

    # -- the network as a velocity field --------------------------------------------------------------
    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        pooled: torch.Tensor,
        context: torch.Tensor,
        img_ids: torch.Tensor,
    ) -> torch.Tensor:
        """x_t (B, N, C*p*p) packed tokens, t (B,) in [0, 1], pooled (B, P), context (B, T, J)
        -> (B, N, C*p*p)."""
        txt_ids = torch.zeros(context.shape[1], 3, device=x_t.device, dtype=img_ids.dtype)  # (T, 3)
        guidance = None
        if self.guidance is not None:
            guidance = torch.full((x_t.shape[0],), float(self.guidance), device=x_t.device, dtype=x_t.dtype)
        return self.transformer(
            hidden_states=x_t,
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=t.to(x_t.dtype),  # Flux multiplies by 1000 itself
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=guidance,
            return_dict=False,
        )[0]

    def training_loss(
        self,
        latents: torch.Tensor,
        pooled: torch.Tensor,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """latents (B, C, h, w) -> {"loss": MSE(v_pred, noise - x), "t_mean": [] tensor, detached}; with
        ``flow.detail_weight`` w > 0 the loss is "mse" + w * "detail" (``flow.detail_loss`` of the two
        velocities), both also returned, detached.

        As in the official code, noise, x_t and the velocity target are float32 whatever the weights' dtype;
        only the network's input x_t is cast to it (bf16 under DeepSpeed).
        """
        b, _, h, w = latents.shape
        x = patchify(latents, self.patch_size).float()  # (B, N, C*p*p)
        noise = torch.randn(
            x.shape,
            generator=generator,
            dtype=x.dtype,
            device=generator.device if generator is not None else x.device,
        ).to(x.device)
        t = flow.sample_timesteps(
            b, self.t_sampling, self.logit_scale, generator, device=x.device, logit_mean=self.logit_mean
        )
        x_t = flow.interpolate(x, noise, t)
        img_ids = token_position_ids(h, w, self.patch_size, x.device)
        pred = self.velocity(x_t.to(self.transformer.dtype), t, pooled, context, img_ids)
        target = flow.velocity_target(x, noise)
        loss = flow.flow_matching_loss(pred, target)
        # tensors, not floats: no host sync per step (and a shape-only run on the meta device works)
        out = {"loss": loss, "t_mean": t.mean().detach()}
        if self.detail_weight:
            grid = (self.patch_size, self.channels, h, w)
            detail = flow.detail_loss(unpatchify(pred, *grid), unpatchify(target, *grid))
            out.update(loss=loss + self.detail_weight * detail, mse=loss.detach(), detail=detail.detach())
        return out

    @torch.no_grad()
    def generate(
        self,
        pooled: torch.Tensor,
        context: torch.Tensor,
        latent_hw: tuple[int, int],
        steps: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler-integrate from noise (t = 1) to data (t = 0): returns latents (B, C, h, w)."""
        h, w = latent_hw
        p = self.patch_size
        b = pooled.shape[0]
        img_ids = token_position_ids(h, w, p, pooled.device)
        shape = (b, (h // p) * (w // p), self.channels * p * p)

        def velocity_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, t, pooled, context, img_ids)

        tokens = flow.euler_sample(
            velocity_fn, shape, steps, generator, device=pooled.device, dtype=pooled.dtype
        )
        return unpatchify(tokens, p, self.channels, h, w)

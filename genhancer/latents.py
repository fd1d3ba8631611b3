"""Where the denoiser works: the latent space of the target image, and Flux-style token packing.

``LATENT_SPACES`` maps an id to a ``LatentSpace`` class:
  * ``pixel`` — the toy world: the denoiser reconstructs the image itself, (B, 3, H, W) in [-1, 1].
  * ``vae``   — diffusers ``AutoencoderKL`` (the FLUX.1 VAE in the paper): z ~ posterior (sampled, as the
                public code does), latents = scale * (z - shift); decode inverts it. ``latent.shift`` /
                ``latent.scale`` = null take the factors from the VAE's config (``shift_factor`` /
                ``scaling_factor``, e.g. the toy VAE's, measured on its training images).
A discrete denoiser adds a ``vq`` entry (tokens instead of continuous latents) without touching these.

Packing (continuous denoisers): latents (B, C, h, w) -> tokens (B, (h/p)(w/p), C*p*p) with position ids
(N, 3) = (0, row, col) for Flux's 3-axis RoPE; the first axis is 0 for image tokens (and for the context).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genhancer.utils.cards import RANDOM, RANDOM_INIT_NOTE, card_dir
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.logging import get_logger
from genhancer.utils.registry import Registry
from genhancer.utils.weights import require_safetensors


def patchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, (h/p)*(w/p), C*p*p); tokens in row-major order, channels-then-pixel inside."""
    b, c, h, w = z.shape
    if h % p or w % p:
        raise ValueError(f"latent size {h}x{w} is not divisible by patch_size {p}")
    z = z.reshape(b, c, h // p, p, w // p, p)
    z = z.permute(0, 2, 4, 1, 3, 5)  # (B, h/p, w/p, C, p, p)
    return z.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``patchify``: (B, (h/p)*(w/p), C*p*p) -> (B, C, h, w)."""
    b = tokens.shape[0]
    z = tokens.reshape(b, h // p, w // p, channels, p, p)
    z = z.permute(0, 3, 1, 4, 2, 5)  # (B, C, h/p, p, w/p, p)
    return z.reshape(b, channels, h, w)


def token_position_ids(h: int, w: int, p: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, 3) float ids (0, row, col) of the packed tokens of an h x w latent, N = (h/p)(w/p)."""
    rows = torch.arange(h // p, device=device).repeat_interleave(w // p)
    cols = torch.arange(w // p, device=device).repeat(h // p)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1).float()


class LatentSpace(nn.Module):
    """Base: ``encode(x (B,3,H,W) in [-1,1]) -> (B,C,h,w)``, ``decode`` inverts; never trained."""

    channels: int = 3
    downsample: int = 1

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        if patch_size < 1:
            raise ConfigError(f"latent.patch_size must be >= 1, got {patch_size}")
        self.patch_size = patch_size

    @classmethod
    def from_config(cls, latent_cfg: Any) -> LatentSpace:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def token_dim(self) -> int:
        """Channels of one packed token: C * p * p (the continuous denoiser's in_channels)."""
        return self.channels * self.patch_size * self.patch_size

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of an image_size x image_size image."""
        unit = self.downsample * self.patch_size
        if image_size % unit:
            raise ConfigError(
                f"image size {image_size} must be divisible by the latent downsampling x patch_size = {unit}"
            )
        return self.channels, image_size // self.downsample, image_size // self.downsample

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    # a stage-1 feature cache stores the deterministic part of ``encode`` and finishes it every step, so
    # anything random (posterior sampling) is still drawn afresh:
    # encode(x, g) == from_cache(encode_for_cache(x), g)
    def encode_for_cache(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> what a cache stores per view (default: ``encode(x)``, deterministic)."""
        return self.encode(x)

    def from_cache(self, stored: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """What ``encode_for_cache`` gave -> the latents ``encode`` would give (default: as stored)."""
        return stored

    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        return patchify(z, self.patch_size)

    def unpatchify(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, self.channels, h, w)

    def img_ids(self, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
        return token_position_ids(h, w, self.patch_size, device)

    def train(self, mode: bool = True) -> LatentSpace:
        # the autoencoder is a fixed tool: keep it in eval mode whatever the surrounding model does
        return super().train(False)


LATENT_SPACES: Registry[type[LatentSpace]] = Registry("latent space")


@LATENT_SPACES.register("pixel")
class PixelSpace(LatentSpace):
    """The image itself is the latent: (B, 3, H, W) in [-1, 1]; encode/decode are the identity."""

    channels = 3
    downsample = 1

    @classmethod
    def from_config(cls, latent_cfg: Any) -> PixelSpace:
        return cls(latent_cfg.patch_size)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


@LATENT_SPACES.register("vae")
class VaeSpace(LatentSpace):
    """diffusers ``AutoencoderKL``: latents = scale * (z - shift), z sampled from the posterior by default."""

    def __init__(
        self, vae: nn.Module, patch_size: int, shift: float, scale: float, sample_posterior: bool
    ) -> None:
        super().__init__(patch_size)
        self.vae = vae.requires_grad_(False).eval()
        self.channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.shift = float(shift)
        self.scale = float(scale)
        self.sample_posterior = sample_posterior

    @classmethod
    def from_config(cls, latent_cfg: Any) -> VaeSpace:
        if not latent_cfg.vae_path:
            raise ConfigError("latent.space=vae needs latent.vae_path (an AutoencoderKL directory or hub id)")
        vae = _random_vae(latent_cfg) if latent_cfg.init == RANDOM else _load_vae(latent_cfg)
        shift, scale = vae_factors(vae, latent_cfg.shift, latent_cfg.scale, latent_cfg.vae_path)
        return cls(vae, latent_cfg.patch_size, shift, scale, latent_cfg.sample_posterior)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f) scaled latents."""
        return self.from_cache(self.encode_for_cache(x), generator)

    @torch.no_grad()
    def encode_for_cache(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior moments (B, 2C, h, w) (mean and logvar) when sampling, else the scaled latents
        (B, C, h, w)."""
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        if self.sample_posterior:
            return dist.parameters
        return self.scale * (dist.mode() - self.shift)

    @torch.no_grad()
    def from_cache(self, stored: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.sample_posterior:
            return stored
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        z = DiagonalGaussianDistribution(stored).sample(generator)  # the same draw encode() makes
        return self.scale * (z - self.shift)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 3, h*f, w*f) in about [-1, 1]."""
        return self.vae.decode((z / self.scale + self.shift).to(self.vae.dtype)).sample


def _load_vae(latent_cfg: Any) -> nn.Module:
    from diffusers import AutoencoderKL

    kwargs = {"subfolder": latent_cfg.vae_subfolder} if latent_cfg.vae_subfolder else {}
    require_safetensors(
        latent_cfg.vae_path,
        loader="diffusers.AutoencoderKL",
        subfolder=latent_cfg.vae_subfolder,
        what="latent.vae_path",
    )
    try:
        return AutoencoderKL.from_pretrained(latent_cfg.vae_path, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as e:
        where = latent_cfg.vae_path + (
            f" (subfolder {latent_cfg.vae_subfolder})" if latent_cfg.vae_subfolder else ""
        )
        raise ModelDirError(f"cannot load the AutoencoderKL from latent.vae_path={where}: {e}") from None


def _random_vae(latent_cfg: Any) -> nn.Module:
    """An AutoencoderKL with random weights from the card of ``latent.vae_path`` (shapes only)."""
    from diffusers import AutoencoderKL

    card = card_dir(latent_cfg.vae_path, latent_cfg.vae_subfolder, key="latent.vae_path")
    get_logger("genhancer.latents").warning(
        "VAE %s: %s (card %s)", latent_cfg.vae_path, RANDOM_INIT_NOTE, card
    )
    return AutoencoderKL.from_config(AutoencoderKL.load_config(str(card), subfolder=latent_cfg.vae_subfolder))


def vae_factors(vae: nn.Module, shift: float | None, scale: float | None, where: str) -> tuple[float, float]:
    """(shift, scale) of the latents: the configured values, or (``None``) the VAE config's ``shift_factor`` /
    ``scaling_factor`` -- for a VAE whose factors were measured on its data and saved with it."""
    if shift is None:
        shift = getattr(vae.config, "shift_factor", None) or 0.0  # diffusers: None means no shift
    if scale is None:
        scale = getattr(vae.config, "scaling_factor", None)
        if not scale:
            raise ConfigError(
                f"latent.scale=null takes the scale from the VAE config, but {where}/config.json "
                "has no scaling_factor; set latent.scale to a number"
            )
    return float(shift), float(scale)


def build_latent_space(latent_cfg: Any) -> LatentSpace:
    if latent_cfg.init == RANDOM and latent_cfg.space != "vae":
        raise ConfigError(
            f"latent.init=random builds an AutoencoderKL from its card (latent.space=vae); "
            f"latent.space={latent_cfg.space!r} has none: set latent.init=pretrained"
        )
    return LATENT_SPACES[latent_cfg.space].from_config(latent_cfg)

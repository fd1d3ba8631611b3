"""Denoiser families. A family owns its network *and* its objective, so the model/stage code never changes
when a family is added:

  * ``continuous`` — Flux MM-DiT (diffusers ``FluxTransformer2DModel``), rectified flow matching on
    continuous latents (``pixel`` / ``vae`` latent spaces).
  * ``discrete`` — masked prediction of VQ tokens with cross-entropy, on a ``vq`` latent space.

Each family is one ``DENOISERS`` entry in its own module, registered by importing it below.

Interface (see ``Denoiser``): ``pooled_dim`` / ``context_dim`` size the conditioner; ``training_loss``
returns {"loss": scalar, ...}; ``generate`` draws latents from a condition; ``save_pretrained`` /
``from_pretrained`` read and write a directory (safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.registry import Registry

if TYPE_CHECKING:
    from genhancer.config import GenHancerConfig
    from genhancer.latents import LatentSpace


class Denoiser(nn.Module):
    """Base class of a denoiser family (see the module docstring)."""

    #: LATENT_SPACES ids this family can work in
    latent_spaces: tuple[str, ...] = ()
    pooled_dim: int
    context_dim: int

    @classmethod
    def build(cls, cfg: GenHancerConfig, latent: LatentSpace) -> Denoiser:  # pragma: no cover - abstract
        """A freshly initialised denoiser sized by ``cfg.denoiser`` for ``latent``."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, cfg: GenHancerConfig, latent: LatentSpace
    ) -> Denoiser:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def saved_directory(directory: str | Path) -> Path:
        """``directory`` if it holds a saved denoiser (a config.json), else a ModelDirError."""
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise ModelDirError(f"{d} is not a saved denoiser (no config.json)")
        return d

    def save_pretrained(self, directory: str | Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_loss(
        self,
        latents: torch.Tensor,
        pooled: torch.Tensor,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        """latents: what ``latent.encode`` gave; pooled (B, pooled_dim); context (B, T, context_dim)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        pooled: torch.Tensor,
        context: torch.Tensor,
        latent_hw: tuple[int, int],
        steps: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """Latents (B, ...) that ``latent.decode`` turns into images."""
        raise NotImplementedError


DENOISERS: Registry[type[Denoiser]] = Registry("denoiser")


def check_latent_space(family_id: str, latent_space_id: str) -> None:
    """A clear config error when a denoiser family cannot work in the configured latent space."""
    family = DENOISERS[family_id]
    if family.latent_spaces and latent_space_id not in family.latent_spaces:
        raise ConfigError(
            f"denoiser.type={family_id!r} works in latent.space {', '.join(family.latent_spaces)}; "
            f"got latent.space={latent_space_id!r}"
        )


# Families register themselves on import (kept at the bottom: they import DENOISERS from here).
from genhancer.denoisers import continuous, discrete  # noqa: E402,F401

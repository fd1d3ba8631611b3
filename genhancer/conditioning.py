"""Global token -> the denoiser's two conditioning inputs.

GenHancer conditions the denoiser on the encoder's *global* token only. Two projectors, each
LayerNorm -> Linear -> GELU -> Linear, map it to
  * the pooled / modulation vector (Flux ``pooled_projections``, size ``pooled_dim``), and
  * one context token that joins attention (Flux ``encoder_hidden_states``, size ``context_dim``).
``local_token_fraction > 0`` appends that fraction of the (projected) patch tokens to the context: the
paper's ablation showing that even 10% local tokens make reconstruction too easy and the gain collapses.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MlpProjector(nn.Sequential):
    """LayerNorm -> Linear -> GELU -> Linear: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )


class GlobalTokenConditioner(nn.Module):
    """``forward(global_token (B, D), patch_tokens (B, N, Dp) | None) -> (pooled (B, P), context (B, T, C))``.

    T = 1 + n_local, n_local = ceil(local_token_fraction * N) (0 by default).
    """

    def __init__(
        self,
        global_dim: int,
        pooled_dim: int,
        context_dim: int,
        patch_dim: int | None = None,
        hidden_mult: float = 1.0,
        local_token_fraction: float = 0.0,
        zero_condition: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= local_token_fraction <= 1.0:
            raise ValueError(f"local_token_fraction must be in [0, 1], got {local_token_fraction}")
        hidden = max(1, round(hidden_mult * global_dim))
        self.to_pooled = MlpProjector(global_dim, hidden, pooled_dim)
        self.to_context = MlpProjector(global_dim, hidden, context_dim)
        self.local_token_fraction = float(local_token_fraction)
        self.zero_condition = bool(zero_condition)  # control runs: the condition carries nothing
        if self.local_token_fraction > 0:
            if patch_dim is None:
                raise ValueError("local_token_fraction > 0 needs patch_dim")
            self.local_proj = MlpProjector(patch_dim, max(1, round(hidden_mult * patch_dim)), context_dim)
        else:
            self.local_proj = None

    def num_local_tokens(self, num_patches: int) -> int:
        return math.ceil(self.local_token_fraction * num_patches) if self.local_token_fraction > 0 else 0

    def forward(
        self,
        global_token: torch.Tensor,
        patch_tokens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.zero_condition:
            global_token = torch.zeros_like(global_token)
        pooled = self.to_pooled(global_token)  # (B, P)
        context = self.to_context(global_token).unsqueeze(1)  # (B, 1, C)
        if self.local_proj is None:
            return pooled, context
        if patch_tokens is None:
            raise ValueError("local_token_fraction > 0 needs the encoder's patch tokens")
        n = patch_tokens.shape[1]
        k = self.num_local_tokens(n)
        if self.training:
            # a random subset each step, so the denoiser cannot rely on fixed positions
            dev = generator.device if generator is not None else patch_tokens.device
            idx = torch.randperm(n, generator=generator, device=dev)[:k].sort().values.to(patch_tokens.device)
        else:
            idx = torch.linspace(0, n - 1, k, device=patch_tokens.device).round().long()  # evenly spread
        local = self.local_proj(patch_tokens[:, idx])  # (B, k, C)
        return pooled, torch.cat([context, local], dim=1)  # (B, 1 + k, C)

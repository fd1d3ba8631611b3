"""Global token -> the denoiser's two conditioning inputs.

GenHancer conditions the denoiser on the encoder's *global* token only. Two projectors, each
LayerNorm -> Linear -> GELU -> Linear, map it to
  * the pooled / modulation vector (Flux ``pooled_projections``, size ``pooled_dim``), and
  * one context token that joins attention (Flux ``encoder_hidden_states``, size ``context_dim``).
The hidden layer is as wide as the projector's *output* by default, as in the official code (d -> 768 -> 768
and d -> 4096 -> 4096: ~1.2 M + ~19.9 M parameters for OpenAI-L/14's 768-d token); ``hidden_width="input"``
makes it as wide as the input instead (the toy world's smaller projectors).
``local_token_fraction > 0`` appends that fraction of the (projected) patch tokens to the context: the
paper's ablation showing that even 10% local tokens make reconstruction too easy and the gain collapses.
``whiten`` (not in the paper's recipe) maps the global token through a fixed ZCA whitening first
(``fit_whitening``, from the token moments over stage 1's feature cache; saved with the weights).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

HIDDEN_WIDTHS = ("output", "input")


def projector_hidden(
    in_dim: int, out_dim: int, hidden_width: str = "output", hidden_mult: float = 1.0
) -> int:
    """Hidden width of one projector: ``hidden_mult`` x its output width (``hidden_width="output"``, the
    official shape) or x its input width (``"input"``)."""
    if hidden_width not in HIDDEN_WIDTHS:
        raise ValueError(f"hidden_width must be one of {HIDDEN_WIDTHS}, got {hidden_width!r}")
    return max(1, round(hidden_mult * (out_dim if hidden_width == "output" else in_dim)))


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
        hidden_width: str = "output",
        hidden_mult: float = 1.0,
        local_token_fraction: float = 0.0,
        zero_condition: bool = False,
        whiten: bool = False,
    ) -> None:
        super().__init__()
        if whiten:  # identity until fit_whitening: (x - mean) @ matrix
            self.register_buffer("whiten_mean", torch.zeros(global_dim))
            self.register_buffer("whiten_matrix", torch.eye(global_dim))
        if not 0.0 <= local_token_fraction <= 1.0:
            raise ValueError(f"local_token_fraction must be in [0, 1], got {local_token_fraction}")

        def projector(in_dim: int, out_dim: int) -> MlpProjector:
            return MlpProjector(in_dim, projector_hidden(in_dim, out_dim, hidden_width, hidden_mult), out_dim)

        self.to_pooled = projector(global_dim, pooled_dim)
        self.to_context = projector(global_dim, context_dim)
        self.local_token_fraction = float(local_token_fraction)
        self.zero_condition = bool(zero_condition)  # control runs: the condition carries nothing
        if self.local_token_fraction > 0:
            if patch_dim is None:
                raise ValueError("local_token_fraction > 0 needs patch_dim")
            self.local_proj = projector(patch_dim, context_dim)
        else:
            self.local_proj = None

    @classmethod
    def from_config(
        cls, cond_cfg: Any, global_dim: int, pooled_dim: int, context_dim: int, patch_dim: int | None = None
    ) -> GlobalTokenConditioner:
        """The conditioner ``cond_cfg`` (genhancer.config.ConditioningConfig) describes, for these sizes."""
        return cls(
            global_dim=global_dim,
            pooled_dim=pooled_dim,
            context_dim=context_dim,
            patch_dim=patch_dim,
            hidden_width=cond_cfg.hidden_width,
            hidden_mult=cond_cfg.hidden_mult,
            local_token_fraction=cond_cfg.local_token_fraction,
            zero_condition=cond_cfg.zero_condition,
            whiten=cond_cfg.whiten,
        )

    @property
    def whitens(self) -> bool:
        return hasattr(self, "whiten_matrix")

    @torch.no_grad()
    def fit_whitening(self, count: int, total: torch.Tensor, outer: torch.Tensor, eps: float = 1e-3) -> None:
        """ZCA whitening from the moments of ``count`` global tokens (``total`` = sum x, ``outer`` = sum of
        x x^T): matrix = V diag((l + eps * mean(l))^-1/2) V^T for the covariance's eigenpairs (l, V)."""
        mean = total.double() / count
        cov = outer.double() / count - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(0) + eps * evals.clamp_min(0).mean()
        matrix = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        self.whiten_mean.copy_(mean.to(self.whiten_mean))
        self.whiten_matrix.copy_(matrix.to(self.whiten_matrix))

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
        elif self.whitens:
            white = (global_token.float() - self.whiten_mean) @ self.whiten_matrix
            global_token = white.to(global_token.dtype)
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

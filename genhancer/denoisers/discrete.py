"""The discrete denoiser: masked prediction of VQ tokens with cross-entropy, decoded MaskGIT-style.

The paper's second denoiser family (no public code): a pretrained VQ-GAN tokenizer (``latent.space=vq``,
see ``genhancer.vq``), a lightweight transformer predicting masked tokens, conditioned on the projected
global token only. Here the network (``MaskedTokenTransformer``) is a bidirectional transformer over the
token grid that reads the condition the way a Perceiver's latent array reads its input — every block
cross-attends from the image tokens to the context token(s) — and is also modulated by the pooled vector
(adaLN-zero on self-attention and MLP, as in DiT; ungated cross-attention, as in PixArt-alpha).
"Perceiver" is the paper's word; its exact layout, width and lr are unverified.

Objective (pure functions below, tested on hand-made tokens):
  * mask: per sample, round(r * N) of the N grid positions (at least 1) are replaced by the mask id
    (= codebook_size); r is fixed (``mask_ratio``, the paper's best 0.7) or drawn uniformly from
    ``mask_ratio_range`` (the paper's "random 50-90%").
  * loss: cross-entropy of the logits against the true ids, on masked positions only, averaged over all
    masked positions of the batch.
Reconstruction (``generate``): iterative parallel decoding from an all-mask grid in exactly ``steps`` forward
passes (``flow.sample_steps``); after step t, floor(N cos(pi/2 t/steps)) positions stay masked (a cosine
schedule, made strictly decreasing), the least confident predictions being re-masked (MaskGIT).

Presets (``denoiser.preset``): ``toy`` (width 64, depth 2, ~0.3 M parameters with 512 codes: CPU),
``2`` / ``4`` / ``6`` / ``8`` (width 1024, 16 heads: the paper's depth ablation, 6 is its best).
``denoiser.overrides`` keys: network ``width depth heads mlp_ratio pooled_dim context_dim`` (saved with
the weights) and objective ``mask_ratio mask_ratio_range label_smoothing sample_temperature
choice_temperature`` (read from the config of every stage).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

import genhancer.vq  # noqa: F401 - registers the ``vq`` latent space this family works in
from genhancer.denoisers import DENOISERS, Denoiser
from genhancer.utils.errors import ConfigError
from genhancer.utils.weights import require_safetensors

_PAPER_WIDTH = MappingProxyType(dict(width=1024, heads=16, mlp_ratio=4.0, pooled_dim=1024, context_dim=1024))
PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "toy": MappingProxyType(
            dict(width=64, depth=2, heads=4, mlp_ratio=4.0, pooled_dim=64, context_dim=64)
        ),
        **{str(d): MappingProxyType(dict(depth=d, **_PAPER_WIDTH)) for d in (2, 4, 6, 8)},
    }
)
NETWORK_KEYS = ("width", "depth", "heads", "mlp_ratio", "pooled_dim", "context_dim")
OBJECTIVE_DEFAULTS = MappingProxyType(
    dict(
        mask_ratio=0.7,  # the paper's best fixed ratio (OpenAI@224: 50% 28.1, 70% 28.9, 90% 25.9)
        mask_ratio_range=None,  # [lo, hi]: a ratio drawn uniformly per sample instead (paper: 0.5-0.9, 28.9)
        label_smoothing=0.0,
        sample_temperature=1.0,  # token sampling temperature when decoding; 0 = argmax
        choice_temperature=4.5,  # Gumbel noise on the confidence when choosing what to keep, annealed to 0
    )
)


# ------------------------------------------------------------------------------------------ objective
def sample_mask_ratios(
    batch: int,
    mask_ratio: float,
    ratio_range: tuple[float, float] | None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B,) mask ratios: all ``mask_ratio``, or uniform in ``ratio_range`` when it is given."""
    if ratio_range is None:
        return torch.full((batch,), float(mask_ratio), device=device)
    lo, hi = ratio_range
    u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else device)
    return (lo + (hi - lo) * u).to(device)


def random_mask(
    ratios: torch.Tensor, n_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """ratios (B,) -> bool mask (B, N), True = masked; exactly clamp(round(r * N), 1, N) True per row, at
    positions chosen uniformly at random."""
    b = ratios.shape[0]
    device = ratios.device
    counts = (ratios * n_tokens).round().long().clamp(1, n_tokens)  # (B,)
    scores = torch.rand(
        b, n_tokens, generator=generator, device=generator.device if generator is not None else device
    ).to(device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (B, N): rank of each position's score in its row
    return ranks < counts[:, None]


def apply_mask(ids: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """ids (B, N), mask (B, N) bool -> ids with masked positions set to ``mask_id``."""
    return torch.where(mask, torch.full_like(ids, mask_id), ids)


def masked_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy on masked positions only: logits (B, N, K), targets (B, N) int, mask (B, N) bool ->
    scalar mean over all masked positions of the batch (unmasked positions contribute nothing)."""
    sel = mask.reshape(-1)
    if not bool(sel.any()):
        raise ValueError("masked_token_loss: no masked position in the batch")
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1])[sel].float(),
        targets.reshape(-1)[sel],
        label_smoothing=label_smoothing,
    )


# ------------------------------------------------------------------------------------------- decoding
def cosine_schedule(r: float) -> float:
    """Fraction of tokens still masked at decoding progress r in [0, 1] (1 at the start, 0 at the end)."""
    return math.cos(math.pi / 2 * r)


def masked_counts(n_tokens: int, steps: int) -> list[int]:
    """Tokens still masked after each of ``steps`` decoding steps: [m_1, ..., m_steps], m_steps = 0.

    m_t = floor(N cos(pi/2 t/steps)), adjusted so that every step reveals at least one token
    (N > m_1 > ... > m_steps = 0). Needs 1 <= steps <= N.
    """
    if not 1 <= steps <= n_tokens:
        raise ConfigError(
            f"discrete decoding needs 1 <= steps <= number of tokens ({n_tokens}); got {steps} "
            "(flow.sample_steps)"
        )
    out, prev = [], n_tokens
    for t in range(1, steps + 1):
        m = math.floor(n_tokens * cosine_schedule(t / steps))
        m = max(steps - t, min(m, prev - 1))  # strictly decreasing, and leave >= 1 token per remaining step
        out.append(m)
        prev = m
    return out


def _gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)), u ~ U(0, 1) kept away from 0 and 1."""
    u = torch.rand(shape, generator=generator, device=generator.device if generator is not None else device)
    u = u.clamp(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u)).to(device)


@torch.no_grad()
def maskgit_decode(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    n_tokens: int,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    choice_temperature: float = 0.0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, list[int]]:
    """Iterative parallel decoding from an all-mask grid.

    ``logits_fn(ids (B, N)) -> (B, N, K)``, called exactly ``steps`` times. Each step samples a token for
    every masked position, keeps the most confident ones and re-masks the ``masked_counts`` least confident
    (confidence = log-prob of the sampled token + annealed Gumbel noise; revealed tokens are never re-masked).
    Returns (ids (B, N) with no ``mask_id`` left, [masked count after each step]).
    """
    device = torch.device(device)
    counts = masked_counts(n_tokens, steps)
    ids = torch.full((batch, n_tokens), mask_id, dtype=torch.long, device=device)
    trace = []
    for t, keep_masked in enumerate(counts, start=1):
        logits = logits_fn(ids).float()  # (B, N, K)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])
            if generator is not None and generator.device != device:
                sampled = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(device)
            else:
                sampled = torch.multinomial(probs, 1, generator=generator)
            sampled = sampled.reshape(batch, n_tokens)
        else:
            sampled = logits.argmax(-1)
        unknown = ids == mask_id  # (B, N)
        conf = torch.log_softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]  # (B, N)
        if choice_temperature > 0:
            conf = conf + choice_temperature * (1.0 - t / steps) * _gumbel(conf.shape, generator, device)
        conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))
        ids = torch.where(unknown, sampled, ids)
        if keep_masked > 0:
            lowest = conf.argsort(dim=1)[:, :keep_masked]  # (B, m): least confident, all still unknown
            ids = ids.scatter(1, lowest, mask_id)
        trace.append(int((ids == mask_id).sum(1).max()))
    return ids, trace


# -------------------------------------------------------------------------------------------- network
def sincos_2d(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (h*w, dim): half the channels encode the row, half the
    column (MAE-style), so any grid size works without learned tables."""
    if dim % 4:
        raise ConfigError(f"denoiser width must be divisible by 4 for the 2-D position embedding, got {dim}")
    q = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))  # (q,)
    rows = (
        torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w)[:, None] * freqs
    )  # (hw, q)
    cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h)[:, None] * freqs
    return torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1).to(dtype)


class _Attention(nn.Module):
    """Multi-head attention: queries (B, N, W) attend to keys/values (B, M, kv_dim) -> (B, N, W)."""

    def __init__(self, width: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"denoiser width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(kv_dim or width, 2 * width)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q = self.to_q(x).reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, H, N, W/H)
        k, v = (
            self.to_kv(kv).reshape(b, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        )  # (B, H, M, W/H)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, W/H)
        return self.to_out(out.transpose(1, 2).reshape(b, n, w))


class _Block(nn.Module):
    """adaLN-zero self-attention -> cross-attention to the context -> adaLN-zero MLP (all pre-norm).

    As in PixArt-alpha, the cross-attention is not gated: the condition reaches the tokens from the first
    step, so the encoder gets gradient even while the zero-initialised modulation is still zero.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = _Attention(width, heads, kv_dim=context_dim)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        self.modulation = nn.Linear(
            width, 6 * width
        )  # (shift, scale, gate) x 2 sublayers from the pooled vector
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B, N, W), cond (B, W) (SiLU already applied), context (B, T, context_dim) -> (B, N, W)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(
            6, dim=-1
        )  # (B, 1, W)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), context)
        h = self.norm3(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class MaskedTokenTransformer(ModelMixin, ConfigMixin):
    """Token ids (B, h, w) with ``codebook_size`` as the mask id -> logits (B, h*w, codebook_size).

    Condition: ``pooled`` (B, pooled_dim) modulates every block (adaLN-zero); ``context`` (B, T, context_dim)
    is cross-attended by every block.
    """

    @register_to_config
    def __init__(
        self,
        codebook_size: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pooled_dim: int = 64,
        context_dim: int = 64,
    ) -> None:
        super().__init__()
        if min(codebook_size, width, depth, heads, pooled_dim, context_dim) < 1 or mlp_ratio <= 0:
            raise ConfigError(f"discrete denoiser sizes must be positive (got {dict(self.config)})")
        self.token_embed = nn.Embedding(codebook_size + 1, width)  # + the mask token
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.cond_embed = nn.Sequential(nn.Linear(pooled_dim, width), nn.SiLU())
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio, context_dim) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.out_modulation.weight)
        nn.init.zeros_(self.out_modulation.bias)
        self.head = nn.Linear(width, codebook_size)

    @property
    def mask_id(self) -> int:
        return int(self.config.codebook_size)

    def forward(self, ids: torch.Tensor, pooled: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, h, w = ids.shape
        x = self.token_embed(ids.reshape(b, h * w))  # (B, N, W)
        x = x + sincos_2d(h, w, x.shape[-1], x.device, x.dtype)[None]
        cond = self.cond_embed(pooled.to(x.dtype))  # (B, W)
        context = context.to(x.dtype)
        for block in self.blocks:
            x = block(x, cond, context)
        shift, scale = self.out_modulation(cond)[:, None].chunk(2, dim=-1)
        return self.head(self.norm_out(x) * (1 + scale) + shift)  # (B, N, K)


def network_kwargs(
    preset: str, codebook_size: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Constructor kwargs of ``MaskedTokenTransformer`` for a preset + the network keys of ``overrides``."""
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown denoiser.preset {preset!r} for denoiser.type=discrete; known presets: "
            f"{', '.join(PRESETS)}"
        )
    kwargs: dict[str, Any] = dict(PRESETS[preset], codebook_size=codebook_size)
    kwargs.update({k: v for k, v in split_overrides(overrides)[0].items()})
    return kwargs


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``denoiser.overrides`` -> (network kwargs, objective settings with defaults filled); unknown keys and
    bad values are ConfigErrors naming the key."""
    network, objective = {}, dict(OBJECTIVE_DEFAULTS)
    for key, value in (overrides or {}).items():
        if key == "codebook_size":
            raise ConfigError("denoiser.overrides.codebook_size is derived from the VQ tokenizer; remove it")
        if key in NETWORK_KEYS:
            network[key] = value
        elif key in OBJECTIVE_DEFAULTS:
            objective[key] = value
        else:
            raise ConfigError(
                f"unknown denoiser.overrides.{key} for denoiser.type=discrete; valid keys: "
                f"{', '.join(NETWORK_KEYS + tuple(OBJECTIVE_DEFAULTS))}"
            )
    r = objective["mask_ratio"]
    if not isinstance(r, (int, float)) or not 0 < r <= 1:
        raise ConfigError(f"denoiser.overrides.mask_ratio must be in (0, 1], got {r!r}")
    rng = objective["mask_ratio_range"]
    if rng is not None:
        if (
            not isinstance(rng, (list, tuple))
            or len(rng) != 2
            or not all(isinstance(v, (int, float)) for v in rng)
            or not 0 < rng[0] <= rng[1] <= 1
        ):
            raise ConfigError(
                f"denoiser.overrides.mask_ratio_range must be [lo, hi] with 0 < lo <= hi <= 1, got {rng!r}"
            )
        objective["mask_ratio_range"] = (float(rng[0]), float(rng[1]))
    for key in ("label_smoothing", "sample_temperature", "choice_temperature"):
        if not isinstance(objective[key], (int, float)) or objective[key] < 0:
            raise ConfigError(f"denoiser.overrides.{key} must be a number >= 0, got {objective[key]!r}")
    return network, objective


def preset_parameter_count(
    preset: str, codebook_size: int = 8192, overrides: dict[str, Any] | None = None
) -> int:
    """Parameters of a preset without allocating them (meta device)."""
    with torch.device("meta"):
        model = MaskedTokenTransformer(**network_kwargs(preset, codebook_size, overrides))
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- family
@DENOISERS.register("discrete")
class DiscreteDenoiser(Denoiser):
    """``MaskedTokenTransformer`` + masked-token cross-entropy in a ``vq`` token space."""

    latent_spaces = ("vq",)

    def __init__(
        self,
        network: MaskedTokenTransformer,
        latent: Any,
        overrides: dict[str, Any] | None,
        guidance: float | None = None,
        detail_weight: float = 0.0,
    ) -> None:
        super().__init__()
        continuous_only = {
            "denoiser.guidance": (guidance is not None, "null"),
            "flow.detail_weight": (detail_weight != 0, "0"),
        }
        for key, (is_set, off) in continuous_only.items():
            if is_set:
                raise ConfigError(
                    f"{key} is a continuous-denoiser setting; set it to {off} for denoiser.type=discrete"
                )
        self.network = network
        _, objective = split_overrides(overrides)
        self.mask_ratio = float(objective["mask_ratio"])
        self.mask_ratio_range = objective["mask_ratio_range"]
        self.label_smoothing = float(objective["label_smoothing"])
        self.sample_temperature = float(objective["sample_temperature"])
        self.choice_temperature = float(objective["choice_temperature"])
        self.pooled_dim = int(network.config.pooled_dim)
        self.context_dim = int(network.config.context_dim)
        self.codebook_size = int(network.config.codebook_size)
        if self.codebook_size != int(latent.codebook_size):
            raise ConfigError(
                f"the denoiser predicts {self.codebook_size} codes but the VQ tokenizer at "
                f"latent.vae_path has {latent.codebook_size}"
            )

    @classmethod
    def build(cls, cfg: Any, latent: Any) -> DiscreteDenoiser:
        kwargs = network_kwargs(cfg.denoiser.preset, int(latent.codebook_size), cfg.denoiser.overrides)
        return cls(
            MaskedTokenTransformer(**kwargs),
            latent,
            cfg.denoiser.overrides,
            cfg.denoiser.guidance,
            cfg.flow.detail_weight,
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, cfg: Any, latent: Any) -> DiscreteDenoiser:
        saved = cls.saved_directory(directory)
        require_safetensors(saved, loader="genhancer.denoisers.discrete.MaskedTokenTransformer")
        network = MaskedTokenTransformer.from_pretrained(saved, use_safetensors=True)
        return cls(network, latent, cfg.denoiser.overrides, cfg.denoiser.guidance, cfg.flow.detail_weight)

    def save_pretrained(self, directory: str | Path) -> None:
        self.network.save_pretrained(str(directory), safe_serialization=True)

    def training_loss(
        self,
        latents: torch.Tensor,
        pooled: torch.Tensor,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """latents: token ids (B, h, w)
        -> {"loss": masked CE, "mask_ratio": float, "masked_accuracy": float}."""
        ids = latents.long()
        b, h, w = ids.shape
        flat = ids.reshape(b, h * w)  # (B, N)
        ratios = sample_mask_ratios(b, self.mask_ratio, self.mask_ratio_range, generator, ids.device)
        mask = random_mask(ratios, h * w, generator)  # (B, N)
        inputs = apply_mask(flat, mask, self.network.mask_id).reshape(b, h, w)
        logits = self.network(inputs, pooled, context)  # (B, N, K)
        loss = masked_token_loss(logits, flat, mask, self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(-1) == flat)[mask].float().mean()
        return {"loss": loss, "mask_ratio": float(mask.float().mean()), "masked_accuracy": float(acc)}

    @torch.no_grad()
    def generate(
        self,
        pooled: torch.Tensor,
        context: torch.Tensor,
        latent_hw: tuple[int, int],
        steps: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MaskGIT decoding in ``steps`` passes from the condition alone: token ids (B, h, w)."""
        h, w = latent_hw
        b = pooled.shape[0]

        def logits_fn(ids: torch.Tensor) -> torch.Tensor:
            return self.network(ids.reshape(b, h, w), pooled, context)

        ids, _ = maskgit_decode(
            logits_fn,
            b,
            h * w,
            self.network.mask_id,
            steps,
            generator,
            self.sample_temperature,
            self.choice_temperature,
            pooled.device,
        )
        return ids.reshape(b, h, w)

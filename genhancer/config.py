"""The GenHancer config schema. YAML files in ``configs/genhancer/`` are instances of ``GenHancerConfig``.

    python -m genhancer.train --config configs/genhancer/toy.yaml stage=stage2 init_from=runs/toy/stage1/final

The defaults are the paper's recipe: OpenAI CLIP ViT-L/14 @224, the lightweight continuous (Flux MM-DiT)
denoiser on FLUX.1 VAE latents, two stages on CC3M. A YAML states only how it differs (``base:`` chains
share the rest). Which parts train in each stage is code (``genhancer.stages.STAGES``); how long and how fast
each stage trains is data (``schedule.<stage>``), so no hyperparameter lives in bash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genhancer.utils.cards import RANDOM, Init
from genhancer.utils.config import load_config


@dataclass
class EncoderConfig:
    family: str = "clip"  # ENCODERS registry id: clip (OpenAI/MetaCLIP), siglip
    path: str = "openai/clip-vit-large-patch14"  # local HF directory or hub id of the *full* model
    image_size: int | None = None  # None: the processor's crop size (the VAE sees the same crop)
    # random: the architecture only, from the card of `path` (genhancer.utils.cards); smoke runs, no export
    init: Init = "pretrained"


@dataclass
class ConditioningConfig:
    """Global token -> (pooled/modulation vector, one context token). Sizes come from the denoiser."""

    hidden_mult: float = 1.0  # hidden width of each LayerNorm->Linear->GELU->Linear projector, x input dim
    # ablation: append this fraction of patch tokens to the context; even 0.1 makes reconstruction too easy
    local_token_fraction: float = 0.0
    # control runs only: the denoiser sees a zero vector instead of the global token, so it never learns to
    # read the condition (stage 1 with this on, stage 2 with it off: does a gain need a denoiser that uses
    # it?)
    zero_condition: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.local_token_fraction <= 1.0:
            raise ValueError(f"local_token_fraction must be in [0, 1], got {self.local_token_fraction}")


@dataclass
class DenoiserConfig:
    type: str = "continuous"  # DENOISERS registry id: continuous (Flux MM-DiT), discrete (masked VQ tokens)
    preset: str = "lightweight"  # continuous: lightweight (2 double + 4 single blocks) | 1+2 | 3+6 | toy
    guidance: float | None = None  # constant guidance embedding (the public code's leftover 4.0); off = None
    overrides: dict[str, Any] = field(default_factory=dict)  # extra constructor kwargs for the preset


@dataclass
class LatentConfig:
    space: str = "vae"  # LATENT_SPACES registry id: vae | pixel (| vq for the discrete denoiser)
    patch_size: int = 2  # tokens are patch_size x patch_size groups of latent (or pixel) cells: 16 ch -> 64
    # AutoencoderKL (VQModel for vq) directory or hub id; FLUX.1-dev is gated: accept its licence or copy it
    vae_path: str | None = "black-forest-labs/FLUX.1-dev"
    vae_subfolder: str | None = "vae"
    # FLUX.1 VAE: latents = scale * (z - shift). None: the VAE config's shift_factor / scaling_factor
    shift: float | None = 0.1159
    scale: float | None = 0.3611
    sample_posterior: bool = True
    init: Init = "pretrained"  # random: an AutoencoderKL from the card of vae_path (smoke runs, no export)


@dataclass
class FlowConfig:
    t_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_scale: float = 1.0  # t = sigmoid(s * N(0, 1)); the paper's best s = 1 (31.9 vs 21.5 uniform)
    sample_steps: int = 20  # Euler steps for reconstructions


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    bias: Literal["none", "all", "lora_only"] = "lora_only"
    # all-linear: every linear layer of the vision tower + visual_projection (OpenAI/MetaCLIP); SigLIP
    # recipes list q_proj, k_proj, v_proj, out_proj, fc1, fc2
    targets: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class ScheduleConfig:
    """How one stage trains."""

    steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int = 10

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"steps and lr must be positive, warmup_steps >= 0 (got {self})")


def _default_schedule() -> dict[str, ScheduleConfig]:
    # stage 2 is short on purpose: the paper's curve, 100 / 1000 / 10000 steps -> MMVP-VLM 25.2 / 31.1 / 19.6
    return {
        "stage1": ScheduleConfig(steps=100_000, lr=1e-4, warmup_steps=10),
        "stage2": ScheduleConfig(steps=1_000, lr=1e-5, warmup_steps=0),
        "stage2-all": ScheduleConfig(steps=1_000, lr=1e-5, warmup_steps=0),
        "end-to-end": ScheduleConfig(steps=100_000, lr=1e-4, warmup_steps=10),
    }


@dataclass
class DataConfig:
    source: str = "webdataset"  # DATA_SOURCES registry id: webdataset | folder
    # a shard pattern/dir for webdataset, or a folder root; the default is a placeholder for CC3M's shards
    path: str = "MUST-OVERRIDE/cc3m/{00000..00331}.tar"
    strict: bool = False  # True: a corrupt image is an error instead of skipped-and-counted
    crop_scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop scale range (bicubic)
    num_workers: int = 8


@dataclass
class CacheConfig:
    """Stage-1 feature cache (``genhancer.cache``): the frozen encoder's global token and the latent target of
    each crop view, computed once and read back each step instead of running encoder + VAE."""

    enabled: bool = False  # used in stages whose encoder is frozen (stage1); other stages ignore it
    views: int = (
        4  # random crop views per image (data.crop_scale, seeded by train.seed); 0: the centre crop only
    )
    dir: str | None = None  # None: <train.run_dir>/../cache (next to the stage run directories)
    build_batch_size: int = 64  # crop views per encoder/VAE forward while building

    def __post_init__(self) -> None:
        if self.views < 0 or self.build_batch_size < 1:
            raise ValueError(f"cache.views must be >= 0 and cache.build_batch_size >= 1 (got {self})")


@dataclass
class TrainConfig:
    run_dir: str | None = None  # None: runs/<name>/<stage>
    batch_size: int = 16  # per process: 16 x 8 GPUs x grad_accum 2 = 256 nominal
    grad_accum: int = 2
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    seed: int = 0
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    deepspeed: str | None = "configs/deepspeed/zero2.json"  # None: plain accelerate (DDP)
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | never | <checkpoint dir>
    debug_log_samples: bool = False  # write run_dir/debug/samples-rank*.jsonl: the sample keys of every step


@dataclass
class GenHancerConfig:
    name: str = "genhancer"  # names the default run directory, runs/<name>/<stage>
    stage: str = "stage1"  # STAGES registry id: stage1 | stage2 | stage2-all | end-to-end
    init_from: str | None = None  # stage-2: the stage-1 output directory (<run>/final)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    schedule: dict[str, ScheduleConfig] = field(default_factory=_default_schedule)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.stage not in self.schedule:
            raise ValueError(
                f"no schedule for stage {self.stage!r}; add 'schedule.{self.stage}' "
                f"(known: {sorted(self.schedule)})"
            )
        if not self.train.run_dir:
            self.train.run_dir = f"runs/{self.name}/{self.stage}"

    @property
    def current_schedule(self) -> ScheduleConfig:
        return self.schedule[self.stage]

    @property
    def random_init(self) -> list[str]:
        """The ``<part>.init`` keys set to random (a smoke run at real shapes; outputs say so)."""
        return [
            f"{k}.init"
            for k, part in (("encoder", self.encoder), ("latent", self.latent))
            if part.init == RANDOM
        ]


def load_genhancer_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> GenHancerConfig:
    """YAML + ``key.sub=value`` overrides -> validated ``GenHancerConfig``."""
    return load_config(GenHancerConfig, path, overrides)

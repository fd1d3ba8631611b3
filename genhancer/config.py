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
from genhancer.utils.images import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels


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

    # hidden width of each LayerNorm->Linear->GELU->Linear projector: "output" = as wide as the projector's
    # output (the official code: d -> 768 -> 768 pooled, d -> 4096 -> 4096 context), "input" = as wide as the
    # global token (the toy world's smaller projectors); times hidden_mult
    hidden_width: Literal["output", "input"] = "output"
    hidden_mult: float = 1.0
    # ablation: append this fraction of patch tokens to the context; even 0.1 makes reconstruction too easy
    local_token_fraction: float = 0.0
    # control runs only: the denoiser sees a zero vector instead of the global token, so it never learns to
    # read the condition (stage 1 with this on, stage 2 with it off: does a gain need a denoiser that uses
    # it?)
    zero_condition: bool = False
    # not in the paper's recipe (off by default): whiten the global token (ZCA, fitted once on stage 1's
    # feature cache, then frozen) before the projectors, so directions the encoder holds weakly start as
    # loud as the strong ones for the denoiser, and stage 2's gradient reaches them in proportion
    whiten: bool = False

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
    logit_scale: float = 1.0  # t = sigmoid(m + s * N(0, 1)); the paper's best s = 1 (31.9 vs 21.5 uniform)
    # m: the paper's m = 0 (median t = 0.5); m < 0 weights the loss toward less noise, where the noisy latent
    # still shows the coarse picture and the condition has to supply the fine detail (t = 1 is pure noise;
    # m = -1 in the toy's stage 2 was worse: docs/toyworld.md)
    logit_mean: float = 0.0
    sample_steps: int = 20  # reconstruction steps: Euler (continuous) or MaskGIT decoding (discrete)
    # not in the paper's recipe (0 = off): the continuous loss becomes MSE + w * MSE of the high-passed
    # velocities on the latent grid (genhancer.flow.detail_loss), so edges and textures weigh more than
    # flat areas of colour
    detail_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.detail_weight >= 0.0:
            raise ValueError(f"flow.detail_weight must be >= 0, got {self.detail_weight}")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    bias: Literal["none", "all", "lora_only"] = "lora_only"
    # leaf names of the vision-side linear layers, or [all-linear]; empty: the encoder family's default
    # (genhancer.utils.families: OpenAI/MetaCLIP every vision linear + visual_projection, SigLIP q_proj,
    # k_proj, v_proj, out_proj, fc1, fc2), so no family gets another's list
    targets: list[str] = field(default_factory=list)


# The steps at which the official stage 2 saves the encoder: a validation sweep picks among them.
OFFICIAL_STAGE2_EVAL_AT = (50, 100, 200, 300, 500, 1000, 2000, 3000, *range(3500, 10_001, 500))


@dataclass
class ScheduleConfig:
    """How one stage trains. ``lr`` is the learning rate of the denoiser and projectors (and of everything,
    unless ``encoder_lr`` is given); ``encoder_lr`` that of the encoder's trainable (LoRA) parameters.

    In ``schedule.end-to-end`` every null (the default) is derived from the two-stage run it is compared with
    (``GenHancerConfig.derive_end_to_end``): the same step budget and learning-rate structure.
    """

    steps: int | None = 1000
    lr: float | None = 1e-4
    warmup_steps: int | None = 10
    encoder_lr: float | None = None  # None: lr
    # Steps at which a stage that tunes the encoder keeps its LoRA (<run_dir>/sweep/step-NNNNNN) for a
    # validation sweep (scripts/stage2_sweep.sh); steps past ``steps`` are ignored, other stages ignore it.
    eval_at: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        positive = (self.steps, self.lr, self.encoder_lr)
        if any(v is not None and v <= 0 for v in positive) or (self.warmup_steps or 0) < 0:
            raise ValueError(f"steps, lr and encoder_lr must be positive, warmup_steps >= 0 (got {self})")
        if any(s <= 0 for s in self.eval_at):
            raise ValueError(f"eval_at steps must be positive (got {self.eval_at})")

    @property
    def complete(self) -> bool:
        return None not in (self.steps, self.lr, self.warmup_steps)


def _default_schedule() -> dict[str, ScheduleConfig]:
    # stage 2 is short on purpose: the paper's curve, 100 / 1000 / 10000 steps -> MMVP-VLM 25.2 / 31.1 / 19.6
    official = list(OFFICIAL_STAGE2_EVAL_AT)
    return {
        "stage1": ScheduleConfig(steps=100_000, lr=1e-4, warmup_steps=10),
        "stage2": ScheduleConfig(steps=1_000, lr=1e-5, warmup_steps=0, eval_at=official),
        "stage2-all": ScheduleConfig(steps=1_000, lr=1e-5, warmup_steps=0, eval_at=official),
        # derived from stage1 + stage2 (see GenHancerConfig.derive_end_to_end)
        "end-to-end": ScheduleConfig(steps=None, lr=None, warmup_steps=None, encoder_lr=None),
    }


@dataclass
class DataConfig:
    source: str = "webdataset"  # DATA_SOURCES registry id: webdataset | folder
    # a shard pattern/dir for webdataset, or a folder root; the default is a placeholder for CC3M's shards
    path: str = "MUST-OVERRIDE/cc3m/{00000..00331}.tar"
    strict: bool = False  # True: a corrupt image is an error instead of skipped-and-counted
    crop_scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop scale range (bicubic)
    num_workers: int = 8
    # images with more pixels (width x height, read from the header) are skipped undecoded: a decompression
    # bomb costs nothing; the default and maximum is PIL's own refusal threshold
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_max_pixels(self.max_image_pixels, "data.max_image_pixels")


@dataclass
class CacheConfig:
    """Stage-1 feature cache (``genhancer.cache``): the frozen encoder's global token and the latent target of
    each crop view, computed once and read back each step instead of running encoder + VAE."""

    enabled: bool = False  # used in stages whose encoder is frozen (stage1); other stages ignore it
    views: int = (
        4  # random crop views per image (data.crop_scale, seeded by cache.seed); 0: the centre crop only
    )
    dir: str | None = None  # None: <train.run_dir>/../cache (next to the stage run directories)
    seed: int | None = None  # the crop views' seed; None: train.seed (a grid shares one cache across seeds)
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
        self.derive_end_to_end()
        unset = [k for k, s in self.schedule.items() if not s.complete]
        if unset:
            raise ValueError(f"schedule.{unset[0]}: steps, lr and warmup_steps must be set (not null)")
        if not self.train.run_dir:
            self.train.run_dir = f"runs/{self.name}/{self.stage}"

    def derive_end_to_end(self) -> None:
        """Fill the nulls of ``schedule.end-to-end`` from the two-stage run it is compared with: steps =
        stage1.steps + stage2.steps, lr and warmup_steps of stage 1 (denoiser + projectors), encoder_lr =
        stage2.lr (the LoRA). The paper's end-to-end baseline is only a fair comparison at the same budget:
        otherwise the LoRA would train 100x longer at a 10x higher lr than in stage 2."""
        e2e = self.schedule.get("end-to-end")
        unset = [k for k in ("steps", "lr", "warmup_steps", "encoder_lr") if e2e and getattr(e2e, k) is None]
        if not unset:
            return
        s1, s2 = self.schedule.get("stage1"), self.schedule.get("stage2")
        if s1 is None or s2 is None or not (s1.complete and s2.complete):
            raise ValueError("schedule.end-to-end derives its nulls from schedule.stage1 and schedule.stage2")
        derived = {
            "steps": s1.steps + s2.steps,
            "lr": s1.lr,
            "warmup_steps": s1.warmup_steps,
            "encoder_lr": s2.lr,
        }
        for key in unset:
            setattr(e2e, key, derived[key])

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

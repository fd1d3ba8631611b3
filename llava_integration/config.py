"""The LLaVA integration's config schema (one schema; YAML instances live in ``configs/llava/``).

The dataclass defaults are LLaVA-1.5's per-stage recipe (templates, learning rates, batch sizes, DeepSpeed
stages, lengths) with no paths: a run names its encoder, LLM and data in a YAML instance -- the recipes
``vicuna-7b.yaml`` / ``vicuna-13b.yaml`` or the CPU-sized toy run ``toy.yaml`` (which holds every toy value)
-- or in ``key=value`` overrides. Relative paths are relative to the working directory (the repository root
in the scripts).

    model     what is assembled: encoder dir, LLM dir, projector, feature layer/strategy, weights dtype,
              attention (``python -m llava_integration.build`` reads this section and ``seed``)
    pretrain  stage "pretrain": projector only, template "plain", ZeRO-2
    finetune  stage "finetune": projector + LLM (full or LoRA), template "vicuna_v1", ZeRO-3
    train     run-time settings shared by both stages (precision, checkpointing, logging, resume)
    stage     which stage ``python -m llava_integration.train`` runs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genhancer.utils.cards import Init
from genhancer.utils.errors import ConfigError
from genhancer.utils.images import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels

PROJECTORS: dict[str, str] = {"mlp2x_gelu": "gelu"}  # projector id -> HF LlavaConfig.projector_hidden_act


@dataclass
class ModelConfig:
    """What ``llava_integration.build`` assembles (LlavaForConditionalGeneration from two directories)."""

    encoder: str = ""  # CLIP/SigLIP directory or hub id (a GenHancer export works as is)
    llm: str = ""  # causal-LM directory or hub id (Llama/Vicuna/Qwen2 ...)
    template: str = "vicuna_v1"  # conversation format stored in the assembled processor
    projector: str = "mlp2x_gelu"
    # multiplies the fresh projector's output layer (weights and bias); 1.0 is LLaVA's initialisation. A
    # smaller value starts the image tokens nearer the size of the LLM's word embeddings (docs/llava.md).
    projector_init_scale: float = 1.0
    # the encoder layer whose tokens become image tokens (-2: LLaVA-1.5), or a list of layers whose tokens
    # are concatenated feature-wise (HF LlavaConfig's multi-layer features; the projector's input widens)
    vision_feature_layer: int | list[int] = -2
    # "default" drops the CLS token, "full" keeps every token; "auto": default for CLIP, full for SigLIP.
    vision_feature_select_strategy: Literal["auto", "default", "full"] = "auto"
    pad_token: str = "<pad>"  # added when the LLM's tokenizer has no pad token
    pad_embeddings_to_multiple_of: int | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # assembled weights; auto: the LLM's
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    # no trust_remote_code here: running a model's own code is the --trust-remote-code flag of
    # `python -m llava_integration.build`, never a config value (genhancer.utils.config refuses the key)
    # random: encoder and LLM built from their architecture cards (genhancer.utils.cards) with random weights,
    # for smoke runs at real shapes; marked in config.json and provenance, refused by the export
    init: Init = "pretrained"
    tokenizer: str = ""  # tokenizer directory; "" = model.llm's (a card ships none: random init names one)
    llm_layers: int | None = None  # keep the LLM's first N decoder layers (a real-width, shallow smoke model)

    def __post_init__(self) -> None:
        if self.projector not in PROJECTORS:
            raise ConfigError(
                f"unknown projector {self.projector!r}; known projectors: {', '.join(PROJECTORS)}"
            )
        if isinstance(self.vision_feature_layer, list) and not self.vision_feature_layer:
            raise ConfigError("model.vision_feature_layer: give a layer index or a non-empty list of them")
        if not self.projector_init_scale > 0:
            raise ConfigError(
                "model.projector_init_scale must be > 0 (1.0 = LLaVA's initialisation), "
                f"got {self.projector_init_scale}"
            )


@dataclass
class DataConfig:
    """A LLaVA JSON/JSONL file of records and the folder its ``image`` paths are relative to."""

    path: str = ""
    image_root: str = ""
    image_aspect_ratio: Literal["pad", "square"] = "pad"  # pad: square with the mean colour; square: as is
    max_length: int = 2048  # tokens, image tokens included
    over_length: Literal["truncate", "skip"] = "truncate"  # never cuts through image tokens either way
    on_bad_record: Literal["error", "skip"] = "error"
    group_by_modality_length: bool = True
    num_workers: int = 0
    limit: int | None = None  # use only the first N records (smoke runs)
    # images with more pixels (width x height, read from the header) are not decoded: their record is an
    # error / skipped (on_bad_record); the default and maximum is PIL's own refusal threshold
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"max_length={self.max_length} is too small")
        check_max_pixels(self.max_image_pixels, "data.max_image_pixels")


@dataclass
class LoraConfig:
    """LoRA on the LLM's linear layers (finetune only); the projector trains fully (at the stage's
    ``projector_lr``)."""

    enabled: bool = False
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05


@dataclass
class StageConfig:
    """One training stage: its data, conversation format and optimisation."""

    template: str = "vicuna_v1"
    data: DataConfig = field(default_factory=DataConfig)
    init_from: str | None = (
        None  # LLaVA dir to start from (None: pretrain assembles, finetune <run>/pretrain)
    )
    deepspeed: str | None = None  # DeepSpeed JSON ("auto" values are filled from these settings)
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # The projector's learning rate (LLaVA's mm_projector_lr); None: ``learning_rate``. The LLaVA-1.5 LoRA
    # recipe trains the LoRA at 2e-4 and the projector at 2e-5.
    projector_lr: float | None = None
    save_steps: int = 500  # 0: no checkpoints (smoke runs)
    save_total_limit: int = 1
    optim: str | None = (
        None  # a transformers optimizer name (TrainingArguments.optim); None: the Trainer's AdamW
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class RuntimeConfig:
    """Settings shared by both stages."""

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on a bf16 GPU, else fp32
    tf32: bool = True
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    resume: str = "auto"  # auto: from the newest checkpoint in the stage dir; never; or a checkpoint path
    use_cpu: bool = False  # force CPU even where CUDA is available


def _pretrain_stage() -> StageConfig:
    """LLaVA-1.5 stage 1: projector only, captions, template plain, lr 1e-3, batch 32 per device, ZeRO-2."""
    return StageConfig(
        template="plain",
        data=DataConfig(image_aspect_ratio="square"),
        deepspeed="configs/deepspeed/zero2.json",
        learning_rate=1e-3,
        per_device_batch_size=32,
    )


def _finetune_stage() -> StageConfig:
    """LLaVA-1.5 stage 2: projector + LLM, template vicuna_v1, lr 2e-5, batch 16 per device, ZeRO-3."""
    return StageConfig(
        template="vicuna_v1",
        data=DataConfig(image_aspect_ratio="pad"),
        deepspeed="configs/deepspeed/zero3.json",
        learning_rate=2e-5,
        per_device_batch_size=16,
    )


@dataclass
class LlavaTrainConfig:
    """Top level of ``configs/llava/*.yaml``."""

    stage: Literal["pretrain", "finetune"] = "pretrain"
    run_dir: str = "runs/llava"  # <run_dir>/<stage>/{config.yaml, metrics.jsonl, checkpoint-*, model/}
    seed: int = 0  # training order, and the projector's initialisation at assembly
    model: ModelConfig = field(default_factory=ModelConfig)
    # a YAML section given in part keeps these per-stage defaults (the loader merges over the field default)
    pretrain: StageConfig = field(default_factory=_pretrain_stage)
    finetune: StageConfig = field(default_factory=_finetune_stage)
    train: RuntimeConfig = field(default_factory=RuntimeConfig)

    def stage_config(self) -> StageConfig:
        return self.pretrain if self.stage == "pretrain" else self.finetune

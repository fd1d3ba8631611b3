"""Stages are data: a ``StageSpec`` says what trains and what a stage starts from; ``apply_stage`` enforces
it.

| stage      | conditioner | denoiser | encoder | starts from                     |
|------------|-------------|----------|---------|---------------------------------|
| stage1     | trains      | trains   | frozen  | fresh conditioner + denoiser    |
| stage2     | frozen      | frozen   | LoRA    | a stage-1 output dir (init_from)|
| stage2-all | trains      | trains   | LoRA    | a stage-1 output dir (init_from)|
| end-to-end | trains      | trains   | LoRA    | fresh (the paper's weaker recipe)|

The latent space (VAE/VQ tokenizer) never trains. How long and how fast a stage trains is
``cfg.schedule[<stage>]``, not part of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from genhancer.utils.logging import get_logger
from genhancer.utils.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from genhancer.config import GenHancerConfig, ScheduleConfig
    from genhancer.module import GenHancerModel

EncoderMode = Literal["frozen", "lora", "full"]


@dataclass(frozen=True)
class StageSpec:
    """What one training stage updates. ``encoder``: frozen | lora (peft LoRA attached) | full."""

    name: str
    trains_conditioner: bool
    trains_denoiser: bool
    encoder: EncoderMode
    needs_init_from: bool  # True: conditioner + denoiser (+ LoRA) come from cfg.init_from
    description: str = ""

    def __post_init__(self) -> None:
        if self.encoder not in ("frozen", "lora", "full"):
            raise ValueError(f"StageSpec.encoder must be frozen|lora|full, got {self.encoder!r}")

    @property
    def attaches_lora(self) -> bool:
        return self.encoder == "lora"


STAGES: Registry[StageSpec] = Registry("stage")
STAGES.register(
    "stage1",
    StageSpec(
        "stage1",
        trains_conditioner=True,
        trains_denoiser=True,
        encoder="frozen",
        needs_init_from=False,
        description="denoiser + projectors learn to reconstruct from the frozen encoder's global token",
    ),
)
STAGES.register(
    "stage2",
    StageSpec(
        "stage2",
        trains_conditioner=False,
        trains_denoiser=False,
        encoder="lora",
        needs_init_from=True,
        description="LoRA on the encoder, tuned through the frozen stage-1 denoiser + projectors",
    ),
)
STAGES.register(
    "stage2-all",
    StageSpec(
        "stage2-all",
        trains_conditioner=True,
        trains_denoiser=True,
        encoder="lora",
        needs_init_from=True,
        description="stage-2 variant: LoRA + denoiser + projectors all train",
    ),
)
STAGES.register(
    "end-to-end",
    StageSpec(
        "end-to-end",
        trains_conditioner=True,
        trains_denoiser=True,
        encoder="lora",
        needs_init_from=False,
        description="one stage: encoder LoRA together with a fresh denoiser (the paper's worse baseline)",
    ),
)


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"trainable": n, "frozen": n} over unique parameters (shared tensors counted once)."""
    seen: set[int] = set()
    trainable = frozen = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return {"trainable": trainable, "frozen": frozen}


def apply_stage(model: GenHancerModel, spec: StageSpec) -> dict[str, int]:
    """Set ``requires_grad`` on every part of ``model`` as ``spec`` says; log and return the counts.

    A ``lora`` stage attaches the encoder LoRA (``cfg.lora``) if the model has none yet; only the adapter
    parameters peft marks trainable (lora_A/B, and biases with ``bias: lora_only``) then train.
    """
    if spec.attaches_lora and not model.encoder.has_lora:
        model.encoder.attach_lora(model.cfg.lora)
    model.latent.requires_grad_(False)
    model.conditioner.requires_grad_(spec.trains_conditioner)
    model.denoiser.requires_grad_(spec.trains_denoiser)
    model.encoder.set_trainable(spec.encoder)
    counts = count_parameters(model)
    parts = {
        "encoder": count_parameters(model.encoder),
        "conditioner": count_parameters(model.conditioner),
        "denoiser": count_parameters(model.denoiser),
        "latent": count_parameters(model.latent),
    }
    log = get_logger("genhancer.stages")
    log.info(
        "stage %s: %s trainable / %s frozen parameters (%s)",
        spec.name,
        f"{counts['trainable']:,}",
        f"{counts['frozen']:,}",
        ", ".join(f"{k} {v['trainable']:,}/{v['trainable'] + v['frozen']:,}" for k, v in parts.items()),
    )
    return counts


def optimizer_groups(model: GenHancerModel, schedule: ScheduleConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups of a stage: the trainable encoder (LoRA) parameters at ``schedule.encoder_lr``,
    the rest (projectors, denoiser) at ``schedule.lr``. Without a distinct encoder_lr: one group, every
    trainable parameter in model order at ``lr`` (the optimizer state existing checkpoints hold)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder_lr = schedule.lr if schedule.encoder_lr is None else schedule.encoder_lr
    if encoder_lr == schedule.lr:
        return [{"params": [p for _, p in trainable], "lr": schedule.lr}]
    groups = [
        {"params": [p for n, p in trainable if not n.startswith("encoder.")], "lr": schedule.lr},
        {"params": [p for n, p in trainable if n.startswith("encoder.")], "lr": encoder_lr},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: GenHancerModel, cfg: GenHancerConfig) -> tuple[Any, Any]:
    """The current stage's torch AdamW over ``optimizer_groups`` (betas and weight decay from ``cfg.train``)
    and its constant-with-warmup learning-rate schedule, stepped once per optimizer step."""
    import torch
    from transformers import get_constant_schedule_with_warmup

    schedule = cfg.current_schedule
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, schedule),
        lr=schedule.lr,
        betas=tuple(cfg.train.betas),
        weight_decay=cfg.train.weight_decay,
    )
    return optimizer, get_constant_schedule_with_warmup(optimizer, num_warmup_steps=schedule.warmup_steps)

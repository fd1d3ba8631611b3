"""LLaVA stages are data: a ``StageSpec`` says which parts train; ``apply_stage`` sets ``requires_grad``.

| stage    | vision tower | projector | LLM                        | starts from                           |
|----------|--------------|-----------|----------------------------|---------------------------------------|
| pretrain | frozen       | trains    | frozen                     | ``<run_dir>/pretrain/assembled``      |
| finetune | frozen       | trains    | trains (or its LoRA only)  | the pretrain stage's ``model``        |

A stage's ``init_from`` overrides where it starts. How long and how fast a stage trains is its
``StageConfig`` (``cfg.pretrain`` / ``cfg.finetune``), not part of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genhancer.utils.errors import ModelDirError
from genhancer.utils.logging import get_logger
from genhancer.utils.registry import Registry
from llava_integration.config import LlavaTrainConfig, StageConfig

log = get_logger("llava_integration.stages")


@dataclass(frozen=True)
class StageSpec:
    """What a stage trains: parts among ``projector``, ``llm`` (the vision tower never trains)."""

    name: str
    trains: tuple[str, ...]
    lora_allowed: bool


STAGES: Registry[StageSpec] = Registry("stage")
STAGES.register("pretrain", StageSpec("pretrain", ("projector",), lora_allowed=False))
STAGES.register("finetune", StageSpec("finetune", ("projector", "llm"), lora_allowed=True))


def part_of(name: str) -> str:
    """Which part a parameter name belongs to: vision, projector or llm (works inside a PeftModel)."""
    if "vision_tower" in name:
        return "vision"
    if "multi_modal_projector" in name:
        return "projector"
    return "llm"


def _numel(p: Any) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions params to shape (0,)


def apply_stage(model: Any, spec: StageSpec, lora: bool) -> dict[str, dict[str, int]]:
    """Set ``requires_grad`` for ``spec`` (LoRA: only the adapters of the LLM); return counts per part."""
    counts: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        part = part_of(name)
        if part == "vision":
            train = False
        elif part == "projector":
            train = "projector" in spec.trains
        elif lora:
            train = "lora_" in name
        else:
            train = "llm" in spec.trains
        p.requires_grad_(train)
        c = counts.setdefault(part, {"trainable": 0, "frozen": 0})
        c["trainable" if train else "frozen"] += _numel(p)
    log.info(
        "stage %s: %s",
        spec.name,
        ", ".join(
            f"{part} {c['trainable']:,} trainable / {c['frozen']:,} frozen"
            for part, c in sorted(counts.items())
        ),
    )
    return counts


def lora_target_regex(model: Any) -> str:
    """Every linear layer of the language model (not the vision tower, not the projector, not lm_head)."""
    leaves = sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.model.language_model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    )
    if not leaves:
        raise ModelDirError("the language model has no linear layers to attach LoRA to")
    return rf".*language_model\..*\.({'|'.join(leaves)})"


def lora_config(stage: StageConfig, model: Any) -> Any:
    """The peft ``LoraConfig`` of a LoRA finetune (training and export build the same adapters)."""
    from peft import LoraConfig

    return LoraConfig(
        r=stage.lora.r,
        lora_alpha=stage.lora.alpha,
        lora_dropout=stage.lora.dropout,
        target_modules=lora_target_regex(model),
        bias="none",
    )


def stage_dirs(cfg: LlavaTrainConfig) -> tuple[Path, Path]:
    """(stage directory, directory the stage starts from)."""
    stage_dir = Path(cfg.run_dir) / cfg.stage
    stage = cfg.stage_config()
    if stage.init_from:
        return stage_dir, Path(stage.init_from)
    if cfg.stage == "pretrain":
        return stage_dir, stage_dir / "assembled"
    return stage_dir, Path(cfg.run_dir) / "pretrain" / "model"


__all__ = ["STAGES", "StageSpec", "apply_stage", "lora_config", "lora_target_regex", "part_of", "stage_dirs"]

"""The final output of a LLaVA stage: a plain Hugging Face ``LlavaForConditionalGeneration`` directory.

``<run_dir>/<stage>/model/``: weights (LoRA merged into the LLM), processor with the stage's chat template,
a generation config whose EOS ids are the template's stop tokens, ``use_cache`` on, and provenance. It is
written under ``.partial-model`` and renamed into place, so a crashed export never looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from genhancer.utils.errors import ModelDirError
from genhancer.utils.provenance import write_provenance
from llava_integration.build import stop_token_ids
from llava_integration.config import LlavaTrainConfig
from llava_integration.stages import lora_config


def export(
    trainer: Any, cfg: LlavaTrainConfig, init_dir: Path, processor: Any, out: Path, extra: dict[str, Any]
) -> Path:
    """Write the trained model as a plain HF LLaVA directory (LoRA merged). Every rank must call this."""
    refuse_random_init(trainer.model.config, init_dir, out)
    tmp = out.parent / f".partial-{out.name}"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    if cfg.stage_config().lora.enabled:
        _save_merged(trainer, cfg, init_dir, tmp)
    else:
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        _complete(tmp, cfg, init_dir, processor, extra)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out


def refuse_random_init(config: Any, init_dir: Path, out: Path) -> None:
    """A random-init LLaVA (``model.init=random``: architecture cards, no weights) is never exported."""
    note = getattr(config, "random_init", None)
    if note:
        raise ModelDirError(
            f"not exporting {out}: the model trained from {init_dir} is marked random_init={note!r} "
            "(assembled with model.init=random). The stage ran (metrics.jsonl and any checkpoints are in its "
            "directory); assemble from pretrained weights (model.init=pretrained) for a model to export"
        )


def _save_merged(trainer: Any, cfg: LlavaTrainConfig, init_dir: Path, tmp: Path) -> None:
    """Gather the full (16-bit under ZeRO-3) state dict on every rank, then merge the LoRA on the main
    process in a fresh, un-partitioned copy of the starting model."""
    from transformers import LlavaForConditionalGeneration

    state = trainer.accelerator.get_state_dict(
        trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model
    )
    if not trainer.is_world_process_zero():
        return
    from peft import get_peft_model
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    dtype = next(iter(state.values())).dtype
    base = LlavaForConditionalGeneration.from_pretrained(init_dir, dtype=dtype, use_safetensors=True)
    peft_model = get_peft_model(base, lora_config(cfg.stage_config(), base))
    missing, unexpected = peft_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"LoRA export: state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    peft_model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)


def _complete(
    tmp: Path, cfg: LlavaTrainConfig, init_dir: Path, processor: Any, extra: dict[str, Any]
) -> None:
    """Main process: generation config (stop tokens), processor, ``use_cache``, provenance."""
    from transformers import GenerationConfig

    stage = cfg.stage_config()
    (tmp / "training_args.bin").unlink(missing_ok=True)
    gen = (
        GenerationConfig.from_pretrained(tmp)
        if (tmp / "generation_config.json").is_file()
        else GenerationConfig()
    )
    stops = stop_token_ids(processor.tokenizer, stage.template)
    gen.eos_token_id = stops if len(stops) > 1 else stops[0]
    gen.pad_token_id = processor.tokenizer.pad_token_id
    gen.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    cfg_json = json.loads((tmp / "config.json").read_text())
    cfg_json["use_cache"] = True
    (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    write_provenance(
        tmp,
        "llava",
        config=cfg,
        parents=[cfg.model.encoder, cfg.model.llm, init_dir],
        extra={"stage": cfg.stage, "template": stage.template, "lora": stage.lora.enabled, **extra},
    )


__all__ = ["export"]

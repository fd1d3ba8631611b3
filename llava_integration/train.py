"""Train a LLaVA stage with the Hugging Face Trainer (+ DeepSpeed) and export a plain HF LLaVA directory.

``python -m llava_integration.train [--config configs/llava/toy.yaml] [stage=finetune] [KEY=VALUE ...]``

Stages are data (``STAGES``): ``pretrain`` trains the projector only (template ``plain``, ZeRO-2 in the
recipe); ``finetune`` trains projector + LLM, fully or with LoRA (template ``vicuna_v1``, ZeRO-3). The
vision tower is always frozen. The pretrain stage starts from ``<run_dir>/pretrain/assembled`` (assembled
from ``model.encoder`` + ``model.llm`` when missing); finetune starts from the pretrain stage's ``model``.

Output, under ``<run_dir>/<stage>/``: ``config.yaml`` (resolved), ``metrics.jsonl``, tensorboard events
(``runs/``), ``checkpoint-*`` (resume: ``train.resume=auto``), and ``model/``: a complete
``LlavaForConditionalGeneration`` directory (LoRA merged) with processor, chat template and provenance.

Multi-GPU / multi-node: launch with ``deepspeed`` / ``torchrun`` / ``accelerate launch`` (docs/llava.md).
A plain ``python`` run with a DeepSpeed config gets single-process distributed defaults
(MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) set here, in the entry point -- ZeRO-3's ``zero.Init``
otherwise tries MPI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.config import dump_yaml, load_config, to_dict
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.fsio import read_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import write_provenance
from genhancer.utils.registry import Registry
from llava_integration.config import LlavaTrainConfig, StageConfig

log = get_logger("llava_integration.train")


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
    log.info("stage %s: %s", spec.name, ", ".join(
        f"{part} {c['trainable']:,} trainable / {c['frozen']:,} frozen" for part, c in sorted(counts.items())))
    return counts


def lora_target_regex(model: Any) -> str:
    """Every linear layer of the language model (not the vision tower, not the projector, not lm_head)."""
    import torch

    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.model.language_model.named_modules()
                     if isinstance(m, torch.nn.Linear)})
    if not leaves:
        raise ModelDirError("the language model has no linear layers to attach LoRA to")
    return rf".*language_model\..*\.({'|'.join(leaves)})"


def lora_config(stage: StageConfig, model: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=stage.lora.r, lora_alpha=stage.lora.alpha, lora_dropout=stage.lora.dropout,
                      target_modules=lora_target_regex(model), bias="none")


def resolve_precision(requested: str, use_cpu: bool) -> str:
    import torch

    if requested != "auto":
        return requested
    if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def stage_dirs(cfg: LlavaTrainConfig) -> tuple[Path, Path]:
    """(stage directory, directory the stage starts from)."""
    stage_dir = Path(cfg.run_dir) / cfg.stage
    stage = cfg.stage_config()
    if stage.init_from:
        return stage_dir, Path(stage.init_from)
    if cfg.stage == "pretrain":
        return stage_dir, stage_dir / "assembled"
    return stage_dir, Path(cfg.run_dir) / "pretrain" / "model"


# "auto" values neither the Trainer nor accelerate fills in: dropped, so DeepSpeed's own default applies.
_DS_UNFILLED_AUTO = ("allgather_bucket_size",)


def deepspeed_config(path: str) -> dict[str, Any]:
    """Read a DeepSpeed JSON; "auto" values the Trainer does not fill are left to DeepSpeed's defaults."""
    ds = read_json(path, ConfigError, missing=f"deepspeed config not found: {path}")
    zero = ds.get("zero_optimization", {})
    for key in _DS_UNFILLED_AUTO:
        if zero.get(key) == "auto":
            del zero[key]
    return ds


def training_arguments(cfg: LlavaTrainConfig, stage_dir: Path) -> Any:
    """TrainingArguments for the stage. [IMPORTANT] create them *before* ``from_pretrained``: with a ZeRO-3
    config this registers DeepSpeed so the model is built partitioned (``zero.Init``)."""
    import torch
    from transformers import TrainingArguments
    from transformers.integrations.integration_utils import is_tensorboard_available

    stage = cfg.stage_config()
    use_cpu = cfg.train.use_cpu or not torch.cuda.is_available()
    precision = resolve_precision(cfg.train.precision, use_cpu)
    report_to = list(cfg.train.report_to)
    if "tensorboard" in report_to and not is_tensorboard_available():
        log.warning("tensorboard is not installed: not writing tensorboard events (metrics.jsonl still written)")
        report_to.remove("tensorboard")
    return TrainingArguments(
        output_dir=str(stage_dir),
        per_device_train_batch_size=stage.per_device_batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps,
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=cfg.train.tf32 if not use_cpu else None,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.train.gradient_checkpointing else None,
        deepspeed=deepspeed_config(stage.deepspeed) if stage.deepspeed else None,
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps",
        save_steps=stage.save_steps,
        save_total_limit=stage.save_total_limit,
        report_to=report_to or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=stage.data.num_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        use_cpu=use_cpu,
        ddp_backend="gloo" if use_cpu else None,
    )


def make_trainer_class() -> type:
    from transformers import Trainer

    from llava_integration.data import ModalityLengthGroupedSampler

    class LlavaTrainer(Trainer):
        """Trainer with the modality/length-grouped sampler and a separate projector learning rate."""

        def __init__(self, *args: Any, group_by_modality: bool = True, projector_lr: float | None = None,
                     **kwargs: Any):
            self.group_by_modality = group_by_modality
            self.projector_lr = projector_lr
            super().__init__(*args, **kwargs)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self.group_by_modality or not hasattr(dataset, "modality_lengths"):
                return super()._get_train_sampler(train_dataset)
            return ModalityLengthGroupedSampler(dataset.modality_lengths(),
                                                self.args.train_batch_size * self.args.world_size, self.args.seed)

        def create_optimizer(self, model: Any = None) -> Any:
            if self.projector_lr is None or self.optimizer is not None:
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups: dict[tuple[bool, bool], list[Any]] = {}
            for n, p in opt_model.named_parameters():
                if p.requires_grad:
                    groups.setdefault((part_of(n) == "projector", n in decay), []).append(p)
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            param_groups = [
                {"params": ps, "weight_decay": self.args.weight_decay if dec else 0.0,
                 **({"lr": self.projector_lr} if proj else {})}
                for (proj, dec), ps in groups.items()
            ]
            self.optimizer = cls(param_groups, **kwargs)
            return self.optimizer

    return LlavaTrainer


def make_metrics_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Appends every log line (+ tokens/s since the start) to ``metrics.jsonl`` on the main process."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.tokens0 = 0
            self.last: dict[str, Any] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            secs = time.perf_counter() - self.t0
            row = {"step": state.global_step, "seconds": round(secs, 2), **(logs or {}),
                   "tokens_per_second": round((state.num_input_tokens_seen - self.tokens0) / max(secs, 1e-9), 1)}
            self.last = row
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row, default=float) + "\n")

    return MetricsCallback()


def _resume_point(cfg: LlavaTrainConfig, stage_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.train.resume == "never":
        return None
    if cfg.train.resume == "auto":
        return get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None
    if not Path(cfg.train.resume).is_dir():
        raise ConfigError(f"train.resume: checkpoint directory not found: {cfg.train.resume}")
    return cfg.train.resume


def export(trainer: Any, cfg: LlavaTrainConfig, init_dir: Path, processor: Any, out: Path,
           extra: dict[str, Any]) -> Path:
    """Write the trained model as a plain HF LLaVA directory (LoRA merged). Every rank must call this."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from llava_integration.build import stop_token_ids

    stage = cfg.stage_config()
    tmp = out.parent / f".partial-{out.name}"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    if stage.lora.enabled:
        # Gather the full (16-bit under ZeRO-3) state dict, then merge on the main process in a fresh,
        # un-partitioned copy of the starting model.
        state = trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
        if trainer.is_world_process_zero():
            from peft import get_peft_model
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
            dtype = next(iter(state.values())).dtype
            base = LlavaForConditionalGeneration.from_pretrained(init_dir, dtype=dtype)
            peft_model = get_peft_model(base, lora_config(stage, base))
            missing, unexpected = peft_model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise RuntimeError(f"LoRA export: state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
            merged = peft_model.merge_and_unload()
            merged.save_pretrained(tmp, safe_serialization=True)
    else:
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        for junk in ("training_args.bin",):
            (tmp / junk).unlink(missing_ok=True)
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(tmp) if (tmp / "generation_config.json").is_file() else GenerationConfig()
        stops = stop_token_ids(processor.tokenizer, stage.template)
        gen.eos_token_id = stops if len(stops) > 1 else stops[0]
        gen.pad_token_id = processor.tokenizer.pad_token_id
        gen.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        cfg_json = json.loads((tmp / "config.json").read_text())
        cfg_json["use_cache"] = True
        (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
        write_provenance(tmp, "llava", config=cfg, parents=[cfg.model.encoder, cfg.model.llm, init_dir],
                         extra={"stage": cfg.stage, "template": stage.template, "lora": stage.lora.enabled, **extra})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out


def run_stage(cfg: LlavaTrainConfig, assemble_if_missing: bool = True) -> Path:
    """Train ``cfg.stage`` and export ``<run_dir>/<stage>/model``; returns that directory.

    ``assemble_if_missing``: build the pretrain stage's starting directory when absent (single-process runs
    only: assembly must happen before any distributed/DeepSpeed state exists).
    """
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from llava_integration.build import build, resolve_attn_implementation
    from llava_integration.data import LlavaCollator, LlavaDataset
    from llava_integration.templates import get_template

    spec = STAGES[cfg.stage]
    stage = cfg.stage_config()
    template = get_template(stage.template)
    if stage.lora.enabled and not spec.lora_allowed:
        raise ConfigError(f"{cfg.stage}.lora.enabled: LoRA is for the finetune stage only")
    stage_dir, init_dir = stage_dirs(cfg)
    if not (init_dir / "config.json").is_file():
        if cfg.stage == "pretrain" and not stage.init_from:
            if not assemble_if_missing:
                raise ModelDirError(f"{init_dir} is missing: assemble it first with "
                                    "`python -m llava_integration.build` (the scripts do) before a multi-process run")
            build(cfg.model, init_dir, seed=cfg.seed)
        else:
            raise ModelDirError(f"{cfg.stage}: the starting LLaVA directory {init_dir} does not exist "
                                "(run the pretrain stage first, or set the stage's init_from)")
    args = training_arguments(cfg, stage_dir)
    if args.deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl")
    if args.process_index == 0:
        dump_yaml(cfg, stage_dir / "config.yaml")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32", torch.float32)
    attn = resolve_attn_implementation(cfg.model.attn_implementation)
    model = LlavaForConditionalGeneration.from_pretrained(init_dir, dtype=dtype, attn_implementation=attn)
    model.config.use_cache = False
    processor = AutoProcessor.from_pretrained(init_dir)
    processor.chat_template = template.chat_template  # the stage's conversation format travels with the model
    if stage.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(stage, model))
    counts = apply_stage(model, spec, lora=stage.lora.enabled)
    if args.gradient_checkpointing and stage.lora.enabled:
        model.enable_input_require_grads()
    dataset = LlavaDataset(stage.data, processor, template.chat_template, model.config.image_seq_length)
    log.info("%s: %d records from %s (attention %s, precision %s, deepspeed %s)", cfg.stage, len(dataset),
             stage.data.path, attn, "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32", stage.deepspeed)
    metrics = make_metrics_callback(stage_dir / "metrics.jsonl")
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=dataset,
        data_collator=LlavaCollator(processor.tokenizer.pad_token_id),
        callbacks=[metrics],
        group_by_modality=stage.data.group_by_modality_length,
        projector_lr=stage.lora.projector_lr if stage.lora.enabled else None,
    )
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=_resume_point(cfg, stage_dir))
    secs = time.perf_counter() - t0
    tokens = trainer.state.num_input_tokens_seen
    log.info("%s done in %.1f s: %d steps, loss %.4f, %.0f tokens/s; data: %s", cfg.stage, secs,
             trainer.state.global_step, result.training_loss, tokens / max(secs, 1e-9), dataset.report.summary())
    extra = {"train_seconds": round(secs, 1), "steps": trainer.state.global_step,
             "train_loss": round(float(result.training_loss), 4), "tokens_seen": int(tokens),
             "tokens_per_second": round(tokens / max(secs, 1e-9), 1), "parameters": counts,
             "data": {"records": len(dataset), "skipped_malformed": len(dataset.report.bad_records),
                      "skipped_over_length": dataset.report.over_length, "truncated": dataset.report.truncated}}
    return export(trainer, cfg, init_dir, processor, stage_dir / "model", extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_dist_defaults(env: dict[str, str]) -> dict[str, str]:
    """The launcher variables a plain ``python`` run lacks (only those absent are returned)."""
    defaults = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    return {k: v for k, v in defaults.items() if k not in env}


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_integration.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="configs/llava/*.yaml (default: the embedded toy config)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. stage=finetune finetune.max_steps=10")
    args = parser.parse_args(argv)
    cfg = load_config(LlavaTrainConfig, args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if cfg.stage_config().deepspeed and "RANK" not in os.environ:
        os.environ.update(single_process_dist_defaults(dict(os.environ)))
    try:
        out = run_stage(cfg, assemble_if_missing=int(os.environ.get("WORLD_SIZE", "1")) == 1)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    print(f"{cfg.stage} model -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

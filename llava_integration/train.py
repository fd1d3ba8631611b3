"""Train a LLaVA stage with the Hugging Face Trainer (+ DeepSpeed) and export a plain HF LLaVA directory.

``python -m llava_integration.train [--config configs/llava/toy.yaml] [stage=finetune] [KEY=VALUE ...]``

Stages are data (``STAGES``): ``pretrain`` trains the projector only (template ``plain``, ZeRO-2 in the
recipe); ``finetune`` trains projector + LLM, fully or with LoRA (template ``vicuna_v1``, ZeRO-3). The
vision tower is always frozen. The pretrain stage starts from ``<run_dir>/pretrain/assembled`` (assembled
from ``model.encoder`` + ``model.llm`` when missing); finetune starts from the pretrain stage's ``model``.

Output, under ``<run_dir>/<stage>/``: ``config.yaml`` (resolved), ``metrics.jsonl``, tensorboard events
(``runs/``), ``checkpoint-*`` (resume: ``train.resume=auto``), ``summary.json`` (steps, loss, throughput and
what the data left out: ``skipped_records``, ``skipped_files`` with reasons, gathered from every DataLoader
worker and rank through ``skipped/``), and ``model/``: a complete ``LlavaForConditionalGeneration`` directory
(LoRA merged) with processor, chat template and provenance.

Checkpoints are complete or absent (``genhancer.utils.checkpoints``): the Trainer writes ``checkpoint-N``
into ``.incomplete/``, then it is renamed into place and gets its ``manifest.json`` (sha256 per file) last.
Resume takes the newest checkpoint with a manifest, removes interrupted saves, and verifies every file
before the Trainer loads (unpickles) anything from it. A NaN/inf loss on any rank stops every rank before
the update; the message names the last good checkpoint.

What trains per stage is ``llava_integration.stages``; the exported directory is ``llava_integration.export``.

Multi-GPU / multi-node: launch with ``deepspeed`` / ``torchrun`` / ``accelerate launch`` (docs/llava.md).
A plain ``python`` run with a DeepSpeed config gets the launcher variables of a single process while it
runs (``genhancer.utils.deepspeed.distributed_process``) -- ZeRO-3's ``zero.Init`` otherwise tries MPI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genhancer.utils.checkpoints import (
    newest_complete,
    resume_point,
    saving,
    staging_area,
    stop_if_not_finite,
    verify_on_all_ranks,
)
from genhancer.utils.cli import entry_point
from genhancer.utils.config import dump_yaml, load_config, to_dict
from genhancer.utils.deepspeed import (
    HIDDEN_SIZE_AUTO,
    deepspeed_config,
    distributed_process,
    precision_dtype,
    resolve_mixed_precision,
)
from genhancer.utils.errors import ConfigError, DataError, ModelDirError
from genhancer.utils.fsio import drop_lines_after_step, write_json
from genhancer.utils.logging import get_logger, process_rank
from genhancer.utils.weights import require_safetensors
from llava_integration.build import build, resolve_attn_implementation
from llava_integration.config import LlavaTrainConfig
from llava_integration.data import LlavaCollator, LlavaDataset, ModalityLengthGroupedSampler
from llava_integration.export import export
from llava_integration.stages import STAGES, StageSpec, apply_stage, lora_config, part_of, stage_dirs
from llava_integration.templates import get_template

log = get_logger("llava_integration.train")

CHECKPOINT = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR: <stage dir>/checkpoint-<step>
CHECKPOINT_RE = re.compile(rf"{CHECKPOINT}-(\d+)")


def training_arguments(cfg: LlavaTrainConfig, stage_dir: Path) -> Any:
    """TrainingArguments for the stage. [IMPORTANT] create them *before* ``from_pretrained``: with a ZeRO-3
    config this registers DeepSpeed so the model is built partitioned (``zero.Init``)."""
    from transformers import TrainingArguments
    from transformers.integrations.integration_utils import is_tensorboard_available

    stage = cfg.stage_config()
    use_cpu = cfg.train.use_cpu or not torch.cuda.is_available()
    precision = resolve_mixed_precision(cfg.train.precision, use_cpu=use_cpu)
    report_to = list(cfg.train.report_to)
    if "tensorboard" in report_to and not is_tensorboard_available():
        log.warning(
            "tensorboard is not installed: not writing tensorboard events (metrics.jsonl still written)"
        )
        report_to.remove("tensorboard")
    ds = None
    if (
        stage.deepspeed
    ):  # the Trainer fills the batch/precision "auto"s and the bucket sizes from the LLM's width
        ds = deepspeed_config(stage.deepspeed, key=f"{cfg.stage}.deepspeed", keep_auto=HIDDEN_SIZE_AUTO)
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
        deepspeed=ds,
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps" if stage.save_steps > 0 else "no",
        save_steps=max(stage.save_steps, 1),
        save_total_limit=None,  # pruned by us once the new checkpoint is complete (the Trainer prunes before)
        report_to=report_to or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=stage.data.num_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        use_cpu=use_cpu,
        ddp_backend="gloo" if use_cpu else None,
        **({"optim": stage.optim} if stage.optim else {}),
    )


def make_trainer_class() -> type:
    from transformers import Trainer

    class LlavaTrainer(Trainer):
        """Trainer with the modality/length-grouped sampler, a separate projector learning rate,
        complete-or-absent checkpoints (the newest ``keep_checkpoints`` kept) and the NaN/inf stop."""

        def __init__(
            self,
            *args: Any,
            group_by_modality: bool = True,
            projector_lr: float | None = None,
            keep_checkpoints: int | None = None,
            divergence_hint: str = "",
            **kwargs: Any,
        ):
            self.group_by_modality = group_by_modality
            self.projector_lr = projector_lr
            self.keep_checkpoints = keep_checkpoints
            self.divergence_hint = divergence_hint
            self._staging = False
            super().__init__(*args, **kwargs)

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            # before backward: all ranks agree, so no rank applies the update and no checkpoint follows
            stop_if_not_finite(
                out[0] if return_outputs else out,
                step=self.state.global_step + 1,
                last_good=lambda: newest_complete(self.args.output_dir, CHECKPOINT_RE),
                hint=self.divergence_hint,
            )
            return out

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            """The Trainer's own save (every rank: ZeRO shards, RNG states, trainer state) goes to the staging
            area; once every rank is done, it is committed (rename, then manifest) and old ones pruned."""
            name = f"{CHECKPOINT}-{self.state.global_step}"
            with saving(self.args.output_dir, name, pattern=CHECKPOINT_RE, keep=self.keep_checkpoints):
                self._staging = True
                try:
                    super()._save_checkpoint(model, trial)
                finally:
                    self._staging = False

        def _get_output_dir(self, trial: Any) -> str:
            # [IMPORTANT] the Trainer saves checkpoint-N under this directory; while saving, point it at the
            # staging area, so an interrupted save never appears under its final name
            if self._staging:
                return str(staging_area(self.args.output_dir))
            return super()._get_output_dir(trial)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self.group_by_modality or not hasattr(dataset, "modality_lengths"):
                return super()._get_train_sampler(train_dataset)
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths(), self.args.train_batch_size * self.args.world_size, self.args.seed
            )

        def create_optimizer(self, model: Any = None) -> Any:
            if self.projector_lr is None or self.optimizer is not None:
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = _param_groups(opt_model, decay, self.args.weight_decay, self.projector_lr)
            self.optimizer = cls(groups, **kwargs)
            return self.optimizer

    return LlavaTrainer


def _param_groups(
    model: Any, decay: set[str], weight_decay: float, projector_lr: float
) -> list[dict[str, Any]]:
    """Optimizer groups by (projector?, decayed?): the projector at ``projector_lr``, the rest at the
    Trainer's learning rate; weight decay only on the parameters the Trainer decays."""
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((part_of(n) == "projector", n in decay), []).append(p)
    return [
        {
            "params": ps,
            "weight_decay": weight_decay if dec else 0.0,
            **({"lr": projector_lr} if proj else {}),
        }
        for (proj, dec), ps in groups.items()
    ]


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
            if state.global_step and process_rank() == 0:  # resumed: the lost steps are logged again
                drop_lines_after_step(path, state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            secs = time.perf_counter() - self.t0
            row = {
                "step": state.global_step,
                "seconds": round(secs, 2),
                **(logs or {}),
                "tokens_per_second": round((state.num_input_tokens_seen - self.tokens0) / max(secs, 1e-9), 1),
            }
            self.last = row
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row, default=float) + "\n")

    return MetricsCallback()


def _resume_point(cfg: LlavaTrainConfig, stage_dir: Path) -> str | None:
    """The checkpoint to resume from, verified against its manifest: the rule is that the Trainer (which
    unpickles DeepSpeed and Trainer state) only ever loads files proven to be the ones we wrote.
    Collective: every rank calls it (after the process group exists)."""
    if cfg.train.resume == "never":
        return None
    if cfg.train.resume == "auto":
        found = resume_point(stage_dir, CHECKPOINT_RE, log)
    elif not Path(cfg.train.resume).is_dir():
        raise ConfigError(f"train.resume: checkpoint directory not found: {cfg.train.resume}")
    else:
        found = Path(cfg.train.resume)
        verify_on_all_ranks(found)
    if found is None:
        return None
    log.info("%s: resuming from %s (every file verified against its manifest)", cfg.stage, found)
    return str(found)


@dataclass
class PreparedStage:
    """A stage ready to train: the Trainer (model loaded with the stage's trainable parts) and its inputs."""

    trainer: Any
    dataset: LlavaDataset
    processor: Any
    counts: dict[str, dict[str, int]]  # parameters per part: {"vision": {"trainable": n, "frozen": n}, ...}
    stage_dir: Path
    init_dir: Path
    resume: str | None  # the checkpoint to resume from, already verified against its manifest


def _require_images_if_projector_only(
    stage: str, counts: dict[str, dict[str, int]], dataset: LlavaDataset, path: str
) -> None:
    """A stage that trains the projector alone gets no gradient from a text-only record, and a batch of them
    stops DeepSpeed with an assertion about the loss; name the records instead."""
    if counts["llm"]["trainable"] or counts["vision"]["trainable"] or all(dataset.has_image):
        return
    text_only = dataset.has_image.count(False)
    first = dataset.name(dataset.has_image.index(False))
    raise DataError(
        f"{path}: {text_only} text-only records (the first: {first}), but stage {stage} trains the projector "
        "only, which a record without an image cannot train: give this stage image records only (as "
        "LLaVA's caption data), or pick the records with data.limit / another data.path"
    )


def prepare_stage(cfg: LlavaTrainConfig, assemble_if_missing: bool = True) -> PreparedStage:
    """Everything ``run_stage`` trains with, up to (not including) ``trainer.train()``.

    ``assemble_if_missing``: build the pretrain stage's starting directory when absent (single-process runs
    only: assembly must happen before any distributed/DeepSpeed state exists).
    """
    spec, stage = STAGES[cfg.stage], cfg.stage_config()
    if stage.lora.enabled and not spec.lora_allowed:
        raise ConfigError(f"{cfg.stage}.lora.enabled: LoRA is for the finetune stage only")
    stage_dir, init_dir = stage_dirs(cfg)
    _ensure_start(cfg, init_dir, assemble_if_missing)
    args = training_arguments(cfg, stage_dir)
    if args.deepspeed:  # before from_pretrained: zero.Init needs the process group (gloo on CPU)
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl")
    if args.process_index == 0:
        dump_yaml(cfg, stage_dir / "config.yaml")
    model, processor, counts = _load_model(cfg, spec, init_dir, args)
    resume = _resume_point(cfg, stage_dir)  # verified before the Trainer loads anything from it
    dataset = LlavaDataset(
        stage.data,
        processor,
        processor.chat_template,
        model.config.image_seq_length,
        journal=_skip_journal(stage_dir, fresh=resume is None, main=args.process_index == 0),
    )
    log.info("%s: %d records from %s", cfg.stage, len(dataset), stage.data.path)
    _require_images_if_projector_only(cfg.stage, counts, dataset, stage.data.path)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=LlavaCollator(processor.tokenizer.pad_token_id),
        callbacks=[make_metrics_callback(stage_dir / "metrics.jsonl")],
        group_by_modality=stage.data.group_by_modality_length,
        projector_lr=stage.projector_lr,
        keep_checkpoints=stage.save_total_limit,
        divergence_hint=(
            f"lower {cfg.stage}.learning_rate or raise {cfg.stage}.warmup_ratio, then rerun: "
            "train.resume=auto continues from it"
        ),
    )
    return PreparedStage(trainer, dataset, processor, counts, stage_dir, init_dir, resume)


def run_stage(cfg: LlavaTrainConfig, assemble_if_missing: bool = True) -> Path:
    """Train ``cfg.stage`` and export ``<run_dir>/<stage>/model``; returns that directory."""
    run = prepare_stage(cfg, assemble_if_missing)
    t0 = time.perf_counter()
    result = run.trainer.train(resume_from_checkpoint=run.resume)
    extra = _train_report(cfg, run.trainer, result, time.perf_counter() - t0, run.dataset, run.counts)
    if run.trainer.is_world_process_zero():  # the skips of every worker and rank, each once, with reasons
        summary = {"stage": cfg.stage, **extra, **run.dataset.report.collect()}
        write_json(run.stage_dir / "summary.json", summary)
    return export(run.trainer, cfg, run.init_dir, run.processor, run.stage_dir / "model", extra)


def _skip_journal(stage_dir: Path, fresh: bool, main: bool) -> Path:
    """``<stage>/skipped/``, where every process appends what it skips; emptied when the run starts afresh
    (a resumed run keeps what was skipped before the interruption)."""
    journal = stage_dir / "skipped"
    if fresh and main:
        shutil.rmtree(journal, ignore_errors=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank records anything before the journal is emptied
    return journal


def _ensure_start(cfg: LlavaTrainConfig, init_dir: Path, assemble_if_missing: bool) -> None:
    """The stage's starting LLaVA directory exists (the pretrain stage assembles its own when allowed)."""
    if (init_dir / "config.json").is_file():
        return
    if cfg.stage != "pretrain" or cfg.stage_config().init_from:
        raise ModelDirError(
            f"{cfg.stage}: the starting LLaVA directory {init_dir} does not exist "
            "(run the pretrain stage first, or set the stage's init_from)"
        )
    if not assemble_if_missing:
        raise ModelDirError(
            f"{init_dir} is missing: assemble it first with "
            "`python -m llava_integration.build` (the scripts do) before a multi-process run"
        )
    build(cfg.model, init_dir, seed=cfg.seed)


def _load_model(cfg: LlavaTrainConfig, spec: StageSpec, init_dir: Path, args: Any) -> tuple[Any, Any, dict]:
    """(model with the stage's trainable parts, processor with its chat template, parameter counts)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    stage = cfg.stage_config()
    attn = resolve_attn_implementation(cfg.model.attn_implementation)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    log.info("%s: attention %s, precision %s, deepspeed %s", cfg.stage, attn, precision, stage.deepspeed)
    require_safetensors(init_dir, loader="transformers.LlavaForConditionalGeneration", what="LLaVA")
    model = LlavaForConditionalGeneration.from_pretrained(
        init_dir, dtype=precision_dtype(precision), attn_implementation=attn, use_safetensors=True
    )
    model.config.use_cache = False
    processor = AutoProcessor.from_pretrained(init_dir)
    processor.chat_template = get_template(stage.template).chat_template  # the format travels with the model
    if stage.lora.enabled:
        from peft import get_peft_model

        # the adapters' A matrices are drawn here, before the Trainer seeds: same seed -> same adapters
        torch.manual_seed(cfg.seed)
        model = get_peft_model(model, lora_config(stage, model))
    counts = apply_stage(model, spec, lora=stage.lora.enabled)
    if args.gradient_checkpointing and stage.lora.enabled:
        model.enable_input_require_grads()
    return model, processor, counts


def _train_report(
    cfg: LlavaTrainConfig, trainer: Any, result: Any, secs: float, dataset: Any, counts: dict
) -> dict[str, Any]:
    """Log the stage's numbers; return them for the exported model's provenance."""
    tokens = trainer.state.num_input_tokens_seen
    skips = dataset.report.collect()
    log.info(
        "%s done in %.1f s: %d steps, loss %.4f, %.0f tokens/s; data: %s",
        cfg.stage,
        secs,
        trainer.state.global_step,
        result.training_loss,
        tokens / max(secs, 1e-9),
        dataset.report.summary(),
    )
    return {
        "train_seconds": round(secs, 1),
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "tokens_seen": int(tokens),
        "tokens_per_second": round(tokens / max(secs, 1e-9), 1),
        "parameters": counts,
        "data": {
            "records": len(dataset),
            "skipped_records": len(skips["skipped_records"]),
            "skipped_files": len(skips["skipped_files"]),
            "truncated": skips["truncated_records"],
        },
    }


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llava_integration.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", type=Path, help="configs/llava/*.yaml (default: the embedded toy config)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. stage=finetune finetune.max_steps=10"
    )
    args = parser.parse_args(argv)
    cfg = load_config(LlavaTrainConfig, args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    with distributed_process():
        out = run_stage(cfg, assemble_if_missing=int(os.environ.get("WORLD_SIZE", "1")) == 1)
    print(f"{cfg.stage} model -> {out}")
    return 0


__all__ = [
    "STAGES",
    "PreparedStage",
    "apply_stage",
    "main",
    "part_of",
    "prepare_stage",
    "run_stage",
    "training_arguments",
]

if __name__ == "__main__":
    raise SystemExit(main())

"""Train one GenHancer stage:
``python -m genhancer.train --config configs/genhancer/toy.yaml [key.sub=value ...]``.

    python -m genhancer.train --config configs/genhancer/toy.yaml train.run_dir=runs/toy/stage1
    python -m genhancer.train --config configs/genhancer/toy.yaml stage=stage2 \
        init_from=runs/toy/stage1/final train.run_dir=runs/toy/stage2
    accelerate launch --config_file configs/accelerate/single_node.yaml -m genhancer.train --config ...
    torchrun --nproc_per_node 2 -m genhancer.train --config ...          # CPU: 2 ranks on gloo

``train()`` reads setup -> resume -> loop -> finalize inside one ``genhancer.session.training_session``
(accelerate + DeepSpeed: ``train.deepspeed`` ZeRO-2 by default, ZeRO-3 possible, null = plain accelerate/DDP;
a plain ``python`` run needs no launcher variables). The loop: a torch AdamW, constant-with-warmup LR,
gradient accumulation and clipping, bf16 on GPU / fp32 on CPU. The run directory gets the resolved
``config.yaml``, ``metrics.jsonl``, tensorboard events (``tb/``), ``checkpoints/step-NNNNNN/`` (safetensors +
JSON, see ``genhancer.checkpoint``) with a ``latest`` pointer, the stage output ``final/``
(``GenHancerModel.save_pretrained`` + provenance), ``summary.json`` and, for a stage that tunes the encoder,
``sweep/step-NNNNNN/`` (its LoRA at ``schedule.<stage>.eval_at``). ``train.resume=auto`` continues from the
newest complete checkpoint (verified against its manifest first; interrupted saves are removed): weights,
optimizer, scheduler, RNG and data position. A non-finite loss stops the run before the bad update is
applied; the last good checkpoint stays as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from genhancer.cache import training_stream
from genhancer.checkpoint import (
    STEP_RE,
    CheckpointWriter,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.data import Batch, ImageStream
from genhancer.session import Session, training_session
from genhancer.stages import STAGES, make_optimizer
from genhancer.utils.checkpoints import resume_point, stop_if_not_finite, verify_on_all_ranks
from genhancer.utils.cli import add_config_arguments, config_from_args, entry_point
from genhancer.utils.config import config_hash, dump_yaml, to_dict
from genhancer.utils.errors import ConfigError, TrainingDiverged
from genhancer.utils.fsio import drop_lines_after_step, read_json, write_json
from genhancer.utils.images import merge_skipped
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import read_provenance

log = get_logger("genhancer.train")

SWEEP_DIR = "sweep"  # <run_dir>/sweep/step-NNNNNN: encoder snapshots at schedule.<stage>.eval_at

DEFAULT_CONFIG = "configs/genhancer/toy.yaml"  # the embedded default: the toy world


# ------------------------------------------------------------------------------------------------ meters
class RunningMean:
    """Mean of the values added since the last reset (the loss of one logging window)."""

    def __init__(self) -> None:
        self.reset()

    def add(self, value: float) -> None:
        self.total += float(value)
        self.count += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


class Throughput:
    """Items per second since the last reset (images/s of one logging window, or of the whole loop)."""

    def __init__(self) -> None:
        self.reset()

    def add(self, n: int) -> None:
        self.items += n

    @property
    def seconds(self) -> float:
        return time.time() - self.t0

    @property
    def rate(self) -> float:
        return self.items / max(self.seconds, 1e-9)

    def reset(self) -> None:
        self.items, self.t0 = 0, time.time()


# --------------------------------------------------------------------------------------------------- run
@dataclass
class _Run:
    """What one stage trains with, and where it is (``step``: optimizer steps done)."""

    cfg: GenHancerConfig
    session: Session
    model: Any  # as prepared: DeepSpeed engine, DDP wrapper or the module
    inner: Any  # the GenHancerModel itself
    optimizer: Any
    scheduler: Any
    stream: ImageStream
    lineage: dict[str, Any]
    trainable: list[torch.nn.Parameter] = field(init=False)
    step: int = 0
    resumed_from: Path | None = None

    def __post_init__(self) -> None:
        self.trainable = [p for p in self.inner.parameters() if p.requires_grad]

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.train.run_dir)

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def steps(self) -> int:
        return self.cfg.current_schedule.steps

    @property
    def keep_encoder_at(self) -> set[int]:
        """Steps whose encoder LoRA is kept for a validation sweep (stages that tune the encoder only)."""
        if not self.inner.encoder.has_lora:
            return set()
        return {s for s in self.cfg.current_schedule.eval_at if s <= self.steps}

    @property
    def images_per_step(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.grad_accum * self.session.group.world_size

    @property
    def images_seen(self) -> int:
        return self.step * self.images_per_step


def train(cfg: GenHancerConfig) -> dict[str, Any]:
    """Run one stage as configured; returns the summary (also written to ``run_dir/summary.json``)."""
    t_start = time.time()
    _check_whitening(cfg)  # before any process group, model or data is set up
    with training_session(cfg.train) as session, ExitStack() as closing:
        # the run's objects live in _stage's frame: gone before the session destroys the process group
        return _stage(cfg, session, closing, t_start)


def _stage(cfg: GenHancerConfig, session: Session, closing: ExitStack, t_start: float) -> dict[str, Any]:
    run = _setup(cfg, session, closing)
    _resume(run)
    first = run.step
    report = _Report(run, closing)
    _loop(run, report, _sample_log(run, closing))
    return _finalize(run, report, t_start, trained=run.step > first)


# ------------------------------------------------------------------------------------------------- setup
def _setup(cfg: GenHancerConfig, session: Session, closing: ExitStack) -> _Run:
    """The model (built, prepared), AdamW, the warmup schedule and this rank's batches."""
    from genhancer.module import GenHancerModel  # local: heavy (pulls transformers, diffusers)

    schedule, group = cfg.current_schedule, session.group
    if group.is_main:
        Path(cfg.train.run_dir).mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, Path(cfg.train.run_dir) / "config.yaml")
    log.info(
        "stage %s: %d steps, lr %g (encoder %s), warmup %d, batch %d x %d proc x accum %d, %s, ZeRO-%s, %s",
        cfg.stage,
        schedule.steps,
        schedule.lr,
        schedule.encoder_lr or "the same",
        schedule.warmup_steps,
        cfg.train.batch_size,
        group.world_size,
        cfg.train.grad_accum,
        session.device,
        session.zero_stage or "off",
        session.accelerator.mixed_precision,
    )
    # the same seed on every rank while building, so fresh modules start identical everywhere
    torch.manual_seed(cfg.train.seed)
    with session.building():
        model = GenHancerModel.build(cfg)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"stage {cfg.stage!r} leaves no trainable parameters")
    # the scheduler is stepped by us once per optimizer step (accelerate's wrapper would step it per process)
    optimizer, scheduler = make_optimizer(model, cfg)
    model, optimizer = session.accelerator.prepare(model, optimizer)
    stream = _batches(cfg, session, session.accelerator.unwrap_model(model))
    closing.callback(stream.close)
    if cfg.conditioning.whiten and not cfg.init_from:
        _fit_whitening(stream, session.accelerator.unwrap_model(model))
    return _Run(
        cfg,
        session,
        model,
        session.accelerator.unwrap_model(model),
        optimizer,
        scheduler,
        stream,
        lineage=_lineage(cfg),
    )


def _fit_whitening(stream: ImageStream, model: torch.nn.Module) -> None:
    """``conditioning.whiten``: the whitening of the global token, fitted on every token of stage 1's feature
    cache (the same on every rank); a later stage loads it from ``init_from`` with the conditioner."""
    # a CachedStream: _check_whitening admitted only frozen-encoder stages with cache.enabled
    count, total, outer = stream.cache.moments("global_token")
    model.conditioner.fit_whitening(count, total, outer)
    log.info("conditioning.whiten: fitted on %d cached global tokens", count)


def _batches(cfg: GenHancerConfig, session: Session, model: torch.nn.Module) -> ImageStream:
    """The training batches of this rank: an endless, resumable stream (``state_dict``/``load_state_dict``,
    ``epoch``, ``skipped``) of ``Batch``es — images cropped and normalised for the encoder, or the stage-1
    feature cache (``cache.enabled`` with a frozen encoder; built here on first use)."""
    group = session.group
    return training_stream(
        cfg,
        model,
        rank=group.rank,
        world_size=group.world_size,
        barrier=group.barrier,
        device=session.device,
        input_dtype=session.input_dtype,
    )


def _check_whitening(cfg: GenHancerConfig) -> None:
    """``conditioning.whiten`` without ``init_from`` is fitted on this stage's feature cache: that needs a
    frozen encoder and ``cache.enabled``; say which is missing and how to fix it."""
    if not cfg.conditioning.whiten or cfg.init_from:
        return
    if STAGES[cfg.stage].encoder != "frozen":
        raise ConfigError(
            "conditioning.whiten needs a fixed whitening, fitted on a frozen encoder's tokens, but stage "
            f"{cfg.stage!r} trains the encoder from the start: run stage1 with conditioning.whiten=true and "
            "start this stage from it (init_from=<stage1 run>/final), or set conditioning.whiten=false"
        )
    if not cfg.cache.enabled:
        raise ConfigError(
            "conditioning.whiten is fitted on stage 1's feature cache: set cache.enabled=true (a stage that "
            "starts from init_from loads it instead)"
        )


# ------------------------------------------------------------------------------------------------ resume
def _resume(run: _Run) -> None:
    """Continue from ``train.resume``'s checkpoint: weights, optimizer, scheduler, data position, RNG."""
    cfg, session, group = run.cfg, run.session, run.session.group
    source = _resume_source(cfg, run.ckpt_root)
    if source is None:
        torch.manual_seed(cfg.train.seed + group.rank)  # per-rank noise from here on
        return
    _check_lineage(source, run.lineage)
    ck = read_checkpoint(
        source,
        rank=group.rank,
        world_size=group.world_size,
        optimizer_fallback=session.optimizer_state(run.optimizer),
    )
    with session.gathered(run.trainable, modifier_rank=0):
        run.inner.load_trainable_state_dict(ck["model"])
    session.load_optimizer_state(run.optimizer, ck["rank"]["optimizer"])
    wanted = list(run.scheduler.base_lrs)
    run.scheduler.load_state_dict(ck["scheduler"])
    _keep_config_lrs(run.scheduler, wanted)
    run.stream.load_state_dict(ck["rank"]["data"])
    set_rng_state(ck["rank"]["rng"])
    run.step, run.resumed_from = int(ck["meta"]["step"]), source
    log.info(
        "resumed from %s at step %d (data epoch %d, index %d)",
        source,
        run.step,
        run.stream.epoch,
        run.stream.index,
    )


# -------------------------------------------------------------------------------------------------- loop
def _loop(run: _Run, report: _Report, samples: IO[str] | None) -> None:
    batches = iter(run.stream)
    while run.step < run.steps:
        loss, grad_norm = _optimizer_step(run, batches, samples)
        report.step_done(loss, grad_norm)
        if run.step in run.keep_encoder_at:
            _keep_encoder(run)
        if run.step % run.cfg.train.save_every == 0 or run.step == run.steps:
            _save(run)
    report.close()


def _keep_encoder(run: _Run) -> Path:
    """The encoder's LoRA of this step as ``<run_dir>/sweep/step-NNNNNN`` (schedule.<stage>.eval_at), for a
    validation sweep over stage-2 lengths (every rank calls this)."""
    out = run.run_dir / SWEEP_DIR / f"step-{run.step:06d}"
    with run.session.gathered(list(run.inner.encoder.parameters())):
        if run.session.group.is_main:
            run.inner.save_pretrained(out, extra={"steps": run.step}, encoder_only=True)
    run.session.group.barrier()
    return out


def _optimizer_step(run: _Run, batches: Iterator[Batch], samples: IO[str] | None) -> tuple[torch.Tensor, Any]:
    """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss [], grad norm or None)."""
    accelerator, accum = run.session.accelerator, run.cfg.train.grad_accum
    step_loss = torch.zeros((), device=accelerator.device)
    grad_norm = None
    for _ in range(accum):
        batch = next(batches)
        if samples is not None:
            samples.write(
                json.dumps({"step": run.step + 1, "rank": run.session.group.rank, "keys": batch.keys}) + "\n"
            )
            samples.flush()
        with accelerator.accumulate(run.model):
            loss = _loss(run, batch)
            stop_if_not_finite(
                loss,
                step=run.step + 1,
                last_good=lambda: latest_checkpoint(run.ckpt_root),
                hint="lower schedule.<stage>.lr or raise warmup_steps, then rerun with train.resume=auto",
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(run.trainable, run.cfg.train.grad_clip)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        step_loss += loss.detach().float() / accum
    run.scheduler.step()
    run.step += 1
    return step_loss, grad_norm


def _loss(run: _Run, batch: Batch) -> torch.Tensor:
    """The flow-matching loss [] of one micro-batch: pixels (encoder input + target crop), or cached
    features."""
    return run.model(**batch.model_inputs(run.session.device, run.session.input_dtype))["loss"]


class _Report:
    """Per-step bookkeeping: running loss, throughput, the progress bar, ``metrics.jsonl`` and tensorboard
    (rank 0 writes; every rank joins the loss mean). A resumed run first drops the lines after its step."""

    def __init__(self, run: _Run, closing: ExitStack) -> None:
        self.run, self.tb = run, None
        if run.session.group.is_main:
            drop_lines_after_step(run.run_dir / "metrics.jsonl", run.step)
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run.run_dir / "tb"), purge_step=run.step if run.step else None)
            closing.callback(self.tb.close)
        self.bar = progress(
            total=run.steps, initial=run.step, desc=f"{run.cfg.name}/{run.cfg.stage}", unit="step"
        )
        self.loss, self.window, self.loop = RunningMean(), Throughput(), Throughput()
        self.last_loss, self.train_s = float("nan"), 0.0

    def step_done(self, step_loss: torch.Tensor, grad_norm: Any) -> None:
        self.loss.add(float(step_loss))
        self.window.add(self.run.images_per_step)
        self.loop.add(self.run.images_per_step)
        self.bar.update(1)
        if self.run.step % self.run.cfg.train.log_every == 0 or self.run.step == self.run.steps:
            self._log(grad_norm)

    def _log(self, grad_norm: Any) -> None:
        run = self.run
        self.last_loss = run.session.group.mean(self.loss.mean)
        record = {
            "step": run.step,
            "loss": self.last_loss,
            "lr": run.scheduler.get_last_lr()[0],
            "images_per_s": self.window.rate,
            "images_seen": run.images_seen,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "epoch": run.stream.epoch,
            "skipped_images": run.stream.skipped,
            "time": time.time(),
        }
        if self.tb is not None:  # rank 0
            with (run.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            for k in ("loss", "lr", "images_per_s", "grad_norm"):
                if record[k] is not None:
                    self.tb.add_scalar(f"train/{k}", record[k], run.step)
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{record['images_per_s']:.1f}")
        self.loss.reset()
        self.window.reset()

    def close(self) -> None:
        self.bar.close()
        self.train_s = self.loop.seconds

    @property
    def images_per_s(self) -> float | None:
        return self.loop.items / self.train_s if self.train_s > 0 and self.loop.items else None


def _sample_log(run: _Run, closing: ExitStack) -> IO[str] | None:
    """``train.debug_log_samples``: ``debug/samples-rankNNNNN.jsonl``, the sample keys of every step."""
    if not run.cfg.train.debug_log_samples:
        return None
    (run.run_dir / "debug").mkdir(parents=True, exist_ok=True)
    return closing.enter_context(
        (run.run_dir / "debug" / f"samples-rank{run.session.group.rank:05d}.jsonl").open("a")
    )


def _save(run: _Run) -> Path:
    """A collective checkpoint of the current step (every rank calls this)."""
    session, group = run.session, run.session.group

    def model_state() -> dict[str, torch.Tensor]:
        with session.gathered(run.trainable):
            return {k: v.detach().clone() for k, v in run.inner.trainable_state_dict().items()}

    writer = CheckpointWriter(
        run.ckpt_root,
        rank=group.rank,
        world_size=group.world_size,
        keep=run.cfg.train.keep_checkpoints,
    )
    path = writer.write(
        run.step,
        meta={
            "stage": run.cfg.stage,
            "zero_stage": session.zero_stage,
            "images_seen": run.images_seen,
            "lineage": run.lineage,
        },
        model_state=model_state,
        scheduler_state=run.scheduler.state_dict(),
        rank_state={
            "optimizer": session.optimizer_state(run.optimizer),
            "rng": rng_state(),
            "data": run.stream.state_dict(),
        },
    )
    log.info("checkpoint %s", path)
    return path


# ------------------------------------------------------------------------------------------------- final
def _finalize(run: _Run, report: _Report, t_start: float, trained: bool) -> dict[str, Any]:
    """Write ``final/`` (the stage output, with provenance) and ``summary.json``; return the summary. A rerun
    that trained nothing keeps both when ``final/`` already holds this run's last step."""
    from genhancer.module import random_init_marks  # local: heavy (pulls transformers, diffusers)

    session, group = run.session, run.session.group
    final = run.run_dir / "final"
    extra = {"steps": run.step, "run_dir": str(run.run_dir)}
    kept = not trained and group.sum(group.is_main and _holds(final, run.cfg, extra)) == 1
    if kept:
        # a rerun of a finished stage: final/ and summary.json stay as they were, so the runs started from it
        # (init_from: their checkpoints record its creation time) still resume
        log.info("%s already holds step %d of this run: kept, nothing to train", final, run.step)
    else:
        with session.gathered(list(run.inner.parameters())):
            if group.is_main:  # writes final/ atomically, with provenance.json (parents: encoder, init_from)
                run.inner.save_pretrained(final, extra=extra)
        group.barrier()
    summary = {
        "stage": run.cfg.stage,
        "steps": run.step,
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
        "world_size": group.world_size,
        "zero_stage": session.zero_stage,
        "mixed_precision": session.accelerator.mixed_precision,
        "batch_per_step": run.images_per_step,
        "wall_s": time.time() - t_start,
        "train_s": report.train_s,
        "images_per_s": report.images_per_s,
        "final_loss": report.last_loss if math.isfinite(report.last_loss) else None,
        "skipped_images": int(group.sum(run.stream.skipped)),
        # each unusable file once, with its reason (genhancer.utils.images), whichever rank met it
        "skipped_files": merge_skipped(group.gather_lists(run.stream.skipped_files.as_list())),
        "final": str(final),
        **random_init_marks(run.cfg),
    }
    if kept and group.is_main and (run.run_dir / "summary.json").is_file():
        return read_json(run.run_dir / "summary.json")
    if group.is_main:
        write_json(run.run_dir / "summary.json", summary)
        log.info("done: %s", json.dumps(summary))
    return summary


def _holds(final: Path, cfg: GenHancerConfig, extra: dict[str, Any]) -> bool:
    """Whether ``final/`` is this run's output at this step, with this config (its provenance says so)."""
    prov = read_provenance(final) or {}
    saved = prov.get("extra") or {}
    same_config = prov.get("config_hash") == config_hash(to_dict(cfg))
    return same_config and all(saved.get(k) == v for k, v in extra.items())


def _keep_config_lrs(scheduler: Any, wanted: list[float]) -> None:
    """A resumed run learns at its config's rate. The checkpoint's scheduler and optimizer states restore the
    rate they were saved with, which would drop a changed ``schedule.<stage>.lr`` without a word."""
    saved = list(scheduler.base_lrs)
    if saved == wanted:
        return
    log.warning(
        "schedule lr changed since the checkpoint (%s -> %s): continuing at the config's", saved, wanted
    )
    scheduler.base_lrs = wanted
    for group, base, factor in zip(scheduler.optimizer.param_groups, wanted, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _resume_source(cfg: GenHancerConfig, ckpt_root: Path) -> Path | None:
    """The checkpoint to resume from, verified against its manifest (collective: every rank calls it)."""
    choice = cfg.train.resume
    if choice == "never":
        if list_checkpoints(ckpt_root):
            log.warning("train.resume=never but %s holds checkpoints; they will be replaced", ckpt_root)
        return None
    if choice == "auto":
        return resume_point(ckpt_root, STEP_RE, log)
    path = Path(choice)
    if not (path / "meta.json").is_file():
        raise ConfigError(
            f"train.resume: {choice!r} is not a checkpoint directory (expected meta.json inside); "
            "use auto, never or a checkpoints/step-NNNNNN path"
        )
    verify_on_all_ranks(path)
    return path


def _lineage(cfg: GenHancerConfig) -> dict[str, Any]:
    """What a checkpoint was trained from: its stage and the stage-1 output it started from (if any)."""
    from genhancer.module import resolve_stage_dir  # local: heavy (pulls transformers, diffusers)

    parent = None
    if cfg.init_from:
        d = resolve_stage_dir(cfg.init_from, what="init_from")
        prov = read_provenance(d) or {}
        parent = {
            "path": str(d.resolve()),
            "created": prov.get("created"),
            "config_hash": prov.get("config_hash"),
        }
    return {"stage": cfg.stage, "init_from": parent}


def _check_lineage(checkpoint: Path, lineage: dict[str, Any]) -> None:
    """Refuse to resume from checkpoints of another stage, or trained on top of another stage-1 output
    (e.g. stage 1 was retrained since): resuming them would silently mix two runs."""
    saved = read_json(checkpoint / "meta.json").get("lineage")
    if saved is None or saved == lineage:
        return
    raise ConfigError(
        f"{checkpoint} was trained from {saved}, but this run starts from {lineage}; "
        f"remove {checkpoint.parent.parent} (or set another train.run_dir, or train.resume=never) "
        "to start afresh"
    )


# --------------------------------------------------------------------------------------------------- CLI
@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.train", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, default=DEFAULT_CONFIG)
    cfg = config_from_args(load_genhancer_config, parser.parse_args(argv))
    train(cfg)
    return 0


__all__ = ["RunningMean", "Throughput", "TrainingDiverged", "main", "train"]

if __name__ == "__main__":
    raise SystemExit(main())

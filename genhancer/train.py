"""Train one GenHancer stage: ``python -m genhancer.train --config configs/genhancer/toy.yaml [key.sub=value ...]``.

    python -m genhancer.train --config configs/genhancer/toy.yaml train.run_dir=runs/toy/stage1
    python -m genhancer.train --config configs/genhancer/toy.yaml stage=stage2 \
        init_from=runs/toy/stage1/final train.run_dir=runs/toy/stage2
    accelerate launch --config_file configs/accelerate/single_node.yaml -m genhancer.train --config ...
    torchrun --nproc_per_node 2 -m genhancer.train --config ...          # CPU: 2 ranks on gloo

The loop: accelerate ``Accelerator`` + DeepSpeed (``train.deepspeed``: ZeRO-2 by default, ZeRO-3 possible,
null = plain accelerate/DDP), a torch AdamW, constant-with-warmup LR, gradient accumulation and clipping,
bf16 on GPU / fp32 on CPU. The run directory gets the resolved ``config.yaml``, ``metrics.jsonl``,
tensorboard events (``tb/``), ``checkpoints/step-NNNNNN/`` (safetensors + JSON, see ``genhancer.checkpoint``)
with a ``latest`` pointer, the stage output ``final/`` (``GenHancerModel.save_pretrained`` + provenance)
and ``summary.json``. ``train.resume=auto`` continues from ``checkpoints/latest``: weights, optimizer,
scheduler, RNG and data position. A non-finite loss stops the run before the bad update is applied; the
last good checkpoint stays as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from genhancer.cache import training_stream
from genhancer.checkpoint import (
    CheckpointWriter,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.utils.cli import entry_point
from genhancer.utils.config import dump_yaml, to_dict
from genhancer.utils.errors import ConfigError, UserError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.logging import get_logger, progress

log = get_logger("genhancer.train")

# DeepSpeed "auto" entries accelerate can only derive from a ``model.config.hidden_size``, which a
# GenHancerModel does not have: these are DeepSpeed's own defaults.
_DS_SIZE_DEFAULTS = {
    "reduce_bucket_size": 500_000_000,
    "allgather_bucket_size": 500_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
}


DEFAULT_CONFIG = "configs/genhancer/toy.yaml"  # the embedded default: the toy world


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the run stopped before applying the update."""


# ------------------------------------------------------------------------------------------------ setup
def resolve_mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def deepspeed_config(cfg: GenHancerConfig) -> dict[str, Any]:
    """Read ``train.deepspeed`` and fill the "auto" entries that belong to our config.

    An explicit value that disagrees with the YAML is an error (one setting, one place).
    """
    path = Path(cfg.train.deepspeed or "")
    if not path.is_file():
        raise ConfigError(f"train.deepspeed: DeepSpeed config {str(path)!r} not found "
                          "(give a JSON file such as configs/deepspeed/zero2.json, or null for plain accelerate)")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    for block in ("optimizer", "scheduler"):
        if block in ds:
            raise ConfigError(f"{path}: remove the '{block}' block; the trainer builds a torch AdamW and the "
                              "LR schedule from the YAML (schedule.<stage>)")
    ours = {
        "train_micro_batch_size_per_gpu": cfg.train.batch_size,
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "gradient_clipping": cfg.train.grad_clip,
    }
    for key, value in ours.items():
        current = ds.get(key, "auto")
        if current == "auto":
            ds[key] = value
        elif float(current) != float(value):
            raise ConfigError(f"{path}: '{key}' is {current} but the run config says {value}; set it to \"auto\"")
    zero = ds.setdefault("zero_optimization", {})
    for key, value in _DS_SIZE_DEFAULTS.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return ds


def build_accelerator(cfg: GenHancerConfig):  # noqa: ANN201 - accelerate.Accelerator
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DeepSpeedPlugin

    # a state left in this interpreter by someone else (a Trainer in a notebook or test) would be reused
    # as is, silently without our DeepSpeed plugin; start from a clean one
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    mixed = resolve_mixed_precision(cfg.train.mixed_precision)
    plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg)) if cfg.train.deepspeed else None
    # [IMPORTANT] cpu=True makes accelerate silently drop DeepSpeed, so it is only set for plain accelerate
    # on a machine without a GPU (then torchrun ranks become a gloo MULTI_CPU group).
    accelerator = Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=cfg.train.grad_accum,
        deepspeed_plugin=plugin,
        cpu=plugin is None and not torch.cuda.is_available(),
    )
    if plugin is not None and accelerator.state.deepspeed_plugin is None:
        raise RuntimeError("accelerate did not enable DeepSpeed although train.deepspeed is set")
    if plugin is not None:
        # DeepSpeed has joined the process group by now; accelerate's own count can lag behind it (CPU ranks)
        world = ProcessGroup().world_size
        plugin.deepspeed_config["train_batch_size"] = cfg.train.batch_size * cfg.train.grad_accum * world
    return accelerator


class ProcessGroup:
    """Rank, world size and collectives straight from torch.distributed.

    [IMPORTANT] On CPU, accelerate + DeepSpeed under torchrun reports one process on every rank (its CPU
    branch is skipped once DeepSpeed is on) while DeepSpeed itself runs on the real gloo group; so rank-aware
    work (data sharding, rank-0 files, metric reduction, barriers) goes through torch.distributed directly.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        import torch.distributed as dist

        self.device = torch.device(device)  # nccl reduces device tensors, gloo CPU ones
        self._dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self._dist.get_rank() if self._dist else 0
        self.world_size = self._dist.get_world_size() if self._dist else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._dist is not None and self.world_size > 1:
            self._dist.barrier()

    def sum(self, value: float) -> float:
        if self._dist is None or self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t)
        return float(t.item())

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size


def zero_stage(accelerator) -> int:  # noqa: ANN001
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def _gathered(params: list[torch.nn.Parameter], enabled: bool, modifier_rank: int | None = None):  # noqa: ANN202
    """ZeRO-3 keeps parameters partitioned: gather them for reading/writing whole tensors."""
    if not enabled:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


@contextmanager
def _without_zero3_init(accelerator) -> Iterator[None]:  # noqa: ANN001
    """No ``deepspeed.zero.Init`` while the HF encoder loads: it cannot partition CLIP's 0-dim ``logit_scale``
    and the frozen encoder fits on one device anyway; ZeRO-3 still partitions the whole model at prepare().

    [IMPORTANT] accelerate's ``zero3_init_context_manager(enable=False)`` re-registers the HF DeepSpeed config
    (so transformers still sees ZeRO-3); unregistering it is what actually turns zero.Init off.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def _unwrapped_optimizer(accelerator, optimizer):  # noqa: ANN001, ANN202
    """The object whose state_dict()/load_state_dict() hold the optimizer state on this rank."""
    if accelerator.state.deepspeed_plugin is not None:
        return optimizer.optimizer  # DeepSpeedOptimizerWrapper -> DeepSpeedZeroOptimizer (partitioned per rank)
    return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer


# ------------------------------------------------------------------------------------------------- train
def train(cfg: GenHancerConfig) -> dict[str, Any]:
    """Run one stage as configured; returns the summary (also written to ``run_dir/summary.json``)."""
    from transformers import get_constant_schedule_with_warmup

    from genhancer.module import GenHancerModel

    t_start = time.time()
    # accelerate flips ACCELERATE_USE_DEEPSPEED on for the whole process; put it back afterwards so a later
    # run in the same interpreter (tests, notebooks) with train.deepspeed=null really runs without it
    prior_use_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    schedule = cfg.current_schedule
    run_dir = Path(cfg.train.run_dir)
    ckpt_root = run_dir / "checkpoints"
    accelerator = build_accelerator(cfg)
    group = ProcessGroup(accelerator.device)
    rank, world = group.rank, group.world_size
    stage3 = zero_stage(accelerator) == 3
    is_main = group.is_main
    writer = None
    stream = None
    try:
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, run_dir / "config.yaml")
        log.info("stage %s: %d steps, lr %g, warmup %d, batch %d x %d proc x accum %d, %s, ZeRO-%s, %s",
                 cfg.stage, schedule.steps, schedule.lr, schedule.warmup_steps, cfg.train.batch_size, world,
                 cfg.train.grad_accum, accelerator.device, zero_stage(accelerator) or "off",
                 accelerator.mixed_precision)

        # the same seed on every rank while building, so fresh modules start identical everywhere
        torch.manual_seed(cfg.train.seed)
        with _without_zero3_init(accelerator):
            model = GenHancerModel.build(cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"stage {cfg.stage!r} leaves no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=schedule.lr, betas=tuple(cfg.train.betas),
                                      weight_decay=cfg.train.weight_decay)
        # stepped by us once per optimizer step (accelerate's wrapper would step it once per process)
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=schedule.warmup_steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        inner = accelerator.unwrap_model(model)
        trainable = [p for p in inner.parameters() if p.requires_grad]

        # images, or the stage-1 feature cache (cache.enabled, frozen encoder; built here on first use)
        stream = training_stream(cfg, inner, rank=rank, world_size=world, barrier=group.barrier,
                                 device=accelerator.device, input_dtype=_input_dtype(accelerator, inner))

        # ----------------------------------------------------------------------------- resume
        step = 0
        lineage = _lineage(cfg)
        resume_from = _resume_source(cfg, ckpt_root)
        if resume_from is not None:
            _check_lineage(resume_from, lineage)
            opt_obj = _unwrapped_optimizer(accelerator, optimizer)
            ck = read_checkpoint(resume_from, rank=rank, world_size=world, optimizer_fallback=opt_obj.state_dict())
            with _gathered(trainable, stage3, modifier_rank=0):
                inner.load_trainable_state_dict(ck["model"])
            opt_state = ck["rank"]["optimizer"]
            if accelerator.state.deepspeed_plugin is not None:
                # rigid ZeRO checkpoint of this rank; fp32 master partitions restored exactly
                opt_obj.load_state_dict([opt_state] * world, load_optimizer_states=True,
                                        load_from_fp32_weights=True)
            else:
                opt_obj.load_state_dict(opt_state)
            scheduler.load_state_dict(ck["scheduler"])
            stream.load_state_dict(ck["rank"]["data"])
            set_rng_state(ck["rank"]["rng"])
            step = int(ck["meta"]["step"])
            log.info("resumed from %s at step %d (data epoch %d, index %d)", resume_from, step,
                     stream.epoch, stream.index)
        else:
            torch.manual_seed(cfg.train.seed + rank)  # per-rank noise from here on
        if is_main:
            _trim_metrics(run_dir / "metrics.jsonl", step)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)

        ckpt_writer = CheckpointWriter(ckpt_root, rank=rank, world_size=world, keep=cfg.train.keep_checkpoints,
                                       barrier=group.barrier)

        def save(at: int) -> Path:
            def model_state() -> dict[str, torch.Tensor]:
                with _gathered(trainable, stage3):
                    return {k: v.detach().clone() for k, v in inner.trainable_state_dict().items()}

            opt_obj = _unwrapped_optimizer(accelerator, optimizer)
            path = ckpt_writer.write(
                at,
                meta={"stage": cfg.stage, "zero_stage": zero_stage(accelerator), "images_seen": images_seen_total,
                      "lineage": lineage},
                model_state=model_state,
                scheduler_state=scheduler.state_dict(),
                rank_state={"optimizer": opt_obj.state_dict(), "rng": rng_state(), "data": stream.state_dict()},
            )
            log.info("checkpoint %s", path)
            return path

        # ------------------------------------------------------------------------------- loop
        sample_log = None
        if cfg.train.debug_log_samples:
            (run_dir / "debug").mkdir(parents=True, exist_ok=True)
            sample_log = (run_dir / "debug" / f"samples-rank{rank:05d}.jsonl").open("a")
        images_per_step = cfg.train.batch_size * cfg.train.grad_accum * world
        images_seen_total = step * images_per_step
        batches = iter(stream)
        bar = progress(total=schedule.steps, initial=step, desc=f"{cfg.name}/{cfg.stage}", unit="step")
        window_loss, window_n, window_t0, window_images = 0.0, 0, time.time(), 0
        loop_t0, loop_images, last_loss = time.time(), 0, float("nan")
        dtype = _input_dtype(accelerator, inner)
        while step < schedule.steps:
            step_loss = torch.zeros((), device=accelerator.device)
            grad_norm = None
            for _ in range(cfg.train.grad_accum):
                batch = next(batches)
                if sample_log is not None:
                    sample_log.write(json.dumps({"step": step + 1, "rank": rank, "keys": batch.keys}) + "\n")
                    sample_log.flush()
                with accelerator.accumulate(model):
                    out = model(**batch.model_inputs(accelerator.device, dtype))  # pixels or cached features
                    loss = out["loss"]
                    _stop_if_not_finite(group, loss, step + 1, ckpt_root)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.train.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach().float() / cfg.train.grad_accum
            scheduler.step()
            step += 1
            images_seen_total += images_per_step
            loop_images += images_per_step
            window_images += images_per_step
            window_loss += float(step_loss)
            window_n += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == schedule.steps:
                mean_loss = group.mean(window_loss / window_n)
                dt = max(time.time() - window_t0, 1e-9)
                last_loss = mean_loss
                record = {
                    "step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                    "images_per_s": window_images / dt, "images_seen": images_seen_total,
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    "epoch": stream.epoch, "skipped_images": stream.skipped, "time": time.time(),
                }
                if is_main:
                    with (run_dir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    for k in ("loss", "lr", "images_per_s", "grad_norm"):
                        if record[k] is not None:
                            writer.add_scalar(f"train/{k}", record[k], step)  # type: ignore[union-attr]
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{record['images_per_s']:.1f}")
                window_loss, window_n, window_t0, window_images = 0.0, 0, time.time(), 0
            if step % cfg.train.save_every == 0 or step == schedule.steps:
                save(step)
        bar.close()
        train_s = time.time() - loop_t0
        if sample_log is not None:
            sample_log.close()

        # ----------------------------------------------------------------------------- final
        final = run_dir / "final"
        with _gathered(list(inner.parameters()), stage3):
            if is_main:  # writes final/ atomically, with provenance.json (parents: encoder, init_from)
                inner.save_pretrained(final, extra={"steps": step, "run_dir": str(run_dir)})
        group.barrier()
        skipped = int(group.sum(stream.skipped))
        summary = {
            "stage": cfg.stage, "steps": step, "resumed_from": str(resume_from) if resume_from else None,
            "world_size": world, "zero_stage": zero_stage(accelerator), "mixed_precision": accelerator.mixed_precision,
            "batch_per_step": images_per_step, "wall_s": time.time() - t_start, "train_s": train_s,
            "images_per_s": loop_images / train_s if train_s > 0 and loop_images else None,
            "final_loss": last_loss if math.isfinite(last_loss) else None, "skipped_images": skipped,
            "final": str(final),
        }
        if is_main:
            write_json(run_dir / "summary.json", summary)
            log.info("done: %s", json.dumps(summary))
        return summary
    finally:
        if writer is not None:
            writer.close()
        if stream is not None:
            stream.close()
        _teardown(accelerator)
        if prior_use_deepspeed is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = prior_use_deepspeed


def _input_dtype(accelerator, model: torch.nn.Module) -> torch.dtype:  # noqa: ANN001
    """DeepSpeed bf16 casts the module itself (no autocast): feed it bf16 inputs; otherwise fp32."""
    if accelerator.state.deepspeed_plugin is not None and accelerator.mixed_precision == "bf16":
        return torch.bfloat16
    return torch.float32


def _stop_if_not_finite(group: ProcessGroup, loss: torch.Tensor, step: int, ckpt_root: Path) -> None:
    """All ranks agree (one all-reduce) before anything is updated, so no rank steps on a bad loss."""
    bad = group.sum(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0)
    if bad > 0:
        last = list_checkpoints(ckpt_root)
        where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"loss is {float(loss.detach().float().mean())} at step {step}: training stopped before applying "
            f"the update; {where} (lower schedule.<stage>.lr or raise warmup_steps, then rerun with "
            "train.resume=auto)"
        )


def _resume_source(cfg: GenHancerConfig, ckpt_root: Path) -> Path | None:
    choice = cfg.train.resume
    if choice == "never":
        if list_checkpoints(ckpt_root):
            log.warning("train.resume=never but %s holds checkpoints; they will be replaced", ckpt_root)
        return None
    if choice == "auto":
        return latest_checkpoint(ckpt_root)
    path = Path(choice)
    if not (path / "meta.json").is_file():
        raise ConfigError(f"train.resume: {choice!r} is not a checkpoint directory (expected meta.json inside); "
                          "use auto, never or a checkpoints/step-NNNNNN path")
    return path


def _lineage(cfg: GenHancerConfig) -> dict[str, Any]:
    """What a checkpoint was trained from: its stage and the stage-1 output it started from (if any)."""
    from genhancer.module import resolve_stage_dir
    from genhancer.utils.provenance import read_provenance

    parent = None
    if cfg.init_from:
        d = resolve_stage_dir(cfg.init_from, what="init_from")
        prov = read_provenance(d) or {}
        parent = {"path": str(d.resolve()), "created": prov.get("created"), "config_hash": prov.get("config_hash")}
    return {"stage": cfg.stage, "init_from": parent}


def _check_lineage(checkpoint: Path, lineage: dict[str, Any]) -> None:
    """Refuse to resume from checkpoints of another stage, or trained on top of another stage-1 output
    (e.g. stage 1 was retrained since): resuming them would silently mix two runs."""
    saved = read_json(checkpoint / "meta.json").get("lineage")
    if saved is None or saved == lineage:
        return
    raise ConfigError(
        f"{checkpoint} was trained from {saved}, but this run starts from {lineage}; "
        f"remove {checkpoint.parent.parent} (or set another train.run_dir, or train.resume=never) to start afresh"
    )


def _trim_metrics(path: Path, step: int) -> None:
    """A resumed run drops metric lines from after its checkpoint (the crashed tail is recomputed)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _teardown(accelerator) -> None:  # noqa: ANN001
    """Leave the process clean: end trackers, destroy the process group (gloo aborts at exit otherwise),
    and reset accelerate's process-wide state so another run can start in the same interpreter."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, GradientState

    try:
        if "deepspeed.comm" in sys.modules and dist.is_available() and dist.is_initialized():
            import deepspeed.comm as ds_comm

            ds_comm.destroy_process_group()  # before accelerate's: also drops DeepSpeed's cached group handles
        accelerator.end_training()  # destroys the torch process group if one is left
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


# --------------------------------------------------------------------------------------------------- CLI
@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"YAML instance of the GenHancer config schema (default: {DEFAULT_CONFIG}, the toy world)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. stage=stage2")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    cfg = load_genhancer_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    train(cfg)
    return 0


__all__ = ["TrainingDiverged", "deepspeed_config", "main", "train"]

if __name__ == "__main__":
    raise SystemExit(main())

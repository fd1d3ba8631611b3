"""The accelerate + DeepSpeed session of one training run:
``with training_session(cfg.train) as session: ...``.

Entering: the launcher variables a plain ``python`` process lacks are filled in (DeepSpeed would look for
MPI otherwise), accelerate's process-wide state starts clean, and the ``Accelerator`` gets a
DeepSpeedPlugin built from ``train.deepspeed`` (ZeRO-2/3; null = plain accelerate/DDP). Leaving: the process
group is destroyed, accelerate's state is reset and the environment variables the session or accelerate set
are put back, so another run can follow in the same interpreter (tests, notebooks).

Everything that depends on the ZeRO stage goes through the ``Session``: building modules without
``zero.Init``, gathering partitioned parameters, the optimizer state of this rank, the input dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from genhancer.utils.deepspeed import (
    deepspeed_config,
    destroy_process_group,
    distributed_process,
    resolve_mixed_precision,
)

if TYPE_CHECKING:
    from genhancer.config import TrainConfig


class ProcessGroup:
    """Rank, world size and collectives straight from torch.distributed.

    [IMPORTANT] On CPU, accelerate + DeepSpeed under torchrun reports one process on every rank (its CPU
    branch is skipped once DeepSpeed is on) while DeepSpeed itself runs on the real gloo group; so rank-aware
    work (data sharding, rank-0 files, metric reduction, barriers) goes through torch.distributed directly.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
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

    def gather_lists(self, items: list[Any]) -> list[list[Any]]:
        """Every rank's ``items`` (JSON-like values), in rank order, on every rank."""
        if self._dist is None or self.world_size == 1:
            return [list(items)]
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, list(items))
        return out


@dataclass
class Session:
    """The accelerator of the run and its process group, with the ZeRO-stage-dependent operations."""

    accelerator: Any  # accelerate.Accelerator
    group: ProcessGroup

    @property
    def deepspeed(self) -> bool:
        return self.accelerator.state.deepspeed_plugin is not None

    @property
    def zero_stage(self) -> int:
        plugin = self.accelerator.state.deepspeed_plugin
        return int(plugin.zero_stage) if plugin is not None else 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def input_dtype(self) -> torch.dtype:
        """DeepSpeed bf16 casts the module itself (no autocast): feed it bf16 inputs; otherwise fp32."""
        return (
            torch.bfloat16 if self.deepspeed and self.accelerator.mixed_precision == "bf16" else torch.float32
        )

    @contextmanager
    def building(self) -> Iterator[None]:
        """No ``deepspeed.zero.Init`` while the HF encoder loads: it cannot partition CLIP's 0-dim
        ``logit_scale`` and the frozen encoder fits on one device anyway; ZeRO-3 still partitions the whole
        model at prepare().

        [IMPORTANT] accelerate's ``zero3_init_context_manager(enable=False)`` re-registers the HF DeepSpeed
        config (so transformers still sees ZeRO-3); unregistering it is what actually turns zero.Init off.
        """
        if self.zero_stage != 3:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            self.accelerator.state.deepspeed_plugin.set_deepspeed_weakref()

    def gathered(
        self, params: list[torch.nn.Parameter], modifier_rank: int | None = None
    ) -> AbstractContextManager:
        """ZeRO-3 keeps parameters partitioned: gather them for reading/writing whole tensors."""
        if self.zero_stage != 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """This rank's optimizer state (under DeepSpeed: its ZeRO partition)."""
        return self._unwrapped(optimizer).state_dict()

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        inner = self._unwrapped(optimizer)
        if self.deepspeed:
            # rigid ZeRO checkpoint of this rank; fp32 master partitions restored exactly
            inner.load_state_dict(
                [state] * self.group.world_size, load_optimizer_states=True, load_from_fp32_weights=True
            )
        else:
            inner.load_state_dict(state)

    def _unwrapped(self, optimizer: Any) -> Any:
        """The object whose state_dict()/load_state_dict() hold the optimizer state on this rank."""
        if self.deepspeed:
            return optimizer.optimizer  # DeepSpeedOptimizerWrapper -> DeepSpeedZeroOptimizer (partitioned)
        return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer


@contextmanager
def training_session(train: TrainConfig) -> Iterator[Session]:
    """Start accelerate (+ DeepSpeed) for one run as ``train`` says; leave the process clean afterwards."""
    with distributed_process():
        _reset_accelerate()
        try:
            accelerator = _accelerator(train)
            try:
                yield Session(accelerator, ProcessGroup(accelerator.device))
            finally:
                accelerator.free_memory()  # the engine and its groups go before the process group does
        finally:
            try:
                destroy_process_group()  # gloo aborts at exit otherwise; DeepSpeed's handles go with it
            finally:
                _reset_accelerate()


def _reset_accelerate() -> None:
    """A state left in this interpreter (a Trainer in a notebook or test, an earlier run) would be reused as
    is, silently without our DeepSpeed plugin."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _accelerator(train: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    mixed = resolve_mixed_precision(train.mixed_precision)
    plugin = None
    if train.deepspeed:
        settings = {
            "train_micro_batch_size_per_gpu": train.batch_size,
            "gradient_accumulation_steps": train.grad_accum,
            "gradient_clipping": train.grad_clip,
        }
        plugin = DeepSpeedPlugin(
            hf_ds_config=deepspeed_config(
                train.deepspeed, key="train.deepspeed", settings=settings, torch_optimizer=True
            )
        )
    # [IMPORTANT] cpu=True makes accelerate silently drop DeepSpeed, so it is only set for plain accelerate
    # on a machine without a GPU (then torchrun ranks become a gloo MULTI_CPU group).
    accelerator = Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=train.grad_accum,
        deepspeed_plugin=plugin,
        cpu=plugin is None and not torch.cuda.is_available(),
    )
    if plugin is not None:
        if accelerator.state.deepspeed_plugin is None:
            raise RuntimeError("accelerate did not enable DeepSpeed although train.deepspeed is set")
        # DeepSpeed has joined the process group by now; accelerate's own count can lag behind it (CPU ranks)
        world = ProcessGroup().world_size
        plugin.deepspeed_config["train_batch_size"] = train.batch_size * train.grad_accum * world
    return accelerator


__all__ = ["ProcessGroup", "Session", "training_session"]

"""The paper's recipes at their real shapes, with random weights from the architecture cards (no hub).

Shared by ``benchmarks.paper_estimates`` (parameters, activations and FLOPs of models without weights),
``benchmarks.gpu_check`` (timed steps on a GPU) and the real-shape smoke tests (``tests/paper``):

- GenHancer: ``genhancer_config`` (a ``configs/genhancer`` recipe + ``encoder.init=random
  latent.init=random``), ``build_genhancer`` (``GenHancerModel.build`` on a device, ``meta``: shapes only),
  ``enter_stage`` (the in-memory stage-1 -> stage-2 hand-off), ``synthetic_batch`` (random pixels through the
  training transform), ``sgd_step`` (one step without optimizer state) and ``genhancer_cost``.
- LLaVA: ``llava_config`` (a ``configs/llava`` recipe with ``model.init=random``), ``meta_llava`` /
  ``llava_cost``, and the stand-in tokenizer and records a random-init finetune step trains on.
- ``step_cost``: FLOPs (``torch.utils.flop_counter``) and the bytes autograd saves for backward
  (activations: parameters never, each tensor once however many views of it are saved) of one step on the
  meta device, attention counted as a fused kernel runs it (``FusedAttention``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

REPO = Path(__file__).resolve().parents[1]
GENHANCER_CONFIGS = (
    "openai-clip-l14",
    "openai-clip-l14-336",
    "metaclip-l14",
    "metaclip-h14",
    "siglip-so400m-224",
    "siglip-so400m-384",
)
LLAVA_CONFIGS = ("vicuna-7b", "vicuna-13b")
GENHANCER_RANDOM = ("encoder.init=random", "latent.init=random")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX-512-BF16 or AMX, through oneDNN). Without it
    PyTorch emulates them: a 3072-wide linear layer's forward + backward measured 80 times slower than in fp32
    on an AVX2-only CPU, which turns a real-shape smoke step of a minute into more than an hour."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or custom build without the probe: assume emulation
        return False


def cpu_step_precision() -> str:
    """The precision a real-shape CPU smoke step runs in: the recipes' ``bf16`` where the CPU has it natively,
    else ``fp32`` (about twice the memory: 12.8 GiB instead of 6.8-8.3 for a GenHancer step)."""
    return "bf16" if cpu_has_native_bf16() else "fp32"


# ----------------------------------------------------------------------------------------------- GenHancer
def genhancer_config(name: str | Path, *overrides: str) -> Any:
    """A GenHancer recipe (``configs/genhancer/<name>.yaml`` or a path) with its encoder and VAE random."""
    from genhancer.config import load_genhancer_config

    path = Path(name) if str(name).endswith(".yaml") else REPO / "configs" / "genhancer" / f"{name}.yaml"
    return load_genhancer_config(path, [*GENHANCER_RANDOM, *overrides])


def build_genhancer(cfg: Any, device: str | torch.device = "cpu") -> Any:
    """``GenHancerModel.build(cfg)`` with its parameters created on ``device`` (``meta``: shapes only)."""
    from genhancer.module import GenHancerModel

    with torch.device(device):
        return GenHancerModel.build(cfg)


def enter_stage(model: Any, stage: str) -> dict[str, int]:
    """Apply ``stage`` to the in-memory model (stage 2 attaches the LoRA ``cfg.lora`` names), as a run started
    from this model's stage-1 output would; returns the trainable / frozen counts."""
    from genhancer.stages import STAGES, apply_stage

    model.cfg = dataclasses.replace(model.cfg, stage=stage)
    with torch.device(next(model.parameters()).device):  # new adapters live where the weights do
        return apply_stage(model, STAGES[stage])


def synthetic_batch(model: Any, batch_size: int, seed: int = 0) -> Any:
    """``batch_size`` random crops at the encoder's input size, normalised as the training transform does."""
    from genhancer.data import Batch, CropAndNormalize

    spec = model.encoder_image_spec()
    size = int(spec["image_size"])
    transform = CropAndNormalize(size, spec["mean"], spec["std"])
    crops = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=_gen(seed))
    pixels, target = transform.normalise(crops)  # (B, 3, S, S) each
    return Batch(pixels, target, keys=[f"synthetic/{i}" for i in range(batch_size)])


@dataclass
class StepResult:
    loss: float
    trainable: set[str]  # parameters the stage trains
    with_grad: set[str]  # parameters that received a gradient
    changed: set[str] = field(default_factory=set)  # trainable parameters the update visibly moved (fp32)


def sgd_step(model: Any, batch: Any, lr: float = 1e-3, dtype: torch.dtype = torch.float32) -> StepResult:
    """One training step of the model's current stage: the trainer's loss on ``batch``, backward, and a plain
    SGD update (no optimizer state: real shapes fit in CPU memory)."""
    device = next(model.parameters()).device
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loss = model(**batch.model_inputs(device, dtype), generator=_gen(0))["loss"]
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    before = {n: p.detach().flatten()[:64].clone() for n, p in trainable.items()}
    torch.optim.SGD(trainable.values(), lr=lr).step()
    changed = {n for n, p in trainable.items() if not torch.equal(before[n], p.detach().flatten()[:64])}
    model.zero_grad(set_to_none=True)
    return StepResult(float(loss.detach()), set(trainable), with_grad, changed)


def genhancer_cost(cfg: Any, stages: Iterable[str], batch_size: int) -> dict[str, dict[str, Any]]:
    """Per stage: parameters, FLOPs and activation bytes of one micro-batch at ``batch_size``, on the meta
    device in bf16 (what DeepSpeed's bf16 trains in)."""
    model = build_genhancer(cfg, "meta").to(torch.bfloat16)
    batch = synthetic_batch(model, batch_size)
    out = {}
    for stage in stages:
        counts = enter_stage(model, stage)
        inputs = batch.model_inputs("meta", torch.bfloat16)
        out[stage] = {**counts, **step_cost(lambda i=inputs: model(**i)["loss"], model.parameters())}
        model.zero_grad(set_to_none=True)
    return out


# --------------------------------------------------------------------------------------------- step cost
class SavedBytes:
    """``saved_tensors_hooks`` that add up what autograd keeps for backward: each tensor (or view base)
    once, parameters never (they are model state, not activations)."""

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self.params = {id(p) for p in params}
        self.seen: dict[int, torch.Tensor] = {}  # kept alive so ids stay unique
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        base = t
        while base._base is not None:
            base = base._base
        if id(base) not in self.params and id(base) not in self.seen:
            self.seen[id(base)] = base
            self.total += base.numel() * base.element_size()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def step_cost(loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor]) -> dict[str, int]:
    """{"flops": forward + backward FLOPs, "activation_bytes": saved for backward} of ``loss_fn()`` on the
    meta device, attention run as a fused kernel runs it (``FusedAttention``)."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = SavedBytes(params)
    with FlopCounterMode(display=False) as flops, FusedAttention():
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            loss = loss_fn()
        loss.backward()
    return {"flops": int(flops.get_total_flops()), "activation_bytes": saved.total}


class FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as a fused kernel computes it. On the meta device PyTorch takes the
    math path, which saves the attention matrix (in fp32); flash / memory-efficient kernels save q, k, v, the
    output and the log-sum-exp only. Calls without a mask, grouped heads or dropout go to the CPU flash
    kernel's op (it has a meta implementation), whose FLOPs are sdpa's (registered below)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        call = {**dict(zip(_SDPA_ARGS, args)), **kwargs}
        if call.get("attn_mask") is not None or call.get("enable_gqa") or call.get("dropout_p", 0.0) > 0:
            return func(*args, **kwargs)  # not what the fused op takes: the math path, as it was
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            call["query"],
            call["key"],
            call["value"],
            0.0,
            bool(call.get("is_causal")),
            scale=call.get("scale"),
        )[0]


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _fused_attention_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _fused_attention_backward_flops(
    grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------- LLaVA
def llava_config(name: str | Path, *overrides: str) -> Any:
    """A LLaVA recipe (``configs/llava/<name>.yaml`` or a path) with ``model.init=random``."""
    from genhancer.utils.config import load_config
    from llava_integration.config import LlavaTrainConfig

    path = Path(name) if str(name).endswith(".yaml") else REPO / "configs" / "llava" / f"{name}.yaml"
    return load_config(LlavaTrainConfig, path, ["model.init=random", *overrides])


def meta_llava(cfg: Any) -> Any:
    """The recipe's ``LlavaForConditionalGeneration`` from the cards on the meta device (no tokenizer: the
    image token takes the id after the card's vocabulary, as the added ``<image>`` token would)."""
    from transformers import LlavaForConditionalGeneration

    from llava_integration.build import inspect_encoder, llava_config, read_text_config, source_dir

    info = inspect_encoder(source_dir(cfg.model, "encoder"))
    text_config = read_text_config(cfg.model)
    with torch.device("meta"):
        return LlavaForConditionalGeneration(
            llava_config(cfg.model, info, text_config, text_config.vocab_size)
        )


def llava_cost(cfg: Any, stage: str, batch_size: int, seq_len: int) -> dict[str, Any]:
    """Parameters per part, FLOPs and activation bytes of one micro-batch of ``stage`` at ``batch_size`` x
    ``seq_len`` tokens (one image each), on the meta device in bf16. With the recipe's gradient checkpointing
    the FLOPs add the decoder layers' recomputed forward and the activations keep each layer's input plus one
    layer's saved tensors."""
    from llava_integration.stages import STAGES, apply_stage

    model = meta_llava(cfg).to(torch.bfloat16)
    counts = apply_stage(model, STAGES[stage], lora=False)
    model.train()
    cost = step_cost(lambda: _llava_loss(model, batch_size, seq_len), model.parameters())
    layers = model.model.language_model.layers
    layer_bytes, layers_forward_flops = _decoder_layer_cost(model, layers[0], batch_size, seq_len)
    if cfg.train.gradient_checkpointing:
        layer_input = batch_size * seq_len * model.config.text_config.hidden_size * 2  # bf16
        cost["flops"] += layers_forward_flops
        cost["activation_bytes"] += len(layers) * (layer_input - layer_bytes) + layer_bytes
    return {"parameters": counts, **cost}


def _llava_loss(model: Any, batch_size: int, seq_len: int) -> torch.Tensor:
    """LlavaForConditionalGeneration's training loss, written out so it runs on the meta device: the image
    features take the first ``image_seq_length`` positions (no data-dependent mask), and the LLM runs with
    its KV cache on (without one, transformers reads position ids' values to find packed sequences)."""
    cfg = model.config
    size = cfg.vision_config.image_size
    pixels = torch.zeros(batch_size, 3, size, size, device="meta", dtype=torch.bfloat16)
    ids = torch.zeros(batch_size, seq_len, device="meta", dtype=torch.long)
    features = model.model.get_image_features(pixels).pooler_output  # the config's layer and strategy
    embeds = model.model.language_model.embed_tokens(ids)
    n = cfg.image_seq_length
    embeds = torch.cat([torch.stack(features), embeds[:, n:]], dim=1)  # (B, S, H)
    hidden = model.model.language_model(inputs_embeds=embeds, use_cache=True).last_hidden_state
    logits = model.lm_head(hidden).float()  # (B, S, V), upcast as the causal-LM loss does
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())


def _decoder_layer_cost(model: Any, layer: Any, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(bytes ``layer`` saves for backward, forward FLOPs of all decoder layers) from one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = SavedBytes(model.parameters())
    inside = [False]

    def pack(t: torch.Tensor) -> torch.Tensor:
        return saved.pack(t) if inside[0] else t

    pre = layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    post = layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    try:
        with FlopCounterMode(display=False) as flops, FusedAttention():
            with torch.autograd.graph.saved_tensors_hooks(pack, saved.unpack):
                _llava_loss(model, batch_size, seq_len)
    finally:
        pre.remove()
        post.remove()
    lm = re.escape(type(model.model.language_model).__name__)  # the counter names modules from the called one
    per_module = flops.get_flop_counts().items()
    forward = sum(sum(ops.values()) for name, ops in per_module if re.fullmatch(rf"{lm}\.layers\.\d+", name))
    return saved.total, int(forward)


# -------------------------------------------------------------------------------- LLaVA finetune steps
WORDS = (
    "the red circle is left of a blue square and a green arrow points up while two yellow stars sit "
    "above three small triangles near the bottom right corner of the white picture"
).split()


def write_tokenizer(out: Path) -> Path:
    """A small sentencepiece tokenizer (the LLM card ships none), saved as a fast tokenizer directory."""
    from toyworld.llm import TEMPLATE_TEXT, load_sp_tokenizer, train_sentencepiece

    texts = [TEMPLATE_TEXT] * 50 + [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 8
    train_sentencepiece(texts, out, vocab_size=400)
    load_sp_tokenizer(out).save_pretrained(out)
    return out


def write_records(out: Path, n: int, words: int, image_size: int = 64) -> Path:
    """``n`` LLaVA finetune records (an image and a ~``words``-word answer each) in ``out/llava.json``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rel = f"images/{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)).save(out / rel)
        answer = " ".join(WORDS[j % len(WORDS)] for j in range(i, i + words))
        turns = [
            {"from": "human", "value": "<image>\nDescribe the picture."},
            {"from": "gpt", "value": answer},
        ]
        records.append({"id": str(i), "image": rel, "conversations": turns})
    (out / "llava.json").write_text(json.dumps(records))
    return out / "llava.json"


def finetune_overrides(work: Path, tokenizer: Path, data: Path, steps: int, batch_size: int) -> list[str]:
    """Overrides that make a recipe's finetune stage a short random-init run in ``work`` (no checkpoints)."""
    return [
        "stage=finetune",
        f"model.tokenizer={tokenizer}",
        f"run_dir={work / 'run'}",
        f"finetune.init_from={work / 'assembled'}",
        f"finetune.data.path={data}",
        f"finetune.data.image_root={data.parent}",
        "finetune.data.num_workers=0",
        f"finetune.max_steps={steps}",
        f"finetune.per_device_batch_size={batch_size}",
        "finetune.save_steps=0",
        "train.report_to=[]",
        "train.logging_steps=1",
    ]


def llava_finetune(cfg: Any, device: str = "cpu") -> dict[str, Any]:
    """Assemble ``cfg.model`` into ``finetune.init_from`` (random weights drawn on ``device``) and run its
    finetune stage through the project's trainer (``prepare_stage``: DeepSpeed as the recipe says, one
    process); the export is tried and refused.

    Returns the Trainer's loss, the parameters per part, the ZeRO stage, the image tokens of one record, the
    tokens seen, each step's seconds, and the export's refusal."""
    from transformers.integrations import unset_hf_deepspeed_config

    from genhancer.utils.deepspeed import distributed_process
    from genhancer.utils.errors import ModelDirError
    from llava_integration.build import build
    from llava_integration.export import export
    from llava_integration.train import prepare_stage

    init_dir = Path(cfg.finetune.init_from)
    with torch.device(device):
        build(cfg.model, init_dir, seed=cfg.seed)
    timer = _step_timer()
    try:
        with distributed_process():
            run = prepare_stage(cfg, assemble_if_missing=False)
            run.trainer.add_callback(timer)
            result = run.trainer.train()
            try:
                export(run.trainer, cfg, init_dir, run.processor, run.stage_dir / "model", {})
                refusal = None
            except ModelDirError as e:
                refusal = str(e)
    finally:
        unset_hf_deepspeed_config()  # the next model in this process must not be built under zero.Init
        _restore_linear()
    ids = run.dataset[0]["input_ids"]
    return {
        "loss": float(result.training_loss),
        "parameters": run.counts,
        "zero_stage": run.trainer.accelerator.state.deepspeed_plugin.zero_stage
        if run.trainer.is_deepspeed_enabled
        else 0,
        "image_tokens": int((ids == run.trainer.model.config.image_token_id).sum()),
        "tokens_seen": int(run.trainer.state.num_input_tokens_seen),
        "step_seconds": timer.seconds,
        "export_refused": refusal,
        "config": run.trainer.model.config,
    }


def _restore_linear() -> None:
    """ZeRO-3's ``zero.Init`` replaces ``torch.nn.functional.linear`` for the rest of the process ("this will
    persist unless manually reset", says DeepSpeed); put the original back so later models in this process
    (tests) save for backward what they would alone."""
    from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as ZeroInit

    torch.nn.functional.linear = getattr(ZeroInit, "linear_bk", torch.nn.functional.linear)


def _step_timer() -> Any:
    import time

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall seconds of every optimizer step (the first includes DeepSpeed's lazy set-up)."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            self.seconds.append(time.perf_counter() - self.t0)

    return StepTimer()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()

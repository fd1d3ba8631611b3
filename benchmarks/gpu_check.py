"""One GPU check of the paper recipes at their real shapes (random weights from the architecture cards): one
JSON of measured speed and memory, in about 10 minutes on one H200.

    python -m benchmarks.gpu_check --out gpu_check.json            # on the GPU machine, repository root
    python -m benchmarks.gpu_check --tiny --out /tmp/tiny.json     # the same code on tiny cards, CPU (tests)

- ``genhancer``: stage 1 and stage 2 of ``openai-clip-l14-336.yaml`` through the trainer's own set-up and
  optimizer step (``genhancer.train``: DeepSpeed ZeRO-2, bf16, AdamW, the image-folder stream) at batch 16:
  seconds per iteration, peak memory, achieved TFLOP/s (FLOPs counted on the meta device).
- ``llava``: the finetune stage of ``vicuna-7b.yaml`` (ZeRO-3 on one GPU) at sequence 2048, with sdpa and,
  when installed, flash-attention-2: tokens/s and MFU (``--peak-tflops``, default the GPU's bf16 dense peak).
- ``lmms_adapter``: the ``genhancer_llava`` lmms-eval adapter on that (random-weight) LLaVA, toy tasks, batch
  1 / 8 / 32: samples/s.

A section that fails records its error and the next one runs; sections past ``--budget-s`` are skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from benchmarks.paper_shapes import (
    finetune_overrides,
    genhancer_config,
    genhancer_cost,
    llava_config,
    llava_cost,
    llava_finetune,
    write_records,
    write_tokenizer,
)

GENHANCER = "openai-clip-l14-336"
LLAVA = "vicuna-7b"
LMMS_TASKS = ["toy_mmvp", "toy_pope", "toy_cv_bench"]
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense, per GPU (vendor data sheets)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {"device": _device_name(), "tiny": args.tiny, "torch": torch.__version__}
    report["peak_tflops"] = args.peak_tflops or PEAK_BF16_TFLOPS.get(_gpu_kind(report["device"]))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        shapes = _Shapes(args, Path(tmp))
        sections: dict[str, Callable[[], dict[str, Any]]] = {
            "genhancer": shapes.genhancer,
            "llava": lambda: shapes.llava(report["peak_tflops"]),
            "lmms_adapter": shapes.lmms_adapter,
        }
        for name, run in sections.items():
            report[name] = _section(run, started, args.budget_s)
    report["wall_s"] = time.perf_counter() - started
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    parser.add_argument("--tiny", action="store_true", help="tiny cards, CPU-sized: checks the script itself")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per measurement (default 8; tiny 2)"
    )
    parser.add_argument("--llava-batch", type=int, default=None, help="per-device LLaVA batch (4; tiny 2)")
    parser.add_argument("--llava-layers", type=int, default=None, help="LLM decoder layers (default: all)")
    parser.add_argument(
        "--llava-optim", default=None, help="transformers optimizer (default: the recipe's AdamW)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: by GPU)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip sections that start after this")
    return parser


def _section(run: Callable[[], dict[str, Any]], started: float, budget_s: float) -> dict[str, Any]:
    """One section's results, or why there are none (over budget, or its error)."""
    t0 = time.perf_counter()
    if t0 - started > budget_s:
        return {"skipped": f"over the {budget_s:.0f} s budget"}
    try:
        return {**run(), "wall_s": time.perf_counter() - t0}
    except Exception as e:  # one failed section must not hide the figures of the others
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _Shapes:
    """The three measurements, at paper shapes or (``--tiny``) on tiny cards written to ``work``."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.steps = args.steps or (2 if args.tiny else 8)
        self.llava_batch = args.llava_batch or (2 if args.tiny else 4)
        self.cards = _tiny_cards(work / "cards") if args.tiny else None
        self.llava_dir: Path | None = None  # the assembled LLaVA the adapter section evaluates

    # -- GenHancer -----------------------------------------------------------------------------------
    def genhancer(self) -> dict[str, Any]:
        images = _write_images(self.work / "images", n=64 if not self.args.tiny else 8, size=400)
        common = ["data.source=folder", f"data.path={images}", *self._genhancer_overrides()]
        stage1 = genhancer_config(GENHANCER, *common, f"train.run_dir={self.work / 'stage1'}")
        cost = genhancer_cost(stage1, ("stage1", "stage2"), stage1.train.batch_size)
        final = self.work / "stage1" / "final"
        out = {
            "config": GENHANCER,
            "batch_size": stage1.train.batch_size,
            "grad_accum": stage1.train.grad_accum,
        }
        out["stage1"] = _time_stage(stage1, self.steps, cost["stage1"]["flops"], save_to=final)
        stage2 = genhancer_config(
            GENHANCER, *common, "stage=stage2", f"init_from={final}", f"train.run_dir={self.work / 'stage2'}"
        )
        out["stage2"] = _time_stage(stage2, self.steps, cost["stage2"]["flops"])
        out["precision"] = out["stage1"].pop("precision")
        out["stage2"].pop("precision")
        return out

    def _genhancer_overrides(self) -> list[str]:
        base = ["train.batch_size=16", "train.grad_accum=1", "train.log_every=1000000", "cache.enabled=false"]
        if not self.args.tiny:
            return [*base, "data.num_workers=8"]
        return [
            f"encoder.path={self.cards['clip']}",
            f"latent.vae_path={self.cards['vae']}",
            "latent.vae_subfolder=null",
            "denoiser.preset=toy",
            "train.batch_size=2",
            "train.grad_accum=1",
            "train.mixed_precision=auto",
            "train.log_every=1000000",
            "data.num_workers=0",
        ]

    # -- LLaVA ---------------------------------------------------------------------------------------
    def llava(self, peak_tflops: float | None) -> dict[str, Any]:
        tok = write_tokenizer(self.work / "tokenizer")
        seq = 256 if self.args.tiny else 2048
        data = write_records(self.work / "records", n=self.llava_batch * (self.steps + 2), words=seq * 2)
        out: dict[str, Any] = {"config": LLAVA, "seq_len": seq, "batch_size": self.llava_batch}
        for attn in ("sdpa", "flash_attention_2"):
            if attn == "flash_attention_2" and not _flash_attention_2():
                out[attn] = {"skipped": "flash-attn is not installed (or no CUDA)"}
                continue
            cfg = self._llava_cfg(tok, data, seq, attn)
            out[attn] = _time_llava(cfg, peak_tflops, seq)
            self.llava_dir = Path(cfg.finetune.init_from)
        out["layers"] = self.args.llava_layers or "all"
        return out

    def _llava_cfg(self, tok: Path, data: Path, seq: int, attn: str) -> Any:
        work = self.work / f"llava-{attn}"
        over = [
            *finetune_overrides(work, tok, data, self.steps + 1, self.llava_batch),
            f"finetune.data.max_length={seq}",
            f"model.attn_implementation={attn}",
        ]
        if self.args.llava_layers:
            over.append(f"model.llm_layers={self.args.llava_layers}")
        if self.args.llava_optim:
            over.append(f"finetune.optim={self.args.llava_optim}")
        if self.args.tiny:
            over += [f"model.encoder={self.cards['clip']}", f"model.llm={self.cards['llm']}"]
        return llava_config(LLAVA, *over)

    # -- lmms-eval adapter ---------------------------------------------------------------------------
    def lmms_adapter(self) -> dict[str, Any]:
        from eval.lmms import inprocess, suites
        from toyworld.lmms_data import write_lmms_data

        if self.llava_dir is None:
            return {"skipped": "no assembled LLaVA (the llava section did not run)"}
        world = self.work / "world"
        write_lmms_data(
            world / "lmms", seed=0, image_size=64, mmvp_pairs_per_pattern=4, pope_images_per_split=8
        )
        tasks = (
            LMMS_TASKS[:1] if self.args.tiny else LMMS_TASKS
        )  # each evaluation re-indexes lmms-eval's tasks
        include, names = suites.write_include_dir(tasks, self.work / "include", toy_data=world)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = inprocess.load_genhancer_llava(self.llava_dir, 1, device)
        out: dict[str, Any] = {"model": str(self.llava_dir), "tasks": names}
        if not self.args.tiny:
            inprocess.evaluate_instance(model, names, include, 2)  # warm-up: kernels, allocator
        for batch in (1, 8, 32):
            model.batch_size_per_gpu = batch
            run = inprocess.evaluate_instance(model, names, include, 4 if self.args.tiny else 32)
            out[f"batch_{batch}"] = {
                "samples": run.n_samples,
                "samples_per_s": run.n_samples / run.seconds,
                "model_samples_per_s": run.n_samples / max(run.model_seconds, 1e-9),
            }
        return out


# ------------------------------------------------------------------------------------------------ timing
def _time_stage(
    cfg: Any, steps: int, flops_per_micro_batch: int, save_to: Path | None = None
) -> dict[str, Any]:
    """Seconds per optimizer step of ``cfg``'s stage through the trainer's set-up and step (one warm-up
    step first), the peak memory of the timed steps, and the TFLOP/s that makes."""
    from genhancer.session import training_session
    from genhancer.train import _optimizer_step, _setup  # the trainer's own pieces, without its saving

    with training_session(cfg.train) as session, ExitStack() as closing:
        run = _setup(cfg, session, closing)
        batches = iter(run.stream)
        _optimizer_step(run, batches, None)
        _reset_peak()
        seconds, losses = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss, _ = _optimizer_step(run, batches, None)
            losses.append(float(loss))
            _sync()
            seconds.append(time.perf_counter() - t0)
        peak = _peak_gib()
        if save_to is not None:
            with session.gathered(list(run.inner.parameters())):
                run.inner.save_pretrained(save_to)
        precision = session.accelerator.mixed_precision
    s_per_it = statistics.median(seconds)
    flops = flops_per_micro_batch * cfg.train.grad_accum
    return {
        "s_per_it": s_per_it,
        "seconds": seconds,
        "peak_memory_gib": peak,
        "tflops_per_s": flops / s_per_it / 1e12,
        "tflop_per_it": flops / 1e12,
        "loss": losses[-1],
        "precision": precision,
    }


def _time_llava(cfg: Any, peak_tflops: float | None, seq: int) -> dict[str, Any]:
    """tokens/s and MFU of the recipe's finetune step (the first step, DeepSpeed's set-up, is left out)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _reset_peak()
    run = llava_finetune(cfg, device=device)
    peak = _peak_gib()
    batch = cfg.finetune.per_device_batch_size
    flops = llava_cost(cfg, "finetune", batch, seq)["flops"]
    s_per_it = statistics.median(run["step_seconds"][1:] or run["step_seconds"])
    achieved = flops / s_per_it / 1e12
    return {
        "s_per_it": s_per_it,
        "tokens_per_s": batch * seq / s_per_it,
        "tflops_per_s": achieved,
        "mfu": achieved / peak_tflops if peak_tflops else None,
        "peak_memory_gib": peak,
        "loss": run["loss"],
        "zero_stage": run["zero_stage"],
        "image_tokens": run["image_tokens"],
    }


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float:
    """The GPU's peak allocated memory since the reset; on CPU the process's peak RSS (never reset)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _gpu_kind(name: str) -> str | None:
    return next((k for k in PEAK_BF16_TFLOPS if k in name), None)


def _flash_attention_2() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


# ------------------------------------------------------------------------------------------------ inputs
def _write_images(out: Path, n: int, size: int) -> Path:
    """``n`` random RGB images (``size`` px) as the image folder a stage trains on."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out / f"{i:05d}.png")
    return out


def _tiny_cards(out: Path) -> dict[str, Path]:
    """Tiny architecture cards (configs only) standing in for the paper's: a CLIP with its image processor,
    an AutoencoderKL, a Llama."""
    from transformers import CLIPConfig, CLIPImageProcessor, LlamaConfig

    clip = out / "clip"
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, vocab_size=300)
    CLIPConfig(
        text_config={**text, "num_attention_heads": 2},
        vision_config={**vision, "num_attention_heads": 2},
        projection_dim=16,
    ).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip
    )
    vae = out / "vae"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text(json.dumps(_TINY_VAE))
    llm = out / "llm"
    LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    ).save_pretrained(llm)
    return {"clip": clip, "vae": vae, "llm": llm}


_TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "block_out_channels": [16, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
}

if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a stage-1 training step reading the feature cache vs decoding + encoder + VAE, side by side.

    python benchmarks/bench_stage1_cache.py [--shapes toy paper] [--out JSON] [--repeats 5] [--steps 20]

Everything is built from config in a temporary directory (no weights, no network):

- ``toy``: the toy recipe as configs/genhancer/toy.yaml sets it (the toy denoiser, batch 64, 2 views, AdamW,
  the toy VAE's 4x16x16 latents), with a toy CLIP (64 px, patch 16, width 64, 3 layers) and a toy VAE of
  the toy world's shapes on random weights; 512 synthetic 64 px scenes.
- ``paper``: paper shapes with random weights: a ViT-L/14-336 CLIP vision tower, a FLUX.1-shaped
  AutoencoderKL (16 latent channels, 8x down: 42x42 latents at 336 px), the ``lightweight`` Flux denoiser
  (1.31 B parameters), batch ``--paper-batch``; on a CPU it takes plain SGD (AdamW's state of 1.31 B
  parameters would not fit) and few steps.

One step = next batch + forward + backward + optimizer step (the trainer's loop without accelerate and
logging). The two paths alternate in blocks of ``--steps`` steps (``--repeats`` rounds, after one warm-up
block each); the ratio is uncached / cached time per step, given as the median over rounds with the min-max.
On a CPU the ratio is taken from this process's CPU time (other processes' load on a shared machine shows in
wall time, also reported). The one-off cache build is timed separately. For the toy, the real trainer
(DeepSpeed ZeRO-2 as in toy.yaml) also runs ``--trainer-steps`` steps per path, alternating for
``--trainer-rounds`` rounds, and its loop throughputs (wall time) are compared.
JSON goes to stdout and to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genhancer.cache import training_stream
from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.data import build_stream
from genhancer.module import GenHancerModel
from genhancer.train import main as train_main
from genhancer.utils.cli import entry_point
from genhancer.utils.fsio import write_json


# ----------------------------------------------------------------------------------------- fixtures
def make_scenes(root: Path, n: int, size: int, fmt: str = "png") -> Path:
    """``n`` random coloured shapes on white, ``size`` px (stand-ins for toy-world scenes / web photos)."""
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            r = int(rng.integers(size // 10, size // 4))
            d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        im.save(root / "images" / f"{i:05d}.{fmt}")
    return root


def make_clip_dir(
    root: Path, *, image_size: int, patch: int, width: int, layers: int, heads: int, mlp: int, projection: int
) -> Path:
    """A full CLIPModel directory (random weights, a one-layer text tower) with an OpenAI image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=512,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        vision_config=dict(
            image_size=image_size,
            patch_size=patch,
            hidden_size=width,
            intermediate_size=mlp,
            num_hidden_layers=layers,
            num_attention_heads=heads,
        ),
        projection_dim=projection,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(root)
    return root


def make_flux_shaped_vae(root: Path) -> Path:
    """An AutoencoderKL of FLUX.1's shape (16 latent channels, 4 blocks = 8x down), random weights."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).save_pretrained(root, safe_serialization=True)
    return root


def make_toy_vae(root: Path) -> Path:
    """The toy VAE's architecture (``toyworld pretrain-vae``: 64 px -> 4x16x16), random weights."""
    from toyworld.vae import VaeShape, new_vae

    torch.manual_seed(0)
    new_vae(VaeShape()).save_pretrained(root, safe_serialization=True)
    return root


def toy_setup(tmp: Path, args: argparse.Namespace) -> list[str]:
    """configs/genhancer/toy.yaml as it is (batch, views, the toy VAE's latent space), on random weights."""
    clip = make_clip_dir(
        tmp / "clip", image_size=64, patch=16, width=64, layers=3, heads=2, mlp=256, projection=64
    )
    data = make_scenes(tmp / "toy_world", args.toy_images, 64)
    return [f"encoder.path={clip}", f"data.path={data}", f"latent.vae_path={make_toy_vae(tmp / 'vae')}"]


def paper_setup(tmp: Path, args: argparse.Namespace) -> list[str]:
    clip = make_clip_dir(
        tmp / "clip_l14_336",
        image_size=336,
        patch=14,
        width=1024,
        layers=24,
        heads=16,
        mlp=4096,
        projection=768,
    )
    vae = make_flux_shaped_vae(tmp / "flux_vae")
    data = make_scenes(tmp / "web", args.paper_images, 400, fmt="jpg")
    return [
        f"encoder.path={clip}",
        f"data.path={data}",
        "denoiser.preset=lightweight",
        "latent.space=vae",
        f"latent.vae_path={vae}",
        "latent.patch_size=2",
        "cache.views=1",
        "cache.build_batch_size=2",
        f"train.batch_size={args.paper_batch}",
    ]


# -------------------------------------------------------------------------------------------- timing
def _step(
    model: GenHancerModel, batches: Any, optimizer: torch.optim.Optimizer, device: torch.device
) -> float:
    batch = next(batches)
    loss = model(**batch.model_inputs(device, torch.float32))["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _block(
    model: GenHancerModel, batches: Any, optimizer: torch.optim.Optimizer, device: torch.device, steps: int
) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per step over ``steps`` steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _step(model, batches, optimizer, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def _summary(times: dict[str, list[float]]) -> dict[str, Any]:
    ratios = [u / c for u, c in zip(times["uncached"], times["cached"], strict=True)]
    return {
        "ms_per_step": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "ratio_uncached_over_cached": statistics.median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
    }


def measure(
    name: str, cfg: GenHancerConfig, device: torch.device, steps: int, repeats: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = GenHancerModel.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    big = sum(p.numel() for p in params) > 200_000_000 and device.type == "cpu"
    optimizer = (
        torch.optim.SGD(params, lr=1e-5) if big else torch.optim.AdamW(params, lr=cfg.current_schedule.lr)
    )
    spec = model.encoder_image_spec()
    uncached = build_stream(
        cfg.data,
        image_size=int(spec["image_size"]),
        mean=spec["mean"],
        std=spec["std"],
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
    )
    t0 = time.perf_counter()
    cached = training_stream(cfg, model, device=device)
    build_s = time.perf_counter() - t0
    paths = {"uncached": iter(uncached), "cached": iter(cached)}
    wall: dict[str, list[float]] = {"uncached": [], "cached": []}
    cpu: dict[str, list[float]] = {"uncached": [], "cached": []}
    for path in paths:  # warm-up block each (allocator, kernels, first reads)
        _block(model, paths[path], optimizer, device, max(1, steps // 4))
    for r in range(repeats):
        order = ("uncached", "cached") if r % 2 == 0 else ("cached", "uncached")  # cancel slow drifts
        for path in order:
            w, c = _block(model, paths[path], optimizer, device, steps)
            wall[path].append(w)
            cpu[path].append(c)
    uncached.close()
    cached.close()
    # on a shared CPU, other processes' load shows in wall time but not in this process's CPU time
    primary = _summary(cpu if device.type == "cpu" else wall)
    saved = primary["ms_per_step"]["uncached"] - primary["ms_per_step"]["cached"]
    return {
        "name": name,
        "batch": cfg.train.batch_size,
        "views": cfg.cache.views,
        "images": len(cached.source),
        "optimizer": type(optimizer).__name__,
        "steps_per_block": steps,
        "rounds": repeats,
        "timed_by": "process CPU time" if device.type == "cpu" else "wall time",
        **primary,
        "wall": _summary(wall),
        "cache_build_s": build_s,
        "cache_build_in_steps_saved": 1000 * build_s / saved if saved > 0 else None,
    }


def trainer_ratio(overrides: list[str], tmp: Path, steps: int, rounds: int) -> dict[str, Any]:
    """The real trainer (``genhancer.train``, DeepSpeed as configured), one process, uncached and cached runs
    alternating for ``rounds`` rounds (the cache already built): its loop throughput (``summary.json``
    images_per_s, wall time, start-up excluded)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
    }.items():
        os.environ.setdefault(key, value)
    speed: dict[str, list[float]] = {"uncached": [], "cached": []}
    for r in range(rounds):
        for path in ("uncached", "cached") if r % 2 == 0 else ("cached", "uncached"):
            run = tmp / f"trainer-{path}-{r}"
            args = [
                *overrides,
                "cache.enabled=" + ("true" if path == "cached" else "false"),
                f"train.run_dir={run}",
                f"schedule.stage1.steps={steps}",
                f"train.save_every={steps}",
                f"train.log_every={steps}",
            ]
            if train_main(args) != 0:
                raise RuntimeError(f"the {path} trainer run failed")
            speed[path].append(json.loads((run / "summary.json").read_text())["images_per_s"])
    ratios = [c / u for u, c in zip(speed["uncached"], speed["cached"], strict=True)]
    return {
        "steps": steps,
        "rounds": rounds,
        "images_per_s": {k: statistics.median(v) for k, v in speed.items()},
        "ratio_cached_over_uncached_throughput": statistics.median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
    }


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_stage1_cache.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--shapes", nargs="+", choices=["toy", "paper"], default=["toy", "paper"])
    p.add_argument("--steps", type=int, default=20, help="toy: steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="toy: interleaved rounds")
    p.add_argument("--toy-images", type=int, default=512)
    p.add_argument(
        "--trainer-steps",
        type=int,
        default=60,
        help="toy: also run the real trainer this many steps per path (0: skip)",
    )
    p.add_argument("--trainer-rounds", type=int, default=3)
    p.add_argument("--paper-steps", type=int, default=1)
    p.add_argument("--paper-repeats", type=int, default=3)
    p.add_argument("--paper-batch", type=int, default=1)
    p.add_argument("--paper-images", type=int, default=4)
    p.add_argument("--out", default="runs/benchmarks/bench_stage1_cache.json")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, Any] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "results": [],
    }
    for shapes in args.shapes:
        with tempfile.TemporaryDirectory(prefix=f"bench-cache-{shapes}-") as tmp_name:
            tmp = Path(tmp_name)
            setup = toy_setup if shapes == "toy" else paper_setup
            overrides = [
                *setup(tmp, args),
                "cache.enabled=true",
                f"cache.dir={tmp / 'cache'}",
                f"train.run_dir={tmp / 'run'}",
            ]
            cfg = load_genhancer_config("configs/genhancer/toy.yaml", overrides)
            steps, repeats = (
                (args.steps, args.repeats) if shapes == "toy" else (args.paper_steps, args.paper_repeats)
            )
            row = measure(shapes, cfg, device, steps, repeats)
            if shapes == "toy" and args.trainer_steps > 0:
                row["trainer"] = trainer_ratio(overrides, tmp, args.trainer_steps, args.trainer_rounds)
            result["results"].append(row)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m toyworld pretrain-vae --world DIR --out DIR [--classifier DIR]``: the toy world's "FLUX.1 VAE".

A small diffusers ``AutoencoderKL`` (sized by :class:`VaeShape`; the defaults map a 64 px image to a
16 x 16 x 4 latent) trained on the world's *train* images with an L1 + MSE reconstruction loss (object
pixels weighted up) and a weak KL term. Then its latent statistics are measured on train images and written
into the saved config as ``shift_factor`` (mean) and ``scaling_factor`` (1 / standard deviation), as
FLUX.1's 0.1159 / 0.3611, so that GenHancer runs on it with::

    latent.space=vae latent.vae_path=OUT latent.shift=null latent.scale=null

(``null`` = take the factor from the VAE's config) -- the same code path as the FLUX.1 VAE. The statistics
are those of latents *sampled* from the posterior, as GenHancer encodes them: mean of the posterior means,
variance = variance of the means + mean posterior variance (exact expectations, no sampling noise).

OUT is a normal diffusers directory (``config.json`` + ``diffusion_pytorch_model.safetensors``, loads with
``AutoencoderKL.from_pretrained``) plus ``config.yaml`` (resolved :class:`PretrainVaeConfig`),
``metrics.jsonl``, ``summary.json`` (train time, latent shape, the factors, val reconstruction error and,
with ``--classifier``, per-attribute accuracy of the attribute classifier on val originals vs their
reconstructions), ``reconstructions.png`` (val originals above their reconstructions) and
``provenance.json``. Cached by config hash + world fingerprint like the toy CLIP; a cached VAE that lacks
the attribute check gets it added when ``--classifier`` is given.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genhancer.utils.cli import entry_point
from genhancer.utils.config import config_hash
from genhancer.utils.fsio import atomic_directory, write_json
from genhancer.utils.logging import get_logger, progress
from toyworld.attributes import (
    attribute_accuracy,
    format_accuracy,
    load_classifier,
    read_split,
    splits_fingerprint,
)
from toyworld.cached_run import (
    CachedRun,
    MetricsLog,
    run_parser,
    start_run,
    training_summary,
    warmup_cosine,
)
from toyworld.pretrain_clip import load_images

KIND = "toy-vae"
SUMMARY_FILE = "summary.json"
GRID_FILE = "reconstructions.png"
RUN = CachedRun(
    KIND,
    SUMMARY_FILE,
    ("config.json", "diffusion_pytorch_model.safetensors", SUMMARY_FILE, "provenance.json"),
)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class VaeShape:
    """The ``AutoencoderKL`` architecture.

    Each entry of ``block_out_channels`` after the first halves the side.
    """

    image_size: int = 64
    block_out_channels: tuple[int, ...] = (8, 16, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    # Few groups: with one channel per group, GroupNorm is instance norm and wipes out flat colour.
    norm_num_groups: int = 2
    mid_block_attention: bool = False  # attention over 16x16 latent cells costs more than it gives here

    def __post_init__(self) -> None:
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"every block_out_channels entry {list(self.block_out_channels)} must be divisible "
                f"by norm_num_groups={self.norm_num_groups}"
            )
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by the downsampling {self.downsample}"
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class VaeTrainConfig:
    steps: int = 1800
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    kl_weight: float = 1e-6  # on the KL per latent element vs the reconstruction loss per pixel value
    # Extra loss weight on object pixels (those unlike the flat background): objects cover a small part of
    # each picture, and without it colour, letters and texture are learnt last.
    foreground_weight: float = 12.0
    # Posterior log-variance at initialisation (bias of the moments' conv). diffusers starts at 0, i.e. unit
    # noise on latents that are still tiny: the decoder then first learns from noise, which slows it a lot.
    init_logvar: float = -10.0
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("train.steps, train.batch_size and train.log_every must be >= 1")
        if self.kl_weight < 0 or self.foreground_weight < 0:
            raise ValueError("train.kl_weight and train.foreground_weight must be >= 0")


@dataclass
class PretrainVaeConfig:
    """Everything that determines the toy VAE (its hash is the cache key, with the world's fingerprint)."""

    model: VaeShape = field(default_factory=VaeShape)
    train: VaeTrainConfig = field(default_factory=VaeTrainConfig)
    stats_images: int = 4096  # train images the shift/scale factors are measured on
    eval_images: int = 1000  # val images for the reconstruction error and the attribute check
    eval_batch_size: int = 250


def new_vae(shape: VaeShape, init_logvar: float = 0.0) -> Any:
    """A freshly initialised ``AutoencoderKL`` of ``shape`` (factors 0 / 1 until measured), its posterior
    log-variance starting at ``init_logvar``."""
    from diffusers import AutoencoderKL

    n = len(shape.block_out_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=shape.latent_channels,
        block_out_channels=tuple(shape.block_out_channels),
        layers_per_block=shape.layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=shape.norm_num_groups,
        sample_size=shape.image_size,
        mid_block_add_attention=shape.mid_block_attention,
        scaling_factor=1.0,
        shift_factor=0.0,
    )
    with torch.no_grad():  # quant_conv maps encoder output -> (mean, logvar) channels
        vae.quant_conv.bias[shape.latent_channels :] = init_logvar
    return vae


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (B, 3, S, S) in [-1, 1], channels-last (faster convolutions on CPU)."""
    return (images.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------- training
def foreground(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B, 1, S, S) 1.0 where a pixel of x (B, 3, S, S) in [-1, 1] differs from its image's background.

    The background colour is the per-channel median of the border pixels (toy scenes lie on a flat
    background; a close-up object may cover part of the border, rarely half of it).
    """
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # (B, 3, 4S)
    background = border.median(dim=2).values[:, :, None, None]  # (B, 3, 1, 1)
    return ((x - background).abs().amax(dim=1, keepdim=True) > threshold).float()


def train_vae(
    vae: nn.Module, images: torch.Tensor, cfg: VaeTrainConfig
) -> tuple[list[dict[str, float]], float]:
    """Train ``vae`` in place on uint8 images (N, 3, S, S); returns (metrics rows, seconds in the loop).

    Loss = mean w|x - x'| + mean w(x - x')^2 + kl_weight * KL per latent element, with x' decoded from a
    posterior sample (as GenHancer encodes) and w = 1 + foreground_weight on object pixels.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.steps))
    batch = min(cfg.batch_size, len(images))
    log = MetricsLog(cfg.steps, cfg.log_every)
    vae.train()
    bar = progress(range(cfg.steps), desc="train toy VAE", unit="step")
    for step in bar:
        x = to_pixels(images[torch.randint(0, len(images), (batch,), generator=gen)])
        post = vae.encode(x).latent_dist
        err = vae.decode(post.sample(gen)).sample - x
        w = 1.0 + cfg.foreground_weight * foreground(x)  # (B, 1, S, S)
        recon = (w * err.abs()).mean() + (w * err.pow(2)).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        loss = recon + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log.add(step, loss=loss, recon=recon, kl=kl):
            bar.set_postfix(recon=f"{log.flush(step, lr=opt.param_groups[0]['lr'])['recon']:.4f}")
    vae.eval()
    return log.rows, log.elapsed()


@torch.no_grad()
def latent_factors(vae: nn.Module, images: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(shift, scale) = (mean, 1 / std) of latents sampled from the posterior of uint8 images (N, 3, S, S).

    Exact expectations over the sampling: E[z] = mean of the posterior means, Var[z] = variance of the
    means + mean of the posterior variances (law of total variance), over every latent element.
    """
    total = sq = var = 0.0
    count = 0
    for i in range(0, len(images), batch_size):
        dist = vae.encode(to_pixels(images[i : i + batch_size])).latent_dist
        m = dist.mean.double()
        total += float(m.sum())
        sq += float(m.pow(2).sum())
        var += float(dist.var.double().sum())
        count += m.numel()
    mean = total / count
    variance = sq / count - mean**2 + var / count
    return mean, 1.0 / math.sqrt(variance)


@torch.no_grad()
def reconstruct(vae: nn.Module, images: torch.Tensor, batch_size: int, seed: int = 0) -> torch.Tensor:
    """uint8 images (N, 3, S, S) -> uint8 reconstructions (N, 3, S, S), decoded from posterior samples."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(images), batch_size):
        dist = vae.encode(to_pixels(images[i : i + batch_size])).latent_dist
        y = vae.decode(dist.sample(gen)).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous())
    return torch.cat(out)


def save_pair_grid(originals: torch.Tensor, recon: torch.Tensor, path: Path, n: int = 16) -> None:
    """PNG with ``n`` uint8 originals (N, 3, S, S) on the top row and their reconstructions below."""
    from PIL import Image

    top = torch.cat(list(originals[:n]), dim=2)  # (3, S, n*S)
    bottom = torch.cat(list(recon[:n]), dim=2)
    Image.fromarray(torch.cat([top, bottom], dim=1).permute(1, 2, 0).numpy()).save(path)


# ---------------------------------------------------------------------------------------------- eval
def evaluate(
    vae: nn.Module,
    cfg: PretrainVaeConfig,
    world: str | Path,
    classifier: str | Path | None,
    grid: Path | None = None,
) -> dict[str, Any]:
    """Reconstruction error on val images and, with a classifier, per-attribute accuracy
    originals vs recons."""
    paths, scenes = read_split(world, "val")
    paths, scenes = paths[: cfg.eval_images], scenes[: cfg.eval_images]
    originals = load_images(paths, cfg.model.image_size, "loading val images")
    recon = reconstruct(vae, originals, cfg.eval_batch_size, cfg.train.seed)
    mse = float((to_pixels(recon) - to_pixels(originals)).pow(2).mean())
    out: dict[str, Any] = {
        "val_images": len(paths),
        "val_mse": mse,
        "val_psnr_db": 10 * math.log10(4.0 / mse),
    }
    if grid is not None:
        save_pair_grid(originals, recon, grid)
    if classifier is not None:
        clf = load_classifier(classifier)
        out["attributes"] = {
            "classifier": str(Path(classifier).resolve()),
            "originals": attribute_accuracy(clf, originals, scenes, cfg.eval_batch_size),
            "reconstructions": attribute_accuracy(clf, recon, scenes, cfg.eval_batch_size),
        }
    return out


# ---------------------------------------------------------------------------------------------- cache
# OUT's summary when it holds a toy VAE of this config hash and world; else None.
cached_summary = RUN.cached_summary


def _add_attribute_check(
    out: Path, summary: dict[str, Any], cfg: PretrainVaeConfig, world: str | Path, classifier: str | Path
) -> dict[str, Any]:
    """Run the attribute check on a cached VAE that lacks it (or had another classifier);
    rewrite summary.json."""
    from diffusers import AutoencoderKL

    wanted = str(Path(classifier).resolve())
    if (summary.get("attributes") or {}).get("classifier") == wanted:
        return summary
    vae = (
        AutoencoderKL.from_pretrained(out, use_safetensors=True).to(memory_format=torch.channels_last).eval()
    )
    summary = {**summary, **evaluate(vae, cfg, world, classifier)}
    write_json(out / SUMMARY_FILE, summary)
    return summary


def pretrain_vae(
    cfg: PretrainVaeConfig,
    world: str | Path,
    out: str | Path,
    *,
    classifier: str | Path | None = None,
    force: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the toy VAE of ``world`` into ``out``; returns the summary."""
    log = get_logger(__name__)
    out, fingerprint, cfg_hash = Path(out), splits_fingerprint(world), config_hash(cfg)
    if classifier is not None:
        load_classifier(classifier)  # a bad --classifier fails before the training, not after
    if not force:
        summary = cached_summary(out, cfg_hash, fingerprint)
        if summary is not None:
            if classifier is not None:
                summary = _add_attribute_check(out, summary, cfg, world, classifier)
            return {**summary, "cached": True}
    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    paths, _ = read_split(world, "train")
    images = load_images(paths, cfg.model.image_size, "loading train images")
    vae = new_vae(cfg.model, cfg.train.init_logvar).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in vae.parameters())
    side = cfg.model.image_size // cfg.model.downsample
    log.info(
        "toy VAE: %.2f M parameters, latent %dx%dx%d", n_params / 1e6, cfg.model.latent_channels, side, side
    )
    cpu0 = time.process_time()  # CPU seconds of all threads: comparable across busy and idle machines
    rows, train_s = train_vae(vae, images, cfg.train)
    train_cpu_s = time.process_time() - cpu0
    stats_idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.train.seed))
    shift, scale = latent_factors(vae, images[stats_idx[: cfg.stats_images]], cfg.eval_batch_size)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    summary = {
        **training_summary(
            cfg.train.steps, cfg.train.batch_size, len(images), n_params, train_s, train_cpu_s
        ),
        "images_per_second": round(cfg.train.steps * min(cfg.train.batch_size, len(images)) / train_s, 1),
        "final_recon_loss": rows[-1]["recon"],
        "latent_shape": [cfg.model.latent_channels, side, side],
        "shift_factor": shift,
        "scaling_factor": scale,
        "stats_images": min(cfg.stats_images, len(images)),
        "config_hash": cfg_hash,
        "world_fingerprint": fingerprint,
    }
    with atomic_directory(out) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        summary.update(evaluate(vae, cfg, world, classifier, grid=tmp / GRID_FILE))
        RUN.write_records(
            tmp, cfg, rows, summary, t0, parents=[world], command=command, fingerprint=fingerprint
        )
    return {**summary, "cached": False}


def format_summary(summary: dict[str, Any]) -> str:
    c, h, w = summary["latent_shape"]
    lines = [
        f"latent {c}x{h}x{w}, {summary['steps']} steps (batch {summary['batch_size']}) in "
        f"{summary['train_seconds']:.1f} s ({summary['images_per_second']:.0f} images/s), "
        f"shift_factor {summary['shift_factor']:.4f}, scaling_factor {summary['scaling_factor']:.4f}",
        f"val reconstruction: MSE {summary['val_mse']:.4f}, PSNR {summary['val_psnr_db']:.1f} dB "
        f"({summary['val_images']} images)",
    ]
    if summary.get("attributes"):
        a = summary["attributes"]
        lines.append(format_accuracy(a["originals"], a["reconstructions"], ("originals", "recons")))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = run_parser(
        "pretrain-vae",
        __doc__,
        out_help="output directory: the toy VAE (diffusers AutoencoderKL directory)",
        config_help="YAML instance of PretrainVaeConfig (default: built-in defaults = "
        "configs/toyworld/vae.yaml)",
        force_help="retrain even when OUT holds a matching cached VAE",
    )
    p.add_argument(
        "--classifier",
        help="attribute classifier (python -m toyworld train-attributes) for the "
        "check of which attributes the reconstructions keep",
    )
    return p


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    started = start_run("pretrain-vae", build_parser(), PretrainVaeConfig, argv)
    if started is None:
        return 0
    args, cfg, command = started
    summary = pretrain_vae(
        cfg, args.world, args.out, classifier=args.classifier, force=args.force, command=command
    )
    if summary["cached"]:
        print(
            f"cached: {args.out} already holds this toy VAE (config hash {summary['config_hash']}); "
            "use --force to retrain"
        )
    print(format_summary(summary))
    if not summary["cached"]:
        print(
            f"saved toy VAE to {args.out} (GenHancer: latent.space=vae latent.vae_path={args.out} "
            "latent.shift=null latent.scale=null)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m toyworld train-vq`` / ``eval-vq``: the toy world's patch k-means VQ tokenizer.

A k-means codebook over p x p pixel patches (each token *is* a patch; decoding pastes the centroids), written
as a ``PatchKMeansTokenizer`` directory that ``genhancer.vq`` loads for ``latent.space=vq``::

    python -m toyworld train-vq --images runs/toyworld/train --out runs/toy/vq [key=value ...]
    python -m toyworld train-vq --run-config configs/genhancer/toy-discrete.yaml --skip-existing
    python -m toyworld eval-vq --tokenizer runs/toy/vq --images runs/toyworld/val

``--run-config`` reads a GenHancer run config: ``--images`` defaults to its ``data.path`` (read as its
``data.source``) and ``--out`` to its ``latent.vae_path``. Hyperparameters live in :class:`TrainVQConfig`
(``configs/toyworld/vq.yaml`` is its YAML instance; ``--config`` another one, ``key=value`` overrides);
flags name paths only. Why k-means and not a tiny trained VQModel: the toy pictures are flat colours, thick
strokes and simple textures, which a 4x4-patch codebook reconstructs well, deterministically and in
seconds on CPU, with no codebook collapse. Images are opened by the suite's one image opener
(``genhancer.utils.images``: CMYK, 16-bit, palette and alpha made RGB; a cap of ``max_image_pixels``); an
unusable one is skipped and named with its reason in ``stats.json`` (``skipped_files``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genhancer.config import DataConfig, load_genhancer_config
from genhancer.data import build_source
from genhancer.utils.cli import entry_point
from genhancer.utils.config import load_config, to_dict
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import atomic_directory, write_json
from genhancer.utils.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, SkippedFiles, check_max_pixels
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import write_provenance
from genhancer.vq import PatchKMeansTokenizer, VQTokenizer, load_tokenizer, nearest_code

log = get_logger("toyworld.vq")
KIND = "vq-tokenizer"


@dataclass
class TrainVQConfig:
    """Everything that determines the tokenizer (besides the images)."""

    patch_size: int = 4  # pixels per token side: 64 px -> 16x16 tokens
    codebook_size: int = 512
    iters: int = 20  # Lloyd iterations
    max_images: int | None = 4000  # a seeded random subset of the images (None: all)
    max_patches: int = 200_000  # patches sampled for k-means
    image_size: int | None = None  # resize images to this side (None: as they are)
    val_fraction: float = 0.05  # held-out images for the reported reconstruction error
    stats_images: int = 500  # training images in the reported train error
    seed: int = 0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # bigger images are skipped undecoded

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.codebook_size < 2 or self.iters < 1 or self.max_patches < 1:
            raise ValueError("patch_size, iters and max_patches must be >= 1 and codebook_size >= 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        check_max_pixels(self.max_image_pixels, "max_image_pixels")


@dataclass
class EvalVQConfig:
    """Which images ``eval-vq`` measures."""

    max_images: int | None = 1000
    image_size: int | None = None
    seed: int = 0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_max_pixels(self.max_image_pixels, "max_image_pixels")


# ------------------------------------------------------------------------------------------------ images
def load_images(
    images: str,
    image_size: int | None,
    max_images: int | None,
    seed: int,
    source: str = "folder",
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, SkippedFiles]:
    """Images of a ``DATA_SOURCES`` source (folder, recursive; or webdataset shards) -> ((N, 3, S, S) in
    [-1, 1], the files skipped with their reasons): a seeded random subset of at most ``max_images``."""
    from PIL import Image

    src = build_source(DataConfig(source=source, path=images, max_image_pixels=max_pixels))
    order = np.random.default_rng(seed).permutation(len(src))
    if max_images:
        order = order[:max_images]
    out, skipped = [], SkippedFiles(logger=log)
    for i in progress(order.tolist(), desc="read images", unit="img"):
        try:
            img = src.open_image(i, max_pixels)
        except BadImage as bad:
            skipped.add(src.refs[i].key, bad.reason, bad.detail)
            continue
        if image_size and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
    src.close()
    if skipped:
        log.warning("skipped %d unusable image(s) of %d under %s", len(skipped), len(order), images)
    if not out:
        raise DataError(f"no readable images under {images!r} ({len(skipped)} unusable)")
    sizes = {tuple(t.shape) for t in out}
    if len(sizes) > 1:
        raise DataError(f"images under {images!r} have different sizes {sorted(sizes)[:3]}; set image_size=S")
    return torch.stack(out).float() / 127.5 - 1.0, skipped


# ------------------------------------------------------------------------------------------------ k-means
def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: x (N, D) -> (k, D) centres, each drawn with probability ~ squared distance."""
    n = x.shape[0]
    x_sq = (x * x).sum(1)  # (N,)
    idx = torch.randint(n, (1,), generator=generator)
    chosen = [idx]
    d2 = (x_sq - 2 * x @ x[idx[0]] + x_sq[idx]).clamp_min(0)  # (N,) squared distance to the nearest centre
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: repeat points (duplicates are re-seeded in Lloyd)
            idx = torch.randint(n, (1,), generator=generator)
        else:
            idx = torch.multinomial(d2 / total, 1, generator=generator)
        chosen.append(idx)
        d2 = torch.minimum(d2, (x_sq - 2 * x @ x[idx[0]] + x_sq[idx]).clamp_min(0))
    return x[torch.cat(chosen)].clone()


def kmeans(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[float]]:
    """Lloyd's k-means on x (N, D) from k-means++ seeds. An emptied cluster is re-seeded at the worst-fit
    point, so every code stays in use. Returns (codebook (k, D), mean squared error per iteration)."""
    c = kmeans_plus_plus(x, k, generator)
    history: list[float] = []
    for _ in progress(range(iters), desc="k-means", unit="it"):
        assign = nearest_code(x, c)  # (N,)
        err = ((x - c[assign]) ** 2).sum(1)  # (N,)
        history.append(float(err.mean()) / x.shape[1])
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        used = counts > 0
        c[used] = sums[used] / counts[used, None]
        empty = (~used).nonzero().flatten()
        if len(empty):
            worst = err.topk(len(empty)).indices
            c[empty] = x[worst]
    return c, history


def train_patch_kmeans(
    images: torch.Tensor, cfg: TrainVQConfig
) -> tuple[PatchKMeansTokenizer, dict[str, Any]]:
    """images (N, 3, S, S) in [-1, 1] -> a fitted tokenizer and its training stats."""
    p = cfg.patch_size
    g = torch.Generator().manual_seed(cfg.seed)
    tok = PatchKMeansTokenizer(torch.zeros(1, 3 * p * p), p)
    x = tok.patches(images).reshape(-1, 3 * p * p)  # (N*h*w, D)
    if x.shape[0] > cfg.max_patches:
        x = x[torch.randperm(x.shape[0], generator=g)[: cfg.max_patches]]
    if x.shape[0] < cfg.codebook_size:
        raise DataError(
            f"{x.shape[0]} patches are too few for a codebook of {cfg.codebook_size}; add images "
            "or lower codebook_size"
        )
    codebook, history = kmeans(x, cfg.codebook_size, cfg.iters, g)
    return PatchKMeansTokenizer(codebook, p), {"patches": int(x.shape[0]), "mse_history": history}


def reconstruction_stats(tok: VQTokenizer, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Round-trip images (N, 3, S, S) in [-1, 1]: MSE (in [-1, 1] units), PSNR (dB, on [0, 1]) and the
    fraction of codes used."""
    se, n, used = 0.0, 0, torch.zeros(tok.codebook_size, dtype=torch.bool)
    for part in images.split(batch_size):
        ids = tok.encode(part)
        rec = tok.decode(ids).clamp(-1, 1)
        se += float(((rec - part.float()) ** 2).sum())
        n += part.numel()
        used[ids.flatten().cpu().unique()] = True
    mse = se / max(n, 1)
    psnr = 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")  # range [-1, 1] -> peak-to-peak 2
    return {"mse": mse, "psnr_db": psnr, "codebook_usage": float(used.float().mean())}


def train_vq(cfg: TrainVQConfig, images: str, out: str | Path, source: str = "folder") -> dict[str, Any]:
    """Fit the tokenizer on ``images`` and write its directory ``out`` atomically; returns the stats."""
    out_dir = Path(out)
    t0 = time.time()
    data, skipped = load_images(
        images, cfg.image_size, cfg.max_images, cfg.seed, source, cfg.max_image_pixels
    )
    n_val = max(1, int(round(len(data) * cfg.val_fraction))) if len(data) > 1 and cfg.val_fraction else 0
    train_x, val_x = data[n_val:], data[:n_val]
    tok, stats = train_patch_kmeans(train_x, cfg)
    size = int(data.shape[-1])
    stats.update(
        {
            "train": reconstruction_stats(tok, train_x[: cfg.stats_images]),
            "heldout": reconstruction_stats(tok, val_x) if n_val else None,
            "images": len(train_x),
            "heldout_images": n_val,
            "skipped_images": len(skipped),
            "skipped_files": skipped.as_list(),
            "image_size": size,
            "wall_s": time.time() - t0,
        }
    )
    with atomic_directory(out_dir) as tmp:
        tok.save_pretrained(tmp, {"image_size": size})
        write_json(tmp / "stats.json", stats)
        write_provenance(
            tmp,
            KIND,
            config=cfg,
            parents=[images],
            extra={
                "source": source,
                "image_size": size,
                "skipped_images": len(skipped),
                "heldout": stats["heldout"],
                "train": stats["train"],
            },
        )
    return stats


# --------------------------------------------------------------------------------------------------- CLI
def _train_paths(args: argparse.Namespace) -> tuple[str, str, str]:
    """(images, out, source) from the flags, defaulting to a GenHancer run config's data / latent paths."""
    images, out, source = args.images, args.out, args.source
    if args.run_config:
        run = load_genhancer_config(args.run_config, [])
        if run.latent.space != "vq" or not run.latent.vae_path:
            raise ConfigError(
                f"{args.run_config}: latent.space must be vq with latent.vae_path set to the "
                "tokenizer directory to write"
            )
        images, out = images or run.data.path, out or run.latent.vae_path
        source = source or run.data.source
    if not (images and out):
        raise ConfigError("give --images DIR and --out DIR, or --run-config GENHANCER_YAML")
    return images, out, source or "folder"


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toyworld train-vq``: fit the patch k-means tokenizer on an image folder."""
    p = argparse.ArgumentParser(
        prog="python -m toyworld train-vq",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", help="image folder (recursive) or webdataset shards")
    p.add_argument("--source", help="how --images is stored: folder (default) | webdataset")
    p.add_argument("--out", help="tokenizer directory to write")
    p.add_argument(
        "--run-config",
        help="GenHancer run YAML: --images defaults to its data.path, --out to its latent.vae_path",
    )
    p.add_argument(
        "--config",
        help="YAML instance of TrainVQConfig (default: built-in defaults = configs/toyworld/vq.yaml)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. codebook_size=256"
    )
    p.add_argument(
        "--skip-existing", action="store_true", help="do nothing if --out already holds a tokenizer"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    args = p.parse_args(argv)
    cfg = load_config(TrainVQConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    images, out, source = _train_paths(args)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        if args.skip_existing:
            load_tokenizer(str(out_dir))  # it must at least be a loadable tokenizer
            log.info("%s already holds a tokenizer; nothing to do (--skip-existing)", out_dir)
            return 0
        if not args.overwrite:
            raise ConfigError(f"--out {out_dir} is not empty; pass --overwrite to replace it")
    stats = train_vq(cfg, images, out_dir, source)
    print(
        f"wrote {out_dir} in {stats['wall_s']:.1f} s ({stats['images']} images, {stats['skipped_images']} "
        f"unreadable skipped): held-out {json.dumps(stats['heldout'])}"
    )
    return 0


@entry_point
def eval_main(argv: Sequence[str] | None = None) -> int:
    """``python -m toyworld eval-vq``: reconstruction error of any VQ tokenizer on an image folder."""
    p = argparse.ArgumentParser(
        prog="python -m toyworld eval-vq",
        description="Reconstruction error of a VQ tokenizer on an image folder.",
    )
    p.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    p.add_argument("--subfolder", default=None, help="subfolder of --tokenizer (aMUSEd: vqvae)")
    p.add_argument("--images", required=True, help="image folder (recursive) or webdataset shards")
    p.add_argument("--source", default="folder", help="how --images is stored: folder | webdataset")
    p.add_argument("--out", default=None, help="also write the stats to this JSON file")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="EvalVQConfig overrides, e.g. max_images=200"
    )
    args = p.parse_args(argv)
    cfg = load_config(EvalVQConfig, None, args.overrides)
    tok = load_tokenizer(args.tokenizer, args.subfolder)
    data, skipped = load_images(
        args.images, cfg.image_size, cfg.max_images, cfg.seed, args.source, cfg.max_image_pixels
    )
    stats = reconstruction_stats(tok, data)
    stats.update(
        {
            "images": len(data),
            "skipped_images": len(skipped),
            "skipped_files": skipped.as_list(),
            "codebook_size": tok.codebook_size,
            "downsample": tok.downsample,
        }
    )
    print(json.dumps(stats, indent=2))
    if args.out:
        write_json(args.out, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Token spaces for the discrete denoiser, and the toy world's patch tokenizer.

``vq`` (a ``LATENT_SPACES`` entry) turns an image into a grid of codebook ids and back:

    encode(x (B, 3, H, W) in [-1, 1]) -> ids (B, h, w) int64 in [0, codebook_size)
    decode(ids (B, h, w))              -> images (B, 3, H, W) in about [-1, 1]

It reads ``latent.vae_path`` (+ ``latent.vae_subfolder``): the directory of a *VQ*-VAE. Which tokenizer class
reads it is decided by the ``_class_name`` of its ``config.json`` (``TOKENIZERS`` registry):

  * ``VQModel`` — any diffusers VQ-GAN, e.g. aMUSEd's (``amused/amused-256``, subfolder ``vqvae``: 8192 codes,
    16x downsampling, so 224 px -> 14x14 tokens, 384 px -> 24x24).
  * ``PatchKMeansTokenizer`` — the toy world's tokenizer: a k-means codebook over p x p pixel patches
    (each token *is* a patch; decode pastes the centroids). Trained in seconds on CPU by

        python -m genhancer.vq train --images runs/toyworld/train --out runs/toy/vq
        python -m genhancer.vq train --config configs/genhancer/toy-discrete.yaml --skip-existing
        python -m genhancer.vq eval --tokenizer runs/toy/vq --images runs/toyworld/val

    (the ``--config`` form reads ``data.path`` and writes to ``latent.vae_path``). Why k-means and not a tiny
    trained VQModel: the toy pictures are flat colours, thick strokes and simple textures, which a 4x4-patch
    codebook reconstructs well (see ``eval``), deterministically and in seconds, with no codebook collapse.

A token space never trains (``LatentSpace.train`` keeps it in eval mode); ``latent.patch_size`` must be 1
(one token = one code).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genhancer.latents import LATENT_SPACES, LatentSpace
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError, ModelDirError
from genhancer.utils.fsio import atomic_directory, read_json, write_json
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import write_provenance
from genhancer.utils.registry import Registry

log = get_logger("genhancer.vq")

CONFIG_FILE = "config.json"
KMEANS_WEIGHTS = "model.safetensors"


# --------------------------------------------------------------------------------------------- tokenizers
class VQTokenizer(nn.Module):
    """An image <-> token-grid codec. ``downsample``: pixels per token side; ``codebook_size``: number of codes."""

    codebook_size: int
    downsample: int

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> VQTokenizer:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, 3, H, W) in [-1, 1] -> ids (B, H/f, W/f) int64."""
        raise NotImplementedError

    def decode(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """ids (B, h, w) -> (B, 3, h*f, w*f) in about [-1, 1]."""
        raise NotImplementedError


TOKENIZERS: Registry[type[VQTokenizer]] = Registry("VQ tokenizer class")


@TOKENIZERS.register("VQModel")
class DiffusersVQTokenizer(VQTokenizer):
    """A diffusers ``VQModel`` (VQ-GAN): ids are its quantizer's nearest-code indices."""

    def __init__(self, vqmodel: nn.Module) -> None:
        super().__init__()
        self.vq = vqmodel.requires_grad_(False).eval()
        self.codebook_size = int(vqmodel.config.num_vq_embeddings)
        self.downsample = 2 ** (len(vqmodel.config.block_out_channels) - 1)

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> DiffusersVQTokenizer:
        from diffusers import VQModel

        kwargs = {"subfolder": subfolder} if subfolder else {}
        return cls(VQModel.from_pretrained(path, use_safetensors=True, **kwargs))

    @property
    def _dtype(self) -> torch.dtype:
        return self.vq.quantize.embedding.weight.dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = self.vq.encode(x.to(self._dtype)).latents  # (B, C, h, w) before quantization
        _, _, (_, _, idx) = self.vq.quantize(h)  # idx: (B*h*w,) or (B, h, w) -- reshape covers both
        return idx.reshape(b, h.shape[2], h.shape[3]).long()

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        b, h, w = ids.shape
        dim = self.vq.quantize.embedding.weight.shape[1]
        shape = (b, h, w, dim)
        if self.vq.config.lookup_from_codebook:  # aMUSEd: decode() looks the ids up itself
            out = self.vq.decode(ids.reshape(-1), force_not_quantize=True, shape=shape)
        else:
            quant = self.vq.quantize.get_codebook_entry(ids.reshape(-1), shape)  # (B, C, h, w)
            out = self.vq.decode(quant, force_not_quantize=True)
        return out.sample.float()


@TOKENIZERS.register("PatchKMeansTokenizer")
class PatchKMeansTokenizer(VQTokenizer):
    """Each non-overlapping p x p pixel patch -> the id of its nearest centroid (L2 in [-1, 1] RGB).

    ``codebook``: (K, 3*p*p), a patch flattened channels-first, in (c, dy, dx) order.
    """

    def __init__(self, codebook: torch.Tensor, patch_size: int) -> None:
        super().__init__()
        if codebook.ndim != 2 or codebook.shape[1] != 3 * patch_size * patch_size:
            raise ModelDirError(f"codebook of shape {tuple(codebook.shape)} does not fit patch size {patch_size}")
        self.register_buffer("codebook", codebook.float().contiguous())
        self.codebook_size = int(codebook.shape[0])
        self.downsample = int(patch_size)

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> PatchKMeansTokenizer:
        from safetensors.torch import load_file

        d = Path(path) / (subfolder or "")
        cfg = _read_tokenizer_config(d)
        weights = d / KMEANS_WEIGHTS
        if not weights.is_file():
            raise ModelDirError(f"{d} has no {KMEANS_WEIGHTS} (a PatchKMeansTokenizer directory holds the codebook)")
        return cls(load_file(str(weights))["codebook"], int(cfg["patch_size"]))

    def save_pretrained(self, directory: str | Path, extra_config: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"codebook": self.codebook.detach().cpu().contiguous()}, str(d / KMEANS_WEIGHTS))
        write_json(d / CONFIG_FILE, {"_class_name": "PatchKMeansTokenizer", "patch_size": self.downsample,
                                     "codebook_size": self.codebook_size, **(extra_config or {})})

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h*w, 3*p*p) non-overlapping patches in row-major order."""
        p = self.downsample
        b, c, hh, ww = x.shape
        if hh % p or ww % p:
            raise ConfigError(f"image size {(hh, ww)} is not divisible by the tokenizer patch size {p}")
        x = x.float().reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        return x.reshape(b, (hh // p) * (ww // p), c * p * p)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        p = self.downsample
        flat = self.patches(x).reshape(-1, self.codebook.shape[1])  # (B*N, D)
        ids = nearest_code(flat, self.codebook)
        return ids.reshape(b, hh // p, ww // p)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        b, h, w = ids.shape
        p = self.downsample
        patches = self.codebook[ids.reshape(b, h, w)].reshape(b, h, w, 3, p, p)  # (B, h, w, C, p, p)
        return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, h * p, w * p)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """x (N, D), codebook (K, D) -> (N,) index of the nearest code (squared L2), in chunks to bound memory."""
    cb = codebook.float()
    cb_sq = (cb * cb).sum(1)  # (K,)
    out = []
    for part in x.float().split(chunk):
        d = cb_sq[None, :] - 2.0 * part @ cb.T  # (n, K); |x|^2 is the same for every code
        out.append(d.argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def _read_tokenizer_config(d: Path) -> dict[str, Any]:
    return read_json(d / CONFIG_FILE, ModelDirError, missing=f"{d} is not a VQ tokenizer directory (no {CONFIG_FILE})")


def _tokenizer_config(path: str, subfolder: str | None) -> dict[str, Any]:
    """config.json of a local directory, or of a hub repository (through the local cache; offline-safe)."""
    local = Path(path) / (subfolder or "")
    if Path(path).is_dir():
        return _read_tokenizer_config(local)
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, CONFIG_FILE, subfolder=subfolder)).read_text())
    except Exception as e:  # noqa: BLE001 - any hub/cache failure is one user-facing message
        raise ModelDirError(
            f"latent.vae_path={path!r}{f' (subfolder {subfolder})' if subfolder else ''} is neither a local VQ "
            f"tokenizer directory nor a hub repository available here ({type(e).__name__}: {e})"
        ) from None


def load_tokenizer(path: str, subfolder: str | None = None) -> VQTokenizer:
    """Load a VQ tokenizer directory (or hub id); its config.json ``_class_name`` picks the class."""
    cfg = _tokenizer_config(path, subfolder)
    kind = cfg.get("_class_name")
    if kind not in TOKENIZERS:
        raise ModelDirError(
            f"latent.vae_path={path!r}: config.json _class_name {kind!r} is not a VQ tokenizer; known: "
            f"{', '.join(sorted(TOKENIZERS))} (an AutoencoderKL belongs to latent.space=vae)"
        )
    try:
        return TOKENIZERS[kind].load(path, subfolder)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"cannot load the {kind} from latent.vae_path={path!r}: {e}") from None


# -------------------------------------------------------------------------------------------- the space
@LATENT_SPACES.register("vq")
class VqSpace(LatentSpace):
    """Discrete tokens: ``encode`` gives ids (B, h, w) int64, ``decode`` gives images. ``channels`` is 1."""

    channels = 1

    def __init__(self, tokenizer: VQTokenizer) -> None:
        super().__init__(1)
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.downsample = tokenizer.downsample

    @property
    def codebook_size(self) -> int:
        return self.tokenizer.codebook_size

    @classmethod
    def from_config(cls, latent_cfg: Any) -> VqSpace:
        if not latent_cfg.vae_path:
            raise ConfigError(
                "latent.space=vq needs latent.vae_path: a VQ tokenizer directory (diffusers VQModel, e.g. "
                "amused/amused-256 with latent.vae_subfolder=vqvae, or one written by `python -m genhancer.vq train`)"
            )
        if latent_cfg.patch_size != 1:
            raise ConfigError(f"latent.space=vq: one token is one code, so latent.patch_size must be 1 "
                              f"(got {latent_cfg.patch_size})")
        return cls(load_tokenizer(latent_cfg.vae_path, latent_cfg.vae_subfolder))

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.downsample:
            raise ConfigError(f"image size {image_size} must be divisible by the VQ tokenizer's downsampling "
                              f"{self.downsample}")
        return 1, image_size // self.downsample, image_size // self.downsample

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> ids (B, h, w) int64 (deterministic: ``generator`` is unused)."""
        return self.tokenizer.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> (B, 3, H, W) float32 in about [-1, 1]."""
        return self.tokenizer.decode(z.long())


# ---------------------------------------------------------------------------------------- k-means trainer
def load_images(images: str, image_size: int | None, max_images: int | None, seed: int,
                source: str = "folder") -> torch.Tensor:
    """Images of a ``DATA_SOURCES`` source (folder, recursive; or webdataset shards) -> (N, 3, S, S) in
    [-1, 1]: a seeded random subset of at most ``max_images``."""
    from PIL import Image

    from genhancer.config import DataConfig
    from genhancer.data import build_source

    src = build_source(DataConfig(source=source, path=images))
    order = np.random.default_rng(seed).permutation(len(src))
    if max_images:
        order = order[:max_images]
    out = []
    for i in progress(order.tolist(), desc="read images", unit="img"):
        try:
            img = Image.open(io.BytesIO(src.read_bytes(i))).convert("RGB")
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds
            log.warning("skipping unreadable image %s (%s)", src.refs[i].key, e)
            continue
        if image_size and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
    src.close()
    if not out:
        raise DataError(f"no readable images under {images!r}")
    sizes = {tuple(t.shape) for t in out}
    if len(sizes) > 1:
        raise DataError(f"images under {images!r} have different sizes {sorted(sizes)[:3]}; pass --image-size")
    return torch.stack(out).float() / 127.5 - 1.0


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


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
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


def train_patch_kmeans(images: torch.Tensor, patch_size: int, codebook_size: int, iters: int,
                       max_patches: int, seed: int) -> tuple[PatchKMeansTokenizer, dict[str, Any]]:
    """images (N, 3, S, S) in [-1, 1] -> a fitted tokenizer and its training stats."""
    g = torch.Generator().manual_seed(seed)
    tok = PatchKMeansTokenizer(torch.zeros(1, 3 * patch_size * patch_size), patch_size)
    x = tok.patches(images).reshape(-1, 3 * patch_size * patch_size)  # (N*h*w, D)
    if x.shape[0] > max_patches:
        x = x[torch.randperm(x.shape[0], generator=g)[:max_patches]]
    if x.shape[0] < codebook_size:
        raise DataError(f"{x.shape[0]} patches are too few for a codebook of {codebook_size}; add images "
                        "or lower --codebook-size")
    codebook, history = kmeans(x, codebook_size, iters, g)
    return PatchKMeansTokenizer(codebook, patch_size), {"patches": int(x.shape[0]), "mse_history": history}


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


# -------------------------------------------------------------------------------------------------- CLI
def _train(args: argparse.Namespace) -> int:
    if args.config:
        from genhancer.config import load_genhancer_config

        cfg = load_genhancer_config(args.config, args.overrides)
        if cfg.latent.space != "vq" or not cfg.latent.vae_path:
            raise ConfigError(f"{args.config}: latent.space must be vq with latent.vae_path set to the tokenizer "
                              "directory to write")
        images, out = args.images or cfg.data.path, args.out or cfg.latent.vae_path
        source = args.source or cfg.data.source
    else:
        if not (args.images and args.out):
            raise ConfigError("give --images DIR and --out DIR, or --config YAML")
        images, out = args.images, args.out
        source = args.source or "folder"
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        if args.skip_existing:
            load_tokenizer(str(out_dir))  # it must at least be a loadable tokenizer
            log.info("%s already holds a tokenizer; nothing to do (--skip-existing)", out_dir)
            return 0
        if not args.overwrite:
            raise ConfigError(f"--out {out_dir} is not empty; pass --overwrite to replace it")
    t0 = time.time()
    data = load_images(images, args.image_size, args.max_images, args.seed, source)
    n_val = max(1, int(round(len(data) * args.val_fraction))) if len(data) > 1 else 0
    train_x, val_x = data[n_val:], data[:n_val]
    tok, stats = train_patch_kmeans(train_x, args.patch_size, args.codebook_size, args.iters,
                                    args.max_patches, args.seed)
    stats.update({"train": reconstruction_stats(tok, train_x[: args.stats_images]),
                  "heldout": reconstruction_stats(tok, val_x) if n_val else None,
                  "images": len(train_x), "heldout_images": n_val, "image_size": int(data.shape[-1]),
                  "wall_s": time.time() - t0})
    settings = {"patch_size": args.patch_size, "codebook_size": args.codebook_size, "iters": args.iters,
                "max_patches": args.max_patches, "max_images": args.max_images, "seed": args.seed,
                "image_size": int(data.shape[-1]), "images": str(images), "source": source}
    with atomic_directory(out_dir) as tmp:
        tok.save_pretrained(tmp, {"image_size": int(data.shape[-1])})
        write_json(tmp / "stats.json", stats)
        write_provenance(tmp, "vq-tokenizer", config=settings, parents=[images],
                         extra={"heldout": stats["heldout"], "train": stats["train"]})
    log.info("wrote %s in %.1f s: held-out %s", out_dir, stats["wall_s"], json.dumps(stats["heldout"]))
    return 0


def _eval(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.tokenizer, args.subfolder)
    data = load_images(args.images, args.image_size, args.max_images, args.seed, args.source)
    stats = reconstruction_stats(tok, data)
    stats.update({"images": len(data), "codebook_size": tok.codebook_size, "downsample": tok.downsample})
    print(json.dumps(stats, indent=2))
    if args.out:
        write_json(args.out, stats)
    return 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.vq", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit the toy patch k-means tokenizer on an image folder")
    t.add_argument("--images", help="image folder (recursive) or webdataset shards")
    t.add_argument("--source", default=None, help="folder (default) | webdataset; with --config: data.source")
    t.add_argument("--out", help="tokenizer directory to write")
    t.add_argument("--config", help="GenHancer YAML: images from data.path, output to latent.vae_path")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides of --config")
    t.add_argument("--patch-size", type=int, default=4, help="pixels per token side (default 4: 64 px -> 16x16)")
    t.add_argument("--codebook-size", type=int, default=512)
    t.add_argument("--iters", type=int, default=20, help="Lloyd iterations")
    t.add_argument("--max-images", type=int, default=4000)
    t.add_argument("--max-patches", type=int, default=200_000, help="patches sampled for k-means")
    t.add_argument("--image-size", type=int, default=None, help="resize images to this side (default: as is)")
    t.add_argument("--val-fraction", type=float, default=0.05, help="held-out images for the reported error")
    t.add_argument("--stats-images", type=int, default=500, help="training images in the reported train error")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--skip-existing", action="store_true", help="do nothing if --out already holds a tokenizer")
    t.add_argument("--overwrite", action="store_true")
    e = sub.add_parser("eval", help="reconstruction error of a tokenizer on an image folder")
    e.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    e.add_argument("--subfolder", default=None)
    e.add_argument("--images", required=True)
    e.add_argument("--source", default="folder", help="folder | webdataset")
    e.add_argument("--image-size", type=int, default=None)
    e.add_argument("--max-images", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="also write the stats to this JSON file")
    args = parser.parse_args(argv)
    if args.command == "train" and args.overrides and not args.config:
        parser.error("overrides need --config")
    return _train(args) if args.command == "train" else _eval(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Training images for GenHancer: sources, one random crop, two normalisations, a resumable per-rank stream.

Sources (``DATA_SOURCES`` registry; ``data.source`` picks one):

- ``folder``: every image file under ``data.path`` (recursive, sorted). The toy world's train split is such a
  folder (``runs/toyworld/train/images/*.png``).
- ``webdataset``: tar shards as img2dataset writes them (``{key}.jpg`` + ``{key}.txt`` + ``{key}.json``;
  captions are unused). ``data.path`` is a directory of ``*.tar`` files, a glob, or a brace range
  ``shards/{00000..00331}.tar``. Read with the stdlib ``tarfile`` (random access through the tar index).

Sharding: every process sees its own disjoint part. Shards are dealt out by rank (``shards[rank::world]``)
when there are at least as many shards as processes, otherwise samples are (``samples[rank::world]``). Each
rank shuffles its part with its own seed (``seed + rank``) and reshuffles every epoch, so the order is a pure
function of (seed, rank, epoch) and the data position is just ``(epoch, index)`` into that permutation —
which is what a checkpoint stores and resume restores. The crop of a sample is drawn from a generator keyed
by (seed, rank, epoch, index), so a resumed run sees exactly the crops it would have seen.

Each image gets ONE ``RandomResizedCrop`` (scale ``data.crop_scale``, ratio 3/4..4/3, bicubic; PIL, no
torchvision) and the same crop is normalised twice: with the encoder's mean/std (``pixel_values``) and to
[-1, 1] (``target``, for the latent space). Images are opened by ``genhancer.utils.images.open_rgb`` (the
suite's one set of rules: CMYK, 16-bit, palette and alpha converted to RGB; empty, truncated, non-image,
over ``data.max_image_pixels`` files refused with a reason). A refused image is skipped and recorded once
per file (``ImageStream.skipped_files``, kept in checkpoints, listed in ``summary.json`` with its reason)
however many epochs meet it; ``data.strict=true`` turns it into a ``DataError`` naming the file. A
truncated shard keeps the members before the damage; the damaged one is skipped as ``bad-tar-member``.
"""

from __future__ import annotations

import glob
import math
import re
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genhancer.config import DataConfig
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, SkippedFiles, open_rgb
from genhancer.utils.logging import get_logger
from genhancer.utils.registry import Registry

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
log = get_logger(__name__)


# --------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class SampleRef:
    """Where one image lives: a file, or a member of a tar shard."""

    path: str
    member: str | None = None

    @property
    def key(self) -> str:
        return f"{self.path}:{self.member}" if self.member is not None else self.path


class ImageSource:
    """The samples of one rank, addressable by index (0 .. len-1)."""

    def __init__(self, refs: Sequence[SampleRef], description: str):
        self.refs = list(refs)
        self.description = description

    def __len__(self) -> int:
        return len(self.refs)

    def read_bytes(self, i: int) -> bytes:
        """The raw bytes of sample ``i``; ``BadImage`` when they cannot be read."""
        try:
            return Path(self.refs[i].path).read_bytes()
        except OSError as e:
            raise BadImage("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None

    def open_image(self, i: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
        """Sample ``i`` decoded as RGB (``open_rgb``'s rules); ``BadImage`` when it cannot be used."""
        return open_rgb(self.read_bytes(i), max_pixels=max_pixels)

    def close(self) -> None:
        pass


DATA_SOURCES: Registry[Callable[[DataConfig, int, int], ImageSource]] = Registry("data source")


def split_by_rank(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Round-robin deal: disjoint across ranks, union = all items."""
    return list(items[rank::world_size])


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path {str(root)!r} is not a directory (expected a folder of images)")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


@DATA_SOURCES.register("folder")
def folder_source(cfg: DataConfig, rank: int, world_size: int) -> ImageSource:
    files = list_images(cfg.path)
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.path!r}; "
            "point data.path at an image folder"
        )
    mine = split_by_rank(files, rank, world_size)
    return ImageSource(
        [SampleRef(str(p)) for p in mine], f"folder {cfg.path}: {len(mine)}/{len(files)} images"
    )


def expand_shards(spec: str) -> list[str]:
    """A directory of .tar files, a glob, or a brace range ``a/{000..012}.tar`` -> sorted shard paths."""
    p = Path(spec)
    if p.is_dir():
        return sorted(str(x) for x in p.glob("*.tar"))
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if m:
        lo, hi = m.group(1), m.group(2)
        width = len(lo)
        names = [
            spec[: m.start()] + str(i).zfill(width) + spec[m.end() :] for i in range(int(lo), int(hi) + 1)
        ]
        return [n for n in names if Path(n).is_file()]
    return sorted(glob.glob(spec))


class TarShardSource(ImageSource):
    """Random access into tar members; one open handle per shard, opened lazily."""

    def __init__(self, refs: Sequence[SampleRef], description: str):
        super().__init__(refs, description)
        self._handles: dict[str, tarfile.TarFile] = {}
        self._members: dict[str, dict[str, tarfile.TarInfo]] = {}
        self._lock = threading.Lock()  # tar handles seek: one reader at a time (decoding runs outside)

    def _open(self, path: str) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
        if path not in self._handles:
            tf = tarfile.open(path, "r")
            self._handles[path] = tf
            self._members[path] = {m.name: m for m in _readable_headers(tf, path, warn=False)}
        return self._handles[path], self._members[path]

    def read_bytes(self, i: int) -> bytes:
        ref = self.refs[i]
        with self._lock:
            try:
                tf, members = self._open(ref.path)
                f = tf.extractfile(members[ref.member])  # type: ignore[index]
                if f is None:
                    raise BadImage("bad-tar-member", "not a regular file")
                return f.read()
            except (tarfile.TarError, OSError, KeyError) as e:  # damaged data, a dangling link, ...
                raise BadImage("bad-tar-member", f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        for tf in self._handles.values():
            tf.close()
        self._handles.clear()
        self._members.clear()


def _readable_headers(tf: tarfile.TarFile, path: str, warn: bool = True) -> list[tarfile.TarInfo]:
    """The members of ``tf`` up to the first damaged header (a truncated shard keeps what comes before)."""
    members: list[tarfile.TarInfo] = []
    try:
        for m in tf:
            members.append(m)
    except tarfile.TarError as e:
        if warn:
            log.warning("shard %s is damaged after %d member(s) (%s); reading those", path, len(members), e)
    return members


def shard_members(path: str) -> list[str]:
    """Image members of one shard, in tar order (one per sample key); links count (reading one that points
    nowhere is a ``bad-tar-member`` skip), directories do not."""
    try:
        with tarfile.open(path, "r") as tf:
            names = [m.name for m in _readable_headers(tf, path) if m.isfile() or m.issym() or m.islnk()]
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot read shard {path}: {e} (fix or remove it from data.path)") from None
    return [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]


@DATA_SOURCES.register("webdataset")
def webdataset_source(cfg: DataConfig, rank: int, world_size: int) -> ImageSource:
    shards = expand_shards(cfg.path)
    if not shards:
        raise DataError(
            f"no .tar shards match data.path {cfg.path!r} (a directory, a glob or a{{000..009}} range)"
        )
    if len(shards) >= world_size:
        mine = split_by_rank(shards, rank, world_size)
        refs = [SampleRef(s, m) for s in mine for m in shard_members(s)]
        how = f"{len(mine)}/{len(shards)} shards"
    else:  # fewer shards than processes: deal samples instead (every rank indexes every shard)
        all_refs = [SampleRef(s, m) for s in shards for m in shard_members(s)]
        refs = split_by_rank(all_refs, rank, world_size)
        how = f"{len(refs)}/{len(all_refs)} samples of {len(shards)} shards"
    if not refs:
        raise DataError(f"rank {rank}: no images in its shards of {cfg.path!r} ({how})")
    return TarShardSource(refs, f"webdataset {cfg.path}: {how}")


def build_source(cfg: DataConfig, rank: int = 0, world_size: int = 1) -> ImageSource:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"bad rank/world size {rank}/{world_size}")
    return DATA_SOURCES[cfg.source](cfg, rank, world_size)


# The files each source reads (a folder's images, a webdataset's shards), listed without opening them: what a
# stage-1 feature cache fingerprints its data by (genhancer.cache). One entry per DATA_SOURCES entry.
SOURCE_FILES: Registry[Callable[[DataConfig], list[Path]]] = Registry("data source (files)")
SOURCE_FILES.register("folder", lambda cfg: list_images(cfg.path))
SOURCE_FILES.register("webdataset", lambda cfg: [Path(s) for s in expand_shards(cfg.path)])


def source_files(cfg: DataConfig) -> list[Path]:
    return SOURCE_FILES[cfg.source](cfg)


# ------------------------------------------------------------------------------------------- transform
def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop with area fraction in ``scale`` and aspect in ``ratio``.

    Same rule as the usual RandomResizedCrop: 10 tries, then a centre crop clamped to ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square: the one deterministic view."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


class CropAndNormalize:
    """PIL image -> (pixel_values (3,S,S) encoder-normalised, target (3,S,S) in [-1, 1]) from one crop."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: tuple[float, float] = (0.9, 1.0),
    ):
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ConfigError(f"data.crop_scale must satisfy 0 < lo <= hi <= 1, got {list(crop_scale)}")
        self.image_size = int(image_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
        self.crop_scale = crop_scale

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = image if image.mode == "RGB" else image.convert("RGB")
        box = random_resized_crop_box(image.width, image.height, self.crop_scale, rng)
        size = (self.image_size, self.image_size)
        crop = image.resize(size, Image.Resampling.BICUBIC, box=box)
        x = (
            torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        )  # (3,S,S)
        return (x - self.mean) / self.std, x * 2.0 - 1.0

    def crop_uint8(self, image: Image.Image, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The crop ``box`` of ``image`` resized as ``__call__`` resizes it: (3, S, S) uint8."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        crop = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, box=box)
        return torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)

    def normalise(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 crops (..., 3, S, S) -> (encoder-normalised, [-1, 1]) with ``__call__``'s exact
        arithmetic."""
        x = crop.float() / 255.0
        return (x - self.mean) / self.std, x * 2.0 - 1.0


# ----------------------------------------------------------------------------------------------- stream
@dataclass
class Batch:
    pixel_values: torch.Tensor  # (B,3,S,S) encoder-normalised
    target: torch.Tensor  # (B,3,S,S) in [-1, 1]
    keys: list[str]  # path or shard:member of each sample

    def model_inputs(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``GenHancerModel.forward`` (a cached batch offers the same method): the
        encoder input in ``dtype``; the target stays float32 (the VAE encodes it in float32, as officially
        done)."""
        return {
            "pixel_values": self.pixel_values.to(device, dtype),
            "target": self.target.to(device, torch.float32),
        }


class ImageStream:
    """Endless per-rank batches with a checkpointable position.

    ``state_dict()`` is the position after the last batch handed out (``{epoch, index}``) and the files
    skipped so far (``skipped_files``: each once, with its reason; ``skipped`` is their number). A file
    already known to be bad is passed over without being read again. ``num_workers > 0`` decodes ahead in
    threads (PIL releases the GIL while decoding); the position and the skips still count only what was
    handed out, in order, on the consuming thread.
    """

    def __init__(
        self,
        source: ImageSource,
        transform: CropAndNormalize,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        strict: bool = False,
        num_workers: int = 0,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.transform = transform
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.strict = strict
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self.epoch = 0
        self.index = 0
        self.skipped_files = SkippedFiles(logger=log)
        self._perm_epoch = -1
        self._perm: np.ndarray = np.arange(0)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def skipped(self) -> int:
        """How many files of this rank were skipped (each counted once)."""
        return len(self.skipped_files)

    # position ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "skipped": self.skipped,
            "skipped_files": self.skipped_files.as_list(),
            "num_samples": len(self.source),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state.get("num_samples", len(self.source)))
        if n != len(self.source):
            raise DataError(
                f"the data changed since the checkpoint: rank {self.rank} had {n} samples, "
                f"now {len(self.source)}; "
                "resume with the same data and number of processes, or start fresh with train.resume=never"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.skipped_files = SkippedFiles(logger=log)
        self.skipped_files.extend(state.get("skipped_files", []))

    def permutation(self, epoch: int) -> np.ndarray:
        """This rank's order for ``epoch``: seeded by (seed + rank, epoch)."""
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed + self.rank, epoch]).permutation(len(self.source))
            self._perm_epoch = epoch
        return self._perm

    # loading ----------------------------------------------------------------------------------------
    def _key(self, epoch: int, index: int) -> str:
        return self.source.refs[int(self.permutation(epoch)[index])].key

    def _load(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor, str] | BadImage:
        """The sample at (epoch, index), or why it cannot be used (recorded by the consumer, in order)."""
        i = int(self.permutation(epoch)[index])
        key = self.source.refs[i].key
        if key in self.skipped_files:
            return BadImage("known", "skipped before")
        try:
            image = self.source.open_image(i, self.max_pixels)
        except BadImage as bad:
            return bad
        rng = np.random.default_rng([self.seed, self.rank, epoch, index])
        pv, tgt = self.transform(image, rng)
        return pv, tgt, key

    def _skip(self, key: str, bad: BadImage) -> None:
        """A sample that cannot be used: an error naming it (``data.strict``), else recorded once."""
        if self.strict:
            raise DataError(
                f"cannot read image {key}: {bad.reason}: {bad.detail} "
                "(fix or remove the file, or set data.strict=false to skip bad images)"
            )
        self.skipped_files.add(key, bad.reason, bad.detail)

    def _positions(self) -> Iterator[tuple[int, int]]:
        epoch, index = self.epoch, self.index
        n = len(self.source)
        while True:
            if index >= n:
                epoch, index = epoch + 1, 0
            yield epoch, index
            index += 1

    def _items(self) -> Iterator[Any]:
        """Usable samples in stream order; the position moves past every sample consumed, readable or not."""
        n = len(self.source)
        positions = self._positions()
        pending: list[tuple[tuple[int, int], Future[Any] | None]] = []
        if self.num_workers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="genhancer-data")
        lookahead = max(1, 2 * self.batch_size) if self._pool is not None else 1
        bad_in_a_row = 0
        while True:
            while len(pending) < lookahead:
                pos = next(positions)
                pending.append((pos, self._pool.submit(self._load, *pos) if self._pool is not None else None))
            pos, fut = pending.pop(0)
            item = fut.result() if fut is not None else self._load(*pos)
            self.epoch, self.index = pos[0], pos[1] + 1
            if isinstance(item, BadImage):
                self._skip(self._key(*pos), item)
                bad_in_a_row += 1
                if bad_in_a_row >= n:
                    raise DataError(
                        f"rank {self.rank}: none of the {n} images of {self.source.description} could be "
                        f"read (e.g. {self._key(*pos)}: {item.reason})"
                    )
                continue
            bad_in_a_row = 0
            yield item

    def __iter__(self) -> Iterator[Batch]:
        items = self._items()
        while True:
            chunk = [next(items) for _ in range(self.batch_size)]
            yield Batch(
                pixel_values=torch.stack([x[0] for x in chunk]),
                target=torch.stack([x[1] for x in chunk]),
                keys=[x[2] for x in chunk],
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.source.close()


def build_stream(
    cfg: DataConfig,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> ImageStream:
    """The training stream of one process (``rank`` of ``world_size``)."""
    source = build_source(cfg, rank, world_size)
    transform = CropAndNormalize(image_size, mean, std, tuple(cfg.crop_scale))  # type: ignore[arg-type]
    log.info("data: %s (rank %d of %d)", source.description, rank, world_size)
    return ImageStream(
        source,
        transform,
        batch_size,
        seed=seed,
        rank=rank,
        strict=cfg.strict,
        num_workers=cfg.num_workers,
        max_pixels=cfg.max_image_pixels,
    )

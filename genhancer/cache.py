"""Stage-1 feature cache: what the frozen encoder and the latent space make of each crop view, computed once.

In stage 1 the encoder and the latent space never change, so a crop's global token and latent target are the
same every time it is drawn. With ``cache.enabled`` the trainer computes them once per crop view and then
reads them back each step instead of decoding, cropping, and running encoder + VAE. Per image, V views
(``cache.views`` random crops drawn with ``data.crop_scale`` and ``cache.seed``, default ``train.seed``;
0 = the centre crop only):

  global_token  (V, D)             the encoder's global token
  patch_tokens  (V, N, Dp)         only when conditioning.local_token_fraction > 0 (the local-token ablation)
  crop          (V, 3, S, S) uint8 pixel space: the crop itself; the [-1, 1] target is rebuilt from it exactly
  latent_input  (V, ...)           other spaces: ``latent.encode_for_cache`` of the crop: the VAE
                                   posterior's moments (mean, logvar), so the posterior is still sampled
                                   every step; VQ ids

Layout of the cache directory (``cache.dir``, default ``<train.run_dir>/../cache``, shared by the stages):
  manifest.json                           format, fingerprint digests, views, tensor specs, keys per shard,
                                          images that could not be read
  shards/part-RRRRR-NNNNN.safetensors     one row per image (the part's order) x V views

Fingerprint (one digest per part, so the log can say what changed): the encoder (config, processor and
weights: sha256, or size + mtime above 256 MiB; input size and normalisation; a LoRA in init_from), the latent
space (config + autoencoder files), the crops (crop_scale, views, seed), the compute dtypes and the data (the
source's files: paths relative to the deepest directory holding them all, sizes, modification times). Any
difference -> the cache is rebuilt. No absolute path enters it (its keys are relative paths too): data and
model directories moved with their files' times (``mv``, ``cp -a``, ``rsync -a``) keep the cache; a copy that
renews the times (data files, model files above 256 MiB) rebuilds it. Every process builds a disjoint part
of the images into a staging directory (each part written atomically), then rank 0 assembles the cache
atomically: a run killed mid-build never leaves a cache that would be used, and a rerun reuses finished parts.
With several nodes, ``cache.dir`` must be on a filesystem they share.

Reading (``CachedStream``) keeps everything else of the uncached stream (it is an ``ImageStream``): the same
per-rank samples (disjoint across ranks), order, position and checkpoint state; each drawn sample gets one of
its views, chosen by a generator keyed by (seed, rank, epoch, index). An image that could not be read at build
time (the manifest keeps its reason) is skipped and recorded once when drawn (``data.strict=true``: an error
naming it), as without the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genhancer.config import GenHancerConfig
from genhancer.data import (
    CropAndNormalize,
    ImageSource,
    ImageStream,
    SampleRef,
    build_source,
    build_stream,
    centre_crop_box,
    random_resized_crop_box,
    source_files,
)
from genhancer.latents import PixelSpace
from genhancer.stages import STAGES
from genhancer.utils.config import to_dict
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import atomic_directory, read_json, write_json
from genhancer.utils.images import BadImage, SkippedFiles
from genhancer.utils.logging import get_logger, progress

FORMAT = 3  # 2: skipped images carry their reason; 3: keys and data stamps relative to the data root
MANIFEST = "manifest.json"
PART_INDEX = "part.json"
_HASH_LIMIT = 256 * 2**20  # files up to this size are hashed; larger ones are stamped by size + mtime
_SHARD_BYTES = 256 * 2**20  # a shard is written once its rows hold about this many bytes
log = get_logger(__name__)


def cache_dir(cfg: GenHancerConfig) -> Path:
    """``cache.dir``, or ``<train.run_dir>/../cache`` when unset."""
    return Path(cfg.cache.dir) if cfg.cache.dir else Path(cfg.train.run_dir).parent / "cache"


def num_views(cfg: GenHancerConfig) -> int:
    return cfg.cache.views if cfg.cache.views > 0 else 1


# ------------------------------------------------------------------------------------------- fingerprint
def _file_stamp(path: Path) -> list[Any]:
    st = path.stat()
    if st.st_size <= _HASH_LIMIT:
        return [path.name, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest()]
    return [path.name, st.st_size, st.st_mtime_ns]


def _model_dir_stamp(path: str | None, subfolder: str | None = None) -> Any:
    """The files that define a model directory (JSON configs and weights); a hub id stands for itself."""
    if not path:
        return None
    d = Path(path) / (subfolder or "")
    if not d.is_dir():
        return {"id": path, "subfolder": subfolder}
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    return {"files": [_file_stamp(p) for p in files]}  # by content, not place: a moved directory is the same


def data_root(files: list[Path]) -> str:
    """The deepest directory holding every data file (absolute, links not followed): the cache's keys and
    its data stamp are relative to it, so a moved data directory keeps its cache."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])


def relative_key(ref: SampleRef, root: str) -> str:
    """The cache's key of ``ref``: its key with the file's path relative to ``root`` (``data_root``)."""
    return SampleRef(os.path.relpath(os.path.abspath(ref.path), root), ref.member).key


def crop_seed(cfg: GenHancerConfig) -> int:
    """The seed of the cached crop views: ``cache.seed``, or ``train.seed`` when that is unset."""
    return cfg.train.seed if cfg.cache.seed is None else cfg.cache.seed


def config_key(cfg: GenHancerConfig) -> str:
    """A short digest of everything in a run config that a cache depends on (encoder, latent space, local
    tokens, crops, data, compute): runs with the same key can share one ``cache.dir``; runs with different
    keys need their own (a cache directory holds one fingerprint and is rebuilt when it changes)."""
    parts = {
        "encoder": to_dict(cfg.encoder),
        "latent": to_dict(cfg.latent),
        "patch_tokens": cfg.conditioning.local_token_fraction > 0,
        "data": to_dict(cfg.data),
        "cache": {"views": cfg.cache.views, "seed": crop_seed(cfg)},
        "precision": cfg.train.mixed_precision,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def fingerprint_parts(
    cfg: GenHancerConfig, image_spec: dict[str, Any], dtypes: dict[str, str], files: list[Path] | None = None
) -> dict[str, Any]:
    """What a cache is made of, by part: encoder, latent, crops, compute, data (see the module docstring).
    ``files``: the data source's files, when already listed."""
    lora = Path(cfg.init_from) / "encoder_lora" if cfg.init_from else None
    files = source_files(cfg.data) if files is None else files
    if not files:
        raise DataError(f"data.path {cfg.data.path!r} ({cfg.data.source}) holds no data to cache")
    return {
        "format": FORMAT,
        "encoder": {
            "family": cfg.encoder.family,
            "dir": _model_dir_stamp(cfg.encoder.path),
            "init": cfg.encoder.init,  # a random-init encoder's features are not the pretrained one's
            "image_spec": image_spec,
            "patch_tokens": cfg.conditioning.local_token_fraction > 0,
            "lora": _model_dir_stamp(str(lora)) if lora is not None and lora.is_dir() else None,
        },
        "latent": {
            "config": to_dict(cfg.latent),
            "dir": _model_dir_stamp(cfg.latent.vae_path, cfg.latent.vae_subfolder),
        },
        "crops": {
            "crop_scale": [float(x) for x in cfg.data.crop_scale],
            "views": cfg.cache.views,
            "seed": crop_seed(cfg),
            "max_image_pixels": cfg.data.max_image_pixels,
        },
        "compute": dtypes,
        "data": {"source": cfg.data.source, "files": _data_stamp(files)},
    }


def _data_stamp(files: list[Path]) -> list[list[Any]]:
    """[path relative to the data root, size, mtime] per file."""
    root = data_root(files)
    stamps = []
    for p in files:
        st = p.stat()
        stamps.append([os.path.relpath(os.path.abspath(p), root), st.st_size, st.st_mtime_ns])
    return stamps


def digests(parts: dict[str, Any]) -> dict[str, str]:
    return {
        k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
        for k, v in parts.items()
    }


def cache_status(directory: Path, expected: dict[str, str]) -> str | None:
    """None when ``directory`` holds a complete cache with these digests, else why it must be (re)built."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        if directory.exists() and any(directory.iterdir()):
            raise ConfigError(
                f"cache.dir={directory} exists and is not a feature cache (no {MANIFEST}); "
                "point cache.dir at a new or empty directory"
            )
        return "no cache yet"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return f"{MANIFEST} is unreadable"
    saved = manifest.get("digests", {})
    changed = [k for k in expected if saved.get(k) != expected[k]]
    if changed:
        return f"{', '.join(changed)} changed since it was built"
    missing = [s["file"] for s in manifest["shards"] if not (directory / s["file"]).is_file()]
    if missing:
        return f"{len(missing)} shard file(s) missing (e.g. {missing[0]})"
    return None


# ------------------------------------------------------------------------------------------------- build
class _ShardWriter:
    """Collects rows (one per image: tensors (V, ...)) and writes a safetensors shard every ~256 MiB."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.rows: dict[str, list[torch.Tensor]] = {}
        self.keys: list[str] = []
        self.nbytes = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, keys: list[str], tensors: dict[str, torch.Tensor]) -> None:
        """keys (n,); tensors name -> (n, V, ...)."""
        for name, t in tensors.items():
            self.rows.setdefault(name, []).append(t.detach().to("cpu").contiguous())
            self.nbytes += t.numel() * t.element_size()
        self.keys.extend(keys)
        if self.nbytes >= _SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.keys:
            return
        name = f"{self.prefix}-{len(self.shards):05d}.safetensors"
        save_file({k: torch.cat(v).contiguous() for k, v in self.rows.items()}, str(self.directory / name))
        self.shards.append({"file": name, "keys": self.keys})
        self.rows, self.keys, self.nbytes = {}, [], 0


def _view_crops(
    image: Image.Image, item: int, cfg: GenHancerConfig, transform: CropAndNormalize
) -> torch.Tensor:
    """The V crop views of global item ``item``: (V, 3, S, S) uint8. View v's box comes from a generator keyed
    by (seed, item, v), so a rebuild makes the same views."""
    image = image.convert("RGB")
    if cfg.cache.views == 0:
        boxes = [centre_crop_box(image.width, image.height)]
    else:
        boxes = [
            random_resized_crop_box(
                image.width,
                image.height,
                tuple(cfg.data.crop_scale),  # type: ignore[arg-type]
                np.random.default_rng([crop_seed(cfg), item, v]),
            )
            for v in range(cfg.cache.views)
        ]
    return torch.stack([transform.crop_uint8(image, box) for box in boxes])


def _read_views(
    source: ImageSource, item: int, cfg: GenHancerConfig, transform: CropAndNormalize
) -> torch.Tensor | BadImage:
    """The crop views of ``item`` (see ``_view_crops``), or why the image cannot be used."""
    key = source.refs[item].key
    try:
        image = source.open_image(item, cfg.data.max_image_pixels)
    except BadImage as bad:
        if cfg.data.strict:
            raise DataError(
                f"cannot read image {key}: {bad.reason}: {bad.detail} (fix or remove the file, or set "
                "data.strict=false to skip bad images)"
            ) from None
        return bad
    return _view_crops(image, item, cfg, transform)


def _build_part(
    out: Path,
    items: list[int],
    source: ImageSource,
    model: Any,
    cfg: GenHancerConfig,
    transform: CropAndNormalize,
    *,
    root: str,
    rank: int,
    device: torch.device | str,
    input_dtype: torch.dtype,
) -> None:
    """Views of the global ``items`` -> ``out``: shards + part.json (keys per shard, unreadable images),
    keyed by ``relative_key(ref, root)``."""
    writer = _ShardWriter(out, f"part-{rank:05d}")
    skipped = SkippedFiles(logger=log)  # logged by the files' own keys, written by the cache's
    cache_key: dict[str, str] = {}
    pixel = isinstance(model.latent, PixelSpace)
    chunk = max(1, cfg.cache.build_batch_size // num_views(cfg))
    for start in progress(range(0, len(items), chunk), desc="stage-1 cache", unit="batch"):
        keys, crops = [], []
        for item in items[start : start + chunk]:
            views = _read_views(source, item, cfg, transform)
            if isinstance(views, BadImage):
                skipped.add(source.refs[item].key, views.reason, views.detail)
                cache_key[source.refs[item].key] = relative_key(source.refs[item], root)
            else:
                keys.append(relative_key(source.refs[item], root))
                crops.append(views)
        if not crops:
            continue
        u8 = torch.stack(crops)  # (n, V, 3, S, S)
        pixel_values, target = transform.normalise(u8.flatten(0, 1))
        feats = model.cache_features(pixel_values.to(device, input_dtype), target.to(device, torch.float32))
        if pixel:  # the target is the crop itself: store it as uint8 and rebuild it exactly when read
            del feats["latent_input"]
            feats["crop"] = u8.flatten(0, 1)
        writer.add(keys, {k: v.unflatten(0, u8.shape[:2]) for k, v in feats.items()})
    writer.flush()
    unreadable = [{**e, "key": cache_key[e["key"]]} for e in skipped.as_list()]
    write_json(out / PART_INDEX, {"shards": writer.shards, "skipped": unreadable})


def _part_is_complete(part: Path) -> bool:
    if not (part / PART_INDEX).is_file():
        return False
    return all((part / s["file"]).is_file() for s in read_json(part / PART_INDEX)["shards"])


def _assemble(directory: Path, staging: Path, world_size: int, head: dict[str, Any]) -> None:
    """Rank 0: the parts -> one cache directory with its manifest, replacing ``directory`` atomically."""
    with atomic_directory(directory) as tmp:
        (tmp / "shards").mkdir()
        shards: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for r in range(world_size):
            part = staging / f"part-{r:05d}"
            index = read_json(part / PART_INDEX)
            for s in index["shards"]:
                os.replace(part / s["file"], tmp / "shards" / s["file"])
                shards.append({"file": f"shards/{s['file']}", "keys": s["keys"]})
            skipped.extend(index["skipped"])
        if not shards:
            raise DataError(
                f"stage-1 cache: none of the images of data.path could be read ({len(skipped)} tried)"
            )
        tensors = _tensor_specs(tmp / shards[0]["file"])
        write_json(
            tmp / MANIFEST,
            {
                **head,
                "images": sum(len(s["keys"]) for s in shards),
                "skipped": skipped,
                "tensors": tensors,
                "shards": shards,
            },
        )
    shutil.rmtree(staging, ignore_errors=True)


def _tensor_specs(shard: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as f:
        return {
            k: {"dtype": str(f.get_slice(k).get_dtype()), "shape": list(f.get_slice(k).get_shape()[2:])}
            for k in f.keys()
        }


def _remove_leftovers(directory: Path, keep: Path) -> None:
    """What killed builds left next to ``directory``: staging of other fingerprints, half-assembled caches."""
    patterns = (f".{directory.name}-build-*", f".tmp-{directory.name}-*", f".old-{directory.name}-*")
    for old in (p for pattern in patterns for p in directory.parent.glob(pattern)):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _transform(cfg: GenHancerConfig, model: Any) -> CropAndNormalize:
    spec = model.encoder_image_spec()
    scale = tuple(cfg.data.crop_scale)
    return CropAndNormalize(int(spec["image_size"]), spec["mean"], spec["std"], scale)  # type: ignore[arg-type]


def build_cache(
    directory: Path,
    cfg: GenHancerConfig,
    model: Any,
    parts: dict[str, Any],
    *,
    rank: int,
    world_size: int,
    barrier: Callable[[], None],
    device: torch.device | str,
    input_dtype: torch.dtype,
) -> None:
    """Every rank computes items[rank::world_size] into a staging part; rank 0 assembles (see module docs)."""
    digest = digests(parts)
    tag = hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:16]
    staging = directory.parent / f".{directory.name}-build-{tag}-of{world_size}"
    if rank == 0:
        _remove_leftovers(directory, keep=staging)
    barrier()
    part = staging / f"part-{rank:05d}"
    if _part_is_complete(part):
        log.info("stage-1 cache: reusing the finished part %s", part)
    else:
        source = build_source(cfg.data, 0, 1)  # every image, in one global order; this rank takes its share
        items = list(range(rank, len(source), world_size))
        try:
            with atomic_directory(part) as tmp:
                _build_part(
                    tmp,
                    items,
                    source,
                    model,
                    cfg,
                    _transform(cfg, model),
                    root=data_root(source_files(cfg.data)),
                    rank=rank,
                    device=device,
                    input_dtype=input_dtype,
                )
        finally:
            source.close()
    barrier()
    if rank == 0:
        head = {
            "format": FORMAT,
            "digests": digest,
            "views": cfg.cache.views,
            "num_views": num_views(cfg),
            "image_size": int(model.encoder_image_spec()["image_size"]),
            "data": {"source": cfg.data.source, "path": cfg.data.path, "files": len(parts["data"]["files"])},
        }
        _assemble(directory, staging, world_size, head)
    barrier()


# -------------------------------------------------------------------------------------------------- read
class FeatureCache:
    """Random access to a built cache: ``read(key, view) -> {tensor name: (...)}``, keyed by ``relative_key``
    (``key_of`` maps a sample of the data in ``data_root``, where it is now). A cache of at most
    ``max_ram_bytes`` is held in memory (each shard loaded on first use), a larger one read per view from
    disk."""

    def __init__(
        self, directory: str | Path, max_ram_bytes: int = 4 * 2**30, *, data_root: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.data_root = data_root
        self.manifest = read_json(self.directory / MANIFEST, missing=f"no stage-1 cache at {self.directory}")
        self.num_views = int(self.manifest["num_views"])
        self.names = list(self.manifest["tensors"])
        self._where = {
            key: (s, row)
            for s, shard in enumerate(self.manifest["shards"])
            for row, key in enumerate(shard["keys"])
        }
        self.skipped = {e["key"]: BadImage(e["reason"], e["detail"]) for e in self.manifest["skipped"]}
        self._open: dict[int, tuple[Any, dict[str, Any]]] = {}
        size = sum((self.directory / s["file"]).stat().st_size for s in self.manifest["shards"])
        self.in_memory = size <= max_ram_bytes

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def key_of(self, ref: SampleRef) -> str:
        """The cache's key of a sample of the data where it is now."""
        if self.data_root is None:
            raise ValueError(f"FeatureCache({self.directory}) has no data_root (open_cache gives it one)")
        return relative_key(ref, self.data_root)

    def moments(self, name: str) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(count, sum x, sum x x^T) of tensor ``name`` (one vector per view) over every image and view,
        read shard by shard, in float64."""
        count, total, outer = 0, torch.zeros(()), torch.zeros(())
        for shard in range(len(self.manifest["shards"])):
            x = self._slices(shard)[name][:].double()
            x = x.reshape(-1, x.shape[-1])
            count, total, outer = count + len(x), total + x.sum(0), outer + x.T @ x
        return count, total, outer

    def read(self, key: str, view: int) -> dict[str, torch.Tensor]:
        """One view of one image: {name: tensor of the per-view shape in the manifest}."""
        shard, row = self._where[key]
        return {name: sl[row, view] for name, sl in self._slices(shard).items()}

    def _slices(self, shard: int) -> dict[str, Any]:
        from safetensors import safe_open

        if shard not in self._open:
            f = safe_open(str(self.directory / self.manifest["shards"][shard]["file"]), framework="pt")
            if self.in_memory:  # whole tensors: indexing one view is then a view, not a file read
                self._open[shard] = (None, {name: f.get_tensor(name) for name in self.names})
            else:
                self._open[shard] = (
                    f,
                    {name: f.get_slice(name) for name in self.names},
                )  # f keeps the map open
        return self._open[shard][1]

    def close(self) -> None:
        self._open.clear()


@dataclass
class CachedBatch:
    """A batch of precomputed features: what ``GenHancerModel.forward`` takes instead of pixels."""

    global_token: torch.Tensor  # (B, D)
    latent_input: torch.Tensor  # (B, ...): what latent.from_cache takes
    keys: list[str]  # path or shard:member of each sample
    views: list[int]  # which view of each sample
    patch_tokens: torch.Tensor | None = None  # (B, N, Dp), local-token ablation only

    def model_inputs(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``GenHancerModel.forward``: encoder features cast to ``dtype``; the latent
        input stays float32 (VAE moments) or ids."""
        out = {
            "global_token": self.global_token.to(device, dtype),
            "latent_input": self.latent_input.to(device),
        }
        if self.patch_tokens is not None:
            out["patch_tokens"] = self.patch_tokens.to(device, dtype)
        return out


class CachedStream(ImageStream):
    """``ImageStream`` whose samples come from a ``FeatureCache``: same ranks, order, position and state."""

    def __init__(
        self,
        source: ImageSource,
        cache: FeatureCache,
        transform: CropAndNormalize,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__(source, transform, batch_size, seed=seed, rank=rank, strict=strict)
        self.cache = cache
        self.cache_keys = [cache.key_of(r) for r in source.refs]  # per sample of this rank
        unknown = [
            r.key for r, k in zip(source.refs, self.cache_keys) if k not in cache and k not in cache.skipped
        ]
        if unknown:
            raise DataError(
                f"stage-1 cache {cache.directory} lacks {len(unknown)} image(s) of data.path (e.g. "
                f"{unknown[0]}); delete the cache directory to rebuild it"
            )

    def _load(self, epoch: int, index: int) -> tuple[str, int, dict[str, torch.Tensor]] | BadImage:  # type: ignore[override]
        i = int(self.permutation(epoch)[index])
        key, cached = self.source.refs[i].key, self.cache_keys[i]
        if cached not in self.cache:  # unreadable when the cache was built: skipped as ImageStream skips it
            return self.cache.skipped[cached]
        view = int(np.random.default_rng([self.seed, self.rank, epoch, index]).integers(self.cache.num_views))
        return key, view, self.cache.read(cached, view)

    def __iter__(self) -> Iterator[CachedBatch]:  # type: ignore[override]
        items = self._items()
        while True:
            yield self._collate([next(items) for _ in range(self.batch_size)])

    def _collate(self, items: list[tuple[str, int, dict[str, torch.Tensor]]]) -> CachedBatch:
        stacked = {name: torch.stack([t[name] for _, _, t in items]) for name in items[0][2]}
        if "crop" in stacked:  # pixel space: the target, from the uint8 crop as the uncached path makes it
            stacked["latent_input"] = self.transform.normalise(stacked.pop("crop"))[1]
        return CachedBatch(
            global_token=stacked["global_token"],
            latent_input=stacked["latent_input"],
            keys=[k for k, _, _ in items],
            views=[v for _, v, _ in items],
            patch_tokens=stacked.get("patch_tokens"),
        )

    def close(self) -> None:
        super().close()
        self.cache.close()


# ----------------------------------------------------------------------------------------- the trainer's
def open_cache(
    cfg: GenHancerConfig,
    model: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    device: torch.device | str = "cpu",
    input_dtype: torch.dtype = torch.float32,
) -> FeatureCache:
    """The cache of ``cfg`` for ``model`` (a stage-1 GenHancerModel), built first when missing or stale."""
    directory = cache_dir(cfg)
    dtypes = {
        "encoder": str(next(model.encoder.parameters()).dtype),
        "inputs": str(input_dtype),
        "latent": str(next(iter(model.latent.parameters()), torch.empty(0)).dtype),
    }
    files = source_files(cfg.data)
    parts = fingerprint_parts(cfg, model.encoder_image_spec(), dtypes, files)
    why = cache_status(directory, digests(parts))
    barrier()  # every rank has decided before anyone may replace the directory
    if why is not None:
        log.info("stage-1 cache %s: %s; building it (%d view(s) per image)", directory, why, num_views(cfg))
        build_cache(
            directory,
            cfg,
            model,
            parts,
            rank=rank,
            world_size=world_size,
            barrier=barrier,
            device=device,
            input_dtype=input_dtype,
        )
    cache = FeatureCache(directory, data_root=data_root(files))
    log.info(
        "stage-1 cache %s: %d images x %d view(s), %d unreadable",
        directory,
        len(cache),
        cache.num_views,
        len(cache.skipped),
    )
    return cache


def training_stream(
    cfg: GenHancerConfig,
    model: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    device: torch.device | str = "cpu",
    input_dtype: torch.dtype = torch.float32,
) -> ImageStream:
    """The batches a training stage reads: a ``CachedStream`` when ``cache.enabled`` and the stage's encoder
    is frozen, else the image stream. Either kind's batches have ``model_inputs(device, dtype)``."""
    spec = model.encoder_image_spec()
    common = dict(batch_size=cfg.train.batch_size, seed=cfg.train.seed, rank=rank)
    use_cache = cfg.cache.enabled and STAGES[cfg.stage].encoder == "frozen"
    if cfg.cache.enabled and not use_cache:
        log.info(
            "cache.enabled is ignored in stage %s: its encoder trains, so its features change every step",
            cfg.stage,
        )
    if not use_cache:
        return build_stream(
            cfg.data,
            image_size=int(spec["image_size"]),
            mean=spec["mean"],
            std=spec["std"],
            world_size=world_size,
            **common,
        )  # type: ignore[arg-type]
    cache = open_cache(
        cfg, model, rank=rank, world_size=world_size, barrier=barrier, device=device, input_dtype=input_dtype
    )
    source = build_source(cfg.data, rank, world_size)
    log.info("data: %s (rank %d of %d), from the stage-1 cache", source.description, rank, world_size)
    return CachedStream(source, cache, _transform(cfg, model), strict=cfg.data.strict, **common)  # type: ignore[arg-type]

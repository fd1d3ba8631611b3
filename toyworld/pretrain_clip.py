"""``python -m toyworld pretrain-clip --world DIR --out DIR``: the toy world's "OpenAI CLIP".

A small ``transformers.CLIPModel`` (sized by :class:`~toyworld.models.ToyClipShape`) is built from
config with a byte-level BPE tokenizer trained on the toy *train* captions (+ the zero-shot template words;
never the benchmark statements), trained contrastively on ``DIR/train``, and saved as a normal Hugging Face
directory (safetensors, config, image processor, tokenizer) that loads with ``CLIPModel`` /
``AutoProcessor`` / ``AutoTokenizer``. Beside the model, ``OUT`` holds ``provenance.json``, ``config.yaml``
(resolved), ``metrics.jsonl`` (loss per log step) and ``training_summary.json`` (steps, wall time, images/s,
final loss, held-out zero-shot shape accuracy, toy MMVP-VLM score per pattern).

Reads only the world's files (the data contract of ``python -m toyworld build``):
  DIR/train/scenes.jsonl  lines {"image": "images/000000.png", "caption": "...", "scene": {...}}
  DIR/val/zeroshot_shape.json  {"template": "a photo of a {}.", "classes": [...],
                               "items": [{"image", "label"}]}
  DIR/mmvp_vlm/Questions.csv + "MLLM_VLM Images/<type>/<qid>.jpg"  (official MMVP-VLM layout; optional)

Caching: when OUT already holds a complete toy CLIP made from the same world with the same config hash, the
command prints ``cached`` and returns 0; ``--force`` retrains. The output directory is written atomically.

Hyperparameters live in :class:`PretrainClipConfig` (the defaults *are* the toy world's CLIP);
``configs/toyworld/clip.yaml`` is its YAML instance (regenerate it with ``--print-config``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from eval.mmvp_vlm import MMVPPair, pair_logits_batched, read_benchmark, score_pairs
from eval.zeroshot import predict_classes, read_spec
from genhancer.utils.cli import entry_point
from genhancer.utils.config import config_hash
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import atomic_directory, read_jsonl
from genhancer.utils.logging import get_logger, progress
from toyworld.cached_run import CachedRun, MetricsLog, run_parser, start_run
from toyworld.models import (
    CLIP_MEAN,
    CLIP_STD,
    ToyClipShape,
    clip_processor,
    init_positions_sincos,
    new_toy_clip,
    save_clip_dir,
    train_clip_tokenizer,
)

KIND = "toy-clip"
SUMMARY_FILE = "training_summary.json"
# Files that make OUT a complete toy CLIP (anything missing means: not cached, retrain).
RUN = CachedRun(
    KIND,
    SUMMARY_FILE,
    (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "provenance.json",
        SUMMARY_FILE,
    ),
)

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the train captions + the zero-shot template filled with the class names."""

    vocab_size: int = 512
    max_length: int = 77  # as OpenAI CLIP: evaluators pad statements to the tokenizer's max length


@dataclass
class TrainConfig:
    """Contrastive (symmetric InfoNCE) training; multi-positive targets for duplicate captions."""

    steps: int = 2500  # at 1000 the loss still fell and zero-shot shape was 0.75 (configs/toyworld/clip.yaml)
    batch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 50
    schedule: Literal["cosine", "constant"] = "cosine"  # after linear warmup; cosine decays to 0
    weight_decay: float = 0.1  # on matrices only (not biases, norms, embeddings' gains or logit_scale)
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    max_logit_scale: float = 100.0  # CLIP clamps exp(logit_scale) at 100
    shift_px: int = 2  # augmentation: random translation by up to this many pixels (edge-replicated)
    seed: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("train.steps must be >= 1 and train.batch_size >= 2")
        if self.warmup_steps < 0 or self.shift_px < 0 or self.log_every < 1:
            raise ValueError("train.warmup_steps and train.shift_px must be >= 0, train.log_every >= 1")


@dataclass
class PretrainClipConfig:
    """Everything that determines the toy CLIP (its hash is the cache key, with the world's fingerprint)."""

    model: ToyClipShape = field(default_factory=ToyClipShape)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 512


# ---------------------------------------------------------------------------------------------- world
@dataclass
class WorldFiles:
    """Resolved paths of the world files this command reads."""

    root: Path
    train_scenes: Path
    zeroshot: Path
    mmvp: Path | None


def world_files(world: str | Path) -> WorldFiles:
    root = Path(world)
    hint = f"build the world first: python -m toyworld build --out {root}"
    if not root.is_dir():
        raise DataError(f"toy world directory not found: {root} ({hint})")
    train = root / "train" / "scenes.jsonl"
    zeroshot = root / "val" / "zeroshot_shape.json"
    for p in (train, zeroshot):
        if not p.is_file():
            raise DataError(f"{root} is not a complete toy world: {p} is missing ({hint})")
    mmvp = root / "mmvp_vlm"
    return WorldFiles(root, train, zeroshot, mmvp if (mmvp / "Questions.csv").is_file() else None)


def world_fingerprint(files: WorldFiles) -> str:
    """Hash of the world's index files (captions, scenes, labels, questions): the world half of the cache
    key."""
    h = hashlib.sha256()
    paths = [files.train_scenes, files.zeroshot] + ([files.mmvp / "Questions.csv"] if files.mmvp else [])
    for p in paths:
        h.update(p.relative_to(files.root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def load_images(paths: Sequence[Path], image_size: int, desc: str = "loading images") -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor (N, 3, S, S); images of another size are resized (bicubic)."""
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, p in enumerate(progress(paths, desc=desc, leave=False, disable=len(paths) < 2000)):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BICUBIC)
                out[i] = np.asarray(im)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {p}: {e} (rebuild the world or remove the record)") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)


def read_train_split(files: WorldFiles) -> tuple[list[Path], list[str]]:
    """Image paths and captions of DIR/train/scenes.jsonl; a bad record is a DataError naming its line."""
    records = read_jsonl(files.train_scenes)
    if not records:
        raise DataError(f"{files.train_scenes}: no records (rebuild the world)")
    paths, captions = [], []
    for i, rec in enumerate(records, 1):
        if not isinstance(rec.get("image"), str) or not isinstance(rec.get("caption"), str):
            raise DataError(f"{files.train_scenes}, line {i}: needs string keys 'image' and 'caption'")
        paths.append(files.train_scenes.parent / rec["image"])
        captions.append(rec["caption"])
    return paths, captions


# ---------------------------------------------------------------------------------------------- model io
def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float pixel_values (B, 3, S, S), exactly as the saved CLIPImageProcessor does."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, 3, S, S) by its own random offset in [-max_shift, max_shift]
    (edge-replicated)."""
    if max_shift <= 0:
        return images
    b, _, s, _ = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # (B, 3, S+2m, S+2m)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (torch.arange(s)[None] + dy[:, None]).to(images.device)  # (B, S)
    cols = (torch.arange(s)[None] + dx[:, None]).to(images.device)  # (B, S)
    bidx = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def zeroshot_accuracy(model: Any, processor: Any, spec: dict[str, Any], batch_size: int) -> float:
    """Top-1 accuracy (0-1) on a read zero-shot spec, scored by ``eval.zeroshot`` as for a saved directory."""
    classes, items = spec["classes"], spec["items"]
    pred = predict_classes(
        model,
        processor,
        spec["template"],
        classes,
        [it["image"] for it in items],
        batch_size,
        show_progress=False,
    )  # (N,) class indices
    return sum(classes[p] == it["label"] for p, it in zip(pred, items)) / len(items)


def mmvp_vlm_scores(
    model: Any, processor: Any, pairs: Sequence[MMVPPair], batch_size: int
) -> dict[str, float]:
    """Toy MMVP-VLM scored by ``eval.mmvp_vlm`` (the official protocol): {pattern: 0-100} + ``average``."""
    logits = pair_logits_batched(model, processor, pairs, batch_size, show_progress=False)  # (P, 2, 2)
    scored = score_pairs(logits, [p.qids for p in pairs], [p.pattern for p in pairs])
    return {**scored["scores"], "average": scored["average"]}


# ---------------------------------------------------------------------------------------------- training
def multi_positive_targets(caption_ids: torch.Tensor) -> torch.Tensor:
    """Caption ids (B,) -> targets (B, B): row i spreads its mass evenly over the items whose caption
    equals i's.

    [IMPORTANT] With duplicate captions in a batch, one-hot targets would push identical captions apart.
    """
    same = (caption_ids[:, None] == caption_ids[None, :]).float()  # (B, B), symmetric
    return same / same.sum(dim=1, keepdim=True)


def contrastive_loss(logits_per_image: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on logits (B images, B texts) with multi-positive targets; scalar."""
    targets = multi_positive_targets(caption_ids)  # symmetric matrix, so it serves both directions
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets))


def lr_lambda(cfg: TrainConfig) -> Any:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress_ = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only; biases, LayerNorm gains, position embeddings, logit_scale:
    none."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_clip(
    model: Any,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    caption_ids: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[list[dict[str, float]], float]:
    """Train ``model`` in place; returns (metrics rows, seconds spent in the loop).

    images (N, 3, S, S) uint8; input_ids / attention_mask (U, L) of the U distinct captions; caption_ids (N,)
    index into them. Batches are drawn from a seeded permutation per epoch.
    """
    n = len(images)
    batch = min(cfg.batch_size, n)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    max_log_scale = math.log(cfg.max_logit_scale)
    model.train()
    order, pos = torch.randperm(n, generator=gen), 0
    log = MetricsLog(cfg.steps, cfg.log_every)
    bar = progress(range(cfg.steps), desc="pretrain toy CLIP", unit="step")
    for step in bar:
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        cid = caption_ids[idx]  # (B,)
        px = normalise(random_shift(images[idx], cfg.shift_px, gen).to(device))  # (B, 3, S, S)
        ids, mask = input_ids[cid], attention_mask[cid]  # (B, L)
        width = int(mask.sum(1).max())  # trim padding shared by the whole batch
        out = model(
            input_ids=ids[:, :width].to(device), attention_mask=mask[:, :width].to(device), pixel_values=px
        )
        loss = contrastive_loss(out.logits_per_image, cid.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_log_scale)
        if log.add(step, loss=loss):
            row = log.flush(
                step, lr=opt.param_groups[0]["lr"], logit_scale=float(model.logit_scale.detach().exp())
            )
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
    model.eval()
    return log.rows, log.elapsed()


# ---------------------------------------------------------------------------------------------- cache
# The training summary of OUT when it is a complete toy CLIP with this config hash and world; else None.
cached_summary = RUN.cached_summary


def _tokenize_captions(
    cfg: PretrainClipConfig, captions: list[str], zeroshot: dict[str, Any]
) -> tuple[Any, Any, torch.Tensor]:
    """The toy tokenizer, the distinct captions tokenised (U, L) and each image's caption index (N,)."""
    # The tokenizer sees the train captions and the zero-shot prompts only, never benchmark statements.
    tok_texts = captions + [zeroshot["template"].format(c) for c in zeroshot["classes"]]
    tokenizer = train_clip_tokenizer(tok_texts, cfg.tokenizer.vocab_size, cfg.tokenizer.max_length)
    unique = sorted(set(captions))
    cid_of = {c: i for i, c in enumerate(unique)}
    enc = tokenizer(unique, padding="longest", truncation=True, return_tensors="pt")  # (U, L)
    return tokenizer, enc, torch.tensor([cid_of[c] for c in captions])


def pretrain(
    cfg: PretrainClipConfig,
    world: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    force: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the toy CLIP of ``world`` into ``out``; returns the training summary."""
    files = world_files(world)
    out = Path(out)
    fingerprint = world_fingerprint(files)
    cfg_hash = config_hash(cfg)
    if not force:
        summary = cached_summary(out, cfg_hash, fingerprint)
        if summary is not None:
            return {**summary, "cached": True}
    t0 = time.perf_counter()
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    torch.manual_seed(cfg.train.seed)

    paths, captions = read_train_split(files)
    zeroshot = read_spec(files.zeroshot)
    mmvp_pairs = read_benchmark(files.mmvp) if files.mmvp else None  # both checked before training
    tokenizer, enc, caption_ids = _tokenize_captions(cfg, captions, zeroshot)
    log.info(
        "world %s: %d train images, %d distinct captions, vocab %d",
        files.root,
        len(paths),
        enc["input_ids"].shape[0],
        len(tokenizer),
    )
    images = load_images(paths, cfg.model.image_size, "loading train images")  # (N, 3, S, S) uint8
    model = new_toy_clip(tokenizer, cfg.model, seed=cfg.train.seed).to(dev)
    if cfg.model.position_init == "sincos":
        scale = init_positions_sincos(model, normalise(images[: cfg.train.batch_size]).to(dev))
        log.info("position embeddings: 2-D sine-cosine code at %.2f times its unit norm", scale)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "toy CLIP: %.2f M parameters, %d image tokens",
        n_params / 1e6,
        (cfg.model.image_size // cfg.model.patch_size) ** 2,
    )
    prep_s = time.perf_counter() - t0

    rows, train_s = train_clip(
        model, images, enc["input_ids"], enc["attention_mask"], caption_ids, cfg.train, dev
    )

    processor = clip_processor(tokenizer, cfg.model.image_size)
    acc = zeroshot_accuracy(model, processor, zeroshot, cfg.eval_batch_size)
    mmvp = mmvp_vlm_scores(model, processor, mmvp_pairs, cfg.eval_batch_size) if mmvp_pairs else None
    if mmvp is None:
        log.warning("no MMVP-VLM benchmark under %s/mmvp_vlm: skipping its score", files.root)
    batch = min(cfg.train.batch_size, len(images))
    summary = {
        "steps": cfg.train.steps,
        "batch_size": batch,
        "train_images": len(images),
        "parameters": n_params,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "prepare_seconds": round(prep_s, 2),
        "train_seconds": round(train_s, 2),
        "images_per_second": round(cfg.train.steps * batch / train_s, 1),
        "final_loss": rows[-1]["loss"],
        "zeroshot_shape_accuracy": acc,
        "zeroshot_chance": 1.0 / len(zeroshot["classes"]),
        "zeroshot_items": len(zeroshot["items"]),
        "mmvp_vlm": mmvp,
        "config_hash": cfg_hash,
        "world_fingerprint": fingerprint,
    }
    with atomic_directory(out) as tmp:
        save_clip_dir(model.cpu(), processor, tmp)
        RUN.write_records(
            tmp, cfg, rows, summary, t0, parents=[files.root], command=command, fingerprint=fingerprint
        )
    return {**summary, "cached": False}


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"steps {summary['steps']} (batch {summary['batch_size']}), wall {summary['wall_seconds']:.1f} s "
        f"(train {summary['train_seconds']:.1f} s), {summary['images_per_second']:.0f} images/s, "
        f"final loss {summary['final_loss']:.4f}",
        f"zero-shot shape accuracy {summary['zeroshot_shape_accuracy']:.3f} "
        f"(chance {summary['zeroshot_chance']:.3f}, {summary['zeroshot_items']} held-out images)",
    ]
    if summary.get("mmvp_vlm"):
        lines.append("toy MMVP-VLM: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["mmvp_vlm"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = run_parser(
        "pretrain-clip",
        __doc__,
        out_help="output directory: the toy CLIP (HF CLIPModel directory)",
        config_help="YAML instance of PretrainClipConfig (default: built-in defaults = "
        "configs/toyworld/clip.yaml)",
        force_help="retrain even when OUT holds a matching cached model",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    return p


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    started = start_run("pretrain-clip", build_parser(), PretrainClipConfig, argv)
    if started is None:
        return 0
    args, cfg, command = started
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = pretrain(cfg, args.world, args.out, device=args.device, force=args.force, command=command)
    if summary["cached"]:
        print(
            f"cached: {args.out} already holds this toy CLIP (config hash {summary['config_hash']}); "
            "use --force to retrain"
        )
        print(format_summary(summary))
        return 0
    print(format_summary(summary))
    print(f"saved toy CLIP to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

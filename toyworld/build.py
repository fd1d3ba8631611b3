"""``python -m toyworld build --out DIR``: write the toy world to a directory.

Layout written (atomically: a crash never leaves a half-written DIR)::

    DIR/world.json                  seed, sizes, counts, vocabularies, caption probabilities, version
    DIR/provenance.json
    DIR/train/images/NNNNNN.png     + DIR/train/scenes.jsonl: {"image", "caption", "scene"} per line
    DIR/val/images/NNNNNN.png       + DIR/val/scenes.jsonl, DIR/val/zeroshot_shape.json
    DIR/mmvp_vlm/Questions.csv      + DIR/mmvp_vlm/MLLM_VLM Images/<type>/<qid>.jpg (official layout)
    DIR/mmvp_vlm_decision/          the same layout, ``decision_pairs_per_pattern`` pairs per pattern: the
                                    set to report decisions on (its 15-pair sibling is too small to see
                                    changes)
    DIR/mmvp_vlm_decision_words/    the decision set's pairs with statements in the training captions' words
                                    ("a photo of an outlined star", not "The star is empty inside."): a
                                    diagnostic of the text side, reported beside the decision set
    DIR/mmvp_vlm_val/               the same layout, ``val_pairs_per_pattern`` pairs per pattern: for choosing
                                    checkpoints and tuning, so that the reported sets are never tuned on

Each split draws from its own random stream (``toyworld:<seed>:<split>``), and a scene of a benchmark
(identical up to its small position jitter) never appears in another benchmark, in val or in train, nor a val
scene in train. Every setting is a :class:`WorldConfig` key (``configs/toyworld/world.yaml`` is its YAML
instance), set with ``--config FILE.yaml`` and ``key=value`` overrides, e.g. ``seed=7 n_train=500
captions.color=0.5``; flags name paths only. An existing DIR is an error unless ``--overwrite`` is given (and
then only a
previous toy world, i.e. a DIR with ``world.json``, or an empty folder is replaced).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import genhancer
from genhancer.utils.cli import entry_point
from genhancer.utils.config import load_config, to_dict
from genhancer.utils.errors import ConfigError, UserError
from genhancer.utils.fsio import atomic_directory, write_json, write_jsonl
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import write_provenance
from toyworld.captions import CaptionProbs, caption_scene
from toyworld.llava_data import write_llava_data
from toyworld.lmms_data import write_lmms_data
from toyworld.mmvp_bench import in_caption_words, sample_benchmark, write_benchmark
from toyworld.render import render_scene
from toyworld.scene import PATTERNS, SHAPES, Scene, sample_scene, vocabularies

ZEROSHOT_TEMPLATE = "a photo of a {}."


@dataclass
class WorldConfig:
    """What ``build`` writes. Defaults: a world a toy CLIP can pretrain on in a few CPU minutes."""

    seed: int = 0
    image_size: int = 64
    n_train: int = 20000
    n_val: int = 1000
    pairs_per_pattern: int = 15
    # larger benchmarks beside mmvp_vlm/ (0 = not written): a pattern score near 50% is known to about
    # ±8 points (95%) from 150 pairs, ±25 from 15
    decision_pairs_per_pattern: int = 150  # mmvp_vlm_decision/: report on it
    val_pairs_per_pattern: int = 50  # mmvp_vlm_val/: choose checkpoints and tune on it
    supersample: int = 2  # draw at this multiple of image_size, then box-filter down (anti-aliasing)
    jpeg_quality: int = 95  # benchmark images are JPEG, as in the official MMVP-VLM folder
    png_compress_level: int = 1  # fast; the images are tiny either way
    captions: CaptionProbs = field(default_factory=CaptionProbs)

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size={self.image_size}: must be at least 16 pixels")
        if self.n_train < 1 or self.n_val < 1:
            raise ConfigError(f"n_train={self.n_train}, n_val={self.n_val}: both must be at least 1")
        if self.pairs_per_pattern < 1:
            raise ConfigError(f"pairs_per_pattern={self.pairs_per_pattern}: must be at least 1")
        for key in ("decision_pairs_per_pattern", "val_pairs_per_pattern"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 0 (0 = not written)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")
        if not 1 <= self.supersample <= 8:
            raise ConfigError(f"supersample={self.supersample}: must be in 1..8")


def split_rng(seed: int, split: str) -> random.Random:
    """The random stream of one split (string seeds hash with SHA-512: stable across runs and machines)."""
    return random.Random(f"toyworld:{seed}:{split}")


def sample_split(rng: random.Random, n: int, exclude: set[tuple[Any, ...]]) -> tuple[list[Scene], int]:
    """``n`` scenes whose keys are not in ``exclude``; returns the scenes and how many were redrawn."""
    scenes, redrawn = [], 0
    while len(scenes) < n:
        s = sample_scene(rng)
        if s.key() in exclude:
            redrawn += 1
            continue
        scenes.append(s)
    return scenes, redrawn


def write_split(
    out: Path, name: str, scenes: list[Scene], cfg: WorldConfig, caption_rng: random.Random
) -> list[dict[str, Any]]:
    """Render ``scenes`` to ``out/images/NNNNNN.png`` and write ``out/scenes.jsonl``; returns the records."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, scene in enumerate(progress(scenes, desc=name, unit="img", leave=False)):
        rel = f"images/{i:06d}.png"
        render_scene(scene, cfg.image_size, supersample=cfg.supersample).save(
            out / rel, format="PNG", compress_level=cfg.png_compress_level
        )
        records.append(
            {
                "image": rel,
                "caption": caption_scene(scene, caption_rng, cfg.captions),
                "scene": scene.to_dict(),
            }
        )
    write_jsonl(out / "scenes.jsonl", records)
    return records


DECISION, WORDS = "mmvp_vlm_decision", "mmvp_vlm_decision_words"


def write_extra_benchmarks(root: Path, cfg: WorldConfig, held_out: set[tuple[Any, ...]]) -> dict[str, Any]:
    """The decision and validation benchmarks (each its own random stream, disjoint from ``held_out`` and from
    each other); adds their scene keys to ``held_out``; returns {name: {"pairs_per_pattern", "images"}}."""
    written = {}
    for name, n in (
        (DECISION, cfg.decision_pairs_per_pattern),
        ("mmvp_vlm_val", cfg.val_pairs_per_pattern),
    ):
        if n == 0:
            continue
        items = sample_benchmark(split_rng(cfg.seed, name), n, exclude=held_out)
        write_benchmark(root / name, items, cfg.image_size, cfg.supersample, cfg.jpeg_quality, desc=name)
        held_out |= {it.scene.key() for it in items}
        written[name] = {"pairs_per_pattern": n, "images": len(items)}
        if name == DECISION:  # the same pairs, said in the captions' words (a diagnostic of the text side)
            words = in_caption_words(items)
            write_benchmark(
                root / WORDS, words, cfg.image_size, cfg.supersample, cfg.jpeg_quality, desc=WORDS
            )
            written[WORDS] = {"pairs_per_pattern": n, "images": len(words), "statements_of": DECISION}
    return written


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"--out {out}: directory exists and is not empty; pass --overwrite to replace it "
                "or choose another path"
            )
        if not (out / "world.json").is_file():
            raise UserError(
                f"--out {out}: not a toy world (no world.json); refusing to replace it even with "
                "--overwrite -- choose another path"
            )


def build_world(cfg: WorldConfig, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write the whole toy world to ``out`` (see the module docstring); returns the world.json dict."""
    out = Path(out)
    _check_target(out, overwrite)
    log = get_logger("toyworld")
    t0 = time.perf_counter()
    with atomic_directory(out) as root:
        # Benchmark first: its scenes are then kept out of val and train.
        bench = sample_benchmark(split_rng(cfg.seed, "mmvp_vlm"), cfg.pairs_per_pattern)
        write_benchmark(root / "mmvp_vlm", bench, cfg.image_size, cfg.supersample, cfg.jpeg_quality)
        held_out = {it.scene.key() for it in bench}
        benchmarks = write_extra_benchmarks(root, cfg, held_out)

        val_scenes, val_redrawn = sample_split(split_rng(cfg.seed, "val"), cfg.n_val, held_out)
        val = write_split(root / "val", "val", val_scenes, cfg, split_rng(cfg.seed, "val:captions"))
        write_json(
            root / "val" / "zeroshot_shape.json",
            {
                "template": ZEROSHOT_TEMPLATE,
                "classes": list(SHAPES),
                "items": [{"image": r["image"], "label": r["scene"]["shape"]} for r in val],
            },
        )
        held_out |= {s.key() for s in val_scenes}

        train_scenes, train_redrawn = sample_split(split_rng(cfg.seed, "train"), cfg.n_train, held_out)
        write_split(root / "train", "train", train_scenes, cfg, split_rng(cfg.seed, "train:captions"))

        derived: dict[str, Any] = {}
        # --- derived datasets (lmms-eval parquet, LLaVA JSON) ---
        # Write under `root` (the world's directory while it is being built), use paths relative to it,
        # and record what was written in `derived[name] = {...}` (it goes into world.json).
        derived["lmms_eval"] = write_lmms_data(
            root / "lmms",
            seed=cfg.seed,
            image_size=cfg.image_size,
            supersample=cfg.supersample,
            exclude=held_out | {s.key() for s in train_scenes},
        )
        derived["llava"] = write_llava_data(root, seed=cfg.seed)

        world = {
            "version": genhancer.__version__,
            "seed": cfg.seed,
            "image_size": cfg.image_size,
            "counts": {
                "train": cfg.n_train,
                "val": cfg.n_val,
                "mmvp_vlm_images": len(bench),
                "mmvp_vlm_pairs_per_pattern": cfg.pairs_per_pattern,
            },
            "benchmarks": benchmarks,
            "redrawn_to_keep_splits_disjoint": {"val": val_redrawn, "train": train_redrawn},
            "vocabularies": vocabularies(),
            "caption_probs": to_dict(cfg.captions),
            "config": to_dict(cfg),
            "derived": derived,
        }
        write_json(root / "world.json", world)
        write_provenance(root, "toyworld", config=cfg, extra={"patterns": list(PATTERNS)})
    world["build_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("toy world written to %s in %.1f s", out, world["build_seconds"])
    return world


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Build the toy world (``python -m toyworld build --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m toyworld build",
        description="Write the toy world: train/val image folders with captions and scene JSONL, and the "
        "MMVP-VLM-style benchmark.",
    )
    parser.add_argument("--out", type=Path, help="directory to write (must not exist or be empty)")
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML instance of WorldConfig (default: built-in defaults = configs/toyworld/world.yaml)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing toy world at --out")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. seed=7 n_train=500 pairs_per_pattern=100 captions.color=0.5",
    )
    args = parser.parse_args(argv)
    cfg = load_config(WorldConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    if args.out is None:
        raise UserError("build needs --out DIR (see --help)")
    world = build_world(cfg, args.out, overwrite=args.overwrite)
    c = world["counts"]
    print(f"toy world -> {args.out}  (seed {cfg.seed}, {cfg.image_size}px, {world['build_seconds']} s)")
    print(
        f"  train: {c['train']} images + captions   val: {c['val']} images + zero-shot spec "
        f"({len(SHAPES)} shapes)"
    )
    print(
        f"  mmvp_vlm: {c['mmvp_vlm_images']} images = {len(PATTERNS)} patterns x "
        f"{cfg.pairs_per_pattern} pairs x 2"
    )
    for name, b in world["benchmarks"].items():
        print(
            f"  {name}: {b['images']} images = {len(PATTERNS)} patterns x {b['pairs_per_pattern']} pairs x 2"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

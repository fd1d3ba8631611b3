"""``python -m toyworld judge --classifier DIR --images DIR [--scenes JSONL]``: score pictures by attribute.

Each image of ``--images`` (a folder, searched recursively for PNG/JPEG) is matched to a scene record of
``--scenes`` (a ``scenes.jsonl`` of the world: ``{"image": "images/000012.png", "scene": {...}}`` per line)
by its path relative to the JSONL's folder or, failing that, by its file name -- so a folder of
reconstructions named like the originals is judged against the originals' scenes. Without ``--scenes`` the
command looks for ``scenes.jsonl`` in the image folder and in its parent (``<world>/val/images`` ->
``<world>/val/scenes.jsonl``). Images without a record are skipped (and counted); none matched is an error.

The attribute classifier (``python -m toyworld train-attributes``) predicts every attribute of every image;
the report gives, per attribute, the accuracy, the number of images it applies to and the majority-class
rate (what a constant guess would score), plus the mean over attributes and the share of images with every
attribute right. ``--out FILE.json`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import read_jsonl, write_json
from genhancer.utils.logging import get_logger
from toyworld.attributes import attribute_accuracy, format_accuracy, load_classifier
from toyworld.pretrain_clip import load_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_scenes_file(images: Path) -> Path:
    """``scenes.jsonl`` in the image folder or its parent; a DataError naming both places otherwise."""
    for candidate in (images / "scenes.jsonl", images.parent / "scenes.jsonl"):
        if candidate.is_file():
            return candidate
    raise DataError(f"no scenes.jsonl in {images} or {images.parent}; pass --scenes <split>/scenes.jsonl")


def match_images(images: Path, scenes_file: Path) -> tuple[list[Path], list[dict[str, Any]], int]:
    """(image paths, their scenes, number of images without a record) for the images under ``images``."""
    if not images.is_dir():
        raise DataError(f"--images {images}: not a directory")
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"--images {images}: no {'/'.join(IMAGE_SUFFIXES)} files")
    by_rel: dict[str, dict[str, Any]] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(read_jsonl(scenes_file), 1):
        if not isinstance(rec.get("image"), str) or not isinstance(rec.get("scene"), dict):
            raise DataError(f"{scenes_file}, line {i}: needs a string 'image' and a 'scene' object")
        by_rel[Path(rec["image"]).as_posix()] = rec["scene"]
        by_name.setdefault(Path(rec["image"]).name, rec["scene"])
    paths, scenes = [], []
    for f in files:
        try:
            rel = f.resolve().relative_to(scenes_file.parent.resolve()).as_posix()
        except ValueError:
            rel = None
        scene = by_rel.get(rel) if rel else None
        scene = scene if scene is not None else by_name.get(f.name)
        if scene is not None:
            paths.append(f)
            scenes.append(scene)
    if not paths:
        raise DataError(
            f"none of the {len(files)} images under {images} has a record in {scenes_file} "
            "(matched by path relative to the JSONL's folder, then by file name)"
        )
    return paths, scenes, len(files) - len(paths)


def judge(classifier: str | Path, images: str | Path, scenes: str | Path | None = None) -> dict[str, Any]:
    """Per-attribute accuracy of the images under ``images`` against their scene labels.

    See the module doc.
    """
    images = Path(images)
    scenes_file = Path(scenes) if scenes else find_scenes_file(images)
    clf = load_classifier(classifier)
    paths, scene_list, unmatched = match_images(images, scenes_file)
    if unmatched:
        get_logger("toyworld.judge").warning(
            "%d images under %s have no record in %s: skipped", unmatched, images, scenes_file
        )
    table = attribute_accuracy(clf, load_images(paths, clf.net.image_size), scene_list)
    return {
        **table,
        "images": str(images),
        "scenes": str(scenes_file),
        "classifier": str(classifier),
        "unmatched_images": unmatched,
    }


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m toyworld judge",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--classifier", required=True, help="directory written by python -m toyworld train-attributes"
    )
    p.add_argument("--images", required=True, help="folder of images (PNG/JPEG, searched recursively)")
    p.add_argument("--scenes", help="scenes.jsonl with the labels (default: found beside the images)")
    p.add_argument("--out", help="also write the report to this JSON file")
    args = p.parse_args(argv)
    report = judge(args.classifier, args.images, args.scenes)
    print(f"{report['n_images']} images under {args.images} judged against {report['scenes']}")
    print(format_accuracy(report))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

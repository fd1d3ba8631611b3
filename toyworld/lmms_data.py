"""The toy world's lmms-eval data: parquet files with embedded images, shaped like the real benchmarks.

``write_lmms_data(out, seed=..., image_size=...)`` renders NEW scenes from held-out random streams
(``toyworld:<seed>:lmms:<task>``; scenes whose key is in ``exclude`` -- the benchmark, val and train scenes
-- are redrawn) and writes::

    out/manifest.json                         tasks -> {split: relative parquet path}, counts, seed
    out/toy_mmvp/test.parquet                 MMVP layout: Index (1-based; rows 2k-1, 2k are a pair),
                                              Question, Options "(a) .. (b) ..", "Correct Answer" "(a)"|"(b)",
                                              image, + pattern (the MMVP-VLM pattern the pair varies)
    out/toy_pope/{random,popular,adversarial}.parquet
                                              POPE layout: question_id, question, answer yes|no, image,
                                              image_source, category (the split)
    out/toy_cv_bench/test.parquet             CV-Bench layout: idx, type, task (Count|Relation|Size),
                                              question, prompt, choices, answer "(A)", image, source
    out/toy_vqa/test.parquet                  the held-out toy questions (VQAv2-like, single-word answers):
                                              question_id, question_type, question, answer, image

Every row also has ``scene``: the JSON scene description of its image (for analysis; task code ignores it).
The eval package reads these as data (its task YAMLs live in ``eval/lmms/tasks/``); nothing here
imports eval. ``toy_vqa`` asks the question types of the LLaVA finetuning data (``toyworld.llava_data``)
about new scenes, balanced over types.

``python -m toyworld.lmms_data --world DIR`` rewrites ``DIR/lmms`` of an existing world (the world builder
calls :func:`write_lmms_data` itself). POPE negatives follow POPE's three samplings, translated to a
one-kind-of-object world:
``random`` asks about a uniformly drawn absent shape, ``popular`` about the absent shape most frequent in
the split, ``adversarial`` about the absent shape that looks most like the one shown.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import atomic_directory, read_json, read_jsonl, write_json
from genhancer.utils.logging import progress
from toyworld.llava_data import LOOKALIKE, MMVP_QUESTION, QUESTION_TYPES, applicable
from toyworld.render import render_scene
from toyworld.scene import NUMBER_WORDS, PATTERNS, SHAPES, Scene, make_pair, plural, sample_scene

POPE_SPLITS = ("random", "popular", "adversarial")
POPE_QUESTION = "Is there a {shape} in the image?"
CV_TASKS = ("Count", "Relation", "Size")
LMMS_FORMAT = "genhancer-toy-lmms/1"  # the manifest's layout
# bump when a task's data changes, so scripts rewrite stale files (3: a rewrite also keeps the decision and
# validation benchmarks' scenes out, as the world builder does; version-2 rewrites did not)
WRITER_VERSION = 3
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def task_rng(seed: int, task: str) -> random.Random:
    """The held-out random stream of one lmms task (distinct from every split of ``build``)."""
    return random.Random(f"toyworld:{seed}:lmms:{task}")


def _draw(
    rng: random.Random, exclude: set[tuple[Any, ...]], make: Callable[[], Scene], tries: int = 200
) -> Scene:
    for _ in range(tries):
        s = make()
        if s.key() not in exclude:
            return s
    raise RuntimeError(f"could not draw a scene outside the excluded set in {tries} tries")


def _png(scene: Scene, size: int, supersample: int) -> dict[str, Any]:
    buf = io.BytesIO()
    render_scene(scene, size, supersample=supersample).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import datasets

    features = {}
    for key, value in rows[0].items():
        if key == "image":
            features[key] = datasets.Image()
        elif isinstance(value, list):
            features[key] = datasets.Sequence(datasets.Value("string"))
        elif isinstance(value, bool):
            features[key] = datasets.Value("bool")
        elif isinstance(value, int):
            features[key] = datasets.Value("int64")
        else:
            features[key] = datasets.Value("string")
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(cols, features=datasets.Features(features)).to_parquet(str(path))


def mmvp_rows(
    rng: random.Random, pairs_per_pattern: int, exclude: set, size: int, ss: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for pattern in progress(list(PATTERNS), desc="toy_mmvp", unit="pattern", leave=False):
        for _ in range(pairs_per_pattern):
            for _try in range(200):
                a, b, sa, sb = make_pair(rng, pattern)
                if a.key() not in exclude and b.key() not in exclude:
                    break
            exclude.update((a.key(), b.key()))
            first_is_a = rng.random() < 0.5
            opts = (sa, sb) if first_is_a else (sb, sa)
            options = f"(a) {opts[0]} (b) {opts[1]}"
            for scene, text in ((a, sa), (b, sb)):
                rows.append(
                    {
                        "Index": len(rows) + 1,
                        "Question": MMVP_QUESTION,
                        "Options": options,
                        "Correct Answer": "(a)" if text == opts[0] else "(b)",
                        "pattern": pattern,
                        "scene": json.dumps(scene.to_dict()),
                        "image": _png(scene, size, ss),
                    }
                )
    return rows


def pope_rows(
    rng: random.Random, split: str, n_images: int, exclude: set, size: int, ss: int
) -> list[dict[str, Any]]:
    scenes = []
    for _ in range(n_images):
        s = _draw(rng, exclude, lambda: sample_scene(rng, viewpoint=rng.choice(("normal", "close"))))
        exclude.add(s.key())
        scenes.append(s)
    popularity = [shape for shape, _ in Counter(s.shape for s in scenes).most_common()]
    popularity += [s for s in SHAPES if s not in popularity]
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(scenes):
        absent = [x for x in SHAPES if x != s.shape]
        if split == "random":
            negative = rng.choice(absent)
        elif split == "popular":
            negative = next(x for x in popularity if x != s.shape)
        else:
            negative = LOOKALIKE[s.shape]
        image = _png(s, size, ss)
        pairs = [(s.shape, "yes"), (negative, "no")]
        rng.shuffle(pairs)
        for shape, answer in pairs:
            rows.append(
                {
                    "question_id": f"{split}-{len(rows):05d}",
                    "question": POPE_QUESTION.format(shape=shape),
                    "answer": answer,
                    "image_source": f"toy_pope_{split}_{i:05d}",
                    "category": split,
                    "scene": json.dumps(s.to_dict()),
                    "image": image,
                }
            )
    return rows


def _choice_row(
    rng: random.Random,
    idx: int,
    task: str,
    question: str,
    correct: str,
    others: list[str],
    scene: Scene,
    size: int,
    ss: int,
) -> dict[str, Any]:
    choices = [correct, *others]
    rng.shuffle(choices)
    letters = [chr(65 + i) for i in range(len(choices))]
    listing = "\n".join(f"({ltr}) {c}" for ltr, c in zip(letters, choices))
    return {
        "idx": idx,
        "type": "2D",
        "task": task,
        "question": question,
        "prompt": f"{question}\nSelect from the following choices.\n{listing}",
        "choices": choices,
        "answer": f"({letters[choices.index(correct)]})",
        "source": "toyworld",
        "scene": json.dumps(scene.to_dict()),
        "image": _png(scene, size, ss),
    }


def cv_bench_rows(
    rng: random.Random, per_task: int, exclude: set, size: int, ss: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(per_task):  # Count: 1-3 copies of one shape
        s = _draw(rng, exclude, lambda: sample_scene(rng, viewpoint="normal", count=rng.choice((1, 2, 3))))
        exclude.add(s.key())
        words = [NUMBER_WORDS[c] for c in (1, 2, 3)]
        rows.append(
            _choice_row(
                rng,
                len(rows),
                "Count",
                f"How many {plural(s.shape)} are in the image?",
                NUMBER_WORDS[s.count],
                [w for w in words if w != NUMBER_WORDS[s.count]],
                s,
                size,
                ss,
            )
        )
    for _ in range(per_task):  # Relation: where the object is relative to the picture's centre
        side = rng.choice(tuple(_OPPOSITE))
        s = _draw(rng, exclude, lambda: sample_scene(rng, count=1, position=side))  # noqa: B023
        exclude.add(s.key())
        rows.append(
            _choice_row(
                rng,
                len(rows),
                "Relation",
                f"Which part of the picture is the {s.shape} in?",
                side,
                [_OPPOSITE[side]],
                s,
                size,
                ss,
            )
        )
    for _ in range(per_task):  # Size: large or small, seen from the normal distance
        s = _draw(rng, exclude, lambda: sample_scene(rng, count=1, viewpoint="normal"))
        exclude.add(s.key())
        other = "small" if s.size == "large" else "large"
        rows.append(
            _choice_row(
                rng, len(rows), "Size", f"Is the {s.shape} large or small?", s.size, [other], s, size, ss
            )
        )
    return rows


def vqa_rows(rng: random.Random, per_type: int, exclude: set, size: int, ss: int) -> list[dict[str, Any]]:
    """``per_type`` questions of every LLaVA question type, one per new scene (the rarest applicable type
    not yet full is asked)."""
    counts = dict.fromkeys(QUESTION_TYPES, 0)
    rows: list[dict[str, Any]] = []
    bar = progress(total=per_type * len(QUESTION_TYPES), desc="toy_vqa", unit="q", leave=False)
    while min(counts.values()) < per_type:
        s = _draw(rng, exclude, lambda: sample_scene(rng))
        options = [qa for qa in applicable(s.to_dict(), rng) if counts[qa[0]] < per_type]
        if not options:
            continue
        exclude.add(s.key())
        qtype, q, a = min(options, key=lambda qa: (counts[qa[0]], QUESTION_TYPES.index(qa[0])))
        counts[qtype] += 1
        bar.update(1)
        rows.append(
            {
                "question_id": f"vqa-{len(rows):05d}",
                "question_type": qtype,
                "question": q,
                "answer": a,
                "scene": json.dumps(s.to_dict()),
                "image": _png(s, size, ss),
            }
        )
    bar.close()
    return rows


def write_lmms_data(
    out: str | Path,
    *,
    seed: int,
    image_size: int,
    supersample: int = 2,
    exclude: set[tuple[Any, ...]] | None = None,
    mmvp_pairs_per_pattern: int = 10,
    pope_images_per_split: int = 50,
    cv_bench_per_task: int = 40,
    vqa_per_type: int = 100,
) -> dict[str, Any]:
    """Write the toy lmms-eval parquet files under ``out``; returns the manifest (also ``out/manifest.json``).

    ``exclude``: scene keys that must not appear (``build`` passes the benchmark, val and train scenes);
    scenes drawn here are added to a private copy, so the tasks never share a scene either.
    """
    out = Path(out)
    taken = set(exclude or ())
    ss = supersample
    files: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}

    rows = mmvp_rows(task_rng(seed, "toy_mmvp"), mmvp_pairs_per_pattern, taken, image_size, ss)
    _write_parquet(rows, out / "toy_mmvp" / "test.parquet")
    files["toy_mmvp"] = {"test": "toy_mmvp/test.parquet"}
    counts["toy_mmvp"] = len(rows)

    for split in POPE_SPLITS:
        rows = pope_rows(
            task_rng(seed, f"toy_pope_{split}"), split, pope_images_per_split, taken, image_size, ss
        )
        _write_parquet(rows, out / "toy_pope" / f"{split}.parquet")
        files[f"toy_pope_{split}"] = {"test": f"toy_pope/{split}.parquet"}
        counts[f"toy_pope_{split}"] = len(rows)

    rows = cv_bench_rows(task_rng(seed, "toy_cv_bench"), cv_bench_per_task, taken, image_size, ss)
    _write_parquet(rows, out / "toy_cv_bench" / "test.parquet")
    files["toy_cv_bench"] = {"test": "toy_cv_bench/test.parquet"}
    counts["toy_cv_bench"] = len(rows)

    rows = vqa_rows(task_rng(seed, "toy_vqa"), vqa_per_type, taken, image_size, ss)
    _write_parquet(rows, out / "toy_vqa" / "test.parquet")
    files["toy_vqa"] = {"test": "toy_vqa/test.parquet"}
    counts["toy_vqa"] = len(rows)

    manifest = {
        "format": LMMS_FORMAT,
        "writer_version": WRITER_VERSION,
        "seed": seed,
        "streams": "toyworld:<seed>:lmms:<task>",
        "image_size": image_size,
        "files": files,
        "counts": counts,
    }
    write_json(out / "manifest.json", manifest)
    return manifest


WORLD_SCENE_FILES = ("mmvp_vlm/scenes.jsonl", "val/scenes.jsonl", "train/scenes.jsonl")
# the decision and validation benchmarks are optional (a world may be built without them)
OPTIONAL_SCENE_FILES = ("mmvp_vlm_decision/scenes.jsonl", "mmvp_vlm_val/scenes.jsonl")


def world_scene_keys(world: Path) -> set[tuple[Any, ...]]:
    """Keys of every scene an existing world already uses (the benchmarks, val, train): kept out of the
    tasks -- the same set ``toyworld build`` excludes, so a rewrite reproduces a fresh build's data."""
    keys: set[tuple[Any, ...]] = set()
    for rel in WORLD_SCENE_FILES + OPTIONAL_SCENE_FILES:
        path = world / rel
        if not path.is_file():
            if rel in OPTIONAL_SCENE_FILES:
                continue
            raise DataError(f"{path} not found: is {world} a toy world? (python -m toyworld build --out DIR)")
        keys |= {
            Scene.from_dict(r["scene"], f"{path}, line {i + 1}").key() for i, r in enumerate(read_jsonl(path))
        }
    return keys


def rewrite_world_lmms(world: str | Path) -> dict[str, Any]:
    """Rewrite ``world/lmms`` of an existing toy world with its own seed and image size (atomically)."""
    world = Path(world)
    info = read_json(
        world / "world.json",
        missing=f"{world}/world.json not found: build the world first (python -m toyworld build --out DIR)",
    )
    config = info.get("config", {})
    exclude = world_scene_keys(world)
    with atomic_directory(world / "lmms") as tmp:
        manifest = write_lmms_data(
            tmp,
            seed=int(config.get("seed", 0)),
            image_size=int(config.get("image_size", 64)),
            supersample=int(config.get("supersample", 2)),
            exclude=exclude,
        )
    info.setdefault("derived", {})["lmms_eval"] = manifest
    write_json(world / "world.json", info)
    return manifest


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld.lmms_data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world", required=True, type=Path, help="toy world directory (from `toyworld build`)"
    )
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="do nothing when WORLD/lmms was already written by this version",
    )
    args = parser.parse_args(argv)
    manifest_path = args.world / "lmms" / "manifest.json"
    if (
        args.if_stale
        and manifest_path.is_file()
        and read_json(manifest_path).get("writer_version") == WRITER_VERSION
    ):
        print(f"{args.world}/lmms is up to date")
        return 0
    manifest = rewrite_world_lmms(args.world)
    print(manifest["counts"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The toy MMVP-VLM benchmark, written in the official folder layout.

``DIR/Questions.csv`` (header ``Question ID,Type,Statement``) lists 2 rows per pair, in the official pattern
order, ``pairs_per_pattern`` pairs per pattern; question ids run 1..N and rows (2k-1, 2k) form a pair. The
statement of row ``qid`` describes image ``DIR/MLLM_VLM Images/<Type>/<qid>.jpg`` (so the odd qid is the
pair's first image, as in the official file). ``DIR/scenes.jsonl`` (not in the official layout; readers of
it ignore it) keeps the scene description of every image, for analysis.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
from pathlib import Path
from typing import Any

from genhancer.utils.fsio import atomic_write_text, write_jsonl
from genhancer.utils.logging import progress
from toyworld.captions import statement_in_caption_words
from toyworld.render import render_scene
from toyworld.scene import PATTERNS, Scene, make_pair

CSV_HEADER = ("Question ID", "Type", "Statement")
IMAGE_DIR = "MLLM_VLM Images"


@dataclasses.dataclass(frozen=True)
class BenchItem:
    """One row of Questions.csv: the statement ``statement`` describes image ``qid`` showing ``scene``."""

    qid: int
    pattern: str
    statement: str
    scene: Scene

    @property
    def image(self) -> str:
        """Image path relative to the benchmark folder."""
        return f"{IMAGE_DIR}/{self.pattern}/{self.qid}.jpg"


def sample_benchmark(
    rng: random.Random,
    pairs_per_pattern: int,
    max_tries: int = 200,
    exclude: set[tuple[Any, ...]] | None = None,
) -> list[BenchItem]:
    """Draw ``pairs_per_pattern`` distinct pairs for each of the 9 patterns (in the official order).

    ``exclude``: scene keys no image may show (e.g. another benchmark's), so that benchmarks stay disjoint.
    """
    if pairs_per_pattern < 1:
        raise ValueError(f"pairs_per_pattern must be >= 1, got {pairs_per_pattern}")
    items: list[BenchItem] = []
    seen: set[tuple[Any, ...]] = set(exclude or ())
    qid = 1
    for pattern in PATTERNS:
        for _ in range(pairs_per_pattern):
            for _try in range(max_tries):
                a, b, sa, sb = make_pair(rng, pattern)
                if a.key() not in seen and b.key() not in seen:
                    break
            # After max_tries a repeated pair is accepted (only possible for tiny vocabularies).
            seen.update((a.key(), b.key()))
            items.append(BenchItem(qid, pattern, sa, a))
            items.append(BenchItem(qid + 1, pattern, sb, b))
            qid += 2
    return items


def in_caption_words(items: list[BenchItem]) -> list[BenchItem]:
    """``items`` with each statement said in the training captions' words
    (:func:`toyworld.captions.statement_in_caption_words`); the images and pairs stay the same."""
    out = [
        dataclasses.replace(it, statement=statement_in_caption_words(it.scene, it.pattern)) for it in items
    ]
    for a, b in zip(out[::2], out[1::2]):
        if a.statement == b.statement:  # a pair whose two images the captions' words cannot tell apart
            raise ValueError(f"pair {a.qid}/{b.qid} ({a.pattern}): both statements are {a.statement!r}")
    return out


def questions_csv(items: list[BenchItem]) -> str:
    """The text of Questions.csv for ``items``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for it in items:
        writer.writerow((it.qid, it.pattern, it.statement))
    return buf.getvalue()


def write_benchmark(
    out_dir: str | Path,
    items: list[BenchItem],
    image_size: int = 64,
    supersample: int = 2,
    jpeg_quality: int = 95,
    desc: str = "mmvp_vlm",
) -> Path:
    """Render ``items`` into ``out_dir`` in the official MMVP-VLM layout; returns ``out_dir``. ``desc``
    labels the progress bar."""
    out = Path(out_dir)
    for pattern in PATTERNS:
        (out / IMAGE_DIR / pattern).mkdir(parents=True, exist_ok=True)
    for it in progress(items, desc=desc, unit="img", leave=False):
        img = render_scene(it.scene, image_size, supersample=supersample)
        # 4:4:4 chroma: the toy world's detail is in colour edges, which 4:2:0 would blur.
        img.save(out / it.image, format="JPEG", quality=jpeg_quality, subsampling=0)
    atomic_write_text(out / "Questions.csv", questions_csv(items))
    write_jsonl(
        out / "scenes.jsonl",
        [
            {
                "qid": it.qid,
                "type": it.pattern,
                "statement": it.statement,
                "image": it.image,
                "scene": it.scene.to_dict(),
            }
            for it in items
        ],
    )
    return out

"""Fixtures of the probe tests: a small labelled image folder (scenes.jsonl beside images/), written with PIL,
whose attributes are easy (colour), harder (the side of a white dot) or pure noise."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.eval_mmvp.conftest import tiny_siglip_dir  # noqa: F401 (a fixture, shared)

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def write_split(root: Path, n: int, seed: int) -> Path:
    """``root/images/NNNNNN.png`` + ``root/scenes.jsonl`` of {"image", "caption", "scene": {...}}."""
    from PIL import Image

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        color, side = rng.choice(list(COLORS)), rng.choice(["left", "right"])
        img = Image.new("RGB", (32, 32), COLORS[color])
        img.paste((255, 255, 255), (2, 10, 14, 22) if side == "left" else (18, 10, 30, 22))
        name = f"images/{i:06d}.png"
        img.save(root / name)
        scene = {
            "color": color,
            "side": side,
            "noise": rng.choice(["a", "b"]),
            "mark": None if i % 3 else "dot",  # null is a class of its own
            "kind": "square",  # one class only: skipped
            "offset": [0.0, 0.1],
        }  # not a scalar: never probed
        records.append({"image": name, "caption": f"a {color} square", "scene": scene})
    (root / "scenes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="session")
def labelled_world(tmp_path_factory) -> Path:
    """``<world>/train`` (120 images) and ``<world>/val`` (60 images), another random stream each."""
    root = tmp_path_factory.mktemp("labelled")
    write_split(root / "train", 120, seed=1)
    write_split(root / "val", 60, seed=2)
    return root

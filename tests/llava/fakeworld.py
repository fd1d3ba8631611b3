"""A tiny toy world in the generator's on-disk format (DIR/{train,val}/images/*.png + scenes.jsonl),
with scene dicts of the real schema, drawn crudely with PIL -- enough for the LLaVA data writer."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle", "arrow", "star")


def _scene(rng: random.Random) -> dict:
    shape = rng.choice(SHAPES)
    count = rng.choice((1, 1, 2, 3))
    mark = rng.choice(("none", "feature", "text"))
    return {
        "shape": shape,
        "color": rng.choice(list(COLORS)),
        "size": "large",
        "count": count,
        "position": "center" if count > 1 else rng.choice(("center", "left", "right", "top", "bottom")),
        "orientation": rng.choice(("up", "down", "left", "right"))
        if shape in ("triangle", "arrow")
        else None,
        "fill": "solid",
        "texture": "plain",
        "feature": rng.choice(("dot", "ring")) if mark == "feature" else None,
        "text": rng.choice("AEHLTX") if mark == "text" else None,
        "viewpoint": "normal",
        "background": "white",
        "offset": [0.0, 0.0],
    }


def make_world(root: str | Path, n_train: int = 60, n_val: int = 21, size: int = 32, seed: int = 0) -> Path:
    root = Path(root)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        with (root / split / "scenes.jsonl").open("w") as f:
            for i in range(n):
                sc = _scene(rng)
                img = Image.new("RGB", (size, size), (255, 255, 255))
                r = size // 4
                ImageDraw.Draw(img).ellipse(
                    (size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r), fill=COLORS[sc["color"]]
                )
                rel = f"images/{i:06d}.png"
                img.save(root / split / rel)
                f.write(
                    json.dumps({"image": rel, "caption": f"a {sc['color']} {sc['shape']}", "scene": sc})
                    + "\n"
                )
    return root

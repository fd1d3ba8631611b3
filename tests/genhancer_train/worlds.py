"""Tiny image worlds made with PIL for the trainer tests (no toy-world generator): a folder like the toy
world's train split, img2dataset-style tar shards, and a free TCP port for the process group."""

from __future__ import annotations

import socket
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 60, 180), (240, 130, 20)]


def draw_scene(i: int, size: int = 40) -> Image.Image:
    """A coloured shape on white whose position and size depend on i (a stand-in for a toy-world scene)."""
    rng = np.random.default_rng(i)
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    r = int(rng.integers(6, 14))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    colour = COLOURS[i % len(COLOURS)]
    if i % 3 == 0:
        d.ellipse(box, fill=colour)
    elif i % 3 == 1:
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return im


def make_folder(root: Path, n: int, size: int = 40) -> Path:
    """``root/images/00000.png ...`` like the toy world's train split."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        draw_scene(i, size).save(root / "images" / f"{i:05d}.png")
    return root


def make_shards(root: Path, n_shards: int, per_shard: int, size: int = 40) -> list[Path]:
    """img2dataset-style tar shards: {key}.jpg + {key}.txt + {key}.json per sample."""
    import io
    import json

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        path = root / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                buf = io.BytesIO()
                draw_scene(s * per_shard + j, size).save(buf, format="JPEG")
                for ext, data in (
                    (".jpg", buf.getvalue()),
                    (".txt", b"a caption"),
                    (".json", json.dumps({"key": key}).encode()),
                ):
                    info = tarfile.TarInfo(key + ext)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""The bad-image zoo: one tiny file per awkward kind, with what the suite must make of it.

Every loadable kind is one flat colour, so its expected RGB is known exactly whatever crop or resize a
pipeline applies: ``LOADS[name]`` is that colour. ``SKIPS[name]`` is the reason a skipped kind must carry.
``write_folder`` puts the zoo into an image folder, ``write_shard`` into an img2dataset-style tar whose last
member is cut short (a bad tar member).
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 8  # every loadable kind is SIDE x SIDE (but the 1x1 one)


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _palette(transparent: bool) -> bytes:
    im = Image.new("P", (SIDE, SIDE), 1)
    im.putpalette([255, 0, 0, 10, 200, 30] + [0] * 762)
    if transparent:  # every pixel is the transparent index: white over white, whatever index 1's colour
        im.info["transparency"] = 1
    return _encode(im)


def _bomb() -> bytes:
    """A PNG whose header claims 20000 x 20000 pixels (the data is a 1x1 picture's)."""
    png = _encode(Image.new("RGB", (1, 1)))
    ihdr = struct.pack(">II", 20000, 20000) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


def _truncated() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    png = _encode(Image.fromarray(noise))
    return png[: len(png) // 2]


def zoo() -> dict[str, bytes]:
    """file name -> bytes, for every kind."""
    return {
        "cmyk.jpg": _encode(Image.new("CMYK", (SIDE, SIDE), (0, 255, 255, 0)), "JPEG"),
        "gray16.png": _encode(Image.fromarray(np.full((SIDE, SIDE), 128 * 257, dtype=np.uint16))),
        "palette.png": _palette(transparent=False),
        "palette_alpha.png": _palette(transparent=True),
        "la.png": _encode(Image.new("LA", (SIDE, SIDE), (100, 128))),
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (7, 77, 177))),
        "empty.png": b"",
        "truncated.png": _truncated(),
        "bomb.png": _bomb(),
        "text.jpg": b"this is a text file with an image suffix\n",
    }


# the colour each loadable kind must come out as (CMYK through JPEG: within a few levels)
LOADS = {
    "cmyk.jpg": (255, 0, 0),
    "gray16.png": (128, 128, 128),  # 16-bit scaled, not clipped to white
    "palette.png": (10, 200, 30),
    "palette_alpha.png": (255, 255, 255),  # transparent over white, not the palette colour (10, 200, 30)
    "la.png": (177, 177, 177),  # grey 100 at alpha 128 over white
    "one_pixel.png": (7, 77, 177),
}
SKIPS = {
    "empty.png": "empty",
    "truncated.png": "truncated",
    "bomb.png": "too-many-pixels",
    "text.jpg": "not-an-image",
}
TOLERANCE = 4  # JPEG rounding of the CMYK kind, bicubic resampling of flat colours


def write_folder(root: Path) -> Path:
    """The zoo under ``root/images/`` (next to whatever good images are there); returns ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, data in zoo().items():
        (root / "images" / name).write_bytes(data)
    return root


def write_shard(path: Path, good: dict[str, bytes]) -> Path:
    """A tar of ``good`` + the zoo (``{key}.{ext}`` + a caption each), its last member ``cut.jpg`` cut short
    (a bad tar member: the shard ends inside its data)."""
    members = {**good, **zoo()}
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [*members.items(), ("cut.jpg", _encode(Image.new("RGB", (64, 64)), "JPEG") * 4)]:
            for member, blob in ((name, data), (Path(name).stem + ".txt", b"a caption")):
                info = tarfile.TarInfo(member)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    raw = buf.getvalue()
    cut = raw.rfind(b"cut.jpg")  # the header of the last image member: keep it and 100 bytes of its data
    path.write_bytes(raw[: cut + 512 + 100])
    return path


def colour_of(rgb_uint8: np.ndarray) -> tuple[int, int, int]:
    """(H, W, 3) or (3, H, W) uint8 array of one flat colour -> that colour (asserting it is flat)."""
    a = rgb_uint8 if rgb_uint8.shape[-1] == 3 else np.moveaxis(rgb_uint8, 0, -1)
    lo, hi = a.reshape(-1, 3).min(0), a.reshape(-1, 3).max(0)
    assert (hi - lo <= TOLERANCE).all(), f"not one flat colour: {lo} .. {hi}"
    return tuple(int(x) for x in np.round(a.reshape(-1, 3).mean(0)))


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= TOLERANCE for x, y in zip(a, b))

"""Opening training images: one set of rules for GenHancer, LLaVA and the VQ-tokenizer trainer.

``open_rgb(data, max_pixels=...)`` decodes a whole image and returns it as RGB, or raises ``BadImage`` with a
short ``reason`` and a ``detail`` for the log. The rules:

- converted to RGB: greyscale, palette, CMYK, YCbCr and the like (PIL's conversion); 16-bit and 32-bit
  greyscale (``I;16``, ``I``) scaled from 0..65535 to 0..255 (PIL's own conversion would clip them to white);
  anything with transparency (RGBA, LA, PA, a palette or greyscale with a transparent colour) composited over
  white, as transformers' image processors do (``convert_rgb``);
- any size from 1x1 up: a 1x1 image is a valid picture (one colour) and is used like any other; filtering
  tiny or odd pictures is a dataset-curation choice, not a decoding one;
- skipped, with a reason: ``empty`` (zero bytes), ``not-an-image`` (PIL cannot identify the format, e.g. text
  with a .jpg suffix), ``truncated`` / ``corrupt`` (decoding fails part-way), ``too-many-pixels`` (width x
  height above ``max_pixels``, checked from the header before anything is decoded: a decompression bomb
  costs nothing), ``unreadable`` (the file cannot be read, e.g. it vanished), ``bad-tar-member`` (a
  webdataset member that cannot be read from its shard), ``unsupported-mode``.

``SkippedFiles`` records what was left out of a run, once per file however many epochs see it, for the run's
``summary.json`` (``skipped_files``: ``[{"key", "reason", "detail"}, ...]``). With a ``journal`` file it also
appends each new entry there, so entries made in other processes (DataLoader workers, other ranks) survive
and are merged by ``read_journal``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genhancer.utils.errors import ConfigError
from genhancer.utils.logging import get_logger

# PIL refuses images above 2 x Image.MAX_IMAGE_PIXELS (89_478_485) as decompression bombs: the default cap is
# that limit, and a larger cap could not be honoured (PIL would still refuse), so it is also the maximum.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
_MAX_WARNINGS = 20  # skipped files named one by one in the log; all of them are in summary.json
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
log = get_logger(__name__)


class BadImage(Exception):
    """An image that cannot be used: ``reason`` (a short code, see the module docstring) and ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_max_pixels(value: int, key: str) -> None:
    """A pixel cap from a config: 1 .. ``DEFAULT_MAX_IMAGE_PIXELS`` (a ConfigError naming ``key``)."""
    if not 1 <= value <= DEFAULT_MAX_IMAGE_PIXELS:
        raise ConfigError(
            f"{key}={value}: must be between 1 and {DEFAULT_MAX_IMAGE_PIXELS} (PIL refuses larger images "
            "as decompression bombs); lower it to skip big images sooner"
        )


def open_rgb(data: bytes | str | Path, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """Bytes or a path -> a fully decoded RGB ``PIL.Image``; raises ``BadImage`` (never another error for
    bad input)."""
    if not isinstance(data, bytes):
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise BadImage("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
    if not data:
        raise BadImage("empty", "the file has zero bytes")
    image = _decode(data, max_pixels)
    try:
        return to_rgb(image)
    except (OSError, ValueError) as e:
        raise BadImage("unsupported-mode", f"cannot convert mode {image.mode!r} to RGB: {e}") from None


def _decode(data: bytes, max_pixels: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not-an-image", "PIL cannot identify an image format in it") from None
    except Image.DecompressionBombError as e:
        raise BadImage("too-many-pixels", str(e)) from None
    except Exception as e:  # PIL's format plugins raise many kinds on a malformed header
        raise BadImage("corrupt", f"{type(e).__name__}: {e}") from None
    w, h = image.size
    if w * h > max_pixels:
        raise BadImage(
            "too-many-pixels",
            f"{w}x{h} = {w * h} pixels is above max_image_pixels={max_pixels} (raise the data config's "
            "max_image_pixels if such images are expected)",
        )
    try:
        with _truncated_images_fail():
            image.load()
    except Exception as e:  # a decoder fails part-way with OSError, ValueError, struct.error, EOFError ...
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise BadImage(reason, f"{type(e).__name__}: {e}") from None
    return image


@contextmanager
def _truncated_images_fail() -> Iterator[None]:
    """PIL's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` off while we decode: another library imported
    in the same process (lmms-eval does, on import) may have switched it on, and a truncated file would
    then decode silently with its missing rows filled grey."""
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def to_rgb(image: Any) -> Any:
    """A PIL image in any mode -> RGB by the rules of the module docstring."""
    import numpy as np
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L").convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class SkippedFiles:
    """What a run left out: ``{key: (reason, detail)}`` in the order met, each key once.

    ``add`` logs the first few new entries as warnings (``logger``; ``warn=False``: silent) and, with a
    ``journal``, appends each new one to that JSONL file (one ``write`` of one line with O_APPEND: lines from
    several processes do not interleave)."""

    def __init__(
        self, journal: str | Path | None = None, logger: logging.Logger | None = None, warn: bool = True
    ):
        self.journal = Path(journal) if journal is not None else None
        self.log = logger or log
        self.warn = warn
        self._entries: dict[str, tuple[str, str]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, reason: str, detail: str) -> bool:
        """Record ``key``; False (and nothing logged or written) when it is already recorded."""
        if key in self._entries:
            return False
        self._entries[key] = (reason, detail)
        if self.warn and len(self._entries) <= _MAX_WARNINGS:
            self.log.warning("skipping %s: %s (%s)", key, reason, detail)
        elif self.warn and len(self._entries) == _MAX_WARNINGS + 1:
            self.log.warning("more are skipped; the run's summary.json lists them all")
        if self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"key": key, "reason": reason, "detail": detail}) + "\n"
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return True

    def as_list(self) -> list[dict[str, str]]:
        return [{"key": k, "reason": r, "detail": d} for k, (r, d) in self._entries.items()]

    def extend(self, entries: Iterable[dict[str, Any]]) -> None:
        """Take entries of ``as_list`` form (from a checkpoint or a journal) without logging them again."""
        for e in entries:
            self._entries.setdefault(str(e["key"]), (str(e["reason"]), str(e.get("detail", ""))))


def read_journal(path: str | Path) -> list[dict[str, str]]:
    """The entries of a ``SkippedFiles`` journal, each key once (the first entry wins); [] when absent."""
    p = Path(path)
    merged = SkippedFiles(logger=log)
    if p.is_file():
        lines = [line for line in p.read_text().splitlines() if line.strip()]
        merged.extend(json.loads(line) for line in lines)
    return merged.as_list()


def merge_skipped(lists: Iterable[list[dict[str, Any]]]) -> list[dict[str, str]]:
    """Several ``as_list`` results (e.g. one per rank) -> one list, each key once."""
    merged = SkippedFiles(logger=log)
    for entries in lists:
        merged.extend(entries)
    return merged.as_list()


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "BadImage",
    "SkippedFiles",
    "check_max_pixels",
    "merge_skipped",
    "open_rgb",
    "read_journal",
    "to_rgb",
]

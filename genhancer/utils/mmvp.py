"""The MMVP-VLM folder layout, read and validated: shared by the evaluator (``eval.mmvp_vlm``) and the
GenHancer diagnostics (``genhancer.diagnostics``), which both work on image pairs of such a folder.

Layout (official or toy): ``Questions.csv`` (header row; columns question id, type, statement, read by
position) and ``MLLM_VLM Images/<type>/<qid>.jpg``; consecutive rows form a pair, qids 2k-1 and 2k, and the
odd qid's image is "image 1".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from genhancer.utils.errors import DataError

QUESTIONS_FILE = "Questions.csv"
IMAGES_DIR = "MLLM_VLM Images"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the official folder is .jpg; the others are tolerated


@dataclass(frozen=True)
class MMVPPair:
    """Two consecutive rows of Questions.csv: statement s belongs with image s (s = 0, 1) when qid s is
    odd."""

    qids: tuple[int, int]
    pattern: str
    statements: tuple[str, str]
    images: tuple[Path, Path]
    lines: tuple[int, int]


# ----------------------------------------------------------------------------------------------- reading
def _parse_row(row: list[str], line: int, path: Path) -> tuple[int, str, str]:
    cells = list(row)
    while cells and not cells[-1].strip():  # trailing empty cells from spreadsheet exports
        cells.pop()
    if len(cells) != 3:
        raise DataError(
            f"{path}, line {line}: expected 3 columns (question id, type, statement), got "
            f"{len(cells)}: {row!r}"
        )
    qid_s, pattern, statement = (c.strip() for c in cells)
    try:
        qid = int(qid_s)
    except ValueError:
        raise DataError(f"{path}, line {line}: question id {qid_s!r} is not an integer") from None
    if not pattern or not statement:
        raise DataError(f"{path}, line {line}: empty {'type' if not pattern else 'statement'}")
    return qid, pattern, statement


def _image_path(images_dir: Path, pattern: str, qid: int) -> Path:
    for ext in IMAGE_EXTENSIONS:
        p = images_dir / pattern / f"{qid}{ext}"
        if p.is_file():
            return p
    return images_dir / pattern / f"{qid}.jpg"


def read_benchmark(bench_dir: str | Path) -> list[MMVPPair]:
    """Read and validate an MMVP-VLM folder; every problem is a ``DataError`` naming the file and
    line/qids."""
    bench = Path(bench_dir)
    path = bench / QUESTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: an MMVP-VLM folder holds {QUESTIONS_FILE} and '{IMAGES_DIR}/'")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        raw = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    # The official file has a header ("Question ID, Type, Statement" in some spelling): a first row whose
    # first cell is not an integer is a header.
    if raw and not raw[0][1][0].strip().lstrip("-").isdigit():
        raw = raw[1:]
    if not raw:
        raise DataError(f"{path}: no question rows")
    rows = [(line, *_parse_row(r, line, path)) for line, r in raw]
    if len(rows) % 2:
        line, qid, _, _ = rows[-1]
        raise DataError(
            f"{path}: odd number of question rows ({len(rows)}); consecutive rows form pairs, so "
            f"the last row (line {line}, qid {qid}) has no partner"
        )

    images_dir = bench / IMAGES_DIR
    pairs, missing = [], []
    for (l1, q1, t1, s1), (l2, q2, t2, s2) in zip(rows[0::2], rows[1::2]):
        if t1 != t2:
            raise DataError(
                f"{path}, lines {l1}-{l2}: the pair of qids {q1} and {q2} has different types "
                f"({t1!r} vs {t2!r}); both rows of a pair must have the same type"
            )
        if not (q1 % 2 == 1 and q2 == q1 + 1):
            raise DataError(
                f"{path}, lines {l1}-{l2}: qids {q1}, {q2} do not form a pair; the protocol needs "
                f"consecutive rows with qids 2k-1, 2k (odd qid = image 1)"
            )
        imgs = (_image_path(images_dir, t1, q1), _image_path(images_dir, t1, q2))
        missing += [str(p) for p in imgs if not p.is_file()]
        pairs.append(MMVPPair((q1, q2), t1, (s1, s2), imgs, (l1, l2)))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataError(
            f"{len(missing)} image(s) missing, e.g. {', '.join(missing[:3])}{more}; expected "
            f"'{IMAGES_DIR}/<type>/<qid>.jpg' under {bench}"
        )
    return pairs

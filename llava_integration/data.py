"""LLaVA training data: JSON/JSONL records -> token ids, labels and pixels.

A record is ``{"id", "image"?: path relative to the image root, "conversations": [{"from": "human"|"gpt",
"value": str}, ...]}`` (LCS-558K, llava_v1_5_mix665k and the toy world's files alike). Text-only records
have no ``image``. ``<image>`` is moved to the start of the first human turn (``"<image>\\n" + text``), as
LLaVA does; an image record without ``<image>`` gets one there.

Encoding one record (see :func:`encode_record`):
1. render the conversation with the stage's chat template, which reports the assistant character spans;
2. tokenize with offsets; tokens overlapping an assistant span are supervised, all others get -100;
3. the single ``<image>`` token becomes the full run of image tokens (-100 labels), budgeted in max_length;
4. a record longer than max_length is truncated *after* its image tokens (``over_length=truncate``) or
   skipped and counted; it is never cut through its image tokens, and a record left with nothing to learn
   is skipped.

Malformed records (not a JSON object, no conversations, non-string values, wrong roles, more than one
``<image>``, ``<image>`` in an answer or without an image, a missing image file) are found up front and
named by index (position in the file) and id: an error by default, skipped with ``on_bad_record=skip``.
Images are opened at read time by ``genhancer.utils.images.open_rgb`` (the suite's one set of rules; pixel
cap ``data.max_image_pixels``); an image that cannot be used (vanished since, truncated, not an image, too
many pixels, ...) is an error naming record, id, file and reason, or with ``on_bad_record=skip`` its record
is skipped.

A skipped record is replaced by the next usable record *of the same modality* (image or text-only), so a
batch the modality-grouped sampler made single-modality stays so (ZeRO-3 ranks must all run, or all skip,
the vision tower). What was skipped is recorded once per record / file in a ``SkipReport``; with a journal
directory its entries are appended to files there as they happen, so skips met in DataLoader worker
processes and on other ranks survive (``SkipReport.collect`` merges them for the run's ``summary.json``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import read_json
from genhancer.utils.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, SkippedFiles, open_rgb, read_journal
from genhancer.utils.logging import get_logger
from llava_integration.config import DataConfig
from llava_integration.templates import IMAGE_TOKEN, render_with_spans, supervised_token_mask

log = get_logger("llava_integration.data")
ROLES = {"human": "user", "gpt": "assistant"}
IGNORE_INDEX = -100
_MAX_LISTED = 20


class OverLength(Exception):
    """A record that cannot be fitted into max_length without cutting its image tokens (internal)."""


class SkipReport:
    """What was left out, and why, each once: ``records`` (skipped records, key ``record #i (id=...)``),
    ``files`` (unusable image files, key = path) and ``truncated`` (records cut after their image tokens).

    ``journal``: a directory; each new entry is also appended to ``<journal>/<part>.jsonl``, so entries made
    in other processes are kept; ``collect`` reads them back merged."""

    PARTS = ("records", "files", "truncated")

    def __init__(self, journal: str | Path | None = None):
        self.journal = Path(journal) if journal is not None else None
        if self.journal is not None:
            self.journal.mkdir(parents=True, exist_ok=True)
        where = {p: self.journal / f"{p}.jsonl" if self.journal else None for p in self.PARTS}
        self.records = SkippedFiles(where["records"], logger=log)
        self.files = SkippedFiles(where["files"], logger=log, warn=False)  # its record's warning names it
        self.truncated = SkippedFiles(where["truncated"], logger=log, warn=False)

    def collect(self) -> dict[str, Any]:
        """Every process's entries (from the journal; this process's alone without one)."""
        parts = {
            p: read_journal(self.journal / f"{p}.jsonl") if self.journal else getattr(self, p).as_list()
            for p in self.PARTS
        }
        return {
            "skipped_records": parts["records"],
            "skipped_files": parts["files"],
            "truncated_records": len(parts["truncated"]),
        }

    def summary(self) -> str:
        got = self.collect()
        reasons: dict[str, int] = {}
        for e in got["skipped_records"]:
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
        why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return (
            f"{len(got['skipped_records'])} record(s) skipped ({why}), {len(got['skipped_files'])} unusable "
            f"image file(s), {got['truncated_records']} record(s) truncated after their image tokens"
        )


def read_records(path: str | Path) -> list[Any]:
    """A LLaVA JSON list (``.json``) or one record per line (``.jsonl``); a record that is not a JSON object
    is kept, to be named by ``record_problems`` like any other malformed record."""
    p = Path(path)
    if p.suffix != ".jsonl":
        data = read_json(p)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list of records, got {type(data).__name__}")
        return data
    if not p.is_file():
        raise DataError(f"file not found: {p}")
    records = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}, line {n}: not valid JSON ({e})") from None
    return records


def record_name(index: int, rec: Any) -> str:
    """How messages name a record: its position in the data file and its id."""
    return f"record #{index} (id={rec.get('id') if isinstance(rec, dict) else None!r})"


def _turn_problems(conv: list[Any]) -> tuple[list[str], int]:
    """(problems of the turns, number of ``<image>`` in human turns)."""
    problems, n_image_tokens = [], 0
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.append(f"turn {k} is not {{'from': ..., 'value': <string>}}")
            continue
        want = "human" if k % 2 == 0 else "gpt"
        if turn.get("from") != want:
            problems.append(
                f"turn {k} is from {turn.get('from')!r}, expected {want!r} "
                "(turns must alternate human, gpt, starting with human)"
            )
        elif want == "gpt" and IMAGE_TOKEN in turn["value"]:
            problems.append(f"turn {k} (a 'gpt' answer) contains '<image>' (the image goes in a human turn)")
        else:
            n_image_tokens += turn["value"].count(IMAGE_TOKEN)
    if len(conv) % 2:
        problems.append("the last turn is from 'human' (a conversation must end with a 'gpt' answer)")
    return problems, n_image_tokens


def record_problems(rec: Any, image_root: Path | None) -> list[str]:
    """Every way ``rec`` is malformed (empty when it is fine)."""
    if not isinstance(rec, dict):
        return [f"a record must be a JSON object, got {type(rec).__name__}"]
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return ["no conversations (a non-empty 'conversations' list is required)"]
    problems, n_image_tokens = _turn_problems(conv)
    image = rec.get("image")
    if n_image_tokens > 1:
        problems.append(f"{n_image_tokens} '<image>' tokens (at most one image per record is supported)")
    if image is None:
        if n_image_tokens:
            problems.append("'<image>' in the text but the record has no 'image'")
    elif not isinstance(image, str) or not image:
        problems.append(f"'image' must be a path string, got {image!r}")
    elif image_root is not None and not (image_root / image).is_file():
        problems.append(f"image file not found: {image_root / image}")
    return problems


def validate_records(cfg: DataConfig, report: SkipReport | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Read and check ``cfg.path``: the usable ``(index in the file, record)`` pairs. Malformed records raise
    (listing them) or, with ``on_bad_record=skip``, are skipped and recorded in ``report``."""
    if not cfg.path:
        raise ConfigError("data.path is empty: give a LLaVA JSON/JSONL file")
    records = read_records(cfg.path)
    if cfg.limit is not None:
        records = records[: cfg.limit]
    root = Path(cfg.image_root) if cfg.image_root else Path(".")
    good, bad = [], []
    for i, rec in enumerate(records):
        problems = record_problems(rec, root)
        if problems:
            bad.append((record_name(i, rec), "; ".join(problems)))
        else:
            good.append((i, rec))
    if bad and cfg.on_bad_record == "error":
        listed = "\n  ".join(f"{name}: {why}" for name, why in bad[:_MAX_LISTED]) + (
            f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        )
        raise DataError(
            f"{cfg.path}: {len(bad)} malformed record(s) of {len(records)}:\n  {listed}\n"
            "(fix them, or set data.on_bad_record=skip to skip and count them)"
        )
    if bad:
        log.warning("%s: skipping %d malformed record(s) of %d", cfg.path, len(bad), len(records))
        report = report or SkipReport()
        for name, why in bad:
            report.records.add(name, "malformed", why)
    if not good:
        raise DataError(f"{cfg.path}: no usable records")
    return good


def load_records(cfg: DataConfig, report: SkipReport | None = None) -> list[dict[str, Any]]:
    """The usable records of ``cfg.path`` (``validate_records`` without their indices)."""
    return [rec for _, rec in validate_records(cfg, report)]


def to_messages(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """LLaVA turns -> chat messages; ``<image>`` moved to the front of the first human turn."""
    msgs = [{"role": ROLES[t["from"]], "content": t["value"]} for t in rec["conversations"]]
    if rec.get("image") is not None:
        first = msgs[0]["content"]
        text = first.replace(IMAGE_TOKEN, "").strip()
        msgs[0]["content"] = f"{IMAGE_TOKEN}\n{text}"
    return msgs


def estimated_length(rec: dict[str, Any], image_tokens: int) -> int:
    """Cheap length for grouping (words + image tokens), as LLaVA does; no tokenization."""
    words = sum(len(t["value"].split()) for t in rec["conversations"])
    return words + (image_tokens if rec.get("image") is not None else 0)


def encode_record(
    messages: Sequence[dict[str, Any]],
    *,
    chat_template: str,
    tokenizer: Any,
    image_token_id: int,
    image_tokens: int,
    has_image: bool,
    max_length: int,
    over_length: str = "truncate",
) -> dict[str, Any]:
    """Token ids and labels of one conversation (raises ``OverLength`` when it must be skipped).

    Returns ``{"input_ids": list[int], "labels": list[int], "truncated": bool, "text": str}``.
    """
    text, spans = render_with_spans(chat_template, messages)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids: list[int] = list(enc["input_ids"])
    mask = supervised_token_mask(enc["offset_mapping"], spans)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    where = [k for k, t in enumerate(ids) if t == image_token_id]
    if len(where) != (1 if has_image else 0):
        raise DataError(
            f"the rendered conversation holds {len(where)} image token(s), expected "
            f"{1 if has_image else 0}: {text[:200]!r}"
        )
    image_end = 0
    if has_image:
        p = where[0]
        ids = ids[:p] + [image_token_id] * image_tokens + ids[p + 1 :]
        labels = labels[:p] + [IGNORE_INDEX] * image_tokens + labels[p + 1 :]
        image_end = p + image_tokens
    truncated = False
    if len(ids) > max_length:
        if over_length != "truncate":
            raise OverLength(f"{len(ids)} tokens > max_length {max_length}")
        if image_end >= max_length:
            raise OverLength(f"its image tokens end at {image_end}, beyond max_length {max_length}")
        ids, labels, truncated = ids[:max_length], labels[:max_length], True
    if all(lab == IGNORE_INDEX for lab in labels):
        raise OverLength("no answer token left within max_length")
    return {"input_ids": ids, "labels": labels, "truncated": truncated, "text": text}


def expand2square(image: Any, background: tuple[int, int, int]) -> Any:
    """Pad a PIL image to a square (centred) with ``background`` (LLaVA-1.5's image_aspect_ratio=pad)."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def load_pixels(
    path: Path, image_processor: Any, aspect: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """(3, H, W) pixel values of one image (``open_rgb``'s rules: ``BadImage`` when it cannot be used),
    padded to square with the mean colour when ``aspect=pad``."""
    image = open_rgb(path, max_pixels=max_pixels)
    if aspect == "pad":
        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        image = expand2square(image, tuple(int(x * 255) for x in mean))
    return image_processor(images=[image], return_tensors="pt")["pixel_values"][0]


class LlavaDataset(Dataset):
    """Map-style dataset of encoded LLaVA records (encoding happens lazily, per item).

    ``journal``: a directory for the ``SkipReport``'s journal (the trainer passes one in the stage directory,
    so skips met in DataLoader workers reach ``summary.json``)."""

    def __init__(
        self,
        cfg: DataConfig,
        processor: Any,
        chat_template: str,
        image_tokens: int,
        journal: str | Path | None = None,
    ):
        self.cfg = cfg
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.chat_template = chat_template
        self.image_tokens = image_tokens
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.root = Path(cfg.image_root) if cfg.image_root else Path(".")
        self.report = SkipReport(journal)
        indexed = validate_records(cfg, self.report)
        self.file_index = [i for i, _ in indexed]  # position of each record in the data file (for messages)
        self.records = [rec for _, rec in indexed]
        self.has_image = [r.get("image") is not None for r in self.records]
        if any(self.has_image) and image_tokens + 2 > cfg.max_length:
            raise ConfigError(
                f"data.max_length={cfg.max_length} cannot hold one image ({image_tokens} image "
                "tokens) and an answer: raise max_length"
            )
        self.lengths = [estimated_length(r, image_tokens) for r in self.records]
        # replacements stay within a modality: each record's modality list and its place in it
        self.modality = {m: [j for j, h in enumerate(self.has_image) if h == m] for m in (True, False)}
        self.slot = {j: k for group in self.modality.values() for k, j in enumerate(group)}
        self.unusable: set[int] = set()  # records this process found unusable (not tried again)

    def __len__(self) -> int:
        return len(self.records)

    def modality_lengths(self) -> list[int]:
        """Positive for image records, negative for text-only ones (for the grouping sampler)."""
        return [n if img else -n for n, img in zip(self.lengths, self.has_image)]

    def name(self, index: int) -> str:
        return record_name(self.file_index[index], self.records[index])

    def encode(self, index: int) -> dict[str, Any]:
        """Token ids, labels (and pixel values) of record ``index``; raises ``OverLength``, ``BadImage`` or
        ``DataError`` when it cannot be used."""
        rec = self.records[index]
        out = encode_record(
            to_messages(rec),
            chat_template=self.chat_template,
            tokenizer=self.tokenizer,
            image_token_id=self.image_token_id,
            image_tokens=self.image_tokens,
            has_image=self.has_image[index],
            max_length=self.cfg.max_length,
            over_length=self.cfg.over_length,
        )
        item: dict[str, Any] = {
            "input_ids": torch.tensor(out["input_ids"]),
            "labels": torch.tensor(out["labels"]),
        }
        if self.has_image[index]:
            item["pixel_values"] = load_pixels(
                self.root / rec["image"],
                self.processor.image_processor,
                self.cfg.image_aspect_ratio,
                self.cfg.max_image_pixels,
            )
        if out["truncated"]:
            self.report.truncated.add(
                self.name(index), "truncated", f"to data.max_length={self.cfg.max_length}"
            )
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        # A record that must be skipped is replaced by the next usable one of its modality (and recorded), so
        # a batch is always full and single-modality; the sampler still sees the dataset's own length.
        group = self.modality[self.has_image[index]]
        start = self.slot[index]
        for step in range(len(group)):
            j = group[(start + step) % len(group)]
            if j in self.unusable:
                continue
            try:
                return self.encode(j)
            except OverLength as e:
                self._skip(j, "over-length", str(e))
            except BadImage as bad:
                self._bad_image(j, bad)
            except DataError as e:
                if self.cfg.on_bad_record == "error":
                    raise DataError(f"{self.name(j)}: {e}") from None
                self._skip(j, "malformed", str(e))
        kind = "image" if self.has_image[index] else "text-only"
        raise DataError(
            f"{self.cfg.path}: none of the {len(group)} {kind} records can be used "
            f"({self.report.summary()}; data.max_length={self.cfg.max_length})"
        )

    def _skip(self, index: int, reason: str, detail: str) -> None:
        self.unusable.add(index)
        self.report.records.add(self.name(index), reason, detail)

    def _bad_image(self, index: int, bad: BadImage) -> None:
        """Record ``index``'s image cannot be used: an error naming both (``on_bad_record=error``), or the
        file and the record are recorded and the record skipped."""
        path = self.root / self.records[index]["image"]
        if self.cfg.on_bad_record == "error":
            raise DataError(
                f"{self.name(index)}: cannot use image {path}: {bad.reason}: {bad.detail} (fix or remove the "
                "file, or set data.on_bad_record=skip to skip such records)"
            )
        self.report.files.add(str(path), bad.reason, f"{bad.detail} (first met in {self.name(index)})")
        self._skip(index, "bad-image", f"{path}: {bad.reason}")


@dataclass
class LlavaCollator:
    """Right-pads ids (pad token) and labels (-100); stacks the pixel values of the image records."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attn = torch.zeros((len(features), n), dtype=torch.long)  # (B, T)
        for k, f in enumerate(features):
            m = len(f["input_ids"])
            ids[k, :m], labels[k, :m], attn[k, :m] = f["input_ids"], f["labels"], 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": attn}
        pixels = [f["pixel_values"] for f in features if "pixel_values" in f]
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)  # (n_images, 3, H, W), in token order
        return batch


class ModalityLengthGroupedSampler(Sampler[int]):
    """Shuffles within modality, groups ``group_size`` indices of one modality and similar length.

    ``lengths``: positive for image records, negative for text-only ones. ``group_size`` is the global
    micro-batch (per-device batch x world size): consecutive groups are split across ranks, so every rank
    sees the same modality at every step -- which ZeRO-3 needs (a rank skipping the vision tower while
    another runs it would wait forever on the parameter gather). Each modality's last partial group is
    filled by wrapping around its own shuffled list, so no group is mixed.
    """

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int = 0):
        if group_size < 1:
            raise ValueError("group_size must be >= 1")
        self.lengths = list(lengths)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self._len = sum(
            math.ceil(n / group_size) * group_size
            for n in (sum(1 for x in self.lengths if x > 0), sum(1 for x in self.lengths if x < 0))
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._len

    def groups(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        out = []
        for sign in (1, -1):
            idx = [i for i, n in enumerate(self.lengths) if n * sign > 0]
            if not idx:
                continue
            perm = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
            short = (-len(perm)) % self.group_size
            perm += [perm[k % len(perm)] for k in range(short)]
            for s in range(0, len(perm), self.group_size):
                group = perm[s : s + self.group_size]
                out.append(sorted(group, key=lambda i: -abs(self.lengths[i])))
        order = torch.randperm(len(out), generator=g).tolist()
        return [out[k] for k in order]

    def __iter__(self) -> Iterator[int]:
        for group in self.groups():
            yield from group


def describe(dataset: LlavaDataset, n: int = 1) -> str:
    """A human-readable dump of the first ``n`` encoded items (rendered text + supervised text)."""
    lines = []
    tok = dataset.tokenizer
    for i in range(min(n, len(dataset))):
        item = dataset.encode(i)
        sup = [t for t in item["labels"].tolist() if t != IGNORE_INDEX]
        text = re.sub(
            f"({re.escape(IMAGE_TOKEN)})+",
            f"<image>x{dataset.image_tokens}",
            tok.decode(item["input_ids"].tolist()),
        )
        lines.append(json.dumps({"text": text, "supervised": tok.decode(sup)}))
    return "\n".join(lines)

"""The suite's one image opener and its skip record: every zoo kind loads as the right RGB colour or is
refused with the right reason; skips are recorded once per file, and a journal merges several processes."""

from __future__ import annotations

import io
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from genhancer.utils.errors import ConfigError
from genhancer.utils.images import BadImage, SkippedFiles, check_max_pixels, open_rgb, read_journal
from tests import image_zoo as zoo


@pytest.mark.parametrize("name", sorted(zoo.zoo()))
def test_every_zoo_kind(name):
    data = zoo.zoo()[name]
    if name in zoo.LOADS:
        image = open_rgb(data)
        assert image.mode == "RGB"
        assert zoo.close(zoo.colour_of(np.asarray(image)), zoo.LOADS[name])
    else:
        with pytest.raises(BadImage) as e:
            open_rgb(data)
        assert e.value.reason == zoo.SKIPS[name] and e.value.detail


def test_paths_the_cap_and_its_config_check(tmp_path):
    (tmp_path / "a.png").write_bytes(zoo.zoo()["palette.png"])
    assert open_rgb(tmp_path / "a.png").size == (zoo.SIDE, zoo.SIDE)
    with pytest.raises(BadImage) as e:
        open_rgb(tmp_path / "vanished.png")
    assert e.value.reason == "unreadable" and "FileNotFoundError" in e.value.detail
    with pytest.raises(BadImage, match="too-many-pixels: 8x8 = 64 pixels is above max_image_pixels=10"):
        open_rgb(tmp_path / "a.png", max_pixels=10)
    check_max_pixels(178_956_970, "x")
    with pytest.raises(ConfigError, match="vq.max_image_pixels=-1: must be between 1 and 178956970"):
        check_max_pixels(-1, "vq.max_image_pixels")


def test_skipped_files_records_each_key_once(tmp_path):
    s = SkippedFiles()
    assert s.add("a.png", "empty", "zero bytes") and not s.add("a.png", "corrupt", "again")
    assert s.add("b.png", "not-an-image", "text")
    assert s.as_list() == [
        {"key": "a.png", "reason": "empty", "detail": "zero bytes"},
        {"key": "b.png", "reason": "not-an-image", "detail": "text"},
    ]
    again = SkippedFiles()
    again.extend(s.as_list())  # from a checkpoint: same entries, in order
    assert again.as_list() == s.as_list() and len(again) == 2 and "b.png" in again


def _worker(journal: str, keys: list[str]) -> None:
    s = SkippedFiles(journal)
    for k in keys:
        s.add(k, "corrupt", f"seen by {keys[0]}")


def test_journal_merges_entries_of_other_processes(tmp_path):
    journal = tmp_path / "skipped.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(journal), keys)) for keys in (["x", "y"], ["y", "z", "x"])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    merged = read_journal(journal)
    assert sorted(e["key"] for e in merged) == ["x", "y", "z"]  # each once, whoever wrote it first
    assert len(Path(journal).read_text().splitlines()) == 5  # every process wrote its own first sightings
    assert read_journal(tmp_path / "absent.jsonl") == []


def test_a_truncated_file_is_refused_even_when_another_library_allows_them(tmp_path, monkeypatch):
    """lmms-eval sets PIL's global LOAD_TRUNCATED_IMAGES = True on import; our opener must not follow it."""
    from PIL import Image, ImageFile

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImage) as err:
        open_rgb(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert err.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the other library's setting is left as it was

"""The data layer: rank sharding, one crop normalised twice, corrupt images, webdataset shards, resumable
order."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genhancer.config import DataConfig
from genhancer.data import CropAndNormalize, build_source, build_stream, random_resized_crop_box
from genhancer.utils.errors import ConfigError, DataError
from tests.genhancer_train.worlds import make_shards


def _make_folder(root: Path, n: int) -> Path:
    from PIL import ImageDraw

    (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", (20 + i % 5, 24), (i * 9 % 255, 100, 200))
        ImageDraw.Draw(im).rectangle((2, 2, 8 + i % 7, 10), fill="black")
        # some in a subfolder: the folder source is recursive
        (root / "images" / ("sub" if i % 4 == 0 else "") / f"{i:03d}.png").parent.mkdir(exist_ok=True)
        im.save(root / "images" / ("sub" if i % 4 == 0 else "") / f"{i:03d}.png")
    return root


def stream(cfg: DataConfig, rank: int = 0, world: int = 1, batch: int = 2, seed: int = 0):
    return build_stream(
        cfg,
        image_size=16,
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.25, 0.3],
        batch_size=batch,
        seed=seed,
        rank=rank,
        world_size=world,
    )


@pytest.mark.parametrize("world", [2, 3])
def test_folder_is_sharded_by_rank(tmp_path, world):
    root = _make_folder(tmp_path, 11)
    cfg = DataConfig(source="folder", path=str(root))
    parts = [{r.key for r in build_source(cfg, rank, world).refs} for rank in range(world)]
    every = {str(p) for p in root.rglob("*.png")}
    assert set().union(*parts) == every
    assert sum(len(p) for p in parts) == len(every)  # disjoint
    # and the streams really draw only from their own part, all of it over one epoch
    for rank in range(world):
        s = stream(cfg, rank, world, batch=1)
        seen = [next(iter_) for iter_ in [iter(s)] for _ in range(len(parts[rank]))]
        assert {k for b in seen for k in b.keys} == parts[rank]


def test_order_is_seeded_per_rank_and_reshuffled_per_epoch(tmp_path):
    root = _make_folder(tmp_path, 12)
    cfg = DataConfig(source="folder", path=str(root))
    s = stream(cfg)
    e0, e1 = list(s.permutation(0)), list(s.permutation(1))
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert list(stream(cfg, seed=1).permutation(0)) != e0
    assert list(stream(cfg).permutation(0)) == e0  # a pure function of (seed, rank, epoch)


def test_one_crop_normalised_twice():
    tf = CropAndNormalize(16, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], crop_scale=(0.5, 1.0))
    im = Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype("uint8"))
    pv, tgt = tf(im, np.random.default_rng(1))
    assert pv.shape == tgt.shape == (3, 16, 16)
    assert tgt.min() >= -1 and tgt.max() <= 1
    # the same crop: undo the encoder normalisation and compare with the [-1, 1] view
    x = pv * torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1) + torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    assert torch.allclose(x, (tgt + 1) / 2, atol=1e-5)


def test_crop_box_respects_scale_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, t, r, b = random_resized_crop_box(50, 30, (0.9, 1.0), rng)
        assert 0 <= left < r <= 50 and 0 <= t < b <= 30
        assert (r - left) * (b - t) >= 0.75 * 50 * 30  # near the scale range (rounding + centre fallback)
    with pytest.raises(ConfigError):
        CropAndNormalize(16, [0.5] * 3, [0.5] * 3, crop_scale=(0.0, 1.0))


def test_corrupt_image_is_skipped_counted_and_named(tmp_path):
    root = _make_folder(tmp_path, 6)
    bad = root / "images" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("genhancer.data")
    logger.addHandler(handler)
    try:
        s = stream(DataConfig(source="folder", path=str(root)), batch=7)
        batch = next(iter(s))  # 7 images exist: one epoch + one more, the broken one skipped
    finally:
        logger.removeHandler(handler)
    assert len(batch.keys) == 7 and str(bad) not in batch.keys
    assert s.skipped == 1
    assert any(str(bad) in r.getMessage() for r in records)


def test_corrupt_image_in_strict_mode_is_an_error_naming_the_file(tmp_path):
    root = _make_folder(tmp_path, 3)
    bad = root / "images" / "broken.jpg"
    bad.write_bytes(b"nope")
    s = stream(DataConfig(source="folder", path=str(root), strict=True), batch=4)
    with pytest.raises(DataError, match="broken.jpg"):
        next(iter(s))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_source(DataConfig(source="folder", path=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="folder, webdataset"):
        build_source(DataConfig(source="parquet", path=str(tmp_path)))


def test_webdataset_shards_are_read_and_sharded(tmp_path):
    shards = make_shards(tmp_path / "wds", n_shards=3, per_shard=4)
    cfg = DataConfig(source="webdataset", path=str(tmp_path / "wds"))
    parts = [build_source(cfg, r, 2) for r in range(2)]
    keys = [{r.key for r in p.refs} for p in parts]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 12
    assert all(k.endswith(".jpg") and ".tar:" in k for k in keys[0])  # shard:member names, captions ignored
    assert {r.path for r in parts[0].refs} == {str(shards[0]), str(shards[2])}  # whole shards per rank
    b = next(iter(stream(cfg, 1, 2, batch=4)))
    assert b.pixel_values.shape == (4, 3, 16, 16) and set(b.keys) == keys[1]
    # a brace range and fewer shards than ranks (samples are dealt instead)
    rng_cfg = DataConfig(source="webdataset", path=str(tmp_path / "wds" / "{00000..00001}.tar"))
    parts = [{r.key for r in build_source(rng_cfg, r, 3).refs} for r in range(3)]
    assert sum(map(len, parts)) == 8 and len(set().union(*parts)) == 8


def test_stream_position_resumes_exactly(tmp_path):
    root = _make_folder(tmp_path, 7)
    cfg = DataConfig(source="folder", path=str(root))
    full = stream(cfg, batch=3)
    it = iter(full)
    first = [next(it) for _ in range(2)]
    state = full.state_dict()
    rest = [next(it) for _ in range(3)]  # crosses an epoch boundary (7 images, batch 3)
    resumed = stream(cfg, batch=3)
    resumed.load_state_dict(state)
    again = [b for b, _ in zip(iter(resumed), range(3))]
    assert [b.keys for b in again] == [b.keys for b in rest]
    assert all(torch.equal(a.pixel_values, b.pixel_values) for a, b in zip(again, rest))  # same crops too
    assert state["epoch"] == 0 and state["index"] == 6 and first
    other = stream(DataConfig(source="folder", path=str(_make_folder(tmp_path / "more", 9))), batch=3)
    with pytest.raises(DataError, match="data changed"):
        other.load_state_dict(state)


def test_threaded_decoding_gives_the_same_batches(tmp_path):
    root = _make_folder(tmp_path, 9)
    plain = stream(DataConfig(source="folder", path=str(root), num_workers=0), batch=4)
    threaded = stream(DataConfig(source="folder", path=str(root), num_workers=2), batch=4)
    a = [b for b, _ in zip(iter(plain), range(3))]
    b = [b for b, _ in zip(iter(threaded), range(3))]
    threaded.close()
    assert [x.keys for x in a] == [x.keys for x in b]
    assert all(torch.equal(x.target, y.target) for x, y in zip(a, b))
    assert plain.state_dict() == threaded.state_dict()

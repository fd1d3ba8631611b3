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
from tests import image_zoo as zoo
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


# ------------------------------------------------------------------------------------------ the image zoo
def _zoo_batches(cfg: DataConfig, n_batches: int, batch: int = 5):
    s = stream(cfg, batch=batch)
    seen: dict[str, tuple[int, int, int]] = {}
    for b, _ in zip(iter(s), range(n_batches)):
        u8 = ((b.target + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (B, 3, S, S)
        for key, img in zip(b.keys, u8):
            name = Path(key.split(":")[-1]).name  # a file, or a shard member
            seen[name] = zoo.colour_of(img) if name in zoo.LOADS else None
    return s, seen


def _check_zoo(s, seen, extra_skips: dict[str, str] | None = None) -> None:
    for name, colour in zoo.LOADS.items():
        assert name in seen and zoo.close(seen[name], colour), (name, seen.get(name), colour)
    skips = {**zoo.SKIPS, **(extra_skips or {})}
    assert not set(skips) & set(seen)
    got = {Path(e["key"].split(":")[-1]).name: e["reason"] for e in s.skipped_files.as_list()}
    assert got == skips and s.skipped == len(skips)  # each file once, though every epoch met it
    assert s.epoch >= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_zoo_in_a_folder(tmp_path, workers):
    from tests.genhancer_train.worlds import make_folder

    root = zoo.write_folder(make_folder(tmp_path / "world", 4))
    cfg = DataConfig(source="folder", path=str(root), num_workers=workers)
    s, seen = _zoo_batches(cfg, n_batches=5)  # 10 usable images per epoch: 25 draws = 2.5 epochs
    _check_zoo(s, seen)
    resumed = stream(cfg, batch=5)  # the skipped files travel with the position (checkpoint state)
    resumed.load_state_dict(s.state_dict())
    assert resumed.skipped_files.as_list() == s.skipped_files.as_list()


def test_bad_image_zoo_in_a_webdataset_shard(tmp_path):
    from tests.genhancer_train.worlds import draw_scene

    good = {f"good{i}.jpg": zoo._encode(draw_scene(i), "JPEG") for i in range(4)}
    zoo.write_shard(tmp_path / "wds" / "00000.tar", good)
    cfg = DataConfig(source="webdataset", path=str(tmp_path / "wds"))
    assert len(build_source(cfg).refs) == 4 + len(zoo.zoo()) + 1  # the cut member is still listed
    s, seen = _zoo_batches(cfg, n_batches=5)
    _check_zoo(s, seen, {"cut.jpg": "bad-tar-member"})


def test_pixel_cap_skips_big_images_and_is_checked(tmp_path):
    root = zoo.write_folder(tmp_path / "world")
    s = stream(DataConfig(source="folder", path=str(root), max_image_pixels=zoo.SIDE**2 - 1), batch=1)
    assert next(iter(s)).keys == [str(root / "images" / "one_pixel.png")]  # the only image under the cap
    details = {Path(e["key"]).name: e for e in s.skipped_files.as_list()}
    assert details["palette.png"]["reason"] == "too-many-pixels"
    assert "8x8 = 64 pixels is above max_image_pixels=63" in details["palette.png"]["detail"]
    for bad in (0, 178_956_971):
        with pytest.raises(
            ConfigError, match=f"data.max_image_pixels={bad}: must be between 1 and 178956970"
        ):
            DataConfig(max_image_pixels=bad)


def test_zoo_in_strict_mode_names_file_and_reason(tmp_path):
    root = zoo.write_folder(tmp_path / "world")
    s = stream(DataConfig(source="folder", path=str(root), strict=True), batch=len(zoo.zoo()))
    reasons = "|".join(zoo.SKIPS.values())
    with pytest.raises(
        DataError, match=rf"cannot read image .*images/\w+\.\w+: ({reasons}): .*data.strict=false"
    ):
        next(iter(s))

"""The stage-1 feature cache: same loss as from pixels, invalidation, atomic builds, rank sharding,
stage 2."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genhancer.cache import (
    MANIFEST,
    CachedStream,
    FeatureCache,
    build_cache,
    cache_dir,
    cache_status,
    data_root,
    digests,
    fingerprint_parts,
    open_cache,
    training_stream,
)
from genhancer.data import CropAndNormalize, ImageStream, build_source, random_resized_crop_box, source_files
from genhancer.module import GenHancerModel
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.images import BadImage
from tests.genhancer_train.worlds import draw_scene, make_shards


def _model(cfg) -> GenHancerModel:
    torch.manual_seed(0)
    return GenHancerModel.build(cfg)


def _pixels_of(cfg, model: GenHancerModel, keys: list[str], views: list[int]):
    """The uncached path's inputs for (key, view): CropAndNormalize.__call__ with the view's generator."""
    spec = model.encoder_image_spec()
    transform = CropAndNormalize(spec["image_size"], spec["mean"], spec["std"], tuple(cfg.data.crop_scale))
    source = build_source(cfg.data, 0, 1)
    index = {r.key: i for i, r in enumerate(source.refs)}
    pvs, tgts = [], []
    for key, view in zip(keys, views, strict=True):
        with Image.open(io.BytesIO(source.read_bytes(index[key]))) as im:
            pv, tgt = transform(im, np.random.default_rng([cfg.train.seed, index[key], view]))
        pvs.append(pv)
        tgts.append(tgt)
    return torch.stack(pvs), torch.stack(tgts)


def _stream(cfg, model, rank: int = 0, world: int = 1) -> CachedStream:
    stream = training_stream(cfg, model, rank=rank, world_size=world)
    assert isinstance(stream, CachedStream)
    return stream


@pytest.mark.parametrize("variant", ["pixel", "local_tokens", "vae_posterior", "vq_discrete"])
def test_cached_loss_equals_the_uncached_loss(make_cfg, request, variant):
    if variant == "vae_posterior":
        extra = [
            "latent.space=vae",
            f"latent.vae_path={request.getfixturevalue('tiny_vae')}",
            "latent.patch_size=2",
        ]
    elif variant == "vq_discrete":
        extra = [
            "denoiser.type=discrete",
            "latent.space=vq",
            f"latent.vae_path={request.getfixturevalue('tiny_vq')}",
            "latent.patch_size=1",
            "latent.vae_subfolder=null",
        ]
    else:
        extra = ["conditioning.local_token_fraction=0.25"] if variant == "local_tokens" else []
    cfg = make_cfg(*extra)
    model = _model(cfg)
    stream = _stream(cfg, model)
    batch = next(iter(stream))
    if variant == "local_tokens":
        assert batch.patch_tokens is not None and batch.patch_tokens.shape[1] == 16
    else:
        assert batch.patch_tokens is None
    if variant == "vae_posterior":  # the cache holds the posterior's moments (mean, logvar), not a sample
        assert batch.latent_input.shape == (4, 8, 16, 16)
    if variant == "vq_discrete":  # token ids stay integers through model_inputs
        assert batch.model_inputs("cpu", torch.float32)["latent_input"].dtype == torch.int64
    pixel_values, target = _pixels_of(cfg, model, batch.keys, batch.views)
    model.train()
    cached = model(**batch.model_inputs("cpu", torch.float32), generator=torch.Generator().manual_seed(5))
    uncached = model(pixel_values, target, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(cached["loss"], uncached["loss"], rtol=0, atol=1e-6)
    assert {k: v for k, v in cached.items() if k != "loss"} == {
        k: v for k, v in uncached.items() if k != "loss"
    }
    # another generator -> another t/noise (and posterior sample): the cache fixes no randomness
    other = model(**batch.model_inputs("cpu", torch.float32), generator=torch.Generator().manual_seed(6))
    assert abs(float(other["loss"]) - float(cached["loss"])) > 1e-4


def test_pixel_target_is_rebuilt_exactly_from_the_uint8_crop(make_cfg):
    cfg = make_cfg()
    model = _model(cfg)
    batch = next(iter(_stream(cfg, model)))
    _, target = _pixels_of(cfg, model, batch.keys, batch.views)
    assert torch.equal(batch.latent_input, target)


def test_crop_helpers_match_the_transform():
    transform = CropAndNormalize(32, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25], (0.5, 1.0))
    im = draw_scene(3, 40)
    box = random_resized_crop_box(40, 40, (0.5, 1.0), np.random.default_rng(7))
    pv, tgt = transform.normalise(transform.crop_uint8(im, box))
    pv2, tgt2 = transform(im, np.random.default_rng(7))
    assert torch.equal(pv, pv2) and torch.equal(tgt, tgt2)


def test_views_are_seeded_per_position_and_cover_all_views(make_cfg):
    cfg = make_cfg()
    model = _model(cfg)
    a, b = _stream(cfg, model), _stream(cfg, model)
    first = [next(iter(a)) for _ in range(1)][0]
    again = next(iter(b))
    assert first.keys == again.keys and first.views == again.views
    views = [v for batch, _ in zip(a, range(12), strict=False) for v in batch.views]
    assert set(views) == {0, 1, 2}


def test_position_resumes_exactly(make_cfg):
    cfg = make_cfg()
    model = _model(cfg)
    stream = _stream(cfg, model)
    it = iter(stream)
    for _ in range(4):  # past the end of epoch 0 (12 images, batch 4)
        next(it)
    state = stream.state_dict()
    expected = next(it)
    resumed = _stream(cfg, model)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    got = next(iter(resumed))
    assert state["epoch"] == 1 and got.keys == expected.keys and got.views == expected.views
    assert torch.equal(got.global_token, expected.global_token)


def test_centre_crop_only_with_zero_views(make_cfg):
    cfg = make_cfg("cache.views=0")
    model = _model(cfg)
    batch = next(iter(_stream(cfg, model)))
    assert batch.views == [0, 0, 0, 0]
    # the scenes are square: the centre crop is the whole image resized
    key = batch.keys[0]
    im = Image.open(key).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC, box=(0, 0, 40, 40))
    expected = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    assert torch.equal(batch.latent_input[0], expected)


def _status(cfg, model) -> str | None:
    dtypes = {"encoder": "torch.float32", "inputs": "torch.float32", "latent": "torch.float32"}
    return cache_status(cache_dir(cfg), digests(fingerprint_parts(cfg, model.encoder_image_spec(), dtypes)))


def test_cache_is_reused_then_rebuilt_when_encoder_crops_or_data_change(
    make_cfg, tiny_clip_dir, cache_world, tmp_path
):
    cfg = make_cfg()
    model = _model(cfg)
    first = open_cache(cfg, model)
    manifest = cache_dir(cfg) / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    open_cache(cfg, model)
    assert manifest.stat().st_mtime_ns == stamp  # up to date: not rebuilt
    key = next(iter(first._where))
    token = first.read(key, 0)["global_token"]

    # another encoder: same files, other weights
    enc2 = tmp_path / "clip2"
    shutil.copytree(tiny_clip_dir, enc2)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(enc2 / "model.safetensors"))
    save_file(
        {k: v * 1.5 if v.is_floating_point() and v.ndim == 2 else v for k, v in weights.items()},
        str(enc2 / "model.safetensors"),
        metadata={"format": "pt"},
    )
    cfg2 = make_cfg(f"encoder.path={enc2}")
    model2 = _model(cfg2)
    assert _status(cfg2, model2) == "encoder changed since it was built"
    rebuilt = open_cache(cfg2, model2)
    assert not torch.equal(rebuilt.read(key, 0)["global_token"], token)

    cfg3 = make_cfg(f"encoder.path={enc2}", "data.crop_scale=[0.5,0.6]")
    assert _status(cfg3, model2) == "crops changed since it was built"
    cfg4 = make_cfg(f"encoder.path={enc2}", "cache.views=2")
    assert _status(cfg4, model2) == "crops changed since it was built"

    world2 = tmp_path / "world2"
    shutil.copytree(cache_world, world2)  # the same files, their times kept: the cache still holds them
    cfg5 = make_cfg(f"encoder.path={enc2}", f"data.path={world2}")
    assert _status(cfg5, model2) is None
    draw_scene(99).save(world2 / "images" / "extra.png")
    assert _status(cfg5, model2) == "data changed since it was built"  # one more image
    assert "extra.png" in open_cache(cfg5, model2)  # keyed relative to the data root (world2/images)
    os.utime(world2 / "images" / "00000.png", ns=(1, 1))
    assert _status(cfg5, model2) == "data changed since it was built"  # a file rewritten in place


def test_a_moved_world_and_encoder_keep_the_cache_and_read_the_same_values(make_cfg, tiny_clip_dir, tmp_path):
    """No absolute path enters the fingerprint or the keys: after moving the data and the encoder (with
    their files' times, as mv or cp -a do), stage 1 reads the same cache, by the files' new paths."""
    world, enc = tmp_path / "a" / "train", tmp_path / "a" / "clip"
    shutil.copytree(make_cfg().data.path, world)
    shutil.copytree(tiny_clip_dir, enc)
    cfg = make_cfg(f"data.path={world}", f"encoder.path={enc}")
    model = _model(cfg)
    before = next(iter(_stream(cfg, model)))
    manifest = cache_dir(cfg) / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    (tmp_path / "b").mkdir()
    os.rename(world, tmp_path / "b" / "train")
    os.rename(enc, tmp_path / "b" / "clip")
    moved = make_cfg(f"data.path={tmp_path / 'b' / 'train'}", f"encoder.path={tmp_path / 'b' / 'clip'}")
    assert _status(moved, _model(moved)) is None
    after = next(iter(_stream(moved, _model(moved))))
    assert manifest.stat().st_mtime_ns == stamp  # not rebuilt
    # the same samples, named by their new paths
    assert [os.path.relpath(k, tmp_path / "b") for k in after.keys] == [
        os.path.relpath(k, tmp_path / "a") for k in before.keys
    ]
    assert after.views == before.views
    torch.testing.assert_close(after.global_token, before.global_token, rtol=0, atol=0)


def test_a_build_killed_midway_leaves_no_cache_that_is_used(make_cfg, monkeypatch):
    cfg = make_cfg()
    model = _model(cfg)
    open_cache(cfg, model)
    old = json.loads((cache_dir(cfg) / MANIFEST).read_text())
    cfg2 = make_cfg("data.crop_scale=[0.5,0.7]")
    calls = []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return GenHancerModel.cache_features(model, *args, **kwargs)

    monkeypatch.setattr(model, "cache_features", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        open_cache(cfg2, model)
    assert json.loads((cache_dir(cfg) / MANIFEST).read_text()) == old  # the old cache, untouched...
    assert _status(cfg2, model) == "crops changed since it was built"  # ...and not used for the new config
    assert [p.name for p in cache_dir(cfg).parent.iterdir() if p.name.startswith(".cache-build")]
    monkeypatch.undo()
    open_cache(cfg2, model)
    assert _status(cfg2, model) is None
    assert not [p for p in cache_dir(cfg).parent.iterdir() if p.name.startswith(".cache-build")]


def test_a_foreign_directory_is_never_replaced(make_cfg, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    cfg = make_cfg(f"cache.dir={tmp_path / 'mine'}")
    with pytest.raises(ConfigError, match="not a feature cache"):
        open_cache(cfg, _model(cfg))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _keys_of_epoch(stream: CachedStream) -> list[str]:
    """The keys of epoch 0 (its length must be a multiple of the batch size)."""
    it = iter(stream)
    keys = [k for _ in range(len(stream.source) // stream.batch_size) for k in next(it).keys]
    assert stream.state_dict()["epoch"] == 0 and stream.index == len(stream.source)
    return keys


def _transform(cfg, model) -> CropAndNormalize:
    spec = model.encoder_image_spec()
    return CropAndNormalize(spec["image_size"], spec["mean"], spec["std"], tuple(cfg.data.crop_scale))


@pytest.mark.parametrize("source", ["folder", "webdataset"])
def test_two_ranks_build_parts_and_read_disjoint_samples(make_cfg, tmp_path, source):
    extra = []
    if source == "webdataset":
        make_shards(tmp_path / "shards", 3, 4)
        extra = ["data.source=webdataset", f"data.path={tmp_path / 'shards'}"]
    cfg = make_cfg(*extra, "train.batch_size=2")
    model = _model(cfg)
    parts = fingerprint_parts(
        cfg,
        model.encoder_image_spec(),
        {"encoder": "torch.float32", "inputs": "torch.float32", "latent": "torch.float32"},
    )
    # two ranks, one after the other (no-op barriers): rank 1 builds its part, rank 0 its own and assembles
    for rank in (1, 0):
        build_cache(
            cache_dir(cfg),
            cfg,
            model,
            parts,
            rank=rank,
            world_size=2,
            barrier=lambda: None,
            device="cpu",
            input_dtype=torch.float32,
        )
    two = FeatureCache(cache_dir(cfg), data_root=data_root(source_files(cfg.data)))
    assert len(two.manifest["shards"]) == 2 and len(two) == 12
    one_cfg = make_cfg(*extra, f"cache.dir={tmp_path / 'one'}")
    one = open_cache(one_cfg, model)
    for key in one._where:  # a rank's part holds exactly what a single process computes
        torch.testing.assert_close(
            two.read(key, 2)["global_token"], one.read(key, 2)["global_token"], rtol=0, atol=1e-6
        )
    seen = [
        _keys_of_epoch(
            CachedStream(build_source(cfg.data, r, 2), two, _transform(cfg, model), 2, seed=0, rank=r)
        )
        for r in (0, 1)
    ]
    assert not set(seen[0]) & set(seen[1])
    refs = {r.key: r for r in build_source(cfg.data, 0, 1).refs}
    assert sorted(one.key_of(refs[k]) for k in seen[0] + seen[1]) == sorted(one._where)
    if source == "webdataset":
        assert all(":" in k and k.endswith(".jpg") for k in seen[0])


def test_stage2_ignores_the_cache_and_the_model_refuses_precomputed_features(make_cfg, tmp_path):
    cfg = make_cfg()
    model = _model(cfg)
    batch = next(iter(_stream(cfg, model)))
    model.save_pretrained(tmp_path / "s1" / "final")
    cfg2 = make_cfg("stage=stage2", f"init_from={tmp_path / 's1' / 'final'}", f"cache.dir={tmp_path / 'c2'}")
    model2 = GenHancerModel.build(cfg2)
    stream = training_stream(cfg2, model2)
    assert type(stream) is ImageStream and not Path(tmp_path / "c2").exists()
    with pytest.raises(ConfigError, match="need a frozen encoder"):
        model2(**batch.model_inputs("cpu", torch.float32))
    assert torch.isfinite(model2(**next(iter(stream)).model_inputs("cpu", torch.float32))["loss"])


def test_unreadable_images_are_skipped_and_counted(make_cfg, tmp_path, cache_world):
    world = tmp_path / "bad_world"
    shutil.copytree(cache_world, world)
    bad = str(world / "images" / "00003.png")
    Path(bad).write_bytes(b"not a png")
    cfg = make_cfg(f"data.path={world}", "train.batch_size=1")
    model = _model(cfg)
    stream = _stream(cfg, model)
    assert list(stream.cache.skipped) == ["00003.png"] and "00003.png" not in stream.cache  # relative key
    assert stream.cache.skipped["00003.png"].reason == "not-an-image"
    loaded = [stream._load(0, i) for i in range(12)]
    assert sum(isinstance(x, BadImage) for x in loaded) == 1
    assert len({x[0] for x in loaded if not isinstance(x, BadImage)}) == 11
    it = iter(stream)
    keys = [next(it).keys[0] for _ in range(23)]  # two whole epochs and one more: the bad file met twice
    assert bad not in keys and stream.epoch == 2
    assert stream.skipped == 1  # counted once per file, not per epoch
    assert [(e["key"], e["reason"]) for e in stream.skipped_files.as_list()] == [(bad, "not-an-image")]
    strict = make_cfg(f"data.path={world}", "data.strict=true", "train.batch_size=1")
    strict_batches = iter(_stream(strict, model))
    with pytest.raises(DataError, match="00003.png"):
        for _ in range(12):
            next(strict_batches)


def test_vae_cache_split_keeps_diffusers_posterior_sampling(tiny_vae):
    from diffusers import AutoencoderKL

    from genhancer.config import LatentConfig
    from genhancer.latents import build_latent_space

    space = build_latent_space(LatentConfig(space="vae", vae_path=str(tiny_vae), patch_size=2))
    vae = AutoencoderKL.from_pretrained(tiny_vae)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    moments = space.encode_for_cache(x)
    assert moments.shape == (2, 8, 8, 8)
    direct = vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        space.from_cache(moments, torch.Generator().manual_seed(3)),
        space.scale * (direct - space.shift),
        rtol=0,
        atol=1e-6,
    )
    a = space.from_cache(moments, torch.Generator().manual_seed(4))
    assert not torch.allclose(a, space.from_cache(moments, torch.Generator().manual_seed(3)))
    mode = build_latent_space(
        LatentConfig(space="vae", vae_path=str(tiny_vae), patch_size=2, sample_posterior=False)
    )
    torch.testing.assert_close(
        mode.from_cache(mode.encode_for_cache(x)),
        space.scale * (vae.encode(x).latent_dist.mode() - space.shift),
        rtol=0,
        atol=1e-6,
    )


def test_a_large_cache_is_read_from_disk_with_the_same_values(make_cfg):
    cfg = make_cfg()
    open_cache(cfg, _model(cfg))
    ram, disk = FeatureCache(cache_dir(cfg)), FeatureCache(cache_dir(cfg), max_ram_bytes=0)
    assert ram.in_memory and not disk.in_memory
    for key in list(ram._where)[:3]:
        a, b = ram.read(key, 1), disk.read(key, 1)
        assert a.keys() == b.keys() == {"global_token", "crop"}
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_key_and_crop_seed_follow_only_what_a_cache_depends_on():
    from genhancer.cache import config_key, crop_seed
    from genhancer.config import load_genhancer_config

    def cfg(*overrides: str):
        return load_genhancer_config("configs/genhancer/toy.yaml", list(overrides))

    base = config_key(cfg())
    assert config_key(cfg("flow.logit_scale=2.0", "schedule.stage1.steps=7", "denoiser.preset=toy")) == base
    assert config_key(cfg("conditioning.local_token_fraction=0.1")) != base  # patch tokens are cached too
    assert config_key(cfg("cache.views=1")) != base and config_key(cfg("latent.space=pixel")) != base
    assert config_key(cfg("train.seed=3")) != base  # the crop views follow train.seed ...
    assert config_key(cfg("train.seed=3", "cache.seed=0")) == config_key(
        cfg("cache.seed=0")
    )  # ... unless set
    assert crop_seed(cfg("train.seed=3")) == 3 and crop_seed(cfg("train.seed=3", "cache.seed=0")) == 0

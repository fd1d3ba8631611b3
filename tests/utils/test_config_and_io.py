from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from genhancer.utils.config import ConfigError, config_hash, dump_yaml, load_config, to_dict
from genhancer.utils.errors import DataError
from genhancer.utils.fsio import atomic_directory, read_jsonl
from genhancer.utils.registry import Registry


@dataclass
class Inner:
    lr: float = 1e-4
    steps: int = 10
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError("steps must be positive")


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    path: str | None = None


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\ninner:\n  lr: 3e-4\n")
    cfg = load_config(Outer, p, ["inner.steps=5", "tags=[a, b]", "inner.mode=b"])
    assert cfg.name == "y" and cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.steps == 5
    assert cfg.tags == ["a", "b"] and cfg.inner.mode == "b" and cfg.path is None
    out = dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, out) == cfg
    assert config_hash(cfg) == config_hash(to_dict(cfg))


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"inner\.lrr.*valid keys here: lr, mode, steps"):
        load_config(Outer, None, ["inner.lrr=1"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="inner.steps' expects an integer"):
        load_config(Outer, None, ["inner.steps=abc"])
    with pytest.raises(ConfigError, match="inner.mode' must be one of 'a', 'b'"):
        load_config(Outer, None, ["inner.mode=c"])
    with pytest.raises(ConfigError, match="section 'inner'.*steps must be positive"):
        load_config(Outer, None, ["inner.steps=0"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Outer, None, ["inner.steps"])


def test_registry_unknown_id():
    reg: Registry[int] = Registry("encoder")
    reg.register("clip", 1)
    assert reg["clip"] == 1
    with pytest.raises(ConfigError, match="unknown encoder 'sig'; known encoders: clip"):
        reg["sig"]


def test_atomic_directory_keeps_old_on_error(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as d:
            (d / "a.txt").write_text("2")
            raise RuntimeError("crash")
    assert (final / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_read_jsonl_names_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"x.jsonl, line 2: not valid JSON"):
        read_jsonl(p)


def test_tiny_clip_fixture_loads(tiny_clip_dir):
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir)
    proc = AutoProcessor.from_pretrained(tiny_clip_dir)
    batch = proc(text=["a red triangle"], return_tensors="pt", padding="max_length")
    assert batch["input_ids"].shape[1] == 77
    assert model.config.text_config.eos_token_id == proc.tokenizer.eos_token_id


@dataclass
class WithFactory:
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5, steps=7))
    table: dict[str, Inner] = field(default_factory=lambda: {"a": Inner(steps=3), "b": Inner(steps=4)})


def test_partial_section_keeps_field_defaults():
    cfg = load_config(WithFactory, None, ["inner.mode=b", "table.b.lr=2.0"])
    assert cfg.inner == Inner(lr=0.5, steps=7, mode="b")  # not the class default lr=1e-4, steps=10
    assert cfg.table["a"] == Inner(steps=3) and cfg.table["b"] == Inner(lr=2.0, steps=4)

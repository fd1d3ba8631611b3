"""``base:`` inheritance in the YAML loader: relative paths, chains, deep merge, cycles, missing files."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from genhancer.utils.config import ConfigError, load_config, load_yaml_with_bases


@dataclass
class Opt:
    lr: float = 1e-4
    steps: int = 10


@dataclass
class Cfg:
    name: str = "x"
    opt: Opt = field(default_factory=Opt)
    tags: list[str] = field(default_factory=lambda: ["default"])
    extra: dict[str, int] = field(default_factory=dict)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_chain_relative_to_each_file_and_deep_merged(tmp_path):
    # root.yaml <- recipes/mid.yaml <- runs/child.yaml: each base path is relative to the file naming it
    _write(
        tmp_path / "root.yaml", "name: root\nopt: {lr: 0.5, steps: 3}\ntags: [a, b]\nextra: {p: 1, q: 2}\n"
    )
    _write(tmp_path / "recipes" / "mid.yaml", "base: ../root.yaml\nopt: {steps: 7}\nextra: {q: 20, r: 30}\n")
    child = _write(tmp_path / "runs" / "child.yaml", "base: ../recipes/mid.yaml\nname: child\ntags: [c]\n")
    cfg = load_config(Cfg, child)
    assert cfg.name == "child"
    assert cfg.opt == Opt(lr=0.5, steps=7)  # dicts merge key by key through the whole chain
    assert cfg.tags == ["c"]  # lists replace, they are not appended
    assert cfg.extra == {"p": 1, "q": 20, "r": 30}
    assert "base" not in load_yaml_with_bases(child)


def test_overrides_apply_after_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "opt: {lr: 0.5}\n")
    child = _write(tmp_path / "b.yaml", "base: a.yaml\nopt: {steps: 4}\n")
    cfg = load_config(Cfg, child, ["opt.lr=0.25"])
    assert cfg.opt == Opt(lr=0.25, steps=4)


def test_scalar_replaces_a_mapping_and_back(tmp_path):
    _write(tmp_path / "a.yaml", "extra: {p: 1}\n")
    child = _write(tmp_path / "b.yaml", "base: a.yaml\nextra: {}\n")  # an empty mapping merges: p stays
    assert load_config(Cfg, child).extra == {"p": 1}
    _write(tmp_path / "c.yaml", "name: {not: a string}\n")
    child = _write(tmp_path / "d.yaml", "base: c.yaml\nname: plain\n")
    assert load_config(Cfg, child).name == "plain"


def test_cycle_names_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\nname: a\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"cycle: \S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_self_base_is_a_cycle(tmp_path):
    _write(tmp_path / "a.yaml", "base: ./a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: \S*a\.yaml -> \S*a\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_missing_base_names_the_file_that_asked(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: sub/nope.yaml\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: base file not found: \S*sub/nope\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_base_must_be_a_path(tmp_path):
    _write(tmp_path / "a.yaml", "base: [x.yaml, y.yaml]\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: 'base' must be the path of another YAML file"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_unknown_key_in_a_base_lists_valid_keys_and_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "opt: {lrr: 1}\n")
    child = _write(tmp_path / "b.yaml", "base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, child)
    msg = str(e.value)
    assert "unknown config key 'opt.lrr'" in msg and "valid keys here: lr, steps" in msg
    assert msg.startswith(f"{child} (with its bases {tmp_path / 'a.yaml'})")


def test_base_is_only_a_top_level_key(tmp_path):
    child = _write(tmp_path / "a.yaml", "opt: {base: x.yaml}\n")
    with pytest.raises(ConfigError, match="unknown config key 'opt.base'"):
        load_config(Cfg, child)

"""``add_config_arguments`` + ``config_from_args``: --config, overrides and --print-config for any schema."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import yaml

from genhancer.utils.cli import add_config_arguments, config_from_args, entry_point
from genhancer.utils.config import load_config


@dataclass
class Opt:
    lr: float = 1e-4
    steps: int = 10


@dataclass
class Cfg:
    name: str = "x"
    opt: Opt = field(default_factory=Opt)


def _load(path, overrides):
    return load_config(Cfg, path, overrides)


@entry_point
def _main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(_load, parser.parse_args(argv))
    print(f"ran {cfg.name} for {cfg.opt.steps} steps")
    return 7


def test_print_config_prints_resolved_yaml_and_returns_0(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("opt: {lr: 0.5}\n")
    (tmp_path / "c.yaml").write_text("base: base.yaml\nname: child\n")
    assert _main(["--config", str(tmp_path / "c.yaml"), "opt.steps=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "ran" not in out  # main stopped after printing
    assert yaml.safe_load(out) == {"name": "child", "opt": {"lr": 0.5, "steps": 3}}
    assert out.index("name:") < out.index("opt:")  # schema order, not sorted


def test_without_print_config_main_runs(capsys):
    assert _main(["name=y", "opt.steps=2"]) == 7
    assert capsys.readouterr().out == "ran y for 2 steps\n"


def test_config_errors_still_exit_2(capsys):
    assert _main(["opt.nope=1", "--print-config"]) == 2
    assert "unknown config key 'opt.nope'" in capsys.readouterr().err


def test_default_config_is_used(tmp_path, capsys):
    (tmp_path / "d.yaml").write_text("name: from-default\n")

    @entry_point
    def main(argv=None) -> int:
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, default=str(tmp_path / "d.yaml"))
        config_from_args(_load, parser.parse_args(argv))
        return 5

    assert main(["--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "from-default"

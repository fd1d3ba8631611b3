"""Entry-point helpers: every module runs as ``python -m pkg.module`` through ``main(argv=None) -> int``.

A module that reads a config wires the common arguments in two lines::

    add_config_arguments(parser, default="configs/x/default.yaml")    # --config, key=value..., --print-config
    cfg = config_from_args(load_x_config, parser.parse_args(argv))    # --print-config: prints, main returns 0
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genhancer.utils.config import to_dict
from genhancer.utils.errors import UserError

Main = Callable[[Sequence[str] | None], int]
C = TypeVar("C")
ConfigLoader = Callable[[str | Path | None, Sequence[str]], C]


class ConfigPrinted(Exception):  # a control-flow signal, like StopIteration, not an error
    """Raised by ``config_from_args`` / ``print_config_and_exit`` after ``--print-config`` printed the config;
    ``entry_point`` turns it into exit code 0 (as argparse's ``--help`` does with SystemExit)."""


def entry_point(fn: Main) -> Main:
    """Wrap ``main``: a ``UserError`` becomes one ``error: ...`` line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except ConfigPrinted:
            return 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper


def add_print_config_argument(parser: argparse.ArgumentParser, what: str = "the resolved config") -> None:
    """``--print-config``: print ``what`` as YAML and exit 0 without doing anything else."""
    parser.add_argument("--print-config", action="store_true", help=f"print {what} as YAML and exit")


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config YAML``, positional ``key.sub=value`` overrides and ``--print-config``."""
    hint = f" (default: {default})" if default else ""
    parser.add_argument("--config", default=default, help=f"YAML config file{hint}")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. stage=stage2")
    add_print_config_argument(parser)


def config_from_args(loader: ConfigLoader[C], args: argparse.Namespace) -> C:
    """``loader(args.config, args.overrides)``; with ``--print-config`` print it and end ``main`` with 0."""
    cfg = loader(args.config, list(args.overrides))
    if args.print_config:
        print_config_and_exit(cfg)
    return cfg


def config_yaml(cfg: Any) -> str:
    """The resolved config (a dataclass or a plain dict) as YAML, in schema order."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return yaml.safe_dump(data, sort_keys=False)


def print_config_and_exit(cfg: Any) -> None:
    """Print the config as YAML to stdout, then raise ``ConfigPrinted`` (``entry_point`` returns 0)."""
    sys.stdout.write(config_yaml(cfg))
    sys.stdout.flush()
    raise ConfigPrinted

"""One config schema for the whole suite: nested dataclasses are the schema, YAML files are instances.

- ``load_config(Schema, "configs/x.yaml", ["train.lr=1e-4", "stage=stage2"])`` reads the YAML, applies the
  ``key.sub=value`` overrides (values parsed as YAML scalars/lists), and builds the dataclass tree.
- A YAML may start from another: top-level ``base: other.yaml`` (relative to the file that says it, chains
  allowed). The file is deep-merged over its base: mappings key by key, lists and scalars replace.
- An unknown key is an error naming the key and listing the valid ones; a value of the wrong type names the
  key, the expected type and the value. ``__post_init__`` checks of a section are reported with its key.
- Some switches are command-line flags only (``FLAG_ONLY_KEYS``: ``trust_remote_code``, which lets a model
  directory run its own Python code): a YAML or override that sets one, in any section, is refused naming
  the key and the flag, so a shared config file can never turn them on.
- ``to_dict`` / ``dump_yaml`` give the resolved config for the run directory; ``config_hash`` identifies it.

Library code receives the dataclass, never argparse objects or environment variables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from genhancer.utils.errors import ConfigError

T = TypeVar("T")

# key (in any section) -> the command-line flag that is the only way to set it
FLAG_ONLY_KEYS = {"trust_remote_code": "--trust-remote-code"}

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_hash",
    "dump_yaml",
    "from_dict",
    "load_config",
    "load_yaml",
    "load_yaml_with_bases",
    "to_dict",
]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping document is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (give a path to an existing .yaml file)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


BASE_KEY = "base"


def load_yaml_with_bases(path: str | Path) -> dict[str, Any]:
    """``load_yaml`` plus ``base:`` inheritance: the file deep-merged over its base chain (base key removed).

    A cycle is a ConfigError naming the chain; a missing base names the file that asked for it.
    """
    return _merge_chain(_read_base_chain(Path(path)))


def _merge_chain(chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for _, layer in reversed(chain):  # furthest base first; each file overrides what it inherits
        data = _deep_merge(data, layer)
    return data


def _read_base_chain(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, its mapping without 'base'), ...], the file first and its furthest base last."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    while True:
        data = load_yaml(path)
        base = data.pop(BASE_KEY, None)
        chain.append((path, data))
        if base is None:
            return chain
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: '{BASE_KEY}' must be the path of another YAML file, got {base!r}")
        base_path = path.parent / base
        if base_path.resolve() in {p.resolve() for p, _ in chain}:
            names = " -> ".join(str(p) for p in [*(p for p, _ in chain), base_path])
            raise ConfigError(f"config files form a '{BASE_KEY}' cycle: {names}; remove one of these bases")
        if not base_path.is_file():
            raise ConfigError(
                f"{path}: {BASE_KEY} file not found: {base_path} (a '{BASE_KEY}' path is relative to the "
                "file that names it)"
            )
        path = base_path


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (nested dicts created as needed)."""
    out = json.loads(json.dumps(data, default=str)) if data else {}
    for item in overrides:
        parts, value = _parse_override(item)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' must be a mapping (section), got {value!r}")
        return from_dict(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"config key '{where}' expects {' or '.join(_type_name(a) for a in args)}, got {value!r}"
        )
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"config key '{where}' must be one of {choices}; got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}' expects a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"config key '{where}' expects {len(args)} items, got {len(value)}: {value!r}"
                )
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' expects a mapping, got {value!r}")
        args = get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _convert(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{where}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{where}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{where}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{where}' expects a string, got {value!r}")
    return value


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _field_default(f: dataclasses.Field) -> Any:
    """The field's default as plain data (dicts for sections), or None when it has none."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return _plain(f.default_factory())  # type: ignore[misc]
    if f.default is not dataclasses.MISSING:
        return _plain(f.default)
    return None


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def from_dict(schema: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``schema`` from ``data``; unknown keys and wrong types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = get_type_hints(schema)
    for k in data:
        if k in FLAG_ONLY_KEYS:
            key = f"{where}.{k}" if where else k
            raise ConfigError(
                f"config key '{key}' is not allowed in a config file or override: remove it, and pass the "
                f"{FLAG_ONLY_KEYS[k]} command-line flag where a tool offers it (only for code you trust)"
            )
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        valid = ", ".join(sorted(fields))
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' in {schema.__name__}; valid keys here: {valid}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        default = _field_default(fields[name])
        if isinstance(value, Mapping) and isinstance(default, dict):
            # a section given partly keeps the *field's* defaults (its default_factory), not the class's
            value = _deep_merge(default, value)
        kwargs[name] = _convert(hints[name], value, key)
    try:
        return schema(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        section = f"section '{where}'" if where else schema.__name__
        raise ConfigError(f"invalid {section}: {e}") from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """YAML file (optional) + ``key.sub=value`` overrides -> validated dataclass instance."""
    chain = _read_base_chain(Path(path)) if path is not None else []
    data = apply_overrides(_merge_chain(chain), overrides)
    try:
        return from_dict(schema, data)
    except ConfigError as e:
        if path is None:
            raise
        # the bad key may sit in any file of the chain: name them all
        via = f" (with its bases {' -> '.join(str(p) for p, _ in chain[1:])})" if len(chain) > 1 else ""
        raise ConfigError(f"{path}{via}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) of a config dataclass."""
    return _plain(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (a dataclass or a plain dict)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (dataclass or dict)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

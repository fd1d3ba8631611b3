"""Registries: plain id -> factory mappings whose unknown-id error lists the known ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from genhancer.utils.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """``ENCODERS = Registry("encoder")``; ``@ENCODERS.register("clip")``; ``ENCODERS["clip"]``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        def add(o: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = o
            return o

        return add(obj) if obj is not None else add

    def __getitem__(self, name: str) -> T:
        try:
            return super().__getitem__(name)
        except KeyError:
            known = ", ".join(sorted(self)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

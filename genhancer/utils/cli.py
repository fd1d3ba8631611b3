"""Entry-point helpers: every module runs as ``python -m pkg.module`` through ``main(argv=None) -> int``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

from genhancer.utils.errors import UserError

Main = Callable[[Sequence[str] | None], int]


def entry_point(fn: Main) -> Main:
    """Wrap ``main``: a ``UserError`` becomes one ``error: ...`` line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper

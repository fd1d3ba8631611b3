"""``python -m genhancer.utils.batch``: run several of the suite's entry points in one Python process.

Every ``python -m pkg.module ...`` pays its start-up again: importing torch, transformers, diffusers and peft
takes 2-5 s on two CPU cores, more than most toy evaluations themselves (an MMVP-VLM pass over 150 pairs
per pattern is 2 s). A script that runs a dozen of them writes them as lines instead::

    # MMVP-VLM before/after                    <- a progress line: "[enhance_clip 312s] MMVP-VLM before/after"
    eval.mmvp_vlm --model runs/toy/clip --benchmark runs/toyworld/mmvp_vlm --out runs/toy/eval/b.json
    toyworld imagine --stage-dir runs/toy/stage1 ...          <- a package runs its __main__, as python -m

and pipes them in (or names a file). Each line is what follows ``python -m``, quoted as a POSIX shell quotes
it (``printf '%q '`` in bash). The lines run in order, each through its module's ``main(argv) -> int``; the
first non-zero exit stops the batch, naming the line, and becomes the batch's exit code. Every line is
parsed and its module found before the first one runs, so a typo fails at once, not after minutes of work.
Only the suite's own packages run (``PACKAGES``). The entry points seed what they draw, so a result is the
same as from its own process (the tests compare them).

``--name``/``--since`` make the progress lines look like the calling script's own ``step`` lines (the name
and the seconds since the script started, an ``$EPOCHREALTIME`` value).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from genhancer.utils.cli import entry_point
from genhancer.utils.errors import UserError

PACKAGES = ("genhancer", "eval", "toyworld", "llava_integration", "benchmarks")
NOTE = "#"


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, in the input
    note: str | None = None  # a progress line
    module: str = ""
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return shlex.join([self.module, *self.args])


def parse(lines: Iterable[str]) -> list[Line]:
    """The batch's lines (blank ones dropped); a line that cannot be split or names no module of the suite
    is an error naming its number."""
    parsed = []
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith(NOTE):
            parsed.append(Line(number, note=text[len(NOTE) :].strip()))
            continue
        try:
            module, *args = split_words(text)
        except ValueError as e:
            raise UserError(
                f"batch line {number}: cannot split {text!r} ({e}); quote it as bash's printf '%q ' does"
            ) from None
        parsed.append(Line(number, module=module, args=tuple(args)))
    return parsed


_ANSI_C = {"a": 7, "b": 8, "e": 27, "E": 27, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_ANSI_C.update({c: ord(c) for c in "\\'\"?"})


def split_words(text: str) -> list[str]:
    """``shlex.split`` that also reads bash's ANSI-C quotes (``$'a\\tb'``), which ``printf '%q '`` writes
    for control characters and, in the C locale, for non-ASCII bytes."""
    out, i, quote = [], 0, None
    while i < len(text):
        c = text[i]
        if quote is None and c == "$" and text.startswith("'", i + 1):
            decoded, i = _ansi_c(text, i + 2)
            out.append("'" + decoded.replace("'", "'\\''") + "'")
            continue
        if c == "\\" and quote != "'":
            out.append(text[i : i + 2])
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote else c
        out.append(c)
        i += 1
    return shlex.split("".join(out))


def _ansi_c(text: str, i: int) -> tuple[str, int]:
    """The value of the ANSI-C quote whose body starts at ``text[i]``, and the index after its closing
    quote."""
    buf = bytearray()
    while i < len(text) and text[i] != "'":
        if text[i] != "\\":
            buf += text[i].encode()
            i += 1
            continue
        esc = text[i + 1 : i + 2]
        if esc in _ANSI_C:
            buf.append(_ANSI_C[esc])
            i += 2
        elif m := re.match(r"[0-7]{1,3}|x[0-9a-fA-F]{1,2}", text[i + 1 :]):
            digits = m.group()
            buf.append(int(digits[1:], 16) if digits[0] == "x" else int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        else:
            raise ValueError(f"unsupported escape \\{esc} in $'...' quoting")
    if i >= len(text):
        raise ValueError("no closing quotation in $'...'")
    return buf.decode("utf-8", errors="surrogateescape"), i + 1


def entry_of(line: Line) -> Callable[[Sequence[str]], int]:
    """The ``main`` that ``python -m <module>`` would run (a package's ``__main__``)."""
    if line.module.split(".")[0] not in PACKAGES:
        raise UserError(f"batch line {line.number}: {line.module!r} is not a module of {', '.join(PACKAGES)}")
    try:
        spec = importlib.util.find_spec(line.module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise UserError(
            f"batch line {line.number}: no module {line.module!r} (a typo? run from the repository root)"
        )
    name = f"{line.module}.__main__" if spec.submodule_search_locations is not None else line.module
    try:
        main = getattr(importlib.import_module(name), "main", None)
    except ModuleNotFoundError as e:
        if e.name != name:  # a missing dependency of the module: its own error says which
            raise
        main = None
    if not callable(main):
        raise UserError(f"batch line {line.number}: {name} has no main(argv) to run")
    return main


def _run_one(line: Line, main: Callable[[Sequence[str]], int]) -> int:
    saved = sys.argv
    sys.argv = [line.module, *line.args]  # what argparse names in its messages, as under python -m
    try:
        return int(main(list(line.args)) or 0)
    except SystemExit as e:  # argparse's --help / usage errors, sys.exit(...)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)  # sys.exit("message"), as the interpreter would print it
        return 1
    except Exception as e:
        e.add_note(f"in batch line {line.number}: {line}")
        raise
    finally:
        sys.argv = saved


def run(lines: Sequence[Line], say: Callable[[str], None] = print) -> int:
    """Run the lines in order; 0, or the exit code of the first that failed (after naming it)."""
    mains = {line.number: entry_of(line) for line in lines if line.note is None}
    start = time.perf_counter()
    for line in lines:
        if line.note is not None:
            say(line.note)
            continue
        t0 = time.perf_counter()
        rc = _run_one(line, mains[line.number])
        if rc != 0:
            print(f"error: batch line {line.number} exited with {rc}: {line}", file=sys.stderr)
            return rc
        print(f"[batch] {time.perf_counter() - t0:.1f} s  {str(line)[:110]}", flush=True)
    print(f"[batch] {len(mains)} commands in {time.perf_counter() - start:.1f} s, one process", flush=True)
    return 0


def _step_printer(name: str, since: float | None) -> Callable[[str], None]:
    def say(message: str) -> None:
        elapsed = f" {int(time.time() - since)}s" if since is not None else ""
        print(f"[{name}{elapsed}] {message}", flush=True)

    return say


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m genhancer.utils.batch", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("file", nargs="?", help="the lines to run (default: standard input)")
    parser.add_argument("--name", default="batch", help="name in progress lines (the calling script's)")
    parser.add_argument("--since", type=float, help="start time for progress lines (seconds since the epoch)")
    args = parser.parse_args(argv)
    if args.file and not Path(args.file).is_file():
        raise UserError(f"no batch file {args.file}")
    text = Path(args.file).read_text() if args.file else sys.stdin.read()
    return run(parse(text.splitlines()), say=_step_printer(args.name, args.since))


if __name__ == "__main__":
    raise SystemExit(main())

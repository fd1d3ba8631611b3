"""The package dependency rule of docs/architecture.md, checked on the source with ``ast``.

genhancer, llava_integration and eval never import toyworld or each other; the only code they share is
``genhancer.utils`` (plumbing, which itself imports no package of the suite but its own). toyworld may
import anything. Every import counts: module level, inside functions, under ``TYPE_CHECKING``, relative
ones, and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genhancer", "llava_integration", "eval", "toyworld")
PLUMBING = "genhancer.utils"
# owner -> top-level packages of the suite it must not import (genhancer.utils is always allowed)
FORBIDDEN = {
    "genhancer": {"llava_integration", "eval", "toyworld"},
    "llava_integration": {"genhancer", "eval", "toyworld"},
    "eval": {"genhancer", "llava_integration", "toyworld"},
    PLUMBING: {"genhancer", "llava_integration", "eval", "toyworld"},
    "toyworld": set(),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def owner_of(module: str) -> str:
    return PLUMBING if module == PLUMBING or module.startswith(PLUMBING + ".") else module.split(".")[0]


def is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _relative_base(module: str, is_package: bool, level: int) -> str:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def imported_names(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, wherever it sits."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = _relative_base(module, is_package, node.level)
                base = ".".join(x for x in (prefix, base) if x)
            for a in node.names:  # `from pkg import sub` imports the submodule pkg.sub when there is one
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if a.name != "*" and is_module(sub, root) else base))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            owner = owner_of(module_name(path, root))
            for line, name in imported_names(path, root):
                top = name.split(".")[0]
                plumbing = name == "genhancer" or owner_of(name) == PLUMBING  # bare `genhancer`: __version__
                if top in FORBIDDEN[owner] and not plumbing:
                    who = f"{PLUMBING} (plumbing)" if owner == PLUMBING else owner
                    out.append(f"{path.relative_to(root)}:{line}: {who} imports {name}")
    return out


def test_every_package_is_scanned():
    for pkg in PACKAGES:
        assert len(list((ROOT / pkg).rglob("*.py"))) >= 2, f"{pkg}/ has (almost) no modules: wrong root?"


def test_packages_keep_the_dependency_rule():
    found = violations(ROOT)
    assert not found, "package dependency rule broken (see docs/architecture.md):\n" + "\n".join(found)


def test_genhancer_init_is_plumbing():
    """Importing genhancer.utils runs genhancer/__init__.py: it must not pull in model code."""
    names = [n for _, n in imported_names(ROOT / "genhancer" / "__init__.py", ROOT)]
    assert all(n.split(".")[0] not in PACKAGES or owner_of(n) == PLUMBING for n in names), names


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        ("eval/a.py", "def f():\n    import toyworld.scene\n", "eval/a.py:2: eval imports toyworld.scene"),
        ("eval/a.py", "from genhancer import encoders\n", "eval/a.py:1: eval imports genhancer.encoders"),
        (
            "genhancer/x/a.py",
            "import typing\nif typing.TYPE_CHECKING:\n    from llava_integration.build import b\n",
            "genhancer/x/a.py:3: genhancer imports llava_integration.build",
        ),
        (
            "llava_integration/a.py",
            "import importlib\nimportlib.import_module('genhancer.train')\n",
            "llava_integration/a.py:2: llava_integration imports genhancer.train",
        ),
        (
            "genhancer/utils/b.py",
            "from ..encoders import load\n",
            "genhancer/utils/b.py:1: genhancer.utils (plumbing) imports genhancer.encoders",
        ),
    ],
)
def test_checker_names_module_and_import(tmp_path, rel, text, expected):
    for pkg in PACKAGES:
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "genhancer/utils/__init__.py", "")
    _write(tmp_path, "genhancer/x/__init__.py", "")
    _write(tmp_path, "genhancer/encoders.py", "")
    _write(tmp_path, "eval/leaderboard.py", "")
    _write(tmp_path, "toyworld/scene.py", "import genhancer.encoders, eval.leaderboard\n")  # allowed
    _write(
        tmp_path,
        "eval/ok.py",
        "from genhancer.utils.errors import DataError\nfrom genhancer import __version__\n"
        "from . import leaderboard\n",
    )
    _write(tmp_path, rel, text)
    assert violations(tmp_path) == [expected]

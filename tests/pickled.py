"""Test helpers for safe loading: a model directory whose weights exist only as a pickle, and running the
conversion one-liner that the refusal message gives."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file


def pickle_only_copy(src: Path, dst: Path) -> Path:
    """``src`` copied to ``dst``, each ``*.safetensors`` replaced by a ``torch.save`` pickle (``.bin``)."""
    shutil.copytree(src, dst)
    for st in dst.glob("*.safetensors"):
        name = "pytorch_model.bin" if st.name == "model.safetensors" else st.with_suffix(".bin").name
        torch.save(load_file(str(st)), dst / name)
        st.unlink()
    for index in dst.glob("*.safetensors.index.json"):
        index.unlink()
    return dst


def run_conversion(message: str) -> None:
    """Run the ``python -c "..."`` one-liner quoted in a refusal message, in this interpreter."""
    m = re.search(r'python -c "([^"]+)"', message)
    assert m, f"no conversion one-liner in: {message}"
    exec(m.group(1), {})  # the suite's own message, on a directory the test made

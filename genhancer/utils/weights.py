"""Model weights are loaded from safetensors only: a pickle (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) can run
arbitrary code when it is unpickled, so a directory that holds only pickled weights is refused with the
one-line conversion to run once, in an environment that trusts the file.

Every ``from_pretrained`` of weights in the suite passes ``use_safetensors=True`` (transformers, diffusers)
and calls ``require_safetensors`` first, which turns the libraries' varied "file not found" errors for a
pickle-only directory into that one message. A hub id (not a local directory) is left to the library, which
refuses pickles under ``use_safetensors=True`` itself. No import of torch here (cheap checks).
"""

from __future__ import annotations

from pathlib import Path

from genhancer.utils.errors import ModelDirError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(
    path: str | Path,
    *,
    loader: str = "transformers.AutoModel",
    subfolder: str | None = None,
    what: str = "model",
) -> None:
    """Raise ``ModelDirError`` when the local directory ``path`` (``/subfolder``) has pickled weights and no
    ``*.safetensors``; ``loader`` (``module.Class``, or ``peft`` for a LoRA adapter) names what the
    conversion one-liner in the message loads it with."""
    d = Path(path).expanduser() / (subfolder or "")
    if not d.is_dir():
        return
    if any(d.glob("*.safetensors")) or any(d.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        return  # no weights at all: the loader's own message says what is missing
    raise ModelDirError(
        f"{what} directory {d} holds only pickled weights ({', '.join(pickles[:3])}"
        f"{', ...' if len(pickles) > 3 else ''}), which are never loaded: unpickling can run arbitrary code. "
        f"If you trust the file, convert it once to safetensors: {_conversion(d, loader, pickles[0])}"
    )


def _conversion(d: Path, loader: str, pickle: str) -> str:
    """The one-liner that rewrites ``d``'s weights as safetensors (``save_pretrained`` writes safetensors)."""
    if loader == "peft":  # an adapter needs its base model to load: convert the state dict itself
        return (
            f'python -c "import torch; from safetensors.torch import save_file; '
            f"save_file(torch.load('{d / pickle}', weights_only=True), '{d / 'adapter_model.safetensors'}')\""
        )
    module, _, cls = loader.rpartition(".")
    return (
        f'python -c "from {module} import {cls}; '
        f"{cls}.from_pretrained('{d}', use_safetensors=False).save_pretrained('{d}')\""
    )


__all__ = ["PICKLE_SUFFIXES", "require_safetensors"]

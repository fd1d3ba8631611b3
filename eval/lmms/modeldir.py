"""Checks that a directory is an HF LLaVA model directory the adapter can load (no torch import).

A LLaVA directory (written by ``llava_integration`` or downloaded, e.g. ``llava-hf/llava-1.5-7b-hf``) has
``config.json`` with ``model_type: llava``, weights (``*.safetensors``), a processor config and a tokenizer.
The chat template may live in ``chat_template.jinja``, ``chat_template.json``, ``processor_config.json`` or
``tokenizer_config.json``; the adapter reads whichever the processor loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genhancer.utils.errors import ModelDirError
from genhancer.utils.families import known_model_types
from genhancer.utils.fsio import read_json
from genhancer.utils.provenance import read_provenance
from genhancer.utils.weights import require_safetensors

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def check_llava_dir(path: str | Path) -> Path:
    """Return ``path`` resolved, or raise ``ModelDirError`` saying what is missing and how to fix it."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise ModelDirError(
            f"model directory not found: {d} (give the LLaVA directory written by llava_integration, "
            "e.g. runs/toy/llava-baseline/finetune/model)"
        )
    cfg = read_json(
        d / "config.json", ModelDirError, missing=f"{d} is not an HF model directory: it has no config.json"
    )
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type != "llava":
        hint = ""
        if model_type in known_model_types():
            hint = (
                " -- this is a vision encoder; evaluate it with `python -m eval.mmvp_vlm`, "
                "or build a LLaVA from it with llava_integration first"
            )
        elif model_type in ("llama", "mistral", "qwen2"):
            hint = (
                " -- this is a language model without a vision tower; "
                "build a LLaVA from it with llava_integration first"
            )
        raise ModelDirError(
            f"{d} is not a LLaVA directory: config.json has model_type {model_type!r}, expected 'llava'{hint}"
        )
    if not any((d / f).is_file() for f in PROCESSOR_FILES):
        raise ModelDirError(
            f"{d}: no processor config ({' or '.join(PROCESSOR_FILES)}); save the LlavaProcessor into the "
            "directory (processor.save_pretrained(dir))"
        )
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise ModelDirError(
            f"{d}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer into it"
        )
    require_safetensors(d, loader="transformers.LlavaForConditionalGeneration", what="LLaVA")
    if not (list(d.glob("*.safetensors")) or list(d.glob("*.safetensors.index.json"))):
        raise ModelDirError(f"{d}: no *.safetensors weights (pickle .bin checkpoints are not loaded)")
    return d.resolve()


def describe_model_dir(path: str | Path) -> dict[str, Any]:
    """Name, encoder and LLM of a model directory, read from its ``provenance.json`` when present.

    ``kind: llava`` provenance lists its parents as ``[encoder, llm]``; a missing manifest gives ``None``s.
    """
    d = Path(path)
    prov = read_provenance(d) or {}
    parents = prov.get("parents") or []
    encoder = parents[0].get("path") if len(parents) >= 1 and isinstance(parents[0], dict) else None
    llm = parents[1].get("path") if len(parents) >= 2 and isinstance(parents[1], dict) else None
    return {
        "path": str(d.resolve()) if d.exists() else str(d),
        "kind": prov.get("kind"),
        "encoder": encoder,
        "llm": llm,
        "config_hash": prov.get("config_hash"),
        "git": (prov.get("git") or {}).get("revision"),
    }

"""Load any Hugging Face CLIP-family encoder directory and embed images / texts with it, batched.

The family is chosen from ``config.json``'s ``model_type`` through the shared family table
(``genhancer.utils.families``; never from the directory name), so the toy CLIP,
``openai/clip-vit-large-patch14-336``, a SigLIP checkpoint and a GenHancer export all load through the same
``from_pretrained`` path. This module only implements the table's logit rules (``LOGITS``); texts are given
to the model as the family's text-input rule says (SigLIP: input_ids only, no attention mask).

Shapes: ``encode_images`` -> (N, D) and ``encode_texts`` -> (M, D), both L2-normalised;
``text_image_logits`` -> (M, N), exactly the model's own ``logits_per_text`` for those inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from genhancer.utils.errors import ConfigError, DataError, ModelDirError
from genhancer.utils.families import (
    SCALED_COSINE,
    SCALED_COSINE_PLUS_BIAS,
    FamilyFacts,
    family_for_model_type,
)
from genhancer.utils.fsio import read_json
from genhancer.utils.logging import progress
from genhancer.utils.registry import Registry
from genhancer.utils.weights import require_safetensors

# Files that carry each part of an encoder directory (any one option of a part is enough).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILE_SETS = (
    ("tokenizer.json",),
    ("vocab.json", "merges.txt"),
    ("spiece.model",),
    ("tokenizer.model",),
)
FIX_HINT = (
    "an encoder directory must carry its processor and tokenizer; copy them from the base model, "
    "e.g. `AutoProcessor.from_pretrained(BASE_MODEL).save_pretrained(MODEL_DIR)` (this writes "
    "preprocessor/processor_config.json and the tokenizer files)"
)


def _scaled_cosine(model: Any, text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
    """(M, D) x (N, D) normalised -> (M, N) = logit_scale.exp() * cosine, as ``CLIPModel.forward``."""
    logits = torch.matmul(text_emb, image_emb.t().to(text_emb.device))
    return logits * model.logit_scale.exp().to(text_emb.device)


def _scaled_cosine_plus_bias(model: Any, text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
    """(M, D) x (N, D) normalised -> (M, N) = logit_scale.exp() * cosine + logit_bias, as ``SiglipModel``.

    The learned bias is irrelevant to a softmax over a pair; it is kept so logits equal the model's own."""
    return _scaled_cosine(model, text_emb, image_emb) + model.logit_bias.to(text_emb.device)


LogitsFn = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
# Logit rules named by the family table (genhancer.utils.families): normalised text (M, D) and image (N, D)
# embeddings -> the model's (M, N) logits_per_text.
LOGITS: Registry[LogitsFn] = Registry("logit rule")
LOGITS.register(SCALED_COSINE, _scaled_cosine)
LOGITS.register(SCALED_COSINE_PLUS_BIAS, _scaled_cosine_plus_bias)


def family_of(model: Any) -> FamilyFacts:
    """The family table entry of a loaded full model, from its ``config.model_type``."""
    return _full_model_family(str(model.config.model_type))


def _full_model_family(model_type: str) -> FamilyFacts:
    """Scoring needs the text tower too: a bare vision tower's model_type is an error naming the full one."""
    facts = family_for_model_type(model_type)
    if model_type != facts.model_type:
        raise ConfigError(
            f"model_type {model_type!r} is a bare {facts.vision_model_class}; scoring needs the "
            f"full image+text {facts.full_model_class} (model_type {facts.model_type!r})"
        )
    return facts


def check_model_dir(model_dir: str | Path) -> FamilyFacts:
    """Check an encoder directory has config, weights, image processor and tokenizer; return its family.

    Raises ``ModelDirError`` naming the directory, every missing part, and how to fix it.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelDirError(f"model directory not found: {d}")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise ModelDirError(f"{d}: no config.json, so this is not a Hugging Face model directory")
    model_type = read_json(cfg_path).get("model_type")
    try:
        family = _full_model_family(str(model_type))
    except ConfigError as e:
        raise ModelDirError(
            f"{cfg_path}: model_type {model_type!r} is not a supported encoder ({e})"
        ) from None

    missing = []
    if not any((d / f).is_file() for f in WEIGHT_FILES):
        missing.append(f"weights (one of {', '.join(WEIGHT_FILES)})")
    if not _has_image_processor(d):
        missing.append(
            "image processor config (preprocessor_config.json, or processor_config.json with an "
            "'image_processor' entry)"
        )
    if not any(all((d / f).is_file() for f in fs) for fs in TOKENIZER_FILE_SETS):
        options = " or ".join(" + ".join(fs) for fs in TOKENIZER_FILE_SETS)
        missing.append(f"tokenizer files ({options})")
    if missing:
        raise ModelDirError(f"{d}: missing {'; missing '.join(missing)}. Fix: {FIX_HINT}")
    return family


def _has_image_processor(d: Path) -> bool:
    if (d / "preprocessor_config.json").is_file():
        return True
    proc = d / "processor_config.json"
    if not proc.is_file():
        return False
    cfg = read_json(proc)
    return isinstance(cfg, dict) and "image_processor" in cfg


def load_encoder(
    model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Load ``(model, processor)`` from an HF CLIP/SigLIP directory, model in eval mode on ``device``.

    ``trust_remote_code`` is never enabled: only architectures of the family table load.
    """
    import transformers

    family = check_model_dir(model_dir)
    try:
        processor = transformers.AutoProcessor.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelDirError(
            f"{model_dir}: could not load the processor/tokenizer ({e}). Fix: {FIX_HINT}"
        ) from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ModelDirError(
            f"{model_dir}: the processor has no image processor or tokenizer "
            f"(got {type(processor).__name__}). Fix: {FIX_HINT}"
        )
    model_cls = getattr(transformers, family.full_model_class)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    require_safetensors(model_dir, loader=f"transformers.{family.full_model_class}", what="encoder")
    try:  # safetensors only: a pickled .bin is never loaded (convert it with save_pretrained first)
        model = model_cls.from_pretrained(str(model_dir), use_safetensors=True, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"{model_dir}: could not load the {family.full_model_class} weights ({e})"
        ) from None
    return model.eval().to(device), processor


def text_max_length(model: Any, processor: Any) -> int:
    """Padding length of the protocol: the tokenizer's max length (77 CLIP, 64 SigLIP), capped by the model's
    position table; some SigLIP tokenizers leave ``model_max_length`` unset (~1e30): then the family's."""
    positions = int(model.config.text_config.max_position_embeddings)
    tok_max = int(processor.tokenizer.model_max_length)
    if tok_max > _UNSET_MAX_LENGTH:
        tok_max = family_of(model).tokenizer_max_length
    return min(tok_max, positions)


_UNSET_MAX_LENGTH = 1_000_000  # transformers' "no limit" sentinel is ~1e30


def tokenize(model: Any, processor: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Texts -> the family's text inputs padded to ``text_max_length``: input_ids (M, L) [+ attention_mask].

    [IMPORTANT] Only the inputs of the family's text-input rule are kept: SigLIP's tokenizer also returns
    an attention_mask, but SigLIP is used (and was trained) on max-length padding without one.
    """
    enc = processor.tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=text_max_length(model, processor),
        return_tensors="pt",
    )
    return {k: v for k, v in enc.items() if k in family_of(model).text_inputs}


def load_image(path: str | Path) -> Any:
    """Open an image as RGB; a missing or unreadable file is a ``DataError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{p}: cannot read image ({e})") from None


def _pooled(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


@torch.no_grad()
def encode_images(
    model: Any,
    processor: Any,
    image_paths: Sequence[str | Path],
    batch_size: int = 32,
    show_progress: bool = True,
) -> torch.Tensor:
    """Image files -> (N, D) L2-normalised image embeddings (float32, on the model's device)."""
    device, dtype = _device_dtype(model)
    out = []
    starts = range(0, len(image_paths), batch_size)
    for s in progress(starts, desc="images", leave=False, disable=not show_progress):
        images = [load_image(p) for p in image_paths[s : s + batch_size]]
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        emb = _pooled(model.get_image_features(pixel_values=pixels.to(device, dtype))).float()  # (b, D)
        out.append(emb / emb.norm(p=2, dim=-1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(
    model: Any, processor: Any, texts: Sequence[str], batch_size: int = 64, show_progress: bool = True
) -> torch.Tensor:
    """Texts -> (M, D) L2-normalised text embeddings (float32), padded as the protocol says."""
    device, _ = _device_dtype(model)
    out = []
    starts = range(0, len(texts), batch_size)
    for s in progress(starts, desc="texts", leave=False, disable=not show_progress):
        enc = {k: v.to(device) for k, v in tokenize(model, processor, texts[s : s + batch_size]).items()}
        emb = _pooled(model.get_text_features(**enc)).float()  # (b, D)
        out.append(emb / emb.norm(p=2, dim=-1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def text_image_logits(model: Any, text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
    """Normalised text (M, D) and image (N, D) embeddings -> (M, N) logits_per_text of the model's family."""
    return LOGITS[family_of(model).logits](model, text_emb.float(), image_emb.float())

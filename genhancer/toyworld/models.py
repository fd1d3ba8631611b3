"""Toy-world stand-ins for the real pretrained models, built from config (nothing is downloaded).

The toy CLIP is a plain ``transformers.CLIPModel`` directory with a ``CLIPProcessor`` (CLIP image
processor + a byte-level BPE ``CLIPTokenizer`` trained on toy text), so every consumer loads it through the
same ``from_pretrained`` path as ``openai/clip-vit-large-patch14-336``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

# OpenAI CLIP normalisation: the toy CLIP stands in for it, so it uses the same statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Same split as CLIPTokenizer's own pre-tokenizer, so training and use see identical words.
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 512, max_length: int = 77) -> CLIPTokenizer:
    """Train a byte-level BPE (``</w>`` word ends, like OpenAI CLIP's) on ``texts`` and wrap it."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    clip_tok = CLIPTokenizer(vocab=model["vocab"], merges=merges)
    clip_tok.model_max_length = max_length
    return clip_tok


@dataclass
class ToyClipShape:
    """Size of the toy CLIP (defaults: the toy world's 'OpenAI CLIP'; tests use smaller)."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64


def new_toy_clip(tokenizer: CLIPTokenizer, shape: ToyClipShape | None = None, seed: int = 0) -> CLIPModel:
    """A randomly initialised ``CLIPModel`` sized by ``shape``, with text ids matching ``tokenizer``."""
    import torch

    s = shape or ToyClipShape()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=s.text_width,
            intermediate_size=4 * s.text_width,
            num_hidden_layers=s.text_layers,
            num_attention_heads=s.text_heads,
            max_position_embeddings=tokenizer.model_max_length,
            # [IMPORTANT] CLIPTextModel pools at the first eos_token_id: it must be the tokenizer's EOS.
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            image_size=s.image_size,
            patch_size=s.patch_size,
            hidden_size=s.vision_width,
            intermediate_size=4 * s.vision_width,
            num_hidden_layers=s.vision_layers,
            num_attention_heads=s.vision_heads,
        ),
        projection_dim=s.projection_dim,
    )
    torch.manual_seed(seed)
    return CLIPModel(config)


def clip_processor(tokenizer: CLIPTokenizer, image_size: int) -> CLIPProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_clip_dir(model: CLIPModel, processor: CLIPProcessor, out_dir: str | Path) -> Path:
    """Write a complete HF CLIP directory (safetensors, config, processor, tokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out

"""Toy-world stand-ins for the real pretrained models, built from config (nothing is downloaded).

The toy CLIP is a plain ``transformers.CLIPModel`` directory with a ``CLIPProcessor`` (CLIP image
processor + a byte-level BPE ``CLIPTokenizer`` trained on toy text), so every consumer loads it through the
same ``from_pretrained`` path as ``openai/clip-vit-large-patch14-336``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from genhancer.utils.families import FAMILIES

# OpenAI CLIP normalisation: the toy CLIP stands in for it, so it uses the same statistics.
CLIP_MEAN = FAMILIES["clip"].image_mean
CLIP_STD = FAMILIES["clip"].image_std
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Same split as CLIPTokenizer's own pre-tokenizer, so training and use see identical words.
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 512, max_length: int = 77) -> CLIPTokenizer:
    """Train a byte-level BPE (``</w>`` word ends, like OpenAI CLIP's) on ``texts`` and wrap it.

    ``vocab_size`` counts as the ``tokenizers`` BPE trainer counts it: the 2 special tokens, the 256-byte
    alphabet, the end-of-word characters seen in ``texts`` and the merges. The end-of-word forms of all other
    bytes are then added on top (see :func:`_bpe_vocab`), so ``len(tokenizer)`` is larger.
    The result depends only on ``texts`` (same texts, same ids: seeded runs reproduce).
    """
    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: Counter[tuple[str, ...]] = Counter()
    for text, n in Counter(texts).items():
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[(*word[:-1], word[-1] + "</w>")] += n
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    seen_word_ends = {w[-1] for w in words}
    merges = _bpe_merges(words, vocab_size - 2 - len(alphabet) - len(seen_word_ends))
    clip_tok = CLIPTokenizer(vocab=_bpe_vocab(alphabet, merges), merges=merges)
    clip_tok.model_max_length = max_length
    return clip_tok


def _bpe_merges(words: Mapping[tuple[str, ...], int], n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE on word counts: merge the most frequent adjacent pair, ``n_merges`` times.

    [IMPORTANT] Ties go to the smallest pair (string order). The ``tokenizers`` trainer breaks ties and
    numbers its end-of-word alphabet in hash-map order, which changes from run to run, so a seeded toy CLIP
    would not reproduce; the toy corpora are a few hundred distinct words, so plain Python is fast enough.
    """
    current = dict(words)
    merges: list[tuple[str, str]] = []
    for _ in range(max(0, n_merges)):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in current.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined, updated = best[0] + best[1], {}
        for word, n in current.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            updated[tuple(out)] = updated.get(tuple(out), 0) + n
        current = updated
    return merges


def _bpe_vocab(alphabet: Sequence[str], merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Ids: special tokens, the byte alphabet, every byte's end-of-word form, then merge products in order.

    [IMPORTANT] Every byte gets its "c</w>" token (as in OpenAI CLIP's vocab): a word end missing from the
    vocab would become the unknown token, which for CLIPTokenizer is <|endoftext|> -- and CLIPTextModel pools
    at the first one, silently cutting the text (e.g. a "?" that no training text ended a word with).
    """
    chars = sorted(alphabet)
    tokens = [BOS, EOS, *chars, *(c + "</w>" for c in chars), *(a + b for a, b in merges)]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


@dataclass
class ToyClipShape:
    """Size of the toy CLIP (defaults: the toy world's 'OpenAI CLIP'; tests use smaller)."""

    image_size: int = 64
    # 16 image tokens: the 3-minute CPU budget buys ~1000 steps at batch 256 (patch 8 = 64 tokens costs ~3x
    # per step, and 500 such steps gave zero-shot 0.34 vs 0.89 for 1500 patch-16 steps on the toy world)
    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 3
    vision_heads: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    # How the vision tower's (learned) position embeddings start. "learned": transformers' default, N(0,
    # 0.02); after 2500 contrastive steps they are about 1/20 of a patch's embedding, so the patch tokens
    # barely say where they are. "sincos": a 2-D sine-cosine code as large as a patch's embedding (the
    # row-and-column structure a long-trained ViT's position embeddings take on), still trained; the tokens
    # then keep their place at the embedding layer. The toy LLaVA reads position with neither
    # (docs/llava.md, "Known limits").
    position_init: Literal["learned", "sincos"] = "learned"

    def __post_init__(self) -> None:
        if self.position_init == "sincos" and self.vision_width % 4:
            raise ValueError(
                f"model.position_init=sincos needs model.vision_width divisible by 4, got {self.vision_width}"
            )


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sine-cosine code, row-major: the first half of the dims codes the row, the
    second the column, each as sin / cos pairs at ``dim // 4`` frequencies (1 / 10000^(k / (dim // 4)))."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine code needs a width divisible by 4, got {dim}")
    q = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)  # (q,)
    idx = torch.arange(grid, dtype=torch.float64)
    ang = idx[:, None] * freq[None, :]  # (grid, q)
    one_axis = torch.cat([ang.sin(), ang.cos()], dim=1)  # (grid, 2q)
    rows = one_axis[:, None, :].expand(grid, grid, 2 * q)
    cols = one_axis[None, :, :].expand(grid, grid, 2 * q)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).float()


@torch.no_grad()
def init_positions_sincos(model: CLIPModel, pixels: torch.Tensor) -> float:
    """Set the vision tower's patch position embeddings to ``sincos_2d``, scaled to the mean norm of the
    patch embeddings of ``pixels`` (B, 3, S, S; normalised); the class token's slot gets zeros. Returns the
    scale."""
    emb = model.vision_model.embeddings
    grid = emb.image_size // emb.patch_size
    code = sincos_2d(grid, emb.embed_dim)  # (grid^2, D), per-row norm sqrt(D / 2)
    patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
    scale = float(patches.norm(dim=-1).mean() / code.norm(dim=-1).mean())
    weight = emb.position_embedding.weight
    weight.zero_()
    weight[1:] = (scale * code).to(weight)
    return scale


def new_toy_clip(tokenizer: CLIPTokenizer, shape: ToyClipShape | None = None, seed: int = 0) -> CLIPModel:
    """A randomly initialised ``CLIPModel`` sized by ``shape``, with text ids matching ``tokenizer``."""
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

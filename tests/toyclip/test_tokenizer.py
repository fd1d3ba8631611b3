"""The toy CLIP tokenizer: reproducible ids, and no word end falls back to <|endoftext|>."""

from __future__ import annotations

from toyworld.models import train_clip_tokenizer

TEXTS = [
    "a red arrow pointing left",
    "two blue circles on the right",
    "a green star",
    "an image of a square",
] * 5


def test_same_texts_same_ids():
    # the BPE trainer numbers its end-of-word alphabet in hash-map order; train_clip_tokenizer renumbers it
    vocabs = [train_clip_tokenizer(TEXTS, vocab_size=300).get_vocab() for _ in range(4)]
    assert all(v == vocabs[0] for v in vocabs[1:])


def test_unseen_word_ends_are_not_end_of_text():
    tok = train_clip_tokenizer(TEXTS, vocab_size=300)
    ids = tok("The arrow points up? 7 ü.")["input_ids"]
    # <|endoftext|> is the unknown token and CLIP pools at its first occurrence: only the last id may be it
    assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "the arrow points up ? 7 ü ."

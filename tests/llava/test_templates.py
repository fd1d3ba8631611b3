"""Every conversation format: golden rendered text and golden supervision mask (answers + end token only)."""

from __future__ import annotations

import pytest

from llava_integration.data import IGNORE_INDEX, encode_record, to_messages
from llava_integration.templates import TEMPLATES, render_with_spans, supervised_token_mask

RECORD = {
    "id": "r0",
    "image": "x.png",
    "conversations": [
        {"from": "human", "value": "What color is it?\n<image>"},  # <image> is moved to the front
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "And the shape?"},
        {"from": "gpt", "value": "star"},
    ],
}
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
GOLDEN = {
    "plain": ("<image>red\nstar\n", ["red\n", "star\n"]),
    "vicuna_v1": (
        VICUNA_SYSTEM + " USER: <image>\nWhat color is it? ASSISTANT: red</s>USER: And the shape? "
        "ASSISTANT: star</s>",
        [" red</s>", " star</s>"],
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\n" + LLAMA3_SYSTEM + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat color is it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nred<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd the shape?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nstar<|eot_id|>",
        ["red<|eot_id|>", "star<|eot_id|>"],
    ),
    "qwen2": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat color is "
        "it?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\nAnd the shape?<|im_end|>\n"
        "<|im_start|>assistant\nstar<|im_end|>\n",
        ["red<|im_end|>", "star<|im_end|>"],
    ),
}
GEN_PROMPT_END = {
    "plain": "<image>",
    "vicuna_v1": "What color is it? ASSISTANT:",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>assistant\n",
}


def test_every_registered_template_has_a_golden():
    assert set(TEMPLATES) == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_text_and_spans(name):
    text, spans = render_with_spans(TEMPLATES[name].chat_template, to_messages(RECORD))
    want_text, want_spans = GOLDEN[name]
    assert text == want_text
    assert [text[a:b] for a, b in spans] == want_spans


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_list_content_renders_like_llava_strings(name):
    """lmms-eval / apply_chat_template content ([{type: image}, {type: text}]) == the LLaVA string form."""
    t = TEMPLATES[name].chat_template
    as_list = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}
    ]
    as_str = [{"role": "user", "content": "<image>\nWhat color is it?"}]
    a, _ = render_with_spans(t, as_list, add_generation_prompt=True)
    b, _ = render_with_spans(t, as_str, add_generation_prompt=True)
    assert a == b and a.endswith(GEN_PROMPT_END[name])


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_mask(name, assembled_processor):
    """Only the answers and their end token are supervised; image positions are -100."""
    tok = assembled_processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    out = encode_record(
        to_messages(RECORD),
        chat_template=TEMPLATES[name].chat_template,
        tokenizer=tok,
        image_token_id=image_id,
        image_tokens=5,
        has_image=True,
        max_length=4096,
    )
    ids, labels = out["input_ids"], out["labels"]
    assert ids.count(image_id) == 5
    assert all(lab == IGNORE_INDEX for i, lab in zip(ids, labels) if i == image_id)
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels))
    # Supervised tokens form exactly one run per answer, and decode to the answer + its end token.
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    decoded = [tok.decode(r).strip(" ") for r in runs]
    if name == "plain":  # its two answers are adjacent in the text: one run
        assert decoded == ["".join(GOLDEN[name][1])]
    else:
        assert decoded == [s.strip(" ") for s in GOLDEN[name][1]]


def test_vicuna_mask_token_by_token(assembled_processor):
    """The golden mask of vicuna_v1, token by token (sentencepiece pieces of the toy tokenizer)."""
    tok = assembled_processor.tokenizer
    rec = {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red"}]}
    out = encode_record(
        to_messages(rec),
        chat_template=TEMPLATES["vicuna_v1"].chat_template,
        tokenizer=tok,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_tokens=5,
        has_image=False,
        max_length=4096,
    )
    pieces = tok.convert_ids_to_tokens(out["input_ids"])
    supervised = [p for p, lab in zip(pieces, out["labels"]) if lab != IGNORE_INDEX]
    assert pieces[0] == "<s>" and out["labels"][0] == IGNORE_INDEX  # BOS from the tokenizer, unsupervised
    assert "".join(supervised).replace("▁", " ").strip() == "red</s>"
    assert pieces[-len(supervised) - 1] == ":"  # "ASSISTANT:" ends the prompt; " red</s>" is all supervised


def test_mask_from_offsets():
    # tokens: [BOS (0,0)] [0,4) [4,9) [9,12) [12,16); answer span [9,16)
    assert supervised_token_mask([(0, 0), (0, 4), (4, 9), (8, 12), (12, 16)], [(9, 16)]) == [
        False,
        False,
        False,
        True,
        True,
    ]

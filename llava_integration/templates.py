"""Conversation formats: one Jinja chat template each, stored in the LLaVA processor.

The template is the single source of truth for how a conversation becomes text: training renders records
with it (``render_with_spans``) and evaluation renders prompts with ``processor.apply_chat_template``, so both
see identical prompts. Every template wraps each assistant answer *and its end token* in
``{% generation %}...{% endgeneration %}``; transformers' renderer reports the character spans of those
blocks, and :func:`supervised_token_mask` maps them onto tokens through the tokenizer's offsets. Nothing is
derived by counting tokens of separators.

Message content may be a string (LLaVA JSON: ``"<image>\\nWhat ...?"``) or a list of
``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items (lmms-eval, ``apply_chat_template``);
an image item renders as ``<image>\\n`` so both forms give the same text.

Templates never emit BOS: the tokenizer adds it (Llama/Vicuna do, Qwen does not), exactly as at evaluation.

[IMPORTANT] Each generation block starts exactly where the ``add_generation_prompt`` text ends (Vicuna's
" " after "ASSISTANT:" belongs to the answer): the first supervised token is then the one the model must
produce right after an evaluation prompt, even when the tokenizer splits the space off as its own piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genhancer.utils.registry import Registry

IMAGE_TOKEN = "<image>"

# Renders one message's content: a string as is; a list item by item (image -> "<image>\n").
_CONTENT_MACRO = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

# The system prompt: a leading "system" message replaces the template's default.
_SYSTEM = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = render_content(messages[0]['content']) -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = default_system -%}{%- set turns = messages -%}{%- endif -%}"
)


@dataclass(frozen=True)
class Template:
    """A conversation format.

    ``chat_template``: the Jinja text stored in the processor. ``stop``: the string that ends an assistant
    turn (a generation stop token). ``description``: one line for ``--help`` and docs.
    """

    name: str
    chat_template: str
    stop: str
    description: str


TEMPLATES: Registry[Template] = Registry("conversation template")


def _register(t: Template) -> None:
    TEMPLATES.register(t.name, t)


# LLaVA "plain" (pretraining): the image, then the caption and "\n"; the human text is dropped and no
# system prompt is used (LLaVA's preprocess_plain). Only the caption and its "\n" are supervised.
_register(
    Template(
        name="plain",
        stop="\n",
        description="LLaVA pretraining: <image> + caption + newline (human text dropped)",
        chat_template=(
            _CONTENT_MACRO + "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}"
            "{%- if message['content'] is string -%}"
            "{%- for _ in range(message['content'].count('<image>')) -%}{{ '<image>' }}{%- endfor -%}"
            "{%- else -%}{%- for item in message['content'] -%}"
            "{%- if item['type'] == 'image' -%}{{ '<image>' }}{%- endif -%}{%- endfor -%}{%- endif -%}"
            "{%- elif message['role'] == 'assistant' -%}"
            "{% generation %}{{ render_content(message['content']) + '\\n' }}{% endgeneration %}"
            "{%- endif -%}"
            "{%- endfor -%}"
        ),
    )
)

# Vicuna v1 (LLaVA-1.5): "SYSTEM USER: q ASSISTANT: a</s>USER: q2 ASSISTANT:" -- separators " " and "</s>".
_register(
    Template(
        name="vicuna_v1",
        stop="</s>",
        description="LLaVA-1.5 / Vicuna v1: SYSTEM USER: ... ASSISTANT: ...</s>",
        chat_template=(
            "{%- set default_system = 'A chat between a curious user and an artificial "
            "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the "
            "user\\'s questions.' -%}" + _CONTENT_MACRO + _SYSTEM + "{{ system + ' ' }}"
            "{%- for message in turns -%}"
            "{%- if message['role'] == 'user' -%}{{ 'USER: ' + render_content(message['content']) + ' ' }}"
            "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT:' }}"
            "{% generation %}{{ ' ' + render_content(message['content']) + '</s>' }}{% endgeneration %}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
        ),
    )
)

# Llama-3 instruct headers (LLaVA-NeXT llama3); the tokenizer adds <|begin_of_text|>.
_register(
    Template(
        name="llama3",
        stop="<|eot_id|>",
        description="Llama-3: <|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>",
        chat_template=(
            "{%- set default_system = 'You are a helpful language and vision assistant. You are able to "
            "understand the visual content that the user provides, and assist the user with a variety of "
            "tasks using natural language.' -%}"
            + _CONTENT_MACRO
            + _SYSTEM
            + "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' }}"
            "{%- for message in turns -%}"
            "{%- if message['role'] == 'user' -%}"
            "{{ '<|start_header_id|>user<|end_header_id|>\\n\\n' + render_content(message['content']) "
            "+ '<|eot_id|>' }}"
            "{%- elif message['role'] == 'assistant' -%}"
            "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
            "{% generation %}{{ render_content(message['content']) + '<|eot_id|>' }}{% endgeneration %}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}"
            "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
        ),
    )
)

# Qwen2 ChatML.
_register(
    Template(
        name="qwen2",
        stop="<|im_end|>",
        description="Qwen2 ChatML: <|im_start|>role\\n...<|im_end|>",
        chat_template=(
            "{%- set default_system = 'You are a helpful assistant.' -%}"
            + _CONTENT_MACRO
            + _SYSTEM
            + "{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
            "{%- for message in turns -%}"
            "{%- if message['role'] == 'user' -%}"
            "{{ '<|im_start|>user\\n' + render_content(message['content']) + '<|im_end|>\\n' }}"
            "{%- elif message['role'] == 'assistant' -%}{{ '<|im_start|>assistant\\n' }}"
            "{% generation %}{{ render_content(message['content']) + '<|im_end|>' }}{% endgeneration %}"
            "{{ '\\n' }}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
        ),
    )
)


def get_template(name: str) -> Template:
    """The registered template ``name`` (an unknown name lists the known ones)."""
    return TEMPLATES[name]


def render_with_spans(
    chat_template: str, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` with ``chat_template``; return the text and the assistant character spans.

    The spans are ``[start, end)`` offsets of every ``{% generation %}`` block (answer + end token).
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, indices = render_jinja_template(
        conversations=[list(messages)],
        chat_template=chat_template,
        return_assistant_tokens_mask=True,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0], [(int(a), int(b)) for a, b in indices[0]]


def supervised_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """``True`` for each token whose character range overlaps an assistant span.

    ``offsets`` come from a fast tokenizer (``return_offsets_mapping=True``); special tokens the tokenizer
    adds itself (BOS) have an empty range and are never supervised. A token that starts in the prompt and
    ends inside the answer (a sentencepiece "▁answer" piece covering the separator space) is supervised,
    because generation produces exactly that token after the prompt.
    """
    out = []
    j = 0
    spans = sorted(spans)
    for a, b in offsets:
        if b <= a:
            out.append(False)
            continue
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        out.append(j < len(spans) and spans[j][0] < b)
    return out

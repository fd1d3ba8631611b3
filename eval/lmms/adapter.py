"""A batched lmms-eval model for HF LLaVA directories (``--model genhancer_llava``).

lmms-eval's own ``llava_hf`` runs one sample per ``generate`` call, logs a failed generation and scores an
empty answer, and its ``loglikelihood`` returns the mean loss with a context length that ignores the image
tokens. This adapter:

- batches ``generate_until``: requests are grouped by generation settings, sorted by prompt length and run
  ``batch_size`` at a time, left-padded (``generate`` derives position ids from the attention mask);
- builds every prompt with the processor's own chat template (``processor.apply_chat_template``), the
  user turn being ``[image]*n + [text]`` exactly as lmms-eval's chat ``llava_hf`` builds it, so greedy answers
  equal ``llava_hf``'s on the same model and prompts (stop strings in ``until`` are honoured; llava_hf
  ignores them);
- scores ``loglikelihood`` requests (``multiple_choice`` tasks, option scoring) batched: the summed log
  probability of the continuation tokens after the prompt, and whether greedy decoding would produce them;
- chooses device / dtype / attention sensibly: cpu -> float32 + sdpa; cuda -> bfloat16 + flash_attention_2
  when importable, else sdpa; ``device_map`` is always an explicit device;
- never swallows a failure: an exception while preparing, generating or scoring raises
  ``GenerationError`` naming the task and the doc ids of the batch, which fails the run.

Model arguments (``--model_args pretrained=DIR,dtype=bfloat16,...``): ``pretrained`` (required), ``device``
(auto|cpu|cuda|cuda:N; lmms-eval's ``--device`` also sets it), ``dtype`` (auto|float32|bfloat16|float16),
``attn_implementation`` (auto|sdpa|eager|flash_attention_2), ``chat_template`` (path to a .jinja file that
overrides the directory's), ``max_new_tokens`` (default for tasks that set none; 1024 like llava_hf).
``--batch_size N`` sets the batch. Weights load from safetensors only, with transformers' own LLaVA classes:
``trust_remote_code=true`` is refused (model args can come from an lmms-eval config file, and a LLaVA
directory needs no code of its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from eval.lmms.modeldir import check_llava_dir
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.logging import get_logger, progress

LOG = get_logger("eval.lmms.adapter")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_NEW_TOKENS = 1024  # what llava_hf uses when a task gives none


class GenerationError(RuntimeError):
    """A batch failed while being prepared, generated or scored; the message names task and doc ids."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str


def resolve_runtime(device: str | None = None, dtype: str | None = None, attn: str | None = None) -> Runtime:
    """cpu -> float32 + sdpa; cuda -> bfloat16 + flash_attention_2 if importable, else sdpa."""
    dev_name = (device or "auto").strip()
    if dev_name == "auto":
        dev_name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(dev_name)
    except RuntimeError:
        raise ConfigError(
            f"model arg device={device!r} is not a torch device (use auto, cpu, cuda or cuda:N)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model arg device={device!r} asks for CUDA but no GPU is visible; use device=cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dtype_name = (dtype or "auto").strip()
    if dtype_name == "auto":
        torch_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif dtype_name in DTYPES:
        torch_dtype = DTYPES[dtype_name]
    else:
        raise ConfigError(f"model arg dtype={dtype!r}: use auto or one of {', '.join(DTYPES)}")
    attn_name = (attn or "auto").strip()
    if attn_name == "auto":
        attn_name = "sdpa"
        if dev.type == "cuda" and torch_dtype in (torch.bfloat16, torch.float16):
            from transformers.utils import is_flash_attn_2_available

            if is_flash_attn_2_available():
                attn_name = "flash_attention_2"
    return Runtime(dev, torch_dtype, attn_name)


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"model arg {name}={value!r} must be true or false")


def _as_batch_size(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--batch_size {value!r} is not supported by genhancer_llava "
            "(give an integer, e.g. 8; 'auto' is not implemented)"
        ) from None
    if n < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {n}")
    return n


def _sort_key(gen_kwargs: dict[str, Any]) -> str:
    return json.dumps(gen_kwargs, sort_keys=True, default=str)


def truncate_at_stops(text: str, until: Sequence[str] | None) -> str:
    """Cut ``text`` at the first occurrence of any stop string (lmms-eval's ``until``)."""
    cut = len(text)
    for stop in until or ():
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


@dataclass
class _Item:
    """One request made ready for the model."""

    index: int
    task: str
    doc_id: int
    prompt: str
    images: list[Any]
    n_prompt_tokens: int
    continuation: str = ""


class GenhancerLlava(lmms):
    """Batched HF LLaVA model for lmms-eval ("simple" interface: doc_to_visual + text)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = "auto",
        attn_implementation: str | None = "auto",
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        chat_template: str | None = None,
        max_new_tokens: int | None = None,
        trust_remote_code: bool | str = False,
        use_cache: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            known = (
                "pretrained, device, dtype, attn_implementation, batch_size, chat_template, max_new_tokens, "
                "trust_remote_code, use_cache"
            )
            raise ConfigError(f"unknown genhancer_llava model arg(s) {sorted(kwargs)}; known: {known}")
        if _as_bool(trust_remote_code, "trust_remote_code"):
            raise ConfigError(
                "model arg trust_remote_code=true is refused: genhancer_llava loads LLaVA directories with "
                "transformers' own classes and never runs code shipped with a model; drop the argument"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "genhancer_llava evaluates in one process (device_map is one explicit device); "
                "launch lmms-eval without accelerate/torchrun, or one run per GPU"
            )
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        path = check_llava_dir(pretrained)
        self.runtime = resolve_runtime(device, dtype, attn_implementation)
        self.batch_size_per_gpu = _as_batch_size(batch_size)
        self.default_max_new_tokens = int(max_new_tokens) if max_new_tokens else DEFAULT_MAX_NEW_TOKENS
        self.use_cache = _as_bool(use_cache, "use_cache")
        self.pretrained = str(path)
        self.processor = AutoProcessor.from_pretrained(path)
        self._tokenizer = self.processor.tokenizer
        self._tokenizer.padding_side = "left"  # batched generation continues every row at the same column
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if chat_template:
            tpl = Path(chat_template)
            if not tpl.is_file():
                raise ConfigError(
                    f"model arg chat_template={chat_template!r}: file not found (give a .jinja file)"
                )
            self.processor.chat_template = tpl.read_text()
        if not getattr(self.processor, "chat_template", None):
            raise ModelDirError(
                f"{path}: the processor has no chat template; save one into the directory "
                "(processor.chat_template = ...; processor.save_pretrained(dir) writes chat_template.jinja) "
                "or pass chat_template=PATH.jinja in --model_args"
            )
        self.image_token = getattr(self.processor, "image_token", None) or "<image>"
        self._model = LlavaForConditionalGeneration.from_pretrained(
            path,
            use_safetensors=True,  # never unpickle a .bin
            dtype=self.runtime.dtype,
            device_map={"": str(self.runtime.device)},
            attn_implementation=self.runtime.attn_implementation,
        ).eval()
        self.chat_template = (
            None  # lmms-eval's --apply_chat_template hook; prompts are templated here instead
        )
        LOG.info(
            "genhancer_llava: %s on %s (%s, %s), batch %d",
            path,
            self.runtime.device,
            str(self.runtime.dtype).replace("torch.", ""),
            self.runtime.attn_implementation,
            self.batch_size_per_gpu,
        )

    # ------------------------------------------------------------------ lmms interface properties
    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.eos_token_id

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, text: str, n_images: int, continuation: str | None = None) -> str:
        """The chat-templated prompt of one user turn (images first, as lmms-eval's chat llava_hf does)."""
        if self.image_token in text:
            content: list[dict[str, Any]] = [{"type": "text", "text": text}]  # the task placed its own tokens
        else:
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt if continuation is None else prompt + continuation

    def _n_tokens(self, text: str) -> int:
        return len(self._tokenizer(text).input_ids)

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError) as e:
            raise GenerationError(
                f"task {task!r}: doc_id {doc_id} not found in split {split!r} ({e})"
            ) from None

    def _visuals(self, doc_to_visual: Callable | None, doc: Any, task: str, doc_id: int) -> list[Any]:
        if doc_to_visual is None:
            return []
        try:
            visuals = doc_to_visual(doc)
        except Exception as e:
            raise GenerationError(
                f"task {task!r}, doc_id {doc_id}: doc_to_visual failed: {type(e).__name__}: {e}"
            ) from e
        flat: list[Any] = []
        for v in visuals or []:
            flat.extend(v if isinstance(v, (list, tuple)) else [v])
        for v in flat:
            if isinstance(v, (str, dict)):
                raise GenerationError(
                    f"task {task!r}, doc_id {doc_id}: genhancer_llava handles images only, "
                    f"got {type(v).__name__} (video/audio tasks are not supported)"
                )
        return flat

    # ------------------------------------------------------------------ batching
    def _encode(self, items: Sequence[_Item], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        images = [im for it in items for im in it.images]
        inputs = self.processor(text=list(texts), images=images or None, padding=True, return_tensors="pt")
        out = {}
        for k, v in inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if torch.is_floating_point(v):
                    v = v.to(self.runtime.dtype)
            out[k] = v
        return out

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        # Longest first (like lmms-eval's Collator): similar lengths share a batch, and OOMs show up at once.
        ordered = sorted(items, key=lambda it: (-it.n_prompt_tokens, it.index))
        n = self.batch_size_per_gpu
        return [ordered[i : i + n] for i in range(0, len(ordered), n)]

    @staticmethod
    def _where(batch: Sequence[_Item]) -> str:
        tasks = sorted({it.task for it in batch})
        ids = [it.doc_id for it in batch]
        return f"task {', '.join(repr(t) for t in tasks)}, doc_id(s) {ids}"

    # ------------------------------------------------------------------ generate_until
    def _generation_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        gk = dict(gen_kwargs)
        until = gk.pop("until", None)
        if isinstance(until, str):
            until = [until]
        elif until is not None and not isinstance(until, list):
            raise ConfigError(
                f"generation_kwargs 'until' must be a string or a list, got {type(until).__name__}"
            )
        temperature = float(gk.get("temperature") or 0.0)
        do_sample = bool(gk.get("do_sample", False)) or temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(gk.get("max_new_tokens") or self.default_max_new_tokens),
            "do_sample": do_sample,
            "num_beams": int(gk.get("num_beams") or 1),
            "use_cache": self.use_cache,
            "pad_token_id": self._tokenizer.pad_token_id,
            "eos_token_id": self.eot_token_id,
        }
        if do_sample:
            kwargs["temperature"] = temperature if temperature > 0 else 1.0
            if gk.get("top_p") is not None:
                kwargs["top_p"] = float(gk["top_p"])
        return kwargs, list(until or [])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        groups: dict[str, list[_Item]] = {}
        settings: dict[str, dict[str, Any]] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            images = self._visuals(doc_to_visual, self._doc(task, split, doc_id), task, doc_id)
            prompt = self.build_prompt(context, len(images))
            key = _sort_key(gen_kwargs)
            settings[key] = gen_kwargs
            groups.setdefault(key, []).append(_Item(i, task, doc_id, prompt, images, self._n_tokens(prompt)))
        return self._run_generation(groups, settings, len(requests))

    def _run_generation(
        self, groups: dict[str, list[_Item]], settings: dict[str, dict[str, Any]], n: int
    ) -> list[str]:
        results: list[str | None] = [None] * n
        batches = [(key, b) for key, items in groups.items() for b in self._batches(items)]
        for key, batch in progress(batches, desc="genhancer_llava generate", unit="batch"):
            kwargs, until = self._generation_kwargs(settings[key])
            try:
                inputs = self._encode(batch, [it.prompt for it in batch])
                with torch.inference_mode():
                    out = self._model.generate(**inputs, **kwargs)
                new_tokens = out[:, inputs["input_ids"].shape[1] :]
                texts = self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            except Exception as e:
                raise GenerationError(
                    f"genhancer_llava: generation failed for {self._where(batch)}: {type(e).__name__}: {e}"
                ) from e
            for it, text in zip(batch, texts):
                results[it.index] = truncate_at_stops(text, until)
        return _complete(results)

    # ------------------------------------------------------------------ loglikelihood
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        items: list[_Item] = []
        for i, req in enumerate(requests):
            context, continuation, doc_to_visual, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            if callable(continuation):
                continuation = continuation(doc)
            if isinstance(continuation, list):  # doc_to_target may return a list; score the first
                continuation = continuation[0]
            images = self._visuals(doc_to_visual, doc, task, doc_id)
            prompt = self.build_prompt(context, len(images))
            n_prompt = self._n_tokens(prompt)
            n_cont = self._n_tokens(prompt + str(continuation)) - n_prompt
            if n_cont <= 0:
                raise GenerationError(
                    f"task {task!r}, doc_id {doc_id}: the continuation {continuation!r} "
                    "adds no tokens to the prompt"
                )
            items.append(_Item(i, task, doc_id, prompt, images, n_prompt, str(continuation)))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for batch in progress(self._batches(items), desc="genhancer_llava loglikelihood", unit="batch"):
            try:
                for it, score in zip(batch, self._score_batch(batch)):
                    results[it.index] = score
            except Exception as e:
                raise GenerationError(
                    f"genhancer_llava: loglikelihood failed for {self._where(batch)}: {type(e).__name__}: {e}"
                ) from e
        return _complete(results)

    def _score_batch(self, batch: Sequence[_Item]) -> list[tuple[float, bool]]:
        texts = [it.prompt + it.continuation for it in batch]
        n_conts = [self._n_tokens(t) - it.n_prompt_tokens for it, t in zip(batch, texts)]
        inputs = self._encode(batch, texts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        # Left padding: a plain forward does not derive positions from the mask, so pass them.
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        keep = max(n_conts) + 1  # only the logits that predict continuation tokens
        with torch.inference_mode():
            logits = self._model(
                **inputs, position_ids=position_ids, logits_to_keep=keep, use_cache=False
            ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V)
        out = []
        for row, n in enumerate(n_conts):
            target = ids[row, -n:]  # (n,)
            lp = logprobs[row, keep - 1 - n : keep - 1]  # (n, V): position t predicts token t+1
            total = lp.gather(-1, target.unsqueeze(-1)).sum().item()
            greedy = bool((lp.argmax(-1) == target).all().item())
            out.append((float(total), greedy))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("genhancer_llava does not implement multi-round generation")


class GenhancerLlavaChat(GenhancerLlava):
    """Chat interface: prompts come from the task's ``doc_to_messages``.

    Generation only in lmms-eval 0.7.3.
    """

    is_simple = False

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from lmms_eval.protocol import ChatMessages

        groups: dict[str, list[_Item]] = {}
        settings: dict[str, dict[str, Any]] = {}
        for i, req in enumerate(requests):
            _ctx, doc_to_messages, gen_kwargs, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            try:
                chat = ChatMessages(messages=doc_to_messages(doc))
                images, videos, audios = chat.extract_media()
                messages = chat.model_dump()["messages"]
                prompt = self.processor.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            except Exception as e:
                raise GenerationError(
                    f"task {task!r}, doc_id {doc_id}: building the chat prompt failed: {e}"
                ) from e
            if videos or audios:
                raise GenerationError(f"task {task!r}, doc_id {doc_id}: genhancer_llava handles images only")
            key = _sort_key(gen_kwargs)
            settings[key] = gen_kwargs
            groups.setdefault(key, []).append(
                _Item(i, task, doc_id, prompt, list(images), self._n_tokens(prompt))
            )
        return self._run_generation(groups, settings, len(requests))

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "lmms-eval 0.7.3 builds chat requests for generation only; run likelihood tasks with "
            "--model genhancer_llava (the simple interface)"
        )


def _complete(results: list[Any]) -> list[Any]:
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:  # a bug, not bad input: every request belongs to exactly one batch
        raise GenerationError(f"genhancer_llava: no answer was produced for request(s) {missing[:10]}")
    return results

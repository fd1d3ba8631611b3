"""Toy VQA task functions (columns: question_id, question_type, question, answer, image).

A reply is correct when it equals the answer after lower-casing and stripping punctuation and surrounding
space ("Red." -> "red"); the headline metric is the accuracy over all questions, and every question type
(the toy world's LLaVA question types) has its own accuracy metric.
"""

from __future__ import annotations

import re
from typing import Any

QUESTION_TYPES = ("color", "shape", "count", "position", "orientation", "size", "presence", "object", "text")
METRICS = ("vqa_accuracy", *(f"vqa_{t}_acc" for t in QUESTION_TYPES))


def doc_to_visual(doc: dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question'].strip()}{kw.get('post_prompt', '')}"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    qtype = doc["question_type"]
    if qtype not in QUESTION_TYPES:
        raise ValueError(
            f"toy_vqa question_id {doc.get('question_id')}: unknown question_type {qtype!r}; "
            f"known: {', '.join(QUESTION_TYPES)}"
        )
    pred = normalise(results[0])
    rec = {
        "question_id": doc["question_id"],
        "question_type": qtype,
        "prediction": pred,
        "answer": normalise(doc["answer"]),
        "score": float(pred == normalise(doc["answer"])),
    }
    return {k: rec for k in METRICS}


def _acc(results: list[dict[str, Any]], qtype: str | None = None) -> float:
    rows = [r for r in results if qtype is None or r["question_type"] == qtype]
    return sum(r["score"] for r in rows) / len(rows) if rows else float("nan")


def aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return _acc(results)


def aggregate_color(results: list[dict[str, Any]]) -> float:
    return _acc(results, "color")


def aggregate_shape(results: list[dict[str, Any]]) -> float:
    return _acc(results, "shape")


def aggregate_count(results: list[dict[str, Any]]) -> float:
    return _acc(results, "count")


def aggregate_position(results: list[dict[str, Any]]) -> float:
    return _acc(results, "position")


def aggregate_orientation(results: list[dict[str, Any]]) -> float:
    return _acc(results, "orientation")


def aggregate_size(results: list[dict[str, Any]]) -> float:
    return _acc(results, "size")


def aggregate_presence(results: list[dict[str, Any]]) -> float:
    return _acc(results, "presence")


def aggregate_object(results: list[dict[str, Any]]) -> float:
    return _acc(results, "object")


def aggregate_text(results: list[dict[str, Any]]) -> float:
    return _acc(results, "text")

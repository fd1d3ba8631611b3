"""Toy CV-Bench task functions (columns as in nyu-visionx/CV-Bench: idx, task, prompt, choices, answer)."""

from __future__ import annotations

import re
from typing import Any

_LETTER = re.compile(r"^\W*\(?([A-Z])\)?(?:[\s.:,)]|$)")
METRICS = ("cv_bench_acc", "cv_bench_count_acc", "cv_bench_relation_acc", "cv_bench_size_acc")


def doc_to_visual(doc: dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['prompt']}{kw.get('post_prompt', '')}"


def extract_letter(text: str) -> str:
    m = _LETTER.match(text.strip())
    return m.group(1).upper() if m else ""


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    gt = doc["answer"].strip("() ")
    pred = extract_letter(results[0])
    rec = {
        "id": doc["idx"],
        "task": doc["task"],
        "gt": gt,
        "pred": results[0],
        "pred_letter": pred,
        "is_correct": pred == gt,
    }
    return {k: rec for k in METRICS}


def _acc(results: list[dict[str, Any]], task: str | None = None) -> float:
    rows = [r for r in results if task is None or r["task"] == task]
    return sum(r["is_correct"] for r in rows) / len(rows) if rows else float("nan")


def aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return _acc(results)


def aggregate_count(results: list[dict[str, Any]]) -> float:
    return _acc(results, "Count")


def aggregate_relation(results: list[dict[str, Any]]) -> float:
    return _acc(results, "Relation")


def aggregate_size(results: list[dict[str, Any]]) -> float:
    return _acc(results, "Size")

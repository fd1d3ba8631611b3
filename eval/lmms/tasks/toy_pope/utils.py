"""Toy POPE task functions (columns as in lmms-lab POPE: question_id, question, answer, image, category).

The answer is the first word of the reply, lower-cased, punctuation stripped ("Yes." -> "yes"); anything
other than yes/no counts as wrong (and as neither a positive nor a negative prediction).
"""

from __future__ import annotations

import re
from typing import Any


def doc_to_visual(doc: dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question'].strip()}{kw.get('post_prompt', '')}"


def normalise(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    pred = normalise(results[0])
    gt = doc["answer"].strip().lower()
    if gt not in ("yes", "no"):
        raise ValueError(
            f"toy_pope question_id {doc.get('question_id')}: answer {doc['answer']!r} is not yes/no"
        )
    rec = {
        "question_id": doc["question_id"],
        "prediction": pred,
        "ground_truth": gt,
        "score": float(pred == gt),
    }
    return {
        k: rec for k in ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")
    }


def aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return sum(r["score"] for r in results) / len(results) if results else 0.0


def _counts(results: list[dict[str, Any]]) -> tuple[int, int, int]:
    tp = sum(r["prediction"] == "yes" and r["ground_truth"] == "yes" for r in results)
    fp = sum(r["prediction"] == "yes" and r["ground_truth"] == "no" for r in results)
    fn = sum(r["prediction"] != "yes" and r["ground_truth"] == "yes" for r in results)
    return tp, fp, fn


def aggregate_precision(results: list[dict[str, Any]]) -> float:
    tp, fp, _ = _counts(results)
    return tp / (tp + fp) if tp + fp else 0.0


def aggregate_recall(results: list[dict[str, Any]]) -> float:
    tp, _, fn = _counts(results)
    return tp / (tp + fn) if tp + fn else 0.0


def aggregate_f1_score(results: list[dict[str, Any]]) -> float:
    p, r = aggregate_precision(results), aggregate_recall(results)
    return 2 * p * r / (p + r) if p + r else 0.0


def aggregate_yes_ratio(results: list[dict[str, Any]]) -> float:
    """Share of replies that say yes (LLaVA's POPE 'yes ratio'; 0.5 on this balanced data is unbiased)."""
    return sum(r["prediction"] == "yes" for r in results) / len(results) if results else 0.0

"""Toy MMVP task functions (columns as in lmms-lab-eval/MMVP: Index, Question, Options, Correct Answer)."""

from __future__ import annotations

import ast
import re
from typing import Any

_OPTION = re.compile(r"\(([a-z])\)\s*(.+?)(?=\s*\([a-z]\)\s|$)", re.IGNORECASE | re.DOTALL)
_LETTER = re.compile(r"^\W*\(?([AB])\)?(?:[\s.:,)]|$)", re.IGNORECASE)


def options(doc: dict[str, Any]) -> list[str]:
    """'(a) X (b) Y' -> ['X', 'Y']."""
    found = [text.strip() for _letter, text in _OPTION.findall(doc["Options"])]
    if len(found) != 2:
        raise ValueError(
            f"toy_mmvp Index {doc.get('Index')}: cannot parse two options from {doc['Options']!r}"
        )
    return found


def doc_to_visual(doc: dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    listing = "\n".join(f"{chr(65 + i)}. {opt}" for i, opt in enumerate(options(doc)))
    return f"{kw.get('pre_prompt', '')}{doc['Question']}\n{listing}{kw.get('post_prompt', '')}"


def doc_to_target(doc: dict[str, Any]) -> str:
    return {"(a)": "A", "(b)": "B"}[doc["Correct Answer"].strip().lower()]


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return ["A", "B"]


def doc_to_target_index(doc: dict[str, Any]) -> int:
    return "AB".index(doc_to_target(doc))


def extract_letter(text: str) -> str:
    m = _LETTER.match(text.strip())
    return m.group(1).upper() if m else ""


def _record(doc: dict[str, Any], pred: str, letter: str) -> dict[str, dict[str, Any]]:
    index = int(doc["Index"]) - 1  # 1-based in the data; rows 2k, 2k+1 (0-based) form pair k
    rec = {
        "index": index,
        "pair_index": index // 2,
        "pattern": doc.get("pattern"),
        "pred": pred,
        "pred_letter": letter,
        "gt": doc_to_target(doc),
    }
    rec["is_correct"] = letter == rec["gt"]
    return {"mmvp_accuracy": rec, "mmvp_pair_accuracy": rec}


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    pred = results[0]
    return _record(doc, pred, extract_letter(pred))


def loglikelihood_of(result: Any) -> float:
    """The log-likelihood of one choice. lmms-eval 0.7.3 turns the model's ``(logprob, is_greedy)`` pair
    into its string form (``unwrap_generation_output`` falls back to ``str``), so both forms are read."""
    if isinstance(result, str):
        result = ast.literal_eval(result)
    if isinstance(result, (tuple, list)):
        result = result[0]
    return float(result)


def process_results_ll(doc: dict[str, Any], results: list) -> dict[str, dict[str, Any]]:
    """``results``: one (log-likelihood, is_greedy) per choice, in doc_to_choice order; highest wins."""
    lls = [loglikelihood_of(r) for r in results]
    letter = "AB"[max(range(len(lls)), key=lls.__getitem__)]
    return _record(doc, f"{letter} (log-likelihoods {[round(x, 4) for x in lls]})", letter)


def aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return sum(r["is_correct"] for r in results) / len(results) if results else 0.0


def aggregate_pair_accuracy(results: list[dict[str, Any]]) -> float:
    """A pair counts only when both of its images are answered correctly; incomplete pairs (--limit) are
    left out."""
    pairs: dict[int, list[bool]] = {}
    for r in results:
        pairs.setdefault(r["pair_index"], []).append(r["is_correct"])
    complete = [v for v in pairs.values() if len(v) == 2]
    return sum(all(v) for v in complete) / len(complete) if complete else 0.0

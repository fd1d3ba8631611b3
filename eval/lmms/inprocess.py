"""Run lmms-eval in this process on a model *instance* (lmms-eval's Python API), for side-by-side checks.

Used by ``benchmarks/bench_lmms_adapter.py`` (throughput of ``genhancer_llava`` vs ``llava_hf``) and by the
tests that compare answers; normal evaluations go through the CLI (``python -m eval.lmms run``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.lmms.adapter import truncate_at_stops


@dataclass
class InProcessRun:
    answers: dict[tuple[str, int], str]  # (task, doc_id) -> filtered answer
    until: dict[str, list[str]]  # task -> stop strings of its generation_kwargs
    results: dict[str, Any]  # lmms-eval's results["results"]
    seconds: float  # wall time of simple_evaluate (model already loaded)
    cpu_seconds: float  # CPU time of this process over the same span (less sensitive to a busy machine)
    model_seconds: float  # wall time spent inside the model's generate_until / loglikelihood calls
    n_samples: int


def load_llava_hf(model_dir: str | Path) -> Any:
    """lmms-eval's built-in chat ``llava_hf`` on CPU, float32 (its defaults fail under transformers 5)."""
    from lmms_eval.models.chat.llava_hf import LlavaHf

    return LlavaHf(pretrained=str(model_dir), device="cpu", device_map="cpu", dtype="float32", batch_size=1)


def load_genhancer_llava(model_dir: str | Path, batch_size: int, device: str = "cpu") -> Any:
    from eval.lmms.adapter import GenhancerLlava

    return GenhancerLlava(pretrained=str(model_dir), device=device, batch_size=batch_size)


def evaluate_instance(
    model: Any, tasks: list[str], include_dir: str | Path, limit: int | None
) -> InProcessRun:
    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    manager = TaskManager("ERROR", include_path=str(include_dir), model_name="in-process")
    # lmms-eval's evaluate() ends with lm.clean(), which deletes every nn.Module attribute of the model
    # object; keep them so one loaded instance can be evaluated again (warm-up, repeats).
    modules = {k: v for k, v in vars(model).items() if isinstance(v, torch.nn.Module)}
    spent = [0.0]
    originals = {}
    for name in ("generate_until", "loglikelihood"):
        fn = getattr(model, name)
        originals[name] = fn

        def timed(requests, _fn=fn):
            start = time.perf_counter()
            try:
                return _fn(requests)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(model, name, timed)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        out = simple_evaluate(
            model=model,
            tasks=tasks,
            task_manager=manager,
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
    finally:
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        for k, v in modules.items():
            setattr(model, k, v)
        for name in originals:
            delattr(model, name)  # back to the class's method
    if out is None:
        raise RuntimeError("lmms-eval returned no results (not the main process?)")
    answers: dict[tuple[str, int], str] = {}
    until: dict[str, list[str]] = {}
    for task, samples in (out.get("samples") or {}).items():
        cfg = (out.get("configs") or {}).get(task, {})
        until[task] = list(((cfg.get("generation_kwargs") or {}).get("until")) or [])
        for s in samples:
            resp = s["filtered_resps"]
            answers[(task, int(s["doc_id"]))] = resp[0] if isinstance(resp, list) else resp
    return InProcessRun(answers, until, out["results"], seconds, cpu_seconds, spent[0], len(answers))


def compare_answers(ours: InProcessRun, reference: InProcessRun) -> list[dict[str, Any]]:
    """Samples whose answers differ; the reference (llava_hf ignores stop strings) is cut at ``until``."""
    diffs = []
    for key, ref in sorted(reference.answers.items()):
        expected = truncate_at_stops(ref, reference.until.get(key[0])).strip()
        got = ours.answers.get(key)
        if got is None or got.strip() != expected:
            diffs.append({"task": key[0], "doc_id": key[1], "ours": got, "llava_hf": expected})
    return diffs

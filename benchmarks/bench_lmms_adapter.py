"""Throughput of the batched ``genhancer_llava`` adapter against lmms-eval's ``llava_hf`` (batch 1), side by
side.

    python benchmarks/bench_lmms_adapter.py [--model LLAVA_DIR] [--world TOY_WORLD] [--limit 24]
        [--batch-size 16] [--repeats 2] [--json OUT.json]

Both models evaluate the same toy generation tasks (toy_mmvp, toy_pope, toy_cv_bench) through lmms-eval's
Python API in this process, in alternating order, ``--repeats`` times after one warm-up each; the ratio
is llava_hf's median seconds over ours (same samples, models loaded beforehand); the CPU-time ratio
is reported too, as wall time on a shared machine mostly measures the neighbours, and so is the ratio of
the time spent inside the models' own calls (without lmms-eval's per-run task building and scoring). The
answers are compared too (llava_hf's cut at the tasks' stop strings, which it ignores). Without
``--model`` / ``--world`` a tiny LLaVA and a small toy data set are built in a temporary directory. Prints
a line and a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from eval.lmms.tiny import build_tiny_llava
from toyworld.lmms_data import write_lmms_data

TASKS = ["toy_mmvp", "toy_pope", "toy_cv_bench"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="LLaVA directory (default: a tiny one built from config)")
    parser.add_argument(
        "--world", type=Path, help="toy world with lmms/ data (default: written to a temp dir)"
    )
    parser.add_argument("--limit", type=int, default=24, help="samples per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)

    from eval.lmms import inprocess, suites  # local: heavy (pulls lmms_eval, transformers)

    with tempfile.TemporaryDirectory(prefix="bench_lmms_") as tmp:
        model = args.model
        if model is None:
            model = build_tiny_llava(Path(tmp) / "llava")
        world = args.world
        if world is None:
            world = Path(tmp) / "world"
            write_lmms_data(
                world / "lmms",
                seed=0,
                image_size=64,
                mmvp_pairs_per_pattern=4,
                pope_images_per_split=max(4, args.limit // 2),
                cv_bench_per_task=max(4, args.limit // 3),
            )
        include, names = suites.write_include_dir(TASKS, Path(tmp) / "include", toy_data=world)
        backends = {
            "llava_hf": inprocess.load_llava_hf(model),
            "genhancer_llava": inprocess.load_genhancer_llava(model, args.batch_size),
        }
        for m in backends.values():  # warm-up: first calls pay for lazy initialisation
            inprocess.evaluate_instance(m, names, include, 2)
        seconds: dict[str, list[float]] = {k: [] for k in backends}
        cpu_seconds: dict[str, list[float]] = {k: [] for k in backends}
        model_seconds: dict[str, list[float]] = {k: [] for k in backends}
        runs = {}
        for _ in range(args.repeats):
            for name, m in backends.items():
                runs[name] = inprocess.evaluate_instance(m, names, include, args.limit)
                seconds[name].append(runs[name].seconds)
                cpu_seconds[name].append(runs[name].cpu_seconds)
                model_seconds[name].append(runs[name].model_seconds)
        diffs = inprocess.compare_answers(runs["genhancer_llava"], runs["llava_hf"])

    med = {k: statistics.median(v) for k, v in seconds.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_seconds.items()}
    med_model = {k: statistics.median(v) for k, v in model_seconds.items()}
    n = runs["genhancer_llava"].n_samples
    result = {
        "benchmark": "lmms_adapter_throughput",
        "tasks": names,
        "samples": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds": seconds,
        "samples_per_s": {k: n / v for k, v in med.items()},
        "cpu_seconds": cpu_seconds,
        "ratio_vs_llava_hf": med["llava_hf"] / med["genhancer_llava"],
        "cpu_time_ratio_vs_llava_hf": med_cpu["llava_hf"] / med_cpu["genhancer_llava"],
        "model_seconds": model_seconds,
        "model_call_ratio_vs_llava_hf": med_model["llava_hf"] / med_model["genhancer_llava"],
        "answers_equal": not diffs,
        "answer_diffs": diffs[:10],
        "model": str(args.model or "tiny (built from config)"),
    }
    print(
        f"genhancer_llava (batch {args.batch_size}) vs llava_hf (batch 1): "
        f"{result['ratio_vs_llava_hf']:.2f}x "
        f"throughput on {n} samples (CPU-time ratio {result['cpu_time_ratio_vs_llava_hf']:.2f}x, inside the "
        f"model calls {result['model_call_ratio_vs_llava_hf']:.2f}x); "
        f"answers equal: {result['answers_equal']}"
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

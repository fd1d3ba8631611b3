"""``python -m eval.lmms run``: evaluate a LLaVA directory with the real lmms-eval CLI and normalise
the result.

    python -m eval.lmms run --model DIR --suite toy|vision-centric|TASK[,TASK...] --out RUN_DIR
        [--world TOY_WORLD] [--mirror DIR] [--limit N] [--batch-size N] [--backend genhancer_llava|llava_hf]

Steps: check that DIR is a LLaVA directory; write the per-run include dir (``RUN_DIR/lmms_tasks``, see
``eval.lmms.suites``); run ``python -m lmms_eval eval --model genhancer_llava --include_path ...`` as a
subprocess with its whole log in ``RUN_DIR/lmms_eval.log``; fail (exit 1, one message naming the task and
doc ids) when lmms-eval reports an error -- its CLI prints the traceback and still exits 0, and
``llava_hf`` logs failed generations and scores empty answers, so the log is checked as well as the exit
code; then write ``RUN_DIR/results.json``: our normalised summary (``scores[task][metric]``, protocol per
task, model/encoder/LLM from provenance) with the path of lmms-eval's raw results file, and, from the
per-sample logs, every score's bootstrap 95% interval (``ci95[task][metric]``, 0-1; drawn as whiskers by
``eval.leaderboard``).

``python -m eval.lmms tasks --suite toy --world DIR --out INCLUDE_DIR`` only writes the include dir and
prints the lmms-eval command, for running lmms-eval by hand.

``python -m eval.lmms compare --runs baseline=RUN enhanced=RUN`` compares run directories question by
question (paired bootstrap intervals of the differences; see ``eval.lmms.compare``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.lmms import compare, suites
from eval.lmms.manifest import MODEL_ID
from eval.lmms.modeldir import check_llava_dir, describe_model_dir
from genhancer.utils.cli import entry_point
from genhancer.utils.errors import ConfigError, DataError, UserError
from genhancer.utils.fsio import read_json, read_jsonl, write_json
from genhancer.utils.logging import get_logger

LOG = get_logger("eval.lmms")
RESULTS_FORMAT = "genhancer-lmms-results/1"
CI95_DRAWS = 1000  # bootstrap draws of each score's interval (results.json ci95)
CI95_METHOD = f"percentile bootstrap over the task's documents (MMVP: pairs), {CI95_DRAWS} draws, seed 0"
BACKENDS = (MODEL_ID, "llava_hf")
# Lines that mean a run failed even when lmms-eval exits 0.
FAILURE_PATTERNS = (
    re.compile(r"GenerationError: (?P<msg>.*)"),
    re.compile(r"Error during evaluation: (?P<msg>.*)"),
    re.compile(r"Error (?P<msg>.*) in generating"),  # llava_hf swallows these and scores ""
    re.compile(r"Failed to import model from (?P<msg>.*)"),
)


class EvalRunError(UserError):
    """lmms-eval failed or reported an error; the message quotes it and points at the log."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def find_failure(log_text: str) -> str | None:
    """The first line of ``log_text`` that reports a failed evaluation, or None."""
    log_text = ANSI.sub("", log_text)
    for pattern in FAILURE_PATTERNS:
        m = pattern.search(log_text)
        if m:
            return m.group(0).strip()
    return None


def build_command(
    backend: str,
    model: Path,
    cli_tasks: list[str],
    include_dir: Path,
    out_dir: Path,
    *,
    batch_size: int,
    limit: int | None,
    device: str,
    dtype: str,
    log_samples: bool,
    extra_model_args: str,
) -> list[str]:
    if (
        backend == "llava_hf"
    ):  # lmms-eval's built-in: batch 1, device_map must be explicit under transformers 5
        dev = "cuda" if device == "auto" and _cuda() else ("cpu" if device == "auto" else device)
        dt = dtype if dtype != "auto" else ("bfloat16" if dev.startswith("cuda") else "float32")
        model_args = f"pretrained={model},device={dev},device_map={dev},dtype={dt}"
        batch_size = 1
    else:
        model_args = f"pretrained={model},device={device},dtype={dtype}"
    if extra_model_args:
        model_args += "," + extra_model_args
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "eval",
        "--model",
        backend,
        "--model_args",
        model_args,
        "--tasks",
        ",".join(cli_tasks),
        "--include_path",
        str(include_dir),
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(out_dir),
    ]
    if log_samples:
        cmd.append("--log_samples")
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def newest_results_file(out_dir: Path) -> Path:
    files = sorted(out_dir.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise EvalRunError(f"lmms-eval wrote no *_results.json under {out_dir}")
    return files[-1]


def _protocol(output_type: str | None) -> str:
    return "likelihood" if output_type in ("multiple_choice", "loglikelihood") else "generation"


def extract_scores(raw: dict[str, Any], where: str) -> dict[str, dict[str, float]]:
    """``results[task]["metric,filter"]`` -> ``{canonical task: {metric: value}}``.

    stderr entries are dropped.
    """
    results = raw.get("results")
    if not isinstance(results, dict):
        raise DataError(f"{where}: no 'results' mapping; is this an lmms-eval results file?")
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        row = {}
        for key, value in metrics.items():
            metric = key.split(",", 1)[0]
            if "_stderr" in metric or metric == "alias" or not isinstance(value, (int, float)):
                continue
            if math.isnan(value):  # e.g. a per-type accuracy with no sample of that type under --limit
                continue
            row[metric] = float(value)
        if row:
            scores[suites.canonical_task(task)] = row
    return scores


def cv_bench_sources(samples_file: Path) -> dict[str, float]:
    """Per-source accuracy of a cv_bench samples log (GenHancer reports 2D ADE20K, 2D COCO and 3D Omni3D)."""
    by_source: dict[str, list[bool]] = {}
    for rec in read_jsonl(samples_file):
        item = rec.get("cv_bench_acc")
        if isinstance(item, dict) and "source" in item:
            by_source.setdefault(str(item["source"]), []).append(bool(item.get("is_correct")))
    out = {f"cv_bench_{src.lower()}_acc": sum(v) / len(v) for src, v in by_source.items() if v}
    if "cv_bench_ade20k_acc" in out and "cv_bench_coco_acc" in out:
        out["cv_bench_2d_acc"] = (out["cv_bench_ade20k_acc"] + out["cv_bench_coco_acc"]) / 2
    if "cv_bench_omni3d_acc" in out:
        out["cv_bench_3d_acc"] = out["cv_bench_omni3d_acc"]
    return out


def _within(path: Path, run_dir: Path) -> str:
    """``path`` relative to ``run_dir`` when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def normalise(
    raw_file: Path,
    *,
    run_dir: Path,
    model: Path,
    backend: str,
    suite: str,
    tasks: list[str],
    limit: int | None,
    batch_size: int,
    wall_s: float | None,
    command: list[str],
) -> dict[str, Any]:
    raw = read_json(raw_file)
    if not isinstance(raw, dict):
        raise DataError(f"{raw_file}: not an lmms-eval results file (top level is not a mapping)")
    scores = extract_scores(raw, str(raw_file))
    configs = raw.get("configs") or {}
    protocol = {}
    for task, cfg in configs.items():
        meta = cfg.get("metadata") if isinstance(cfg, dict) else None
        proto = meta.get("protocol") if isinstance(meta, dict) else None
        protocol[suites.canonical_task(task)] = {
            "mode": proto or _protocol(cfg.get("output_type") if isinstance(cfg, dict) else None),
            "source": "mirror"
            if task.startswith(suites.MIRROR_PREFIX)
            else ("toy" if task.startswith("toy_") else "hub"),
        }
    samples = sorted(
        str(p.relative_to(raw_file.parent))
        for p in raw_file.parent.glob(raw_file.name.replace("_results.json", "_samples_*.jsonl"))
    )
    for rel in samples:
        task = rel.rsplit("_samples_", 1)[-1].removesuffix(".jsonl")
        if suites.canonical_task(task) == "cv_bench" and "cv_bench" in scores:
            scores["cv_bench"].update(cv_bench_sources(raw_file.parent / rel))
    missing = [t for t in tasks if t not in scores and not any(m in scores for m in suites.GROUPS.get(t, ()))]
    if missing:
        raise EvalRunError(f"{raw_file}: lmms-eval reported no metrics for task(s) {missing}")
    return {
        "format": RESULTS_FORMAT,
        "model": describe_model_dir(model),
        "backend": backend,
        "suite": suite,
        "tasks": tasks,
        "limit": limit,
        "batch_size": batch_size,
        "lmms_eval_version": raw.get("lmms_eval_version"),
        "model_backend": (raw.get("config") or {}).get("model_backend"),
        "n_samples": {suites.canonical_task(k): v for k, v in (raw.get("n-samples") or {}).items()},
        "scores": scores,
        "protocol": protocol,
        # relative to the run directory, the hand-off: it can be moved and read from anywhere
        "raw_results": _within(raw_file, run_dir),
        "samples": [_within(raw_file.parent / s, run_dir) for s in samples],
        "wall_s": None if wall_s is None else round(wall_s, 2),
        "command": shlex.join(command),
    }


def run_lmms_eval(cmd: list[str], log_path: Path, echo: bool) -> tuple[int, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    lines: list[str] = []
    with log_path.open("w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if echo:
                sys.stderr.write(line)
        rc = proc.wait()
    return rc, "".join(lines)


def evaluate(
    model: str | Path,
    suite: str,
    out: str | Path,
    *,
    world: str | Path | None = None,
    mirror: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    backend: str = MODEL_ID,
    device: str = "auto",
    dtype: str = "auto",
    model_args: str = "",
    log_samples: bool = True,
    echo: bool = False,
) -> dict[str, Any]:
    """Run one suite on one LLaVA directory; returns (and writes) RUN_DIR/results.json."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    model_dir = check_llava_dir(model)
    tasks = suites.expand(suite)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    include_dir, cli_tasks = suites.write_include_dir(
        tasks, run_dir / "lmms_tasks", toy_data=world, mirror=mirror
    )
    out_dir = run_dir / "lmms_out"
    cmd = build_command(
        backend,
        model_dir,
        cli_tasks,
        include_dir,
        out_dir,
        batch_size=batch_size,
        limit=limit,
        device=device,
        dtype=dtype,
        log_samples=log_samples,
        extra_model_args=model_args,
    )
    log_path = run_dir / "lmms_eval.log"
    LOG.info("running lmms-eval on %s: %s (log: %s)", model_dir, ", ".join(cli_tasks), log_path)
    started = time.time()
    t0 = time.perf_counter()
    rc, text = run_lmms_eval(cmd, log_path, echo)
    wall = time.perf_counter() - t0
    failure = find_failure(text)
    if rc != 0 or failure:
        what = failure or f"lmms-eval exited with code {rc}"
        raise EvalRunError(f"lmms-eval failed: {what} (full log: {log_path})")
    raw_file = newest_results_file(out_dir)
    if raw_file.stat().st_mtime < started - 1:
        raise EvalRunError(f"lmms-eval wrote no new results file under {out_dir} (newest is {raw_file})")
    summary = normalise(
        raw_file,
        run_dir=run_dir,
        model=model_dir,
        backend=backend,
        suite=suite,
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
        wall_s=wall,
        command=cmd,
    )
    if log_samples:  # every score's 95% interval over its documents, for the leaderboard's whiskers
        summary["ci95"] = compare.score_intervals(summary, run_dir, iters=CI95_DRAWS, seed=0)
        summary["ci95_method"] = CI95_METHOD
    write_json(run_dir / "results.json", summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"lmms-eval results for {summary['model']['path']} ({summary['backend']}, {summary['wall_s']} s)")
    for task, metrics in summary["scores"].items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"  {task}: {shown}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite",
        required=True,
        help="toy | vision-centric | comma-separated task names (e.g. toy_mmvp,toy_pope)",
    )
    p.add_argument("--world", type=Path, help="toy world directory (or its lmms/ dir); needed by toy tasks")
    p.add_argument("--mirror", type=Path, help="local mirror of the real benchmarks (layout: docs/eval.md)")


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.lmms", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="evaluate a LLaVA directory through the lmms-eval CLI")
    p_run.add_argument("--model", required=True, type=Path, help="HF LLaVA directory")
    _add_common(p_run)
    p_run.add_argument("--out", required=True, type=Path, help="run directory (results.json is written here)")
    p_run.add_argument("--limit", type=int, help="evaluate only the first N samples of each task")
    p_run.add_argument("--batch-size", type=int, default=8)
    p_run.add_argument("--backend", default=MODEL_ID, choices=BACKENDS)
    p_run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p_run.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p_run.add_argument("--model-args", default="", help="extra lmms-eval model args, k=v,k=v")
    p_run.add_argument("--no-log-samples", action="store_true", help="do not write per-sample logs")
    p_run.add_argument("--verbose", action="store_true", help="echo lmms-eval's output")
    p_tasks = sub.add_parser("tasks", help="write an include dir for running lmms-eval by hand")
    _add_common(p_tasks)
    p_tasks.add_argument("--out", required=True, type=Path, help="include directory to write")
    compare.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "compare":
        return compare.run_cli(args)
    if args.command == "tasks":
        tasks = suites.expand(args.suite)
        include, cli_tasks = suites.write_include_dir(
            tasks, args.out, toy_data=args.world, mirror=args.mirror
        )
        print(f"include dir -> {include}")
        print(
            f"lmms-eval --model {MODEL_ID} --model_args pretrained=LLAVA_DIR --tasks {','.join(cli_tasks)} "
            f"--include_path {include} --batch_size 8 --output_path OUT --log_samples"
        )
        return 0
    summary = evaluate(
        args.model,
        args.suite,
        args.out,
        world=args.world,
        mirror=args.mirror,
        limit=args.limit,
        batch_size=args.batch_size,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        model_args=args.model_args,
        log_samples=not args.no_log_samples,
        echo=args.verbose,
    )
    _print_summary(summary)
    print(f"results -> {Path(args.out) / 'results.json'}")
    return 0

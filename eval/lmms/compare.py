"""``python -m eval.lmms compare``: paired comparison of LLaVA runs on the same lmms-eval tasks.

    python -m eval.lmms compare --runs baseline=RUN[,RUN...] enhanced=RUN[,RUN...] [--baseline baseline]
        [--iters 1000] [--seed 0] [--out compare.json]

Each RUN is an ``eval.lmms run`` directory (its ``results.json`` and lmms-eval's per-sample logs). Several
RUNs of one name are training seeds, paired by position with the other names' (seed k of the baseline with
seed k of the enhanced model).

Every metric of every task both models answered is recomputed from the per-sample records with the task's
own aggregation function (read from its YAML, ``!function utils.aggregate_...``), so a resampled metric is
exactly the task's metric: F1 stays F1, pair accuracy stays pair accuracy. The 95% interval of the
difference (other - baseline) comes from a paired bootstrap: the same resampled questions are scored for
both models; with several seeds the seeds are resampled too (paired), so the interval covers training
noise as well as the choice of questions. Resampling units are the documents, except that records naming
a pair (``pair_index``, MMVP) are resampled by pair.

Output: a table (metrics x 100: each model's mean with its interval, and the difference with its interval)
and, with ``--out``, a JSON (format ``genhancer-lmms-compare/1``; per metric: ``baseline``, ``other``, their
``*_per_seed`` values and ``*_ci95``, ``diff`` and its ``ci95``, ``units``, ``seeds``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.lmms import suites
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import read_json, read_jsonl, write_json

COMPARE_FORMAT = "genhancer-lmms-compare/1"
PAIR_KEY = "pair_index"
BUILTIN_AGGREGATIONS: dict[str, Callable[[list[Any]], float]] = {
    "mean": lambda xs: sum(float(x) for x in xs) / len(xs) if xs else math.nan,
    "median": lambda xs: float(statistics.median(float(x) for x in xs)) if xs else math.nan,
}


@dataclass
class TaskSamples:
    """One task of one run: ``records[metric][unit]`` = the records of that resampling unit."""

    task: str
    units: list[Any]
    records: dict[str, dict[Any, list[Any]]]
    paired_units: bool  # units are MMVP pairs (their records carry pair_index)


# ------------------------------------------------------------------------------------------ task YAML
def _resolve_yaml(path: Path, depth: int = 0) -> tuple[dict[str, Any], dict[str, Path]]:
    """The task config with its ``include`` chain merged; also where each top-level key was defined."""
    if depth > 10:
        raise ConfigError(f"{path}: include chain deeper than 10 files")
    cfg = suites.read_task_yaml(path)
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    inc = cfg.get("include")
    if inc:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        merged, origin = _resolve_yaml(inc_path, depth + 1)
    for k, v in cfg.items():
        if k != "include":
            merged[k], origin[k] = v, path
    return merged, origin


def task_yaml(run_dir: Path, task: str) -> Path:
    """The YAML lmms-eval ran ``task`` from: the run's include dir, else lmms-eval's own tasks."""
    found = sorted((run_dir / "lmms_tasks").rglob(f"{task}.yaml"))
    if found:
        return found[0]
    for p in sorted(suites.lmms_eval_tasks_dir().rglob("*.yaml")):
        try:
            if suites.read_task_yaml(p).get("task") == task:
                return p
        except ConfigError:
            continue
    raise ConfigError(
        f"{run_dir}: cannot find the YAML of task {task!r} (looked in {run_dir}/lmms_tasks and lmms-eval)"
    )


def _import_function(spec: str, where: Path) -> Callable[..., Any]:
    module, _, fn = spec.rpartition(".")
    file = where.parent / f"{module.replace('.', '/')}.py"
    if not file.is_file():
        raise ConfigError(f"{where}: aggregation {spec!r} names {file}, which does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"_lmms_compare_{abs(hash(str(file)))}", file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return getattr(mod, fn)


def aggregations(yaml_path: Path) -> dict[str, Callable[[list[Any]], float]]:
    """metric -> aggregation function of one task (metrics with an unknown builtin aggregation are left
    out)."""
    cfg, origin = _resolve_yaml(yaml_path)
    out = {}
    for item in cfg.get("metric_list") or []:
        agg = item.get("aggregation", "mean")
        if isinstance(agg, str) and "." in agg:
            out[item["metric"]] = _import_function(agg, origin["metric_list"])
        elif agg in BUILTIN_AGGREGATIONS:
            out[item["metric"]] = BUILTIN_AGGREGATIONS[agg]
    return out


# ------------------------------------------------------------------------------------------ samples
def run_samples(run_dir: Path) -> dict[str, Path]:
    """canonical task -> its per-sample log, from the run's ``results.json``."""
    summary = read_json(
        run_dir / "results.json",
        missing=f"{run_dir}: no results.json; run `python -m eval.lmms run --out RUN_DIR` first",
    )
    return samples_of(summary, run_dir)


def samples_of(summary: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """canonical task -> its per-sample log, from a run summary (``results.json``'s content).

    The logs are listed relative to the run directory, so a run directory can be moved or read from anywhere
    (older results listed them relative to the working directory of the run: ``sample_log_path``).
    """
    out = {}
    for s in summary.get("samples") or []:
        task = Path(s).name.rsplit("_samples_", 1)[-1].removesuffix(".jsonl")
        out[task] = sample_log_path(Path(s), run_dir)
    if not out:
        raise DataError(
            f"{run_dir}/results.json lists no per-sample logs (was the run made with --no-log-samples?)"
        )
    return out


def sample_log_path(listed: Path, run_dir: Path) -> Path:
    """Where a per-sample log listed in ``run_dir/results.json`` is: under the run directory; for older
    results (listed relative to the working directory of the run) as listed, else the run directory's file
    of that name; a missing log is reported by its reader."""
    if listed.is_absolute():
        return listed
    if (run_dir / listed).exists():
        return run_dir / listed
    if listed.exists():
        return listed
    return next(iter(sorted(run_dir.rglob(listed.name))), run_dir / listed)


def load_task_samples(path: Path, task: str, metrics: Sequence[str]) -> TaskSamples:
    rows = read_jsonl(path)
    paired = bool(rows) and all(
        isinstance(r.get(m), dict) and PAIR_KEY in r[m] for r in rows for m in metrics
    )
    records: dict[str, dict[Any, list[Any]]] = {m: {} for m in metrics}
    units: list[Any] = []
    for i, r in enumerate(rows):
        if "doc_id" not in r:
            raise DataError(f"{path}, line {i + 1}: no doc_id (not an lmms-eval samples log?)")
        for m in metrics:
            if m not in r:
                raise DataError(f"{path}, line {i + 1}: no record for metric {m!r}")
            unit = r[m][PAIR_KEY] if paired else r["doc_id"]
            bucket = records[m].setdefault(unit, [])
            if not bucket and m == metrics[0]:
                units.append(unit)
            bucket.append(r[m])
    return TaskSamples(task, units, records, paired)


def _relabel(recs: list[Any], k: int, paired: bool) -> list[Any]:
    return [{**r, PAIR_KEY: k} for r in recs] if paired else recs


def score(samples: TaskSamples, metric: str, agg: Callable[[list[Any]], float], draw: Sequence[Any]) -> float:
    """The metric over the units of ``draw`` (a unit drawn twice counts twice; pairs get fresh indices)."""
    recs: list[Any] = []
    by_unit = samples.records[metric]
    for k, u in enumerate(draw):
        recs.extend(_relabel(by_unit[u], k, samples.paired_units))
    return float(agg(recs))


# ------------------------------------------------------------------------------------------ bootstrap
def _percentile(xs: Sequence[float], q: float) -> float:
    xs = sorted(x for x in xs if not math.isnan(x))
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _interval(xs: Sequence[float]) -> list[float]:
    return [_percentile(xs, 0.025), _percentile(xs, 0.975)]


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def score_intervals(
    summary: dict[str, Any], run_dir: Path, iters: int = 1000, seed: int = 0
) -> dict[str, dict[str, list[float]]]:
    """Per task and metric of one run (0-1, like ``summary["scores"]``): the percentile-bootstrap 95%
    interval of its score over the task's documents (MMVP: pairs), each draw scored with the task's own
    aggregation. A skewed bootstrap can leave the score itself outside the percentiles; the interval is then
    widened to hold it."""
    out: dict[str, dict[str, list[float]]] = {}
    for task, path in sorted(samples_of(summary, run_dir).items()):
        aggs = aggregations(task_yaml(run_dir, task))
        values = summary["scores"].get(suites.canonical_task(task), {})
        aggs = {m: agg for m, agg in aggs.items() if m in values}
        if not aggs:
            continue
        samples = load_task_samples(path, task, list(aggs))
        rng = random.Random(f"{seed}:{task}")
        units = samples.units
        draws = [[units[rng.randrange(len(units))] for _ in units] for _ in range(iters)]
        per_metric = {}
        for metric, agg in aggs.items():
            lo, hi = _interval([score(samples, metric, agg, d) for d in draws])
            value = float(values[metric])
            if not (math.isnan(lo) or math.isnan(value)):
                per_metric[metric] = [min(lo, value), max(hi, value)]
        out[suites.canonical_task(task)] = per_metric
    return out


def compare_task(
    base: list[TaskSamples],
    other: list[TaskSamples],
    aggs: dict[str, Callable[[list[Any]], float]],
    iters: int,
    rng: random.Random,
) -> dict[str, Any]:
    """Per metric: each model's value (mean over seeds), the difference and its paired-bootstrap 95%
    interval."""
    units = [u for u in base[0].units if all(u in s.records[next(iter(aggs))] for s in (*base, *other))]
    if not units:
        raise DataError(f"task {base[0].task}: the runs share no documents")
    n_seeds = len(base)
    draws = []
    for _ in range(iters):
        seeds = [rng.randrange(n_seeds) for _ in range(n_seeds)] if n_seeds > 1 else [0]
        draws.append((seeds, [units[rng.randrange(len(units))] for _ in units]))
    out = {}
    for metric, agg in aggs.items():
        b = [score(s, metric, agg, units) for s in base]
        o = [score(s, metric, agg, units) for s in other]
        boot_b, boot_o = [], []
        for seeds, draw in draws:
            boot_b.append(_mean([score(base[k], metric, agg, draw) for k in seeds]))
            boot_o.append(_mean([score(other[k], metric, agg, draw) for k in seeds]))
        diffs = [y - x for x, y in zip(boot_b, boot_o)]
        out[metric] = {
            "baseline": _mean(b),
            "other": _mean(o),
            "baseline_per_seed": b,
            "other_per_seed": o,
            "baseline_ci95": _interval(boot_b),
            "other_ci95": _interval(boot_o),
            "diff": _mean([y - x for x, y in zip(b, o)]),
            "ci95": _interval(diffs),
            "units": len(units),
            "seeds": n_seeds,
        }
    return out


def compare_runs(
    runs: dict[str, list[Path]], baseline: str, iters: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """``runs``: name -> run dirs (one per training seed); every other name is compared with ``baseline``."""
    if baseline not in runs:
        raise ConfigError(f"--baseline {baseline!r} is not one of the run names {sorted(runs)}")
    counts = {name: len(dirs) for name, dirs in runs.items()}
    if len(set(counts.values())) != 1:
        raise ConfigError(f"every name needs the same number of runs (one per seed), got {counts}")
    samples = {name: [run_samples(d) for d in dirs] for name, dirs in runs.items()}
    shared = set.intersection(*(set(s) for per_name in samples.values() for s in per_name))
    ref_dir = runs[baseline][0]
    result: dict[str, Any] = {
        "format": COMPARE_FORMAT,
        "baseline": baseline,
        "iters": iters,
        "seed": seed,
        "runs": {n: [str(d) for d in ds] for n, ds in runs.items()},
        "comparisons": {},
    }
    for name in runs:
        if name == baseline:
            continue
        tasks: dict[str, Any] = {}
        for task in sorted(shared):
            aggs = aggregations(task_yaml(ref_dir, task))
            if not aggs:
                continue
            base = [load_task_samples(s[task], task, list(aggs)) for s in samples[baseline]]
            other = [load_task_samples(s[task], task, list(aggs)) for s in samples[name]]
            tasks[suites.canonical_task(task)] = compare_task(
                base, other, aggs, iters, random.Random(f"{seed}:{task}")
            )
        result["comparisons"][name] = tasks
    return result


def table(result: dict[str, Any]) -> str:
    """Plain-text table (x 100): task, metric, each model's value [95% interval], difference [95%
    interval]."""
    base = result["baseline"]
    lines = []

    def cell(value: float, ci: Sequence[float], signed: bool = False) -> str:
        sign = "+" if signed else ""
        return f"{100 * value:{sign}6.1f} [{100 * ci[0]:{sign}.1f}, {100 * ci[1]:{sign}.1f}]"

    for name, tasks in result["comparisons"].items():
        seeds = next((m["seeds"] for t in tasks.values() for m in t.values()), 1)
        lines.append(
            f"{name} vs {base} (x100, mean [paired bootstrap 95% interval] over questions"
            f"{f' and {seeds} training seeds' if seeds > 1 else ''}):"
        )
        lines.append(f"  {'task':<22}{'metric':<22}{base:>22}{name:>22}{'difference':>24}")
        for task, metrics in tasks.items():
            for metric, m in metrics.items():
                lines.append(
                    f"  {task:<22}{metric:<22}{cell(m['baseline'], m['baseline_ci95']):>22}"
                    f"{cell(m['other'], m['other_ci95']):>22}{cell(m['diff'], m['ci95'], True):>24}"
                )
    return "\n".join(lines)


def parse_runs(items: Sequence[str]) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for item in items:
        name, sep, dirs = item.partition("=")
        if not sep or not name or not dirs:
            raise ConfigError(f"--runs {item!r}: use NAME=RUN_DIR[,RUN_DIR...]")
        runs[name] = [Path(d) for d in dirs.split(",") if d]
    if len(runs) < 2:
        raise ConfigError("--runs needs at least two names (a baseline and one to compare with it)")
    return runs


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="paired bootstrap comparison of runs on the same tasks")
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="NAME=RUN[,RUN...]",
        help="eval.lmms run directories per model; several per name are training seeds",
    )
    p.add_argument("--baseline", help="the name the others are compared with (default: the first)")
    p.add_argument("--iters", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--out", type=Path, help="JSON to write")


def run_cli(args: argparse.Namespace) -> int:
    runs = parse_runs(args.runs)
    if args.iters < 100:
        raise ConfigError(f"--iters {args.iters}: use at least 100 resamples")
    result = compare_runs(runs, args.baseline or next(iter(runs)), args.iters, args.seed)
    print(table(result))
    if args.out:
        write_json(args.out, result)
        print(f"comparison -> {args.out}")
    return 0

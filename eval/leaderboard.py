"""``python -m eval.leaderboard``: our results beside the published numbers of the same protocol.

    python -m eval.leaderboard --runs RUN_OR_RESULT... [--baseline NAME...] [--references FILE...|none]
        [--columns auto|toy|real|all] --out DIR [--no-chart]

Inputs (each ``--runs`` item is a file or a directory; a directory stands for its ``results.json``, or else
for every ``*/results.json`` and ``*.json`` result inside it):
- ``eval.lmms`` run summaries (``results.json``, format ``genhancer-lmms-results/1``): one MLLM row per
  LLaVA model directory, its encoder and LLM read from the model's ``provenance.json``;
- ``eval.mmvp_vlm`` RESULT.json files (``scores`` per pattern + ``average``): one encoder row each;
- the published references in ``eval/references/*.yaml`` (source, protocol per column, rows).

Two tables: **encoders** (MMVP-VLM average and per pattern) and **MLLMs** (one column per benchmark
metric), each with our rows beside the published rows that measured the same columns. Values are
percentages (MME: its own score). ``--baseline NAME`` picks a row (exact name, or a unique part of it) and
every other cell of that table shows its difference to the baseline's cell; the encoder table, when no
name matches one of its rows, takes the encoder of the MLLM baseline. A cell whose protocol (mode:
generation vs likelihood, metric, answers: original vs lmms-eval-corrected MMVP, a ``--limit`` subset)
differs from the cell it is compared to -- the baseline's, or else the column's first published value --
is marked with a dagger, and the differences are listed under the table.

Intervals: a results file may carry 95% intervals and they are drawn as whiskers and printed as [lo-hi]:
- RESULT.json (percent, like its scores): ``"ci95": {"average": [lo, hi], "<pattern>": [lo, hi]}``, or
  ``"average_ci95": [lo, hi]`` and ``"scores_ci95": {"<pattern>": [lo, hi]}``, or ``eval.mmvp_vlm``'s own
  ``"intervals": {"average": [lo, hi], "scores": {"<pattern>": [lo, hi]}}``;
- results.json (0-1, like its scores): ``scores[task]["<metric>_ci95"]: [lo, hi]``, or
  ``"ci95": {task: {metric: [lo, hi]}}``, or ``scores[task]["<metric>_stderr"]`` (taken as +-1.96 stderr).
An interval may also be written ``{"lo": .., "hi": ..}`` (or low/high, lower/upper).

Outputs in DIR: leaderboard.md (also printed; every table at most MAX_MD_COLUMNS columns, wider ones
split at benchmark boundaries), leaderboard.csv (one line per cell), leaderboard.json, leaderboard.png
(one panel per column that holds data, grouped by benchmark).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.lmms.modeldir import describe_model_dir
from genhancer.utils.cli import entry_point
from genhancer.utils.config import load_yaml
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import atomic_write_text, read_json, save_figure, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance

LOG = get_logger("eval.leaderboard")
REFERENCES_DIR = Path(__file__).resolve().parent / "references"
LMMS_FORMAT = "genhancer-lmms-results/1"
MARK = "†"
COMPARED_KEYS = ("mode", "metric", "answers", "subset", "data")
MAX_MD_COLUMNS = 12  # model + source + at most 10 value columns per markdown table
META_COLUMNS = ("model", "source")
TABLES = {
    "encoders": "Encoders: MMVP-VLM (pair accuracy, %)",
    "mllms": "MLLMs: one column per benchmark metric (%; MME: score)",
}
MMVP_VLM_PATTERNS = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)
STDERR_Z = 1.96  # a stderr becomes a normal-approximation 95% interval


@dataclass(frozen=True)
class Column:
    id: str
    label: str  # markdown header (unique)
    group: str  # the benchmark: panels of one group share a band of the chart
    short: str  # panel title inside its group
    family: str  # "real" | "toy" | "encoder"
    task: str | None = None  # lmms task (canonical name) the value comes from
    metric: str | None = None
    required: bool = False  # a results file that has the task must have this metric
    protocol: dict[str, str] = field(default_factory=dict)  # what our lmms-eval run measures
    percent: bool = True  # False: a score on its own scale (MME)

    @property
    def table(self) -> str:
        return "encoders" if self.family == "encoder" else "mllms"


def _real(cid, label, group, short, task=None, metric=None, required=False, metric_name="accuracy", **kw):
    return Column(cid, label, group, short, "real", task, metric, required, {"metric": metric_name}, **kw)


def _toy(cid, label, group, short, task, metric, required=False, metric_name="accuracy"):
    return Column(cid, label, group, short, "toy", task, metric, required, {"metric": metric_name})


_MMVP_LMMS = {"metric": "pair accuracy", "answers": "lmms-eval corrected (2 pairs swapped back)"}
_VLM = {"mode": "image-text similarity"}
COLUMNS: tuple[Column, ...] = (
    Column("mmvp", "MMVP", "MMVP", "pair accuracy", "real", "mmvp", "mmvp_pair_accuracy", True, _MMVP_LMMS),
    _real("naturalbench_acc", "NB Acc", "NaturalBench", "Acc", "naturalbench", "naturalbench_ACC", True),
    _real(
        "naturalbench_gacc",
        "NB G-Acc",
        "NaturalBench",
        "G-Acc",
        "naturalbench",
        "naturalbench_G_ACC",
        metric_name="group accuracy",
    ),
    _real("cvbench", "CV-Bench", "CV-Bench", "overall", "cv_bench", "cv_bench_acc", True),
    _real("cvbench_2d_ade", "CVB 2D ADE", "CV-Bench", "2D ADE20K", "cv_bench", "cv_bench_ade20k_acc"),
    _real("cvbench_2d_coco", "CVB 2D COCO", "CV-Bench", "2D COCO", "cv_bench", "cv_bench_coco_acc"),
    _real("cvbench_3d", "CVB 3D", "CV-Bench", "3D", "cv_bench", "cv_bench_3d_acc"),
    _real(
        "pope_f1_random",
        "POPE F1 rand",
        "POPE",
        "F1 random",
        "pope_random",
        "pope_f1_score",
        True,
        metric_name="F1",
    ),
    _real(
        "pope_f1_popular",
        "POPE F1 pop",
        "POPE",
        "F1 popular",
        "pope_pop",
        "pope_f1_score",
        True,
        metric_name="F1",
    ),
    _real(
        "pope_f1_adversarial",
        "POPE F1 adv",
        "POPE",
        "F1 adversarial",
        "pope_adv",
        "pope_f1_score",
        True,
        metric_name="F1",
    ),
    _real(
        "pope_f1_avg",
        "POPE F1 avg",
        "POPE",
        "F1 mean of 3",
        metric_name="F1 (mean of random/popular/adversarial)",
    ),
    _real("sqa_img", "SQA-IMG", "ScienceQA-IMG", "accuracy", "scienceqa_img", "exact_match", True),
    _real(
        "hallusionbench",
        "HallusionB",
        "HallusionBench",
        "aAcc",
        "hallusion_bench_image",
        "aAcc",
        metric_name="aAcc",
    ),
    _real("gqa", "GQA", "GQA", "accuracy"),
    _real("textvqa", "TextVQA", "TextVQA", "accuracy"),
    _real("mmbench", "MMBench", "MMBench", "accuracy"),
    _real("mme", "MME", "MME", "perception score", metric_name="perception score", percent=False),
    _toy(
        "toy_mmvp",
        "toy-MMVP",
        "toy-MMVP",
        "generation",
        "toy_mmvp",
        "mmvp_pair_accuracy",
        True,
        "pair accuracy",
    ),
    _toy(
        "toy_mmvp_ll",
        "toy-MMVP (LL)",
        "toy-MMVP",
        "likelihood",
        "toy_mmvp_ll",
        "mmvp_pair_accuracy",
        True,
        "pair accuracy",
    ),
    _toy(
        "toy_pope_f1_random",
        "toy-POPE F1 rand",
        "toy-POPE",
        "F1 random",
        "toy_pope_random",
        "pope_f1_score",
        True,
        "F1",
    ),
    _toy(
        "toy_pope_f1_popular",
        "toy-POPE F1 pop",
        "toy-POPE",
        "F1 popular",
        "toy_pope_popular",
        "pope_f1_score",
        True,
        "F1",
    ),
    _toy(
        "toy_pope_f1_adversarial",
        "toy-POPE F1 adv",
        "toy-POPE",
        "F1 adversarial",
        "toy_pope_adversarial",
        "pope_f1_score",
        True,
        "F1",
    ),
    _toy("toy_cvbench", "toy-CVB", "toy-CV-Bench", "overall", "toy_cv_bench", "cv_bench_acc", True),
    _toy("toy_cvbench_count", "toy-CVB count", "toy-CV-Bench", "count", "toy_cv_bench", "cv_bench_count_acc"),
    _toy(
        "toy_cvbench_relation",
        "toy-CVB relation",
        "toy-CV-Bench",
        "relation",
        "toy_cv_bench",
        "cv_bench_relation_acc",
    ),
    _toy("toy_cvbench_size", "toy-CVB size", "toy-CV-Bench", "size", "toy_cv_bench", "cv_bench_size_acc"),
    Column(
        "mmvp_vlm",
        "average",
        "MMVP-VLM",
        "average",
        "encoder",
        protocol={"metric": "mean of 9 pattern pair accuracies", **_VLM},
    ),
    *(
        Column(
            f"mmvp_vlm:{p}",
            p.split()[0],
            "MMVP-VLM per pattern",
            p,
            "encoder",
            protocol={"metric": "pair accuracy", **_VLM},
        )
        for p in MMVP_VLM_PATTERNS
    ),
)
COLUMN_BY_ID = {c.id: c for c in COLUMNS}
KNOWN_LMMS_TASKS = {c.task for c in COLUMNS if c.task}


@dataclass
class Cell:
    value: float
    protocol: dict[str, str]
    source: str
    ci: tuple[float, float] | None = None  # 95% interval on the value's scale
    ci_kind: str | None = None  # how the interval was given ("ci95" or "1.96 stderr")


@dataclass
class Row:
    name: str
    kind: str  # llava | encoder
    origin: str  # "ours" or the reference's source
    short: str = "ours"  # the source column of the tables
    encoder: str | None = None
    llm: str | None = None
    path: str | None = None
    note: str | None = None
    data: str | None = None  # what our encoder row was measured on (benchmark folder, pairs)
    cells: dict[str, Cell] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- intervals
def parse_interval(raw: Any, where: str) -> tuple[float, float]:
    """``[lo, hi]`` or ``{"lo", "hi"}`` (or low/high, lower/upper) -> (lo, hi); anything else: DataError."""
    pair: Any = raw
    if isinstance(raw, dict):
        keys = next(
            (k for k in (("lo", "hi"), ("low", "high"), ("lower", "upper")) if all(x in raw for x in k)), None
        )
        pair = [raw[keys[0]], raw[keys[1]]] if keys else None
    ok = (
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)
    )
    if not ok or pair[0] > pair[1]:
        raise DataError(
            f"{where}: an interval must be [lo, hi] with lo <= hi (or {{'lo': .., 'hi': ..}}), got {raw!r}"
        )
    return float(pair[0]), float(pair[1])


def _checked_interval(raw: Any, value: float, where: str) -> tuple[float, float]:
    lo, hi = parse_interval(raw, where)
    slack = 1e-6 * max(1.0, abs(value))
    if not lo - slack <= value <= hi + slack:  # most often a scale mix-up (0-1 vs percent)
        raise DataError(
            f"{where}: interval [{lo:g}, {hi:g}] does not contain the value {value:g}; write it on "
            "the value's scale (0-1 for eval.lmms metrics, percent for MMVP-VLM)"
        )
    return lo, hi


def _lmms_interval(
    summary: dict[str, Any], task: str, metric: str, where: str
) -> tuple[tuple[float, float] | None, str | None]:
    """A 0-1 interval for ``scores[task][metric]`` from the fields listed in the module docstring."""
    metrics = summary["scores"][task]
    value = float(metrics[metric])
    top = summary.get("ci95")
    if f"{metric}_ci95" in metrics:
        return _checked_interval(
            metrics[f"{metric}_ci95"], value, f"{where}: scores.{task}.{metric}_ci95"
        ), "ci95"
    if isinstance(top, dict) and isinstance(top.get(task), dict) and metric in top[task]:
        return _checked_interval(top[task][metric], value, f"{where}: ci95.{task}.{metric}"), "ci95"
    stderr = metrics.get(f"{metric}_stderr")
    if isinstance(stderr, (int, float)) and not isinstance(stderr, bool) and stderr == stderr and stderr > 0:
        return (value - STDERR_Z * stderr, value + STDERR_Z * stderr), f"{STDERR_Z} stderr"
    return None, None


def _mmvp_vlm_intervals(result: dict[str, Any], where: Path) -> dict[str, tuple[float, float]]:
    """Pattern (or "average") -> percent interval, from ``intervals``, ``ci95`` or ``average_ci95`` +
    ``scores_ci95``."""
    raw: dict[str, Any] = {}
    own = result.get("intervals")  # eval.mmvp_vlm's bootstrap intervals
    if isinstance(own, dict):
        raw.update(own.get("scores") or {})
        if "average" in own:
            raw["average"] = own["average"]
    if isinstance(result.get("ci95"), dict):
        raw.update(result["ci95"])
    if "average_ci95" in result:
        raw["average"] = result["average_ci95"]
    if isinstance(result.get("scores_ci95"), dict):
        raw.update(result["scores_ci95"])
    out = {}
    for key, interval in raw.items():
        value = result["average"] if key == "average" else result["scores"].get(key)
        if value is None:
            raise DataError(
                f"{where}: interval for {key!r}, which has no score (patterns: {', '.join(result['scores'])})"
            )
        out[key] = _checked_interval(interval, float(value), f"{where}: ci95 of {key!r}")
    return out


# ------------------------------------------------------------------------------------------- inputs
def _display_name(path: str | None) -> str:
    if not path:
        return "?"
    p = Path(path)
    # runs/toy/llava-baseline/finetune/model -> "llava-baseline"; runs/toy/encoder -> "toy/encoder"
    while p.name in {"final", "export", "model", "hf", "latest", "finetune", "pretrain"} and p.parent.name:
        p = p.parent
    return f"{p.parent.name}/{p.name}" if p.name in {"llava", "encoder"} and p.parent.name else p.name


def _lmms_cell(summary: dict[str, Any], task: str, col: Column, where: Path) -> Cell:
    limit = summary.get("limit")
    proto = dict(col.protocol)
    proto["mode"] = ((summary.get("protocol") or {}).get(task) or {}).get("mode", "generation")
    proto["subset"] = f"first {limit} per task (--limit)" if limit else "full"
    proto["harness"] = "lmms-eval"
    ci, kind = _lmms_interval(summary, task, col.metric, str(where))
    scaled = (100.0 * ci[0], 100.0 * ci[1]) if ci else None
    return Cell(100.0 * float(summary["scores"][task][col.metric]), proto, str(where), scaled, kind)


def _rows_from_lmms(summary: dict[str, Any], where: Path) -> Row:
    model = summary.get("model") or {}
    scores = summary.get("scores")
    if not isinstance(scores, dict):
        raise DataError(f"{where}: no 'scores' mapping in an eval.lmms results file")
    if model.get("path") and Path(model["path"]).is_dir():  # the model dir's provenance.json is the truth
        fresh = describe_model_dir(model["path"])
        model = {**model, **{k: v for k, v in fresh.items() if v is not None}}
    row = Row(
        name=_display_name(model.get("path")),
        kind="llava",
        origin="ours",
        encoder=model.get("encoder"),
        llm=model.get("llm"),
        path=model.get("path"),
    )
    for task, metrics in scores.items():
        if task not in KNOWN_LMMS_TASKS:
            LOG.warning("%s: task %r has no leaderboard column; left out", where, task)
            continue
        for col in (c for c in COLUMNS if c.task == task):
            if col.metric not in metrics:
                if col.required:
                    raise DataError(
                        f"{where}: task {task!r} has no metric {col.metric!r} "
                        f"(it has: {', '.join(metrics) or 'none'}); was it written by another version of "
                        "eval.lmms? Re-run `python -m eval.lmms run`."
                    )
                continue
            row.cells[col.id] = _lmms_cell(summary, task, col, where)
    f1 = [
        row.cells[c].value
        for c in ("pope_f1_random", "pope_f1_popular", "pope_f1_adversarial")
        if c in row.cells
    ]
    if len(f1) == 3:
        base = row.cells["pope_f1_random"].protocol
        row.cells["pope_f1_avg"] = Cell(
            sum(f1) / 3, {**base, **COLUMN_BY_ID["pope_f1_avg"].protocol}, str(where)
        )
    return row


def _rows_from_mmvp_vlm(result: dict[str, Any], where: Path) -> Row:
    model_dir = result.get("model_dir")
    prov = result.get("provenance") or (
        read_provenance(model_dir) if model_dir and Path(model_dir).is_dir() else None
    )
    row = Row(name=_display_name(model_dir), kind="encoder", origin="ours", encoder=model_dir, path=model_dir)
    if prov and prov.get("parents"):
        first = prov["parents"][0]
        row.note = f"from {first.get('path')}" if isinstance(first, dict) else None
    base = {"harness": "eval.mmvp_vlm", "subset": "full"}
    if result.get("bench_dir") or result.get("num_pairs"):
        row.data = base["data"] = f"{result.get('bench_dir') or '?'} ({result.get('num_pairs', '?')} pairs)"
    try:
        intervals = _mmvp_vlm_intervals(result, where)
        avg = COLUMN_BY_ID["mmvp_vlm"]
        row.cells[avg.id] = Cell(
            float(result["average"]),
            {**base, **avg.protocol},
            str(where),
            intervals.get("average"),
            "ci95" if "average" in intervals else None,
        )
        for pattern, value in result["scores"].items():
            col = COLUMN_BY_ID.get(f"mmvp_vlm:{pattern}")
            if col is not None:
                row.cells[col.id] = Cell(
                    float(value),
                    {**base, **col.protocol},
                    str(where),
                    intervals.get(pattern),
                    "ci95" if pattern in intervals else None,
                )
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: MMVP-VLM scores must be numbers ({e})") from None
    return row


def load_result(path: Path) -> Row:
    """One of our results files -> one row; anything else is a DataError saying what the file looks like."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a results file (the top level is not a JSON object)")
    fmt = data.get("format")
    if fmt == LMMS_FORMAT:
        return _rows_from_lmms(data, path)
    if isinstance(fmt, str) and fmt.startswith("genhancer-lmms-results/"):
        raise DataError(
            f"{path}: results format {fmt!r} is not supported by this version (expects {LMMS_FORMAT}); "
            "re-run `python -m eval.lmms run`"
        )
    if data.get("benchmark") == "mmvp_vlm" or ("scores" in data and "average" in data):
        if not isinstance(data.get("scores"), dict) or "average" not in data:
            raise DataError(f"{path}: an MMVP-VLM result needs 'scores' (per pattern) and 'average'")
        return _rows_from_mmvp_vlm(data, path)
    if "lmms_eval_version" in data and "results" in data:
        raise DataError(
            f"{path}: this is lmms-eval's raw results file; pass the run directory (or its "
            "results.json) written by `python -m eval.lmms run`, which records the model and protocol"
        )
    raise DataError(
        f"{path}: not a results file of eval.lmms (format {LMMS_FORMAT}) nor an eval.mmvp_vlm "
        f"RESULT.json (keys found: {', '.join(sorted(data)[:8]) or 'none'})"
    )


def collect_result_files(items: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            if (p / "results.json").is_file():
                files.append(p / "results.json")
                continue
            found = sorted(p.glob("*/results.json")) + sorted(x for x in p.glob("*.json"))
            if not found:
                raise DataError(f"--runs {p}: no results.json (nor */results.json, *.json) inside")
            files.extend(found)
        else:
            raise DataError(f"--runs {p}: no such file or directory")
    return files


def _reference_row(r: Any, data: dict[str, Any], where: str) -> Row:
    if not isinstance(r, dict) or "name" not in r or not isinstance(r.get("scores"), dict):
        raise ConfigError(f"{where}: each row needs 'name' and a 'scores' mapping")
    row = Row(
        name=str(r["name"]),
        kind=str(r.get("kind", "llava")),
        origin=str(data["source"]),
        short=str(data.get("short", data["source"])),
        encoder=r.get("encoder"),
        llm=r.get("llm"),
        note=r.get("note"),
    )
    file_proto = data.get("protocol") or {}
    for col_id, value in r["scores"].items():
        if col_id not in COLUMN_BY_ID:
            raise ConfigError(f"{where}: unknown column {col_id!r}; known: {', '.join(COLUMN_BY_ID)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: score {col_id}={value!r} is not a number")
        proto = {
            "harness": str(data.get("harness", "paper")),
            "subset": "full",
            **{k: str(v) for k, v in (file_proto.get(col_id) or {}).items()},
            **{k: str(v) for k, v in ((r.get("protocol") or {}).get(col_id) or {}).items()},
        }
        row.cells[col_id] = Cell(float(value), proto, f"{data['source']} ({where.split(',')[0]})")
    return row


def load_references(paths: Sequence[str | Path]) -> list[Row]:
    rows = []
    for path in paths:
        data = load_yaml(path)
        for key in ("source", "rows"):
            if key not in data:
                raise ConfigError(f"{path}: reference file needs '{key}'")
        for col_id in data.get("protocol") or {}:
            if col_id not in COLUMN_BY_ID:
                raise ConfigError(
                    f"{path}: protocol for unknown column {col_id!r}; known: {', '.join(COLUMN_BY_ID)}"
                )
        rows += [_reference_row(r, data, f"{path}, rows[{i}]") for i, r in enumerate(data["rows"])]
    return rows


# ------------------------------------------------------------------------------------------- tables
def protocol_diff(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {k: (a[k], b[k]) for k in COMPARED_KEYS if k in a and k in b and a[k] != b[k]}


def merge_rows(rows: list[Row]) -> list[Row]:
    """Our rows for the same model path (e.g. a toy run and a mirror run) become one row."""
    out: list[Row] = []
    by_path: dict[tuple[str, str], Row] = {}
    for r in rows:
        key = (r.kind, r.path or "")
        if r.origin == "ours" and r.path and key in by_path:
            by_path[key].cells.update(r.cells)
            continue
        if r.origin == "ours" and r.path:
            by_path[key] = r
        out.append(r)
    names: dict[str, int] = {}
    for r in out:  # distinct names for distinct models
        names[r.name] = names.get(r.name, 0) + 1
        if names[r.name] > 1:
            r.name = f"{r.name} ({names[r.name]})"
    return out


def choose_columns(rows: list[Row], which: str) -> list[Column]:
    if which not in ("auto", "toy", "real", "all"):
        raise ConfigError(f"--columns {which!r}: use auto, toy, real or all")
    have = {cid for r in rows for cid in r.cells}
    if which == "auto":
        ours = {cid for r in rows if r.origin == "ours" for cid in r.cells}
        keep = ours or have
        return [c for c in COLUMNS if c.id in keep]
    fams = {"toy": {"toy", "encoder"}, "real": {"real", "encoder"}, "all": {"real", "toy", "encoder"}}[which]
    return [c for c in COLUMNS if c.family in fams and c.id in have]


def _match(name: str, rows: list[Row]) -> list[Row]:
    exact = [r for r in rows if r.name == name]
    return exact or [r for r in rows if name.lower() in r.name.lower()]


def _same_dir(a: str | None, b: str | None) -> bool:
    return bool(a and b) and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def resolve_baselines(names: Sequence[str], shown: dict[str, list[Row]]) -> dict[str, tuple[Row, str]]:
    """Table -> (baseline row, why). Each name must pick exactly one row of at least one table; the
    encoder table falls back to the encoder of the MLLM baseline when that encoder has a row."""
    chosen: dict[str, tuple[Row, str]] = {}
    everyone = [r for rows in shown.values() for r in rows]
    for name in names:
        hits = {t: _match(name, rows) for t, rows in shown.items()}
        many = {t: m for t, m in hits.items() if len(m) > 1}
        if many:
            t, m = next(iter(many.items()))
            raise ConfigError(
                f"--baseline {name!r} matches {len(m)} rows of the {t} table "
                f"({', '.join(r.name for r in m)}); give more of the name"
            )
        found = {t: m[0] for t, m in hits.items() if m}
        if not found:
            raise ConfigError(
                f"--baseline {name!r} matches no row; rows: {', '.join(r.name for r in everyone)}"
            )
        for t, row in found.items():
            if t in chosen:
                raise ConfigError(
                    f"--baseline: {chosen[t][0].name!r} and {row.name!r} are both rows of the {t} "
                    "table; give one baseline per table"
                )
            chosen[t] = (row, f"--baseline {name}")
    mllm = chosen.get("mllms")
    if "encoders" not in chosen and mllm is not None:
        enc = [r for r in shown.get("encoders", []) if _same_dir(r.path, mllm[0].encoder)]
        if len(enc) == 1:
            chosen["encoders"] = (enc[0], f"the encoder of the MLLM baseline `{mllm[0].name}`")
    return chosen


def _cell_json(cell: Cell, base_row: Row | None, compare_to: Cell | None, is_base: bool) -> dict[str, Any]:
    diff = protocol_diff(cell.protocol, compare_to.protocol) if compare_to is not None else {}
    delta = None
    if base_row is not None and compare_to is not None and not is_base:
        delta = cell.value - compare_to.value
    return {
        "value": cell.value,
        "delta": delta,
        "ci95": list(cell.ci) if cell.ci else None,
        "ci_kind": cell.ci_kind,
        "protocol": cell.protocol,
        "protocol_differs": {k: {"this": a, "compared": b} for k, (a, b) in diff.items()},
        "source": cell.source,
    }


def _table_json(
    key: str, rows: list[Row], columns: list[Column], base: tuple[Row, str] | None
) -> dict[str, Any]:
    base_row = base[0] if base else None
    first_ref: dict[str, Cell] = {}
    for r in rows:
        for cid, cell in r.cells.items():
            if r.origin != "ours" and cid not in first_ref:
                first_ref[cid] = cell
    out_rows = []
    for r in rows:
        cells: dict[str, Any] = {}
        for col in columns:
            cell = r.cells.get(col.id)
            compare_to = base_row.cells.get(col.id) if base_row is not None else first_ref.get(col.id)
            cells[col.id] = None if cell is None else _cell_json(cell, base_row, compare_to, r is base_row)
        out_rows.append(
            {
                "name": r.name,
                "kind": r.kind,
                "origin": r.origin,
                "short": r.short,
                "encoder": r.encoder,
                "llm": r.llm,
                "path": r.path,
                "note": r.note,
                "data": r.data,
                "is_baseline": r is base_row,
                "cells": cells,
            }
        )
    return {
        "key": key,
        "title": TABLES[key],
        "columns": [
            {
                "id": c.id,
                "label": c.label,
                "group": c.group,
                "short": c.short,
                "family": c.family,
                "percent": c.percent,
            }
            for c in columns
        ],
        "baseline": base_row.name if base_row else None,
        "baseline_reason": base[1] if base else None,
        "rows": out_rows,
    }


def build_tables(rows: list[Row], columns: list[Column], baselines: Sequence[str] = ()) -> dict[str, Any]:
    """The encoder and MLLM tables (each: columns with data, rows with a value in them, baseline, cells)."""
    by_table = {t: [c for c in columns if c.table == t] for t in TABLES}
    shown = {t: [r for r in rows if any(c.id in r.cells for c in cols)] for t, cols in by_table.items()}
    shown = {t: rs for t, rs in shown.items() if rs}
    chosen = resolve_baselines(baselines, shown)
    tables = {t: _table_json(t, shown[t], by_table[t], chosen.get(t)) for t in TABLES if t in shown}
    return {
        "tables": tables,
        "baseline": {t: tb["baseline"] for t, tb in tables.items()},
        "mark": MARK,
        "compared_protocol_keys": list(COMPARED_KEYS),
    }


# ------------------------------------------------------------------------------------------- markdown
def _fmt(cell: dict[str, Any] | None, percent: bool = True) -> str:
    if cell is None:
        return "–"
    digits = 1 if percent else 0
    s = f"{cell['value']:.{digits}f}"
    if cell["delta"] is not None:
        s += f" ({cell['delta']:+.{digits}f})"
    if cell["ci95"]:
        lo, hi = cell["ci95"]
        s += f" [{lo:.{digits}f}–{hi:.{digits}f}]"
    if cell["protocol_differs"]:
        s += MARK
    return s


def split_columns(
    columns: list[dict[str, Any]], width: int = MAX_MD_COLUMNS - len(META_COLUMNS)
) -> list[list[dict]]:
    """Chunks of at most ``width`` columns, cut between benchmark groups where possible."""
    groups: list[list[dict]] = []
    for c in columns:
        if groups and groups[-1][0]["group"] == c["group"]:
            groups[-1].append(c)
        else:
            groups.append([c])
    chunks: list[list[dict]] = [[]]
    for g in groups:
        if len(chunks[-1]) + len(g) > width and chunks[-1]:
            chunks.append([])
        while len(g) > width:  # one benchmark wider than a table: cut it
            chunks[-1].extend(g[:width])
            g = g[width:]
            chunks.append([])
        chunks[-1].extend(g)
    return [c for c in chunks if c]


def _md_table(table: dict[str, Any], cols: list[dict[str, Any]]) -> list[str]:
    head = [*META_COLUMNS, *(c["label"] for c in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        if not any(r["cells"][c["id"]] for c in cols):
            continue
        name = f"**{r['name']}** (baseline)" if r["is_baseline"] else r["name"]
        lines.append(
            "| "
            + " | ".join([name, r["short"], *(_fmt(r["cells"][c["id"]], c["percent"]) for c in cols)])
            + " |"
        )
    return lines


def _md_legend(table: dict[str, Any]) -> list[str]:
    out = []
    if table["baseline"]:
        why = "" if table["baseline_reason"].startswith("--baseline") else f" ({table['baseline_reason']})"
        out.append(f"Deltas (in parentheses) are against **{table['baseline']}**{why}.")
    if any(c and c["ci95"] for r in table["rows"] for c in r["cells"].values()):
        out.append("[lo–hi]: the 95% interval our results file gives (drawn as whiskers in the chart).")
    for r in (r for r in table["rows"] if r["origin"] == "ours"):
        bits = [
            f"`{r['path']}`" if r["path"] else None,
            f"encoder `{_display_name(r['encoder'])}`" if r["encoder"] and r["kind"] == "llava" else None,
            f"LLM `{_display_name(r['llm'])}`" if r["llm"] else None,
            f"data `{r['data']}`" if r["data"] else None,
            r["note"],
        ]
        out.append(f"- **{r['name']}** (ours): " + "; ".join(b for b in bits if b))
    sources = dict.fromkeys((r["short"], r["origin"]) for r in table["rows"] if r["origin"] != "ours")
    out += [f"- {short}: {origin}" if short != origin else f"- {origin}" for short, origin in sources]
    out += [f"- {r['name']}: {r['note']}" for r in table["rows"] if r["origin"] != "ours" and r["note"]]
    out += _md_protocol_notes(table)
    return out


def _md_protocol_notes(table: dict[str, Any]) -> list[str]:
    """One line per (column, difference), naming every row it applies to."""
    labels = {c["id"]: c["label"] for c in table["columns"]}
    notes: dict[tuple[str, str], list[str]] = {}
    for r in table["rows"]:
        for cid, cell in r["cells"].items():
            if cell and cell["protocol_differs"]:
                what = "; ".join(
                    f"{k}: {v['this']} vs {v['compared']}" for k, v in cell["protocol_differs"].items()
                )
                notes.setdefault((labels[cid], what), []).append(r["name"])
    if not notes:
        return []
    return [
        "",
        f"{MARK} protocol differs from the cell it is compared to:",
        *(f"- {MARK} {label} ({what}): {', '.join(names)}" for (label, what), names in notes.items()),
    ]


def to_markdown(board: dict[str, Any]) -> str:
    parts = []
    for table in board["tables"].values():
        chunks = split_columns(table["columns"])
        for i, cols in enumerate(chunks):
            part = (
                f" ({i + 1}/{len(chunks)}: {', '.join(dict.fromkeys(c['group'] for c in cols))})"
                if len(chunks) > 1
                else ""
            )
            parts += [f"## {table['title']}{part}", "", *_md_table(table, cols), ""]
        parts += [*_md_legend(table), ""]
    if not parts:
        parts = ["No results with a leaderboard column.", ""]
    return "\n".join(parts)


def to_csv(board: dict[str, Any]) -> str:
    """One line per cell (tidy): table, model, source, column, value, delta, interval, protocol mismatch."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "table",
            "model",
            "kind",
            "origin",
            "encoder",
            "llm",
            "is_baseline",
            "column",
            "label",
            "value",
            "delta",
            "ci95_lo",
            "ci95_hi",
            "protocol_differs",
        ]
    )
    for key, table in board["tables"].items():
        labels = {c["id"]: c["label"] for c in table["columns"]}
        for r in table["rows"]:
            for cid, c in r["cells"].items():
                if c is None:
                    continue
                lo, hi = c["ci95"] or ("", "")
                w.writerow(
                    [
                        key,
                        r["name"],
                        r["kind"],
                        r["origin"],
                        r["encoder"] or "",
                        r["llm"] or "",
                        int(r["is_baseline"]),
                        cid,
                        labels[cid],
                        f"{c['value']:.4f}",
                        "" if c["delta"] is None else f"{c['delta']:.4f}",
                        lo if lo == "" else f"{lo:.4f}",
                        hi if hi == "" else f"{hi:.4f}",
                        ";".join(c["protocol_differs"]),
                    ]
                )
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- chart
@dataclass
class Panel:
    column: dict[str, Any]
    bars: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (row name, row, cell)


@dataclass
class Band:
    title: str
    panels: list[Panel]
    rows: list[str]  # the y axis shared by the band's panels: rows with a value in any of them


def chart_bands(board: dict[str, Any]) -> list[Band]:
    """Only columns that hold a value become panels, grouped by benchmark into bands."""
    bands: list[Band] = []
    for table in board["tables"].values():
        for col in table["columns"]:
            bars = [(r["name"], r, r["cells"][col["id"]]) for r in table["rows"] if r["cells"].get(col["id"])]
            if not bars:
                continue
            if not bands or bands[-1].title != col["group"]:
                bands.append(Band(col["group"], [], []))
            bands[-1].panels.append(Panel(col, bars))
    for band in bands:
        band.rows = list(dict.fromkeys(name for p in band.panels for name, _, _ in p.bars))
    return bands


PANELS_PER_LINE = 5
COLOURS = {"baseline": "#1f4e79", "ours": "#e67e22", "published": "#a6a6a6"}


def _colour(row: dict[str, Any]) -> str:
    return COLOURS["baseline" if row["is_baseline"] else "ours" if row["origin"] == "ours" else "published"]


def _draw_panel(ax: Any, panel: Panel, rows: list[str], show_names: bool) -> None:
    col = panel.column
    y_of = {name: len(rows) - 1 - i for i, name in enumerate(rows)}  # first row at the top
    top = max(max(c["ci95"][1] if c["ci95"] else c["value"] for _, _, c in panel.bars), 1e-9)
    xmax = 100.0 if col["percent"] else top
    for name, row, cell in panel.bars:
        y = y_of[name]
        ax.barh(y, cell["value"], color=_colour(row), height=0.7)
        right = cell["value"]
        if cell["ci95"]:
            lo, hi = cell["ci95"]
            ax.errorbar(
                cell["value"],
                y,
                xerr=[[cell["value"] - lo], [hi - cell["value"]]],
                fmt="none",
                ecolor="black",
                elinewidth=1.2,
                capsize=3,
            )
            right = hi
        label = f" {cell['value']:.1f}" if col["percent"] else f" {cell['value']:.0f}"
        label += MARK if cell["protocol_differs"] else ""
        ax.text(right + 0.01 * xmax, y, label, va="center", fontsize=9)
    for name in rows:  # a row without a value in this panel says so instead of looking like a 0
        if not any(n == name for n, _, _ in panel.bars):
            ax.text(
                0.01 * xmax, y_of[name], "no value", va="center", fontsize=8, color="#888888", style="italic"
            )
    ax.set_xlim(0, xmax * 1.18)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(range(len(rows)), list(reversed(rows)) if show_names else [""] * len(rows), fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    title = col["short"] if len(col["short"]) <= 36 else col["label"]
    ax.set_title(title, fontsize=10 if len(title) <= 26 else 9)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _figure(board: dict[str, Any]) -> Any:
    """The chart as a matplotlib Figure: one line of at most PANELS_PER_LINE panels per band (or part of a
    band), heights proportional to the number of rows, ours orange, the baseline blue, published grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lines = [
        (b, b.panels[i : i + PANELS_PER_LINE], i == 0)
        for b in chart_bands(board)
        for i in range(0, len(b.panels), PANELS_PER_LINE)
    ]
    if not lines:
        fig = plt.figure(figsize=(6, 1.5))
        fig.text(0.5, 0.5, "no results with a leaderboard column", ha="center", va="center")
        return fig
    heights = [0.75 + 0.3 * len(b.rows) for b, _, _ in lines]
    fig = plt.figure(figsize=(13, sum(heights) + 0.6), layout="constrained")
    subfigs = fig.subfigures(len(lines), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, (band, panels, first) in zip(subfigs, lines):
        # a band wrapped over several lines keeps one panel width on all of them (no empty axes drawn)
        grid = sub.add_gridspec(1, PANELS_PER_LINE if len(band.panels) > PANELS_PER_LINE else len(panels))
        for k, panel in enumerate(panels):
            _draw_panel(sub.add_subplot(grid[0, k]), panel, band.rows, show_names=k == 0)
        if first:
            sub.suptitle(band.title, fontsize=12, fontweight="bold", x=0.01, ha="left")
    base = "; ".join(f"{t}: {name}" for t, name in board["baseline"].items() if name)
    present = {_colour(r) for t in board["tables"].values() for r in t["rows"]}
    handles = [Patch(color=c, label=k) for k, c in COLOURS.items() if c in present]
    fig.legend(handles=handles, loc="outside upper right", ncols=3, fontsize=9, frameon=False)
    fig.suptitle(
        "Leaderboard"
        + (f" (baseline {base})" if base else "")
        + f"; whiskers: 95% intervals; {MARK}: protocol differs",
        fontsize=12,
        x=0.01,
        ha="left",
    )
    return fig


def plot(board: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(board)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- entry point
def make_leaderboard(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    baseline: str | Sequence[str] | None = None,
    references: Sequence[str | Path] | None = None,
    columns: str = "auto",
    chart: bool = True,
) -> dict[str, Any]:
    """Merge results and references into ``out/leaderboard.{md,csv,json,png}``; returns the board dict
    (``tables.encoders`` / ``tables.mllms``, each with columns, rows, cells; plus ``markdown``)."""
    ours = [load_result(p) for p in collect_result_files(runs)]
    refs = load_references(sorted(REFERENCES_DIR.glob("*.yaml")) if references is None else references)
    rows = merge_rows(ours + refs)
    names = [baseline] if isinstance(baseline, str) else list(baseline or [])
    board = build_tables(rows, choose_columns(rows, columns), names)
    out = Path(out)
    md = to_markdown(board)
    atomic_write_text(out / "leaderboard.md", md)
    atomic_write_text(out / "leaderboard.csv", to_csv(board))
    write_json(out / "leaderboard.json", board)
    if chart:
        plot(board, out / "leaderboard.png")
    board["markdown"] = md
    return board


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", nargs="+", required=True, help="eval.lmms run dirs / results.json, MMVP-VLM RESULT.json"
    )
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        help="row name(s) (or a unique part) to compute deltas against; at most one per table",
    )
    parser.add_argument(
        "--references", nargs="+", help="reference YAML files (default: eval/references/*.yaml; 'none')"
    )
    parser.add_argument(
        "--columns", default="auto", help="auto (columns our results have) | toy | real | all"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    args = parser.parse_args(argv)
    refs = args.references
    if refs == ["none"]:
        refs = []
    board = make_leaderboard(
        args.runs,
        args.out,
        baseline=args.baseline,
        references=refs,
        columns=args.columns,
        chart=not args.no_chart,
    )
    print(board["markdown"])
    print(f"leaderboard -> {args.out}/leaderboard.{{md,csv,json{'' if args.no_chart else ',png'}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

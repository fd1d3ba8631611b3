"""``python -m eval.leaderboard``: our results beside the published numbers, in one table.

    python -m eval.leaderboard --runs RUN_OR_RESULT... [--baseline NAME] [--references FILE...|none]
        [--columns auto|toy|real|all] --out DIR

Inputs (each ``--runs`` item is a file or a directory; a directory stands for its ``results.json``, or else
for every ``*/results.json`` and ``*.json`` result inside it):
- ``eval.lmms`` run summaries (``results.json``, format ``genhancer-lmms-results/1``): one row per LLaVA
  model directory, its encoder and LLM read from the model's ``provenance.json``;
- ``eval.mmvp_vlm`` RESULT.json files (``scores`` per pattern + ``average``): one row per encoder;
- the published references in ``eval/references/*.yaml`` (source, protocol per column, rows).

Rows are models, columns benchmarks (values in percent). With ``--baseline NAME`` every cell also shows its
difference to the baseline row's cell of the same column. A cell whose protocol (mode: generation vs
likelihood, metric: F1 vs accuracy, answers: original vs lmms-eval-corrected MMVP, a ``--limit`` subset)
differs from the cell it is compared to -- the baseline's, or else the column's first published value --
is marked with a dagger, and the differences are listed under the table and in the JSON.
Outputs in DIR: leaderboard.md (also printed), leaderboard.csv, leaderboard.json, leaderboard.png.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genhancer.utils.cli import entry_point
from genhancer.utils.config import load_yaml
from genhancer.utils.errors import ConfigError, DataError
from genhancer.utils.fsio import atomic_write_text, read_json, write_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance

LOG = get_logger("eval.leaderboard")
REFERENCES_DIR = Path(__file__).resolve().parent / "references"
LMMS_FORMAT = "genhancer-lmms-results/1"
MARK = "†"
COMPARED_KEYS = ("mode", "metric", "answers", "subset")
MMVP_VLM_PATTERNS = (
    "Orientation and Direction", "Presence of Specific Features", "State and Condition", "Quantity and Count",
    "Positional and Relational Context", "Color and Appearance", "Structural Characteristics", "Texts",
    "Viewpoint and Perspective",
)


@dataclass(frozen=True)
class Column:
    id: str
    label: str
    family: str  # "real" | "toy" | "encoder"
    task: str | None = None  # lmms task (canonical name) the value comes from
    metric: str | None = None
    required: bool = False  # a results file that has the task must have this metric
    protocol: dict[str, str] = field(default_factory=dict)  # what our lmms-eval run measures


_MMVP_LMMS = {"metric": "pair accuracy", "answers": "lmms-eval corrected (2 pairs swapped back)"}
COLUMNS: tuple[Column, ...] = (
    Column("mmvp", "MMVP", "real", "mmvp", "mmvp_pair_accuracy", True, _MMVP_LMMS),
    Column("naturalbench_acc", "NB Acc", "real", "naturalbench", "naturalbench_ACC", True, {"metric": "accuracy"}),
    Column("naturalbench_gacc", "NB G-Acc", "real", "naturalbench", "naturalbench_G_ACC", False,
           {"metric": "group accuracy"}),
    Column("cvbench", "CV-Bench", "real", "cv_bench", "cv_bench_acc", True, {"metric": "accuracy"}),
    Column("cvbench_2d_ade", "CVB 2D ADE", "real", "cv_bench", "cv_bench_ade20k_acc", False, {"metric": "accuracy"}),
    Column("cvbench_2d_coco", "CVB 2D COCO", "real", "cv_bench", "cv_bench_coco_acc", False, {"metric": "accuracy"}),
    Column("cvbench_3d", "CVB 3D", "real", "cv_bench", "cv_bench_3d_acc", False, {"metric": "accuracy"}),
    Column("pope_f1_random", "POPE F1 rand", "real", "pope_random", "pope_f1_score", True, {"metric": "F1"}),
    Column("pope_f1_popular", "POPE F1 pop", "real", "pope_pop", "pope_f1_score", True, {"metric": "F1"}),
    Column("pope_f1_adversarial", "POPE F1 adv", "real", "pope_adv", "pope_f1_score", True, {"metric": "F1"}),
    Column("pope_f1_avg", "POPE F1 avg", "real", None, None, False,
           {"metric": "F1 (mean of random/popular/adversarial)"}),
    Column("sqa_img", "SQA-IMG", "real", "scienceqa_img", "exact_match", True, {"metric": "accuracy"}),
    Column("hallusionbench", "HallusionB", "real", "hallusion_bench_image", "aAcc", False, {"metric": "aAcc"}),
    Column("gqa", "GQA", "real"),
    Column("textvqa", "TextVQA", "real"),
    Column("mme", "MME", "real"),
    Column("mmbench", "MMBench", "real"),
    Column("toy_mmvp", "toy-MMVP", "toy", "toy_mmvp", "mmvp_pair_accuracy", True, {"metric": "pair accuracy"}),
    Column("toy_mmvp_ll", "toy-MMVP (LL)", "toy", "toy_mmvp_ll", "mmvp_pair_accuracy", True,
           {"metric": "pair accuracy"}),
    Column("toy_pope_f1_random", "toy-POPE F1 rand", "toy", "toy_pope_random", "pope_f1_score", True, {"metric": "F1"}),
    Column("toy_pope_f1_popular", "toy-POPE F1 pop", "toy", "toy_pope_popular", "pope_f1_score", True,
           {"metric": "F1"}),
    Column("toy_pope_f1_adversarial", "toy-POPE F1 adv", "toy", "toy_pope_adversarial", "pope_f1_score", True,
           {"metric": "F1"}),
    Column("toy_cvbench", "toy-CVB", "toy", "toy_cv_bench", "cv_bench_acc", True, {"metric": "accuracy"}),
    Column("toy_cvbench_count", "toy-CVB count", "toy", "toy_cv_bench", "cv_bench_count_acc", False,
           {"metric": "accuracy"}),
    Column("toy_cvbench_relation", "toy-CVB relation", "toy", "toy_cv_bench", "cv_bench_relation_acc", False,
           {"metric": "accuracy"}),
    Column("toy_cvbench_size", "toy-CVB size", "toy", "toy_cv_bench", "cv_bench_size_acc", False,
           {"metric": "accuracy"}),
    Column("mmvp_vlm", "MMVP-VLM", "encoder", protocol={"metric": "mean of 9 pattern pair accuracies",
                                                         "mode": "image-text similarity"}),
    *(Column(f"mmvp_vlm:{p}", f"VLM {p.split()[0]}", "encoder",
             protocol={"metric": "pair accuracy", "mode": "image-text similarity"}) for p in MMVP_VLM_PATTERNS),
)
COLUMN_BY_ID = {c.id: c for c in COLUMNS}
KNOWN_LMMS_TASKS = {c.task for c in COLUMNS if c.task}


@dataclass
class Cell:
    value: float
    protocol: dict[str, str]
    source: str


@dataclass
class Row:
    name: str
    kind: str  # llava | encoder
    origin: str  # "ours" or the reference's source
    encoder: str | None = None
    llm: str | None = None
    path: str | None = None
    note: str | None = None
    cells: dict[str, Cell] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- inputs
def _display_name(path: str | None) -> str:
    if not path:
        return "?"
    p = Path(path)
    # runs/toy/llava-baseline/finetune/model -> "llava-baseline"; runs/toy/encoder -> "toy/encoder"
    while p.name in {"final", "export", "model", "hf", "latest", "finetune", "pretrain"} and p.parent.name:
        p = p.parent
    return f"{p.parent.name}/{p.name}" if p.name in {"llava", "encoder"} and p.parent.name else p.name


def _rows_from_lmms(summary: dict[str, Any], where: Path) -> Row:
    model = summary.get("model") or {}
    scores = summary.get("scores")
    if not isinstance(scores, dict):
        raise DataError(f"{where}: no 'scores' mapping in an eval.lmms results file")
    limit = summary.get("limit")
    if model.get("path") and Path(model["path"]).is_dir():  # the model dir's provenance.json is the truth
        from eval.lmms.modeldir import describe_model_dir

        fresh = describe_model_dir(model["path"])
        model = {**model, **{k: v for k, v in fresh.items() if v is not None}}
    row = Row(name=_display_name(model.get("path")), kind="llava", origin="ours", encoder=model.get("encoder"),
              llm=model.get("llm"), path=model.get("path"))
    protocols = summary.get("protocol") or {}
    for task, metrics in scores.items():
        if task not in KNOWN_LMMS_TASKS:
            LOG.warning("%s: task %r has no leaderboard column; left out", where, task)
            continue
        for col in (c for c in COLUMNS if c.task == task):
            if col.metric not in metrics:
                if col.required:
                    raise DataError(
                        f"{where}: task {task!r} has no metric {col.metric!r} (it has: {', '.join(metrics) or 'none'}); "
                        "was it written by another version of eval.lmms? Re-run `python -m eval.lmms run`."
                    )
                continue
            proto = dict(col.protocol)
            proto["mode"] = (protocols.get(task) or {}).get("mode", "generation")
            proto["subset"] = f"first {limit} per task (--limit)" if limit else "full"
            proto["harness"] = "lmms-eval"
            row.cells[col.id] = Cell(100.0 * float(metrics[col.metric]), proto, str(where))
    f1 = [row.cells[c].value for c in ("pope_f1_random", "pope_f1_popular", "pope_f1_adversarial") if c in row.cells]
    if len(f1) == 3:
        base = row.cells["pope_f1_random"].protocol
        row.cells["pope_f1_avg"] = Cell(sum(f1) / 3, {**base, **COLUMN_BY_ID["pope_f1_avg"].protocol}, str(where))
    return row


def _rows_from_mmvp_vlm(result: dict[str, Any], where: Path) -> Row:
    model_dir = result.get("model_dir")
    prov = result.get("provenance") or (read_provenance(model_dir) if model_dir and Path(model_dir).is_dir() else None)
    row = Row(name=_display_name(model_dir), kind="encoder", origin="ours", encoder=model_dir, path=model_dir)
    if prov and prov.get("parents"):
        first = prov["parents"][0]
        row.note = f"from {first.get('path')}" if isinstance(first, dict) else None
    base = {"harness": "eval.mmvp_vlm", "subset": "full"}
    try:
        row.cells["mmvp_vlm"] = Cell(float(result["average"]), {**base, **COLUMN_BY_ID["mmvp_vlm"].protocol}, str(where))
        for pattern, value in result["scores"].items():
            cid = f"mmvp_vlm:{pattern}"
            if cid in COLUMN_BY_ID:
                row.cells[cid] = Cell(float(value), {**base, **COLUMN_BY_ID[cid].protocol}, str(where))
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
        raise DataError(f"{path}: results format {fmt!r} is not supported by this version (expects {LMMS_FORMAT}); "
                        "re-run `python -m eval.lmms run`")
    if data.get("benchmark") == "mmvp_vlm" or ("scores" in data and "average" in data):
        if not isinstance(data.get("scores"), dict) or "average" not in data:
            raise DataError(f"{path}: an MMVP-VLM result needs 'scores' (per pattern) and 'average'")
        return _rows_from_mmvp_vlm(data, path)
    if "lmms_eval_version" in data and "results" in data:
        raise DataError(f"{path}: this is lmms-eval's raw results file; pass the run directory (or its "
                        "results.json) written by `python -m eval.lmms run`, which records the model and protocol")
    raise DataError(f"{path}: not a results file of eval.lmms (format {LMMS_FORMAT}) nor an eval.mmvp_vlm "
                    f"RESULT.json (keys found: {', '.join(sorted(data)[:8]) or 'none'})")


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


def load_references(paths: Sequence[str | Path]) -> list[Row]:
    rows = []
    for path in paths:
        data = load_yaml(path)
        for key in ("source", "rows"):
            if key not in data:
                raise ConfigError(f"{path}: reference file needs '{key}'")
        file_proto = data.get("protocol") or {}
        for col_id in file_proto:
            if col_id not in COLUMN_BY_ID:
                raise ConfigError(f"{path}: protocol for unknown column {col_id!r}; known: {', '.join(COLUMN_BY_ID)}")
        for i, r in enumerate(data["rows"]):
            where = f"{path}, rows[{i}]"
            if not isinstance(r, dict) or "name" not in r or not isinstance(r.get("scores"), dict):
                raise ConfigError(f"{where}: each row needs 'name' and a 'scores' mapping")
            row = Row(name=str(r["name"]), kind=str(r.get("kind", "llava")), origin=str(data["source"]),
                      encoder=r.get("encoder"), llm=r.get("llm"), note=r.get("note"))
            for col_id, value in r["scores"].items():
                if col_id not in COLUMN_BY_ID:
                    raise ConfigError(f"{where}: unknown column {col_id!r}; known: {', '.join(COLUMN_BY_ID)}")
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{where}: score {col_id}={value!r} is not a number")
                proto = {"harness": str(data.get("harness", "paper")), "subset": "full",
                         **{k: str(v) for k, v in (file_proto.get(col_id) or {}).items()},
                         **{k: str(v) for k, v in ((r.get("protocol") or {}).get(col_id) or {}).items()}}
                row.cells[col_id] = Cell(float(value), proto, f"{data['source']} ({path})")
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- table
def protocol_diff(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {k: (a[k], b[k]) for k in COMPARED_KEYS if k in a and k in b and a[k] != b[k]}


def merge_rows(rows: list[Row]) -> list[Row]:
    """Our rows for the same model path (e.g. a toy run and a mirror run) become one row."""
    out: list[Row] = []
    by_path: dict[str, Row] = {}
    for r in rows:
        if r.origin == "ours" and r.path and r.path in by_path:
            by_path[r.path].cells.update(r.cells)
            continue
        if r.origin == "ours" and r.path:
            by_path[r.path] = r
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


def build_table(rows: list[Row], columns: list[Column], baseline: str | None) -> dict[str, Any]:
    base_row = None
    if baseline is not None:
        exact = [r for r in rows if r.name == baseline]
        partial = [r for r in rows if baseline.lower() in r.name.lower()]
        matches = exact or partial
        if len(matches) != 1:
            names = ", ".join(r.name for r in rows)
            how = "matches no row" if not matches else f"matches {len(matches)} rows"
            raise ConfigError(f"--baseline {baseline!r} {how}; rows: {names}")
        base_row = matches[0]
    ids = {c.id for c in columns}
    shown = [r for r in rows if any(cid in ids for cid in r.cells)]
    if base_row is not None and base_row not in shown:
        raise ConfigError(f"--baseline {base_row.name!r} has no value in the columns shown")
    first_ref: dict[str, Cell] = {}
    for r in shown:
        for cid, cell in r.cells.items():
            if r.origin != "ours" and cid not in first_ref:
                first_ref[cid] = cell
    out_rows = []
    for r in shown:
        cells = {}
        for col in columns:
            cell = r.cells.get(col.id)
            if cell is None:
                cells[col.id] = None
                continue
            compare_to = base_row.cells.get(col.id) if base_row is not None else first_ref.get(col.id)
            diff = protocol_diff(cell.protocol, compare_to.protocol) if compare_to is not None else {}
            delta = None
            if base_row is not None and col.id in base_row.cells and r is not base_row:
                delta = cell.value - base_row.cells[col.id].value
            cells[col.id] = {"value": cell.value, "delta": delta, "protocol": cell.protocol,
                             "protocol_differs": {k: {"this": a, "compared": b} for k, (a, b) in diff.items()},
                             "source": cell.source}
        out_rows.append({"name": r.name, "kind": r.kind, "origin": r.origin, "encoder": r.encoder, "llm": r.llm,
                         "path": r.path, "note": r.note, "is_baseline": r is base_row, "cells": cells})
    return {"columns": [{"id": c.id, "label": c.label, "family": c.family} for c in columns],
            "baseline": base_row.name if base_row else None, "rows": out_rows, "mark": MARK,
            "compared_protocol_keys": list(COMPARED_KEYS)}


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    s = f"{cell['value']:.1f}"
    if cell["delta"] is not None:
        s += f" ({cell['delta']:+.1f})"
    if cell["protocol_differs"]:
        s += MARK
    return s


def to_markdown(table: dict[str, Any]) -> str:
    cols = table["columns"]
    head = ["model", "kind", "encoder", "LLM", "source"] + [c["label"] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        name = f"**{r['name']}** (baseline)" if r["is_baseline"] else r["name"]
        meta = [name, r["kind"], _display_name(r["encoder"]) if r["encoder"] else "–",
                _display_name(r["llm"]) if r["llm"] else "–", "ours" if r["origin"] == "ours" else r["origin"]]
        lines.append("| " + " | ".join(meta + [_fmt(r["cells"][c["id"]]) for c in cols]) + " |")
    notes = []
    for r in table["rows"]:
        for cid, cell in r["cells"].items():
            if cell and cell["protocol_differs"]:
                what = "; ".join(f"{k}: {v['this']} vs {v['compared']}" for k, v in cell["protocol_differs"].items())
                notes.append(f"- {MARK} {r['name']} / {cid}: {what}")
    text = "\n".join(lines)
    if table["baseline"]:
        text += f"\n\nDeltas (in parentheses) are against **{table['baseline']}**. Values are percentages."
    if notes:
        text += f"\n\n{MARK} protocol differs from the cell it is compared to:\n" + "\n".join(notes)
    return text + "\n"


def to_csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [c["id"] for c in table["columns"]]
    w.writerow(["model", "kind", "origin", "encoder", "llm", "baseline", *cols,
                *[f"delta:{c}" for c in cols], *[f"protocol_differs:{c}" for c in cols]])
    for r in table["rows"]:
        cells = [r["cells"][c] for c in cols]
        w.writerow([r["name"], r["kind"], r["origin"], r["encoder"] or "", r["llm"] or "", int(r["is_baseline"]),
                    *["" if c is None else f"{c['value']:.4f}" for c in cells],
                    *["" if c is None or c["delta"] is None else f"{c['delta']:.4f}" for c in cells],
                    *["" if c is None else ";".join(c["protocol_differs"]) for c in cells]])
    return buf.getvalue()


def plot(table: dict[str, Any], path: Path) -> Path:
    """Small multiples: one panel per benchmark, a horizontal bar per model that has a value there
    (ours in colour, the baseline darker, published references grey), so wide tables stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in table["columns"] if c["id"] not in ("mme",)]  # MME is not a percentage
    panels = []
    for c in cols:
        bars = [(r["name"], r["cells"][c["id"]]["value"], r) for r in table["rows"] if r["cells"].get(c["id"])]
        if bars:
            panels.append((c, bars))
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    tallest = max((len(b) for _, b in panels), default=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.8 + nrows * max(1.6, 0.16 * tallest + 0.6)),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (c, bars) in zip(axes.flat, panels):
        names = [n for n, _, _ in bars][::-1]
        vals = [v for _, v, _ in bars][::-1]
        colours = ["#1f4e79" if r["is_baseline"] else "#e67e22" if r["origin"] == "ours" else "#b0b0b0"
                   for _, _, r in bars][::-1]
        ax.barh(range(len(vals)), vals, color=colours)
        ax.set_yticks(range(len(vals)), names, fontsize=6)
        ax.set_title(c["label"], fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_xlim(0, 100 * 1.12)  # every column is a percentage: one scale for all panels
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.1f}", va="center", fontsize=5)
    title = "Leaderboard: ours (orange), baseline (blue), published (grey)"
    fig.suptitle(title + (f"; baseline {table['baseline']}" if table["baseline"] else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_leaderboard(runs: Sequence[str | Path], out: str | Path, *, baseline: str | None = None,
                     references: Sequence[str | Path] | None = None, columns: str = "auto",
                     chart: bool = True) -> dict[str, Any]:
    """Merge results and references into ``out/leaderboard.{md,csv,json,png}``; returns the table dict."""
    ours = [load_result(p) for p in collect_result_files(runs)]
    refs = load_references(sorted(REFERENCES_DIR.glob("*.yaml")) if references is None else references)
    rows = merge_rows(ours + refs)
    table = build_table(rows, choose_columns(rows, columns), baseline)
    out = Path(out)
    md = to_markdown(table)
    atomic_write_text(out / "leaderboard.md", md)
    atomic_write_text(out / "leaderboard.csv", to_csv(table))
    write_json(out / "leaderboard.json", table)
    if chart:
        plot(table, out / "leaderboard.png")
    table["markdown"] = md
    return table


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="eval.lmms run dirs / results.json, MMVP-VLM RESULT.json")
    parser.add_argument("--baseline", help="row name (or a unique part of it) to compute deltas against")
    parser.add_argument("--references", nargs="+", help="reference YAML files (default: eval/references/*.yaml; 'none')")
    parser.add_argument("--columns", default="auto", help="auto (columns our results have) | toy | real | all")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    args = parser.parse_args(argv)
    refs = args.references
    if refs == ["none"]:
        refs = []
    table = make_leaderboard(args.runs, args.out, baseline=args.baseline, references=refs, columns=args.columns,
                             chart=not args.no_chart)
    print(table["markdown"])
    print(f"leaderboard -> {args.out}/leaderboard.{{md,csv,json{'' if args.no_chart else ',png'}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

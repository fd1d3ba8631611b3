"""The grid report: every metric of every cell as mean and 95% interval, the findings judged, and plots.

Reads only files: ``<out>/plan.json`` (entries -> evaluation directories, written by ``run``), the
evaluation JSONs (MMVP-VLM, linear probes, zero-shot), the stage-1 diagnostics (conditioning gap). Per
entry and metric, the per-item values (an MMVP-VLM pair, a probe's val scene, a zero-shot item, a cond-gap
pair) are averaged over the entry's seeds, and the interval is a percentile bootstrap over items
(stratified by pattern where the score is a mean of pattern means). A difference between two entries
(against the base encoder, or a finding's claim) is paired: the same items on both sides. Each seed's own
score is listed too, so seed spread and item spread can both be read.

A claim [better, worse] is *reproduced* when the interval of (better - worse) lies above zero, *opposite* when
it lies below, *inconclusive* otherwise; a finding is reproduced when all its claims are, not reproduced when
none is, and mixed otherwise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genhancer.utils.errors import DataError
from genhancer.utils.fsio import read_json, save_figure
from genhancer.utils.stats import percentile_interval, stratified_bootstrap_means

COARSE = ("color", "shape", "background")  # probe attributes a CLIP already holds; the rest are fine detail
Items = dict[str, dict[str, float]]  # group -> item key -> value (points)


# --------------------------------------------------------------------------------- per-kind item readers
def _pair_items(result: dict[str, Any], key: str) -> Items:
    """Per pattern, per pair (keyed by its question ids): 100 x the pair record's ``key``."""
    out: Items = {}
    for rec in result["pairs"]:
        out.setdefault(rec["pattern"], {})[",".join(map(str, rec["qids"]))] = 100.0 * float(rec[key])
    return out


def mmvp_items(result: dict[str, Any]) -> Items:
    """Per pattern, per pair: 100 if both statements are right, else 0."""
    return _pair_items(result, "correct")


def probe_items(result: dict[str, Any], feature: str = "global") -> Items:
    """Per val scene, the mean over fine attributes of the probe being right (x100)."""
    probes = result["probes"][feature]
    fine = [k for k in probes if k not in COARSE]
    correct = np.array([probes[k]["correct"] for k in fine], dtype=np.float64).mean(axis=0)
    return {"fine": {str(i): 100.0 * float(c) for i, c in zip(result["items"], correct)}}


def zeroshot_items(result: dict[str, Any]) -> Items:
    """Per item, 100 if the zero-shot prediction is the label (labels from the spec file the result names)."""
    spec = read_json(result["spec"])
    labels = [it["label"] for it in spec["items"]]
    return {
        "all": {str(i): 100.0 * float(p == t) for i, (p, t) in enumerate(zip(result["predictions"], labels))}
    }


def cond_gap_items(result: dict[str, Any]) -> Items:
    """Per pattern, per pair: twin-conditioned minus own-conditioned flow loss (x100)."""
    return _pair_items(result, "gap")


READERS: dict[str, Callable[[dict[str, Any]], Items]] = {
    "mmvp_vlm": mmvp_items,
    "probes": probe_items,
    "zeroshot": zeroshot_items,
    "cond_gap": cond_gap_items,
}
HEADLINES = {
    "mmvp_vlm": "average (points)",
    "probes": "fine-attribute probe accuracy (points)",
    "zeroshot": "accuracy (points)",
    "cond_gap": "twin - own flow loss (x100)",
}


# ------------------------------------------------------------------------------------------ statistics
def pool(per_seed: list[Items]) -> Items:
    """Items present in every seed, averaged over seeds."""
    groups = [g for g in per_seed[0] if all(g in s for s in per_seed)]
    out: Items = {}
    for g in groups:
        keys = [k for k in per_seed[0][g] if all(k in s[g] for s in per_seed)]
        out[g] = {k: float(np.mean([s[g][k] for s in per_seed])) for k in keys}
    return out


def score(items: Items) -> float:
    """The headline: the mean over groups of each group's mean (MMVP-VLM: the average over patterns)."""
    return float(np.mean([np.mean(list(v.values())) for v in items.values()]))


def summary(items: Items, seed: int = 0) -> dict[str, Any]:
    """Mean, 95% bootstrap interval (stratified by group) and per-group means of a pooled item set."""
    groups = [np.array(list(v.values())) for v in items.values()]
    lo, hi = percentile_interval(stratified_bootstrap_means(groups, seed=seed).mean(axis=1))
    return {
        "mean": score(items),
        "interval": [float(lo), float(hi)],
        "groups": {g: float(np.mean(list(v.values()))) for g, v in items.items()},
        "items": int(sum(len(v) for v in items.values())),
    }


def difference(a: Items, b: Items) -> dict[str, Any]:
    """Paired ``a - b`` over the items both hold."""
    diff: Items = {}
    for g in a:
        keys = [k for k in a[g] if k in b.get(g, {})]
        if keys:
            diff[g] = {k: a[g][k] - b[g][k] for k in keys}
    if not diff:
        raise DataError("no items in common between the two entries: were they evaluated on the same data?")
    return summary(diff)


def verdict(interval: list[float]) -> str:
    lo, hi = interval
    return "reproduced" if lo > 0 else "opposite" if hi < 0 else "inconclusive"


def finding_verdict(claims: list[str]) -> str:
    n = sum(c == "reproduced" for c in claims)
    return "reproduced" if claims and n == len(claims) else "not reproduced" if n == 0 else "mixed"


# ------------------------------------------------------------------------------------------------ read
class Results:
    """The items of every (entry, metric, seed) the grid directory holds."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.plan = read_json(
            out / "plan.json",
            missing=f"{out} holds no grid (no plan.json): run "
            f"`python -m genhancer.experiments run --out {out}` first",
        )
        self.metrics: dict[str, str] = self.plan["metrics"]  # name -> kind
        self.stage1_metrics: dict[str, str] = self.plan["stage1_metrics"]
        self.cache: dict[tuple[str, str], list[Items]] = {}

    def entries(self) -> dict[str, dict[str, Any]]:
        return self.plan["entries"]

    def _file(self, entry: str, seed: str, metric: str) -> Path | None:
        rec = self.entries()[entry]["seeds"][seed]
        if metric in self.metrics:
            return Path(rec["eval"]) / f"{metric}.json"
        if rec["stage1"] is None:
            return None
        run = Path(rec["stage1"])
        return run.parent / f"{run.name}.{metric}.json"

    def per_seed(self, entry: str, metric: str) -> list[Items]:
        """Items of every seed of ``entry`` that has the metric (missing files are skipped)."""
        key = (entry, metric)
        if key not in self.cache:
            kind = {**self.metrics, **self.stage1_metrics}[metric]
            files = [self._file(entry, s, metric) for s in self.entries()[entry]["seeds"]]
            self.cache[key] = [READERS[kind](read_json(f)) for f in files if f is not None and f.is_file()]
        return self.cache[key]

    def pooled(self, entry: str, metric: str) -> Items | None:
        seeds = self.per_seed(entry, metric)
        return pool(seeds) if seeds else None


def entry_metric(res: Results, entry: str, metric: str) -> dict[str, Any] | None:
    items = res.pooled(entry, metric)
    if items is None:
        return None
    out = summary(items)
    out["seeds"] = len(res.per_seed(entry, metric))
    out["per_seed"] = [score(s) for s in res.per_seed(entry, metric)]
    base = res.pooled("base", metric) if "base" in res.entries() and entry != "base" else None
    if base is not None:
        out["vs_base"] = difference(items, base)
    return out


def build_report(out: Path) -> dict[str, Any]:
    res = Results(out)
    metrics = [*res.metrics, *res.stage1_metrics]
    report: dict[str, Any] = {
        "grid": res.plan["grid"],
        "metrics": {
            m: {"kind": k, "unit": HEADLINES[k]} for m, k in {**res.metrics, **res.stage1_metrics}.items()
        },
        "entries": {},
        "findings": [],
    }
    for entry, info in res.entries().items():
        row = {m: entry_metric(res, entry, m) for m in metrics}
        report["entries"][entry] = {"group": info["group"], "label": info["label"], "metrics": row}
    judged = (judge_finding(res, f) for f in res.plan["findings"])
    report["findings"] = [f for f in judged if f is not None]
    status = out / "status.json"
    if status.is_file():
        st = read_json(status)
        report["wall"] = {"seconds": st.get("step_seconds"), "by_kind": _seconds_by_kind(st)}
    return report


def judge_finding(res: Results, finding: dict[str, Any]) -> dict[str, Any] | None:
    """The finding with each claim judged; claims on cells this grid run did not plan (``--quick``) are left
    out, and a finding without any is None. A planned cell without results yet is "not finished"."""
    claims = []
    for better, worse in finding["claims"]:
        if better not in res.entries() or worse not in res.entries():
            continue
        a, b = (res.pooled(e, finding["metric"]) for e in (better, worse))
        if a is None or b is None:
            claims.append({"claim": [better, worse], "verdict": "not finished"})
            continue
        d = difference(a, b)
        claims.append(
            {
                "claim": [better, worse],
                "difference": d["mean"],
                "interval": d["interval"],
                "verdict": verdict(d["interval"]),
            }
        )
    if not claims:
        return None
    done = [c["verdict"] for c in claims if c["verdict"] != "not finished"]
    return {**finding, "claims": claims, "verdict": finding_verdict(done) if done else "not finished"}


def _seconds_by_kind(status: dict[str, Any]) -> dict[str, float]:
    """Step seconds summed by kind: prepare, stage1, a diagnostic, tune, export, evaluations."""
    out: dict[str, float] = {}
    for name, rec in status["steps"].items():
        parts = name.split("/")
        if "eval" in parts:
            kind = "evaluations"
        elif parts[0] == "stage1":
            kind = "stage1" if len(parts) == 3 else parts[-1]  # stage1/<key>/seed-S[/<diagnostic>]
        else:
            kind = parts[0] if parts[0] == "prepare" else parts[-1]  # .../tune, .../export
        out[kind] = out.get(kind, 0.0) + float(rec.get("seconds", 0.0))
    return out


# ------------------------------------------------------------------------------------------ formatting
def cell(m: dict[str, Any] | None, key: str | None = None) -> str:
    if m is None:
        return "–"
    d = m if key is None else m.get(key)
    if d is None:
        return "–"
    lo, hi = d["interval"]
    sign = "+" if key else ""
    return f"{d['mean']:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]"


def format_report(report: dict[str, Any]) -> str:
    metrics = list(report["metrics"])
    lines = [
        f"# Grid `{report['grid']}`",
        "",
        "Mean over seeds [95% bootstrap interval over items]; Δ = paired change against the base encoder.",
        "",
    ]
    head = ["group", "cell", "seeds"]
    for m in metrics:
        head += [m] + ([f"Δ {m}"] if report["metrics"][m]["kind"] != "cond_gap" else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report["entries"].items():
        seeds = max((v or {}).get("seeds", 0) for v in e["metrics"].values()) if name != "base" else "–"
        row = [e["group"], name, str(seeds)]
        for m in metrics:
            row.append(cell(e["metrics"][m]))
            if report["metrics"][m]["kind"] != "cond_gap":
                row.append(cell(e["metrics"][m], "vs_base"))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Units: " + "; ".join(f"{m}: {v['unit']}" for m, v in report["metrics"].items()), ""]
    lines += _pattern_table(report)
    lines += _findings_table(report)
    if report.get("wall"):
        w = report["wall"]
        parts = ", ".join(
            f"{k} {v / 60:.1f} min" for k, v in sorted(w["by_kind"].items(), key=lambda kv: -kv[1])
        )
        lines += ["", f"Compute wall time of the steps: {w['seconds'] / 60:.1f} min ({parts})."]
    return "\n".join(lines) + "\n"


def _pattern_table(report: dict[str, Any]) -> list[str]:
    mmvp = [m for m, v in report["metrics"].items() if v["kind"] == "mmvp_vlm"]
    if not mmvp:
        return []
    m = mmvp[0]
    patterns = next(
        (list(e["metrics"][m]["groups"]) for e in report["entries"].values() if e["metrics"][m]), []
    )
    if not patterns:
        return []
    short = [p.split()[0] for p in patterns]
    lines = [f"Per pattern ({m}, mean over seeds):", "", "| cell | " + " | ".join(short) + " | average |"]
    lines.append("|" + "---|" * (len(short) + 2))
    for name, e in report["entries"].items():
        r = e["metrics"][m]
        if r:
            lines.append(
                f"| {name} | "
                + " | ".join(f"{r['groups'][p]:.1f}" for p in patterns)
                + f" | {r['mean']:.1f} |"
            )
    return lines + [""]


def _findings_table(report: dict[str, Any]) -> list[str]:
    if not report["findings"]:
        return []
    lines = [
        "Findings (claim: better − worse, paired, 95% interval):",
        "",
        "| finding | paper | claim | difference | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in report["findings"]:
        for i, c in enumerate(f["claims"]):
            name, paper = (f"{f['name']} — **{f['verdict']}**", f["paper"]) if i == 0 else ("", "")
            if c["verdict"] == "not finished":
                diff = "–"
            else:
                lo, hi = c["interval"]
                diff = f"{c['difference']:+.1f} [{lo:+.1f}, {hi:+.1f}]"
            claim = f"{c['claim'][0]} > {c['claim'][1]} ({f['metric']})"
            lines.append(f"| {name} | {paper} | {claim} | {diff} | {c['verdict']} |")
    return lines


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "entry",
            "group",
            "metric",
            "mean",
            "low",
            "high",
            "seeds",
            "per_seed",
            "vs_base",
            "vs_base_low",
            "vs_base_high",
        ]
    )
    for name, e in report["entries"].items():
        for m, r in e["metrics"].items():
            if r is None:
                continue
            vb = r.get("vs_base") or {"mean": "", "interval": ["", ""]}
            per = " ".join(f"{x:.3f}" for x in r["per_seed"])
            w.writerow(
                [
                    name,
                    e["group"],
                    m,
                    f"{r['mean']:.4f}",
                    f"{r['interval'][0]:.4f}",
                    f"{r['interval'][1]:.4f}",
                    r["seeds"],
                    per,
                    vb["mean"],
                    *vb["interval"],
                ]
            )
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- plots
def plot(report: dict[str, Any], out_png: str | Path) -> Path:
    """One panel per metric, a bar per cell (coloured by group) with its 95% interval whisker: the paired
    change against the base encoder where there is one (a zero line marks "no change"), else the value."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    metrics = list(report["metrics"])
    names = [n for n in report["entries"] if "@" not in n]
    groups = list(dict.fromkeys(report["entries"][n]["group"] for n in names if n != "base"))
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 (grey) is the base encoder's
    colours = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    fig = Figure(figsize=(4.2 * len(metrics), 0.3 * len(names) + 1.4), layout="constrained")
    ys = list(range(len(names)))[::-1]
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        delta = report["metrics"][m]["kind"] != "cond_gap"
        for y, n in zip(ys, names):
            r = report["entries"][n]["metrics"][m]
            r = (r or {}).get("vs_base") if delta else r
            if r is None:
                continue
            colour = "C7" if n == "base" else colours[report["entries"][n]["group"]]
            ax.barh(y, r["mean"], color=colour, alpha=0.75)
            ax.plot(r["interval"], [y, y], color="black", linewidth=1.2)
        if delta:
            ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_ylim(-0.6, len(names) - 0.4)  # the same rows in every panel, drawn or not
        ax.set_yticks(ys, names if i == 0 else [""] * len(names), fontsize=8)
        unit = report["metrics"][m]["unit"]
        ax.set_title(f"Δ {m} vs base: {unit}" if delta else f"{m}: {unit}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=colours[g], alpha=0.75, label=g or "(no group)") for g in groups]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    return save_figure(fig, out_png)


def plot_snapshots(report: dict[str, Any], steps: dict[str, int], out_png: str | Path) -> Path | None:
    """Score vs tuning step for every cell with snapshots (entries ``<cell>@<step>`` and the cell's final)."""
    from matplotlib.figure import Figure

    curves: dict[str, list[tuple[int, str]]] = {}
    for name, step in steps.items():
        curves.setdefault(name.split("@")[0], []).append((step, name))
    if not curves:
        return None
    metrics = [m for m, v in report["metrics"].items() if v["kind"] != "cond_gap"]
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for cell_name, pts in curves.items():
            pts = sorted(p for p in pts if report["entries"][p[1]]["metrics"][m])
            rows = [report["entries"][n]["metrics"][m] for _, n in pts]
            xs, ys = [s for s, _ in pts], [r["mean"] for r in rows]
            yerr = [
                [y - r["interval"][0] for y, r in zip(ys, rows)],
                [r["interval"][1] - y for y, r in zip(ys, rows)],
            ]
            ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, label=cell_name)
        base = report["entries"].get("base", {}).get("metrics", {}).get(m)
        if base:
            ax.axhline(base["mean"], color="grey", linestyle="--", linewidth=0.8, label="base encoder")
        ax.set_xscale("log")
        ax.set_xlabel("tuning step")
        ax.set_title(f"{m}: {report['metrics'][m]['unit']}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)

"""The grid file: config overrides x seeds, as data (``configs/experiments/*.yaml``), and its plan of steps.

A grid names one run config every cell starts from, the inputs (paths filled into ``{name}`` placeholders),
the overrides every run gets, the commands that prepare inputs and evaluate encoders, and the cells. A cell is
an ordinary GenHancer run: stage 1 (unless the tuning stage is ``end-to-end``), then the stage that tunes the
encoder, the export, and the evaluations of the exported encoder. ``plan`` turns (grid, seeds) into steps:

  prepare/<name>                    once per grid (e.g. a tokenizer the discrete cells read)
  base/eval/<evaluation>            the evaluations of the untouched encoder, once
  stage1/<key>/seed-S               shared by every cell whose stage 1 is the same (key: a hash of config +
                                    overrides + seed); its feature cache is shared the same way
  stage1/<key>/seed-S/<diagnostic>  e.g. the conditioning gap of that stage 1
  cells/<cell>/seed-S/tune          stage 2 (or stage2-all / end-to-end) -> export -> evaluations
  cells/<cell>/seed-S/steps/step-N  with ``snapshots``: every kept stage-2 step exported and evaluated too

Every step names the file whose existence means it is done, so a rerun skips finished steps and a killed grid
resumes at the step it was in (the trainers resume from their own checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genhancer.cache import config_key
from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.utils.config import load_config
from genhancer.utils.errors import ConfigError

TUNING_STAGES = ("stage2", "stage2-all", "end-to-end")
EVAL_KINDS = ("mmvp_vlm", "probes", "zeroshot")  # what the report reads from an encoder evaluation
DIAGNOSTIC_KINDS = ("cond_gap",)  # what the report reads from a stage-1 diagnostic
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")


@dataclass
class CommandConfig:
    """A ``python -m`` command line (placeholders: ``{out}``, the grid's inputs) and what the report reads."""

    command: str = ""
    kind: str = ""  # evaluations: mmvp_vlm | probes | zeroshot; diagnostics: cond_gap; prepare: unused
    done: str = ""  # prepare only: the file whose existence means the step is done

    def argv(self, values: dict[str, str], where: str) -> list[str]:
        return shlex.split(fill(self.command, values, where))


def fill(text: str, values: dict[str, Any], where: str) -> str:
    """``text`` with its ``{name}`` placeholders filled in; an unknown one is an error naming ``where``."""
    try:
        return text.format(**values)
    except KeyError as e:
        problem = f"unknown placeholder {{{e.args[0]}}}"
    except (ValueError, IndexError) as e:
        problem = f"{e} (a placeholder is {{name}})"
    raise ConfigError(
        f"{where}: {problem} in {text!r}; known: {', '.join(sorted(values))}. "
        "Write a literal brace as {{ or }} (a YAML mapping as an override: one key=value per entry)"
    )


@dataclass
class CellConfig:
    group: str = ""  # the table section (a paper figure or table) the cell belongs to
    label: str = ""  # a short description for tables and plots (default: the cell's name)
    config: str | None = None  # a run config replacing the grid's (e.g. the discrete denoiser's)
    overrides: list[str] = field(default_factory=list)  # both stages
    stage1: list[str] = field(default_factory=list)  # stage 1 only
    stage2: list[str] = field(default_factory=list)  # the tuning stage only
    stage: str = "stage2"  # the stage that tunes the encoder: stage2 | stage2-all | end-to-end
    snapshots: bool = False  # also export + evaluate the tuning stage's kept steps (schedule.<stage>.eval_at)
    export: list[str] = field(default_factory=list)  # extra genhancer.export arguments ({seed} allowed)
    tune_of: str | None = None  # reuse another cell's tuned run (e.g. a control that only exports it)
    prepare: list[str] = field(default_factory=list)  # the grid's prepare steps this cell needs first
    seeds: list[int] = field(default_factory=list)  # run only with these of the grid's seeds (empty: all)
    enabled: bool = True  # false: drop an inherited cell

    def __post_init__(self) -> None:
        if self.stage not in TUNING_STAGES:
            raise ValueError(f"stage must be one of {', '.join(TUNING_STAGES)}, got {self.stage!r}")


@dataclass
class QuickConfig:
    """What ``--quick`` changes: fewer seeds and cells, and extra overrides (shorter runs)."""

    seeds: list[int] = field(default_factory=lambda: [0])
    cells: list[str] = field(default_factory=list)  # empty: every cell
    common: list[str] = field(default_factory=list)


@dataclass
class FindingConfig:
    """A published finding: each claim [better, worse] says cell ``better`` scores above cell ``worse``
    (``base`` is the untouched encoder) on ``metric``."""

    name: str = ""
    paper: str = ""  # the published numbers, for the table
    metric: str = "mmvp"  # an evaluation name (its headline metric)
    claims: list[list[str]] = field(default_factory=list)


@dataclass
class GridConfig:
    name: str = "grid"
    config: str = "configs/genhancer/toy.yaml"  # the run config every cell starts from
    inputs: dict[str, str] = field(default_factory=dict)  # {name} placeholders: world, encoder, ...
    common: list[str] = field(default_factory=list)  # overrides of every run ({inputs} allowed)
    budget: list[str] = field(default_factory=list)  # this grid's run lengths (applied after common)
    # training steps run as <launch> -m genhancer.train ...; empty: one plain process (python -m). A GPU node:
    # [torchrun, --nproc_per_node, "8"]
    launch: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # where the stage-1 feature caches live ({inputs} allowed); "" = <out>/cache. Caches are fingerprinted, so
    # grids may share a directory: each cache is rebuilt only when what it depends on changes
    cache: str = ""
    prepare: dict[str, CommandConfig] = field(default_factory=dict)
    evaluations: dict[str, CommandConfig] = field(default_factory=dict)  # per encoder; {model}, {out}
    diagnostics: dict[str, CommandConfig] = field(default_factory=dict)  # per stage 1; {stage_dir}, {out}
    cells: dict[str, CellConfig] = field(default_factory=dict)
    findings: list[FindingConfig] = field(default_factory=list)
    quick: QuickConfig = field(default_factory=QuickConfig)


def load_grid(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> GridConfig:
    """Read and check a grid file; every problem names the key and how to fix it."""
    grid = load_config(GridConfig, path, overrides)
    where = str(path)
    for section in ("prepare", "evaluations", "diagnostics"):  # command: "" drops an inherited entry
        setattr(grid, section, {k: v for k, v in getattr(grid, section).items() if v.command})
    disabled = {k for k, v in grid.cells.items() if not v.enabled}
    grid.cells = {k: v for k, v in grid.cells.items() if v.enabled}
    for f in grid.findings:  # a disabled cell takes its claims along (a finding left with none, too)
        f.claims = [c for c in f.claims if not any(n.split("@")[0] in disabled for n in c)]
    grid.findings = [f for f in grid.findings if f.claims]
    if not grid.cells:
        raise ConfigError(f"{where}: the grid has no cells (add a 'cells:' mapping of name -> overrides)")
    for name, cell in grid.cells.items():
        if not _NAME.match(name):
            raise ConfigError(f"{where}: cell name {name!r} must be letters, digits, '_', '+' or '-'")
        if cell.tune_of is not None and cell.tune_of not in grid.cells:
            raise ConfigError(f"{where}: cells.{name}.tune_of names no cell: {cell.tune_of!r}")
        for prep in cell.prepare:
            if prep not in grid.prepare:
                raise ConfigError(f"{where}: cells.{name}.prepare names no prepare step: {prep!r}")
    for section, kinds in (("evaluations", EVAL_KINDS), ("diagnostics", DIAGNOSTIC_KINDS)):
        for name, cmd in getattr(grid, section).items():
            if cmd.kind not in kinds:
                raise ConfigError(f"{where}: {section}.{name}.kind must be one of {', '.join(kinds)}")
    for name, cmd in grid.prepare.items():
        if not cmd.done:
            raise ConfigError(f"{where}: prepare.{name}.done must name the file the command writes")
    known = {"base", *grid.cells, *(f"{c}@" for c in grid.cells)}
    for f in grid.findings:
        if f.metric not in grid.evaluations and f.metric not in grid.diagnostics:
            raise ConfigError(
                f"{where}: finding {f.name!r}: metric {f.metric!r} is no evaluation or diagnostic"
            )
        for claim in f.claims:
            if len(claim) != 2 or any(c.split("@")[0] not in known for c in claim):
                raise ConfigError(
                    f"{where}: finding {f.name!r}: claim {claim} must be [better, worse] cell names "
                    "('base', a cell, or <cell>@<step>)"
                )
    for name in grid.quick.cells:
        if name not in grid.cells:
            raise ConfigError(f"{where}: quick.cells names no cell: {name!r}")
    return grid


def select(
    grid: GridConfig, quick: bool, seeds: list[int] | None, only: list[str] | None = None
) -> tuple[dict[str, CellConfig], list[int], list[str]]:
    """(cells, seeds, common overrides) of a run: the whole grid, or its ``quick`` variant; ``only`` keeps
    those cells (and the cells whose runs they export)."""
    cells, common = dict(grid.cells), [*grid.common, *grid.budget]
    default_seeds = grid.seeds
    if quick:
        if grid.quick.cells:
            cells = _keep(cells, grid.quick.cells)
        common += grid.quick.common
        default_seeds = grid.quick.seeds
    if only:
        unknown = [c for c in only if c not in cells]
        if unknown:
            hint = " (write the grid's overrides before --cells)" if "=" in unknown[0] else ""
            raise ConfigError(f"--cells: no cell {unknown[0]!r} in this run{hint}; cells: {', '.join(cells)}")
        cells = _keep(cells, only)
    return cells, list(seeds) if seeds else list(default_seeds), common


def _keep(cells: dict[str, CellConfig], names: list[str]) -> dict[str, CellConfig]:
    keep = set(names) | {cells[c].tune_of for c in names if cells[c].tune_of}
    return {k: v for k, v in cells.items() if k in keep}


# ------------------------------------------------------------------------------------------------- plan
@dataclass
class Step:
    """One command of the plan: ``python -m <argv>``, done when ``done`` exists."""

    name: str  # the step's path in the grid directory, e.g. cells/two-stage/seed-0/tune
    argv: list[str]
    done: Path
    after: list[str] = field(default_factory=list)  # steps that must have succeeded first
    launch: list[str] = field(default_factory=list)  # run as <launch> -m <argv>; empty: python -m <argv>

    def command(self) -> list[str]:
        return [*(self.launch or [sys.executable]), "-m", *self.argv]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


class Planner:
    """Expands a grid into steps (see the module docstring for the layout under ``out``)."""

    def __init__(self, grid: GridConfig, out: Path, cells: dict[str, CellConfig], common: list[str]) -> None:
        self.grid, self.out, self.cells = grid, out, cells
        self.values = {k: str(v) for k, v in grid.inputs.items()}
        self.common = self.fill(common, "common")
        self.steps: dict[str, Step] = {}
        # for the report: entry (a cell, or <cell>@<step>) -> group, label, per seed its eval dir + stage 1
        self.entries: dict[str, dict[str, Any]] = {}

    def add(self, step: Step) -> str:
        """Add a step, or merge its prerequisites into the same step added before (a shared stage 1)."""
        known = self.steps.setdefault(step.name, step)
        known.after += [a for a in step.after if a not in known.after]
        return step.name

    def ordered(self) -> list[Step]:
        """The steps in insertion order, each moved after its prerequisites (a stable topological order)."""
        done: dict[str, Step] = {}

        def visit(step: Step) -> None:
            if step.name not in done:
                for a in step.after:
                    visit(self.steps[a])
                done[step.name] = step

        for step in self.steps.values():
            visit(step)
        return list(done.values())

    def config(self, name: str) -> str:
        return self.cells[name].config or self.grid.config

    def stage1_dir(self, name: str, seed: int) -> Path:
        cell = self.cells[name]
        key = _key(self.config(name), self.common, cell.overrides, cell.stage1)
        return self.out / "stage1" / key / f"seed-{seed}"

    def fill(self, items: list[str], where: str, **more: Any) -> list[str]:
        """``{input}`` placeholders of override lists filled in."""
        return [fill(o, {**self.values, **more}, where) for o in items]

    def cell_list(self, name: str, key: str, **more: Any) -> list[str]:
        """Cell ``name``'s list ``key`` (overrides, stage1, stage2, export), its placeholders filled in."""
        return self.fill(getattr(self.cells[name], key), f"cells.{name}.{key}", **more)

    def overrides(self, name: str, extra: list[str]) -> list[str]:
        return [*self.common, *self.cell_list(name, "overrides"), *extra]

    def resolve(self, name: str, extra: list[str]) -> GenHancerConfig:
        return load_genhancer_config(self.config(name), self.overrides(name, extra))

    def cache_dir(self, name: str, extra: list[str]) -> Path:
        # a cache directory holds one fingerprint: one directory per cache-relevant setting, shared by the
        # runs that agree on it (e.g. every t-sampling or denoiser-size cell of a seed)
        root = Path(fill(self.grid.cache, self.values, "cache")) if self.grid.cache else self.out / "cache"
        return root / config_key(self.resolve(name, extra))

    def train(self, name: str, seed: int, extra: list[str], run_dir: Path) -> list[str]:
        extra = [*extra, f"train.seed={seed}"]
        cache = f"cache.dir={self.cache_dir(name, extra)}"
        return [
            "genhancer.train",
            "--config",
            self.config(name),
            *self.overrides(name, extra),
            cache,
            f"train.run_dir={run_dir}",
        ]

    def prepare(self, names: list[str]) -> list[str]:
        steps = []
        for name in names:
            cmd = self.grid.prepare[name]
            argv = cmd.argv(self.values, f"prepare.{name}")
            done = Path(fill(cmd.done, self.values, f"prepare.{name}.done"))
            steps.append(self.add(Step(f"prepare/{name}", argv, done)))
        return steps

    def evaluate(self, prefix: str, model: Path, after: list[str]) -> None:
        for name, cmd in self.grid.evaluations.items():
            out = self.out / prefix / "eval" / f"{name}.json"
            argv = cmd.argv({**self.values, "model": str(model), "out": str(out)}, f"evaluations.{name}")
            self.add(Step(f"{prefix}/eval/{name}", argv, out, after))

    def stage1(self, name: str, seed: int, after: list[str]) -> tuple[str, Path]:
        run = self.stage1_dir(name, seed)
        rel = str(run.relative_to(self.out))
        argv = self.train(name, seed, self.cell_list(name, "stage1"), run)
        step = self.add(Step(rel, argv, run / "final", after, self.grid.launch))
        for diag, cmd in self.grid.diagnostics.items():
            out = run.parent / f"{run.name}.{diag}.json"
            values = {**self.values, "stage_dir": str(run), "out": str(out)}
            self.add(Step(f"{rel}/{diag}", cmd.argv(values, f"diagnostics.{diag}"), out, [step]))
        return step, run

    def tuned(self, name: str, seed: int, after: list[str]) -> tuple[str, Path, Path | None]:
        """Cell ``name``'s tuning run, after its stage 1 unless end-to-end: (step, run dir, stage-1 dir)."""
        cell = self.cells[name]
        root = self.out / "cells" / name / f"seed-{seed}"
        extra, run1 = [f"stage={cell.stage}", *self.cell_list(name, "stage2")], None
        if cell.stage != "end-to-end":
            s1, run1 = self.stage1(name, seed, after)
            after, extra = [s1], [*extra, f"init_from={run1 / 'final'}"]
        argv = self.train(name, seed, extra, root / "tune")
        return (
            self.add(
                Step(f"cells/{name}/seed-{seed}/tune", argv, root / "tune" / "final", after, self.grid.launch)
            ),
            root / "tune",
            run1,
        )

    def cell(self, name: str, seed: int) -> None:
        cell = self.cells[name]
        prefix = f"cells/{name}/seed-{seed}"
        tune, run, run1 = self.tuned(cell.tune_of or name, seed, self.prepare(cell.prepare))
        self.export(name, prefix, run, name, seed, [tune], run1)
        if cell.snapshots:  # the kept steps, from the run's own config
            steps, final = snapshot_steps(self, name)
            self.entries[name]["step"] = final
            for step in steps:
                entry, snap = f"{name}@{step}", run / "sweep" / f"step-{step:06d}"
                self.export(entry, f"{prefix}/steps/step-{step:06d}", snap, name, seed, [tune], run1)
                self.entries[entry]["step"] = step

    def export(
        self,
        entry: str,
        prefix: str,
        run: Path,
        name: str,
        seed: int,
        after: list[str],
        run1: Path | None,
    ) -> None:
        """Export cell ``name``'s run as report entry ``entry`` (the cell or <cell>@<step>); evaluate it."""
        cell = self.cells[name]
        dest = self.out / prefix / "encoder"
        argv = [
            "genhancer.export",
            "--run",
            str(run),
            "--out",
            str(dest),
            *self.cell_list(name, "export", seed=seed),
        ]
        step = self.add(Step(f"{prefix}/export", argv, dest / "config.json", after))
        self.evaluate(prefix, dest, [step])
        self.entries.setdefault(entry, {"group": cell.group, "label": cell.label or entry, "seeds": {}})
        self.entries[entry]["seeds"][str(seed)] = {
            "eval": str(self.out / prefix / "eval"),
            "stage1": None if run1 is None else str(run1),
        }


def snapshot_steps(planner: Planner, name: str) -> tuple[list[int], int]:
    """Cell ``name``: the kept steps of its tuning stage before the last (``schedule.<stage>.eval_at``), and
    the last."""
    stage = planner.cells[name].stage
    sched = planner.resolve(name, [*planner.cell_list(name, "stage2"), f"stage={stage}"]).current_schedule
    final = int(sched.steps or 0)
    return sorted(s for s in set(sched.eval_at) if 0 < s < final), final


def plan(
    grid: GridConfig,
    out: Path,
    quick: bool = False,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
) -> Planner:
    """Every step of a grid run (``.steps``, in an order that respects ``after``; shared steps appear
    once) and the entries the report reads (``.entries``)."""
    cells, run_seeds, common = select(grid, quick, seeds, only)
    p = Planner(grid, out, cells, common)
    encoder = grid.inputs.get("encoder")
    if encoder:
        p.evaluate("base", Path(encoder), [])
        p.entries["base"] = {
            "group": "",
            "label": "base encoder",
            "seeds": {"-": {"eval": str(out / "base" / "eval"), "stage1": None}},
        }
    for seed in run_seeds:
        for name, cell in cells.items():
            if not cell.seeds or seed in cell.seeds:
                p.cell(name, seed)
    return p

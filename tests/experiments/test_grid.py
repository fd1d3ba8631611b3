"""The grid file and its plan: what is shared, what runs in which order, what each error names."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhancer.experiments.grid import load_grid, plan
from genhancer.utils.errors import ConfigError


def _steps(grid_path: Path, out: Path, **kw):
    p = plan(load_grid(grid_path), out, **kw)
    return p, {s.name: s for s in p.ordered()}


def test_cells_that_differ_after_stage1_share_it_and_others_do_not(grid_file, tmp_path):
    cells = {
        "two-stage": {"snapshots": True},
        "all": {"stage": "stage2-all"},
        "uniform": {"overrides": ["flow.t_sampling=uniform"]},
        "e2e": {"stage": "end-to-end"},
        "control": {"tune_of": "two-stage", "export": ["--random-update", "{seed}"]},
    }
    p, steps = _steps(
        grid_file(cells, seeds=[0, 1], common=["schedule.stage2.eval_at=[10,100,1000]"]), tmp_path
    )
    stage1 = sorted(n for n in steps if n.startswith("stage1/") and n.count("/") == 2)
    assert len(stage1) == 4  # (recipe, uniform) x 2 seeds; stage2-all reuses the recipe's; e2e has none
    tune = {n: s for n, s in steps.items() if n.endswith("/tune")}
    assert set(tune) == {
        f"cells/{c}/seed-{s}/tune" for c in ("two-stage", "all", "uniform", "e2e") for s in (0, 1)
    }
    init = [a for a in tune["cells/all/seed-0/tune"].argv if a.startswith("init_from=")]
    assert init == [a for a in tune["cells/two-stage/seed-0/tune"].argv if a.startswith("init_from=")]
    assert not any(a.startswith("init_from=") for a in tune["cells/e2e/seed-0/tune"].argv)
    assert "stage=end-to-end" in tune["cells/e2e/seed-0/tune"].argv
    # the control exports the recipe's tuned run with the seed filled in, and waits for it
    export = steps["cells/control/seed-1/export"]
    assert export.argv[export.argv.index("--run") + 1] == str(tmp_path / "cells/two-stage/seed-1/tune")
    assert export.argv[-2:] == ["--random-update", "1"] and export.after == ["cells/two-stage/seed-1/tune"]
    # snapshots: the kept steps before the last (default schedule.stage2.steps of toy.yaml: 300)
    assert p.entries["two-stage@10"]["step"] == 10 and p.entries["two-stage@100"]["step"] == 100
    assert "two-stage@1000" not in p.entries and p.entries["two-stage"]["step"] == 300
    snap = steps["cells/two-stage/seed-0/steps/step-000010/export"]
    assert snap.argv[snap.argv.index("--run") + 1].endswith("tune/sweep/step-000010")
    # every step comes after what it needs
    order = list(steps)
    assert all(order.index(a) < order.index(n) for n, s in steps.items() for a in s.after)


def test_caches_are_shared_across_seeds_and_cells_that_agree_on_them(grid_file, tmp_path):
    cells = {
        "a": {},
        "b": {"overrides": ["flow.logit_scale=2.0"]},
        "local": {"overrides": ["conditioning.local_token_fraction=1.0"]},
    }
    _, steps = _steps(grid_file(cells, seeds=[0, 1], common=["cache.seed=0"]), tmp_path)

    def cache(name: str, where: dict = steps) -> str:
        return next(a for a in where[name].argv if a.startswith("cache.dir="))

    runs = [n for n in steps if n.startswith("stage1/") and n.count("/") == 2]
    by_cache = {cache(n) for n in runs}
    assert len(runs) == 6 and len(by_cache) == 2  # t-sampling shares the recipe's cache; local tokens do not
    assert all(c.startswith(f"cache.dir={tmp_path / 'cache'}/") for c in by_cache)
    _, shared = _steps(grid_file(cells, seeds=[0], common=["cache.seed=0"], cache="{bench}/caches"), tmp_path)
    assert {cache(n, shared) for n in shared if n.startswith("stage1/") and n.count("/") == 2} == {
        c.replace(str(tmp_path / "cache"), "bench/caches") for c in by_cache
    }


def test_quick_keeps_named_cells_and_what_they_reuse_and_prepares_only_what_is_needed(grid_file, tmp_path):
    cells = {
        "two-stage": {},
        "control": {"tune_of": "two-stage"},
        "discrete": {"prepare": ["vq"]},
    }
    grid = grid_file(
        cells,
        prepare={"vq": {"command": "toyworld train-vq --out {out_vq}", "done": "vq/config.json"}},
        inputs={"encoder": "runs/toy/clip", "bench": "b", "out_vq": "vq"},
        quick={"seeds": [5], "cells": ["control"], "common": ["schedule.stage1.steps=7"]},
    )
    _, steps = _steps(grid, tmp_path, quick=True)
    assert {n.split("/")[1] for n in steps if n.startswith("cells/")} == {"two-stage", "control"}
    assert all("seed-5" in n for n in steps if n.startswith("cells/"))
    assert "schedule.stage1.steps=7" in next(s for n, s in steps.items() if n.startswith("stage1/")).argv
    assert not any(n.startswith("prepare/") for n in steps)
    _, full = _steps(grid, tmp_path, seeds=[0])
    assert full["prepare/vq"].argv == ["toyworld", "train-vq", "--out", "vq"]
    # the discrete cell shares the recipe's stage 1 here (same config): that stage 1 now waits for the VQ
    stage1 = next(n for n in full if n.startswith("stage1/") and n.count("/") == 2)
    assert "prepare/vq" in full[stage1].after
    assert list(full).index("prepare/vq") < list(full).index(stage1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cells": {}}, "no cells"),
        ({"cells": {"a.b": {}}}, "cell name 'a.b'"),
        ({"cells": {"a": {"tune_of": "zz"}}}, "cells.a.tune_of names no cell: 'zz'"),
        ({"cells": {"a": {"stage": "stage3"}}}, "stage must be one of"),
        ({"cells": {"a": {"prepare": ["vq"]}}}, "cells.a.prepare names no prepare step: 'vq'"),
        ({"evaluations": {"m": {"kind": "fid", "command": "x"}}}, "evaluations.m.kind must be one of"),
        ({"findings": [{"name": "f", "metric": "mmvp", "claims": [["a", "nope"]]}]}, "claim"),
        ({"findings": [{"name": "f", "metric": "fid", "claims": [["a", "base"]]}]}, "metric 'fid'"),
        ({"quick": {"cells": ["zz"]}}, "quick.cells names no cell: 'zz'"),
        ({"celss": {}}, "unknown config key 'celss'"),
    ],
)
def test_bad_grid_files_are_named_precisely(grid_file, change, message):
    kw = {"cells": {"a": {}}, **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_grid(grid_file(**kw))


def test_an_unknown_placeholder_names_the_command_and_the_known_ones(grid_file, tmp_path):
    evals = {"m": {"kind": "mmvp_vlm", "command": "eval.mmvp_vlm --model {model} --benchmark {bnch}"}}
    with pytest.raises(ConfigError, match=r"evaluations\.m: unknown placeholder \{bnch\}.*known: bench"):
        plan(load_grid(grid_file({"a": {}}, evaluations=evals)), tmp_path)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ({"overrides": ["denoiser.overrides={num_layers: 2}"]}, r"cells\.a\.overrides: unknown placeholder"),
        ({"stage2": ["x=}"]}, r"cells\.a\.stage2: Single '}' encountered.*literal brace as \{\{"),
        ({"export": ["--random-update", "{sed}"]}, r"cells\.a\.export: unknown placeholder \{sed\}"),
    ],
)
def test_a_bad_placeholder_in_a_cell_names_the_cell_and_list(grid_file, tmp_path, cell, message):
    with pytest.raises(ConfigError, match=message):
        plan(load_grid(grid_file({"a": cell})), tmp_path)


def test_cells_runs_those_cells_and_the_runs_they_export(grid_file, tmp_path):
    cells = {"a": {}, "b": {"tune_of": "a", "export": ["--random-update", "{seed}"]}, "c": {}}
    grid = load_grid(grid_file(cells))
    p = plan(grid, tmp_path, seeds=[0], only=["b"])
    assert set(p.entries) == {"base", "a", "b"}
    assert not [s for s in p.ordered() if "/c/" in s.name]
    with pytest.raises(ConfigError, match=r"--cells: no cell 'zz' in this run; cells: a, b, c"):
        plan(grid, tmp_path, only=["zz"])
    with pytest.raises(
        ConfigError, match=r"no cell 'a\.x=1' in this run \(write the grid's overrides before"
    ):
        plan(grid, tmp_path, only=["a", "a.x=1"])


def test_a_disabled_cell_takes_its_claims_along(grid_file):
    findings = [
        {"name": "f", "metric": "mmvp", "claims": [["a", "base"], ["a", "c"]]},
        {"name": "g", "metric": "mmvp", "claims": [["c@10", "base"]]},
    ]
    path = grid_file({"a": {}, "c": {}}, findings=findings)
    grid = load_grid(path, ["cells.c.enabled=false"])
    assert [(f.name, f.claims) for f in grid.findings] == [("f", [["a", "base"]])]
    with pytest.raises(ConfigError, match=r"claim \['a', 'zz'\]"):  # a name no cell ever had still fails
        load_grid(grid_file({"a": {}}, findings=[{"name": "f", "metric": "mmvp", "claims": [["a", "zz"]]}]))


@pytest.mark.parametrize("name", ["paper-toy", "effect-toy", "effect-toy-levers", "paper-gpu"])
def test_shipped_grids_load_and_plan(name, tmp_path):
    grid = load_grid(Path("configs/experiments") / f"{name}.yaml")
    p = plan(grid, tmp_path)
    steps = p.ordered()
    assert len({s.name for s in steps}) == len(steps)
    trains = [s for s in steps if s.argv[0] == "genhancer.train"]
    if (
        name == "paper-gpu"
    ):  # training on 8 GPUs; no toy-only evaluation, nothing downloaded by a prepare step
        assert all(s.command()[:4] == ["torchrun", "--nproc_per_node", "8", "-m"] for s in trains)
        assert set(grid.evaluations) == {"mmvp", "zeroshot"} and not grid.prepare
        assert "depth-1+2" in grid.cells and "depth-2+4" not in grid.cells
    else:
        assert all(s.launch == [] for s in trains)
    if name == "paper-toy":
        paper = {"local-10pct", "local-100pct", "stage2-all", "end-to-end", "t-uniform", "t-s05", "t-s2"}
        assert paper | {"discrete", "depth-2+4", "depth-3+6", "genhancer"} <= set(grid.cells)
        assert {"genhancer@10", "genhancer@30"} <= set(p.entries)
        discrete = next(s for s in trains if "configs/genhancer/toy-discrete.yaml" in s.argv)
        assert [a for a in discrete.argv if a.startswith("latent.vae_path=")][
            -1
        ] == "latent.vae_path=runs/toy/vq"
        quick = plan(grid, tmp_path / "q", quick=True).ordered()
        assert len(quick) < len(steps) / 5

"""Task suites and the per-run include directory handed to lmms-eval (``--include_path``).

Suites:
- ``toy``: our YAML tasks in ``eval/lmms/tasks/`` over the toy world's parquet files (``<world>/lmms/``).
- ``vision-centric``: the real tasks of GenHancer's Table 2 by their lmms-eval names (``mmvp``, ``cv_bench``,
  ``naturalbench``, ``pope_full``, ``scienceqa_img``), from the hub -- or, with ``--mirror DIR``, from local
  parquet files (``mirror_<name>`` tasks: lmms-eval's own YAML, ``include``d, with ``dataset_path: parquet``
  and ``data_files`` in DIR). ``hallusion_bench_image`` is available by name (it needs an OpenAI-compatible
  judge at aggregation time, so it is not in the default suite).

lmms-eval's task index lets built-in tasks win over ``--include_path`` ones of the same name, hence the
``mirror_`` prefix; ``canonical_task`` maps it back for results and the leaderboard.

Data paths: a task YAML names its files relative to its data root (the toy world's ``lmms/`` directory, or
the mirror directory). ``write_include_dir`` writes, per run, one small YAML per task that ``include``s the
real YAML and sets absolute ``data_files`` -- no environment variables, no edited copies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from genhancer.utils.errors import ConfigError, DataError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MIRROR_PREFIX = "mirror_"
TOY_TASKS = ("toy_vqa", "toy_mmvp", "toy_mmvp_ll", "toy_pope", "toy_cv_bench")
VISION_CENTRIC_TASKS = ("mmvp", "cv_bench", "naturalbench", "pope_full", "scienceqa_img")
SUITES: dict[str, tuple[str, ...]] = {"toy": TOY_TASKS, "vision-centric": VISION_CENTRIC_TASKS}
GROUPS: dict[str, tuple[str, ...]] = {
    "toy_pope": ("toy_pope_adversarial", "toy_pope_popular", "toy_pope_random"),
    "pope_full": ("pope_adv", "pope_pop", "pope_random"),
}


@dataclass(frozen=True)
class MirrorTask:
    """A real lmms-eval task read from local parquet: its YAML (relative to lmms_eval/tasks) and files."""

    yaml: str
    data_files: dict[str, str]  # split -> path relative to the mirror directory
    columns: tuple[str, ...]  # columns the task's utils read (documented in docs/eval.md)


MIRROR_TASKS: dict[str, MirrorTask] = {
    "mmvp": MirrorTask(
        "mmvp/mmvp.yaml",
        {"train": "mmvp/train.parquet"},
        ("Index", "Question", "Options", "Correct Answer", "image"),
    ),
    "cv_bench": MirrorTask(
        "cv_bench/cv_bench.yaml",
        {"test": "cv_bench/test.parquet"},
        ("idx", "type", "task", "source", "prompt", "choices", "answer", "image"),
    ),
    "naturalbench": MirrorTask(
        "naturalbench/naturalbench.yaml",
        {"test": "naturalbench/test.parquet"},
        ("Index", "Question", "Question_Type", "answer", "Image"),
    ),
    "pope_adv": MirrorTask(
        "pope/pope_adv.yaml",
        {"adversarial": "pope/adversarial.parquet"},
        ("question_id", "question", "answer", "category", "image"),
    ),
    "pope_pop": MirrorTask(
        "pope/pope_pop.yaml",
        {"popular": "pope/popular.parquet"},
        ("question_id", "question", "answer", "category", "image"),
    ),
    "pope_random": MirrorTask(
        "pope/pope_random.yaml",
        {"random": "pope/random.parquet"},
        ("question_id", "question", "answer", "category", "image"),
    ),
    "scienceqa_img": MirrorTask(
        "scienceqa/scienceqa_img.yaml",
        {"test": "scienceqa_img/test.parquet"},
        ("hint", "question", "choices", "answer", "image"),
    ),
    "hallusion_bench_image": MirrorTask(
        "hallusion_bench/hallusion_bench_image.yaml",
        {"image": "hallusion_bench_image/image.parquet"},
        (
            "category",
            "subcategory",
            "set_id",
            "figure_id",
            "question_id",
            "question",
            "gt_answer",
            "gt_answer_details",
            "image",
        ),
    ),
}
REAL_TASKS = (*MIRROR_TASKS, "pope_full")


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads lmms-eval YAML without importing anything: ``!function x.y`` becomes the string 'x.y'."""


_TagTolerantLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_task_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_TagTolerantLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a task YAML must be a mapping")
    return data


def toy_task_files() -> dict[str, Path]:
    """Toy task/group name -> its YAML in eval/lmms/tasks."""
    out = {}
    for p in sorted(TASKS_DIR.rglob("*.yaml")):
        cfg = read_task_yaml(p)
        name = cfg.get("task") if "task" in cfg and isinstance(cfg["task"], str) else cfg.get("group")
        if name:
            out[name] = p
    return out


def canonical_task(name: str) -> str:
    """``mirror_mmvp`` -> ``mmvp`` (results of a mirror run are the real task's)."""
    return name[len(MIRROR_PREFIX) :] if name.startswith(MIRROR_PREFIX) else name


def expand(spec: str) -> list[str]:
    """``toy`` | ``vision-centric`` | comma-separated suite and task names -> task names, in order."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ConfigError("--suite is empty; give toy, vision-centric or task names separated by commas")
    toy = toy_task_files()
    out: list[str] = []
    for item in items:
        names = SUITES.get(item, (item,))
        for name in names:
            if name not in toy and name not in REAL_TASKS:
                known = ", ".join([*SUITES, *sorted(toy), *REAL_TASKS])
                raise ConfigError(f"unknown task or suite {name!r}; known: {known}")
            if name not in out:
                out.append(name)
    return out


def _anchor(data_files: Any, root: Path, where: str) -> dict[str, str]:
    if not isinstance(data_files, dict) or not data_files:
        raise ConfigError(f"{where}: dataset_kwargs.data_files must map split -> file")
    out = {}
    for split, rel in data_files.items():
        path = (root / str(rel)).resolve()
        if not path.is_file():
            raise DataError(f"{where}: data file for split {split!r} not found: {path}")
        out[str(split)] = str(path)
    return out


def _write_yaml(path: Path, data: dict[str, Any], comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {comment}\n" + yaml.safe_dump(data, sort_keys=False))


def toy_data_root(world_or_lmms: str | Path) -> Path:
    """Accept the toy world directory or its ``lmms/`` directory; check the manifest is there."""
    p = Path(world_or_lmms).expanduser()
    for cand in (p / "lmms", p):
        if (cand / "manifest.json").is_file():
            return cand.resolve()
    raise DataError(
        f"no toy lmms-eval data under {p} (expected {p}/lmms/manifest.json); build the toy world first: "
        "python -m toyworld build --out DIR"
    )


def write_include_dir(
    tasks: list[str], out: str | Path, *, toy_data: str | Path | None = None, mirror: str | Path | None = None
) -> tuple[Path, list[str]]:
    """Write the per-run include dir for ``tasks``; returns (dir, task names to pass to ``--tasks``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    toy = toy_task_files()
    cli_names: list[str] = []
    root_toy = toy_data_root(toy_data) if any(t in toy for t in tasks) and toy_data is not None else None
    for name in tasks:
        if name in toy:
            if root_toy is None:
                raise ConfigError(
                    f"task {name!r} reads the toy world's data: pass --world DIR (the toy world)"
                )
            members = GROUPS.get(name, (name,))
            for member in members:
                src = toy[member]
                cfg = read_task_yaml(src)
                files = _anchor(
                    (cfg.get("dataset_kwargs") or {}).get("data_files"), root_toy, f"{src} ({member})"
                )
                _write_yaml(
                    out / "toy" / f"{member}.yaml",
                    {"include": str(src), "dataset_kwargs": {"data_files": files}},
                    f"generated by eval.lmms: {member} over {root_toy}",
                )
            if name in GROUPS:
                _write_yaml(
                    out / "toy" / f"{name}.yaml",
                    {"group": name, "task": list(members)},
                    "generated by eval.lmms",
                )
            cli_names.append(name)
        elif mirror is not None:
            root = Path(mirror).expanduser()
            if not root.is_dir():
                raise DataError(f"--mirror {root}: directory not found (layout: docs/eval.md)")
            members = GROUPS.get(name, (name,))
            for member in members:
                if member not in MIRROR_TASKS:
                    raise ConfigError(
                        f"task {member!r} has no mirror layout; known: {', '.join(MIRROR_TASKS)}"
                    )
                spec = MIRROR_TASKS[member]
                src = lmms_eval_tasks_dir() / spec.yaml
                if not src.is_file():
                    raise ConfigError(f"lmms-eval has no task file {src}; is lmms-eval 0.7.3 installed?")
                files = _anchor(spec.data_files, root.resolve(), f"--mirror {root} ({member})")
                _write_yaml(
                    out / "mirror" / f"{MIRROR_PREFIX}{member}.yaml",
                    {
                        "include": str(src),
                        "task": MIRROR_PREFIX + member,
                        "dataset_path": "parquet",
                        "dataset_name": None,
                        "dataset_kwargs": {"data_files": files},
                    },
                    f"generated by eval.lmms: lmms-eval's {member} over local parquet in {root.resolve()}",
                )
            if name in GROUPS:
                _write_yaml(
                    out / "mirror" / f"{MIRROR_PREFIX}{name}.yaml",
                    {"group": MIRROR_PREFIX + name, "task": [MIRROR_PREFIX + m for m in members]},
                    "generated by eval.lmms",
                )
            cli_names.append(MIRROR_PREFIX + name)
        else:
            cli_names.append(name)  # the real task from the hub (lmms-eval's own YAML)
    (out / "tasks.json").write_text(json.dumps({"tasks": tasks, "cli_tasks": cli_names}, indent=2) + "\n")
    return out, cli_names


def lmms_eval_tasks_dir() -> Path:
    """The installed lmms-eval's tasks directory (found without importing lmms_eval)."""
    import importlib.util

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("lmms-eval is not installed; run `bash scripts/setup_env.sh` (docs/eval.md)")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"

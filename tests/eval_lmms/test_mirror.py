"""The vision-centric mirror: lmms-eval's own task YAMLs read local parquet files in the real column
layout."""

from __future__ import annotations

import pytest
from PIL import Image

from eval.lmms import suites


def _img(color: str) -> Image.Image:
    return Image.new("RGB", (24, 24), color)


def _rows(task: str, n: int = 4) -> list[dict]:
    if task == "mmvp":
        return [
            {
                "Index": i + 1,
                "Question": "Is the dog facing left or right?",
                "Options": "(a) Left (b) Right",
                "Correct Answer": "(a)" if i % 2 == 0 else "(b)",
                "image": _img("red"),
            }
            for i in range(n)
        ]
    if task == "cv_bench":
        return [
            {
                "idx": i,
                "type": "2D",
                "task": "Count",
                "source": "COCO",
                "question": "How many cats?",
                "prompt": "How many cats are in the image?\n(A) 1\n(B) 2",
                "choices": ["1", "2"],
                "answer": "(A)",
                "image": _img("blue"),
            }
            for i in range(n)
        ]
    if task == "naturalbench":
        return [
            {
                "Index": i,
                "Question": "Is the cup on the left?",
                "Question_Type": "yes_no",
                "answer": "Yes",
                "Image": _img("green"),
            }
            for i in range(n)
        ]
    if task.startswith("pope"):
        return [
            {
                "question_id": str(i),
                "question": "Is there a car in the image?",
                "answer": "yes" if i % 2 else "no",
                "category": task,
                "image_source": f"img{i}",
                "image": _img("white"),
            }
            for i in range(n)
        ]
    if task == "scienceqa_img":
        return [
            {
                "hint": "",
                "question": "Which is a mammal?",
                "choices": ["cat", "trout"],
                "answer": 0,
                "image": _img("gray"),
            }
            for _ in range(n)
        ]
    raise AssertionError(task)


def write_mirror(root) -> None:
    import datasets

    for name in ("mmvp", "cv_bench", "naturalbench", "pope_adv", "pope_pop", "pope_random", "scienceqa_img"):
        spec = suites.MIRROR_TASKS[name]
        for rel in spec.data_files.values():
            rows = _rows(name)
            assert set(spec.columns) <= set(rows[0]), name  # the documented layout is what we write
            cols = {k: [r[k] for r in rows] for k in rows[0]}
            ds = datasets.Dataset.from_dict(cols).cast_column(
                "Image" if name == "naturalbench" else "image", datasets.Image()
            )
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(root / rel))


@pytest.mark.slow
def test_mirror_yamls_load_local_parquet(tmp_path):
    from lmms_eval.tasks import TaskManager, get_task_dict

    mirror = tmp_path / "mirror"
    write_mirror(mirror)
    include, names = suites.write_include_dir(
        suites.expand("vision-centric"), tmp_path / "inc", mirror=mirror
    )
    assert names == [
        "mirror_mmvp",
        "mirror_cv_bench",
        "mirror_naturalbench",
        "mirror_pope_full",
        "mirror_scienceqa_img",
    ]
    manager = TaskManager("ERROR", include_path=str(include), model_name="genhancer_llava")
    tasks = get_task_dict(names, manager)
    flat = {}
    for key, value in tasks.items():  # the pope group maps to its three subtasks
        flat.update(value if isinstance(value, dict) else {key: value})
    assert {
        "mirror_mmvp",
        "mirror_cv_bench",
        "mirror_naturalbench",
        "mirror_scienceqa_img",
        "mirror_pope_adv",
        "mirror_pope_pop",
        "mirror_pope_random",
    } <= {getattr(k, "group_name", k) for k in flat}
    for name, task in flat.items():
        docs = task.test_docs()
        assert len(docs) == 4, name
        doc = docs[0]
        assert isinstance(task.doc_to_text(doc), str) and task.doc_to_text(doc)
        visuals = task.doc_to_visual(doc)
        assert isinstance(visuals[0], Image.Image)
    mmvp = flat["mirror_mmvp"]
    assert "A. Left\nB. Right" in mmvp.doc_to_text(
        mmvp.test_docs()[0]
    )  # lmms-eval's own utils read our columns


def test_mirror_missing_file_is_one_clear_message(tmp_path):
    from genhancer.utils.errors import DataError

    (tmp_path / "m").mkdir()
    with pytest.raises(
        DataError, match=r"mirror_?.*mmvp.*not found: .*mmvp/train.parquet|\(mmvp\).*not found"
    ):
        suites.write_include_dir(["mmvp"], tmp_path / "inc", mirror=tmp_path / "m")
    assert suites.canonical_task("mirror_pope_adv") == "pope_adv"

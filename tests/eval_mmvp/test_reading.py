"""Reading and validating an MMVP-VLM folder: every bad input is one DataError naming file and row/qids."""

from __future__ import annotations

import csv

import pytest

from eval.mmvp_vlm import read_benchmark
from genhancer.utils.errors import DataError


def _rewrite_rows(bench, edit):
    path = bench / "Questions.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_reads_pairs_in_order(bench_factory):
    pairs = read_benchmark(bench_factory())
    assert [p.qids for p in pairs] == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert [p.pattern for p in pairs] == ["Orientation and Direction"] * 2 + ["Color and Appearance"] * 2
    assert pairs[0].statements == (
        "a square with a white dot on the left",
        "a square with a white dot on the right",
    )
    assert pairs[2].images[1].name == "6.jpg" and pairs[2].images[1].parent.name == "Color and Appearance"
    assert pairs[0].lines == (2, 3)  # file lines: header is line 1


@pytest.mark.parametrize(
    "header", [("lndex", "Type", "Statement"), ("Question ID", "Type", "Statement"), None]
)
def test_header_spellings_and_bom_are_tolerated(bench_factory, header):
    pairs = read_benchmark(bench_factory(header=header, bom=True))
    assert len(pairs) == 4 and pairs[0].qids == (1, 2)


def test_missing_image_names_the_path(bench_factory):
    bench = bench_factory()
    (bench / "MLLM_VLM Images" / "Color and Appearance" / "7.jpg").unlink()
    with pytest.raises(DataError, match=r"Color and Appearance/7\.jpg"):
        read_benchmark(bench)


def test_missing_questions_file(tmp_path):
    with pytest.raises(DataError, match="Questions.csv not found"):
        read_benchmark(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r[:3] + [[r[3][0], r[3][1]]] + r[4:], r"line 4: expected 3 columns"),
        (lambda r: r[:5] + [["x5", r[5][1], r[5][2]]] + r[6:], r"line 6: question id 'x5' is not an integer"),
        (lambda r: r[:2] + [[r[2][0], " ", r[2][2]]] + r[3:], r"line 3: empty type"),
    ],
)
def test_malformed_row_names_the_line(bench_factory, edit, message):
    bench = bench_factory()
    _rewrite_rows(bench, edit)
    with pytest.raises(DataError, match=message):
        read_benchmark(bench)


def test_trailing_empty_cells_are_tolerated(bench_factory):
    bench = bench_factory()
    _rewrite_rows(bench, lambda r: [row + ["", ""] for row in r])
    assert len(read_benchmark(bench)) == 4


def test_pair_with_two_types_names_the_qids(bench_factory):
    bench = bench_factory()
    _rewrite_rows(bench, lambda r: r[:4] + [[r[4][0], "Color and Appearance", r[4][2]]] + r[5:])
    with pytest.raises(DataError, match=r"lines 4-5: the pair of qids 3 and 4 has different types"):
        read_benchmark(bench)


def test_odd_number_of_rows(bench_factory):
    bench = bench_factory()
    _rewrite_rows(bench, lambda r: r[:-1])
    with pytest.raises(DataError, match=r"odd number of question rows \(7\).*line 8, qid 7"):
        read_benchmark(bench)


def test_rows_that_are_not_a_pair(bench_factory):
    bench = bench_factory()
    _rewrite_rows(bench, lambda r: [r[0], r[2], r[1], *r[3:]])  # qids 2, 1: even first
    with pytest.raises(DataError, match=r"qids 2, 1 do not form a pair"):
        read_benchmark(bench)

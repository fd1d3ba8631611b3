"""``python -m genhancer.utils.batch``: entry points run in one process give what their own processes give;
the first failure stops the batch; a bad line fails before anything runs; bash's quoting round-trips."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genhancer.utils import batch
from genhancer.utils.errors import UserError
from tests.eval_mmvp.conftest import write_bench

REPO = Path(__file__).resolve().parents[2]


def _result(path: Path) -> dict:
    res = json.loads(path.read_text())
    res.pop("seconds")
    return res


def _run(tmp_path: Path, lines: list[str], *extra: str) -> int:
    script = tmp_path / "batch.txt"
    script.write_text("\n".join(lines) + "\n")
    return batch.main([str(script), *extra])


def test_results_equal_separate_processes_and_notes_print_like_steps(tiny_clip_dir, tmp_path, capsys):
    bench = write_bench(tmp_path / "bench")
    a, b, cmp = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    lines = [
        "# scoring the tiny CLIP",
        f"eval.mmvp_vlm --model {tiny_clip_dir} --benchmark {bench} --out {a}",
        f"eval.mmvp_vlm --compare {a} {a} --labels before after --out {cmp}",
    ]
    assert _run(tmp_path, lines, "--name", "demo", "--since", str(time.time() - 42)) == 0
    out = capsys.readouterr().out  # seconds since --since, however long the imports before the note took
    assert re.search(r"^\[demo (4[2-9]|[5-9]\d)s\] scoring the tiny CLIP$", out, re.M), out
    assert "[batch] 2 commands in" in out
    assert json.loads(cmp.read_text())["average"]["delta"] == 0.0
    cmd = [sys.executable, "-m", "eval.mmvp_vlm", "--model", str(tiny_clip_dir), "--benchmark", str(bench)]
    subprocess.run([*cmd, "--out", str(b)], cwd=REPO, check=True, capture_output=True)
    assert _result(a) == _result(b)


def test_first_failure_stops_the_batch_with_its_exit_code(tiny_clip_dir, tmp_path, capsys):
    bench = write_bench(tmp_path / "bench")
    never = tmp_path / "never.json"
    lines = [
        f"eval.mmvp_vlm --model {tmp_path / 'no_model'} --benchmark {bench} --out {tmp_path / 'x.json'}",
        f"eval.mmvp_vlm --model {tiny_clip_dir} --benchmark {bench} --out {never}",
    ]
    assert _run(tmp_path, lines) == 2
    err = capsys.readouterr().err
    assert "no_model" in err and "error: batch line 1 exited with 2: eval.mmvp_vlm --model" in err
    assert not never.exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("eval.no_such_module --x 1", r"batch line 3: no module 'eval.no_such_module'"),
        ("json.tool x.json", r"batch line 3: 'json.tool' is not a module of genhancer, eval"),
        ("eval.mmvp_vlm --out 'unclosed", r"batch line 3: cannot split .*No closing quotation"),
        ("genhancer.utils.errors", r"batch line 3: genhancer.utils.errors has no main"),
        ("genhancer.utils --x", r"batch line 3: genhancer.utils.__main__ has no main"),
    ],
)
def test_a_bad_line_fails_before_anything_runs(tiny_clip_dir, tmp_path, capsys, bad, message):
    bench = write_bench(tmp_path / "bench")
    first = tmp_path / "first.json"
    lines = [f"eval.mmvp_vlm --model {tiny_clip_dir} --benchmark {bench} --out {first}", "", bad]
    assert _run(tmp_path, lines) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not first.exists()


def test_packages_run_their_main_and_usage_errors_are_exit_codes(tmp_path, capsys):
    assert _run(tmp_path, ["toyworld --help"]) == 0
    assert "python -m toyworld <command>" in capsys.readouterr().out
    assert _run(tmp_path, ["eval.mmvp_vlm --no-such-flag"]) == 2  # argparse's SystemExit(2)
    assert "eval.mmvp_vlm: error: unrecognized arguments: --no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_bash_quoting_round_trips(tmp_path, locale):
    """scripts/lib.sh queues lines with printf '%q ': spaces, quotes, globs, braces, control characters and
    non-ASCII text (bash writes the last two as $'...' quotes; octal bytes in the C locale) come back."""
    args = ["eval.mmvp_vlm", "--out", "a dir/it's.json", "runs/{train,val}", "*.png", "$HOME", "\\$'x'"]
    args += ["tab\there", "new\nline", "café's", "$'\\t'"]
    env = {**os.environ, "LC_ALL": locale}
    line = subprocess.run(
        ["bash", "-c", 'printf "%q " "$@"', "_", *args], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert "$'" in line  # the ANSI-C quotes are really exercised
    (parsed,) = batch.parse([line])
    assert [parsed.module, *parsed.args] == args


def test_ansi_c_quote_errors_name_the_line():
    with pytest.raises(UserError, match="batch line 1: .*no closing quotation"):
        batch.parse(["eval.mmvp_vlm $'abc"])
    with pytest.raises(UserError, match=r"batch line 1: .*unsupported escape \\q"):
        batch.parse(["eval.mmvp_vlm $'a\\qb'"])


def test_missing_batch_file_is_named(tmp_path, capsys):
    assert batch.main([str(tmp_path / "nope.txt")]) == 2
    assert "no batch file" in capsys.readouterr().err

"""Running a plan: a subprocess per step, finished steps skipped, a failed cell reported while the rest go on.

Each step's output goes to ``<out>/logs/<step>.log`` (the terminal shows a progress bar and a line per step);
``<out>/status.json`` is rewritten after every step: state (done, ran, failed, blocked), seconds, log file.
A step whose prerequisite failed is ``blocked`` (naming it) and not run; every other step still runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from genhancer.experiments.grid import Step
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.logging import get_logger, progress

log = get_logger("genhancer.experiments")
TAIL_LINES = 15


def log_path(out: Path, step: Step) -> Path:
    return out / "logs" / (step.name.replace("/", "__") + ".log")


def _tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    return "\n".join("    " + line for line in lines)


def run_step(step: Step, out: Path) -> dict[str, Any]:
    """Run one step unless it is done; returns its status record."""
    if step.done.exists():
        return {"state": "done", "seconds": 0.0}
    logfile = log_path(out, step)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(logfile, "w") as fh:
        cmd = step.command()
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    seconds = time.time() - start
    record = {"state": "ran", "seconds": seconds, "log": str(logfile)}
    if proc.returncode != 0 or not step.done.exists():
        why = f"exit {proc.returncode}" if proc.returncode else f"exit 0 but {step.done} was not written"
        record.update(state="failed", error=why)
        log.error("FAILED %s (%s); the last lines of %s:\n%s", step.name, why, logfile, _tail(logfile))
    return record


def run_plan(steps: list[Step], out: Path) -> dict[str, Any]:
    """Run every step in order; returns (and keeps in ``<out>/status.json``) the status of each."""
    status_file = out / "status.json"
    previous = read_json(status_file) if status_file.is_file() else {}
    before = previous.get("steps", {})
    status: dict[str, Any] = {"started": time.time(), "steps": {}}
    for step in progress(steps, desc="grid", unit="step"):
        bad = [a for a in step.after if status["steps"].get(a, {}).get("state") in ("failed", "blocked")]
        if bad:
            record = {"state": "blocked", "error": f"needs {bad[0]}, which did not finish"}
        else:
            record = run_step(step, out)
            if record["state"] == "ran":
                log.info("%-60s %6.0f s", step.name, record["seconds"])
            elif before.get(step.name, {}).get("state") in ("ran", "done"):
                record = {**before[step.name], "state": "done"}  # keeps the seconds of the run that made it
        status["steps"][step.name] = record
        status["seconds"] = time.time() - status["started"]
        status["step_seconds"] = sum(r.get("seconds", 0.0) for r in status["steps"].values())
        write_json(status_file, status)
    return status


def failures(status: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {r['state']} ({r.get('error', '')})"
        for name, r in status["steps"].items()
        if r["state"] in ("failed", "blocked")
    ]

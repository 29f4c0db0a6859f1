"""A sweep's bookkeeping beside its jobs: the plan (``sweep.json``) and ``finished.log``."""

from __future__ import annotations

import json
from pathlib import Path

from .layout import FINISHED_LOG, SWEEP_JSON
from .writer import append_line, write_json


def write_plan(sweep_dir: Path, total: int, grid: dict[str, int]) -> None:
    """Record how many runs the sweep has, and its grid: {parameter: number of values}."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / SWEEP_JSON, {"total": total, "grid": grid})


def planned_total(sweep_dir: Path) -> int | str:
    """The number of runs in the sweep (from its sweep.json), or '?'."""
    try:
        return json.loads((sweep_dir / SWEEP_JSON).read_text())["total"]
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def mark_finished(sweep_dir: Path, job: int, status: str) -> int:
    """Append ``job status`` to the sweep's finished.log; return how many jobs have finished.

    The log is shared by every job of the sweep, whichever process or node runs it; one short
    O_APPEND write per job keeps the lines whole."""
    log = sweep_dir / FINISHED_LOG
    append_line(log, f"{job} {status}")
    return len(log.read_text().splitlines())

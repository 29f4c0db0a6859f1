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


def planned_grid(sweep_dir: Path) -> dict[str, int]:
    """The sweep's grid from its sweep.json ({parameter: number of values}), or {}."""
    try:
        grid = json.loads((sweep_dir / SWEEP_JSON).read_text())["grid"]
        return grid if isinstance(grid, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def swept_label(grid: dict[str, int], overrides: list[str]) -> str:
    """'depth=8 lr=0.03 seed=1': the value a sweep job takes for each parameter the sweep varies
    (those of ``grid`` with more than one value), read from the job's own overrides (Hydra's
    ``overrides.task``: 'model.depth=8', ...). A parameter is named by the last part of its key
    unless two share it; the seed comes last."""
    values: dict[str, str] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    swept = [k for k, n in grid.items() if isinstance(n, int) and n > 1 and k in values]
    swept.sort(key=lambda k: k == "seed")
    last = [k.rsplit(".", 1)[-1] for k in swept]
    return " ".join(f"{name if last.count(name) == 1 else key}={values[key]}"
                    for key, name in zip(swept, last, strict=True))


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

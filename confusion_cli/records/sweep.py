"""A sweep's bookkeeping beside its jobs: the plan (``sweep.json``: total, grid, the values swept,
the overrides that say what it computes and a digest of its jobs' configs) and ``finished.log``;
the check that a launch folder belongs to one sweep; and the launch folder a relaunch of the same
sweep reuses (``previous_launch``), so that one sweep keeps one folder across relaunches."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfusionError
from .layout import CLAIMS, FINISHED_LOG, SWEEP_JSON
from .safe import HYDRA_FILES, check_dirs, check_files, make_dir, read_text
from .writer import append_line, write_json


def write_plan(sweep_dir: Path, total: int, grid: dict[str, int], overrides: list[str] | None = None,
               root: Path | None = None, values: dict[str, list[str]] | None = None,
               digest: str | None = None) -> None:
    """Record how many runs the sweep has, its grid ({parameter: number of values}) and, when
    given, the values swept ({parameter: [value, ...]} in the jobs' order), the overrides that
    say what it computes (``plan_overrides``: a relaunch into the same folder must give the same)
    and the digest of its jobs' configs (``previous_launch`` compares it). The folder is made
    below ``root`` (the records root) without following links."""
    make_dir(sweep_dir, root)
    plan: dict[str, Any] = {"total": total, "grid": grid}
    if values is not None:
        plan["values"] = values
    if overrides is not None:
        plan["overrides"] = overrides
    if digest is not None:
        plan["jobs_digest"] = digest
    write_json(sweep_dir / SWEEP_JSON, plan)


LAUNCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def previous_launch(root: Path, sweep_dir: Path, overrides: list[str], digest: str) -> Path | None:
    """The launch folder of an earlier launch of the same sweep, for a relaunch to continue in:
    a sibling of ``sweep_dir`` (``sweeps/NAME/*``) whose sweep.json (the current user's own, read
    as a record) has the same ``overrides`` and the same jobs' digest (the same jobs with the
    same configs: a changed default makes a fresh folder, as before), that is a real folder of
    the current user, passes ``check_sweep_folder`` and is named as a launch_id may be; the one
    whose sweep.json was written last. None when there is none (the launch gets a fresh one)."""
    parent = Path(sweep_dir).parent
    try:
        check_dirs(parent, root)
        names = os.listdir(parent)
    except (OSError, ConfusionError):
        return None
    found: list[tuple[float, Path]] = []
    for name in names:
        folder = parent / name
        if folder == Path(sweep_dir) or not LAUNCH_NAME.match(name):
            continue
        try:
            st = os.lstat(folder)
            if not os.path.isdir(folder) or os.path.islink(folder) or st.st_uid != os.getuid():
                continue
            plan = read_plan(folder)
            if plan.get("overrides") != overrides or plan.get("jobs_digest") != digest:
                continue
            check_sweep_folder(root, folder, int(plan.get("total", -1)), plan.get("grid") or {}, overrides)
            found.append((os.lstat(folder / SWEEP_JSON).st_mtime, folder))
        except (OSError, ValueError, TypeError, ConfusionError):
            continue
    return max(found)[1] if found else None


# overrides that say where or how a sweep runs, not what it computes: a relaunch may change them
WHERE_KEYS = ("launch_id", "records_root", "data_dir", "progress", "device", "threads",
              "memory_budget_gib", "logger")


def plan_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's command line that say what it computes, sorted: those of
    ``WHERE_KEYS`` and Hydra's own (``hydra.*``, ``hydra/launcher=...``) left out."""
    def key(text: str) -> str:
        return text.split("=", 1)[0].lstrip("+~")

    return sorted(o for o in overrides if key(o) not in WHERE_KEYS and not key(o).startswith("hydra"))


def check_sweep_folder(root: Path, sweep_dir: Path, total: int, grid: dict[str, int],
                       overrides: list[str]) -> None:
    """Before a sweep is launched into ``sweep_dir`` (``sweeps/NAME/LAUNCH_ID``) and anything is
    written there: one line (a ConfusionError) when the folder already holds a sweep launched
    with other overrides (``plan_overrides``; for a sweep.json from before they were kept, another
    total or grid), when its sweep.json cannot be read, or when the folder, a folder above it
    below ``root``, a job's ``.hydra`` or ``.claims`` is a link or a file, or a file Hydra writes
    there (``multirun.yaml``, a job's ``.hydra/*.yaml``) is a link. The same sweep
    relaunched into its own folder passes: its jobs resume or skip their runs."""
    check_dirs(sweep_dir, root)
    check_dirs(Path(root) / CLAIMS, root)
    check_files(sweep_dir, ("multirun.yaml",))  # Hydra writes it by name, following a link
    if os.path.isdir(sweep_dir) and not os.path.islink(sweep_dir):
        for job in os.listdir(sweep_dir):
            if job.isdigit():
                check_dirs(sweep_dir / job / ".hydra", root)
                check_files(sweep_dir / job, HYDRA_FILES)
    if not os.path.lexists(sweep_dir / SWEEP_JSON):
        return
    fix = ("give this launch a new launch_id (or leave launch_id out: a relaunch finds the runs "
           "already done by their config)")
    try:
        plan = json.loads(read_text(sweep_dir / SWEEP_JSON))
        if not isinstance(plan, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfusionError(f"{sweep_dir} already holds a sweep.json that cannot be read ({line}): "
                             f"{fix}") from None
    if "overrides" in plan:
        if plan["overrides"] != overrides:
            raise ConfusionError(f"{sweep_dir} already holds a sweep launched as "
                                 f"`{' '.join(plan['overrides'])}`, not `{' '.join(overrides)}`: {fix}")
    elif plan.get("total") != total or plan.get("grid") != grid:
        raise ConfusionError(f"{sweep_dir} already holds a sweep of another plan ({plan.get('total')} "
                             f"runs, grid {plan.get('grid')}; this one: {total} runs, grid {grid}): {fix}")


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's sweep.json (read as a record file: no link, regular, capped), or {}."""
    try:
        plan = json.loads(read_text(sweep_dir / SWEEP_JSON))
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def planned_grid(sweep_dir: Path) -> dict[str, int]:
    """The sweep's grid from its sweep.json ({parameter: number of values}), or {}."""
    grid = read_plan(sweep_dir).get("grid")
    return grid if isinstance(grid, dict) else {}


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
    total = read_plan(sweep_dir).get("total")
    return total if isinstance(total, int) else "?"


def finished_count(sweep_dir: Path) -> int:
    """How many of the sweep's jobs have finished (the distinct job numbers of its finished.log:
    a relaunch into the same folder marks its jobs again); 0 without a readable log."""
    try:
        text = read_text(sweep_dir / FINISHED_LOG)
    except (OSError, ValueError):
        return 0
    return len({line.split()[0] for line in text.splitlines() if line.split()})


def mark_finished(sweep_dir: Path, job: int, status: str) -> int:
    """Append ``job status`` to the sweep's finished.log; return how many of its jobs have
    finished (distinct job numbers: a relaunch into the same folder marks its jobs again).

    The log is shared by every job of the sweep, whichever process or node runs it; one short
    O_APPEND write per job keeps the lines whole. It is appended to and read as a record file
    (no link, a regular file of the current user with one hard link, at most 16 MiB)."""
    log = sweep_dir / FINISHED_LOG
    append_line(log, f"{job} {status}")
    return len({line.split()[0] for line in read_text(log).splitlines() if line.split()})

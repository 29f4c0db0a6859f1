"""`confusion status [RUNS_DIR]`: where the runs under a records directory stand, and the end of a sweep.

For every sweep launch folder (``sweeps/NAME/LAUNCH_ID``, the folder holding ``sweep.json``) and
for the single runs: how many runs are complete, running, interrupted (run.json says running but
no process holds the run lock), failed, diverged and still to do, an ETA, and the failures
grouped by their one-line reason. A run is counted only once ``records.vet`` believes it (the
runner's and ``records.load``'s vetting); any other is left out with a one-line RecordWarning.
With ``table=True`` (and at the end of a sweep) the results at
each architecture's selected LR (``figures.select``): mean ± std over seeds.

A launch's runs are its jobs' runs wherever they live: a job that found its config already run
(by config hash, as ``run.py`` does) in an earlier launch of the same sweep counts that run, so a
relaunched sweep reads as one. Reading counts needs neither torch nor the figures; the table
imports them.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import records
from .errors import ConfusionError
from .progress import duration  # the live lines and status write times alike
from .records.layout import ERROR, SWEEP_JSON
from .records.safe import read_text

STATUSES = ("complete", "running", "interrupted", "failed", "diverged")
TABLE_METRICS = ("train_loss", "test_acc", "min_cos", "q05_cos", "eta", "ex_q05_cos")


@dataclass
class Run:
    dir: Path
    meta: dict[str, Any]
    status: str               # run.json's, or interrupted (running, no live process)
    elsewhere: bool = False   # run by a job of this launch, recorded in another launch's folder

    @property
    def reason(self) -> str:
        """The one-line reason of a failure: run.json's error, else the last line of error.txt."""
        text = str(self.meta.get("error") or "")
        if not text.strip():
            try:
                text = next((line for line in reversed(read_text(self.dir / ERROR).splitlines())
                             if line.strip()), "")
            except (OSError, ValueError):
                text = ""
        line = text.strip().splitlines()[0] if text.strip() else "no reason recorded"
        return line if len(line) <= 160 else line[:157] + "..."


@dataclass
class Group:
    """One sweep launch folder (``planned`` from its sweep.json), or the single runs (``planned``
    None)."""
    folder: Path
    planned: int | None = None
    grid: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    relaunched_as: Path | None = None  # a later launch of the same plan that holds all these runs

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(run.status for run in self.runs)
        counts = {status: found.pop(status, 0) for status in STATUSES}
        counts.update(found)  # unreadable, or a status a later version writes
        if self.planned is not None:
            counts["to do"] = max(0, self.planned - len(self.runs))
        return counts


# -- reading ----------------------------------------------------------------------------------
def _read(root: Path, run_dir: Path) -> Run | None:
    """The run in ``run_dir`` found under ``root``, once ``records.vet`` believes it; else None,
    with a one-line RecordWarning naming it and why."""
    if (found := records.vetted(root, run_dir)) is None:
        return None
    meta = found[0]
    return Run(run_dir, meta, records.live_status(run_dir, str(meta["status"])))


def _read_all(root: Path) -> dict[Path, Run]:
    return {d: run for d in records.run_dirs(root) if (run := _read(root, d)) is not None}


def _family(launch: Path) -> Path:
    """Where earlier launches of the same sweep live: ``sweeps/NAME`` in the records layout,
    else the launch folder alone."""
    return launch.parent if launch.parent.parent.name == "sweeps" else launch


def _job_hash(job_dir: Path) -> str | None:
    """The config hash of the job whose Hydra folder is ``job_dir`` (None if unreadable)."""
    try:
        return records.config_hash(records.read_config(job_dir / ".hydra" / "config.yaml"))
    except Exception:  # noqa: BLE001 - a job we cannot read counts as not run
        return None


def _launch_runs(launch: Path, present: dict[Path, Run], index: dict[str, list[Path]]) -> list[Run]:
    """The runs of the jobs of ``launch``: the run in a job's folder, else the run of the same
    config (its hash) elsewhere in the sweep's family, as the job itself chose it."""
    runs: dict[Path, Run] = {}
    jobs = (p for p in launch.iterdir() if p.name.isdigit() and p.is_dir() and not p.is_symlink())
    for job_dir in sorted(jobs):
        if job_dir in present:
            runs[job_dir] = present[job_dir]
            continue
        found = index.get(_job_hash(job_dir) or "", [])
        if found:
            run = present.get(found[0]) or _read(_family(launch), found[0])
            if run is not None:
                runs[run.dir] = Run(run.dir, run.meta, run.status, elsewhere=True)
    for run_dir, run in present.items():  # a run in the launch folder but not in a job folder
        if launch in run_dir.parents and run_dir not in runs and run_dir.parent != launch:
            runs[run_dir] = run
    return list(runs.values())


def survey(root: str | Path) -> list[Group]:
    """Every sweep launch under ``root`` and the single runs, each with its runs."""
    root = Path(root)
    if not root.is_dir():
        raise ConfusionError(f"no such directory: {root} (give the records directory, e.g. "
                             "`confusion status outputs`)")
    launches = sorted({p.parent for p in root.rglob(SWEEP_JSON)})
    present = _read_all(root)
    families: dict[Path, dict[str, list[Path]]] = {}
    groups = []
    for launch in launches:
        family = _family(launch)
        if family not in families:
            runs = present if root in (family, *family.parents) else _read_all(family)
            index: dict[str, list[Path]] = {}
            for run in sorted(runs.values(), key=lambda r: r.status not in records.FINISHED):
                if run.meta.get("config_hash"):
                    index.setdefault(run.meta["config_hash"], []).append(run.dir)
            families[family] = index
        plan = _plan(launch)
        groups.append(Group(launch, plan.get("total"), plan.get("grid") or {},
                            _launch_runs(launch, present, families[family])))
    _mark_relaunched(groups)
    in_launch = {run.dir for group in groups for run in group.runs}
    single = [run for d, run in present.items()
              if d not in in_launch and not any(launch in d.parents for launch in launches)]
    if single:
        groups.append(Group(root, runs=single))
    return groups


def _plan(launch: Path) -> dict[str, Any]:
    try:
        plan = json.loads(read_text(launch / SWEEP_JSON))
        total = plan.get("total")
        return {"total": total if isinstance(total, int) else None, "grid": plan.get("grid")}
    except (OSError, ValueError, AttributeError):
        return {}


def _mark_relaunched(groups: list[Group]) -> None:
    """A launch whose runs a later launch of the same plan (same family, total and grid) also
    counts was relaunched: its counts are those of the later one."""
    for i, group in enumerate(groups):
        mine = {run.dir for run in group.runs}
        for later in groups[i + 1:]:
            if (_family(later.folder) == _family(group.folder) and later.planned == group.planned
                    and later.grid == group.grid and mine <= {run.dir for run in later.runs}):
                group.relaunched_as = later.folder


# -- the ETA ----------------------------------------------------------------------------------
def _time(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except (TypeError, ValueError):
        return None


def segments(run: Run, now: float) -> list[tuple[float, float]]:
    """The (start, end) times of each segment of ``run`` (run.json's ``segments``, else its
    start_time and end_time), the last ending now while it runs."""
    recorded = run.meta.get("segments")
    if not isinstance(recorded, list) or not recorded:
        recorded = [{"start": run.meta.get("start_time"), "end": run.meta.get("end_time")}]
    found = []
    for i, segment in enumerate(s for s in recorded if isinstance(s, dict)):
        start, end = _time(segment.get("start")), _time(segment.get("end"))
        if run.status == "running" and i == len(recorded) - 1:
            end = now
        if start is not None and end is not None and end >= start:
            found.append((start, end))
    return found


def parallelism(runs: list[Run], now: float) -> int:
    """The most runs seen at once: overlaps of the recorded segments of the runs (up to now for
    a running one), and the runs running now."""
    events = [(when, step) for run in runs for start, end in segments(run, now)
              for when, step in ((start, 1), (end, -1))]
    most = live = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
        live += step
        most = max(most, live)
    return max(1, most, sum(run.status == "running" for run in runs))


def eta(group: Group, now: float | None = None) -> str:
    """'ETA 12m30s (median run 2m05s x 6 left, 2 at once)', or why there is none."""
    now = time.time() if now is None else now
    counts = group.counts
    left, running = counts.get("to do", 0), counts["running"]
    if left + running == 0:
        return ("done; interrupted runs resume when the same command is run again"
                if counts["interrupted"] else "")
    walls = [float(run.meta["wall_seconds"]) for run in group.runs
             if run.status in records.FINISHED and isinstance(run.meta.get("wall_seconds"), (int, float))]
    if not walls:
        return "ETA unknown (no run finished yet)"
    median = statistics.median(walls)
    at_once = parallelism(group.runs, now)
    rest = 0.0
    for run in group.runs:
        if run.status == "running" and (spans := segments(run, now)):
            spent = float(run.meta.get("wall_seconds_before") or 0) + spans[-1][1] - spans[-1][0]
            rest += max(0.0, median - spent)
    remaining = (left * median + rest) / min(at_once, left + running)
    how = f"median run {duration(median)} x {left + running} left, {at_once} at once"
    ends = [end for run in group.runs for _, end in segments(run, now)]
    recent = bool(ends) and now - max(ends) < max(60.0, 3 * median)  # between two quick runs
    if running == 0 and not recent:
        return (f"not running: {left} runs to do, about {duration(remaining)} ({how}); run the "
                "same command again to finish")
    return f"ETA {duration(remaining)} ({how})"


# -- text -------------------------------------------------------------------------------------
def describe_group(group: Group, now: float | None = None) -> list[str]:
    """The lines of one group: title, counts, ETA, failures by reason, interrupted runs."""
    if group.planned is None:
        title = f"single runs under {group.folder}"
    else:
        grid = " x ".join(f"{k} {n}" for k, n in group.grid.items())
        title = f"{group.folder}: {group.planned} runs planned" + (f" ({grid})" if grid else "")
    if group.relaunched_as is not None:
        return [f"{group.folder}: relaunched as {group.relaunched_as} (its runs are counted there)"]
    lines = [title, "  " + "  ".join(f"{status} {n}" for status, n in group.counts.items())]
    elsewhere = sum(run.elsewhere for run in group.runs)
    if elsewhere:
        lines.append(f"  ({elsewhere} of these runs are recorded in earlier launches of the sweep)")
    if group.planned is not None and (text := eta(group, now)):
        lines.append(f"  {text}")
    failed = [run for run in group.runs if run.status == "failed"]
    for reason, n in Counter(run.reason for run in failed).most_common():
        where = [run.dir for run in failed if run.reason == reason]
        names = ", ".join(_short(d, group.folder) for d in where[:5]) + (", ..." if len(where) > 5 else "")
        lines.append(f"  failed {n}x: {reason} ({names})")
    interrupted = [run.dir for run in group.runs if run.status == "interrupted"]
    if interrupted:
        names = ", ".join(_short(d, group.folder) for d in interrupted[:5]) + (
            ", ..." if len(interrupted) > 5 else "")
        lines.append(f"  interrupted: {names} (run the same command again to resume)")
    return lines


def _short(run_dir: Path, folder: Path) -> str:
    return str(run_dir.relative_to(folder)) if folder in run_dir.parents else str(run_dir)


def report(root: str | Path, table: bool = False, now: float | None = None) -> str:
    """The text of `confusion status ROOT [--table]`."""
    groups = survey(root)
    if not groups:
        raise ConfusionError(f"no run records under {root}: run `confusion run ...` first, or "
                             "point `confusion status` at the directory it wrote")
    blocks = []
    shown: set[frozenset[Path]] = set()
    for group in groups:
        lines = describe_group(group, now)
        runs = frozenset(run.dir for run in group.runs)
        if table and group.relaunched_as is None and runs and runs not in shown:
            shown.add(runs)
            lines += ["", *indent(results_text(sorted(runs)))]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def indent(text: str) -> list[str]:
    return [f"  {line}" if line else line for line in text.splitlines()]


# -- the results table ------------------------------------------------------------------------
def results_table(frame):
    """One row per architecture at its selected LR (``figures.select.select_lr``: the lowest mean
    final training loss over seeds, diverged and failed LRs never chosen): the architecture's
    columns (the config columns varying other than the LR and seed), ``optim.lr``, ``seeds``, and
    for each of ``TABLE_METRICS`` present its mean over seeds and ``METRIC std`` (ddof=1; NaN
    for one seed), each run's last recorded value (``eta`` = max(0, -min_inner), the paper's
    confusion); ``note`` says why an architecture has no LR."""
    import numpy as np
    import pandas as pd

    from .figures.select import chosen_runs, epoch_rows, finite, select_lr
    from .probes.stats import eta as confusion_eta

    selection = select_lr(frame)
    arch = [c for c in selection.columns if c not in ("optim.lr", "final_loss", "n_seeds", "note")]
    runs = epoch_rows(chosen_runs(frame, selection))
    if "min_inner" in runs:
        runs = runs.assign(eta=confusion_eta(finite(runs["min_inner"])))
    metrics = [m for m in TABLE_METRICS if m in runs and finite(runs[m]).notna().any()]
    last = {m: (runs.assign(value=finite(runs[m])).dropna(subset=["value"])
                .sort_values("epoch", kind="stable").groupby("run_dir")["value"].last())
            for m in metrics}
    rows = []
    for _, pick in selection.iterrows():
        row = {c: pick[c] for c in arch}
        row.update({"optim.lr": pick["optim.lr"], "seeds": 0, "note": pick["note"]})
        if not pd.isna(pick["optim.lr"]):
            mine = runs[(runs["optim.lr"] == pick["optim.lr"])]
            for c in arch:
                mine = mine[mine[c].isna()] if pd.isna(pick[c]) else mine[mine[c] == pick[c]]
            dirs = mine["run_dir"].unique()
            row["seeds"] = len(dirs)
            for m in metrics:
                values = last[m].reindex(dirs).dropna()
                row[m] = values.mean() if len(values) else np.nan
                row[f"{m} std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    columns = [*arch, "optim.lr", "seeds", *[c for m in metrics for c in (m, f"{m} std")], "note"]
    return pd.DataFrame(rows, columns=columns)


def _number(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def format_table(table) -> str:
    """``results_table`` as aligned text: 'mean ± std' cells, short column names; an architecture
    without a selected LR gets one line saying why."""
    import pandas as pd

    from .figures.select import format_value

    metrics = [c for c in table.columns if c in TABLE_METRICS]
    arch = [c for c in table.columns if c not in (*metrics, "optim.lr", "seeds", "note")
            and not c.endswith(" std")]
    header = [*_short_names(arch), "lr", "seeds", *metrics]
    rows = []
    for _, row in table.iterrows():
        cells = [format_value(row[c]) for c in arch]
        if pd.isna(row["optim.lr"]):
            rows.append([*cells, "-", "0", f"no LR selected: {row['note']}"])
            continue
        cells += [format_value(row["optim.lr"]), str(int(row["seeds"]))]
        for m in metrics:
            mean, std = row[m], row[f"{m} std"]
            cells.append(_number(mean) + ("" if pd.isna(std) else f" ± {std:.2g}"))
        rows.append(cells)
    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(h), *(len(r[i]) for r in full)]) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()
                     for cells in [header, *rows])


def _short_names(columns: list[str]) -> list[str]:
    """model.depth -> depth, unless two columns end alike (then the full name)."""
    last = Counter(c.rsplit(".", 1)[-1] for c in columns)
    return [c.rsplit(".", 1)[-1] if last[c.rsplit(".", 1)[-1]] == 1 else c for c in columns]


TABLE_RULE = ("results (each architecture at its selected LR: the lowest mean final train_loss over "
              "seeds, never an LR where a seed diverged or failed;\nmean ± std over seeds of each run's "
              "last value; eta = max(0, -min_inner), the paper's confusion):")


def results_text(run_dirs: list[Path]) -> str:
    """The results table of the runs in ``run_dirs``, with the rule above it; or why there is none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", records.RecordWarning)
        frame = records.load(run_dirs)
    if frame.empty or not (frame["status"] == "complete").any():
        return "results: no complete run yet"
    table = results_table(frame)
    return f"{TABLE_RULE}\n{format_table(table)}"


def sweep_end(sweep_dir: str | Path) -> str:
    """What a sweep prints when it ends: its results table and where to draw its figures."""
    sweep_dir = Path(sweep_dir)
    groups = [g for g in survey(sweep_dir) if g.folder == sweep_dir]
    runs = sorted({run.dir for group in groups for run in group.runs})
    if not runs:
        return f"no run recorded under {sweep_dir}"
    text = results_text(runs)
    target = sweep_dir if all(sweep_dir in d.parents for d in runs) else _family(sweep_dir)
    return f"{text}\nfigures: confusion plot {target}"

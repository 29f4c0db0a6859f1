"""Live progress on a terminal (issue 23, item 3): one line per run (epoch, loss, min cos, ETA)
and, in a sweep, one line for the sweep (runs finished of the total, ETA). Drawn with tqdm where
it is installed, else as one hand-written line redrawn after a carriage return.

Live only where someone watches and nothing else draws on the same line: stderr is a terminal,
$TERM is not ``dumb``, $CONFUSION_PROGRESS is not ``plain``, and the runs are in this process (a
single run, or Hydra's basic launcher; ``run.py`` decides). Logs, Slurm, pipes and joblib workers
get the plain lines, one per epoch, exactly as before. A line a run prints meanwhile (its header,
its end, a skipped run) goes above the live lines; when stdout is not a terminal (``confusion run
> log``), the log gets every plain line, the epoch lines too, and the terminal the live lines.

The sweep's ETA: the median wall time of the runs this process ran to the end times the runs
left, plus what the current run has left; before one has ended, the current run's projected
length (its time per SGD step so far x its steps) stands in for the median, and before its
first steps, its estimate from the config (``sweep_table.run_cpu_seconds``: the records' costs).
Imports neither torch nor the records.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

PLAIN_ENV = "CONFUSION_PROGRESS"  # =plain: the plain lines on a terminal too
REDRAW_S = 0.2                     # at most one redraw per this many seconds between epochs


def wanted(stream: Any) -> bool:
    """Whether live lines may be drawn on ``stream``: a terminal, not a dumb one, not turned off."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return tty and os.environ.get("TERM") != "dumb" and os.environ.get(PLAIN_ENV, "").lower() != "plain"


def duration(seconds: float) -> str:
    """0.4s, 45s, 12m30s, 3h05m, 2d04h (as ``confusion status`` writes them)."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


class _RunState:
    def __init__(self, desc: str, epochs: int, total_steps: int, epoch: int, step: int, now: float,
                 estimate: float | None = None):
        self.desc, self.epochs, self.total_steps, self.estimate = desc, epochs, total_steps, estimate
        self.epoch, self.step, self.step0, self.t0 = epoch, step, step, now
        self.loss: float | None = None
        self.min_cos: float | None = None

    def left(self, now: float) -> float | None:
        """Seconds this run has left, from its time per step so far; before its first step, its
        estimate from the config less the time spent (None without one)."""
        done = self.step - self.step0
        if self.total_steps <= self.step:
            return 0.0 if done else None
        if done <= 0:
            return None if self.estimate is None else max(0.0, self.estimate - (now - self.t0))
        return (now - self.t0) / done * (self.total_steps - self.step)

    def text(self, now: float) -> str:
        if self.epochs == 0:
            parts = ["at initialization"]
        else:
            parts = [f"epoch {self.epoch}/{self.epochs}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.min_cos is not None:
            parts.append(f"min_cos {self.min_cos:.4f}")
        left = self.left(now)
        parts.append("ETA ?" if left is None else f"ETA {duration(left)}")
        return "  ".join(parts)


class Live:
    """The live lines of this process: the sweep's (when in a sweep) and the current run's, drawn
    on ``stream`` (a terminal); plain lines go to ``out``. ``use_tqdm``: None = tqdm if it can be
    imported."""

    def __init__(self, stream: TextIO, out: TextIO | None = None, use_tqdm: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.out, self.clock = stream, out if out is not None else sys.stdout, clock
        self.shared = wanted(self.out) or self.out is stream  # plain lines land on the same terminal
        self.tqdm = _tqdm_class() if use_tqdm in (None, True) else None
        if use_tqdm and self.tqdm is None:
            raise ImportError("tqdm")
        self.sweep: dict[str, Any] | None = None  # name, done, total
        self.walls: list[float] = []              # wall seconds of the runs that ended here
        self.run: _RunState | None = None
        self.bars: dict[str, Any] = {}
        self.drawn = 0.0
        self.width = 0  # the hand-written line's last length

    # -- what is shown ----------------------------------------------------------------------
    def sweep_text(self, now: float) -> str:
        s = self.sweep
        assert s is not None
        text = f"{s['done']}/{s['total']} runs"
        total = s["total"] if isinstance(s["total"], int) else None
        if total is not None and s["done"] >= total:
            return f"{text}, done"
        current = self.run.left(now) if self.run is not None else None
        runs_left = (total - s["done"]) if total is not None else None
        if runs_left is None:
            return text
        per_run, how = None, ""
        if self.walls:
            per_run = statistics.median(self.walls)
            how = f"median run {duration(per_run)}"
        elif self.run is not None and current is not None:
            per_run = now - self.run.t0 + current
            measured = self.run.step > self.run.step0
            how = "from this run's speed" if measured else "estimated from the config"
        if per_run is None:
            return f"{text}  ETA ?"
        if self.run is not None:
            eta = (current if current is not None else per_run) + per_run * max(0, runs_left - 1)
        else:
            eta = per_run * runs_left
        return f"{text}  ETA {duration(eta)} ({how})"

    def lines(self, now: float | None = None) -> list[tuple[str, str, float]]:
        """(description, text, fraction done) of each live line, the sweep's first."""
        now = self.clock() if now is None else now
        shown = []
        if self.sweep is not None:
            total = self.sweep["total"]
            frac = self.sweep["done"] / total if isinstance(total, int) and total else 0.0
            shown.append((f"sweep {self.sweep['name']}", self.sweep_text(now), frac))
        if self.run is not None:
            r = self.run
            frac = r.step / r.total_steps if r.total_steps else float(r.epoch >= r.epochs)
            shown.append((r.desc, r.text(now), min(1.0, frac)))
        return shown

    # -- events -----------------------------------------------------------------------------
    def start_sweep(self, name: str, done: int, total: int | str) -> None:
        if self.sweep is None:
            self.sweep = {"name": name, "done": done, "total": total}
        else:
            self.sweep.update(done=max(self.sweep["done"], done), total=total)
        self.draw(force=True)

    def finished_job(self, done: int, total: int | str) -> None:
        if self.sweep is not None:
            self.sweep.update(done=done, total=total)
            self.draw(force=True)

    def start_run(self, desc: str, epochs: int, total_steps: int, epoch: int = 0, step: int = 0,
                  estimate: float | None = None) -> None:
        """A run starts (or resumes at ``epoch``, ``step``); ``estimate``: its seconds as estimated
        from its config, shown until its first steps are timed."""
        self.run = _RunState(desc, epochs, total_steps, epoch, step, self.clock(), estimate)
        self.draw(force=True)

    def on_step(self, step: int) -> None:
        """After an SGD step (the Trainer's ``on_step``): redrawn at most every REDRAW_S."""
        if self.run is not None:
            self.run.step = step
            if self.clock() - self.drawn >= REDRAW_S:
                self.draw()

    def on_row(self, row: dict[str, float]) -> None:
        """A metrics row closing an epoch: its epoch, training loss and min cosine."""
        if self.run is None:
            return
        r = self.run
        r.epoch = int(row.get("epoch", r.epoch))
        r.step = int(row.get("step", r.step))
        loss = row.get("train_loss")
        r.loss = float(loss) if isinstance(loss, (int, float)) and not math.isnan(loss) else r.loss
        cos = row.get("min_cos")
        r.min_cos = float(cos) if isinstance(cos, (int, float)) and not math.isnan(cos) else r.min_cos
        self.draw(force=True)

    def end_run(self, ran: bool = True) -> None:
        """The run's line goes; its wall time counts for the sweep's ETA when it ran to its end."""
        if self.run is None:
            return
        if ran and self.run.step > self.run.step0:
            self.walls.append(self.clock() - self.run.t0)
        self.run = None
        if "run" in self.bars:
            self.bars.pop("run").close()
        self.draw(force=True)

    def write(self, line: str, err: bool = False) -> None:
        """Print ``line`` (to stderr with ``err``, else to ``out``) above the live lines."""
        target = self.stream if err else self.out
        if target is self.stream or self.shared:
            self._clear()
            print(line, file=target, flush=True)
            self.draw(force=True)
        else:
            print(line, file=target, flush=True)

    def close(self) -> None:
        self.run = None
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        if self.tqdm is None and self.width:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.width = 0

    # -- drawing ----------------------------------------------------------------------------
    def _clear(self) -> None:
        if self.tqdm is not None:
            for bar in self.bars.values():
                bar.clear()
        elif self.width:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.width = 0

    def draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.drawn < REDRAW_S:
            return
        self.drawn = now
        shown = self.lines(now)
        if self.tqdm is not None:
            self._draw_bars(shown)
            return
        if not shown:
            return
        text = "  |  ".join(f"{desc}  {info}" for desc, info, _ in reversed(shown))
        columns = _columns()
        text = text if len(text) < columns else text[:max(10, columns - 4)] + "..."
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self.width = len(text)

    def _draw_bars(self, shown: list[tuple[str, str, float]]) -> None:
        names = (["sweep"] if self.sweep is not None else []) + (["run"] if self.run is not None else [])
        columns = _columns()
        for position, (name, (desc, info, frac)) in enumerate(zip(names, shown)):
            bar = self.bars.get(name)
            if bar is None:
                bar = self.tqdm(total=1000, initial=int(round(1000 * frac)), desc=desc, info=info,
                                file=self.stream, position=position, leave=False,
                                bar_format="{desc} {percentage:3.0f}%|{bar:16}| {info}",
                                ncols=columns, nrows=_rows(), mininterval=0, disable=False)
                self.bars[name] = bar
            bar.ncols = columns
            bar.info = info
            bar.set_description_str(desc, refresh=False)
            bar.n = int(round(1000 * frac))
            bar.refresh()


def _columns() -> int:
    """The terminal's width (100 where it reports none)."""
    return shutil.get_terminal_size((100, 20)).columns or 100


def _rows() -> int:
    """The terminal's height (24 where it reports none: tqdm would then draw nothing)."""
    rows = shutil.get_terminal_size((100, 24)).lines
    return rows if rows > 2 else 24


def _tqdm_class():
    """tqdm with an ``{info}`` field for its bar_format, or None where tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    class Bar(tqdm):
        def __init__(self, *args, info: str = "", **kwargs):
            self.info = info
            super().__init__(*args, **kwargs)

        @property
        def format_dict(self):
            return {**super().format_dict, "info": self.info}

    return Bar


# -- the process's live view -------------------------------------------------------------------
_LIVE: Live | None = None


def live() -> Live | None:
    """The live view of this process, made on first use when stderr is a terminal; else None."""
    global _LIVE
    if _LIVE is None and wanted(sys.stderr):
        _LIVE = Live(sys.stderr, sys.stdout)
    return _LIVE


def current() -> Live | None:
    """The live view if one is showing (never makes one)."""
    return _LIVE


def echo(line: str, err: bool = False) -> None:
    """Print a plain line: above the live lines when they show, else as ``print`` does."""
    if _LIVE is not None:
        _LIVE.write(line, err)
    else:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


def close() -> str | None:
    """Take the live lines down (at the end of `confusion run`); the sweep's last state as a plain
    line, when there was a sweep and its jobs' plain lines were not printed (stdout is the
    terminal), for the scrollback."""
    global _LIVE
    if _LIVE is None:
        return None
    view, _LIVE = _LIVE, None
    sweep = view.sweep
    view.close()
    if sweep is None or not view.shared:
        return None
    return f"sweep progress: {sweep['done']}/{sweep['total']} runs finished"

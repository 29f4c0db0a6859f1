"""Writing records: every file is created fresh and renamed into place, never through a link.

A reader sees either the old or the new version of a file, never half of one, and a complete
run is never rewritten. ``RunRecorder`` writes one run's directory as it trains.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .layout import CHECKPOINT, CONFIG, METRICS, RUN_JSON, RUN_LOG, SAMPLES, samples_path
from .safe import DiskFull, UnsafeRecord, is_disk_full, make_dir, open_append

if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a fresh temporary file beside ``path`` (text, or bytes with
    ``binary``), fsync it, rename it onto ``path`` and fsync the directory.

    The temporary file is created new by mkstemp (O_EXCL: never an existing file or a planted
    link), and the rename replaces whatever ``path`` was, a symlink included, without following
    it: no write lands outside the directory. A reader sees the old file or the new one, whole.
    A full disk is one line (``DiskFull``: disk full at PATH).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path, exc) from None
        raise
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; records are for the whole group
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(path, exc) from None
        raise
    fsync_directory(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` (created if missing): a single short O_APPEND write, so lines
    from concurrent writers stay whole. Never through a link, never to a FIFO, a device, another
    user's file or a hard-linked one (``safe.open_append``: an UnsafeRecord, one line)."""
    fd = open_append(path)
    try:
        with os.fdopen(fd, "a") as f:
            f.write(f"{line}\n")
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path, exc) from None
        raise


def remove(path: Path) -> None:
    """Remove whatever is at ``path``: a folder with what it holds, or a file or a link (the link
    itself, never what it points to)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stray_tmp(run_dir: Path) -> None:
    """Remove the temporary files a killed ``atomic_write`` left in ``run_dir`` and its samples
    folder (``.metrics.csv.*.tmp``, ``.step_*.csv.*.tmp``, ...). Call it holding the run's lock:
    no other writer is then at work there. Links among them are removed, never followed."""
    for folder in (run_dir, run_dir / SAMPLES):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                path = folder / name
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda f: frame.to_csv(f, index=False))


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """The run's resolved config, ``config.yaml``: what its config hash is checked against."""
    atomic_write(run_dir / CONFIG, lambda f: f.write(OmegaConf.to_yaml(cfg, resolve=True)))


def segment_meta(meta: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """``meta`` (the run.json fields of a segment starting at ``meta['start_time']``, with its
    ``host`` and ``device``) after the segments of ``old``, the run's run.json before it (None
    for a new run): ``start_time`` becomes the first segment's, ``segments`` lists every segment
    (start, end, host, device, wall_seconds) with this one last, and ``wall_seconds_before`` is
    the wall time of those before. ``RunRecorder`` keeps the last segment's end and the run's
    total ``wall_seconds`` current at every checkpoint, so a killed segment counts up to its last
    checkpoint."""
    old = old or {}
    segments = [dict(s) for s in old.get("segments") or [] if isinstance(s, dict)]
    if not segments and old.get("start_time"):  # a run.json from before segments were kept
        segments = [{"start": old["start_time"], "end": old.get("end_time"), "host": old.get("host"),
                     "device": old.get("device"), "wall_seconds": old.get("wall_seconds")}]
    start = meta.get("start_time") or datetime.now(timezone.utc).isoformat()
    segments.append({"start": start, "end": None, "host": meta.get("host"), "device": meta.get("device"),
                     "wall_seconds": 0.0})
    before = old.get("wall_seconds")
    return {**meta, "start_time": segments[0]["start"], "segments": segments,
            "wall_seconds_before": float(before) if isinstance(before, (int, float)) else 0.0}


class RunRecorder:
    """Writes one run's directory: run.json, config, metrics, samples, checkpoints, run.log."""

    def __init__(self, run_dir: Path, cfg: DictConfig, meta: dict[str, Any],
                 resume_rows: list[dict[str, float]] | None = None):
        """``resume_rows``: the metrics rows a checkpoint carries (None: a new run or a restart).
        A resumed run takes its rows from its checkpoint, not from metrics.csv, so rows planted
        in the file are never merged into its records."""
        self.dir = run_dir
        self.meta = meta
        self.rows: list[dict[str, float]] = list(resume_rows or [])
        metrics = run_dir / METRICS
        if resume_rows is None:  # a new run, or a restart of one that died before its first checkpoint
            remove(metrics)
            remove(run_dir / SAMPLES)  # a link or a file planted at its name too, never followed
        make_dir(run_dir / SAMPLES, run_dir)  # a link there (on a resume) is refused in one line
        remove_stray_tmp(run_dir)
        try:
            os.close(open_append(run_dir / RUN_LOG))
        except UnsafeRecord as exc:  # a link, a folder, a FIFO, another user's, hard-linked:
            print(f"warning: {exc}: replacing it with a fresh run.log", file=sys.stderr, flush=True)
            remove(run_dir / RUN_LOG)  # never followed; what it pointed to is left alone
            os.close(open_append(run_dir / RUN_LOG))
        write_config(run_dir, cfg)

    def say(self, prefix: str, line: str, err: bool = False) -> None:
        """Print ``prefix + line`` (to stderr with ``err``) and ``log`` it."""
        print(f"{prefix}{line}", file=sys.stderr if err else sys.stdout, flush=True)
        self.log(line)

    def log(self, line: str) -> None:
        """Append ``line`` to the run's log, run.log: what the console showed for this run,
        across resumes, with UTC times (opened without following a link)."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        append_line(self.dir / RUN_LOG, f"{stamp} {line}")

    def set_status(self, status: str, **extra: Any) -> None:
        self.meta.update(status=status, **extra)
        if status != "running":
            self.meta["end_time"] = datetime.now(timezone.utc).isoformat()
        self.write_meta()

    def write_meta(self) -> None:
        """Write run.json, with the current segment's end and wall time and the run's total wall
        time (``wall_seconds_before`` + this segment's) brought up to now."""
        if "_t0" in self.meta:
            elapsed = time.perf_counter() - self.meta["_t0"]
            self.meta["wall_seconds"] = self.meta.get("wall_seconds_before", 0.0) + elapsed
            if self.meta.get("segments"):
                self.meta["segments"][-1].update(end=datetime.now(timezone.utc).isoformat(),
                                                 wall_seconds=elapsed)
        write_json(self.dir / RUN_JSON, {k: v for k, v in self.meta.items() if not k.startswith("_")})

    def add_row(self, row: dict[str, float], samples: dict[str, torch.Tensor],
                state: dict[str, Any] | None = None) -> None:
        """Write one metrics row (replacing any recorded at or after its step: a resumed run
        recomputes them), its samples, and the checkpoint ``state`` if given."""
        if samples:
            frame = pd.DataFrame({k: v.detach().cpu().double().numpy() for k, v in samples.items()})
            frame.insert(0, "pair", range(len(frame)))
            write_csv(samples_path(self.dir, row["epoch"], row["step"]), frame)
        self.rows = [r for r in self.rows if r["step"] < row["step"]] + [row]
        write_csv(self.dir / METRICS, pd.DataFrame(self.rows))
        if state is not None:  # the rows so far travel with the state they belong to
            import torch  # here, not at the top: reading records needs no torch

            state = {**state, "metrics_rows": self.rows}
            buffer = io.BytesIO()  # serialised first: a full disk is then an OSError of the
            torch.save(state, buffer)  # write (one line), not torch's 'unexpected pos'
            atomic_write(self.dir / CHECKPOINT, lambda f: f.write(buffer.getbuffer()), binary=True)
            self.write_meta()  # a killed run's run.json counts its time up to this checkpoint

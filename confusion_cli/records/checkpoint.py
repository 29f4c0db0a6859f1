"""Reading a run's checkpoint without running anything in it, and whether a run may resume."""

from __future__ import annotations

import math
import os
import stat
import sys
from pathlib import Path
from typing import Any

from .layout import CHECKPOINT, SAMPLES
from .safe import check_owner, kind, open_file


def warn(line: str, prefix: str = "") -> None:
    """One warning line on stderr."""
    print(f"{prefix}warning: {line}", file=sys.stderr, flush=True)


def check_rows(rows: Any) -> None:
    """Refuse (ValueError) the metrics rows a checkpoint carries unless they are a list of dicts,
    each with a finite ``step`` and ``epoch``, steps increasing."""
    if not isinstance(rows, list):
        raise ValueError(f"its metrics_rows are {type(rows).__name__}, not a list")
    last = -math.inf
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"a metrics row is {type(row).__name__}, not a dict")
        for key in ("step", "epoch"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"a metrics row has {key}={value!r}")
        if row["step"] < last:
            raise ValueError("its metrics rows are out of step order")
        last = row["step"]


def read_checkpoint(run_dir: Path, prefix: str = "") -> dict | None:
    """The checkpoint of an interrupted run, loaded as tensors and plain containers only
    (``weights_only``: a planted pickle never runs), on the CPU (generator states must stay CPU
    tensors; ``Trainer.load_state_dict`` moves the rest). None, with a one-line warning, when it
    is missing or unreadable (truncated, a full disk, not a checkpoint, a link, not a regular
    file, another user's) or loads but is not a state (not a dict, ``metrics_rows`` that are not
    rows): the run then restarts from scratch instead of failing on every relaunch. The
    trainer's own keys are checked by ``Trainer.load_state_dict``."""
    import torch  # here, not at the top: reading records needs no torch

    path = run_dir / CHECKPOINT
    try:
        fd, _ = open_file(path)  # no link, a regular file (never a FIFO), the current user's
        with os.fdopen(fd, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"it holds {type(state).__name__}, not a training state")
        if "metrics_rows" in state:
            check_rows(state["metrics_rows"])
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: start again
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(f"{path} ", "it ", 1)  # the path is named once, and the cut keeps the why
        warn(f"checkpoint {path} is unreadable ({reason[:120]}); restarting this run from scratch",
             prefix)
        return None


def resume_problem(run_dir: Path) -> str | None:
    """Why the interrupted run ``run_dir`` must not be resumed from its checkpoint (None: it may):
    its ``samples`` is not a folder of the current user (a file, a link, another user's), or holds
    something that is not a regular file of the current user. Its records would mix with what
    was planted; it restarts from scratch instead."""
    samples = Path(run_dir) / SAMPLES
    try:
        st = os.lstat(samples)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"{samples} is {kind(st.st_mode)}, not a folder"
    try:
        check_owner(samples, st)
        with os.scandir(samples) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    continue  # a killed write's leftover, removed when the run opens
                est = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(est.st_mode):
                    return f"{entry.path} is {kind(est.st_mode)}, not a regular file"
                check_owner(entry.path, est)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None

"""Who runs where: the per-config claim, the per-directory lock, and the choice of directory.

Locks are ``flock`` locks, dropped by the operating system when the process dies however it
dies: a held run lock means a live run. See the README on locks on network filesystems.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .layout import CHECKPOINT, FINISHED, LOCK, claim_path
from .reader import find_runs


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing, never through a link)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive lock on ``run_dir`` held while this process runs there; yields False (and
    holds nothing) when another process has it."""
    fd = open_lock_file(run_dir / LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def claim_lock(root: Path, cfg_hash: str) -> Iterator[None]:
    """An exclusive lock on ``root/.claims/HASH.lock`` for the duration (blocking: a claim is
    held for milliseconds, while a directory is chosen and marked running)."""
    path = claim_path(root, cfg_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def choose_run_dir(root: Path, cfg_hash: str, new_dir: Path) -> tuple[Path | None, str]:
    """Where the config ``cfg_hash`` runs: (None, why) to skip it, or (directory, 'new' | 'resume'
    | 'restart'). Call it under ``claim_lock``.

    A finished run of the same config means nothing to do; an unfinished one whose process is
    gone is continued in its own directory: from its checkpoint if it has one, else from the
    start. Otherwise the run is new, in ``new_dir``.
    """
    for run_dir, meta in find_runs(root, cfg_hash):
        if meta["status"] in FINISHED:
            return None, f"already {meta['status']} in {run_dir}"
        with run_lock(run_dir) as free:
            if not free:
                return None, f"already running in {run_dir}"
        return run_dir, "resume" if (run_dir / CHECKPOINT).is_file() else "restart"
    return new_dir, "new"

"""Is a run alive? A run whose run.json says ``running`` but whose run lock nobody holds was
interrupted (killed, preempted, out of memory): ``records.load`` and ``confusion status`` call
it ``interrupted``; relaunching the same command resumes it.

The run lock (``lock.run_lock``) is an exclusive ``flock`` on ``RUN_DIR/.lock`` held by the
process that runs there, and dropped by the operating system when that process dies.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from .layout import LOCK

INTERRUPTED = "interrupted"


def run_is_live(run_dir: str | os.PathLike) -> bool:
    """True while a process holds the run lock of ``run_dir``.

    Probed with a shared, non-blocking ``flock`` released at once, on the lock file opened
    read-only (never created, never through a link, never blocking on a FIFO): a reader changes
    nothing on disk. No lock file, one that is not a regular file, or a filesystem without
    ``flock``, reads as no live process."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def live_status(run_dir: str | os.PathLike, status: str) -> str:
    """``status`` as recorded in run.json, except ``running`` without a live process, which is
    ``interrupted``."""
    return INTERRUPTED if status == "running" and not run_is_live(run_dir) else status

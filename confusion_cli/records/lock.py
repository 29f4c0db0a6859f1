"""Who runs where: the per-config claim, the per-directory lock, and the choice of directory.

Locks are ``flock`` locks, dropped by the operating system when the process dies however it
dies: a held run lock means a live process. See the README on locks on network filesystems.
The holder of a lock writes ``PID HOST`` into its lock file, so that anyone waiting can say who
holds it. A lock held by another process is waited on for at most ``LOCK_TIMEOUT_S`` seconds
(``$CONFUSION_LOCK_TIMEOUT``), with one line saying who holds it; then the launch stops with one
line. A lock file that cannot be opened (another user's, a link, not a regular file), or a
``.claims`` that is not a folder, is one line too.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfusionError
from .layout import CHECKPOINT, CLAIMS, CONFIG, FINISHED, LOCK, RUN_JSON, SAMPLES, claim_path
from .reader import distrust, find_runs, one_line, read_config
from .safe import (
    CAPS,
    HYDRA_FILES,
    UnsafeRecord,
    check_dirs,
    check_files,
    check_space,
    make_dir,
    open_file,
    read_text,
)

LOCK_TIMEOUT_S = 30.0  # the longest a launch waits for a lock another process holds


def lock_timeout() -> float:
    """``$CONFUSION_LOCK_TIMEOUT`` (seconds) if set to a number >= 0, else ``LOCK_TIMEOUT_S``."""
    try:
        value = float(os.environ.get("CONFUSION_LOCK_TIMEOUT", ""))
    except ValueError:
        return LOCK_TIMEOUT_S
    return value if value >= 0 and value == value and value != float("inf") else LOCK_TIMEOUT_S


def open_lock_file(path: Path) -> int:
    """A read-write descriptor of the lock file ``path``, created if missing: never through a
    link, never a FIFO or a device. One line (a ConfusionError) when it cannot be opened."""
    try:
        fd, _ = open_file(path, os.O_RDWR | os.O_CREAT, owner=False)
    except PermissionError:
        try:
            owner = f"it belongs to uid {os.lstat(path).st_uid}, mode {os.lstat(path).st_mode & 0o777:o}"
        except OSError:
            owner = "its folder is not writable"
        raise ConfusionError(f"cannot open the lock file {path}: permission denied ({owner}); "
                             "launches of this config need to lock it: use a records_root of your "
                             "own, or ask its owner to make it group-writable") from None
    except OSError as exc:
        raise ConfusionError(f"cannot open the lock file {path}: {exc.strerror}") from None
    return fd


def holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) its holder wrote into the lock file ``path``; (None, None) when it names none."""
    try:
        words = read_text(path, CAPS[LOCK], owner=False).split()
        return int(words[0]), words[1]
    except (OSError, ValueError, IndexError):
        return None, None


def holder_text(path: Path) -> str:
    """'pid 123 on host1' (from the lock file), or what is known of who holds ``path``."""
    pid, host = holder(path)
    if pid is None:
        return "by a process that wrote no pid into it"
    alive = "" if holder_is_alive(pid, host) else ", which is not running: another process holds it"
    return f"by pid {pid} on {host}{alive}"


def holder_is_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process a lock file names may be alive: on this host, whether ``pid`` runs;
    on another host it cannot be told, and counts as alive."""
    if pid is None:
        return False
    if host != socket.gethostname():
        return True
    if pid == os.getpid():  # this process, which does not hold it: another one does
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_holder(fd: int) -> None:
    """Write ``PID HOST`` into the lock file this process now holds (best effort)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError:
        pass


def _flock(fd: int, path: Path, timeout: float, waiting: Callable[[str], None] | None,
           say_after: float = 0.0) -> bool:
    """Take the exclusive flock on ``fd`` (the lock file ``path``), waiting at most ``timeout``
    seconds; ``waiting`` gets one line saying who holds it, once, when it has waited
    ``say_after`` seconds. A filesystem without flock counts as free."""
    start = time.monotonic()
    deadline = start + timeout
    pause = 0.01
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return True
            raise
        if time.monotonic() >= deadline:
            return False
        if waiting is not None and not said and time.monotonic() - start >= say_after:
            said = True
            waiting(f"waiting up to {timeout:g}s for {path}, held {holder_text(path)}")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.5)


def _say(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


@contextmanager
def run_lock(run_dir: Path, timeout: float = 0.0) -> Iterator[bool]:
    """An exclusive lock on ``run_dir`` held while this process runs there, waiting at most
    ``timeout`` seconds for another holder (saying who it is); yields False (and holds nothing)
    when another process still has it."""
    path = Path(run_dir) / LOCK
    fd = open_lock_file(path)
    if not _flock(fd, path, timeout, _say if timeout > 0 else None):
        os.close(fd)
        yield False
        return
    _write_holder(fd)
    try:
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def claim_lock(root: Path, cfg_hash: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock on ``root/.claims/HASH.lock`` for the duration. A claim is held for
    milliseconds, while a directory is chosen and marked running: one held by another process is
    waited on for at most ``timeout`` seconds (default ``lock_timeout()``), saying who holds it,
    then the launch stops with one line (a ConfusionError)."""
    timeout = lock_timeout() if timeout is None else timeout
    path = claim_path(root, cfg_hash)
    make_dir(path.parent, root)  # .claims: a folder, never through a link (else one line)
    fd = open_lock_file(path)
    try:
        if not _flock(fd, path, timeout, _say, say_after=1.0):
            raise ConfusionError(f"the claim {path} has been held for {timeout:g}s "
                                 f"{holder_text(path)}: another launch of this config is stuck "
                                 "choosing its directory; find it with `fuser -v "
                                 f"{path}`, or set $CONFUSION_LOCK_TIMEOUT to wait longer")
        _write_holder(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def choose_run_dir(root: Path, cfg_hash: str, new_dir: Path) -> tuple[Path | None, str]:
    """Where the config ``cfg_hash`` runs: (None, why) to skip it, or (directory, 'new' | 'resume'
    | 'restart'). Call it under ``claim_lock``.

    A finished run of the same config means nothing to do; an unfinished one is continued in its
    own directory (from its checkpoint if it has one, else from the start) once its run lock is
    free. Its lock held by the live run the lock file names means it is running: skip it. Held by
    any other process, it is waited on for ``lock_timeout()`` seconds, then one line (a
    ConfusionError): an interrupted run is never skipped silently. Otherwise the run is new, in
    ``new_dir``, which must not hold the record of another config (``check_new_dir``).
    """
    for run_dir, meta in find_runs(root, cfg_hash):
        if meta["status"] in FINISHED:
            return None, f"already {meta['status']} in {run_dir}"
        how = "resume" if os.path.isfile(run_dir / CHECKPOINT) else "restart"
        try:
            with run_lock(run_dir) as free:
                if free:
                    return run_dir, how
        except UnsafeRecord as exc:  # a link or a FIFO planted at its lock: whoever runs there
            raise ConfusionError(   # cannot be told, so it is not replaced behind their back
                f"the interrupted run {run_dir} cannot {how}: {exc}; if no process runs there, "
                f"remove it (rm {run_dir / LOCK}) and run the same command again") from None
        pid, host = holder(run_dir / LOCK)
        if holder_is_alive(pid, host):
            return None, f"already running in {run_dir} (pid {pid} on {host})"
        timeout = lock_timeout()
        with run_lock(run_dir, timeout) as free:
            if free:
                return run_dir, how
        raise ConfusionError(f"the interrupted run {run_dir} cannot {how}: its lock {run_dir / LOCK} "
                             f"has been held for {timeout:g}s {holder_text(run_dir / LOCK)}; find "
                             f"that process with `fuser -v {run_dir / LOCK}` and stop it, then "
                             "run the same command again")
    check_new_dir(root, new_dir, cfg_hash)
    return new_dir, "new"


def check_new_dir(root: Path, new_dir: Path, cfg_hash: str) -> None:
    """Refuse, in one line (a ConfusionError), to start the config ``cfg_hash`` in ``new_dir``
    when that folder (a launch_id's) already holds a run record (run.json or config.yaml) of
    another config, or one this run cannot trust, or when it or a folder between it and ``root``
    is a link: a launch folder belongs to one config, and no record is ever replaced."""
    check_dirs(new_dir, root)
    fix = "give this run a new launch_id (or leave launch_id out for a fresh one)"
    if os.path.lexists(new_dir / RUN_JSON):
        try:
            meta = json.loads(read_text(new_dir / RUN_JSON))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise ConfusionError(f"{new_dir} already holds a record that cannot be read "
                                 f"({one_line(exc)}): {fix}") from None
        if meta.get("config_hash") != cfg_hash:
            raise ConfusionError(f"{new_dir} already holds the record of another config (hash "
                                 f"{meta.get('config_hash')}, this one is {cfg_hash}): {fix}")
        why = distrust(root, new_dir, cfg_hash) or "it is not found under records_root"
        raise ConfusionError(f"{new_dir} already holds a record of this config that cannot be "
                             f"trusted ({why}): {fix}")
    if os.path.lexists(new_dir / CONFIG):  # a run that died before its run.json
        try:
            from .hashing import config_hash

            other = config_hash(read_config(new_dir / CONFIG))
        except Exception as exc:  # noqa: BLE001 - an unreadable config is another's
            raise ConfusionError(f"{new_dir} already holds a config.yaml that cannot be read "
                                 f"({type(exc).__name__}): {fix}") from None
        if other != cfg_hash:
            raise ConfusionError(f"{new_dir} already holds the config of another config (hash "
                                 f"{other}, this one is {cfg_hash}): {fix}")


def check_run_folder(root: Path, folder: Path, cfg_hash: str) -> None:
    """Before a single run of ``cfg_hash`` is launched into ``folder`` (``runs/LAUNCH_ID``), and
    before Hydra writes anything there: one line (a ConfusionError) when the folder holds the
    record of another config or one that cannot be trusted; when it, its ``.hydra``, its
    ``samples`` or ``.claims`` is a link or a file; or when a file Hydra writes in ``.hydra`` is
    a link. Its own record passes: the run resumes it, or skips it if it is finished. The folder
    is then made, and a full disk there is one line ("disk full at PATH")."""
    for path in (folder / ".hydra", Path(root) / CLAIMS):
        check_dirs(path, root)
    check_files(folder, HYDRA_FILES)  # Hydra writes them by name, following a link
    if not (os.path.lexists(folder / RUN_JSON) and distrust(root, folder, cfg_hash) is None):
        check_dirs(folder / SAMPLES, root)  # its own run restarts or resumes past a bad samples
        check_new_dir(root, folder, cfg_hash)
    make_dir(folder, root)  # Hydra's output: on a full disk one line (DiskFull), not Hydra's
    check_space(folder)     # OSError traceback from its mkdir or its .hydra files

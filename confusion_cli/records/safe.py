"""Touching a records root that others can write to, without being fooled by what they planted.

Every record file is opened without following a link (``O_NOFOLLOW``) and without blocking
(``O_NONBLOCK``: a FIFO named ``run.json`` opens at once instead of waiting for a writer), then
checked with ``fstat`` on the open descriptor: a regular file, owned by the current user, no
larger than the cap of its kind (``CAPS``), read with that cap. Appends also refuse a file with
more than one hard link (an append would land in the other name too). Folders are created and
then checked with ``lstat``: a symbolic link planted at a folder's name is refused, never
entered. Each refusal is an ``UnsafeRecord``: a ``ConfusionError`` (one line at the command
line) and a ``ValueError`` (readers skip the record with a ``RecordWarning`` naming it).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import ConfusionError
from .layout import CONFIG, ERROR, FINISHED_LOG, LOCK, METRICS, RUN_JSON, RUN_LOG, SAMPLES, SWEEP_JSON

MiB = 1 << 20
# The most a record file of each kind may hold; a larger one is refused, never read.
CAPS = {RUN_JSON: MiB, CONFIG: MiB, SWEEP_JSON: MiB, ERROR: MiB, "hydra config": MiB,
        METRICS: 64 * MiB, SAMPLES: 64 * MiB, FINISHED_LOG: 16 * MiB, RUN_LOG: 64 * MiB, LOCK: 4096}


class UnsafeRecord(ConfusionError, ValueError):
    """A path in a records root that must not be opened or believed: a link, not a regular file
    (a FIFO, a device, a folder), another user's, too large, hard-linked. The message is one
    line naming the path."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(ConfusionError):
    """A write that found no space left (ENOSPC, or a quota: EDQUOT): one line naming the path
    it was writing, ``disk full at PATH``, and the fix."""

    def __init__(self, path: str | os.PathLike, exc: OSError | None = None,
                 fix: str = "free some space, or use records_root=PATH on another disk"):
        self.path = Path(path)
        why = f" ({exc.strerror})" if exc is not None and exc.strerror else ""
        super().__init__(f"disk full at {path}{why}: {fix}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def cap_of(path: str | os.PathLike) -> int:
    """The size cap of the record file ``path``, by its name (samples files by their folder)."""
    path = Path(path)
    if path.parent.name == SAMPLES:
        return CAPS[SAMPLES]
    if path.parent.name == ".hydra":
        return CAPS["hydra config"]
    return CAPS.get(path.name, MiB)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"


def kind(mode: int) -> str:
    """'a FIFO', 'a folder', ... for the ``st_mode`` of something that is not a regular file."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def check_owner(path: str | os.PathLike, st: os.stat_result) -> None:
    """Refuse ``path`` (whose stat is ``st``) unless the current user owns it."""
    if st.st_uid != os.getuid():
        raise UnsafeRecord(f"{path} belongs to another user (uid {st.st_uid})")


def open_file(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o644,
              owner: bool = True) -> tuple[int, os.stat_result]:
    """(descriptor, fstat) of the regular file ``path`` opened with ``flags``, never through a
    link and never blocking on a FIFO; with ``owner``, only a file of the current user."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRecord(f"{path} is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a FIFO (or socket) opened for writing with no reader
            raise UnsafeRecord(f"{path} is a FIFO, not a regular file") from None
        if exc.errno == errno.EISDIR:
            raise UnsafeRecord(f"{path} is a folder, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeRecord(f"{path} is {kind(st.st_mode)}, not a regular file")
        if owner:
            check_owner(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bytes(path: str | os.PathLike, cap: int | None = None, owner: bool = True) -> bytes:
    """The content of the regular file ``path`` (see ``open_file``), refused when larger than
    ``cap`` bytes (default: the cap of its kind, ``cap_of``)."""
    cap = cap_of(path) if cap is None else cap
    fd, st = open_file(path, owner=owner)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > cap:
            raise UnsafeRecord(f"{path} holds {_size(st.st_size)}, more than the {_size(cap)} "
                               "such a file may")
        data = f.read(cap + 1)
    if len(data) > cap:  # it grew while we read
        raise UnsafeRecord(f"{path} holds more than the {_size(cap)} such a file may")
    return data


def read_text(path: str | os.PathLike, cap: int | None = None, owner: bool = True) -> str:
    """``read_bytes`` decoded as UTF-8 (a UnicodeDecodeError, a ValueError, if it is not)."""
    return read_bytes(path, cap, owner).decode("utf-8")


def open_append(path: str | os.PathLike) -> int:
    """A descriptor to append to ``path`` (created if missing, mode 0644 less the umask): never
    through a link, never a FIFO or another user's file, never a file with another hard link."""
    fd, st = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if st.st_nlink > 1:
        os.close(fd)
        raise UnsafeRecord(f"{path} has {st.st_nlink} hard links: refusing to append to it "
                           "(the lines would land in another file too)")
    return fd


def make_dir(path: str | os.PathLike, under: str | os.PathLike | None = None) -> Path:
    """Create the folder ``path`` and those between it and ``under`` (default: its parent), each
    checked with ``lstat`` after ``mkdir``: a symbolic link or a file at any of their names is
    refused, never followed. ``under`` itself is created if missing and may be a link (a
    records_root on another disk)."""
    path = Path(path)
    under = Path(under) if under is not None else path.parent
    try:
        parts = path.relative_to(under).parts
    except ValueError:
        under, parts = path.parent, (path.name,)
    try:
        under.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UnsafeRecord(f"{under} exists and is not a folder") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(under, exc) from None
        raise
    current = under
    for part in parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        except NotADirectoryError:
            raise UnsafeRecord(f"{current.parent} is not a folder") from None
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(current, exc) from None
            raise
        mode = os.lstat(current).st_mode
        if not stat.S_ISDIR(mode):
            raise UnsafeRecord(f"{current} is {kind(mode)}, not a folder: refusing to "
                               f"{'enter' if stat.S_ISLNK(mode) else 'use'} it")
    return path


def check_dirs(path: str | os.PathLike, under: str | os.PathLike) -> None:
    """Refuse ``path`` when it, or a folder between it and ``under``, exists and is not a real
    folder (a symbolic link, a file); folders that do not exist yet pass."""
    path, under = Path(path), Path(under)
    try:
        parts = path.relative_to(under).parts
    except ValueError:
        return
    current = under
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(mode):
            raise UnsafeRecord(f"{current} is {kind(mode)}, not a folder: refusing to use it")


HYDRA_FILES = (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml")


def check_files(folder: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Refuse ``folder`` when one of the files ``names`` in it exists and is not a regular file (a
    symbolic link, a FIFO): a writer that opens them by name, as Hydra does, would follow it."""
    for name in names:
        path = Path(folder) / name
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(mode):
            raise UnsafeRecord(f"{path} is {kind(mode)}, not a regular file: refusing to write "
                               "over it")


def check_space(folder: str | os.PathLike, size: int = 256 * 1024) -> None:
    """Refuse, in one line (``DiskFull``), a ``folder`` whose disk cannot take ``size`` more
    bytes: a file of that size is written, synced and removed. Run before a writer that would
    fail on a full disk with a traceback of its own (Hydra's output files)."""
    fd, tmp = -1, Path(folder) / f".space-check.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)  # a leftover of a killed check (or a link: the link itself)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.write(fd, bytes(size))
        os.fsync(fd)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(folder, exc) from None
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)

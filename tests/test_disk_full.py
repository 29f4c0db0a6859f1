"""A full disk is one line, "disk full at PATH", wherever it strikes (issue 22, item 6): the
checkpoint write, Hydra's output folder, a sweep's plan, a data import. Each test makes the real
write (or mkdir) of the real code path fail with ENOSPC, as a full disk does."""

import errno
import json
import os
from pathlib import Path

import pytest

from confusion_cli import cli, records

TINY = ["optim.epochs=1", "probe.pairs=2", "threads=1", "dataset.train_size=256", "model.width=16",
        "progress=false"]
FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class FullFile:
    """A file whose writes fail as on a full disk, after the first ``room`` bytes."""

    def __init__(self, f, room=100):
        self._f, self._room = f, room

    def write(self, data):
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_full_disk_during_the_checkpoint_write_is_one_line(workdir, monkeypatch, capsys):
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return FullFile(f) if f"/.{records.CHECKPOINT}." in fd_path(fd) else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(SystemExit) as code:
        cli.main(["run", *TINY, "launch_id=full"])
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = workdir / "outputs" / "runs" / "full"
    assert code.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full at {run_dir / records.CHECKPOINT}"), err
    assert "records_root" in err[0] and "resumes" in err[0]
    meta = json.loads((run_dir / records.RUN_JSON).read_text())
    assert meta["status"] == "failed" and "disk full at" in meta["error"]
    assert not list(run_dir.glob(".*.tmp"))
    assert not (run_dir / records.ERROR).exists()  # not a crash


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_disk_full_from_the_start_is_one_line_before_hydra_writes(workdir, monkeypatch, capsys, sweep):
    """No folder can be made under the records root: one line naming it, not Hydra's traceback
    from making its output folder."""
    real_mkdir = os.mkdir
    outputs = str(workdir / "outputs")
    os.mkdir(outputs)  # the root exists (the config's check that it is writable passes)

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(outputs + os.sep):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    args = ["run", *TINY, "launch_id=full", *(["seed=0,1"] if sweep else [])]
    try:
        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full at {outputs}{os.sep}"), err
    assert os.listdir(outputs) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_hydras_files_on_a_full_disk_are_one_line(workdir, monkeypatch, capsys):
    """The folder can be made but nothing written in it: one line, before Hydra's own writes."""
    real_write = os.write
    outputs = str(workdir / "outputs")

    def write(fd, data):
        if fd_path(fd).startswith(outputs):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):  # Hydra writes its files with open()
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f, room=0) if "w" in mode and str(file).startswith(outputs) else f

    import hydra.core.utils

    monkeypatch.setattr(hydra.core.utils, "open", full_open, raising=False)
    try:
        code = cli.main(["run", *TINY, "launch_id=full"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full at {outputs}"), err


def test_the_launch_check_of_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    import tempfile

    from confusion_cli import config
    from confusion_cli.errors import ConfusionError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    with pytest.raises(ConfusionError, match=r"^disk full at .*records"):
        config._check_writable(tmp_path / "records")

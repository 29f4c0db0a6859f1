"""Every invalid state of an interrupted run restarts it or is one line (issue 22, item 5): a
checkpoint that loads but is no state, samples that are not the user's folder, a run.log that is
a folder, a link or another user's, a lock planted as a link; SIGTERM ends a run as Ctrl-C does;
a killed write's temporary files are removed when the run is opened again."""

import json
import os
import shutil
import signal

import pytest
import torch

from confusion_cli import cli, records
from confusion_cli.records import writer

TINY = ["optim.epochs=2", "probe.pairs=2", "threads=1", "dataset.train_size=256", "model.width=16",
        "progress=false", "launch_id=k"]
FOREIGN_UID = 4242


@pytest.fixture(scope="module")
def interrupted_template(tmp_path_factory):
    """The records root of a run of TINY stopped by SIGTERM right after its first checkpoint,
    with what SIGTERM printed and returned."""
    base = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setenv("CONFUSION_OUTPUTS", str(base / "outputs"))
        real = writer.RunRecorder.add_row

        def terminated_after_checkpoint(self, row, samples, state=None):
            real(self, row, samples, state)
            if state is not None:
                os.kill(os.getpid(), signal.SIGTERM)

        mp.setattr(writer.RunRecorder, "add_row", terminated_after_checkpoint)
        import io
        from contextlib import redirect_stderr

        def unhandled(signum, frame):  # in place of the default, which would end pytest
            raise RuntimeError("SIGTERM reached the test: the run did not handle it")

        err = io.StringIO()
        guard = signal.signal(signal.SIGTERM, unhandled)
        try:
            with redirect_stderr(err):
                code = cli.main(["run", *TINY])
        except BaseException as exc:  # noqa: BLE001 - a traceback is what the test reports
            code = repr(exc)
        finally:
            after = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, guard)
    return base / "outputs", code, err.getvalue(), after is unhandled


@pytest.fixture
def run_dir(interrupted_template, tmp_path, monkeypatch):
    """A fresh copy of the interrupted run, where ``cli.main(['run', *TINY])`` resumes it."""
    shutil.copytree(interrupted_template[0], tmp_path / "outputs", symlinks=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("CONFUSION_LOCK_TIMEOUT", "1")
    return tmp_path / "outputs" / "runs" / "k"


def status(run_dir):
    return json.loads((run_dir / records.RUN_JSON).read_text())["status"]


def relaunch(capsys):
    code = cli.main(["run", *TINY])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def foreign(path):
    """``path`` (a file or folder, not followed) made another user's: chowned as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    os.chown(path, FOREIGN_UID, FOREIGN_UID, follow_symlinks=False)


def test_sigterm_is_one_line_and_the_run_is_interrupted(interrupted_template):
    root, code, err, handler_put_back = interrupted_template
    run_dir = root / "runs" / "k"
    assert code == 130
    assert err.strip().splitlines() == ["interrupted: complete runs are kept; run the same command "
                                        "again to resume"]
    assert status(run_dir) == "interrupted"
    assert (run_dir / records.CHECKPOINT).is_file()
    assert handler_put_back
    frame = records.load(root)
    assert set(frame["status"]) == {"interrupted"}


def test_the_interrupted_run_resumes(run_dir, capsys):
    code, out, err = relaunch(capsys)
    assert code == 0 and err == [] and f"resuming {run_dir} from epoch" in out
    assert status(run_dir) == "complete"


def state_of(run_dir):
    return torch.load(run_dir / records.CHECKPOINT, weights_only=True)


BAD_STATES = {
    "empty dict": lambda state: {},
    "an int": lambda state: 42,
    "a list": lambda state: [1, 2],
    "partial": lambda state: {k: state[k] for k in ("model", "epoch")},
    "epoch a string": lambda state: {**state, "epoch": "1"},
    "negative step": lambda state: {**state, "step": -4},
    "model of other shapes": lambda state: {**state, "model": {k: torch.zeros(3) for k in state["model"]}},
    "optimizer a tensor": lambda state: {**state, "optimizer": torch.zeros(2)},
    "generator a string": lambda state: {**state, "generator": "x"},
    "device_type nonsense": lambda state: {**state, "device_type": 7},
    "metrics rows not a list": lambda state: {**state, "metrics_rows": 3},
    "metrics rows without steps": lambda state: {**state, "metrics_rows": [{"epoch": 0}]},
    "metrics row of text": lambda state: {**state, "metrics_rows": ["row"]},
}


@pytest.fixture(scope="module")
def trainer():
    from confusion_cli import config, data
    from confusion_cli.train import Trainer

    cfg = config.run_config(TINY)
    return lambda: Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, torch.device("cpu")),
                                       torch.device("cpu"))


@pytest.mark.parametrize("bad", [bad for bad in BAD_STATES if bad != "device_type nonsense"])
def test_a_state_that_does_not_fit_is_refused_before_the_run_trains(interrupted_template, tmp_path,
                                                                     capsys, trainer, bad):
    """Every bad state is caught where the runner reads it: by read_checkpoint (None, one
    warning line) or by Trainer.load_state_dict (a ValueError; the device check is run._start's,
    tested through the CLI below)."""
    good = state_of(interrupted_template[0] / "runs" / "k")
    torch.save(BAD_STATES[bad](good), tmp_path / records.CHECKPOINT)
    state = records.read_checkpoint(tmp_path)
    if state is None:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "restarting this run from scratch" in err[0]
        return
    with pytest.raises(ValueError):
        trainer().load_state_dict(state)
    trainer().load_state_dict(good)  # the good one loads


@pytest.mark.parametrize("bad", ["empty dict", "an int", "partial", "device_type nonsense"])
def test_a_checkpoint_that_is_no_state_restarts_the_run_with_one_line(run_dir, capsys, bad):
    torch.save(BAD_STATES[bad](state_of(run_dir)), run_dir / records.CHECKPOINT)
    code, out, err = relaunch(capsys)
    assert code == 0, err
    assert len(err) == 1 and err[0].startswith("warning: checkpoint ") and "restarting" in err[0], err
    assert "resuming" not in out
    assert status(run_dir) == "complete"
    assert "restarting from scratch" in (run_dir / records.RUN_LOG).read_text()
    metrics = records.load(run_dir.parent.parent)
    assert sorted(metrics["epoch"]) == [0, 1, 2]


def test_a_foreign_checkpoint_is_refused(run_dir, capsys):
    foreign(run_dir / records.CHECKPOINT)
    code, out, err = relaunch(capsys)
    assert code == 0 and len(err) == 1 and "belongs to another user" in err[0] and "resuming" not in out
    assert status(run_dir) == "complete"


def samples_as_file(run_dir):
    shutil.rmtree(run_dir / records.SAMPLES)
    (run_dir / records.SAMPLES).write_text("x")


def samples_as_link(run_dir):
    shutil.move(run_dir / records.SAMPLES, run_dir.parent / "elsewhere")
    (run_dir / records.SAMPLES).symlink_to(run_dir.parent / "elsewhere", target_is_directory=True)


def samples_foreign(run_dir):
    foreign(run_dir / records.SAMPLES)


def a_foreign_sample(run_dir):
    foreign(next((run_dir / records.SAMPLES).iterdir()))


@pytest.mark.parametrize("plant", [samples_as_file, samples_as_link, samples_foreign, a_foreign_sample])
def test_samples_that_are_not_the_users_folder_restart_the_run_with_one_line(run_dir, capsys, plant):
    plant(run_dir)
    code, out, err = relaunch(capsys)
    assert code == 0, err
    assert len(err) == 1 and err[0].startswith("warning: ") and "restarting" in err[0], err
    assert "resuming" not in out and status(run_dir) == "complete"
    samples = run_dir / records.SAMPLES
    assert samples.is_dir() and not samples.is_symlink() and samples.stat().st_uid == os.getuid()
    assert all(p.stat().st_uid == os.getuid() for p in samples.iterdir())


def log_as_folder(run_dir):
    (run_dir / records.RUN_LOG).unlink()
    (run_dir / records.RUN_LOG).mkdir()


def log_as_link(run_dir):
    (run_dir / records.RUN_LOG).unlink()
    (run_dir / records.RUN_LOG).symlink_to(run_dir.parent / "outside.log")


def log_foreign(run_dir):
    foreign(run_dir / records.RUN_LOG)


@pytest.mark.parametrize("plant", [log_as_folder, log_as_link, log_foreign])
def test_a_run_log_that_cannot_be_appended_to_is_replaced_with_one_line(run_dir, capsys, plant):
    plant(run_dir)
    code, out, err = relaunch(capsys)
    assert code == 0, err
    assert len(err) == 1 and "replacing it with a fresh run.log" in err[0], err
    assert f"resuming {run_dir} from epoch" in out and status(run_dir) == "complete"
    log = run_dir / records.RUN_LOG
    assert log.is_file() and not log.is_symlink() and "complete" in log.read_text()
    assert not (run_dir.parent / "outside.log").exists()


def test_a_lock_planted_as_a_link_is_one_line_saying_the_fix(run_dir, capsys):
    target = run_dir.parent / "target"
    target.write_text("")
    (run_dir / records.LOCK).unlink()
    (run_dir / records.LOCK).symlink_to(target)
    with pytest.raises(SystemExit) as code:
        relaunch(capsys)
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1, err
    assert f"rm {run_dir / records.LOCK}" in err[0] and "symbolic link" in err[0]
    assert target.read_text() == ""
    (run_dir / records.LOCK).unlink()
    code, out, err = relaunch(capsys)
    assert code == 0 and status(run_dir) == "complete"


def test_a_killed_writes_temporary_files_are_removed_when_the_run_opens(run_dir, capsys):
    strays = [run_dir / ".metrics.csv.abc123.tmp", run_dir / ".run.json.x1.tmp",
              run_dir / records.SAMPLES / ".step_00000003.csv.q9.tmp",
              run_dir / records.SAMPLES / ".epoch_0002.csv.zz.tmp"]
    for path in strays:
        path.write_text("half a file")
    code, out, err = relaunch(capsys)
    assert code == 0 and err == []
    assert not any(p.exists() for p in strays)
    assert not list(run_dir.rglob("*.tmp"))

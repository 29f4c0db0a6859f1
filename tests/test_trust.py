"""Records on a shared root are believed only when they can be: planted records never make a
run skip, resume or merge rows, and a full disk is one line with the run marked failed."""

import errno
import json
import os

import pandas as pd
import pytest

from confusion_cli import cli, records
from confusion_cli.train import Trainer

ARGS = ["run", "optim.epochs=3", "probe.pairs=2", "threads=1", "dataset.train_size=256",
        "model.width=16", "launch_id=first"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path


def run(args, launch_id):
    return cli.main([*[a for a in args if not a.startswith("launch_id=")], f"launch_id={launch_id}"])


def only_run(root):
    (run_dir,) = records.run_dirs(root)
    return run_dir


def test_a_planted_complete_record_does_not_make_a_run_skip(workdir, capsys):
    assert run(ARGS, "first") == 0
    real = only_run(workdir / "outputs")
    cfg_hash = json.loads((real / records.RUN_JSON).read_text())["config_hash"]
    assert records.distrust(workdir / "outputs", real, cfg_hash) is None  # its own record is believed
    # a record that claims the hash of another config (a different seed) and says "complete"
    other = ["run", *ARGS[1:], "seed=7"]
    planted = workdir / "outputs" / "runs" / "planted"
    planted.mkdir()
    (planted / records.CONFIG).write_text((real / records.CONFIG).read_text())  # seed 0's config
    seed7 = records.config_hash(composed(other))
    records.write_json(planted / records.RUN_JSON, {"status": "complete", "config_hash": seed7})
    capsys.readouterr()
    assert run(other, "second") == 0
    out, err = capsys.readouterr()
    assert "does not hash to the hash its run.json claims" in err and "skip" not in out
    ran = [d for d in records.run_dirs(workdir / "outputs") if d.name == "second"]
    assert ran and json.loads((ran[0] / records.RUN_JSON).read_text())["status"] == "complete"


def composed(args):

    from confusion_cli import config

    return config.run_config([*args[1:], "launch_id=x"])


def test_distrust_names_each_reason(workdir, monkeypatch):
    assert run(ARGS, "first") == 0
    root = workdir / "outputs"
    real = only_run(root)
    cfg_hash = json.loads((real / records.RUN_JSON).read_text())["config_hash"]
    linked = root / "runs" / "linked"
    linked.symlink_to(real, target_is_directory=True)
    assert "symbolic link" in records.distrust(root, linked, cfg_hash)
    assert "outside records_root" in records.distrust(root / "runs" / "elsewhere", real, cfg_hash)
    assert "does not hash" in records.distrust(root, real, "0" * 16)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    assert "another user" in records.distrust(root, real, cfg_hash)
    monkeypatch.setattr(os, "getuid", lambda: uid)
    (real / records.CONFIG).unlink()
    (real / records.CONFIG).symlink_to(workdir / "elsewhere.yaml")
    assert "config.yaml is a symbolic link" in records.distrust(root, real, cfg_hash)


def test_planted_metrics_rows_are_not_merged_on_resume(workdir, monkeypatch, capsys):
    assert run(ARGS, "reference") == 0
    reference = pd.read_csv(only_run(workdir / "outputs") / records.METRICS)
    os.rename(workdir / "outputs", workdir / "reference")

    real_epoch = Trainer.train_epoch

    def killed_in_epoch_3(self, *args, **kwargs):
        if self.epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C: the run says "interrupted" and keeps its checkpoint
        return real_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", killed_in_epoch_3)
    assert run(ARGS, "first") == 130
    run_dir = only_run(workdir / "outputs")
    assert json.loads((run_dir / records.RUN_JSON).read_text())["status"] == "interrupted"
    metrics = pd.read_csv(run_dir / records.METRICS)
    planted = metrics.iloc[[0]].assign(epoch=0.5, step=3, train_loss=-1.0)
    pd.concat([metrics, planted]).sort_values("step").to_csv(run_dir / records.METRICS, index=False)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    capsys.readouterr()
    assert run(ARGS, "second") == 0
    assert "resuming" in capsys.readouterr().out
    resumed = pd.read_csv(run_dir / records.METRICS)
    assert (resumed["train_loss"] >= 0).all() and 0.5 not in set(resumed["epoch"])
    timing = ["epoch_seconds", "probe_seconds"]
    pd.testing.assert_frame_equal(resumed.drop(columns=timing), reference.drop(columns=timing))


def test_a_full_disk_is_one_line_and_the_run_is_marked_failed(workdir, monkeypatch, capsys):
    real_write = records.writer.write_csv
    calls = []

    def disk_fills(path, frame):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, frame)

    monkeypatch.setattr(records.writer, "write_csv", disk_fills)
    with pytest.raises(SystemExit) as exit_code:  # a single run's errors leave Hydra as exit 2
        run(ARGS, "first")
    assert exit_code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: disk full at ") and "records_root" in err[0], err
    run_dir = only_run(workdir / "outputs")
    meta = json.loads((run_dir / records.RUN_JSON).read_text())
    assert meta["status"] == "failed" and "disk full at" in meta["error"]


def claim_and_run(root: str, job: int, delay: float, results) -> None:
    """A sweep job in its own process whose directory choice takes ``delay`` seconds: the window
    in which an identical launch, without the per-hash claim, would choose a directory too."""
    import time

    from confusion_cli import run

    real_choose = records.choose_run_dir

    def slow_choose(*args, **kwargs):
        chosen = real_choose(*args, **kwargs)
        time.sleep(delay)
        return chosen

    records.choose_run_dir = slow_choose
    new_dir = os.path.join(root, "runs", f"job{job}")
    os.makedirs(new_dir)
    os.chdir(new_dir)  # outside Hydra, a new run's directory is the working directory
    cfg = composed(["run", "optim.epochs=1", "probe.pairs=2", "threads=1", "dataset.train_size=256",
                    "model.width=16", f"records_root={root}"])
    results.put(run.execute(cfg))


@pytest.mark.slow
def test_identical_launches_racing_for_a_directory_give_one_record(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    root = str(tmp_path / "outputs")
    jobs = [context.Process(target=claim_and_run, args=(root, job, 1.0, results)) for job in (0, 1)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert sorted(results.get(timeout=5) for _ in jobs) == ["complete", "skipped"]
    assert len(records.run_dirs(root)) == 1

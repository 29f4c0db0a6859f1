"""Sweeps that survive: a real kill and a rerun give the records of an uninterrupted sweep;
launchers agree; concurrent sweeps never share a directory."""

import json
import os
import signal
import time

import pandas as pd
import pytest
from fakes import run_cli, start_cli

from confusion_cli import records

pytestmark = pytest.mark.slow  # real sweeps in fresh processes

TIMING = ["epoch_seconds", "probe_seconds"]
# a step schedule (probes between steps too) and an LR drop at epoch 3, killed after it
SWEEP = ["run", "seed=0,1", "optim.epochs=15", "probe.pairs=1", "model.width=128",
         "probe.schedule=steps:4", "optim.milestones=[3]", "optim.gamma=0.5"]
KILL_AFTER_EPOCH = 5


def comparable(root) -> pd.DataFrame:
    """Metrics of every run under root, without timings and paths, in a stable order."""
    frame = records.load(root)
    where = (*records.hashing.NON_SEMANTIC_KEYS, "run_dir")
    keep = [c for c in frame.columns if c not in TIMING and c.split(".")[0] not in where]
    return frame[keep].sort_values(["seed", "epoch"]).reset_index(drop=True)


def samples(root) -> pd.DataFrame:
    frames = []
    for run_dir in records.run_dirs(root):
        seed = json.loads((run_dir / "run.json").read_text())["seed"]
        frames.append(records.load_samples(run_dir).assign(seed=seed))
    return pd.concat(frames).sort_values(["seed", "epoch", "step", "pair"]).reset_index(drop=True)


def epochs_checkpointed(root) -> float:
    """The furthest epoch any run under ``root`` has a checkpoint and metrics row for."""
    done = 0.0
    for checkpoint in root.rglob(records.CHECKPOINT):
        try:
            done = max(done, pd.read_csv(checkpoint.parent / records.METRICS)["epoch"].max())
        except (OSError, ValueError, KeyError):
            pass
    return done


def test_killed_sweep_resumes_to_the_same_records(tmp_path):
    reference = run_cli([*SWEEP, "records_root=outputs/reference"], tmp_path)
    assert reference.returncode == 0, reference.stderr

    killed_root = tmp_path / "outputs" / "killed"
    proc = start_cli([*SWEEP, f"records_root={killed_root}"], tmp_path)
    deadline = time.time() + 120
    while epochs_checkpointed(killed_root) < KILL_AFTER_EPOCH and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # as a scheduler's kill -9 would
    proc.wait()
    interrupted = [d for d in records.run_dirs(killed_root)
                   if json.loads((d / "run.json").read_text())["status"] == "running"]
    assert interrupted, "the kill should leave an unfinished run behind"
    lrs = pd.concat(pd.read_csv(d / records.METRICS) for d in interrupted)["lr"]
    assert lrs.nunique() == 2, "the kill should come after the LR drop"

    rerun = run_cli([*SWEEP, f"records_root={killed_root}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout
    assert len(records.run_dirs(killed_root)) == 2  # resumed in place, no duplicate records
    pd.testing.assert_frame_equal(comparable(killed_root), comparable(tmp_path / "outputs/reference"))
    pd.testing.assert_frame_equal(samples(killed_root), samples(tmp_path / "outputs/reference"))
    assert set(records.load(killed_root)["status"]) == {"complete"}
    steps = comparable(killed_root)
    assert (steps["epoch"] % 1 != 0).sum() > 20 and steps["batch_loss"].notna().any()
    assert not list(killed_root.rglob(records.CHECKPOINT))  # complete runs drop their checkpoint
    for run_dir in interrupted:  # run.json keeps the first start, both segments and their total
        meta = json.loads((run_dir / "run.json").read_text())
        assert len(meta["segments"]) == 2 and meta["start_time"] == meta["segments"][0]["start"]
        assert all(s["host"] and s["device"] == "cpu" and s["end"] for s in meta["segments"])
        assert meta["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in meta["segments"]))
        assert meta["wall_seconds_before"] == pytest.approx(meta["segments"][0]["wall_seconds"])


def test_launchers_give_the_same_records(tmp_path):
    # one thread each: a CPU's float reductions depend on the thread count (run.json records it)
    args = ["run", "seed=0,1", "optim.epochs=2", "probe.pairs=2", "threads=1"]
    roots = {}
    for launcher in ("basic", "joblib", "submitit_local"):
        roots[launcher] = tmp_path / "outputs" / launcher
        done = run_cli([*args, f"hydra/launcher={launcher}", f"records_root={roots[launcher]}"],
                       tmp_path)
        assert done.returncode == 0, done.stderr
    basic = comparable(roots["basic"])
    assert len(basic) == 6
    for launcher in ("joblib", "submitit_local"):
        pd.testing.assert_frame_equal(comparable(roots[launcher]), basic)


def test_concurrent_sweeps_never_share_a_directory(tmp_path):
    procs = [start_cli(["run", f"seed={s}", "model.width=16,32", "optim.epochs=1", "probe.pairs=2"],
                       tmp_path) for s in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    sweep_dirs = list((tmp_path / "outputs" / "sweeps" / "single").iterdir())
    assert len(sweep_dirs) == 2
    frame = records.load(tmp_path / "outputs")
    assert frame["run_dir"].nunique() == 4 and set(frame["status"]) == {"complete"}


class Payload:
    """A pickle that runs code when unpickled without weights_only: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_unreadable_or_planted_checkpoint_restarts_the_run_and_runs_no_code(tmp_path):
    import torch

    args = ["run", "optim.epochs=2", "probe.pairs=2", "threads=1"]
    root = tmp_path / "outputs"
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    reference = comparable(root)
    (run_dir,) = records.run_dirs(root)
    marker = tmp_path / "payload_ran"
    for plant in (lambda path: path.write_bytes(b"PK\x03\x04 not a checkpoint"),
                  lambda path: torch.save({"model": Payload(marker)}, path)):
        meta = json.loads((run_dir / "run.json").read_text())
        records.write_json(run_dir / "run.json", {**meta, "status": "running"})  # as if killed
        plant(run_dir / records.CHECKPOINT)
        again = run_cli(args, tmp_path)
        assert again.returncode == 0, again.stderr
        assert "is unreadable" in again.stderr and "restarting this run from scratch" in again.stderr
        assert "resuming" not in again.stdout
        assert not marker.exists(), "a planted checkpoint must never run code"
        assert records.run_dirs(root) == [run_dir]
        pd.testing.assert_frame_equal(comparable(root), reference)


def test_resuming_on_another_device_type_is_one_line_and_leaves_the_run_resumable(tmp_path):
    import torch

    args = ["run", "optim.epochs=2", "probe.pairs=2", "threads=1"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    (run_dir,) = records.run_dirs(tmp_path / "outputs")
    meta = json.loads((run_dir / "run.json").read_text())
    records.write_json(run_dir / "run.json", {**meta, "status": "running"})  # as if killed
    torch.save({"device_type": "cuda", "epoch": 1}, run_dir / records.CHECKPOINT)  # from a GPU node
    again = run_cli(args, tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {run_dir} was started on cuda and can only resume there: rerun with device=cuda, "
        "or delete that directory to start the run again on cpu"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert (run_dir / records.CHECKPOINT).is_file()


def test_identical_launches_started_together_give_one_record(tmp_path):
    """Four identical launches released at the same instant (after their imports, so that they
    race for the same config hash): one runs, the others skip it."""
    import subprocess
    import sys

    args = ["run", "optim.epochs=3", "probe.pairs=2", "threads=1", "seed=7"]
    start = time.time() + 15
    code = ("import sys, time; import torch, hydra, confusion_cli.run; from confusion_cli.cli import main; "
            f"time.sleep(max(0, {start} - time.time())); sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "CONFUSION_OUTPUTS": str(tmp_path / "outputs"), "CONFUSION_DATA": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    frame = records.load(tmp_path / "outputs")
    assert frame["run_dir"].nunique() == 1 and set(frame["status"]) == {"complete"}
    skipped = [out for out, _ in outs if "skip: already" in out]
    assert len(skipped) == 3, [out[-300:] for out, _ in outs]


def job_processes(marker: str) -> list[int]:
    """Pids of the processes whose command line holds ``marker`` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry))
    return pids


def test_a_preempted_submitit_job_is_requeued_and_resumes_to_the_same_records(tmp_path):
    """The cluster path, locally: submitit's preemption signal (USR2) mid-run makes the job
    checkpoint itself for requeueing (Hydra's submitit launcher) and exit; submitit starts it
    again, and the run resumes from its last epoch checkpoint to the records of a run that was
    never interrupted."""
    args = ["run", "-m", "optim.epochs=40", "probe.pairs=1", "model.width=256", "threads=1"]
    reference = run_cli([*args, "records_root=outputs/reference"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    root = tmp_path / "outputs" / "preempted"
    proc = start_cli([*args, f"records_root={root}", "hydra/launcher=submitit_local",
                      "hydra.launcher.timeout_min=10"], tmp_path)
    deadline = time.time() + 240
    while epochs_checkpointed(root) < 3 and time.time() < deadline:
        time.sleep(0.05)
    jobs = job_processes("submitit.core._submit")
    assert jobs, "the submitit job should be running"
    for pid in jobs:
        os.kill(pid, signal.SIGUSR2)  # what Slurm sends before a time limit or a preemption
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    logs = "".join(p.read_text() for p in root.rglob("*_log.err"))
    assert "Caught signal SIGUSR2" in logs and "Requeued" in logs + "".join(
        p.read_text() for p in root.rglob("*_log.out")), logs[-2000:]
    (run_dir,) = records.run_dirs(root)
    assert "resuming" in (run_dir / records.RUN_LOG).read_text()
    assert json.loads((run_dir / records.RUN_JSON).read_text())["status"] == "complete"
    pd.testing.assert_frame_equal(comparable(root), comparable(tmp_path / "outputs/reference"))

"""A records root others can write to (issue 22): every reader vets a record as the runner does,
a launch folder belongs to one config, nothing planted hangs a command, locks held by others
are waited on for a bounded time and named, folders and appends never go through links."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from fakes import run_cli
from omegaconf import OmegaConf

from confusion_cli import cli, config, records
from confusion_cli.errors import ConfusionError
from confusion_cli.figures.select import select_lr

TINY = ["optim.epochs=1", "probe.pairs=2", "threads=1", "dataset.train_size=256", "model.width=16",
        "progress=false"]


def composed(args):
    return config.run_config([*args, "launch_id=x"])


def honest_run(path, lr, seed, final_loss, status="complete"):
    """A run directory as the runner writes it: config.yaml, run.json (its config's hash),
    metrics.csv."""
    cfg = {"seed": seed, "model": {"name": "mlp", "depth": 4}, "optim": {"lr": lr},
           "dataset": {"name": "digits"}, "sweep": {"name": "shared"}}
    path.mkdir(parents=True)
    (path / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    records.write_json(path / records.RUN_JSON, {"status": status, "config_hash": records.config_hash(cfg)})
    records.write_csv(path / records.METRICS, pd.DataFrame(
        {"epoch": [0, 1], "step": [0, 10], "train_loss": [2.0, final_loss], "min_cos": [0.1, -0.1]}))
    return cfg


def shared_root(tmp_path):
    """Two LRs x two seeds of honest runs (lr 0.03 has the lowest final loss) under a shared
    records root."""
    root = tmp_path / "shared"
    for lr, losses in ((0.01, (0.5, 0.6)), (0.03, (0.2, 0.3))):
        for seed, loss in enumerate(losses):
            honest_run(root / "sweeps" / "shared" / "L" / f"{lr}_{seed}", lr, seed, loss)
    return root


def plant_edited(root):
    """A run planted by a co-user: an honest record whose config.yaml was then edited to an LR of
    0.777, with a final train_loss of 1e-9: its config no longer hashes to its claimed hash."""
    planted = root / "sweeps" / "shared" / "L" / "intruder"
    cfg = honest_run(planted, 0.03, 0, 1e-9)
    cfg["optim"]["lr"] = 0.777
    (planted / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return planted


def plant_foreign(root, monkeypatch):
    """A run whose config hashes right (LR 0.777, train_loss 1e-9) but that belongs to another
    user: chowned where the tests run as root, else owned by simulation (the owner check)."""
    planted = root / "sweeps" / "shared" / "L" / "intruder"
    honest_run(planted, 0.777, 0, 1e-9)
    honest_run(root / "sweeps" / "shared" / "L" / "intruder_seed1", 0.777, 1, 1e-9)
    if os.geteuid() == 0:
        for d in (planted, root / "sweeps" / "shared" / "L" / "intruder_seed1"):
            for path in (d, *d.iterdir()):
                os.chown(path, 4242, 4242, follow_symlinks=False)
    else:
        real = records.safe.check_owner

        def foreign(path, st):
            if "/intruder" in str(path):
                raise records.UnsafeRecord(f"{path} belongs to another user (uid 4242)")
            return real(path, st)

        monkeypatch.setattr(records.safe, "check_owner", foreign)
    return planted


# -- 1. one vetting for every reader ----------------------------------------------------------
@pytest.mark.parametrize("plant", ["edited_config", "another_user"])
def test_a_planted_run_is_not_loaded_and_does_not_win_lr_selection(tmp_path, monkeypatch, plant):
    root = shared_root(tmp_path)
    planted = plant_edited(root) if plant == "edited_config" else plant_foreign(root, monkeypatch)
    why = "does not hash" if plant == "edited_config" else "belongs to another user"
    with pytest.warns(records.RecordWarning) as caught:
        frame = records.load(root)
    assert not frame["run_dir"].str.contains("/intruder").any()
    assert 0.777 not in set(frame["optim.lr"])
    lines = [str(w.message) for w in caught if "/intruder" in str(w.message)]
    assert lines and all(len(line.splitlines()) == 1 and why in line for line in lines), lines
    assert str(planted) in lines[0]
    selection = select_lr(frame)
    assert selection["optim.lr"].tolist() == [0.03]


@pytest.mark.slow
@pytest.mark.parametrize("plant", ["edited_config", "another_user"])
def test_status_and_plot_skip_a_planted_run_with_one_line(tmp_path, monkeypatch, capsys, plant):
    root = shared_root(tmp_path)
    planted = plant_edited(root) if plant == "edited_config" else plant_foreign(root, monkeypatch)
    assert cli.main(["status", str(root)]) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if f"{planted}:" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: skipping the record in"), err
    assert "complete 4 " in out  # the four honest runs, not the planted one
    cli.main(["plot", str(root), "--out", str(tmp_path / "fig")])
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if f"{planted}:" in line]) == 1, err
    for csv in (tmp_path / "fig").rglob("*.csv"):
        assert "0.777" not in csv.read_text() and "/intruder" not in csv.read_text()


def test_claims_read_only_vetted_records(tmp_path):
    root = shared_root(tmp_path)
    plant_edited(root)
    from confusion_cli import claims

    with pytest.warns(records.RecordWarning, match="does not hash"):
        frame = claims.read_records([root])
    assert set(frame["optim.lr"]) == {0.01, 0.03}


# -- 2. a launch folder belongs to one config -------------------------------------------------
@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("CONFUSION_LOCK_TIMEOUT", "2")
    return tmp_path


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_launch_id_holding_another_config_is_one_line_and_nothing_is_written(workdir, capsys):
    assert cli.main(["run", *TINY, "launch_id=exp1", "optim.lr=0.05"]) == 0
    folder = workdir / "outputs" / "runs" / "exp1"
    before = snapshot(folder)
    capsys.readouterr()
    assert cli.main(["run", *TINY, "launch_id=exp1", "optim.lr=0.1"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and str(folder) in err and "new launch_id" in err, err
    assert "skip" not in out
    assert snapshot(folder) == before  # nothing written, .hydra included
    assert OmegaConf.load(folder / records.CONFIG).optim.lr == 0.05
    # the same config again in its own folder: nothing to do
    assert cli.main(["run", *TINY, "launch_id=exp1", "optim.lr=0.05"]) == 0
    assert "skip: already complete" in capsys.readouterr().out


def test_a_live_run_of_another_config_in_the_folder_is_an_error_not_a_skip(workdir, capsys):
    root = workdir / "outputs"
    first = composed([*TINY, "optim.lr=0.05"])
    folder = root / "runs" / "exp1"
    folder.mkdir(parents=True)
    records.write_config(folder, first)
    records.write_json(folder / records.RUN_JSON,
                       {"status": "running", "config_hash": records.config_hash(first)})
    with records.run_lock(folder) as held:  # the first run, live
        assert held
        code = cli.main(["run", *TINY, "launch_id=exp1", "optim.lr=0.1"])
    out, err = capsys.readouterr()
    assert code == 2 and "skip" not in out and "another config" in err and "new launch_id" in err
    # inside the run (hydra.run.dir elsewhere, or a race): the choice refuses the folder too
    other = records.config_hash(composed([*TINY, "optim.lr=0.1"]))
    with pytest.raises(ConfusionError, match="another config"):
        records.choose_run_dir(root, other, folder)


def test_a_sweep_launch_id_holding_another_sweep_is_one_line(workdir, capsys):
    sweep_dir = workdir / "outputs" / "sweeps" / "single" / "s1"
    args = ["run", *TINY, "launch_id=s1", "optim.lr=0.05,0.1"]
    # the first launch's plan: what it computes is its overrides but where and how it ran
    plan = sorted(["optim.epochs=1", "probe.pairs=2", "dataset.train_size=256", "model.width=16",
                   "optim.lr=0.05,0.1"])
    sweep_dir.mkdir(parents=True)
    records.write_json(sweep_dir / "sweep.json", {"total": 2, "grid": {"optim.lr": 2}, "overrides": plan})
    before = snapshot(sweep_dir)
    assert cli.main([*args, "seed=3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(sweep_dir) in err and "new launch_id" in err, err
    assert snapshot(sweep_dir) == before
    assert records.plan_overrides(args[1:]) == plan
    # the same overrides in another order, or with progress: the same sweep
    records.check_sweep_folder(workdir / "outputs", sweep_dir, 2, {"optim.lr": 2},
                               records.plan_overrides(list(reversed(args[1:])) + ["progress=true"]))


# -- 3. nothing planted hangs a command --------------------------------------------------------
def plant_traps(root):
    """A records root where every file a command reads is, somewhere, a FIFO or a link to
    /dev/zero: a reader that opens one without O_NONBLOCK, or reads without a cap, never ends."""
    launch = root / "sweeps" / "x" / "L1"
    records.write_plan(launch, 6, {"seed": 6})
    (launch / "0").mkdir()
    os.mkfifo(launch / "0" / records.RUN_JSON)
    (launch / "1").mkdir()
    (launch / "1" / records.RUN_JSON).symlink_to("/dev/zero")
    honest_run(launch / "2", 0.1, 2, 0.5, status="failed")
    os.mkfifo(launch / "2" / records.ERROR)   # the failure's reason
    os.mkfifo(launch / "2" / ".lock")    # liveness
    honest_run(launch / "3", 0.1, 3, 0.5)
    (launch / "3" / records.SAMPLES).mkdir()
    os.mkfifo(launch / "3" / records.SAMPLES / "epoch_0001.csv")
    honest_run(launch / "4", 0.1, 4, 0.5)
    (launch / "4" / records.METRICS).unlink()
    os.mkfifo(launch / "4" / records.METRICS)
    (launch / "5" / ".hydra").mkdir(parents=True)
    os.mkfifo(launch / "5" / ".hydra" / "config.yaml")
    other = root / "sweeps" / "x" / "L2"
    other.mkdir(parents=True)
    os.mkfifo(other / "sweep.json")
    big = root / "runs" / "big"
    honest_run(big, 0.1, 9, 0.5)
    (big / records.RUN_JSON).write_text(json.dumps({"status": "complete", "pad": "x" * (2 << 20)}))
    return launch


@pytest.mark.slow
def test_fifos_and_links_to_dev_zero_hang_no_command(tmp_path):
    root = tmp_path / "outputs"
    launch = plant_traps(root)
    status = run_cli(["status", str(root)], tmp_path, timeout=180)
    assert status.returncode == 0, status.stderr
    for name, why in (("0", "FIFO"), ("1", "symbolic link"), ("4", "metrics.csv is a FIFO")):
        assert f"{launch / name}: " in status.stderr and why in status.stderr, status.stderr
    assert "more than the 1 MiB" in status.stderr
    plot = run_cli(["plot", str(root)], tmp_path, timeout=180)
    assert "Traceback" not in plot.stderr, plot.stderr
    assert f"{launch / '3' / records.SAMPLES / 'epoch_0001.csv'}: " in plot.stderr
    run = run_cli(["run", *TINY, f"records_root={root}", "launch_id=after"], tmp_path, timeout=300)
    assert run.returncode == 0 and "complete" in run.stdout, run.stderr


def test_record_files_are_read_with_a_cap_and_never_through_a_link(tmp_path):
    path = tmp_path / records.RUN_JSON
    path.write_text(json.dumps({"status": "complete", "pad": " " * (1 << 20)}))
    with pytest.warns(records.RecordWarning, match="more than the 1 MiB"):
        assert records.read_run_json(tmp_path) is None
    path.unlink()
    path.symlink_to("/dev/zero")  # read without a cap, it fills the memory
    with pytest.warns(records.RecordWarning, match="symbolic link"):
        assert records.read_run_json(tmp_path) is None
    with pytest.raises(ConfusionError, match="symbolic link"):
        records.safe.read_bytes(path)


# -- 4. locks held by others -------------------------------------------------------------------
def hold(path, write_pid=False):
    """Another process holding ``flock -x`` on ``path`` (writing its pid and host into it, as a
    confusion run does, with ``write_pid``); returns it once it holds the lock."""
    code = textwrap.dedent(f"""
        import fcntl, os, socket, sys, time
        fd = os.open({str(path)!r}, os.O_RDONLY | os.O_CREAT{" | os.O_RDWR" if write_pid else ""})
        fcntl.flock(fd, fcntl.LOCK_EX)
        if {write_pid}:
            os.ftruncate(fd, 0)
            os.write(fd, f"{{os.getpid()}} {{socket.gethostname()}}\\n".encode())
        print("held", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_a_claim_held_by_another_process_is_waited_on_then_one_line(workdir):
    root = workdir / "outputs"
    cfg_hash = records.config_hash(composed(TINY))
    claim = root / ".claims" / f"{cfg_hash}.lock"
    claim.parent.mkdir(parents=True)
    holder = hold(claim, write_pid=True)
    try:
        started = time.monotonic()
        result = run_cli(["run", *TINY, "launch_id=c1"], workdir, timeout=180,
                         env={"CONFUSION_OUTPUTS": str(root), "CONFUSION_LOCK_TIMEOUT": "3"})
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    said = f"waiting up to 3s for {claim}, held by pid {holder.pid} on {socket.gethostname()}"
    assert said in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0] and "Traceback" not in result.stderr
    assert waited < 120


def test_a_claim_that_cannot_be_opened_or_a_claims_file_is_one_line(workdir, monkeypatch, capsys):
    root = workdir / "outputs"
    root.mkdir()
    (root / ".claims").write_text("not a folder")
    with pytest.raises(ConfusionError, match=r"\.claims is a regular file, not a folder"):
        with records.claim_lock(root, "0" * 16):
            pass
    assert cli.main(["run", *TINY, "launch_id=c2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".claims is a regular file" in err[0]
    (root / ".claims").unlink()
    real_open = os.open

    def denied(path, flags, *args, **kwargs):  # another user's 0644 lock file (root may open all)
        if str(path).endswith(".lock") and ".claims" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ConfusionError, match="cannot open the lock file .* permission denied"):
        with records.claim_lock(root, "0" * 16):
            pass


def interrupted_run(root, launch_id="first"):
    """The record of a run of TINY killed before its first checkpoint (run.json says running)."""
    cfg = composed(TINY)
    folder = root / "runs" / launch_id
    folder.mkdir(parents=True)
    records.write_config(folder, cfg)
    records.write_json(folder / records.RUN_JSON,
                       {"status": "running", "config_hash": records.config_hash(cfg)})
    return folder


@pytest.mark.slow
def test_an_interrupted_runs_lock_held_by_another_process_is_not_a_silent_skip(workdir, capsys):
    folder = interrupted_run(workdir / "outputs")
    holder = hold(folder / ".lock")  # a process that is not the run (it names no pid)
    try:
        with pytest.raises(SystemExit) as exit_code:
            cli.main(["run", *TINY, "launch_id=second"])
    finally:
        holder.kill()
        holder.wait()
    out, err = capsys.readouterr()
    assert exit_code.value.code == 2 and "skip" not in out
    assert f"waiting up to 2s for {folder / '.lock'}" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot restart" in errors[0], err
    assert "by a process that wrote no pid" in errors[0]
    # the lock released: the same command restarts it
    assert cli.main(["run", *TINY, "launch_id=second"]) == 0
    assert json.loads((folder / records.RUN_JSON).read_text())["status"] == "complete"


def test_a_run_live_elsewhere_is_skipped_naming_its_pid(workdir, capsys):
    folder = interrupted_run(workdir / "outputs")
    holder = hold(folder / ".lock", write_pid=True)  # the run itself, alive
    try:
        assert cli.main(["run", *TINY, "launch_id=second"]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert f"skip: already running in {folder} (pid {holder.pid} on {socket.gethostname()})" in out


# -- 5. folders and appends never through links, no FIFO log hangs ------------------------------
def test_folders_planted_as_links_are_refused_before_anything_is_written(workdir, capsys):
    root = workdir / "outputs"
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "runs").symlink_to(elsewhere, target_is_directory=True)
    assert cli.main(["run", *TINY, "launch_id=l1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{root / 'runs'} is a symbolic link" in err[0], err
    assert list(elsewhere.iterdir()) == []
    (root / "runs").unlink()
    (root / ".claims").symlink_to(elsewhere, target_is_directory=True)
    assert cli.main(["run", *TINY, "launch_id=l1"]) == 2
    assert ".claims is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ConfusionError, match="symbolic link"):
        records.make_dir(root / ".claims" / "x", root)


def test_hydra_files_planted_as_links_are_refused_before_hydra_writes_them(workdir, capsys):
    outside = workdir / "outside.yaml"
    outside.write_text("mine\n")
    folder = workdir / "outputs" / "runs" / "h1"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").symlink_to(outside)
    assert cli.main(["run", *TINY, "launch_id=h1"]) == 2
    assert "overrides.yaml is a symbolic link" in capsys.readouterr().err
    sweep_dir = workdir / "outputs" / "sweeps" / "single" / "h2"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "multirun.yaml").symlink_to(outside)
    assert cli.main(["run", *TINY, "launch_id=h2", "seed=0,1"]) == 2
    assert "multirun.yaml is a symbolic link" in capsys.readouterr().err
    assert outside.read_text() == "mine\n"


def test_a_samples_link_is_removed_on_a_restart_and_refused_on_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.csv").write_text("x")
    (run_dir / records.SAMPLES).symlink_to(target, target_is_directory=True)
    cfg = OmegaConf.create({"seed": 0})
    with pytest.raises(ConfusionError, match="symbolic link, not a folder"):
        records.RunRecorder(run_dir, cfg, {}, resume_rows=[{"step": 0, "epoch": 0}])
    records.RunRecorder(run_dir, cfg, {})  # a restart starts its samples afresh
    assert (run_dir / records.SAMPLES).is_dir() and not (run_dir / records.SAMPLES).is_symlink()
    assert (target / "keep.csv").read_text() == "x"


def test_appends_refuse_hard_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    os.link(outside, tmp_path / records.RUN_LOG)
    with pytest.raises(ConfusionError, match="hard links"):
        records.append_line(tmp_path / records.RUN_LOG, "a line")
    assert outside.read_text() == "mine\n"


def test_a_fifo_log_hangs_nothing(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from confusion_cli import records
        from confusion_cli.errors import ConfusionError
        folder = Path({str(tmp_path)!r})
        for name in ("run.log", "finished.log"):
            os.mkfifo(folder / name)
            try:
                records.append_line(folder / name, "a line")
            except ConfusionError as exc:
                print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{tmp_path / 'run.log'} is a FIFO, not a regular file",
                                          f"{tmp_path / 'finished.log'} is a FIFO, not a regular file"]

"""`confusion status`: counts, ETA and failures from records on disk, the interrupted status
(run.json says running, no process holds the run lock) in `records.load`, the results table at
each architecture's selected LR, and a real sweep that names its swept values and ends with it."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import run_cli
from omegaconf import OmegaConf

from confusion_cli import records, status

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def iso(seconds_before_now: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_before_now, timezone.utc).isoformat()


def write_run(run_dir: Path, state: str, depth: int = 2, seed: int = 0, error_txt: str | None = None,
              **meta) -> Path:
    run_dir.mkdir(parents=True)
    cfg = OmegaConf.create({"seed": seed, "model": {"name": "mlp", "depth": depth}, "optim": {"lr": 0.1}})
    (run_dir / records.CONFIG).write_text(OmegaConf.to_yaml(cfg))
    records.write_json(run_dir / records.RUN_JSON, {"status": state, "config_hash": records.config_hash(cfg),
                                                    **meta})
    records.write_csv(run_dir / records.METRICS, pd.DataFrame(
        {"epoch": [0, 1], "train_loss": [2.0, 1.0], "min_cos": [0.1, -0.1]}))
    if error_txt is not None:
        (run_dir / records.ERROR).write_text(error_txt)
    return run_dir


def test_status_counts_complete_running_interrupted_failed_and_to_do(tmp_path):
    launch = tmp_path / "sweeps" / "demo" / "L1"
    records.write_plan(launch, 7, {"model.depth": 7})
    write_run(launch / "0", "complete", depth=1, start_time=iso(500), end_time=iso(400),
              wall_seconds=100.0)
    write_run(launch / "1", "failed", depth=2, error="ValueError: boom\nmore lines")
    write_run(launch / "2", "failed", depth=3, error_txt="Traceback (most recent call last):\n"
              "  File x\nValueError: boom\n")
    write_run(launch / "3", "failed", depth=4, error_txt="Traceback\nRuntimeError: out of memory\n")
    live = write_run(launch / "4", "running", depth=5, start_time=iso(30))
    dead = write_run(launch / "6", "running", depth=6, start_time=iso(60))  # killed; job 5 not started
    write_run(tmp_path / "runs" / "one", "diverged")

    with records.run_lock(live) as held:
        assert held
        text = status.report(tmp_path, now=NOW)
        assert records.run_is_live(live) and not records.run_is_live(dead)
    lines = text.splitlines()
    assert lines[0] == f"{launch}: 7 runs planned (model.depth 7)"
    assert lines[1] == "  complete 1  running 1  interrupted 1  failed 3  diverged 0  to do 1"
    # median 100 s x (1 to do + the running one's 70 s left) at 1 at once
    assert "  ETA 2m50s (median run 1m40s x 2 left, 1 at once)" in lines
    assert "  failed 2x: ValueError: boom (1, 2)" in lines  # run.json's error, then error.txt's last line
    assert "  failed 1x: RuntimeError: out of memory (3)" in lines
    assert "  interrupted: 6 (run the same command again to resume)" in lines
    assert f"single runs under {tmp_path}" in lines
    assert "  complete 0  running 0  interrupted 0  failed 0  diverged 1" in lines
    # the run lock is free again: the live run now reads as interrupted
    after = status.report(tmp_path, now=NOW)
    assert "  complete 1  running 0  interrupted 2  failed 3  diverged 0  to do 1" in after


def test_eta_counts_runs_seen_at_once_and_says_when_nothing_runs(tmp_path):
    launch = tmp_path / "L"
    records.write_plan(launch, 5, {"seed": 5})
    for job, (start, end) in enumerate([(1400, 1300), (1390, 1290), (1280, 1200)]):  # two at once
        write_run(launch / str(job), "complete", seed=job, start_time=iso(start), end_time=iso(end),
                  wall_seconds=float(start - end))
    group = status.survey(tmp_path)[0]
    assert status.parallelism(group.runs, NOW) == 2
    assert status.eta(group, NOW) == ("not running: 2 runs to do, about 1m40s (median run 1m40s "
                                      "x 2 left, 2 at once); run the same command again to finish")
    # a run that ended a moment ago: the sweep is between two runs, not stopped
    assert status.eta(group, NOW - 1190) == "ETA 1m40s (median run 1m40s x 2 left, 2 at once)"
    assert status.duration(0.42) == "0.4s" and status.duration(45) == "45s"
    assert status.duration(3 * 3600 + 300) == "3h05m"
    fresh = tmp_path / "M"
    records.write_plan(fresh, 2, {"seed": 2})
    assert "ETA unknown (no run finished yet)" in status.report(fresh, now=NOW)


def test_load_reads_a_running_run_whose_process_is_gone_as_interrupted(tmp_path):
    run_dir = write_run(tmp_path / "r", "running")
    assert records.load(tmp_path)["status"].unique().tolist() == ["interrupted"]
    with records.run_lock(run_dir) as held:
        assert held
        assert records.load(tmp_path)["status"].unique().tolist() == ["running"]
    assert json.loads((run_dir / records.RUN_JSON).read_text())["status"] == "running"  # nothing written


# -- the results table ------------------------------------------------------------------------
def run_rows(depth, lr, seed, state, loss, acc, min_cos, min_inner, ex_q05=np.nan):
    """Two epochs of one run; ``min_cos`` None: not probed at the last epoch (its last value is epoch 0's)."""
    return pd.DataFrame({
        "run_dir": f"d{depth}-lr{lr}-s{seed}", "status": state, "epoch": [0, 1],
        "model.name": "mlp", "model.depth": depth, "optim.lr": lr, "seed": seed,
        "train_loss": [2.3, loss], "test_acc": [0.1, acc],
        "min_cos": [0.5, np.nan if min_cos is None else min_cos], "q05_cos": [0.6, 0.1 * seed],
        "min_inner": [0.0, min_inner], "ex_q05_cos": [np.nan, ex_q05]})


def table_frame():
    return pd.concat([
        run_rows(2, 0.1, 0, "complete", 0.5, 0.80, -0.2, -0.3, -0.1),
        run_rows(2, 0.1, 1, "complete", 0.7, 0.70, None, 0.1, -0.3),   # min_cos: epoch 0's 0.5
        run_rows(2, 0.1, 2, "running", 0.01, 0.99, 0.0, 0.0),          # not used
        run_rows(2, 0.1, 3, "interrupted", 0.01, 0.99, 0.0, 0.0),      # not used
        run_rows(2, 0.01, 0, "complete", 0.9, 0.6, 0.0, 0.0),
        run_rows(2, 0.01, 1, "complete", 1.1, 0.6, 0.0, 0.0),
        run_rows(8, 0.1, 0, "diverged", np.inf, 0.1, 0.0, 0.0),        # lr 0.1 never selected
        run_rows(8, 0.1, 1, "complete", 0.2, 0.9, 0.0, 0.0),
        run_rows(8, 0.01, 0, "complete", 0.8, 0.75, -0.1, -2.0),
        run_rows(8, 0.01, 1, "complete", 1.0, 0.65, -0.3, -1.0),
        run_rows(16, 0.1, 0, "failed", 2.3, 0.1, 0.0, 0.0),
    ], ignore_index=True)


def test_results_table_is_each_architecture_at_its_selected_lr_mean_and_std_over_seeds():
    table = status.results_table(table_frame()).set_index("model.depth")
    assert table.loc[2, "optim.lr"] == 0.1 and table.loc[8, "optim.lr"] == 0.01
    assert np.isnan(table.loc[16, "optim.lr"]) and "failed" in table.loc[16, "note"]
    assert table.loc[2, "seeds"] == 2 and table.loc[8, "seeds"] == 2
    expect = {  # depth 2 at lr 0.1 (seeds 0, 1), depth 8 at lr 0.01, by hand
        (2, "train_loss"): (0.6, np.sqrt(0.02)), (2, "test_acc"): (0.75, np.sqrt(0.005)),
        (2, "min_cos"): (0.15, np.sqrt(0.245)), (2, "q05_cos"): (0.05, np.sqrt(0.005)),
        (2, "eta"): (0.15, np.sqrt(0.045)), (2, "ex_q05_cos"): (-0.2, np.sqrt(0.02)),
        (8, "train_loss"): (0.9, np.sqrt(0.02)), (8, "test_acc"): (0.7, np.sqrt(0.005)),
        (8, "min_cos"): (-0.2, np.sqrt(0.02)), (8, "eta"): (1.5, np.sqrt(0.5)),
    }
    for (depth, metric), (mean, std) in expect.items():
        assert table.loc[depth, metric] == pytest.approx(mean), (depth, metric)
        assert table.loc[depth, f"{metric} std"] == pytest.approx(std), (depth, metric)
    assert np.isnan(table.loc[8, "ex_q05_cos"])  # no value recorded: no mean
    text = status.format_table(status.results_table(table_frame()))
    lines = text.splitlines()
    assert lines[0].split() == ["depth", "lr", "seeds", "train_loss", "test_acc", "min_cos", "q05_cos",
                                "eta", "ex_q05_cos"]
    assert re.match(r"2\s+0\.1\s+2\s+0\.6 ± 0\.14\s+0\.75 ± 0\.071", lines[1])
    assert lines[3].startswith("16") and "no LR selected: diverged or failed at every LR" in lines[3]


# -- a real sweep -----------------------------------------------------------------------------
TINY = ["dataset=digits", "optim.epochs=1", "dataset.train_size=64", "dataset.test_size=32",
        "optim.batch_size=16", "model.width=16", "probe.pairs=2", "probe.batch_size=16", "threads=1"]


@pytest.mark.slow
def test_a_sweep_names_its_swept_values_ends_with_its_table_and_reads_as_one_after_a_relaunch(tmp_path):
    done = run_cli(["run", "model.depth=1,2", *TINY], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    launch = re.search(r"-> (\S+)$", out.splitlines()[0]).group(1)
    assert f"[run 1/2] depth=1: mlp on digits, 4 steps/epoch, device cpu -> {launch}/0" in out
    assert f"[run 2/2] depth=2: mlp on digits, 4 steps/epoch, device cpu -> {launch}/1" in out
    tail = out[out.index("sweep progress: 2/2 runs finished"):].splitlines()
    assert tail[1].startswith("results (each architecture at its selected LR")
    assert tail[3].split() == ["depth", "lr", "seeds", "train_loss", "test_acc", "min_cos", "q05_cos", "eta"]
    assert tail[4].split()[:3] == ["1", "0.05", "1"] and tail[5].split()[:3] == ["2", "0.05", "1"]
    assert tail[6] == f"figures: confusion plot {launch}"
    frame = records.load(tmp_path / "outputs")
    final = frame[frame["epoch"] == 1].set_index("model.depth")
    assert float(tail[4].split()[3]) == pytest.approx(final.loc[1, "train_loss"], rel=1e-3)

    plan = json.loads((Path(launch) / "sweep.json").read_text())
    assert plan["values"] == {"model.depth": ["1", "2"]} and plan["grid"] == {"model.depth": 2}

    again = run_cli(["run", "model.depth=1,2", *TINY], tmp_path)  # a relaunch: nothing left to run
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].endswith(f"-> {launch} (relaunched: 2 of them finished)")
    assert f"skip depth=1: already complete in {launch}/0" in again.stdout
    assert "sweep progress: 2/2 runs finished" in again.stdout  # each job counted once
    assert "figures: confusion plot" in again.stdout and "1      0.05  1" in again.stdout
    assert [p.name for p in Path(launch).parent.iterdir()] == [Path(launch).name]  # one folder
    shown = run_cli(["status"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "relaunched as" not in shown.stdout and "earlier launches" not in shown.stdout
    assert "  complete 2  running 0  interrupted 0  failed 0  diverged 0  to do 0" in shown.stdout
    other = run_cli(["run", "model.depth=1,3", *TINY], tmp_path)  # another sweep: its own folder
    assert other.returncode == 0, other.stderr
    assert len(list(Path(launch).parent.iterdir())) == 2 and "relaunched" not in other.stdout


def test_a_relaunch_finds_the_latest_launch_folder_of_the_same_sweep_and_its_own(tmp_path):
    import os
    import time

    root = tmp_path / "outputs"
    sweeps = root / "sweeps" / "x"
    same = (["model.depth=1,2"], "d1")

    def launch(name, overrides, digest, age):
        records.write_plan(sweeps / name, 2, {"model.depth": 2}, overrides, root,
                           {"model.depth": ["1", "2"]}, digest)
        when = time.time() - age
        os.utime(sweeps / name / "sweep.json", (when, when))

    launch("old", *same, age=100)
    launch("latest", *same, age=10)
    launch("other_overrides", ["model.depth=1,3"], "d1", age=1)
    launch("other_defaults", ["model.depth=1,2"], "d2", age=1)
    assert records.previous_launch(root, sweeps / "new", *same) == sweeps / "latest"
    assert records.read_plan(sweeps / "latest")["values"] == {"model.depth": ["1", "2"]}
    (sweeps / "latest" / "0").mkdir()
    (sweeps / "latest" / "0" / ".hydra").symlink_to(tmp_path)  # unsafe: Hydra would follow it
    assert records.previous_launch(root, sweeps / "new", *same) == sweeps / "old"
    (sweeps / "linked").symlink_to(sweeps / "old")  # a link is never a launch folder
    os.utime(sweeps / "old" / "sweep.json")
    assert records.previous_launch(root, sweeps / "new", *same) == sweeps / "old"
    assert records.previous_launch(root, sweeps / "new", ["model.depth=4"], "d1") is None
    assert records.previous_launch(root, root / "sweeps" / "nothing" / "new", *same) is None


def test_swept_label_names_the_swept_keys_seed_last():
    grid = {"seed": 3, "model.depth": 5, "optim.lr": 7, "dataset.name": 1}
    overrides = ["+sweep=depth", "seed=1", "model.depth=8", "optim.lr=0.03", "dataset.name=digits"]
    assert records.swept_label(grid, overrides) == "depth=8 lr=0.03 seed=1"
    assert records.swept_label({"model.depth": 2, "dataset.depth": 2},
                               ["model.depth=8", "dataset.depth=3"]) == "model.depth=8 dataset.depth=3"
    assert records.swept_label({}, overrides) == ""


def test_status_of_a_missing_directory_is_one_line(tmp_path):
    shown = run_cli(["status", str(tmp_path / "nowhere")], tmp_path)
    assert shown.returncode == 2 and shown.stderr.strip().startswith("error: no such directory")

"""The command line end to end, in fresh processes, as a user runs it (CPU, offline)."""

import json

import pandas as pd
import pytest
from fakes import run_cli

from confusion_cli import cli, records


def test_help_lists_sweeps_datasets_models_scales(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("depth", "bn_skip", "linreg", "cifar10", "digits", "cnn", "mlp", "paper", "smoke"):
        assert word in text


@pytest.mark.slow
def test_plain_run_trains_probes_and_records(tmp_path):
    done = run_cli(["run", "optim.epochs=2", "probe.pairs=3"], tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = records.run_dirs(tmp_path / "outputs")
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["device"] == "cpu"
    assert {"git_commit", "versions", "config_hash", "wall_seconds"} <= set(meta)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1, 2]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    assert (metrics["min_cos"] <= metrics["mean_cos"]).all()
    assert (metrics["n_pairs"] == 3).all()
    assert len(records.load_samples(run_dir)) == 9  # 3 pairs at epochs 0, 1, 2
    assert "epoch 2/2" in done.stdout
    logged = (run_dir / records.RUN_LOG).read_text().splitlines()  # the console's lines, timed
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and [line.split(" ", 2)[2] for line in logged[1:4]] == epochs

    again = run_cli(["run", "optim.epochs=2", "probe.pairs=3"], tmp_path)
    assert again.returncode == 0 and "skip: already complete" in again.stdout
    assert len(records.run_dirs(tmp_path / "outputs")) == 1


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_records(tmp_path):
    for name in ("a", "b"):
        done = run_cli(["run", "optim.epochs=2", "probe.pairs=2", f"records_root=outputs/{name}"],
                       tmp_path)
        assert done.returncode == 0, done.stderr
    a, b = (records.load(tmp_path / "outputs" / n) for n in ("a", "b"))
    columns = ["train_loss", "test_loss", "min_cos", "min_inner", "mean_cos"]
    pd.testing.assert_frame_equal(a[columns], b[columns])


@pytest.mark.slow
def test_diverging_lr_is_recorded_and_the_sweep_goes_on(tmp_path):
    done = run_cli(["run", "optim.lr=1e3,0.05", "optim.epochs=3", "probe.pairs=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    frame = records.load(tmp_path / "outputs")
    status = frame.groupby("optim.lr")["status"].first().to_dict()
    assert status == {1e3: "diverged", 0.05: "complete"}
    diverged = frame[frame["optim.lr"] == 1e3]
    assert diverged["epoch"].max() < 3  # stopped at the epoch it diverged


# Through a real `confusion` process: one of each kind of check, end to end.
@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["run", "model=resnet"], "unknown model 'resnet'"),
    (["run", "+sweep=nope"], "unknown sweep 'nope'"),
    (["run", "dataset=cifar10"], "confusion data cifar10"),
    (["run", "probe.batch_size=5000"], "probe.batch_size"),
    (["run", "seed=abc"], "seed must be a non-negative integer"),
    (["run", "device=cuda:0"], "no CUDA GPU is visible"),
    (["run", "optim.learning_rate=0.1"],
     "unknown config key 'optim.learning_rate' in 'optim.learning_rate=0.1': did you mean 'optim.lr'?"),
    (["plot", "nowhere"], "no such directory"),
    (["plot", "."], "no run records"),
    (["frobnicate"], "unknown command"),
    (["data", "nosuch"], "confusion data: argument name: invalid choice: 'nosuch'"),
    (["plot", "--bogus"], "confusion plot: unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    """...checked before anything is written (no run directory, no sweep directory)."""
    done = run_cli(args, tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# The same contract in-process (`cli.main`, as the console script calls it): seconds, not minutes.
@pytest.mark.parametrize("args, message", [
    (["run", "dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["run", "model.width=-3"], "model.width must be a positive integer"),
    (["run", "model=cnn", "model.depth=15"], "6n + 4"),
    (["run", "optim.lr=-1"], "optim.lr must be a positive number"),
    (["run", "records_root=/proc/forbidden"], "records_root=PATH"),
    (["run", "probe.group=0"], "probe.group must be a positive integer"),
    (["run", "seed=1.5"], "seed must be a non-negative integer"),
    (["run", "threads=-1"], "threads must be a positive integer"),
    (["run", "threads=abc"], "threads must be a positive integer"),
    (["run", "eval_batch_size=0"], "eval_batch_size must be a positive integer"),
    (["run", "eval_batch_size=-1"], "eval_batch_size must be a positive integer"),
    (["run", "probe=all_pairs", "probe.chunk_size=0"], "probe.chunk_size"),
    (["run", "extra_probes=[hessian]", "extra_probes.hessian.iters=0"],
     "extra_probes.hessian.iters must be a positive integer"),
    (["run", "hessian.iters=5"], "settings are extra_probes.hessian.iters, with extra_probes=[hessian]"),
    (["run", "extra_probes=[grad_norm]", "extra_probes.grad_norm.batch_size=0"],
     "extra_probes.grad_norm.batch_size must be a positive integer"),
    (["run", "probe.schedule=sometimes"], "unknown probe.schedule 'sometimes'"),
    (["run", "probe.schedule=log:0"], "unknown probe.schedule 'log:0'"),
    (["run", "probe.batch_size=5000"], "probe.batch_size=5000 is larger than the training set (1500"),
    (["run", "probe=all_pairs", "probe.batch_size=1", "probe.batches=60000"],
     "GiB set by probe.batches), above memory_budget_gib=8: lower probe.batches"),
    (["run", "probe.pairs=200000"], "set by probe.pairs), above memory_budget_gib=8: lower probe.pairs"),
    (["run", "dataset=sphere", "dataset.n_train=10000", "dataset.dim=200000"],
     "set by dataset.train_size), above memory_budget_gib=8"),
    (["run", "memory_budget_gib=0.001"], "above memory_budget_gib=0.001"),
    (["run", "optim.momentum=-1"], "optim.momentum must be a number >= 0"),
    (["run", "optim.milestones=[abc]"], "optim.milestones"),
    (["run", "optim.max_steps=-3"], "optim.max_steps"),
    (["run", "extra_probes=[nosuch]"], "unknown extra_probes ['nosuch']"),
    (["run", "device=nosuch"], "unknown device 'nosuch'"),
    (["run", "device=tpu"], "unknown device 'tpu'"),
    (["run", "device=cuda"], "no CUDA GPU is visible"),
    (["run", "launch_id=../../../X"], "launch_id must be a plain name"),
    (["run", "+sweep=linreg", "sweep.name=../up", "scale=smoke"], "sweep.name must be a plain name"),
    (["run", "+optim.learning_rate=0.1"], "did you mean 'optim.lr'?"),
    (["run", "probe.pair=3"], "did you mean 'probe.pairs'?"),
    (["run", "model=cnn", "modle.batch_norm=true"], "did you mean 'model.batch_norm'?"),
])
def test_bad_run_options_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("CONFUSION_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a login node without GPUs
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))


@pytest.mark.slow
def test_plot_names_a_corrupt_record_and_draws_the_rest(tmp_path):
    done = run_cli(["run", "seed=0,1", "optim.epochs=1", "probe.pairs=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    broken = records.run_dirs(tmp_path / "outputs")[0]
    (broken / "run.json").write_text('{"status": "compl')  # as if killed mid-write by hand
    plot = run_cli(["plot", "outputs"], tmp_path)
    assert plot.returncode == 0, plot.stderr
    relative = (broken / "run.json").relative_to(tmp_path)
    assert f"warning: skipping corrupt record {relative}" in plot.stderr
    assert "Traceback" not in plot.stderr
    assert (tmp_path / "outputs" / "figures" / "curves.png").is_file()


@pytest.mark.slow
def test_plot_skips_corrupt_samples_and_metrics_files_and_draws_the_rest(tmp_path):
    done = run_cli(["run", "seed=0,1,2", "optim.epochs=1", "probe.pairs=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    empty_samples, bad_metrics, good = records.run_dirs(tmp_path / "outputs")
    (empty_samples / records.SAMPLES / "epoch_0001.csv").write_text("")  # a full disk's leftovers
    (bad_metrics / records.METRICS).write_text("not,a\nmetrics,file\n")
    plot = run_cli(["plot", "outputs"], tmp_path)
    assert plot.returncode == 0, plot.stderr
    assert "skipping corrupt samples file" in plot.stderr and "epoch_0001.csv" in plot.stderr
    assert f"skipping corrupt record {bad_metrics.relative_to(tmp_path)}" in plot.stderr
    assert "Traceback" not in plot.stderr
    curves = pd.read_csv(tmp_path / "outputs" / "figures" / "curves.csv")
    density = curves[curves["panel"] == "cos_density"]
    assert not density.empty and set(density["n"]) == {2}  # two runs' samples, the third's skipped


def test_run_help_and_hydra_flags_pass_through(tmp_path):
    helped = run_cli(["run", "--help"], tmp_path)
    assert helped.returncode == 0 and "+sweep=NAME" in helped.stdout
    shown = run_cli(["run", "model=cnn", "--cfg", "job"], tmp_path)
    assert shown.returncode == 0 and "name: cnn" in shown.stdout
    assert not (tmp_path / "outputs").exists() or not records.run_dirs(tmp_path / "outputs")
    assert cli.split_hydra_flags(["a=1", "--cfg", "job", "-m", "b=2"]) == (["a=1", "b=2"],
                                                                          ["--cfg", "job", "-m"])


def test_tab_completion_installs_and_completes_overrides(tmp_path):
    installed = run_cli(["run", "-sc", "install=bash"], tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion confusion" in installed.stdout
    for line, expected in (("confusion run optim.l", "optim.lr="),
                           ("confusion run +sweep=bn_s", "+sweep=bn_skip")):
        done = run_cli(["-sc", "query=bash"], tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout.split(), done.stdout

"""Every job of a sweep is composed and validated before the first one starts: a bad value
anywhere in the grid is one line naming the job, exit 2, and nothing is written."""

import math

import pytest
from fakes import run_cli
from omegaconf import OmegaConf

from confusion_cli import cli, config


@pytest.mark.slow
def test_a_sweep_with_a_bad_value_is_one_line_and_writes_nothing(tmp_path):
    done = run_cli(["run", "optim.lr=-1,0.05"], tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [
        "error: job 0 (optim.lr=-1): optim.lr must be a positive number, got -1 (finite, at most "
        "1000; true/false are not numbers)"]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "outputs").exists()  # no records_root, no sweep folder


@pytest.mark.parametrize("args, message", [
    (["optim.lr=0.05,-1"], "job 1 (optim.lr=-1): optim.lr must be a positive number"),
    (["seed=range(2)", "optim.lr=choice(0.1,-0.1)"], "job 1 (seed=0 optim.lr=-0.1): optim.lr"),
    (["model=mlp,cnn", "model.depth=5"], "job 1 (model=cnn): model.depth=5 is not a WideResNet depth"),
    (["dataset=digits,nosuch"], "job 1 (dataset=nosuch): unknown dataset 'nosuch'"),
    (["extra_probes=[rank],[nosuch]"], "job 1 (extra_probes=[nosuch]): unknown extra_probes ['nosuch']"),
    (["optim.learning_rate=0.1,0.2"],
     "job 0 (optim.learning_rate=0.1): unknown config key 'optim.learning_rate' in "
     "'optim.learning_rate=0.1': did you mean 'optim.lr'?"),
    (["probe.pairs=10,200000"], "job 1 (probe.pairs=200000): this run would hold about"),  # the largest job
    (["+sweep=init_depth", "scale=smoke", "model.width=0"], "job 0 (seed=0 model.depth=1): model.width must"),
    (["+sweep=linreg", "scale=smoke", "optim.lr=0.3,-3"], "job 1 (seed=0 dataset.dim=80 optim.lr=-3)"),
    (["+sweep=spectrum_batch", "scale=smoke", "dataset=digits", "extra_probes=[]"],  # the sweep sets fisher's
     "job 0 (seed=0 optim.batch_size=8): extra_probes.fisher has settings (examples) but the fisher probe "
     "is not chosen (it lacks search, top_k): add fisher to extra_probes=[...]"),
])
def test_any_bad_job_is_named_before_anything_runs(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    assert cli.main(["run", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def jobs_of(overrides: list[str]):
    overrides = [*overrides, "launch_id=x"]
    composed = config.compose(overrides)
    cfg, hydra_cfg = config.split_hydra(composed)
    return cfg, overrides, config.sweep_jobs(hydra_cfg, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["+sweep=bn_skip_fmnist", "scale=smoke", "optim.lr=0.1,0.2"],  # grid x the command line
    ["model=mlp,cnn", "model.depth=10,16", "extra_probes=[],[rank]", "probe.pairs=3"],  # group choices
    ["+sweep=convergence_linreg", "scale=smoke"],  # values that other keys interpolate
])
def test_each_job_is_composed_as_hydra_composes_it(overrides):
    cfg, overrides, jobs = jobs_of(overrides)
    seen = 0
    for num, swept, job_cfg in config.job_configs(cfg, overrides, jobs):
        expected = config.run_config(jobs[num])  # Hydra's full composition of that job
        resolved = OmegaConf.to_container(job_cfg, resolve=True)
        assert resolved == OmegaConf.to_container(expected, resolve=True), swept
        seen += 1
    assert seen == len(jobs) > 1
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(config.run_config(overrides))  # as it was


@pytest.mark.parametrize("sweep", config.options("sweep"))
def test_the_jobs_are_the_planned_grid(sweep):
    cfg = config.compose([f"+sweep={sweep}", "scale=smoke"])
    assert len(config.sweep_jobs(cfg.hydra, [])) == math.prod(config.plan_sweep(cfg.hydra, []).values())
    overrides = ["seed=0,1,2", "optim.lr=0.5"]
    assert len(config.sweep_jobs(cfg.hydra, overrides)) == math.prod(
        config.plan_sweep(cfg.hydra, overrides).values())

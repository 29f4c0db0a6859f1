"""Every config composes, alone and inside every sweep at every scale (the lightning-hydra habit)."""

import math

import pytest
import yaml
from omegaconf import OmegaConf

from confusion_cli import config, models
from confusion_cli.errors import ConfusionError
from confusion_cli.records import migrate

SCALES = config.options("scale")
SWEEPS = config.options("sweep")
CONFIRM_SWEEPS = ("depth_fmnist", "width_fmnist", "bn_skip_fmnist")  # scale=confirm: their 5-seed design


@pytest.mark.parametrize("group", ["dataset", "model", "optim", "probe", "scale"])
def test_every_group_option_composes(group):
    for option in config.options(group):
        cfg = config.compose([f"{group}={option}"])
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.to_container(task, resolve=True)  # every interpolation resolves
        assert cfg.hydra.mode is None  # a plain run, not a sweep


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("scale", [s if s == "smoke" else pytest.param(s, marks=pytest.mark.slow)
                                   for s in SCALES])  # every sweep at smoke scale in the fast subset
def test_every_sweep_composes_at_every_scale(sweep, scale):
    cfg = config.compose([f"+sweep={sweep}", f"scale={scale}"])
    assert str(cfg.hydra.mode).endswith("MULTIRUN")
    assert cfg.sweep.name == sweep
    if scale == "confirm" and sweep not in CONFIRM_SWEEPS:  # a grid the sweep does not define
        with pytest.raises(ConfusionError, match="no grid for the chosen scale"):
            config.plan_sweep(cfg.hydra, [])
        return
    sizes = config.plan_sweep(cfg.hydra, [])
    assert "seed" in sizes and math.prod(sizes.values()) >= 1
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    for key, values in params.items():  # every architecture in the grid is a valid model
        if key.startswith("model."):
            for value in str(values).split(","):
                model_cfg = OmegaConf.merge(cfg.model, {key.split(".", 1)[1]: yaml.safe_load(value)})
                models.validate(model_cfg)


def test_paper_scale_is_the_papers_protocol():
    cfg = config.compose(["+sweep=depth", "scale=paper"])
    assert cfg.optim.epochs == 200 and list(cfg.optim.milestones) == [80, 160]
    assert cfg.optim.batch_size == 128 and cfg.optim.momentum == 0 and cfg.optim.weight_decay == 0
    assert cfg.probe.pairs == 100 and cfg.probe.batch_size == 128
    sizes = config.plan_sweep(cfg.hydra, [])
    assert sizes == {"seed": 5, "model.depth": 5, "optim.lr": 5}
    assert cfg.model.name == "cnn" and cfg.model.width == 2 and not cfg.model.batch_norm


def test_command_line_sweeps_override_the_grid():
    cfg = config.compose(["+sweep=width", "scale=smoke"])
    assert config.plan_sweep(cfg.hydra, ["seed=0,1,2"])["seed"] == 3
    pinned = config.plan_sweep(cfg.hydra, ["model.width=4", "optim.lr=0.1", "probe.pairs=3"])
    assert pinned["model.width"] == 1 and pinned["optim.lr"] == 1 and "probe.pairs" not in pinned


@pytest.mark.slow
def test_a_pinned_grid_parameter_counts_one_run_per_value(tmp_path):
    from fakes import run_cli

    done = run_cli(["run", "+sweep=linreg", "scale=smoke", "dataset.dim=80"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sweep linreg: 1 runs" in done.stdout and "sweep progress: 1/1 runs finished" in done.stdout


def test_schema_check_leaves_hydra_groups_and_keys_to_hydra():
    cfg = config.compose(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+sweep=linreg", "scale=smoke"])
    assert cfg.hydra.launcher.n_jobs == 2


HESSIAN_SETTINGS = ", ".join(sorted(migrate.declared("extra_probes", "hessian")))  # as its file declares


# A mistyped key is one line naming the key meant, in any node, an extra probe's settings included
@pytest.mark.parametrize("overrides, hint", [
    (["extra_probes=[hessian]", "extra_probes.hessian.itres=3"],
     ": did you mean 'extra_probes.hessian.iters'?"),
    (["extra_probes=[hessian,rank]", "+extra_probes.rank.rtool=0.1"],
     ": did you mean 'extra_probes.rank.rtol'?"),
    (["extra_probes=[example_pairs]", "extra_probes.example_pairs.exmaples=8"],
     ": did you mean 'extra_probes.example_pairs.examples'?"),
    (["extra_probes=[hessian]", "hessian.iters=3"], ": did you mean 'extra_probes.hessian.iters'?"),
    (["extra_probes=[hessian]", "extra_probes.hessian.zzz=3"],
     f" (extra_probes.hessian takes {HESSIAN_SETTINGS})"),
    (["extra_probes.hessian.itres=3"], ": did you mean 'extra_probes.hessian.iters'? choose the probe with "
                                       f"extra_probes=[hessian] to set its settings ({HESSIAN_SETTINGS})"),
    (["hessian.iters=3"],
     ": the hessian probe's settings are extra_probes.hessian.iters, with extra_probes=[hessian]"),
    (["optim.lrr=0.1"], ": did you mean 'optim.lr'?"),
    (["optim.learning_rate=0.1"], ": did you mean 'optim.lr'?"),
    (["model=cnn", "model.widht=4"], ": did you mean 'model.width'?"),
    (["dataset.trian_size=100"], ": did you mean 'dataset.train_size'?"),
    (["+sweep=linreg", "scale=smoke", "sweep.nmae=x"], ": did you mean 'sweep.name'?"),
    (["modle.batch_norm=true"], ": did you mean 'model.batch_norm'?"),
    (["sede=1"], ": did you mean 'seed'?"),
    (["optim.qqqq=1"], " (optim takes batch_size, epochs, full_batch, gamma, lr, max_steps, milestones, "
                       "momentum, stop_acc, stop_loss, update, weight_decay)"),
    (["nosuchkey=1"], " (see `confusion run --cfg job`)"),
])
def test_a_mistyped_key_names_the_nearest_key(overrides, hint):
    key = overrides[-1].lstrip("+").split("=")[0]
    with pytest.raises(ConfusionError) as caught:
        config.compose(overrides)
    assert str(caught.value) == f"unknown config key '{key}' in '{overrides[-1]}'{hint}"

"""The theory-at-init, low-rank, GD-vs-SGD and Hessian sweeps: they compose, and their smoke
versions run end to end through the real CLI and plot their figures (CPU, offline)."""

import pandas as pd
import pytest
from fakes import smoke_sweeps

from confusion_cli import config

EXTRA_SWEEPS = ("init_depth", "init_width", "init_linear", "lowrank", "gd_vs_sgd", "hessian_width")
INIT_SWEEPS = EXTRA_SWEEPS[:3]


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_theory_sweeps_probe_per_example_at_initialization_only(scale):
    for name in INIT_SWEEPS:
        cfg = config.compose([f"+sweep={name}", f"scale={scale}"])
        assert cfg.dataset.name == "sphere" and cfg.optim.epochs == 0
        assert cfg.probe.mode == "per_example" and cfg.probe.at_init
        assert cfg.model.init == "gaussian" or name == "init_linear"
        assert cfg.probe.examples <= cfg.dataset.n_train
        seeds = config.plan_sweep(cfg.hydra, [])["seed"]
        assert seeds == (2 if scale == "smoke" else 20)


def test_init_linear_compares_orthogonal_and_gaussian_linear_nets():
    cfg = config.compose(["+sweep=init_linear", "scale=quick"])
    assert cfg.model.name == "linear" and cfg.hydra.sweeper.params["model.init"] == "orthogonal,gaussian"


def test_training_sweeps_carry_their_extra_probes():
    expect = {"lowrank": ["rank"], "gd_vs_sgd": ["rank"], "hessian_width": ["hessian"]}
    for name, probes in expect.items():
        cfg = config.compose([f"+sweep={name}", "scale=quick"])
        assert list(cfg.extra_probes) == probes and cfg.dataset.name == "digits"
    lowrank = config.plan_sweep(config.compose(["+sweep=lowrank", "scale=quick"]).hydra, [])
    assert {"optim.weight_decay", "optim.batch_size", "optim.lr"} <= set(lowrank)
    assert "0" in config.compose(["+sweep=lowrank"]).hydra.sweeper.params["optim.weight_decay"].split(",")
    gd = config.compose(["+sweep=gd_vs_sgd", "scale=quick"])
    assert gd.hydra.sweeper.params["optim.full_batch"] == "false,true" and not gd.optim.milestones


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    """Every extra sweep at scale=smoke into one records directory, then `confusion plot`."""
    return smoke_sweeps(tmp_path_factory.mktemp("extra_sweeps"), EXTRA_SWEEPS)


@pytest.mark.slow
def test_smoke_sweeps_complete_with_their_columns(smoke_outputs):
    _, frame = smoke_outputs
    assert set(frame["status"]) == {"complete"}
    by_sweep = dict(tuple(frame.groupby("sweep.name")))
    assert set(by_sweep) == set(EXTRA_SWEEPS)
    for name in INIT_SWEEPS:
        runs = by_sweep[name]
        assert (runs["epoch"] == 0).all() and runs["min_cos"].notna().all()
        assert runs["seed"].nunique() == 2
    for name in ("lowrank", "gd_vs_sgd"):
        assert by_sweep[name][["rank_eff_mean", "rank_num_mean", "rank_eff_L0"]].notna().all().all()
    assert by_sweep["hessian_width"][["hess_top1", "hess_top3"]].notna().all().all()
    gd = by_sweep["gd_vs_sgd"]
    steps = gd[gd["epoch"] == gd["epoch"].max()].groupby("optim.full_batch")["step"].first()
    assert steps[True] == 2 and steps[False] > 2  # GD: one step per epoch


@pytest.mark.slow
@pytest.mark.parametrize("name", EXTRA_SWEEPS)
def test_smoke_sweep_plots_its_figure(smoke_outputs, name):
    root, _ = smoke_outputs
    figures = root / "outputs" / "figures"
    for suffix in ("png", "pdf", "csv"):
        assert (figures / f"{name}.{suffix}").is_file()
    table = pd.read_csv(figures / f"{name}.csv")
    assert len(table) > 0

"""The convergence claim (docs/convergence.md): the convergence_linreg and convergence_fmnist sweeps
compose as declared, run at scale=smoke through the real CLI (synthetic regression, tiny IDX
Fashion-MNIST) and plot their figure with the fitted slope in its CSV; the floor and slope
computation recovers a known slope from synthetic per-run values."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import smoke_sweeps, write_dataset

from confusion_cli import config, data, probes
from confusion_cli.figures import convergence
from confusion_cli.figures.convergence import fit_slope, least_squares, least_squares_minimum, run_points
from confusion_cli.probes.stats import eta, gram_pair_statistics
from confusion_cli.train import regression_loss

SWEEPS = ("convergence_linreg", "convergence_fmnist")


def linreg_points(scale: str) -> list:
    """The composed configs of every grid point of convergence_linreg at ``scale``."""
    cfg = config.compose(["+sweep=convergence_linreg", f"scale={scale}"])
    points = cfg.hydra.sweeper.params["sweep.point"].replace("'", "").split(",")
    return [config.compose(["+sweep=convergence_linreg", f"scale={scale}", f"sweep.point='{p}'", "seed=2"])
            for p in points]


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_linreg_sweep_is_under_parameterised_batch_1_constant_lr_all_pairs(scale):
    cfgs = linreg_points(scale)
    lrs = [c.optim.lr for c in cfgs]
    assert lrs == sorted(lrs) and len(set(lrs)) == len(lrs) >= 3
    assert max(lrs) <= 1.0  # LR 1 = Kaczmarz on unit-norm inputs; SGD is stable below 2
    for cfg in cfgs:
        assert cfg.dataset.name == "regression" and cfg.model.name == "linreg"
        assert cfg.dataset.dim == 80 < cfg.dataset.n_train == 100
        assert cfg.optim.batch_size == 1 and list(cfg.optim.milestones) == []
        assert cfg.probe.mode == "per_example" and cfg.probe.examples == cfg.dataset.n_train
        assert cfg.dataset.data_seed == cfg.seed == 2  # each seed its own regression problem
        assert cfg.optim.epochs % cfg.probe.every == 0 and cfg.optim.epochs // cfg.probe.every >= 2
    if scale == "quick":
        assert lrs == [0.05, 0.1, 0.2, 0.5, 1.0]
        epochs = [c.optim.epochs for c in cfgs]
        assert epochs == sorted(epochs, reverse=True)  # smaller LRs run longer to reach their floor
        grid = config.plan_sweep(config.compose(["+sweep=convergence_linreg", "scale=quick"]).hydra, [])
        assert grid == {"seed": 3, "sweep.point": 5}


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_fmnist_sweep_is_one_small_mlp_at_five_constant_lrs(scale):
    cfg = config.compose(["+sweep=convergence_fmnist", f"scale={scale}"])
    assert cfg.dataset.name == "fashion_mnist" and cfg.model.name == "mlp"
    assert (cfg.model.depth, cfg.model.width, cfg.model.batch_norm) == (2, 64, False)
    assert list(cfg.optim.milestones) == [] and cfg.probe.mode == "per_example"
    assert list(cfg.extra_probes) == ["example_pairs"]
    assert cfg.probe.examples == cfg.extra_probes.example_pairs.examples
    lrs = [float(v) for v in cfg.hydra.sweeper.params["optim.lr"].split(",")]
    if scale != "smoke":
        assert cfg.dataset.train_size == 5000 and cfg.probe.examples == 128
        assert len(lrs) == 5 and min(lrs) == 0.01 and max(lrs) == 0.3


# -- the computation on synthetic values --------------------------------------------------------
def synthetic_records(lrs, seeds, exponent, epochs=20, every=4, noise=0.0, settle=None):
    """Per-epoch rows of runs whose floor is exactly 0.01 (LR x eta)^exponent, eta = 2 LR^0.5 per
    seed factor, reached at epoch ``settle`` (default: half the epochs; earlier epochs higher);
    probes every ``every`` epochs and at the last."""
    settle = epochs // 2 if settle is None else settle
    rng = np.random.default_rng(0)
    rows = []
    for lr in lrs:
        for seed in seeds:
            eta_value = 2 * lr ** 0.5 * (1 + 0.1 * seed)
            floor = 0.01 * (lr * eta_value) ** exponent * (1 + noise * rng.standard_normal())
            for epoch in range(epochs + 1):
                loss = floor * (1 + 5 * max(0, settle - epoch))
                probed = epoch % every == 0 or epoch == epochs
                rows.append({"run_dir": f"lr{lr}_s{seed}", "seed": seed, "optim.lr": lr, "epoch": epoch,
                             "train_loss": loss, "min_inner": -eta_value if probed else np.nan,
                             "status": "complete", "dataset.name": "digits", "model.name": "mlp",
                             "probe.mode": "per_example", "probe.examples": 16, "dataset.train_size": 64,
                             "scale.name": "smoke", "sweep.name": "convergence_fmnist"})
    return pd.DataFrame(rows)


def test_run_points_read_the_last_epochs_and_probe_events():
    frame = synthetic_records([0.1, 1.0], [0], exponent=1.0, epochs=20, every=4)
    points = run_points(frame, last=3).set_index("optim.lr")
    for lr in (0.1, 1.0):
        eta_value = 2 * lr ** 0.5
        assert points.at[lr, "eta"] == pytest.approx(eta_value)
        assert points.at[lr, "lr_eta"] == pytest.approx(lr * eta_value)
        assert points.at[lr, "floor"] == pytest.approx(0.01 * lr * eta_value)
        assert points.at[lr, "loss_from"] == 18 and points.at[lr, "eta_from"] == 12  # events 12, 16, 20
        assert points.at[lr, "drift"] == pytest.approx(0.0)  # flat over the last 40% of epochs
    rising = run_points(frame, last=3, eta_column="absent")
    assert rising.empty


def test_drift_is_positive_while_the_loss_still_falls():
    frame = synthetic_records([0.1], [0], exponent=1.0, epochs=10, every=1, settle=10)
    assert run_points(frame, last=2)["drift"].iloc[0] > 0.5  # the floor is reached only at the end


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_fit_recovers_a_known_log_log_slope(exponent):
    frame = synthetic_records([0.03, 0.1, 0.3, 1.0], [0, 1, 2], exponent=exponent)
    points = run_points(frame)
    fit = fit_slope(points["lr_eta"], points["floor"], log=True)
    assert fit.slope == pytest.approx(exponent) and fit.n == 12 and fit.r2 == pytest.approx(1.0)
    noisy = run_points(synthetic_records([0.03, 0.1, 0.3, 1.0], [0, 1, 2], exponent=exponent, noise=0.2))
    fit = fit_slope(noisy["lr_eta"], noisy["floor"], log=True)
    assert fit.ci_low < exponent < fit.ci_high and fit.ci_low < fit.slope < fit.ci_high


def test_fit_interval_is_students_t_and_linear_when_asked():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = 3 * x + np.array([0.1, -0.2, 0.05, 0.2, -0.1])
    fit = fit_slope(x, y, log=False)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    stderr = np.sqrt(residual @ residual / 3 / ((x - x.mean()) @ (x - x.mean())))
    assert fit.slope == pytest.approx(slope) and fit.stderr == pytest.approx(stderr)
    assert fit.ci_high - fit.slope == pytest.approx(3.182446 * stderr, rel=1e-5)  # t(0.975, 3)
    assert np.isnan(fit_slope([1.0, 2.0], [1.0, 2.0]).slope)  # two points: no interval
    assert fit_slope([1.0, -1.0, 2.0, 4.0], [1.0, 1.0, 2.0, 4.0]).n == 3  # log drops x <= 0


def test_least_squares_minimum_is_the_exact_minimum_of_the_runs_data():
    row = {"dataset.name": "regression", "dataset.n_train": 100, "dataset.n_test": 100, "dataset.dim": 80,
           "dataset.noise": 0.1, "dataset.data_seed": 3, "dataset.train_size": np.nan,
           "dataset.test_size": None, "dataset.augment": False}
    minimum = least_squares_minimum(row)
    loaded = data.load({k.split(".", 1)[1]: v for k, v in row.items() if k != "dataset.train_size"}, ".")
    x, y = loaded.x_train.double(), loaded.y_train.double()
    w = np.linalg.solve((x.T @ x).numpy(), (x.T @ y).numpy())
    assert minimum == pytest.approx(0.5 * np.mean((x.numpy() @ w - y.numpy()) ** 2), rel=1e-8)
    assert 0 < minimum < 0.5 * 0.1 ** 2  # noise 0.1, 20 residual degrees of freedom of 100
    assert np.isnan(least_squares_minimum({"dataset.name": "digits"}))
    # eta at the least-squares solution, against the probes' per-example Gram of the linear model there
    model = torch.nn.Linear(80, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w).reshape(1, -1))
    gram = probes.per_example_gram(model, regression_loss, x, y)
    _, eta_there = least_squares(row)
    assert eta_there == pytest.approx(eta(gram_pair_statistics(gram)["min_inner"]), rel=1e-6)
    assert eta_there > 0  # d < N: the per-sample gradients stay confused at the minimum


# -- end to end: both sweeps at smoke scale through the CLI, then the figure --------------------
@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("convergence")
    write_dataset(root / "data", "fashion_mnist", n_train=160, n_test=64)
    return smoke_sweeps(root, SWEEPS, extra=["threads=1"], plot_args=["--out", "figures"], expect_runs=3)


@pytest.mark.slow
def test_smoke_sweeps_record_eta_at_every_lr(smoke_outputs):
    _, frame = smoke_outputs
    assert set(frame["status"]) == {"complete"}
    for name in SWEEPS:
        runs = frame[frame["sweep.name"] == name]
        assert runs["optim.lr"].nunique() == 3
        assert runs.groupby("run_dir")["min_inner"].count().min() >= 2
    linreg = frame[frame["sweep.name"] == "convergence_linreg"]
    epochs = linreg.groupby("optim.lr")["epoch"].max()
    assert epochs.to_dict() == {0.1: 4, 0.5: 3, 1.0: 3}  # each grid point its own epoch count
    assert frame.loc[frame["sweep.name"] == "convergence_fmnist", "ex_min_inner"].notna().any()


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_smoke_sweep_plots_floor_against_lr_eta_with_the_fitted_slope(smoke_outputs, name):
    root, frame = smoke_outputs
    for suffix in ("png", "pdf", "csv"):
        assert (root / "figures" / f"{name}.{suffix}").is_file()
    table = pd.read_csv(root / "figures" / f"{name}.csv")
    points, fits = table[table["kind"] == "point"], table[table["kind"] == "fit"].set_index(["x", "y"])
    assert len(points) == 3 and points["optim.lr"].nunique() == 3
    assert points["lr_eta"].to_numpy() == pytest.approx((points["optim.lr"] * points["eta"]).to_numpy())
    fit = fits.loc[("lr_eta", "floor")]
    assert fit["n"] == 3 and np.isfinite(fit["slope"]) and fit["ci_low"] < fit["slope"] < fit["ci_high"]
    again = fit_slope(points["lr_eta"], points["floor"], log=bool(fit["log"]))
    assert again.slope == pytest.approx(fit["slope"])
    assert ("optim.lr", "floor") in fits.index
    runs = frame[frame["sweep.name"] == name]
    expected = run_points(runs[runs["epoch"] == runs["epoch"].round()])
    assert sorted(expected["floor"]) == pytest.approx(sorted(points["floor"]))
    if name == "convergence_linreg":
        assert ("lr_eta", "floor_minus_ls") in fits.index
        assert (points["ls_min"] > 0).all()
        excess = (points["floor"] - points["ls_min"]).to_numpy()
        assert points["floor_minus_ls"].to_numpy() == pytest.approx(excess)


def test_the_figure_is_registered_for_both_sweeps():
    from confusion_cli.figures import registry
    for name in SWEEPS:
        registered = registry.FIGURES[name]
        functions = registered if isinstance(registered, list) else [registered]
        assert any(getattr(f, "func", f) is convergence.convergence_figure for f in functions)


def test_convergence_claim_files_parse():
    schema = pytest.importorskip("confusion_cli.claims.schema")
    folder = Path(config.__file__).parent / "configs" / "claims"
    for name in SWEEPS:
        claim = schema.read_claim(folder / f"{name}.yaml")
        assert claim.sweep == name and claim.lr == "all"
        (slope,) = claim.comparisons
        assert slope.log and slope.expect == "greater"
        assert [t.column or t.statistic for t in slope.x] == ["optim.lr", "eta"]

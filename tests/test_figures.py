"""Figures: LR selection, seed aggregation, KDE, and every figure drawn from records on disk."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from confusion_cli import figures, records

SAMPLE_COS = [-0.3, -0.1, 0.0, 0.2, 0.5]


def config(sweep="depth", dataset="cifar10", model="cnn", depth=16, width=2, lr=0.01, seed=0,
           **extra):
    """A resolved config shaped like the runner's (nested groups, a sweep's grids, scale)."""
    cfg = {"seed": seed, "records_root": "outputs", "launch_id": f"L{seed}",
           "dataset": {"name": dataset, "train_size": None},
           "model": {"name": model, "depth": depth, "width": width, "batch_norm": False, "skip": False,
                     "activation": "relu", "init": "gaussian"},
           "optim": {"lr": lr, "batch_size": 128, "epochs": 2, "milestones": [1]},
           "probe": {"mode": "minibatch_pairs", "pairs": 5, "batch_size": 128},
           "scale": {"name": "quick", "grid": "quick", "seeds": "0,1"},
           "sweep": {"name": sweep, "lrs": {"quick": "0.01,0.03"}}}
    for key, value in extra.items():  # "model__skip" -> cfg["model"]["skip"]
        group, name = key.split("__")
        cfg[group][name] = value
    return cfg


def write_run(path, cfg, losses, min_cos=None, status="complete", test_acc=None, samples=True,
              min_inner=None):
    """One run directory as the runner writes it: config.yaml, run.json, metrics.csv, samples/."""
    path.mkdir(parents=True)
    (path / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    records.write_json(path / records.RUN_JSON, {"status": status, "seed": cfg["seed"], "device": "cpu",
                                                 "config_hash": records.config_hash(OmegaConf.create(cfg))})
    epochs = range(len(losses))
    min_cos = [-0.1 * (e + 1) for e in epochs] if min_cos is None else min_cos
    records.write_csv(path / records.METRICS, pd.DataFrame({
        "epoch": epochs, "step": [10 * e for e in epochs], "lr": cfg["optim"]["lr"],
        "train_loss": losses, "train_acc": 0.5, "test_loss": losses,
        "test_acc": test_acc if test_acc is not None else 0.5, "min_cos": min_cos,
        "q05_cos": [c + 0.2 for c in min_cos],
        "min_inner": [-0.2 * c * c for c in min_cos] if min_inner is None else min_inner}))
    (path / records.SAMPLES).mkdir()
    if samples:
        for e in epochs:
            records.write_csv(path / records.SAMPLES / f"epoch_{e:04d}.csv", pd.DataFrame(
                {"pair": range(5), "cos": [c + 0.01 * cfg["seed"] for c in SAMPLE_COS],
                 "inner": SAMPLE_COS}))


# Final losses of the depth sweep: depth 16 prefers lr 0.03; at depth 22 lr 0.03 has the lowest
# loss on seed 0 but diverged on seed 1, so lr 0.01 must win.
DEPTH_FINAL = {(16, 0.01): (0.5, 0.7), (16, 0.03): (0.2, 0.4), (22, 0.01): (0.8, 1.0),
               (22, 0.03): (0.1, float("nan"))}


def depth_sweep(root, sweep="depth", dataset="cifar10", model="cnn"):
    for (depth, lr), finals in DEPTH_FINAL.items():
        for seed, final in enumerate(finals):
            cfg = config(sweep, dataset, model, depth=depth, lr=lr, seed=seed)
            diverged = np.isnan(final)
            write_run(root / f"{sweep}_{dataset}_{depth}_{lr}_{seed}", cfg,
                      [2.3, 1.0 + seed, float("nan") if diverged else final],
                      status="diverged" if diverged else "complete")


def width_sweep(root):
    for width, lr, seed in itertools.product((2, 4), (0.01, 0.03), (0, 1)):
        final = 0.1 * width + (0.5 if lr == 0.01 else 0.0) + 0.01 * seed  # lr 0.03 always wins
        write_run(root / f"width_{width}_{lr}_{seed}", config("width", depth=16, width=width, lr=lr,
                                                             seed=seed), [2.3, 1.0, final])


def bn_skip_sweep(root):
    """plain / skip / BN / BN+skip at depths 10 and 16; one LR; test accuracy encodes the variant."""
    for bn, skip, depth, seed in itertools.product((False, True), (False, True), (10, 16), (0, 1)):
        acc = 0.5 + 0.1 * bn + 0.2 * skip + 0.01 * seed
        write_run(root / f"bn_{bn}_{skip}_{depth}_{seed}",
                  config("bn_skip", depth=depth, lr=0.05, seed=seed, model__batch_norm=bn,
                         model__skip=skip),
                  [2.3, 1.0, 0.1 * depth / 10 + 0.01 * seed], test_acc=[0.1, 0.2, acc])


def linreg_sweep(root):
    for dim, seed in itertools.product((80, 120), (0, 1, 2)):
        cfg = config("linreg", "regression", "linreg", lr=0.3, seed=seed, dataset__dim=dim,
                     dataset__n_train=100)
        write_run(root / f"linreg_{dim}_{seed}", cfg, [1.0, 0.5, 0.1 if dim > 100 else 0.3],
                  min_cos=[-0.5, -0.4 + 0.01 * seed, -0.3 + dim / 1000],
                  min_inner=[-0.6, -0.1 * (seed + 1), -1e-6 if dim > 100 else -0.01])


def read(path):
    return pd.read_csv(path)


MINIBATCH = "minibatch-5x128"  # the estimator of the runs of ``config``: 5 pairs of mini-batches of 128


def draw(sweep, frame, out, figure):
    """The paths written by the figure of ``sweep`` whose stem starts with ``figure`` (fig2, conf_vs_loss)."""
    return [p for p in figures.registry.draw(sweep, frame, out) if p.stem.startswith(figure)]


# -- selection and statistics -----------------------------------------------------------------
def test_select_lr_picks_lowest_mean_final_loss_and_never_a_diverged_lr(tmp_path):
    depth_sweep(tmp_path)
    selection = figures.select_lr(records.load(tmp_path)).set_index("model.depth")
    assert list(selection.index) == [16, 22]
    assert selection.loc[16, "optim.lr"] == 0.03
    assert selection.loc[16, "final_loss"] == pytest.approx(0.3)
    assert selection.loc[22, "optim.lr"] == 0.01  # lr 0.03 had the lowest loss but diverged once
    assert selection.loc[22, "final_loss"] == pytest.approx(0.9)
    assert list(selection["n_seeds"]) == [2, 2] and list(selection["note"].fillna("")) == ["", ""]


def test_select_lr_reports_an_architecture_diverged_at_every_lr():
    frame = pd.DataFrame({
        "run_dir": ["a", "a", "b", "b", "c", "c", "d"], "epoch": [0, 1, 0, 1, 0, 1, 0],
        "model.depth": [4, 4, 8, 8, 8, 8, 8], "optim.lr": [0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0.03],
        "seed": 0, "train_loss": [2.0, 1.0, 2.0, np.inf, 2.0, 5.0, 2.0],
        "status": ["complete", "complete", "diverged", "diverged", "failed", "failed", "running"]})
    selection = figures.select_lr(frame).set_index("model.depth")
    assert selection.loc[4, "optim.lr"] == 0.1 and selection.loc[4, "n_seeds"] == 1
    assert np.isnan(selection.loc[8, "optim.lr"]) and selection.loc[8, "n_seeds"] == 0
    assert "lr 0.1 diverged" in selection.loc[8, "note"] and "lr 0.3 failed" in selection.loc[8, "note"]
    assert "0.03" not in selection.loc[8, "note"]  # a running run is not judged
    assert figures.select_lr(frame[frame["status"] == "running"]).empty


def test_aggregate_seeds_matches_numpy():
    rng = np.random.default_rng(0)
    loss = rng.normal(size=(3, 4))  # seeds x epochs
    frame = pd.DataFrame([{"run_dir": f"r{s}", "seed": s, "epoch": e, "model.depth": 4,
                           "train_loss": loss[s, e]} for s in range(3) for e in range(4)])
    frame.loc[(frame["seed"] == 2) & (frame["epoch"] == 3), "train_loss"] = np.inf
    stats = figures.aggregate_seeds(frame, ["model.depth"], "train_loss")
    assert list(stats.columns) == ["model.depth", "epoch", "mean", "std", "n"]
    np.testing.assert_allclose(stats["mean"][:3], loss[:, :3].mean(axis=0))
    np.testing.assert_allclose(stats["std"][:3], loss[:, :3].std(axis=0, ddof=1))
    assert stats["n"].tolist() == [3, 3, 3, 2]  # the infinite value is left out
    np.testing.assert_allclose(stats["mean"].iloc[3], loss[:2, 3].mean())
    final = figures.aggregate_final(frame, [], "train_loss")
    np.testing.assert_allclose(final["mean"], [np.mean([loss[0, 3], loss[1, 3], loss[2, 2]])])


def test_gaussian_kde_uses_scotts_rule_and_integrates_to_one():
    samples = np.random.default_rng(1).normal(0.2, 0.1, size=300)
    grid = np.linspace(-0.5, 0.9, 2001)
    density = figures.gaussian_kde(samples, grid)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    h = samples.std(ddof=1) * 300 ** -0.2
    expected = np.exp(-0.5 * ((0.2 - samples) / h) ** 2).sum() / (300 * h * np.sqrt(2 * np.pi))
    assert figures.gaussian_kde(samples, np.array([0.2]))[0] == pytest.approx(expected)
    assert np.isnan(figures.gaussian_kde([0.3, 0.3], grid)).all()


# -- the figures ------------------------------------------------------------------------------
def assert_written(paths, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf", f"{stem}.csv"]
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.slow
def test_depth_figure_draws_each_depth_at_its_selected_lr(tmp_path):
    depth_sweep(tmp_path / "runs")
    paths = draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "fig2")
    assert_written(paths, f"fig2_depth_{MINIBATCH}")
    data = read(paths[2])
    loss = data[data["panel"] == "train_loss"]
    assert set(zip(loss["model.depth"], loss["optim.lr"])) == {(16, 0.03), (22, 0.01)}
    final = loss[loss["epoch"] == 2].set_index("model.depth")
    assert final.loc[22, "mean"] == pytest.approx(0.9)
    assert final.loc[22, "std"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert final.loc[16, "n"] == 2
    q05 = data[data["panel"] == "q05_cos"].set_index(["model.depth", "epoch"])["mean"]
    cos = data[data["panel"] == "min_cos"].set_index(["model.depth", "epoch"])["mean"]
    assert len(q05) == len(cos) > 0 and ((q05 - cos) - 0.2).abs().max() < 1e-12
    density = data[data["panel"] == "cos_density"]
    assert set(density["epoch"]) == {2} and set(density["n"]) == {10}  # 2 seeds x 5 pairs
    for _, rows in density.groupby("model.depth"):
        assert np.trapezoid(rows["mean"], rows["x"]) == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_width_figure_draws_one_curve_per_width(tmp_path):
    width_sweep(tmp_path / "runs")
    paths = draw("width", records.load(tmp_path / "runs"), tmp_path / "fig", "fig3")
    assert_written(paths, f"fig3_width_{MINIBATCH}")
    cos = read(paths[2]).query("panel == 'min_cos'")
    assert set(zip(cos["model.width"], cos["optim.lr"])) == {(2, 0.03), (4, 0.03)}
    assert cos.query("epoch == 1")["mean"].tolist() == pytest.approx([-0.2, -0.2])


@pytest.mark.slow
def test_bn_skip_figure_plots_final_metrics_against_depth(tmp_path):
    bn_skip_sweep(tmp_path / "runs")
    paths = draw("bn_skip", records.load(tmp_path / "runs"), tmp_path / "fig", "fig4")
    assert_written(paths, f"fig4_bn_skip_{MINIBATCH}")
    data = read(paths[2]).set_index(["metric", "variant", "model.depth"])
    assert data.loc[("test_acc", "plain", 10), "mean"] == pytest.approx(0.505)
    assert data.loc[("test_acc", "BN+skip", 16), "mean"] == pytest.approx(0.805)
    assert data.loc[("train_loss", "skip", 16), "std"] == pytest.approx(np.std([0.16, 0.17], ddof=1))
    assert data.loc[("min_cos", "BN", 10), "mean"] == pytest.approx(-0.3)
    assert set(data.reset_index()["variant"]) == {"plain", "skip", "BN", "BN+skip"}


def test_footnote_states_the_bn_convention_of_bn_runs(tmp_path):
    bn_skip_sweep(tmp_path / "runs")
    runs = records.load(tmp_path / "runs").drop(columns="probe.bn_mode", errors="ignore")
    assert "BN" not in figures.footnote(runs, ["model.depth"])  # no probe.bn_mode recorded
    train = runs.assign(**{"probe.bn_mode": "train"})
    note = figures.footnote(train, ["model.depth"])
    assert "probe gradients: BN with batch statistics (train mode)" in note
    plain = train[~train["model.batch_norm"].astype(bool)]
    assert "BN with" not in figures.footnote(plain, ["model.depth"])  # no BN: the convention is moot


def test_linreg_figure_compares_under_and_over_parameterised(tmp_path):
    linreg_sweep(tmp_path / "runs")
    paths = draw("linreg", records.load(tmp_path / "runs"), tmp_path / "fig", "fig1")
    assert_written(paths, f"fig1_linreg_{MINIBATCH}")
    data = read(paths[2])
    assert set(data["panel"]) == {"train_loss", "eta", "min_cos"}
    eta = data.query("panel == 'eta'").set_index(["dataset.dim", "epoch"])
    assert eta.loc[(80, 1), "mean"] == pytest.approx(0.2)  # max(0, -min inner product), mean over seeds
    assert eta.loc[(120, 2), "mean"] == pytest.approx(1e-6)
    assert eta.loc[(80, 2), "mean"] == pytest.approx(0.01)
    cos = data.query("panel == 'min_cos' and epoch == 1").set_index("dataset.dim")
    assert cos.loc[80, "mean"] == pytest.approx(-0.39) and cos.loc[80, "n"] == 3
    assert cos.loc[120, "std"] == pytest.approx(np.std([-0.4, -0.39, -0.38], ddof=1))


@pytest.mark.slow
def test_an_architecture_diverged_at_every_lr_is_drawn_nowhere_but_noted(tmp_path):
    depth_sweep(tmp_path / "runs")
    for lr in (0.01, 0.03):
        write_run(tmp_path / "runs" / f"deep_{lr}", config(depth=28, lr=lr), [2.3, float("inf")],
                  status="diverged")
    data = read(draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "fig2")[2])
    deep = data[data["model.depth"] == 28]
    assert len(deep) == 1 and deep["mean"].isna().all()
    assert "diverged or failed at every LR" in deep["note"].iloc[0]


@pytest.mark.slow
def test_several_datasets_give_one_figure_each(tmp_path):
    depth_sweep(tmp_path / "runs", sweep="depth_mnist", dataset="mnist", model="mlp")
    depth_sweep(tmp_path / "runs", sweep="depth_mnist", dataset="digits", model="mlp")
    paths = draw("depth_mnist", records.load(tmp_path / "runs"), tmp_path / "fig", "fig2")
    assert [p.name for p in paths if p.suffix == ".png"] == [
        f"fig2_depth_mnist_digits_{MINIBATCH}.png", f"fig2_depth_mnist_mnist_{MINIBATCH}.png"]


@pytest.mark.slow
def test_curves_figure_shows_every_configuration(tmp_path):
    depth_sweep(tmp_path / "runs")
    paths = figures.curves_figure(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert_written(paths, "curves")
    loss = read(paths[2]).query("panel == 'train_loss'")
    assert len(loss.groupby(["model.depth", "optim.lr"])) == 4  # every LR, diverged included
    assert loss["run_dir"].nunique() == 8  # one line per run
    deep = loss.query("`model.depth` == 22 and `optim.lr` == 0.03")
    assert deep.query("seed == 0 and epoch == 2")["value"].tolist() == pytest.approx([0.1])
    diverged = deep.query("seed == 1")  # its loss is NaN at epoch 2: drawn to epoch 1, marked there
    assert diverged["epoch"].tolist() == [0, 1] and diverged["diverged"].tolist() == [False, True]


@pytest.mark.slow
def test_plot_all_draws_every_sweep_and_skips_a_corrupt_run(tmp_path):
    runs = tmp_path / "runs"
    depth_sweep(runs / "depth")
    width_sweep(runs / "width")
    bn_skip_sweep(runs / "bn_skip")
    linreg_sweep(runs / "linreg")
    broken = runs / "depth" / "depth_cifar10_16_0.01_0"
    (broken / records.RUN_JSON).write_text("{not json")
    with pytest.warns(records.RecordWarning, match="depth_cifar10_16_0.01_0"):
        frame = records.load(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", figures.FigureWarning)
        paths = figures.plot_all(frame, tmp_path / "fig")
    stems = sorted({p.stem for p in paths})
    assert stems == ["conf_vs_loss_bn_skip_" + MINIBATCH, "conf_vs_loss_depth_" + MINIBATCH,
                     "conf_vs_loss_width_" + MINIBATCH, "curves", "curves_2", "fig1_linreg_" + MINIBATCH,
                     "fig2_depth_" + MINIBATCH, "fig3_width_" + MINIBATCH, "fig4_bn_skip_" + MINIBATCH]
    assert all(p.is_file() for p in paths) and len(paths) == 3 * len(stems)
    curves = pd.concat([read(tmp_path / "fig" / f"{stem}.csv") for stem in ("curves", "curves_2")])
    final = curves.query("panel == 'train_loss' and epoch == 2")
    corrupt = final.query("`model.depth` == 16 and `optim.lr` == 0.01 and `sweep.name` == 'depth'")
    assert corrupt["run_dir"].nunique() == 1  # the run with the corrupt run.json is left out


@pytest.mark.slow
def test_runs_outside_a_sweep_are_recognised_by_what_varies(tmp_path):
    for depth, seed in itertools.product((2, 4), (0, 1)):
        write_run(tmp_path / "runs" / f"{depth}_{seed}",
                  config("single", "digits", "mlp", depth=depth, seed=seed), [2.3, 1.0, 0.5])
    paths = figures.plot_all(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert sorted({p.stem for p in paths}) == ["conf_vs_loss_depth_mnist_" + MINIBATCH, "curves",
                                               "fig2_depth_mnist_" + MINIBATCH]


def test_a_registered_figure_runs_for_its_sweep_only(tmp_path, monkeypatch):
    depth_sweep(tmp_path / "runs", sweep="custom")
    calls = []
    monkeypatch.setattr(figures.registry, "FIGURES", dict(figures.FIGURES))
    figures.register("custom")(lambda frame, out: calls.append(set(frame["sweep.name"])) or [])
    figures.register("other")(lambda frame, out: calls.append("other") or [])
    figures.plot_all(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert calls == [{"custom"}]


def test_a_failing_figure_warns_and_the_others_are_drawn(tmp_path, monkeypatch):
    depth_sweep(tmp_path / "runs")

    def broken(frame, out):
        raise KeyError("model.depth")

    monkeypatch.setattr(figures.registry, "FIGURES", {"depth": [broken]})
    with pytest.warns(figures.FigureWarning, match="depth"):
        paths = figures.plot_all(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert {p.stem for p in paths} == {"curves"}


# -- probes on a finer schedule than once per epoch ---------------------------------------------
def add_step_rows(run_dir, every=2):
    """Mid-epoch probe events as a finer probe schedule records them (10 steps per epoch, as
    ``write_run``): float epoch, step, lr, batch_loss and probe columns, the per-epoch metrics NaN."""
    metrics = read(run_dir / records.METRICS)
    steps = [s for s in range(1, 10 * int(metrics["epoch"].max())) if s % 10 and s % every == 0]
    rows = pd.DataFrame({"epoch": [s / 10 for s in steps], "step": steps, "lr": metrics["lr"].iloc[0],
                         "batch_loss": [2.0 / (1 + s) for s in steps],
                         "min_cos": [-0.01 * s for s in steps], "q05_cos": [0.2 - 0.01 * s for s in steps],
                         "min_inner": [-0.001 * s for s in steps], "grad_norm": [1.0 + s for s in steps]})
    merged = pd.concat([metrics, rows], ignore_index=True).sort_values("step", kind="stable")
    records.write_csv(run_dir / records.METRICS, merged)


@pytest.mark.slow
def test_step_level_probes_get_their_figure_and_leave_the_epoch_figures_alone(tmp_path):
    depth_sweep(tmp_path / "runs")
    before = figures.plot_all(records.load(tmp_path / "runs"), tmp_path / "before")
    for run_dir in (tmp_path / "runs").iterdir():
        add_step_rows(run_dir)
    frame = records.load(tmp_path / "runs")
    assert (frame["epoch"] % 1 != 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", figures.FigureWarning)
        after = figures.plot_all(frame, tmp_path / "after")
    assert sorted({p.stem for p in after}) == ["conf_vs_loss_depth_" + MINIBATCH, "curves",
                                               "fig2_depth_" + MINIBATCH, "probe_steps"]
    assert (tmp_path / "after" / "probe_steps.png").is_file()
    for path in before:  # the per-epoch figures: whole epochs only, the same numbers as before
        if path.suffix == ".csv":
            epochs = read(tmp_path / "after" / path.name)["epoch"].dropna()
            assert (epochs % 1 == 0).all()
            assert (tmp_path / "after" / path.name).read_text() == path.read_text()
    steps = read(tmp_path / "after" / "probe_steps.csv")
    assert set(steps["panel"]) == {"min_cos", "q05_cos", "grad_norm", "batch_loss"}
    run = steps.query("panel == 'min_cos' and run_dir.str.endswith('_16_0.01_0')")
    assert run["step"].tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # epochs and mid-epoch
    assert (run["x"] == run["step"] + 1).all()


def test_no_probe_steps_figure_without_step_level_rows(tmp_path):
    depth_sweep(tmp_path / "runs")
    assert figures.probe_steps_figure(records.load(tmp_path / "runs"), tmp_path / "fig") == []
    for run_dir in (tmp_path / "runs").iterdir():
        add_step_rows(run_dir, every=5)  # steps 5 and 15: two mid-epoch probes are not a schedule
    assert figures.probe_steps_figure(records.load(tmp_path / "runs"), tmp_path / "fig") == []
    assert not (tmp_path / "fig").exists()

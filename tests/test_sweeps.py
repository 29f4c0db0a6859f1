"""The paper's sweeps at scale=smoke, end to end through the real CLI on tiny fake datasets in the
real on-disk formats: each runs every point of its grid, and `confusion plot` draws its figure."""

import pytest
from fakes import run_cli, write_dataset
from omegaconf import OmegaConf

from confusion_cli import config, records

pytestmark = pytest.mark.slow  # real sweeps in fresh processes

# sweep -> (dataset files it needs, the varying config column, its smoke values, figure stem; the
# file adds the estimator: fig2_depth_minibatch-2x128)
PAPER_SWEEPS = {
    "depth": ("cifar10", "model.depth", [10, 16], "fig2_depth"),
    "width": ("cifar10", "model.width", [1, 2], "fig3_width"),
    "bn_skip": ("cifar10", "model.depth", [10, 16], "fig4_bn_skip"),
    "linreg": (None, "dataset.dim", [80, 120], "fig1_linreg"),
    "depth_mnist": ("mnist", "model.depth", [1, 2], "fig2_depth_mnist"),
    "width_mnist": ("mnist", "model.width", [8, 16], "fig3_width_mnist"),
    "depth_fmnist": ("fashion_mnist", "model.depth", [1, 2], "fig2_depth_fmnist"),
    "width_fmnist": ("fashion_mnist", "model.width", [8, 16], "fig3_width_fmnist"),
    "bn_skip_fmnist": ("fashion_mnist", "model.depth", [2, 3], "fig4_bn_skip_fmnist"),
    "depth_fmnist_cnn": ("fashion_mnist", "model.depth", [10, 16], "fig2_depth_fmnist_cnn"),
    "bn_skip_fmnist_cnn": ("fashion_mnist", "model.depth", [10, 16], "fig4_bn_skip_fmnist_cnn"),
}
SECOND_ESTIMATOR = ("depth_fmnist_cnn", "bn_skip_fmnist_cnn")  # per-example, fixed subset (ex_*)


@pytest.mark.parametrize("sweep", sorted(PAPER_SWEEPS))
def test_paper_sweep_smoke_runs_and_plots(tmp_path, sweep):
    dataset, column, values, figure = PAPER_SWEEPS[sweep]
    if dataset:
        write_dataset(tmp_path / "data", dataset, n_train=160, n_test=64)
    done = run_cli(["run", f"+sweep={sweep}", "scale=smoke"], tmp_path, patch_md5=True)
    assert done.returncode == 0, done.stderr
    frame = records.load(tmp_path / "outputs")
    runs = frame["run_dir"].nunique()
    assert f"sweep {sweep}: {runs} runs" in done.stdout
    assert f"sweep progress: {runs}/{runs} runs finished" in done.stdout
    assert sorted(frame[column].unique()) == values
    assert set(frame["status"]) <= set(records.FINISHED) and "complete" in set(frame["status"])
    assert frame["min_cos"].notna().any()
    if sweep in SECOND_ESTIMATOR:
        assert frame["ex_q05_cos"].notna().any() and (frame["model.name"] == "cnn").all()
    if sweep.startswith("bn_skip"):
        variants = frame.groupby(["model.batch_norm", "model.skip"])["run_dir"].nunique()
        assert len(variants) == 4
    plot = run_cli(["plot", "outputs"], tmp_path)
    assert plot.returncode == 0, plot.stderr
    drawn = tmp_path / "outputs" / "figures"
    for ext in ("png", "pdf", "csv"):
        assert list(drawn.glob(f"{figure}_*.{ext}")), plot.stdout
        if sweep != "linreg":
            assert list(drawn.glob(f"conf_vs_loss_{sweep}_*.{ext}")), plot.stdout


# The paper's CIFAR-10 sweeps at scale=quick, ready for a GPU node (issue 20): they compose and
# plan their grid, and one job of each, at the quick config but on tiny CIFAR-shaped data (no
# CIFAR-10 here), trains an epoch and probes through the real CLI.
QUICK_CIFAR = {"depth": {"seed": 2, "model.depth": 5, "optim.lr": 2},
               "width": {"seed": 2, "model.width": 5, "optim.lr": 2},
               "bn_skip": {"seed": 2, "model.batch_norm": 2, "model.skip": 2, "model.depth": 4,
                           "optim.lr": 2}}


@pytest.mark.parametrize("sweep", sorted(QUICK_CIFAR))
def test_quick_cifar_sweep_plans_and_one_job_runs_on_cifar_shaped(tmp_path, sweep):
    cfg = config.compose([f"+sweep={sweep}", "scale=quick"])
    assert cfg.dataset.name == "cifar10" and cfg.model.name == "cnn" and cfg.optim.epochs == 15
    assert config.plan_sweep(cfg.hydra, []) == QUICK_CIFAR[sweep]
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    pinned = [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]
    done = run_cli(["run", f"+sweep={sweep}", "scale=quick", *pinned, "dataset=cifar_shaped",
                    "dataset.n_train=64", "dataset.n_test=16", "optim.epochs=1", "optim.batch_size=16",
                    "probe.pairs=2", "probe.batch_size=16", "threads=1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"sweep {sweep}: 1 runs" in done.stdout
    frame = records.load(tmp_path / "outputs")
    assert list(frame["epoch"]) == [0, 1] and (frame["status"] == "complete").all()
    assert frame["min_cos"].between(-1, 1).all() and (frame["model.name"] == "cnn").all()

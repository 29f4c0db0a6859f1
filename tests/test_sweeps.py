"""The paper's sweeps at scale=smoke, end to end through the real CLI on tiny fake datasets in the
real on-disk formats: each runs every point of its grid, and `confusion plot` draws its figure."""

import pytest
from fakes import run_cli, write_dataset

from confusion_cli import records

# sweep -> (dataset files it needs, the varying config column, its smoke values, figure stem)
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
}


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
    if sweep.startswith("bn_skip"):
        variants = frame.groupby(["model.batch_norm", "model.skip"])["run_dir"].nunique()
        assert len(variants) == 4
    plot = run_cli(["plot", "outputs"], tmp_path)
    assert plot.returncode == 0, plot.stderr
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / "outputs" / "figures" / f"{figure}.{ext}").is_file(), plot.stdout

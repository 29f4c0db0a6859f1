"""Issue 26's sweeps (spectrum_classes, spectrum_batch, jamming): they compose at every scale, and
their smoke versions run end to end through the real CLI on a tiny fake Fashion-MNIST and plot
their figures (CPU, offline)."""

import pandas as pd
import pytest
from fakes import smoke_sweeps, write_dataset

from confusion_cli import config

SWEEPS = {"spectrum_classes": "dataset.classes", "spectrum_batch": "optim.batch_size",
          "jamming": "model.width"}
FIGURES = {"spectrum_classes": ["spectrum_classes"],
           "spectrum_batch": ["spectrum_batch", "spectrum_density", "spectrum_batch_loss"],
           "jamming": ["jamming"]}


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("name", SWEEPS)
def test_spectrum_sweeps_compose_and_probe_at_init_and_end(name, scale):
    """Each sweep probes at init and at the end; spectrum_batch after every epoch (its claim
    compares batch sizes at equal training loss); jamming stops at a fit; Lanczos runs well past
    the top k it reports (else the lowest Ritz values have not converged)."""
    cfg = config.compose([f"+sweep={name}", f"scale={scale}"])
    assert cfg.dataset.name == "fashion_mnist" and cfg.probe.mode == "none"
    assert cfg.probe.every == (1 if name == "spectrum_batch" else cfg.optim.epochs) and cfg.probe.at_init
    assert (cfg.optim.stop_acc is not None) == (name == "jamming")
    if name != "jamming" and scale != "smoke":
        assert cfg.extra_probes.hessian.iters >= 4 * cfg.extra_probes.hessian.top_k
    assert "fisher" in cfg.extra_probes
    assert SWEEPS[name] in config.plan_sweep(cfg.hydra, [])
    if name != "jamming":
        assert cfg.extra_probes.hessian.spectrum and cfg.extra_probes.hessian.top_k >= 10


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    """Every spectrum sweep at scale=smoke into one records directory, then `confusion plot`."""
    root = tmp_path_factory.mktemp("spectra_sweeps")
    write_dataset(root / "data", "fashion_mnist", n_train=400, n_test=200)
    return smoke_sweeps(root, SWEEPS, patch_md5=True)


@pytest.mark.slow
def test_smoke_spectrum_sweeps_complete_with_their_columns(smoke_outputs):
    _, frame = smoke_outputs
    assert set(frame["status"]) == {"complete"}
    by_sweep = dict(tuple(frame.groupby("sweep.name")))
    assert set(by_sweep) == set(SWEEPS)
    probed = {name: runs[runs["fisher_top1"].notna()] for name, runs in by_sweep.items()}
    every_epoch = {"spectrum_batch"}  # probed after each epoch (its equal-loss comparison)
    assert all(set(runs["epoch"]) == (set(range(int(runs["epoch"].max()) + 1)) if name in every_epoch
                                      else {0, runs["epoch"].max()})
               for name, runs in probed.items())
    assert probed["spectrum_batch"]["epoch"].max() >= 2
    classes = probed["spectrum_classes"]
    assert sorted(classes["dataset.classes"].unique()) == [2, 10]
    assert classes[["hess_outliers", "gn_outliers", "gn_top1", "fisher_outliers"]].notna().all().all()
    weights = probed["spectrum_batch"].filter(regex=r"^hess_sld_weight\d+$").sum(axis=1)
    assert (weights - 1).abs().max() < 1e-6
    assert probed["jamming"][["ex_q05_cos", "fisher_params"]].notna().all().all()
    assert pd.api.types.is_numeric_dtype(probed["jamming"]["fisher_params"])


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_smoke_spectrum_sweep_plots_its_figures(smoke_outputs, name):
    root, _ = smoke_outputs
    figures = root / "outputs" / "figures"
    for stem in FIGURES[name]:
        for suffix in ("png", "pdf", "csv"):
            assert (figures / f"{stem}.{suffix}").is_file()
    if name == "spectrum_batch":  # every run, and each of its probed epochs >= 1, is a point
        table = pd.read_csv(figures / "spectrum_batch_loss.csv")
        runs = smoke_outputs[1].query("`sweep.name` == 'spectrum_batch' and epoch >= 1")
        assert table["run_dir"].nunique() == runs["run_dir"].nunique() >= 2
        assert len(table) == 2 * runs["hess_top1"].notna().sum()

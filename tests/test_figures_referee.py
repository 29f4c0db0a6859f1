"""Figures a referee accepts (issue 19): each fix checked on the saved figure (its Matplotlib
objects, captured as they are saved) or on its CSV, from tiny records on disk."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.legend import Legend
from omegaconf import OmegaConf
from test_figures import MINIBATCH, config, depth_sweep, draw, read, write_run

from confusion_cli import figures, records
from confusion_cli.figures import style


@pytest.fixture
def saved(monkeypatch):
    """{stem: Figure} of every figure saved during the test."""
    found = {}
    original = style.save_figure

    def capture(fig, data, out, stem):
        found[stem] = fig
        return original(fig, data, out, stem)

    monkeypatch.setattr(style, "save_figure", capture)
    return found


def panels(fig):
    """The data panels of a figure (not its blank cells or legend row)."""
    return [ax for ax in fig.axes if ax.get_label().startswith("panel")]


def legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]


def footer(fig):
    return fig._supxlabel.get_text().replace("\n", " ")


def title(fig):
    return fig.get_suptitle().replace("\n", " ")


def add_fixed_subset(run_dir, examples=64, shift=-0.3):
    """The columns of the extra probe example_pairs (ex_*) in a run's metrics, and its settings
    in the run's config, as a run with ``extra_probes=[example_pairs]`` records them."""
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / records.CONFIG))
    cfg["extra_probes"] = {"example_pairs": {"examples": examples, "subset_seed": 0}}
    (run_dir / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    meta = json.loads((run_dir / records.RUN_JSON).read_text())  # the hash of the config as changed
    meta["config_hash"] = records.config_hash(OmegaConf.create(cfg))
    records.write_json(run_dir / records.RUN_JSON, meta)
    metrics = read(run_dir / records.METRICS)
    metrics = metrics.assign(ex_min_cos=(metrics["min_cos"] + shift).clip(-1, 1),
                             ex_q05_cos=metrics["q05_cos"] + shift, ex_min_inner=metrics["min_inner"] * 2,
                             ex_mean_cos=0.1)
    records.write_csv(run_dir / records.METRICS, metrics)


def fixed_depth_sweep(root):
    depth_sweep(root)
    for run_dir in root.iterdir():
        add_fixed_subset(run_dir)


# -- 1. confusion against training loss ---------------------------------------------------------
@pytest.mark.slow
def test_conf_vs_loss_plots_each_estimator_against_the_training_loss(tmp_path, saved):
    fixed_depth_sweep(tmp_path / "runs")
    paths = draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "conf_vs_loss")
    stems = [p.stem for p in paths if p.suffix == ".png"]
    assert stems == [f"conf_vs_loss_depth_{MINIBATCH}", "conf_vs_loss_depth_fixed-subset-64"]
    data = read(tmp_path / "fig" / f"conf_vs_loss_depth_{MINIBATCH}.csv")
    assert {"model.depth", "optim.lr", "seed", "run_dir", "epoch", "panel", "kind", "train_loss",
            "value", "bin_low", "bin_high", "n"} <= set(data.columns)
    points = data.query("kind == 'point'")
    assert set(points["panel"]) == {"min_cos", "q05_cos", "eta"}
    # every probe event of every seed, each depth at its selected LR only (16: 0.03, 22: 0.01)
    assert set(zip(points["model.depth"], points["optim.lr"])) == {(16, 0.03), (22, 0.01)}
    assert len(points.query("panel == 'min_cos'")) == 2 * 2 * 3
    loss = points.query("panel == 'min_cos' and `model.depth` == 22 and seed == 1").sort_values("epoch")
    assert loss["train_loss"].tolist() == pytest.approx([2.3, 2.0, 1.0])
    assert loss["value"].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    medians = data.query("kind == 'median'")
    assert not medians.empty and (medians["bin_low"] <= medians["bin_high"]).all()
    fixed = read(tmp_path / "fig" / "conf_vs_loss_depth_fixed-subset-64.csv")
    assert set(fixed.query("kind == 'point'")["panel"]) == {"ex_min_cos", "ex_q05_cos", "ex_eta"}
    fig = saved[f"conf_vs_loss_depth_{MINIBATCH}"]
    assert "5 pairs of mini-batches of 128" in title(fig)
    fixed_title = title(saved["conf_vs_loss_depth_fixed-subset-64"])
    assert "all pairs of 64 per-example gradients of a fixed training subset" in fixed_title
    for ax in panels(fig):
        left, right = ax.get_xlim()
        assert ax.get_xscale() == "log" and left > right  # reversed: training runs left to right


def test_conf_vs_loss_is_registered_for_every_sweep_of_figures_2_to_4():
    for sweep in ("depth", "depth_mnist", "depth_fmnist", "depth_fmnist_cnn", "width", "width_mnist",
                  "width_fmnist", "bn_skip", "bn_skip_fmnist", "bn_skip_fmnist_cnn"):
        names = [figures.registry.figure_name(f) for f in figures.FIGURES[sweep]]
        assert "conf_vs_loss_figure" in names and len(names) == 2, sweep
    assert figures.registry.figure_name(figures.FIGURES["depth_fmnist_cnn"][0]) == "fig2_depth_fmnist_cnn"
    assert figures.registry.figure_name(figures.FIGURES["bn_skip_fmnist_cnn"][0]) == "fig4_bn_skip_fmnist_cnn"


@pytest.mark.slow
def test_eta_is_zero_for_a_run_whose_pairs_are_all_aligned(tmp_path):
    for seed in (0, 1):  # min_inner > 0 at epochs 0 and 2: every pair aligned, eta = 0 (never |min_inner|)
        write_run(tmp_path / "runs" / f"r{seed}", config(seed=seed), [2.3, 1.0, 0.5],
                  min_cos=[0.2, -0.3, 0.1], min_inner=[0.4, -0.5, 0.2])
    data = read(draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "conf_vs_loss")[2])
    eta = data.query("kind == 'point' and panel == 'eta'").groupby("epoch")["value"]
    assert eta.min().tolist() == [0.0, 0.5, 0.0] and eta.max().tolist() == [0.0, 0.5, 0.0]


# -- 2. fixes ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cosine_bands_are_clipped_and_cosine_axes_stay_within_one(tmp_path, saved):
    for seed, final in itertools.product((0, 1), (0.2, 0.3)):  # seeds far apart: std > 1
        cos = [-0.95, 0.95 if seed else -1.0, -0.99 if seed else 0.99]
        write_run(tmp_path / "runs" / f"{seed}_{final}", config(lr=final, seed=seed), [2.3, 1.0, final],
                  min_cos=cos)
    frame = records.load(tmp_path / "runs")
    draw("depth", frame, tmp_path / "fig", "")
    fig2 = saved[f"fig2_depth_{MINIBATCH}"]
    cosine = [ax for ax in panels(fig2) if "cosine" in ax.get_title() and "density" not in ax.get_title()]
    assert len(cosine) == 2
    for ax in cosine:
        low, high = ax.get_ylim()
        assert -1.05 <= low and high <= 1.05
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands and all(np.abs(p.vertices[:, 1]).max() <= 1.0 + 1e-12
                             for band in bands for p in band.get_paths())
    density = next(ax for ax in panels(fig2) if "density" in ax.get_title())
    assert -1.05 <= density.get_xlim()[0] and density.get_xlim()[1] <= 1.05
    for ax in panels(saved[f"conf_vs_loss_depth_{MINIBATCH}"])[:2]:
        assert -1.05 <= ax.get_ylim()[0] and ax.get_ylim()[1] <= 1.05


def test_curves_has_a_panel_row_per_architecture_and_clips_diverged_runs(tmp_path, saved):
    depth_sweep(tmp_path / "runs")
    run = tmp_path / "runs" / "blown_up"  # depth 16 at lr 0.1: loss to 1e32, then inf
    write_run(run, config(depth=16, lr=0.1), [2.3, 1e32, float("inf")], status="diverged")
    paths = figures.curves_figure(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert [p.name for p in paths] == ["curves.png", "curves.pdf", "curves.csv"]
    fig = saved["curves"]
    assert fig.get_figwidth() <= 7.0
    axes = panels(fig)
    assert len(axes) == 2 * 3  # depths 16 and 22: loss, min cosine, cosine density each
    loss_16, loss_22 = axes[0], axes[3]
    assert "depth=16" in loss_16.get_title(loc="left") and "depth=22" in loss_22.get_title(loc="left")
    assert loss_16.get_ylim()[1] <= 2 * 2.3 * 1.2  # cut at twice the initial loss, not 1e32
    crosses = [line for ax in axes for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 2 * 2  # the two diverged runs, on their loss and min cosine panels
    data = read(paths[2])
    blown = data.query("panel == 'train_loss' and `optim.lr` == 0.1")
    assert blown["value"].max() == pytest.approx(1e32) and blown["plotted"].max() == pytest.approx(4.6)
    assert blown["diverged"].tolist() == [False, True]
    legend = {t.get_text() for legend in legends(fig) for t in legend.get_texts()}
    assert {"lr 0.01", "lr 0.03", "lr 0.1", "diverged (last finite value)"} <= legend
    assert "LR grid searched: {0.01, 0.03, 0.1}" in footer(fig)


@pytest.mark.slow
def test_estimator_names_the_file_and_the_title(tmp_path, saved):
    for (mode, extra), depth, seed in itertools.product(
            [("minibatch_pairs", {"pairs": 100}), ("per_example", {"examples": 256, "bn_mode": "eval"}),
             ("all_pairs", {"batches": 20})], (16, 22), (0, 1)):
        cfg = config(depth=depth, seed=seed, probe__mode=mode, **{f"probe__{k}": v for k, v in extra.items()})
        write_run(tmp_path / "runs" / f"{mode}_{depth}_{seed}", cfg, [2.3, 1.0, 0.5])
    paths = draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "fig2")
    assert sorted(p.name for p in paths if p.suffix == ".png") == [
        "fig2_depth_all-pairs-20x128.png", "fig2_depth_minibatch-100x128.png",
        "fig2_depth_per-example-256.png"]
    assert "100 pairs of mini-batches of 128" in title(saved["fig2_depth_minibatch-100x128"])
    assert "all pairs of 256 per-example gradients" in title(saved["fig2_depth_per-example-256"])
    assert "all pairs of 20 mini-batches of 128" in title(saved["fig2_depth_all-pairs-20x128"])


@pytest.mark.slow
def test_footers_name_the_lr_grid_searched_and_define_the_symbols(tmp_path, saved):
    depth_sweep(tmp_path / "runs")
    draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "")
    fig2, loss = saved[f"fig2_depth_{MINIBATCH}"], saved[f"conf_vs_loss_depth_{MINIBATCH}"]
    for fig in (fig2, loss):
        assert "LR grid searched: {0.01, 0.03}" in footer(fig)
        assert "β = depth of CNN-β-l" in footer(fig) and "q05 = 5% quantile" in footer(fig)
    assert "η = max(0, −min pairwise inner product" in footer(loss)


@pytest.mark.slow
def test_fig4_labels_every_point_with_its_lr_on_a_log_depth_axis(tmp_path, saved):
    for bn, skip, depth, lr in itertools.product((False, True), (False, True), (10, 16), (0.01, 0.1)):
        final = 0.1 * depth / 10 + (0.0 if (lr == 0.1) == skip else 0.2)  # skip nets prefer lr 0.1
        acc = 0.9999 + 1e-6 * depth + 2e-6 * bn  # tiny differences: Matplotlib would tick them '+9.999e-1'
        write_run(tmp_path / "runs" / f"{bn}_{skip}_{depth}_{lr}", config(
            "bn_skip", depth=depth, lr=lr, model__batch_norm=bn, model__skip=skip), [2.3, 1.0, final],
            test_acc=[0.1, 0.2, acc])
    draw("bn_skip", records.load(tmp_path / "runs"), tmp_path / "fig", "fig4")
    fig = saved[f"fig4_bn_skip_{MINIBATCH}"]
    axes = panels(fig)
    assert len(axes) == 4 and fig.get_figwidth() <= 7.0
    for ax in axes:
        assert ax.get_xscale() == "log"
        labels = sorted(t.get_text() for t in ax.texts)
        assert labels == sorted(["0.01"] * 4 + ["0.1"] * 4)  # plain/BN at 0.01, skip/BN+skip at 0.1
    loss = axes[0]
    chosen = {(round(t.xy[0]), t.get_text()) for t in loss.texts}
    assert chosen == {(10, "0.01"), (16, "0.01"), (10, "0.1"), (16, "0.1")}
    accuracy = axes[3]  # plain tick labels: no offset or multiplier text on a linear axis
    assert accuracy.get_yscale() == "linear" and accuracy.yaxis.get_offset_text().get_text() == ""
    assert all("e" not in t.get_text() for t in accuracy.get_yticklabels())


def test_init_figures_show_median_and_interquartile_range(tmp_path, saved):
    rng = np.random.default_rng(0)
    inner = {}
    for width, depth, seed in itertools.product((8, 32), (1, 4), range(5)):
        cfg = config("init_depth", "sphere", "mlp", depth=depth, width=width, seed=seed, optim__epochs=0,
                     probe__mode="per_example", probe__examples=16)
        inner[(width, depth, seed)] = -np.exp(rng.normal())
        write_run(tmp_path / "runs" / f"{width}_{depth}_{seed}", cfg, [2.3], min_cos=[-0.5 - 0.01 * seed],
                  min_inner=[inner[(width, depth, seed)]])
    paths = draw("init_depth", records.load(tmp_path / "runs"), tmp_path / "fig", "init_depth")
    data = read(paths[2])
    assert {"median", "q25", "q75", "n"} <= set(data.columns) and "std" not in data.columns
    eta = data.query("metric == 'eta' and `model.width` == 8 and `model.depth` == 4").iloc[0]
    values = -np.array([inner[(8, 4, s)] for s in range(5)])
    assert eta["median"] == pytest.approx(np.median(values))
    assert (eta["q25"], eta["q75"]) == pytest.approx(tuple(np.quantile(values, [0.25, 0.75])))
    fig = saved["init_depth"]
    eta_axis = next(ax for ax in panels(fig) if ax.get_title().startswith("η"))
    assert eta_axis.get_yscale() == "log"  # eta > 0: a log axis, no symlog crossing zero
    assert "median, bars: interquartile range" in footer(fig)


def hessian_runs(root, top):
    for width, seed in itertools.product(sorted(top), (0, 1)):
        cfg = config("hessian_width", "digits", "mlp", depth=2, width=width, lr=0.05, seed=seed)
        write_run(root / f"{width}_{seed}", cfg, [2.3, 1.0, 0.5])
        metrics = read(root / f"{width}_{seed}" / records.METRICS).assign(hess_top1=top[width])
        records.write_csv(root / f"{width}_{seed}" / records.METRICS, metrics)


def test_hessian_title_says_what_the_data_show(tmp_path, saved):
    hessian_runs(tmp_path / "falls", {16: 4.0, 64: 2.0, 256: 1.0})
    figures.FIGURES["hessian_width"][0](records.load(tmp_path / "falls"), tmp_path / "fig")
    assert "top Hessian eigenvalue falls with width" in title(saved["hessian_width"])
    hessian_runs(tmp_path / "mixed", {16: 4.0, 64: 5.0, 256: 1.0})
    figures.FIGURES["hessian_width"][0](records.load(tmp_path / "mixed"), tmp_path / "fig")
    assert "top Hessian eigenvalue vs width" in title(saved["hessian_width"])
    assert "falls" not in title(saved["hessian_width"]).split(";")[0]


@pytest.mark.slow
def test_probe_steps_names_its_lr(tmp_path, saved):
    from test_figures import add_step_rows

    depth_sweep(tmp_path / "runs")
    for run_dir in (tmp_path / "runs").iterdir():
        add_step_rows(run_dir)
    figures.probe_steps_figure(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert "at initial LRs {0.01, 0.03}" in title(saved["probe_steps"])
    assert "LR grid searched: {0.01, 0.03}" in footer(saved["probe_steps"])


@pytest.mark.slow
def test_every_figure_fits_a_paper_page_with_its_legend_inside_and_plain_ticks(tmp_path, saved):
    fixed_depth_sweep(tmp_path / "runs")
    figures.plot_all(records.load(tmp_path / "runs"), tmp_path / "fig")
    assert {f"fig2_depth_{MINIBATCH}", "fig2_depth_fixed-subset-64", "curves"} <= set(saved)
    for stem, fig in saved.items():
        assert fig.get_figwidth() <= 7.0, stem
        box = fig.bbox
        assert legends(fig), stem
        for legend in legends(fig):
            assert isinstance(legend, Legend)
            extent = legend.get_window_extent()
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, stem
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, stem
        grid = panels(fig)
        if len(grid) == 4:
            rows = {round(ax.get_position().y0, 3) for ax in grid}
            assert len(rows) == 2, stem  # a 2x2 grid, not a strip
        for ax in grid:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() == "linear":
                    assert axis.get_offset_text().get_text() == "", (stem, ax.get_title())


@pytest.mark.slow
def test_a_csv_of_a_fixed_subset_figure_holds_its_own_columns(tmp_path):
    fixed_depth_sweep(tmp_path / "runs")
    data = read(draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "fig2")[5])
    assert set(data["panel"].dropna()) == {"train_loss", "ex_min_cos", "ex_q05_cos"}  # no density
    q05 = data.query("panel == 'ex_q05_cos' and epoch == 2").set_index("model.depth")["mean"]
    assert q05.loc[22] == pytest.approx(np.mean([-0.3 + 0.2 - 0.3] * 2))
    assert pd.Series(data["panel"]).str.startswith("ex_").any()


def test_fixed_subset_figures_name_the_bn_convention_of_per_example_gradients():
    from confusion_cli.figures.select import bn_note, split_figures
    frame = pd.DataFrame({"model.depth": [1, 2], "model.batch_norm": [True, True], "optim.lr": [0.1, 0.1],
                          "probe.mode": ["minibatch_pairs"] * 2, "probe.pairs": [100, 100],
                          "probe.batch_size": [128, 128], "probe.bn_mode": ["train", "train"],
                          "min_cos": [0.1, 0.2], "ex_min_cos": [0.1, 0.2],
                          "extra_probes.example_pairs.examples": [256, 256]})
    notes = {suffix: bn_note(rows) for suffix, rows, _ in split_figures(frame, ["model.depth"])}
    assert notes == {"_minibatch-100x128": "probe gradients: BN with batch statistics (train mode)",
                     "_fixed-subset-256": "probe gradients: BN with running statistics (eval mode)"}


def test_a_sweep_of_arms_each_at_one_lr_names_no_selection_rule_or_grid(tmp_path, saved):
    # depth 16 only at 0.01, depth 22 only at 0.03: nothing was selected, so the footer says so
    for depth, lr in ((16, 0.01), (22, 0.03)):
        for seed in (0, 1):
            cfg = config("depth", "cifar10", "cnn", depth=depth, lr=lr, seed=seed)
            write_run(tmp_path / "runs" / f"arm_{depth}_{seed}", cfg, [2.3, 1.0, 0.5])
    draw("depth", records.load(tmp_path / "runs"), tmp_path / "fig", "")
    note = footer(saved[f"fig2_depth_{MINIBATCH}"])
    assert "at the one initial LR it was run at" in note
    assert "LR grid searched" not in note and "lowest final training loss" not in note

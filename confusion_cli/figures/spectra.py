"""Curvature and over-parameterisation (issue 26, docs/extra.md "Curvature"): outliers of the
Hessian, its Gauss-Newton part and the empirical Fisher, their densities, and the jamming transition.

- ``spectrum_classes``: outlier counts (Fisher, Hessian, Gauss-Newton; the largest log gap,
  ``probes/spectrum.py``) and the Fisher's top-C share of the trace against the number of
  classes C, at initialization and at the end, mean ± std over seeds; the line y = C marks "one
  outlier per class";
- ``spectrum_batch``: top eigenvalue and outlier count of the Hessian and of its Gauss-Newton
  part against the batch size, at initialization and at the end;
- ``spectrum_density``: the spectral density (stochastic Lanczos quadrature, ``{hess,gn}_sld_*``)
  of the Hessian and of the Gauss-Newton part overlaid, one panel per batch size and phase, on a
  log eigenvalue axis: the density of log10(lambda) over the positive nodes, each node a Gaussian
  of width DENSITY_WIDTH decades, weights pooled over seeds; the weight on nodes <= 0 is written
  in the panel;
- ``jamming``: final training loss, test error, per-example confusion (5% quantile of the cosines
  on a fixed subset), the Fisher outlier count and the epochs trained (to a fit, with
  ``optim.stop_loss``, or to the budget: training slows down near N*) against N / P (N
  parameters, P training examples), with N* (the smallest N whose every run fits the P
  examples: training accuracy 1) marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .registry import register
from .select import aggregate_final, complete, describe, footnote, format_value, groups, key_of
from .style import colours, draw_lines, finish, new_figure, value_ticks

DENSITY_WIDTH = 0.08  # decades: the Gaussian each quadrature node is smoothed into
RULE = "outliers: the largest gap in log eigenvalues among the top ones (probes/spectrum.py)"


def phases(runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Mean ± std over seeds of ``metric`` at initialization (epoch 0) and at each run's last
    probe event, a ``phase`` column telling them apart."""
    if metric not in runs:
        return pd.DataFrame(columns=[*by, "mean", "std", "n", "phase"])
    last = f"epoch {format_value(runs['epoch'].max())}"
    return pd.concat([aggregate_final(runs[runs["epoch"] == 0], by, metric).assign(phase="initialization"),
                      aggregate_final(runs, by, metric).assign(phase=last)], ignore_index=True)


def phase_panels(runs: pd.DataFrame, x: str, xlabel: str, panels: list[tuple[str, str]], title: str,
                 note: str, out: Path, stem: str, diagonal: tuple[str, ...] = ()) -> list[Path]:
    """One panel per (metric, name): its mean ± std against ``x``, at init and at the end; the
    line y = x on the panels whose metric is in ``diagonal``."""
    fig, axes = new_figure(len(panels), title, note)
    tables = []
    for ax, (metric, name) in zip(axes, panels):
        stats = phases(runs, [x], metric)
        draw_lines(ax, stats, x, ["phase"], lambda key: key["phase"], colours(stats, ["phase"]))
        if metric in diagonal:
            grid = np.sort(runs[x].unique())
            ax.plot(grid, grid, ls=":", color="0.5", lw=1)
        ax.set_xscale("log", base=2)
        value_ticks(ax, runs[x].unique())
        ax.set(xlabel=xlabel, ylabel=name, title=name)
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, 2, tables, out, stem)


CLASS_PANELS = [("fisher_outliers", "Fisher outliers"), ("hess_outliers", "Hessian outliers"),
                ("gn_outliers", "Gauss-Newton outliers"),
                ("fisher_top_classes_share", "Fisher: top-C share of trace")]


@register("spectrum_classes")
def classes_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Outlier counts and the Fisher's top-C share of the trace against the number of classes C."""
    runs = complete(frame)
    if runs.empty or "dataset.classes" not in runs:
        return []
    title = f"{describe(runs, ['dataset.classes'])}: outliers vs number of classes C (dotted: C)"
    note = "; ".join([footnote(runs, ["dataset.classes"]), RULE])
    return phase_panels(runs, "dataset.classes", "classes C", CLASS_PANELS, title, note, out,
                        "spectrum_classes", diagonal=("fisher_outliers", "hess_outliers", "gn_outliers"))


BATCH_PANELS = [("hess_top1", "top Hessian eigenvalue"), ("gn_top1", "top Gauss-Newton eigenvalue"),
                ("hess_outliers", "Hessian outliers"), ("gn_outliers", "Gauss-Newton outliers")]


@register("spectrum_batch")
def batch_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Top eigenvalue and outlier count of the Hessian and its Gauss-Newton part vs batch size."""
    runs = complete(frame)
    if runs.empty:
        return []
    title = f"{describe(runs, ['optim.batch_size'])}: curvature outliers vs batch size"
    note = "; ".join([footnote(runs, ["optim.batch_size"]), "same LR and epochs for every batch size", RULE])
    return phase_panels(runs, "optim.batch_size", "batch size", BATCH_PANELS, title, note, out,
                        "spectrum_batch")


LOSS_PANELS = [("hess_top1", "top Hessian eigenvalue"), ("gn_top1", "top Gauss-Newton eigenvalue")]


@register("spectrum_batch")
def batch_loss_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The top eigenvalues against the training loss, one line per run coloured by batch size:
    batch sizes read at equal training loss (the claim spectrum_batch_fmnist's comparison), not at
    equal epochs, where larger batches have taken fewer steps."""
    runs = complete(frame)
    runs = runs[runs["epoch"] >= 1] if "hess_top1" in runs else runs.iloc[:0]
    if runs.empty or runs["hess_top1"].notna().sum() < 2:
        return []
    by = ["optim.batch_size"]
    colour = colours(runs, by)
    title = f"{describe(runs, by)}: top curvature vs training loss, by batch size"
    note = "; ".join([footnote(runs, None), "a point per probed epoch (epochs >= 1), coloured by batch "
                      "size; x: the epoch's mean training loss, decreasing to the right"])
    fig, axes = new_figure(len(LOSS_PANELS), title, note)
    tables, handles = [], {}
    for ax, (metric, name) in zip(axes, LOSS_PANELS):
        for key, rows in groups(runs, by):
            label = f"batch {format_value(key['optim.batch_size'])}"
            for _, run in rows.groupby("run_dir"):
                run = run.dropna(subset=[metric]).sort_values("epoch")
                (line,) = ax.plot(run["train_loss"], run[metric], lw=0.8, alpha=0.7,
                                  color=colour[key_of(key)])
                handles[label] = line
                tables.append(run[[*by, "run_dir", "seed", "epoch", "train_loss", metric]]
                              .rename(columns={metric: "value"}).assign(metric=metric))
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set(xlabel="training loss (log scale)", ylabel=name, title=name)
    return finish(fig, axes, len(handles), tables, out, "spectrum_batch_loss",
                  handles=[(line, label) for label, line in handles.items()])


def quadrature(rows: pd.DataFrame, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, weights) of the ``{prefix}_sld_*`` columns of ``rows``, pooled (weights / rows)."""
    nodes = rows.filter(regex=rf"^{prefix}_sld_node\d+$").to_numpy(float).ravel()
    weights = rows.filter(regex=rf"^{prefix}_sld_weight\d+$").to_numpy(float).ravel() / max(len(rows), 1)
    keep = np.isfinite(nodes) & np.isfinite(weights)
    return nodes[keep], weights[keep]


def log_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The density of log10(lambda) on ``grid`` (log10 values) from the positive nodes, each a
    Gaussian of width DENSITY_WIDTH decades."""
    positive = nodes > 0
    centres, mass = np.log10(nodes[positive]), weights[positive]
    kernel = np.exp(-0.5 * ((grid[:, None] - centres[None]) / DENSITY_WIDTH) ** 2)
    return kernel @ mass / (DENSITY_WIDTH * np.sqrt(2 * np.pi))


OPERATORS = (("hess", "Hessian", "C0"), ("gn", "Gauss-Newton", "C3"))


@register("spectrum_batch")
def density_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Spectral densities of the Hessian and the Gauss-Newton part, at init and at the end."""
    runs = complete(frame)
    if runs.empty or "hess_sld_node0" not in runs:
        return []
    last = runs["epoch"].max()
    parts = [(f"batch {format_value(key['optim.batch_size'])}, {phase}", part[part["epoch"] == epoch])
             for key, part in groups(runs, ["optim.batch_size"])
             for phase, epoch in (("init", 0), (f"epoch {format_value(last)}", last))]
    positive = np.concatenate([quadrature(rows, p)[0] for _, rows in parts for p, _, _ in OPERATORS])
    positive = positive[positive > 0]
    if positive.size == 0:
        return []
    grid = np.linspace(np.log10(positive.min()) - 0.5, np.log10(positive.max()) + 0.5, 400)
    title = f"{describe(runs, ['optim.batch_size'])}: spectral density, Hessian and Gauss-Newton part"
    note = "; ".join([footnote(runs, ["optim.batch_size"]),
                      "stochastic Lanczos quadrature, Rademacher start vectors pooled over seeds; density of "
                      f"log10 eigenvalue, nodes smoothed by {DENSITY_WIDTH} decades; w<=0: weight on "
                      "eigenvalues <= 0 (not drawn)"])
    fig, axes = new_figure(len(parts), title, note, cols=2)
    tables = []
    for ax, (label, rows) in zip(axes, parts):
        text = []
        for prefix, name, colour in OPERATORS:
            nodes, weights = quadrature(rows, prefix)
            density = log_density(nodes, weights, grid)
            ax.plot(10 ** grid, np.maximum(density, 1e-6), color=colour, lw=1.2, label=name)
            text.append(f"{name} w<=0: {weights[nodes <= 0].sum():.2f}")
            tables.append(pd.DataFrame({"panel": label, "operator": name, "log10_eigenvalue": grid,
                                        "density": density}))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, None)
        ax.text(0.02, 0.04, "\n".join(text), transform=ax.transAxes, fontsize=5, color="0.3")
        ax.set(xlabel="eigenvalue (log scale)", ylabel="density of log10 eigenvalue", title=label)
    return finish(fig, axes, len(OPERATORS), tables, out, "spectrum_density")


JAMMING_PANELS = [("train_loss", "final training loss"), ("test_error", "test error"),
                  ("ex_q05_cos", "per-example cosine, q05"),
                  ("fisher_outliers", "Fisher outliers"),
                  ("epoch", "epochs to a fit (or the budget)")]


def critical_ratio(runs: pd.DataFrame) -> float | None:
    """N* / P: the smallest N / P whose every run ends at training accuracy 1 (None if none does)."""
    final = runs.sort_values("epoch").groupby("run_dir").tail(1)
    fits = final.groupby("n_over_p")["train_acc"].min() >= 1.0
    return float(fits[fits].index.min()) if fits.any() else None


@register("jamming")
def jamming_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Training loss, test error, confusion, Fisher outliers and epochs trained against N / P,
    one curve per training-set size P, each with its N* marked."""
    runs = complete(frame)
    if runs.empty or "fisher_params" not in runs:
        return []
    params = runs.groupby("run_dir")["fisher_params"].transform("max")
    runs = runs.assign(n_over_p=params / runs["dataset.train_size"].astype(float),
                       test_error=1 - runs["test_acc"])
    by = ["dataset.train_size"]
    colour = colours(runs, by)
    critical = {key_of(key): critical_ratio(rows) for key, rows in groups(runs, by)}
    stars = [f"P = {format_value(key[0])}: " + (f"N*/P = {ratio:.3g}" if ratio is not None else "no fit")
             for key, ratio in critical.items()]
    title = f"{describe(runs, ['model.width', *by])}: jamming; {', '.join(stars)}"
    stop = runs["optim.stop_acc"].dropna().unique() if "optim.stop_acc" in runs else []
    budget = format_value(runs["optim.epochs"].max())
    until = f"trained to training accuracy {format_value(stop[0])} or {budget} epochs" if len(stop) else ""
    note = "; ".join([footnote(runs, ["model.width", *by], until),
                      "N: trainable parameters, P: training examples",
                      "N*: the smallest N whose every run ends at training accuracy 1 (dashed)", RULE])
    fig, axes = new_figure(len(JAMMING_PANELS), title, note)
    tables = []
    for ax, (metric, name) in zip(axes, JAMMING_PANELS):
        if metric not in runs:
            continue
        stats = aggregate_final(runs, ["n_over_p", *by], metric)
        draw_lines(ax, stats, "n_over_p", by, lambda key: f"P = {format_value(key[by[0]])}", colour)
        for key, ratio in critical.items():
            if ratio is not None:
                ax.axvline(ratio, ls="--", color=colour[key], lw=1)
        ax.set_xscale("log")
        if metric in ("train_loss", "epoch"):
            ax.set_yscale("log")
        ax.set(xlabel="N / P (log scale)", ylabel=metric, title=name)
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, len(colour), tables, out, "jamming")

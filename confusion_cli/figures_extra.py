"""Figures of the extra sweeps: theory at initialization, low-rank bias, GD vs SGD, curvature.

Registered into ``figures.FIGURES`` by sweep name at import, drawn with the shared helpers of
``figures`` (seed aggregation, palette, PNG + PDF + CSV). Every title states what the theory or
the literature predicts (PAPER.md, "Theory at initialization" and "Neighbouring phenomena"), so
that a reader can check the prediction against the curves at a glance.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes

from .figures import (
    add_legend,
    aggregate_final,
    aggregate_seeds,
    chosen_runs,
    describe,
    footnote,
    format_value,
    groups,
    new_figure,
    palette,
    register,
    save_figure,
    select_lr,
    selected_notes,
    symbol,
)

CONFUSION_PANELS = (("min_cos", "min pairwise cosine"), ("min_inner", "min pairwise inner product"))
RANK_NAMES = {"rank_eff_mean": "effective rank (mean over layers)",
              "rank_num_mean": "numerical rank (mean over layers)"}
INIT_PREDICTIONS = {
    "init_depth": "theory: confusion grows with depth (min cosine falls), faster when narrower",
    "init_width": "theory: confusion shrinks with width (min cosine rises)",
    "init_linear": "theory: depth-independent with orthogonal init; grows with depth for Gaussian",
}


SETTING_LABELS: dict[str, Callable[[Any], str]] = {
    "optim.full_batch": lambda v: "GD" if v else "SGD",
    "optim.batch_size": lambda v: f"batch {format_value(v)}",
    "optim.lr": lambda v: f"lr {format_value(v)}",
    "optim.weight_decay": lambda v: f"wd {format_value(v)}",
    "model.width": lambda v: f"width {format_value(v)}",
    "model.depth": lambda v: f"depth {format_value(v)}",
    "model.init": lambda v: f"{v} init",
    "phase": str,
}


def setting_label(key: dict[str, Any]) -> str:
    """'GD, wd 0.005', 'batch 16, lr 0.1', 'width 64', 'orthogonal init' from a group key."""
    return ", ".join(SETTING_LABELS[c](v) for c, v in key.items())


def wrap(title: str, panels: int) -> str:
    """``title`` with each line wrapped to the width of ``panels`` panels of ``new_figure``."""
    return "\n".join(textwrap.fill(line, 46 * panels) for line in title.splitlines())


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "complete"]


def colours(stats: pd.DataFrame, by: Sequence[str]) -> dict[tuple, Any]:
    """A colour per combination of ``by`` in ``stats`` (``figures.palette``)."""
    keys = [tuple(key.values()) for key, _ in groups(stats, by)]
    return dict(zip(keys, palette(keys)))


def draw_lines(ax: Axes, stats: pd.DataFrame, x: str, by: Sequence[str],
               label: Callable[[dict[str, Any]], str], colour: dict[tuple, Any]) -> None:
    """Mean ± std of ``stats`` (``aggregate_*`` rows) against ``x``, one curve per ``by`` value."""
    for key, rows in groups(stats, by):
        rows = rows.sort_values(x)
        ax.errorbar(rows[x], rows["mean"], yerr=rows["std"], marker="o", ms=3, capsize=2, lw=1.3,
                    color=colour[tuple(key.values())], label=label(key))


def finish(fig, axes: list[Axes], count: int, tables: list[pd.DataFrame], out: Path,
           stem: str) -> list[Path]:
    for ax in axes:
        ax.grid(alpha=0.3)
    add_legend(fig, axes, count)
    return save_figure(fig, pd.concat(tables, ignore_index=True), out, stem)


# -- theory at initialization -----------------------------------------------------------------
def init_figure(frame: pd.DataFrame, out: Path, stem: str, x: str, hue: str) -> list[Path]:
    """Min pairwise cosine and min inner product of per-example gradients at initialization
    against ``x`` (depth or width), one curve per ``hue`` value, mean ± std over seeds."""
    runs = complete(frame)
    runs = runs[runs["epoch"] == 0]
    if runs.empty:
        return []
    model = runs["model.name"].iloc[0]
    examples = ", ".join(map(format_value, sorted(runs["probe.examples"].unique())))
    inits = "/".join(sorted(runs["model.init"].unique()))  # 'gaussian/orthogonal' when compared
    title = (f"{describe(runs.assign(**{'model.init': inits}), [x, hue])} at initialization\n"
             f"{INIT_PREDICTIONS[stem]}")
    note = footnote(runs, [x, hue], f"all pairs of B={examples} per-example gradients")
    fig, axes = new_figure(len(CONFUSION_PANELS), wrap(title, len(CONFUSION_PANELS)), note)
    tables = []
    for ax, (metric, name) in zip(axes, CONFUSION_PANELS):
        stats = aggregate_final(runs, [hue, x], metric)
        draw_lines(ax, stats, x, [hue], setting_label, colours(stats, [hue]))
        ax.set_xscale("log", base=2)
        if metric == "min_inner":  # grows with the gradient norms: spans decades
            ax.set_yscale("symlog", linthresh=1.0)
        swept = x.split(".")[-1]
        ax.set(xlabel=f"{swept} {symbol(model, x)}", ylabel=name, title=f"{name} vs {swept}")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, runs[hue].nunique(), tables, out, stem)


register("init_depth")(partial(init_figure, stem="init_depth", x="model.depth", hue="model.width"))
register("init_width")(partial(init_figure, stem="init_width", x="model.width", hue="model.depth"))
register("init_linear")(partial(init_figure, stem="init_linear", x="model.depth", hue="model.init"))


# -- low-rank bias ----------------------------------------------------------------------------
@register("lowrank")
def lowrank_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Effective and numerical rank of the weights (mean over layers) against epoch: one panel
    per (batch size, LR), one curve per weight decay, mean ± std over seeds."""
    runs = complete(frame)
    if runs.empty:
        return []
    panels = ["optim.batch_size", "optim.lr"]
    hue = ["optim.weight_decay"]
    paths = []
    for metric, name in RANK_NAMES.items():
        parts = list(groups(runs, panels))
        title = (f"{describe(runs)}: {name}\nprediction: lower with weight decay, more so with "
                 "smaller batch and larger LR; no decrease without weight decay")
        fig, axes = new_figure(len(parts), wrap(title, len(parts)), footnote(runs, [*panels, *hue]))
        tables = []
        for ax, (key, part) in zip(axes, parts):
            stats = aggregate_seeds(part, hue, metric)
            draw_lines(ax, stats, "epoch", hue, setting_label, colours(stats, hue))
            ax.set(xlabel="epoch", ylabel=name, title=setting_label(key))
            tables.append(stats.assign(metric=metric, **key))
        stem = "lowrank" if metric == "rank_eff_mean" else "lowrank_numerical"
        paths += finish(fig, axes, runs[hue[0]].nunique(), tables, out, stem)
    return paths


# -- GD vs SGD --------------------------------------------------------------------------------
GD_PANELS = (("train_loss", "training loss"), ("min_cos", "min pairwise cosine"),
             ("rank_eff_mean", RANK_NAMES["rank_eff_mean"]))


@register("gd_vs_sgd")
def gd_vs_sgd_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Training loss, min pairwise cosine and effective rank against epoch for full-batch GD and
    mini-batch SGD at the same LR, per weight decay, mean ± std over seeds."""
    runs = complete(frame)
    if runs.empty:
        return []
    by = ["optim.full_batch", *(c for c in ("optim.weight_decay", "optim.lr") if runs[c].nunique() > 1)]
    batch = format_value(runs.loc[~runs["optim.full_batch"].astype(bool), "optim.batch_size"].max())
    title = (f"{describe(runs)}: full-batch GD vs SGD (batch {batch}) at the same LR\nexpected: "
             "SGD lower loss per epoch; with weight decay, SGD lower rank than GD")
    note = footnote(runs, by, "GD takes 1 step per epoch; equal epochs = equal example gradients")
    fig, axes = new_figure(len(GD_PANELS), wrap(title, len(GD_PANELS)), note)
    tables = []
    for ax, (metric, name) in zip(axes, GD_PANELS):
        stats = aggregate_seeds(runs, by, metric) if metric in runs else pd.DataFrame(columns=by)
        draw_lines(ax, stats, "epoch", by, setting_label, colours(stats, by))
        if metric == "train_loss":
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} vs epoch")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, len(list(groups(runs, by))), tables, out, "gd_vs_sgd")


# -- curvature --------------------------------------------------------------------------------
HESSIAN_PANELS = (("hess_top1", "top Hessian eigenvalue"), ("min_cos", "min pairwise cosine"))


@register("hessian_width")
def hessian_width_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Top Hessian eigenvalue and min pairwise cosine against width, at initialization and at
    the last epoch, each width at its selected LR (``figures.select_lr``), mean ± std over seeds."""
    selection = select_lr(frame)
    runs = chosen_runs(frame, selection)
    if runs.empty:
        return []
    phases = {"epoch 0 (initialization)": runs[runs["epoch"] == 0],
              f"epoch {int(runs['epoch'].max())}": runs}  # aggregate_final: each run's last value
    title = (f"{describe(runs, ['model.width'])}: curvature and confusion vs width\n"
             "theory: confusion shrinks with width (min cosine rises)")
    note = footnote(runs, ["model.width"], "each width at the LR with the lowest final training loss")
    fig, axes = new_figure(len(HESSIAN_PANELS), wrap(title, len(HESSIAN_PANELS)), note)
    tables = []
    for ax, (metric, name) in zip(axes, HESSIAN_PANELS):
        stats = pd.concat([aggregate_final(rows, ["model.width"], metric).assign(phase=phase)
                           for phase, rows in phases.items()], ignore_index=True)
        draw_lines(ax, stats, "model.width", ["phase"], lambda key: key["phase"],
                   colours(stats, ["phase"]))
        ax.set_xscale("log", base=2)
        ax.set(xlabel="width w", ylabel=name, title=f"{name} vs width")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, 2, [*tables, selected_notes(selection)], out, "hessian_width")

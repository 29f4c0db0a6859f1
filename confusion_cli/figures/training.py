"""Training dynamics: curves of every run, probes by SGD step, weight rank, GD vs SGD, curvature.

- ``curves``: training loss and min pairwise cosine vs epoch for every configuration (the config
  columns that vary, LR included) and the cosine density at the last probed epoch;
- ``probe_steps``: min cosine, its 5% quantile, the mini-batch gradient norm and the loss of every
  run against the SGD step (log scale), from every probe event of a finer-than-epoch schedule;
- ``lowrank``, ``lowrank_numerical``: effective / numerical rank of the weights vs epoch, per
  batch size, LR and weight decay (prediction: lower with weight decay, more so with smaller
  batches and larger LRs);
- ``gd_vs_sgd``: full-batch GD against mini-batch SGD at the same LR;
- ``hessian_width``: top Hessian eigenvalue and min cosine vs width, at initialization and at the end.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import NullFormatter

from .. import records
from .registry import register
from .select import (
    aggregate_final,
    aggregate_seeds,
    complete,
    describe,
    footnote,
    format_value,
    groups,
    key_label,
    key_of,
    select_runs,
    setting_label,
    still_running,
    values,
    varying_columns,
    whole_epoch,
)
from .style import colours, curve_panels, draw_lines, finish, legend_note, new_figure, wrap


def curves_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The generic figure: curves of every configuration (the config columns that vary, LR
    included) among complete and diverged runs, mean ± std over seeds, and cosine densities."""
    runs = frame[frame["status"].isin(records.FINISHED)]
    if runs.empty:
        return []
    by = varying_columns(runs)
    count = len(list(groups(runs, by)))
    title = f"{describe(runs, by)}: {runs['run_dir'].nunique()} runs, {count} configurations"
    return curve_panels(runs, by, key_label, title, footnote(runs, by, legend_note(count, "curves")),
                        out, "curves")


# -- probes by SGD step -----------------------------------------------------------------------
STEP_NAMES = {"min_cos": "min pairwise cosine", "q05_cos": "5% quantile of pairwise cosines",
              "grad_norm": "mini-batch gradient norm", "batch_loss": "mini-batch loss",
              "train_loss": "training loss"}
STEP_PROBES = ("min_cos", "q05_cos", "grad_norm")
MIN_STEP_PROBES = 3  # a run with probes at this many steps between its per-epoch rows gets the figure


def probe_steps_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every probe event of the complete and diverged runs, the mid-epoch ones included, against
    the SGD step + 1 (log scale): min pairwise cosine, its 5% quantile and the mini-batch gradient
    norm where recorded, and the loss (each step's mini-batch loss where recorded, else the
    training loss of the per-epoch rows); one line per run, coloured by configuration. Nothing
    unless some run has probes at ``MIN_STEP_PROBES`` or more mid-epoch steps."""
    runs = frame[frame["status"].isin(records.FINISHED)]
    probed = pd.concat([values(runs, m) for m in STEP_PROBES], axis=1).notna().any(axis=1)
    mid = runs[probed & ~whole_epoch(runs)]
    if mid.empty or mid.groupby("run_dir")["step"].nunique().max() < MIN_STEP_PROBES:
        return []
    loss = "batch_loss" if values(runs, "batch_loss").notna().any() else "train_loss"
    panels = [m for m in STEP_PROBES if values(runs, m).notna().any()] + [loss]
    by = varying_columns(runs)
    colour = colours(runs, by)
    schedules = sorted(map(str, runs.get("probe.schedule", pd.Series(dtype=str)).dropna().unique()))
    extra = "; ".join(filter(None, [
        f"probes at probe.schedule={' / '.join(schedules)}" if schedules else "",
        "loss of each step's mini-batch" if loss == "batch_loss" else "",
        legend_note(len(colour), "probe_steps"), still_running(frame)]))
    title = f"{describe(runs, by)}: probes along training, by SGD step"
    fig, axes = new_figure(len(panels), title, footnote(runs, None, extra))
    tables = []
    for ax, metric in zip(axes, panels):
        data = runs[[*by, "run_dir", "epoch", "step"]].assign(
            x=runs["step"] + 1, value=values(runs, metric)).dropna(subset=["value"]).sort_values("x")
        for key, rows in groups(data, by):
            for i, (_, line) in enumerate(rows.groupby("run_dir", sort=False)):
                ax.plot(line["x"], line["value"], color=colour[key_of(key)], lw=1.2, marker=".", ms=3,
                        label=None if i else key_label(key))
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # the decades only: minor labels collide
        if metric in ("grad_norm", loss) and (data["value"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="SGD step + 1", ylabel=STEP_NAMES[metric], title=STEP_NAMES[metric])
        tables.append(data.assign(panel=metric))
    columns = [*by, "run_dir", "panel", "epoch", "step", "x", "value"]
    return finish(fig, axes, len(colour), [t.reindex(columns=columns) for t in tables], out, "probe_steps")


# -- low-rank bias ----------------------------------------------------------------------------
RANK_NAMES = {"rank_eff_mean": "effective rank (mean over layers)",
              "rank_num_mean": "numerical rank (mean over layers)"}


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
    the last epoch, each width at its selected LR (``select_runs``), mean ± std over seeds.
    Prediction in the title: confusion shrinks with width (min cosine rises)."""
    chosen = select_runs(frame, ["model.width"], lambda key: f"w={format_value(key.get('model.width'))}",
                         "each width at the LR with the lowest final training loss")
    if chosen is None:
        return []
    runs = chosen.runs
    phases = {"epoch 0 (initialization)": runs[runs["epoch"] == 0],
              f"epoch {int(runs['epoch'].max())}": runs}  # aggregate_final: each run's last value
    title = (f"{describe(runs, ['model.width'])}: curvature and confusion vs width\n"
             "theory: confusion shrinks with width (min cosine rises)")
    fig, axes = new_figure(len(HESSIAN_PANELS), wrap(title, len(HESSIAN_PANELS)), chosen.note)
    tables = []
    for ax, (metric, name) in zip(axes, HESSIAN_PANELS):
        stats = pd.concat([aggregate_final(rows, ["model.width"], metric).assign(phase=phase)
                           for phase, rows in phases.items()], ignore_index=True)
        draw_lines(ax, stats, "model.width", ["phase"], lambda key: key["phase"],
                   colours(stats, ["phase"]))
        ax.set_xscale("log", base=2)
        ax.set(xlabel="width w", ylabel=name, title=f"{name} vs width")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, 2, [*tables, chosen.notes], out, "hessian_width")

"""Training dynamics: curves of every run, probes by SGD step, weight rank, GD vs SGD, curvature.

- ``curves``: every run, one row of panels per architecture (the config columns that vary,
  LR aside): its training loss and min pairwise cosine vs epoch, one line per run coloured by
  initial LR, a diverged run marked by an x at its last finite value and the loss axis cut at
  twice the largest initial loss, and the cosine density at the last probed epoch per LR
  (``curves_2``, ... when there are more than ``CURVES_ROWS`` architectures);
- ``probe_steps``: min cosine, its 5% quantile, the mini-batch gradient norm and the loss of every
  run against the SGD step (log scale), from every probe event of a finer-than-epoch schedule;
- ``lowrank``, ``lowrank_numerical``: effective / numerical rank of the weights vs epoch, per
  batch size, LR and weight decay (prediction: lower with weight decay, more so with smaller
  batches and larger LRs);
- ``gd_vs_sgd``: full-batch GD against mini-batch SGD at the same LR;
- ``hessian_width``: top Hessian eigenvalue and min cosine vs width, at initialization and at the
  end; the title states the trend the data show.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from .. import records
from .density import cosine_density
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
    lr_grid,
    select_runs,
    setting_label,
    still_running,
    symbols_note,
    values,
    varying_columns,
    whole_epoch,
)
from .style import (
    colours,
    cosine_axis,
    draw_lines,
    finish,
    is_cosine,
    legend_note,
    new_figure,
    palette,
    value_ticks,
)

CURVES_ROWS = 8     # architectures per page of the curves figure
LOSS_CEILING = 2.0  # the loss axis ends at this multiple of the largest initial (epoch 0) loss


def curve_lines(ax, runs: pd.DataFrame, metric: str, lr_colour: dict, ceiling: float | None) -> pd.DataFrame:
    """One line per run of ``metric`` vs epoch coloured by initial LR, values cut at ``ceiling``,
    an x at the last finite value of a diverged run; the rows drawn (``value`` as recorded,
    ``plotted`` as drawn, ``diverged`` at the x)."""
    drawn = []
    for _, run in runs.groupby("run_dir", sort=True):
        run = run.sort_values("epoch")
        value = values(run, metric)
        rows = run.assign(value=value)[value.notna()]
        if rows.empty:
            continue
        plotted = rows["value"].clip(upper=ceiling) if ceiling is not None else rows["value"]
        colour = lr_colour[rows["optim.lr"].iloc[0]]
        ax.plot(rows["epoch"], plotted, color=colour, lw=0.9, alpha=0.85, marker=".", ms=2)
        marker = np.zeros(len(rows), dtype=bool)
        if run["status"].iloc[0] == "diverged" or rows.index[-1] != run.index[-1]:
            marker[-1] = True
            ax.plot(rows["epoch"].iloc[-1], plotted.iloc[-1], marker="x", ms=6, mew=1.5, color=colour,
                    linestyle="none", zorder=5)
        drawn.append(rows.assign(plotted=plotted, diverged=marker))
    return pd.concat(drawn) if drawn else pd.DataFrame()


def architectures(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(panel label, runs) of every architecture, sweep by sweep: the config columns varying
    within the sweep, LR aside ('depth_fmnist: depth=16'; no sweep name when there is one)."""
    names = runs.get("sweep.name", pd.Series("", runs.index)).fillna("")
    sweeps = list(runs.groupby(names, sort=True))
    found = []
    for name, rows in sweeps:
        for key, part in groups(rows, varying_columns(rows, exclude=("optim.lr", "sweep.name"))):
            label = key_label(key) if key else describe(part) or "all runs"
            found.append((f"{name}: {label}" if len(sweeps) > 1 else label, part))
    return found


def curves_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The generic figure of every complete and diverged run: one row of panels per architecture
    (the config columns that vary within its sweep, LR aside), ``CURVES_ROWS`` rows per page:
    training loss (log axis, cut at ``LOSS_CEILING`` times the largest initial loss) and min
    pairwise cosine vs epoch, one line per run coloured by initial LR, an x at a diverged run's
    last finite value; and the cosine density at the last probed epoch, pooled over seeds, one
    line per LR. The CSV holds every run's drawn values (``panel`` train_loss / min_cos) and the
    densities (cos_density)."""
    runs = frame[frame["status"].isin(records.FINISHED)]
    if runs.empty:
        return []
    arch = varying_columns(runs, exclude=("optim.lr",))
    parts = architectures(runs)
    lrs = sorted(runs["optim.lr"].dropna().unique())
    lr_colour = dict(zip(lrs, palette([(lr,) for lr in lrs])))
    cosine = values(runs, "min_cos").notna().any()
    handles = [(Line2D([], [], color=lr_colour[lr], lw=1.5), f"lr {format_value(lr)}") for lr in lrs]
    if (runs["status"] == "diverged").any():
        handles.append((Line2D([], [], color="0.3", marker="x", ms=6, mew=1.5, linestyle="none"),
                        "diverged (last finite value)"))
    pages = -(-len(parts) // CURVES_ROWS)
    extra = "; ".join(filter(None, [
        "colour: initial LR; x: the last finite value of a diverged run",
        f"loss axis cut at {LOSS_CEILING:g}x the largest initial loss", lr_grid(runs)]))
    paths = []
    for page in range(pages):
        chunk = parts[page * CURVES_ROWS:(page + 1) * CURVES_ROWS]
        stem = "curves" if page == 0 else f"curves_{page + 1}"
        title = (f"{describe(runs, arch)}: every run ({runs['run_dir'].nunique()} runs, {len(parts)} "
                 f"architectures{f', page {page + 1} of {pages}' if pages > 1 else ''})")
        width = 3 if cosine else min(3, len(chunk))
        fig, axes = new_figure(len(chunk) * (3 if cosine else 1), title, footnote(runs, None, extra),
                               cols=width)
        tables = []
        for i, (name, part) in enumerate(chunk):
            panel = axes[3 * i: 3 * i + 3] if cosine else axes[i: i + 1]
            start = values(part[part["epoch"] == part["epoch"].min()], "train_loss")
            ceiling = LOSS_CEILING * start.max() if start.notna().any() else None
            drawn = curve_lines(panel[0], part, "train_loss", lr_colour, ceiling)
            loss = drawn["plotted"] if not drawn.empty else pd.Series(dtype=float)
            if len(loss) and (loss > 0).all():
                panel[0].set_yscale("log")
            if ceiling is not None and len(loss) and loss.max() >= ceiling:  # a run was cut: show where
                panel[0].set_ylim(top=ceiling * (1.15 if panel[0].get_yscale() == "log" else 1.03))
            panel[0].set(xlabel="epoch", ylabel="training loss")
            panel[0].set_title(textwrap.fill(name, 45), fontsize=7, loc="left")
            tables.append(drawn.assign(panel="train_loss"))
            if cosine:
                tables.append(curve_lines(panel[1], part, "min_cos", lr_colour, None).assign(panel="min_cos"))
                cosine_axis(panel[1])
                panel[1].set(title="min pairwise cosine", xlabel="epoch", ylabel="min cosine")
                density = cosine_density(part, ["optim.lr"])
                for (lr,), rows in density.groupby(["optim.lr"]):
                    panel[2].plot(rows["x"], rows["mean"], color=lr_colour[lr], lw=1.2)
                if density.empty:
                    panel[2].text(0.5, 0.5, "no probe samples", ha="center", transform=panel[2].transAxes)
                panel[2].set(title="cosine density, last probed epoch", xlabel="pairwise cosine",
                             ylabel="density")
                cosine_axis(panel[2], "x")
                tables.append(density.assign(panel="cos_density").merge(
                    part[arch].drop_duplicates().iloc[:1], how="cross") if not density.empty else density)
            for ax in panel[:2]:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes:
            ax.title.set_fontsize(7)
        keep = [*arch, "optim.lr", "seed", "run_dir", "status", "panel", "epoch", "value", "plotted",
                "diverged", "x", "mean", "n"]
        data = [t.reindex(columns=keep) for t in tables if not t.empty]
        paths += finish(fig, axes, len(handles), data or [pd.DataFrame(columns=keep)], out, stem,
                        handles=handles)
    return paths


# -- probes by SGD step -----------------------------------------------------------------------
STEP_NAMES = {"min_cos": "min pairwise cosine", "q05_cos": "5% quantile of pairwise cosines",
              "ex_min_cos": "min cosine, fixed subset", "ex_q05_cos": "5% quantile, fixed subset",
              "grad_norm": "mini-batch gradient norm", "batch_loss": "mini-batch loss",
              "train_loss": "training loss"}
STEP_PROBES = ("min_cos", "q05_cos", "ex_min_cos", "ex_q05_cos", "grad_norm")
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
        lr_grid(runs), legend_note(len(colour), "probe_steps"), still_running(frame)]))
    lrs = sorted(runs["optim.lr"].dropna().unique())
    at = (f"lr {format_value(lrs[0])}" if len(lrs) == 1
          else f"LRs {{{', '.join(map(format_value, lrs))}}}") if lrs else "LR not recorded"
    title = f"{describe(runs, by)}: probes along training, by SGD step, at initial {at}"
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
        if is_cosine(metric):
            cosine_axis(ax)
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
        fig, axes = new_figure(len(parts), title, footnote(runs, [*panels, *hue], lr_grid(runs)))
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
    note = footnote(runs, by, "; ".join(["GD takes 1 step per epoch; equal epochs = equal example gradients",
                                         lr_grid(runs)]))
    fig, axes = new_figure(len(GD_PANELS), title, note)
    tables = []
    for ax, (metric, name) in zip(axes, GD_PANELS):
        stats = aggregate_seeds(runs, by, metric) if metric in runs else pd.DataFrame(columns=by)
        draw_lines(ax, stats, "epoch", by, setting_label, colours(stats, by), cosine=is_cosine(metric))
        if is_cosine(metric):
            cosine_axis(ax)
        if metric == "train_loss":
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} vs epoch")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, len(list(groups(runs, by))), tables, out, "gd_vs_sgd")


# -- curvature --------------------------------------------------------------------------------
HESSIAN_PANELS = (("hess_top1", "top Hessian eigenvalue"), ("min_cos", "min pairwise cosine"))


def trend(stats: pd.DataFrame, x: str) -> str | None:
    """'falls' / 'rises' when the ``mean`` of ``stats`` falls / rises at every step of ``x``
    (two values or more), else None."""
    means = stats.sort_values(x)["mean"].to_numpy(float)
    steps = np.diff(means[np.isfinite(means)])
    if len(steps) == 0:
        return None
    return "falls" if (steps < 0).all() else "rises" if (steps > 0).all() else None


def trend_phrase(name: str, stats: pd.DataFrame) -> str:
    """'top Hessian eigenvalue falls with width' when it does in every phase of ``stats``, the
    neutral 'top Hessian eigenvalue vs width' otherwise."""
    found = {trend(rows, "model.width") for _, rows in stats.groupby("phase")}
    return f"{name} {found.pop()} with width" if len(found) == 1 and None not in found else f"{name} vs width"


@register("hessian_width")
def hessian_width_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Top Hessian eigenvalue and min pairwise cosine against width, at initialization and at
    the last epoch, each width at its selected LR (``select_runs``), mean ± std over seeds. The
    title says what the data show: 'falls' / 'rises with width' only where the mean does so at
    every width step in both phases; the theory's prediction is in the footnote."""
    chosen = select_runs(frame, ["model.width"], lambda key: f"w={format_value(key.get('model.width'))}",
                         "each width at the LR with the lowest final training loss")
    if chosen is None:
        return []
    runs = chosen.runs
    phases = {"epoch 0 (initialization)": runs[runs["epoch"] == 0],
              f"epoch {int(runs['epoch'].max())}": runs}  # aggregate_final: each run's last value
    tables = [pd.concat([aggregate_final(rows, ["model.width"], metric).assign(phase=phase)
                         for phase, rows in phases.items()], ignore_index=True)
              for metric, _ in HESSIAN_PANELS]
    title = (f"{describe(runs, ['model.width'])}: "
             + "; ".join(trend_phrase(name, stats) for (_, name), stats in zip(HESSIAN_PANELS, tables)))
    note = "; ".join([chosen.note, "theory's prediction: confusion shrinks with width (min cosine rises)",
                      symbols_note(["w"])])
    fig, axes = new_figure(len(HESSIAN_PANELS), title, note)
    for ax, (metric, name), stats in zip(axes, HESSIAN_PANELS, tables):
        draw_lines(ax, stats, "model.width", ["phase"], lambda key: key["phase"],
                   colours(stats, ["phase"]), cosine=is_cosine(metric))
        ax.set_xscale("log", base=2)
        value_ticks(ax, stats["model.width"])
        if is_cosine(metric):
            cosine_axis(ax)
        ax.set(xlabel="width w (log scale)", ylabel=name, title=f"{name} vs width")
    return finish(fig, axes, 2, [*(t.assign(metric=m) for t, (m, _) in zip(tables, HESSIAN_PANELS)),
                                 chosen.notes], out, "hessian_width")

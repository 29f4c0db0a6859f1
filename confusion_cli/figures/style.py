"""Drawing: figure layout, colours, curves with their spread, legends, and the PNG + PDF + CSV
files every figure is written as (``STEM.png``, ``STEM.pdf``, ``STEM.csv`` of the plotted numbers)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedFormatter,
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from .. import records
from ..probes.stats import eta
from .density import cosine_density
from .select import Label, aggregate_seeds, groups, key_of, values

MAX_LEGEND = 30
CURVE_PANELS = (("train_loss", "training loss"), ("min_cos", "min pairwise cosine"))
LOG_PANELS = ("train_loss", "eta", "ex_eta")
COSINE_LIMITS = (-1.05, 1.05)
PLAIN_DECADES = 2.5  # a log axis spanning fewer decades is labelled 0.2, 0.5, 1, 2 (not 2x10^-1)
FIG_WIDTH = 7.0     # inches: a paper's full text width
PANEL_HEIGHT = {1: 3.0, 2: 2.5, 3: 1.9}  # inches, by the number of columns
TITLE_SIZE, NOTE_SIZE, LEGEND_SIZE = 10, 7, 7
PANEL_TITLE_SIZE, LABEL_SIZE, TICK_SIZE = 9, 8, 7
TITLE_CHARS, NOTE_CHARS = 90, 125  # characters per line across FIG_WIDTH


def palette(keys: Sequence[tuple]) -> list[Any]:
    """One colour per key: a sequential colormap ordered by value when the first elements are
    distinct numbers (depths, widths), else a qualitative one in the given order."""
    first = [k[0] if k else None for k in keys]
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                  for v in first) and len(set(first)) == len(first)
    if numeric and len(first) > 1:
        cmap = matplotlib.colormaps["viridis"]
        order = {v: i for i, v in enumerate(sorted(first))}
        return [cmap(0.85 * order[v] / (len(first) - 1)) for v in first]
    cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(len(keys))]


def colours(frame: pd.DataFrame, by: Sequence[str]) -> dict[tuple, Any]:
    """A colour (``palette``) per combination of ``by`` in ``frame``, keyed by ``key_of``."""
    keys = [key_of(key) for key, _ in groups(frame, by)]
    return dict(zip(keys, palette(keys)))


def is_cosine(metric: str) -> bool:
    """A statistic of cosines (min_cos, q05_cos, ex_min_cos, ...): bounded by [-1, 1]."""
    return metric.endswith("_cos")


def cosine_axis(ax: Axes, axis: str = "y") -> None:
    """Keep a cosine axis within ``COSINE_LIMITS`` (its autoscaled limits, clamped)."""
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    limits = (max(low, COSINE_LIMITS[0]), min(high, COSINE_LIMITS[1]))
    ax.set_ylim(*limits) if axis == "y" else ax.set_xlim(*limits)


def band(ax: Axes, x: Any, mean: Any, std: Any, color: Any, label: str | None = None,
         cosine: bool = False) -> None:
    """A mean curve with a ± one standard deviation band (clipped to [-1, 1] for a ``cosine``)."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    low, high = mean - std, mean + std
    if cosine:
        low, high = np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)
    ax.plot(x, mean, color=color, lw=1.5, label=label)
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)


def error_bars(ax: Axes, x: Any, mean: Any, std: Any, cosine: bool = False, **style: Any) -> None:
    """Mean ± std as error bars, the bars of a ``cosine`` clipped to [-1, 1]."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    low, high = mean - std, mean + std
    if cosine:
        low, high = np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], **style)


def draw_lines(ax: Axes, stats: pd.DataFrame, x: str, by: Sequence[str], label: Label,
               colour: dict[tuple, Any], cosine: bool = False) -> None:
    """Mean ± std of ``stats`` (``aggregate_*`` rows) against ``x`` as error bars, one curve per
    ``by`` value (bars clipped to [-1, 1] for a ``cosine``)."""
    for key, rows in groups(stats, by):
        rows = rows.sort_values(x)
        error_bars(ax, rows[x], rows["mean"], rows["std"], cosine, marker="o", ms=3, capsize=2, lw=1.3,
                   color=colour[key_of(key)], label=label(key))


def value_ticks(ax: Axes, ticks: Sequence[float], axis: str = "x") -> None:
    """Major ticks at ``ticks`` (the swept values) labelled plainly, no minor ticks: for a log
    axis of depths or widths."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    ticks = sorted(set(float(t) for t in ticks))
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
    target.set_minor_locator(NullLocator())


def grid_shape(panels: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a panel grid: one row for one or two panels, else 2 columns up to 4
    panels (2x2) and 3 beyond."""
    cols = cols or (panels if panels <= 2 else 2 if panels <= 4 else 3)
    return -(-panels // cols), cols


def new_figure(panels: int, title: str, note: str, cols: int | None = None,
               panel_height: float | None = None) -> tuple[Figure, list[Axes]]:
    """A grid of ``panels`` axes (``grid_shape``) at most ``FIG_WIDTH`` inches wide, with a title
    and a footnote (constrained layout, no pyplot state). Grid cells left over are kept blank for
    the legend, and a last row of no height holds it when there is none (``add_legend``)."""
    rows, cols = grid_shape(panels, cols)
    width = FIG_WIDTH if cols > 1 else FIG_WIDTH * 0.65
    height = panel_height or PANEL_HEIGHT.get(cols, 1.6)
    title = wrap(title, width=width)
    note = textwrap.fill(note, int(NOTE_CHARS * width / FIG_WIDTH))
    overhead = 0.45 + 0.2 * (title.count("\n") + 1) + 0.12 * (note.count("\n") + 1)
    fig = Figure(figsize=(width, rows * height + overhead), layout="constrained")
    spec = fig.add_gridspec(rows + 1, cols, height_ratios=[height] * rows + [1e-3])
    axes = []
    for i in range(rows * cols):
        ax = fig.add_subplot(spec[i // cols, i % cols], label=f"panel {i}" if i < panels else "spare")
        if i < panels:
            axes.append(ax)
        else:
            ax.set_axis_off()
    fig.add_subplot(spec[rows, :], label="legend").set_axis_off()
    fig.suptitle(title, fontsize=TITLE_SIZE)
    fig.supxlabel(note, fontsize=NOTE_SIZE, color="0.3")
    return fig, axes


def wrap(title: str, panels: int | None = None, width: float = FIG_WIDTH) -> str:
    """``title`` with each line wrapped to a figure ``width`` inches wide (``new_figure`` wraps its
    title itself; ``panels`` is not needed any more: no figure is wider than ``FIG_WIDTH``)."""
    chars = int(TITLE_CHARS * width / FIG_WIDTH)
    return "\n".join(textwrap.fill(line, chars) for line in title.splitlines())


def add_legend(fig: Figure, axes: list[Axes], count: int,
               handles: Sequence[tuple[Any, str]] | None = None) -> None:
    """One legend inside the figure (``handles``: (artist, label) pairs, default those of every
    panel, once per label): in a blank grid cell when one is left and it fits there, else in a
    row under the panels, the figure made taller to hold it; none past ``MAX_LEGEND`` curves
    (the footnote says so)."""
    if handles is None:
        found: dict[str, Any] = {}
        for ax in axes:
            for artist, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, artist)
        handles = [(artist, label) for label, artist in found.items()]
    row = next(ax for ax in fig.axes if ax.get_label() == "legend")
    spare = [ax for ax in fig.axes if ax.get_label() == "spare"]
    if not handles or count > MAX_LEGEND:
        fig.delaxes(row)
        return
    artists, labels = zip(*handles)
    longest = max(map(len, labels))
    spec = row.get_subplotspec().get_gridspec()
    height = spec.get_height_ratios()[0]
    if spare and len(labels) <= int(height / 0.16) * (1 + (longest <= 18)):
        ncol = 1 if len(labels) <= int(height / 0.16) else 2
        spare[0].legend(artists, labels, loc="center", ncol=ncol, fontsize=LEGEND_SIZE, frameon=False)
        fig.delaxes(row)
        return
    ncol = max(1, min(len(labels), int(0.9 * fig.get_figwidth() / (0.45 + 0.06 * longest))))
    lines = -(-len(labels) // ncol)
    extra = 0.17 * lines + 0.1
    spec.set_height_ratios([*spec.get_height_ratios()[:-1], extra])
    fig.set_figheight(fig.get_figheight() + extra)
    row.legend(artists, labels, loc="center", ncol=ncol, fontsize=LEGEND_SIZE, frameon=False)


def plain_ticks(ax: Axes) -> None:
    """Tick labels as plain numbers: on linear axes no offset ('+1e3') and no scientific
    multiplier ('1e-5' above the axis); a log axis spanning less than ``PLAIN_DECADES`` decades
    gets ticks at 1, 2 and 5 times the powers of ten labelled as numbers ('0.2', '0.5', '1'),
    a wider one keeps its decades."""
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        formatter = axis.get_major_formatter()
        if isinstance(formatter, ScalarFormatter):
            formatter.set_useOffset(False)
            formatter.set_scientific(False)
        elif axis.get_scale() == "log" and not isinstance(axis.get_major_locator(), FixedLocator):
            low, high = sorted(limits)
            if low > 0 and np.log10(high / low) < PLAIN_DECADES:
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                axis.set_minor_formatter(NullFormatter())


def font_sizes(ax: Axes) -> None:
    """Panel titles, axis labels and tick labels sized for a figure ``FIG_WIDTH`` wide."""
    ax.title.set_fontsize(min(ax.title.get_fontsize(), PANEL_TITLE_SIZE))
    ax.xaxis.label.set_fontsize(LABEL_SIZE)
    ax.yaxis.label.set_fontsize(LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def legend_note(count: int, stem: str) -> str:
    """'legend omitted: 40 configurations, see curves.csv' past ``MAX_LEGEND`` curves, else ''."""
    return f"legend omitted: {count} configurations, see {stem}.csv" if count > MAX_LEGEND else ""


def save_figure(fig: Figure, data: pd.DataFrame, out: Path, stem: str) -> list[Path]:
    """Write ``stem``.png, .pdf and .csv (the plotted numbers) under ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf", out / f"{stem}.csv"]
    records.atomic_write(paths[0], lambda f: fig.savefig(f, format="png", dpi=150), binary=True)
    records.atomic_write(paths[1], lambda f: fig.savefig(f, format="pdf"), binary=True)
    records.write_csv(paths[2], data)
    return paths


def finish(fig: Figure, axes: list[Axes], count: int, tables: list[pd.DataFrame], out: Path,
           stem: str, handles: Sequence[tuple[Any, str]] | None = None) -> list[Path]:
    """Grid every panel, plain tick labels, add the legend of ``count`` curves (``add_legend``),
    save with the ``tables`` as CSV."""
    for ax in axes:
        ax.grid(alpha=0.3)
        plain_ticks(ax)
        font_sizes(ax)
    add_legend(fig, axes, count, handles)
    return save_figure(fig, pd.concat(tables, ignore_index=True), out, stem)


def curve_panels(runs: pd.DataFrame, by: Sequence[str], label: Label, title: str, note: str,
                 out: Path, stem: str, density: bool = True, notes: pd.DataFrame | None = None,
                 panels: Sequence[tuple[str, str]] = CURVE_PANELS) -> list[Path]:
    """``panels`` (default: training loss and min pairwise cosine; log scale for LOG_PANELS) vs
    epoch, mean ± std over the seeds of every combination of ``by`` (the bands of cosines clipped
    to [-1, 1], their axes within ±1.05), and (``density``) the KDE of the pairwise cosines at the
    last probed epoch. ``eta`` = max(0, -min_inner), the paper's (computed here; ``ex_eta`` from
    ``ex_min_inner``). The CSV holds ``*by, panel, epoch, x, mean, std, n`` (and ``notes`` rows)."""
    runs = with_eta(runs)
    by = list(by)
    colour = colours(runs, by)
    fig, axes = new_figure(len(panels) + density, title, note)
    tables = []
    for ax, (metric, name) in zip(axes, panels):
        stats = aggregate_seeds(runs, by, metric) if metric in runs else pd.DataFrame()
        for key, rows in groups(stats, by) if not stats.empty else ():
            band(ax, rows["epoch"], rows["mean"], rows["std"], colour[key_of(key)], label(key),
                 cosine=is_cosine(metric))
        if stats.empty:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", transform=ax.transAxes)
        elif metric in LOG_PANELS and (stats["mean"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if is_cosine(metric):
            cosine_axis(ax)
        tables.append(stats.assign(panel=metric, x=stats.get("epoch")))
    if density:
        ax = axes[-1]
        stats = cosine_density(runs, by)
        for key, rows in groups(stats, by) if not stats.empty else ():
            ax.plot(rows["x"], rows["mean"], color=colour[key_of(key)], lw=1.5)
            ax.set_title(f"cosine density at epoch {int(rows['epoch'].iloc[0])}")
        if stats.empty:
            ax.text(0.5, 0.5, "no probe samples", ha="center", transform=ax.transAxes)
            ax.set_title("cosine density")
        ax.set(xlabel="pairwise cosine similarity", ylabel="density")
        cosine_axis(ax, "x")
        tables.append(stats.assign(panel="cos_density"))
    columns = [*by, "panel", "epoch", "x", "mean", "std", "n"]
    data = pd.concat([t.reindex(columns=columns) for t in tables if not t.empty] + (
        [notes] if notes is not None and not notes.empty else []), ignore_index=True)
    return finish(fig, axes, len(colour), [data], out, stem)


def with_eta(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``eta`` = max(0, -min_inner) (``probes.stats.eta``, the paper's) and
    ``ex_eta`` from ``ex_min_inner``, for those recorded."""
    found = {f"{p}eta": eta(values(runs, f"{p}min_inner")) for p in ("", "ex_") if f"{p}min_inner" in runs}
    return runs.assign(**found)

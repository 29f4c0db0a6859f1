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
from matplotlib.ticker import MaxNLocator

from .. import records
from ..probes.stats import eta
from .density import cosine_density
from .select import Label, aggregate_seeds, groups, key_of

MAX_LEGEND = 30
CURVE_PANELS = (("train_loss", "training loss"), ("min_cos", "min pairwise cosine"))
LOG_PANELS = ("train_loss", "eta")


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


def band(ax: Axes, x: Any, mean: Any, std: Any, color: Any, label: str | None = None) -> None:
    """A mean curve with a ± one standard deviation band."""
    ax.plot(x, mean, color=color, lw=1.5, label=label)
    ax.fill_between(x, np.asarray(mean) - np.asarray(std), np.asarray(mean) + np.asarray(std),
                    color=color, alpha=0.2, lw=0)


def draw_lines(ax: Axes, stats: pd.DataFrame, x: str, by: Sequence[str], label: Label,
               colour: dict[tuple, Any]) -> None:
    """Mean ± std of ``stats`` (``aggregate_*`` rows) against ``x`` as error bars, one curve per
    ``by`` value."""
    for key, rows in groups(stats, by):
        rows = rows.sort_values(x)
        ax.errorbar(rows[x], rows["mean"], yerr=rows["std"], marker="o", ms=3, capsize=2, lw=1.3,
                    color=colour[key_of(key)], label=label(key))


def new_figure(panels: int, title: str, note: str) -> tuple[Figure, list[Axes]]:
    """A row of ``panels`` axes with a title and a footnote (constrained layout, no pyplot state)."""
    fig = Figure(figsize=(4.3 * panels, 4.0), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    fig.suptitle(title)
    fig.supxlabel(textwrap.fill(note, width=int(15 * 4.3 * panels)), fontsize=8, color="0.3")
    return fig, axes


def wrap(title: str, panels: int) -> str:
    """``title`` with each line wrapped to the width of ``panels`` panels of ``new_figure``."""
    return "\n".join(textwrap.fill(line, 46 * panels) for line in title.splitlines())


def add_legend(fig: Figure, axes: list[Axes], count: int) -> None:
    """One legend right of the panels, the figure widened to hold it (none past ``MAX_LEGEND``
    curves: the footnote says so)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles and count <= MAX_LEGEND:
        ncol = 1 + len(handles) // 20
        fig.legend(handles, labels, loc="outside right upper", ncol=ncol, fontsize=8, frameon=False)
        fig.set_figwidth(fig.get_figwidth() + ncol * (0.4 + 0.065 * max(map(len, labels))))


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
           stem: str) -> list[Path]:
    """Grid every panel, add the legend of ``count`` curves, save with the ``tables`` as CSV."""
    for ax in axes:
        ax.grid(alpha=0.3)
    add_legend(fig, axes, count)
    return save_figure(fig, pd.concat(tables, ignore_index=True), out, stem)


def curve_panels(runs: pd.DataFrame, by: Sequence[str], label: Label, title: str, note: str,
                 out: Path, stem: str, density: bool = True, notes: pd.DataFrame | None = None,
                 panels: Sequence[tuple[str, str]] = CURVE_PANELS) -> list[Path]:
    """``panels`` (default: training loss and min pairwise cosine; log scale for LOG_PANELS) vs
    epoch, mean ± std over the seeds of every combination of ``by``, and (``density``) the KDE of
    the pairwise cosines at the last probed epoch. ``eta`` = max(0, -min_inner), the paper's
    (computed here). The CSV holds ``*by, panel, epoch, x, mean, std, n`` (and ``notes`` rows)."""
    if "min_inner" in runs:
        runs = runs.assign(eta=eta(runs["min_inner"]))
    by = list(by)
    colour = colours(runs, by)
    fig, axes = new_figure(len(panels) + density, title, note)
    tables = []
    for ax, (metric, name) in zip(axes, panels):
        stats = aggregate_seeds(runs, by, metric) if metric in runs else pd.DataFrame()
        for key, rows in groups(stats, by) if not stats.empty else ():
            band(ax, rows["epoch"], rows["mean"], rows["std"], colour[key_of(key)], label(key))
        if stats.empty:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", transform=ax.transAxes)
        elif metric in LOG_PANELS and (stats["mean"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
        tables.append(stats.assign(panel="cos_density"))
    columns = [*by, "panel", "epoch", "x", "mean", "std", "n"]
    data = pd.concat([t.reindex(columns=columns) for t in tables if not t.empty] + (
        [notes] if notes is not None and not notes.empty else []), ignore_index=True)
    return finish(fig, axes, len(colour), [data], out, stem)

"""Figures from run records, as PNG, PDF and CSV: ``plot_all(records.load(root), out)``.

Everything here reads the DataFrame of ``records.load`` (one row per run and probe event, the
config flattened into dotted columns); nothing here trains. Every figure is written as
``STEM.png`` and ``STEM.pdf`` with ``STEM.csv`` beside it holding the plotted numbers, at most 7
inches wide (a panel grid, the legend inside), its footnote naming the LR grid searched and
defining its symbols. A figure of a confusion estimator carries the estimator in its file name
and title (``fig2_depth_fmnist_minibatch-100x128``, ``..._fixed-subset-128``).

Modules, each importing only those listed before it: ``select`` (rows, LR selection, estimators,
statistics, labels, footnotes), ``density`` (cosine KDE), ``style`` (layout, drawing and saving),
``registry`` (``FIGURES``: sweep name -> its figures, filled by ``@register``), then the figures:
``paper`` (Figures 1-4 and confusion vs training loss), ``theory`` (confusion at initialization),
``canonical`` (canonical vs parametric confusion of deep linear nets),
``convergence``, ``training`` (curves of every run, probes by SGD step, rank, GD vs SGD,
curvature), ``spectra`` (curvature outliers, spectral densities, jamming). A new figure
imports its helpers from these modules and registers itself with ``@register("sweep name")``;
the package imports it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from . import canonical, convergence, paper, registry, spectra, theory, training  # noqa: F401  (importing registers the figures)
from .density import gaussian_kde
from .registry import FIGURES, FigureWarning, register, sweeps
from .select import (
    aggregate_final,
    aggregate_seeds,
    chosen_runs,
    epoch_rows,
    final_rows,
    footnote,
    select_lr,
    select_runs,
    varying_columns,
)
from .training import curves_figure, probe_steps_figure

__all__ = ["FIGURES", "FigureWarning", "aggregate_final", "aggregate_seeds", "chosen_runs", "curves_figure",
           "epoch_rows", "final_rows", "footnote", "gaussian_kde", "plot_all", "probe_steps_figure",
           "register", "select_lr", "select_runs", "sweeps", "varying_columns"]


def plot_all(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure the records support, under ``out``: the curves of every run and each
    registered figure (``registry.FIGURES``) whose sweep is present, all from the per-epoch rows
    (``epoch_rows``), and the probes by SGD step where a run has a finer probe schedule. Returns
    the PNG, PDF and CSV paths written; a figure that fails is reported with a FigureWarning and
    the others are still drawn."""
    out = Path(out)
    if frame.empty:
        return []
    per_epoch = epoch_rows(frame)
    jobs = [("curves", curves_figure, per_epoch), ("probe_steps", probe_steps_figure, frame)]
    jobs += [(f"{name} ({registry.figure_name(draw)})", draw, runs)
             for name, runs in sorted(sweeps(per_epoch).items()) for draw in registry.FIGURES.get(name, [])]
    written = []
    for name, draw, runs in jobs:
        try:
            written += draw(runs, out)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not stop the others
            warnings.warn(f"figure {name} failed: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=2)
    return written

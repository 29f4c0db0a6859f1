"""Confusion at initialization against depth or width, with the theory's prediction in the title.

Each figure shows the min pairwise cosine and the min pairwise inner product of per-example
gradients of freshly initialized nets (epoch 0), mean ± std over seeds, one curve per second
swept quantity, so that a reader can check the prediction against the curves at a glance:
``init_depth`` (confusion grows with depth, faster when narrower), ``init_width`` (confusion
shrinks with width) and ``init_linear`` (deep linear nets: depth-independent with orthogonal
init, growing with depth for Gaussian init).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from .registry import register
from .select import aggregate_final, complete, describe, footnote, format_value, setting_label, symbol
from .style import colours, draw_lines, finish, new_figure, wrap

CONFUSION_PANELS = (("min_cos", "min pairwise cosine"), ("min_inner", "min pairwise inner product"))
INIT_PREDICTIONS = {
    "init_depth": "theory: confusion grows with depth (min cosine falls), faster when narrower",
    "init_width": "theory: confusion shrinks with width (min cosine rises)",
    "init_linear": "theory: depth-independent with orthogonal init; grows with depth for Gaussian",
}


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


for _sweep, _x, _hue in (("init_depth", "model.depth", "model.width"),
                         ("init_width", "model.width", "model.depth"),
                         ("init_linear", "model.depth", "model.init")):
    register(_sweep)(partial(init_figure, stem=_sweep, x=_x, hue=_hue))

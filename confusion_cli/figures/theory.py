"""Confusion at initialization against depth or width, with the theory's prediction in the title.

Each figure shows the min pairwise cosine and eta = max(0, -min pairwise inner product) (the
paper's confusion, ``probes.stats.eta``) of per-example gradients of freshly initialized nets
(epoch 0), median and interquartile range over seeds, one curve per second swept quantity, so
that a reader can check the prediction against the curves at a glance: ``init_depth`` (confusion
grows with depth, faster when narrower), ``init_width`` (confusion shrinks with width) and
``init_linear`` (deep linear nets: depth-independent with orthogonal init, growing with depth
for Gaussian init).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from .registry import register
from .select import (
    aggregate_quantiles,
    complete,
    describe,
    footnote,
    groups,
    key_of,
    probe_estimator,
    setting_label,
    symbol,
    symbols_note,
)
from .style import colours, cosine_axis, finish, new_figure, value_ticks, with_eta

CONFUSION_PANELS = (("min_cos", "min pairwise cosine"), ("eta", "η"))
INIT_PREDICTIONS = {
    "init_depth": "theory: confusion grows with depth (min cosine falls, η rises), faster when narrower",
    "init_width": "theory: confusion shrinks with width (min cosine rises, η falls)",
    "init_linear": "theory: depth-independent with orthogonal init; grows with depth for Gaussian",
}


def init_figure(frame: pd.DataFrame, out: Path, stem: str, x: str, hue: str) -> list[Path]:
    """Min pairwise cosine and eta of per-example gradients at initialization against ``x``
    (depth or width, log axis), one curve per ``hue`` value, median and interquartile range over
    seeds (bars from the 25% to the 75% quantile). The CSV holds ``*hue, x, metric, median, q25,
    q75, n``."""
    runs = complete(frame)
    runs = with_eta(runs[runs["epoch"] == 0])
    if runs.empty:
        return []
    model = runs["model.name"].iloc[0]
    inits = "/".join(sorted(runs["model.init"].unique()))  # 'gaussian/orthogonal' when compared
    estimators = " / ".join(sorted({probe_estimator(row).text for _, row in runs.iterrows()}))
    title = (f"{describe(runs.assign(**{'model.init': inits}), [x, hue])} at initialization, "
             f"confusion over {estimators}\n{INIT_PREDICTIONS[stem]}")
    note = "; ".join([footnote(runs, [x, hue], spread="median, bars: interquartile range"),
                      symbols_note([symbol(model, x), symbol(model, hue), "η"])])
    fig, axes = new_figure(len(CONFUSION_PANELS), title, note)
    tables = []
    colour = colours(runs, [hue])
    for ax, (metric, name) in zip(axes, CONFUSION_PANELS):
        stats = aggregate_quantiles(runs, [hue, x], metric)
        for key, rows in groups(stats, [hue]):
            rows = rows.sort_values(x)
            spread = [rows["median"] - rows["q25"], rows["q75"] - rows["median"]]
            ax.errorbar(rows[x], rows["median"], yerr=spread, marker="o", ms=3, capsize=2, lw=1.3,
                        color=colour[key_of(key)], label=setting_label(key))
        ax.set_xscale("log", base=2)
        value_ticks(ax, stats[x])
        if metric == "eta" and (stats["q25"] > 0).all():  # grows with the gradient norms: spans decades
            ax.set_yscale("log")
        if metric == "min_cos":
            cosine_axis(ax)
        swept = x.split(".")[-1]
        ax.set(xlabel=f"{swept} {symbol(model, x)} (log scale)", ylabel=name, title=f"{name} vs {swept}")
        tables.append(stats.assign(metric=metric))
    return finish(fig, axes, runs[hue].nunique(), tables, out, stem)


for _sweep, _x, _hue in (("init_depth", "model.depth", "model.width"),
                         ("init_width", "model.width", "model.depth"),
                         ("init_linear", "model.depth", "model.init")):
    register(_sweep)(partial(init_figure, stem=_sweep, x=_x, hue=_hue))

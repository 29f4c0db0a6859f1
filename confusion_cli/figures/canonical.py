"""Canonical vs parametric confusion of deep linear nets (probe ``canonical``, docs/theory.md).

``canonical_init`` (at initialization), one point per run, medians and interquartile ranges over
seeds:
- ``canonical_init``: min pairwise cosine against depth, parametric solid and canonical dashed,
  one colour per init, one panel per (classes, gain);
- ``canonical_cond``: the condition number of the preconditioner P = J J^T against depth;
- ``canonical_gap``: parametric minus canonical cosine (min and mean) against log10 of the
  condition number, every run a point.
``canonical_train`` (full-batch GD): both min cosines, both eta and the condition number against
the step, mean ± std over seeds, one colour per (init, depth).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .registry import register
from .select import aggregate_quantiles, complete, describe, finite, footnote, groups, key_of
from .style import band, colours, cosine_axis, finish, new_figure, palette, value_ticks

SPACES = (("param", "parametric", "-"), ("canon", "canonical", "--"))
INIT_ORDER = ("gaussian", "orthogonal", "balanced")
PANEL_BY = ("dataset.num_classes", "model.init_gain")
METRIC_NOTE = ("canonical: gradients with respect to the end-to-end matrix W = W_L...W_1; "
               "parametric: with respect to the factors (g_i = J^T c_i); P = J J^T")


def _at_init(frame: pd.DataFrame) -> pd.DataFrame:
    """The complete runs' rows at initialization that carry the canonical probe's columns."""
    runs = complete(frame)
    if "param_min_cos" not in runs:
        return runs.iloc[0:0]
    return runs[(runs["epoch"] == 0) & runs["param_min_cos"].notna()]


def _describe(runs: pd.DataFrame) -> str:
    """The data and model of ``runs``, the inits compared named together ('gaussian/orthogonal')."""
    inits = "/".join(sorted(runs["model.init"].unique(), key=lambda v: (INIT_ORDER + (v,)).index(v)))
    return describe(runs.assign(**{"model.init": inits}), ["model.depth", *PANEL_BY])


def _panel_title(key: dict) -> str:
    return f"{key['dataset.num_classes']} classes, gain {key['model.init_gain']:g}"


def _init_colours(runs: pd.DataFrame) -> dict[tuple, object]:
    """A qualitative colour per init, in INIT_ORDER (the same init, the same colour, in every figure)."""
    keys = [(v,) for v in sorted(runs["model.init"].unique(), key=lambda v: (INIT_ORDER + (v,)).index(v))]
    return dict(zip(keys, palette(keys)))


def _space_handles(init_colour: dict[tuple, object], spaces=SPACES) -> list[tuple[Line2D, str]]:
    handles = [(Line2D([], [], color=c, lw=1.5), f"{k[0]} init") for k, c in init_colour.items()]
    return handles + [(Line2D([], [], color="0.3", ls=style), name) for _, name, style in spaces]


def _depth_panels(runs: pd.DataFrame, out: Path, stem: str, metrics: list[tuple[str, str, str]],
                  ylabel: str, title: str, log: bool) -> list[Path]:
    """One panel per (classes, gain): median and IQR over seeds of each ``metrics`` column
    (column, label, line style) against depth, one colour per init."""
    panels = list(groups(runs, PANEL_BY))
    init_colour = _init_colours(runs)
    note = "; ".join([footnote(runs, ["model.init", *PANEL_BY, "model.depth"],
                               spread="median, bars: interquartile range"), METRIC_NOTE])
    fig, axes = new_figure(len(panels), title, note, cols=min(3, len(panels)))
    tables = []
    for ax, (key, part) in zip(axes, panels):
        for column, _, style in metrics:
            stats = aggregate_quantiles(part, ["model.init", "model.depth"], column)
            for init_key, rows in groups(stats, ["model.init"]):
                rows = rows.sort_values("model.depth")
                spread = [rows["median"] - rows["q25"], rows["q75"] - rows["median"]]
                ax.errorbar(rows["model.depth"], rows["median"], yerr=spread, marker="o", ms=2.5,
                            capsize=2, lw=1.2, ls=style, color=init_colour[key_of(init_key)])
            tables.append(stats.assign(metric=column, **key))
        ax.set_xscale("log", base=2)
        value_ticks(ax, part["model.depth"].unique())
        if log:
            ax.set_yscale("log")
        else:
            cosine_axis(ax)
        ax.set(xlabel="depth L (log scale)", ylabel=ylabel, title=_panel_title(key))
    handles = _space_handles(init_colour, [m for m in SPACES if any(m[1] == n for _, n, _ in metrics)])
    return finish(fig, axes, len(handles), tables, out, stem, handles=handles)


@register("canonical_init")
def canonical_min_cos(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Min pairwise cosine against depth: parametric (solid) and canonical (dashed) per init."""
    runs = _at_init(frame)
    if runs.empty:
        return []
    title = (f"{_describe(runs)} at initialization: min pairwise "
             "cosine, parametric (solid) vs canonical (dashed)")
    metrics = [(f"{space}_min_cos", name, style) for space, name, style in SPACES]
    return _depth_panels(runs, out, "canonical_init", metrics, "min pairwise cosine", title, log=False)


@register("canonical_init")
def canonical_cond(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Condition number of P = J J^T against depth, per init."""
    runs = _at_init(frame)
    if runs.empty:
        return []
    title = (f"{_describe(runs)} at initialization: condition "
             "number of the preconditioner P = J J^T")
    metrics = [("precond_cond", "parametric", "-")]
    return _depth_panels(runs, out, "canonical_cond", metrics, "cond(P) (log scale)", title, log=True)


@register("canonical_init")
def canonical_gap(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Parametric minus canonical cosine (min and mean) against log10 cond(P), every run a point."""
    runs = _at_init(frame)
    if runs.empty:
        return []
    runs = runs.assign(log10_cond=np.log10(finite(runs["precond_cond"])),
                       min_cos_gap=runs["param_min_cos"] - runs["canon_min_cos"],
                       mean_cos_gap=runs["param_mean_cos"] - runs["canon_mean_cos"])
    init_colour = _init_colours(runs)
    markers = dict(zip(sorted(runs["dataset.num_classes"].unique()), "o^sDv"))
    title = (f"{_describe(runs)} at initialization: what the "
             "parameterisation adds to the cosines, against the conditioning of P")
    note = "; ".join([footnote(runs, None), "gap = parametric cosine - canonical cosine", METRIC_NOTE])
    fig, axes = new_figure(2, title, note)
    for ax, (column, name) in zip(axes, (("min_cos_gap", "min pairwise cosine"),
                                         ("mean_cos_gap", "mean pairwise cosine"))):
        for key, rows in groups(runs, ["model.init", "dataset.num_classes"]):
            ax.scatter(rows["log10_cond"], rows[column], s=6, alpha=0.5, lw=0,
                       color=init_colour[(key["model.init"],)], marker=markers[key["dataset.num_classes"]])
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set(xlabel="log10 cond(P)", ylabel=f"gap in {name}", title=f"{name}: parametric - canonical")
    handles = [(Line2D([], [], color=c, marker="o", ls=""), f"{k[0]} init") for k, c in init_colour.items()]
    handles += [(Line2D([], [], color="0.3", marker=m, ls=""), f"{c} classes") for c, m in markers.items()]
    table = runs[["run_dir", "seed", "model.init", "model.depth", "model.init_gain", "dataset.num_classes",
                  "precond_cond", "log10_cond", "param_min_cos", "canon_min_cos", "min_cos_gap",
                  "param_mean_cos", "canon_mean_cos", "mean_cos_gap"]]
    return finish(fig, axes, len(handles), [table], out, "canonical_gap", handles=handles)


TRAIN_PANELS = (("min_cos", "min pairwise cosine", False), ("eta", "η = max(0, -min inner product)", True),
                ("precond_cond", "cond(P)", True), ("train_loss", "training loss", True))


@register("canonical_train")
def canonical_train(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Both min cosines, both eta, cond(P) and the training loss against the GD step."""
    runs = complete(frame)
    if "param_min_cos" not in runs or runs.empty:
        return []
    by = ["model.init", "model.depth"]
    colour = colours(runs, by)
    title = (f"{_describe(runs)}, full-batch GD: canonical (dashed) and parametric (solid) confusion "
             "and the conditioning of P along training")
    note = "; ".join([footnote(runs, by), METRIC_NOTE])
    fig, axes = new_figure(len(TRAIN_PANELS), title, note)
    tables = []
    for ax, (metric, name, log) in zip(axes, TRAIN_PANELS):
        spaces = [(f"{s}_{metric}", style) for s, _, style in SPACES] if metric in ("min_cos", "eta") \
            else [(metric, "-")]
        for column, style in spaces:
            data = runs[[*by, "step"]].assign(value=finite(runs[column])).dropna(subset=["value"])
            stats = (data.groupby([*by, "step"])["value"].agg(mean="mean", std="std", n="count")
                     .reset_index().fillna({"std": 0.0}))
            for key, rows in groups(stats, by):
                band(ax, rows["step"], rows["mean"], rows["std"], colour[key_of(key)],
                     cosine=metric == "min_cos")
                ax.lines[-1].set_linestyle(style)
            tables.append(stats.assign(metric=column))
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="GD step", ylabel=name, title=f"{name} vs step")
    handles = [(Line2D([], [], color=c, lw=1.5), f"{k[0]} init, depth {k[1]}") for k, c in colour.items()]
    handles += [(Line2D([], [], color="0.3", ls=style), name) for _, name, style in SPACES]
    return finish(fig, axes, len(handles), tables, out, "canonical_train", handles=handles)

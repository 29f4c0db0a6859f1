"""The paper's figures, each architecture at its selected initial LR, mean ± std over seeds.

Every figure of a confusion estimator is drawn once per estimator and named by it, in its title
and its file (``select.split_figures``): ``fig2_depth_fmnist_minibatch-100x128`` for the run's
probe (100 pairs of mini-batches of 128), ``..._fixed-subset-128`` for the per-example pairs of the
fixed subset of the extra probe ``example_pairs`` (columns ``ex_*``), where recorded.

- ``fig1_linreg``: linear regression with d < N (under-) and d > N (over-parameterised):
  training loss, eta = max(0, -min pairwise inner product) (goes to 0 when d > N) and min cosine vs epoch;
- ``fig2_depth*`` / ``fig3_width*``: training loss, min pairwise cosine, its 5% quantile and the
  cosine density at the last probed epoch, one curve per depth / width;
- ``fig4_bn_skip*``: final training loss, final min cosine, its 5% quantile and test accuracy
  against depth (log axis) for plain / skip / BN / BN+skip nets, each point labelled with its LR;
- ``conf_vs_loss_<sweep>``: for every sweep of Fig 2-4, each architecture's min cosine, 5%
  quantile and eta against its training loss at every probe event of every seed (reversed log
  axis: training runs left to right), with the median per log-spaced loss bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .registry import register
from .select import (
    Estimator,
    aggregate_final,
    describe,
    format_value,
    groups,
    key_of,
    per_figure,
    select_runs,
    symbol,
    symbols_note,
    values,
)
from .style import (
    CURVE_PANELS,
    colours,
    cosine_axis,
    curve_panels,
    error_bars,
    finish,
    is_cosine,
    new_figure,
    palette,
    value_ticks,
    with_eta,
)

# eta = max(0, -min_inner) on a log axis: it vanishes when over-parameterised (the cosine is scale-free)
ETA_PANELS = (("train_loss", "training loss"), ("eta", "η"), ("min_cos", "min pairwise cosine"))
# the 5% quantile: far less noisy than one minimum, it can order architectures the minimum cannot
SWEEP_PANELS = (*CURVE_PANELS, ("q05_cos", "q05 of pairwise cosines"))
SELECTION_RULE = "initial LR per {}: lowest final training loss (mean over seeds)"


def estimator_title(title: str, estimator: Estimator) -> str:
    """``title`` and, under it, the confusion estimator the figure shows."""
    return f"{title}\nconfusion over {estimator.text}"


def sweep_curves_figure(frame: pd.DataFrame, out: Path, stem: str, hue: str) -> list[Path]:
    """Fig 2 (``hue`` = model.depth) and Fig 3 (model.width): the curve panels of every
    architecture at its selected LR, one colour per ``hue`` value, ordered by value; one figure
    per confusion estimator."""
    def draw(part: pd.DataFrame, name: str, estimator: Estimator) -> list[Path]:
        letter = symbol(part["model.name"].iloc[0], hue)
        short = lambda key: f"{letter}={format_value(key[hue])}"
        chosen = select_runs(part, [hue], short, SELECTION_RULE.format(letter))
        if chosen is None:
            return []
        label = lambda key: f"{short(key)} (lr {format_value(key['optim.lr'])})"
        note = "; ".join([chosen.note, symbols_note([letter, "q05"])])
        return curve_panels(chosen.runs, [hue, "optim.lr"], label,
                            estimator_title(describe(part, [hue]), estimator), note, out, name,
                            density=estimator.samples, notes=chosen.notes,
                            panels=estimator.panels(SWEEP_PANELS))
    return per_figure(frame, (hue,), stem, draw)


VARIANTS = {(False, False): "plain", (False, True): "skip", (True, False): "BN", (True, True): "BN+skip"}
FINAL_PANELS = (("train_loss", "final training loss"), ("min_cos", "final min pairwise cosine"),
                ("q05_cos", "final q05 of pairwise cosines"), ("test_acc", "test accuracy"))


def variant(row: dict[str, Any]) -> str:
    """plain / skip / BN / BN+skip from model.batch_norm and model.skip."""
    return VARIANTS[(bool(row["model.batch_norm"]), bool(row["model.skip"]))]


def bn_skip_figure(frame: pd.DataFrame, out: Path, stem: str = "fig4_bn_skip") -> list[Path]:
    """Fig 4: final training loss, final min cosine, its 5% quantile and test accuracy against
    depth (log axis) for the four variants plain / skip / BN / BN+skip, each architecture at its
    selected LR, mean ± std; every marker labelled with that LR; one figure per estimator."""
    by = ["variant", "model.depth", "optim.lr"]

    def draw(part: pd.DataFrame, name: str, estimator: Estimator) -> list[Path]:
        part = part.assign(variant=part.apply(variant, axis=1))
        letter = symbol(part["model.name"].iloc[0], "model.depth")
        short = lambda key: f"{variant(key)} {letter}={format_value(key['model.depth'])}"
        chosen = select_runs(part, by, short, "each point at the initial LR with the lowest final "
                                              "training loss (mean over seeds), the number beside it")
        if chosen is None:
            return []
        runs = chosen.runs
        names = [v for v in VARIANTS.values() if v in set(runs["variant"])]
        colour = dict(zip(names, palette([(v,) for v in names])))
        panels = estimator.panels(FINAL_PANELS)
        note = "; ".join([chosen.note, symbols_note([letter, "q05"])])
        title = estimator_title(f"{describe(part, ['model.depth'])}: BN and skips", estimator)
        fig, axes = new_figure(len(panels), title, note)
        tables = []
        depths = sorted(runs["model.depth"].unique())
        for ax, (metric, label) in zip(axes, panels):
            stats = (aggregate_final(runs, by, metric) if metric in runs
                     else pd.DataFrame(columns=[*by, "mean", "std"]))
            for v in names:
                rows = stats[stats["variant"] == v].sort_values("model.depth")
                error_bars(ax, rows["model.depth"], rows["mean"], rows["std"], is_cosine(metric),
                           marker="o", ms=4, capsize=3, color=colour[v], label=v)
                for _, row in rows.iterrows():  # the LR each point was selected at
                    ax.annotate(format_value(row["optim.lr"]), (row["model.depth"], row["mean"]),
                                xytext=(3, 2), textcoords="offset points", fontsize=5.5, color=colour[v])
            ax.set_xscale("log", base=2)
            value_ticks(ax, depths)
            ax.margins(x=0.1)  # room for the LR labels right of the deepest points
            if metric == "train_loss" and (stats["mean"] > 0).all() and not stats.empty:
                ax.set_yscale("log")
            if is_cosine(metric):
                cosine_axis(ax)
            ax.set(xlabel=f"depth {letter} (log scale)", ylabel=label, title=label)
            tables.append(stats.assign(metric=metric))
        notes = chosen.notes.assign(variant=[variant(row) for _, row in chosen.notes.iterrows()])
        data = pd.concat([*tables, notes], ignore_index=True)
        columns = [*by, "metric", "mean", "std", "n", "note"]
        return finish(fig, axes, len(names), [data.reindex(columns=columns)], out, name)
    return per_figure(frame, ("model.batch_norm", "model.skip", "model.depth"), stem, draw)


@register("linreg")
def linreg_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Fig 1: linear regression with d < N (under-) and d > N (over-parameterised): training
    loss, eta = max(0, -min pairwise inner product) (both log scale; eta goes to 0 when d > N) and the
    min pairwise cosine (scale-free) over time, mean ± std over seeds."""
    def draw(part: pd.DataFrame, name: str, estimator: Estimator) -> list[Path]:
        n = part["dataset.n_train"].iloc[0]
        short = lambda key: f"d={format_value(key['dataset.dim'])}"
        chosen = select_runs(part, ["dataset.dim"], short, "")
        if chosen is None:
            return []
        label = lambda key: (f"{short(key)} ({'over' if key['dataset.dim'] > n else 'under'}-"
                             f"parameterised, lr {format_value(key['optim.lr'])})")
        dims = " vs ".join(map(format_value, sorted(chosen.runs["dataset.dim"].unique())))
        title = estimator_title(f"Linear regression, N = {format_value(n)} samples: d = {dims}", estimator)
        note = "; ".join([chosen.note, symbols_note(["d", "N", "η"])])
        return curve_panels(chosen.runs, ["dataset.dim", "optim.lr"], label, title, note, out, name,
                            density=False, notes=chosen.notes, panels=estimator.panels(ETA_PANELS))
    return per_figure(frame, ("dataset.dim",), "fig1_linreg", draw)


# -- confusion against training loss ------------------------------------------------------------
LOSS_PANELS = (("min_cos", "min pairwise cosine"), ("q05_cos", "q05 of pairwise cosines"), ("eta", "η"))
LOSS_BINS = 12  # log-spaced training-loss bins of the median lines


def loss_bins(loss: pd.Series) -> np.ndarray:
    """``LOSS_BINS`` + 1 log-spaced edges over the positive ``loss`` values (one bin when they
    are all equal)."""
    low, high = loss.min(), loss.max()
    return np.geomspace(low, high, LOSS_BINS + 1) if high > low else np.array([low, high])


def binned_median(rows: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """Median ``value`` of ``rows`` per training-loss bin (``edges``): columns bin_low,
    bin_high, train_loss (the bin's geometric centre), value, n; empty bins left out."""
    index = np.clip(np.searchsorted(edges, rows["train_loss"], side="right") - 1, 0, len(edges) - 2)
    stats = rows.assign(bin=index).groupby("bin")["value"].agg(value="median", n="count").reset_index()
    low, high = edges[stats["bin"]], edges[stats["bin"] + 1]
    return stats.assign(bin_low=low, bin_high=high, train_loss=np.sqrt(low * high)).drop(columns="bin")


def conf_vs_loss_figure(frame: pd.DataFrame, out: Path, sweep: str, family: str) -> list[Path]:
    """Confusion against training loss: for every architecture of a Fig 2 (``family`` = depth),
    Fig 3 (width) or Fig 4 (bn_skip) sweep at its selected LR, the min pairwise cosine, its 5%
    quantile and eta = max(0, -min inner product) at every probe event of every seed against the
    training loss of the same event (points), and their median per log-spaced loss bin (lines).
    The loss axis is logarithmic and reversed, so that training runs left to right. One figure
    per estimator, ``conf_vs_loss_<sweep>_<estimator>``; the CSV holds the points (``kind`` =
    point) and the medians (``kind`` = median, with the bin's edges)."""
    hue = {"depth": ["model.depth"], "width": ["model.width"], "bn_skip": ["variant", "model.depth"]}[family]
    keep = ("model.batch_norm", "model.skip", "model.depth") if family == "bn_skip" else tuple(hue)

    def draw(part: pd.DataFrame, name: str, estimator: Estimator) -> list[Path]:
        if family == "bn_skip":
            part = part.assign(variant=part.apply(variant, axis=1))
        letters = {c: symbol(part["model.name"].iloc[0], c) for c in hue if c != "variant"}
        def short(key: dict[str, Any]) -> str:  # 'BN+skip L=16', 'L=16'
            named = [f"{letters[c]}={format_value(key[c])}" for c in hue if c != "variant"]
            return " ".join([key["variant"], *named] if "variant" in key else named)
        chosen = select_runs(part, hue, short, "each architecture at the initial LR with the lowest "
                                               "final training loss (mean over seeds)",
                             spread="points: every probe event of every seed; lines: median per "
                                    "log-spaced bin of training loss")
        if chosen is None:
            return []
        runs = with_eta(chosen.runs)
        panels = [(metric, label) for metric, label in estimator.panels(LOSS_PANELS)
                  if values(runs, metric).notna().any()]
        if not panels:
            return []
        by = [*hue, "optim.lr"]
        label = lambda key: f"{short(key)} (lr {format_value(key['optim.lr'])})"
        points = runs[[*by, "seed", "run_dir", "epoch"]].assign(train_loss=values(runs, "train_loss"))
        points = points[points["train_loss"] > 0]
        edges = loss_bins(points["train_loss"])
        colour = colours(points, by)
        title = (f"{describe(part, [c for c in hue if c != 'variant'])}: confusion vs training loss\n"
                 f"min, q05 and η over {estimator.text}")
        note = "; ".join([chosen.note, "training loss: the training set's loss at each epoch's end "
                          "(epoch 0: at initialization)", symbols_note([*letters.values(), "q05", "η"])])
        fig, axes = new_figure(len(panels), title, note)
        tables = []
        for ax, (metric, ylabel) in zip(axes, panels):
            data = points.assign(value=values(runs.loc[points.index], metric)).dropna(subset=["value"])
            for key, rows in groups(data, by):
                c = colour[key_of(key)]
                ax.scatter(rows["train_loss"], rows["value"], s=7, color=c, alpha=0.4, lw=0)
                median = binned_median(rows, edges)
                ax.plot(median["train_loss"], median["value"], color=c, lw=1.5, marker="o", ms=2.5,
                        label=label(key))
                tables += [rows.assign(panel=metric, kind="point"),
                           median.assign(panel=metric, kind="median", **key)]
            ax.set_xscale("log")
            if len(edges):
                ax.set_xlim(edges[-1] * 1.25, edges[0] / 1.25)  # reversed: high loss on the left
            if is_cosine(metric):
                cosine_axis(ax)
            elif metric.endswith("eta") and not data.empty:  # spans decades; 0 when all pairs align
                positive = data["value"][data["value"] > 0]
                if len(positive) == len(data):
                    ax.set_yscale("log")
                elif len(positive):
                    ax.set_yscale("symlog", linthresh=float(positive.min()))
                    ax.set_ylim(bottom=0)
            ax.set(xlabel="training loss (log scale, decreasing →)", ylabel=ylabel, title=ylabel)
        columns = [*by, "seed", "run_dir", "epoch", "panel", "kind", "train_loss", "value",
                   "bin_low", "bin_high", "n"]
        data = pd.concat([t.reindex(columns=columns) for t in tables] + [chosen.notes], ignore_index=True)
        return finish(fig, axes, len(colour), [data], out, name)
    return per_figure(frame, keep, f"conf_vs_loss_{sweep}", draw)


FAMILIES: dict[str, Sequence[str]] = {
    "depth": ("depth", "depth_mnist", "depth_fmnist", "depth_fmnist_cnn"),
    "width": ("width", "width_mnist", "width_fmnist"),
    "bn_skip": ("bn_skip", "bn_skip_fmnist", "bn_skip_fmnist_cnn"),
}
for _family, _sweeps in FAMILIES.items():
    for _sweep in _sweeps:
        if _family == "bn_skip":
            register(_sweep)(partial(bn_skip_figure, stem=f"fig4_{_sweep}"))
        else:
            number, hue = (2, "model.depth") if _family == "depth" else (3, "model.width")
            register(_sweep)(partial(sweep_curves_figure, stem=f"fig{number}_{_sweep}", hue=hue))
        register(_sweep)(partial(conf_vs_loss_figure, sweep=_sweep, family=_family))

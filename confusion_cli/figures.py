"""Figures from run records: the paper's Figures 1-4 and generic curves, as PNG, PDF and CSV.

Everything here reads the DataFrame of ``records.load`` (one row per run and evaluation, the
config flattened into dotted columns); nothing here trains. Every figure is written as
``STEM.png`` and ``STEM.pdf`` with ``STEM.csv`` beside it holding the plotted numbers.

LR selection (the paper's protocol): for every architecture (the config without ``optim.lr``
and ``seed``) the initial LR drawn is the one with the lowest final training loss, averaged over
seeds. An LR at which any seed diverged or failed never wins; an architecture with no such LR
is drawn nowhere and named in the figure's footnote and CSV.

Extension point: ``FIGURES`` maps a sweep name to a function ``(records of that sweep, out
directory) -> paths written``. A module adds its figures by registering into it at import
(``@register("lowrank")``); ``plot_all`` draws the generic curves plus every registered figure
whose sweep is present. The helpers below (``save_figure``, ``palette``, ``aggregate_seeds``,
``aggregate_final``, ``select_lr``, ``gaussian_kde``, ...) are public so those modules reuse them.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import records

FigureFunction = Callable[[pd.DataFrame, Path], list[Path]]
FIGURES: dict[str, FigureFunction] = {}

# Config columns that name a run's place in a sweep, not what it computes.
SEED_COLUMNS = ("seed", "scale.seeds")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST",
                  "fashion_mnist": "Fashion-MNIST", "digits": "digits (8x8)",
                  "regression": "synthetic regression", "sphere": "unit-sphere data"}
MAX_LEGEND = 30
KDE_POINTS = 256


class FigureWarning(UserWarning):
    """A figure that could not be drawn; the others still are."""


def register(*sweeps: str) -> Callable[[FigureFunction], FigureFunction]:
    """Decorator: draw ``function(records of the sweep, out)`` for each sweep name in ``plot_all``."""
    def add(function: FigureFunction) -> FigureFunction:
        for sweep in sweeps:
            FIGURES[sweep] = function
        return function
    return add


# -- selecting runs ---------------------------------------------------------------------------
def config_columns(frame: pd.DataFrame) -> list[str]:
    """The flattened config columns that say what a run computes.

    Metric columns have no dot, config columns do (``model.depth``). Left out: the seed, the seed
    list of the scale, and the grids of a sweep file (``sweep.depths.paper``); ``sweep.name`` stays.
    """
    return [c for c in frame.columns if "." in c and c not in SEED_COLUMNS
            and not (c.startswith("sweep.") and c != "sweep.name")]


def varying_columns(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """The config columns (``config_columns``) taking more than one value in ``frame``."""
    return [c for c in config_columns(frame)
            if c not in exclude and frame[c].nunique(dropna=False) > 1]


def groups(frame: pd.DataFrame, columns: Sequence[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """(``{column: value}``, rows) for every combination of ``columns``, sorted; all rows if none
    (and nothing for an empty frame, as ``DataFrame.groupby``)."""
    columns = list(columns)
    if not columns:
        if not frame.empty:
            yield {}, frame
        return
    for key, part in frame.groupby(columns, dropna=False, sort=True):
        yield dict(zip(columns, key)), part


def finite(values: pd.Series) -> pd.Series:
    """``values`` as floats with infinities turned into NaN (a diverged loss counts as missing)."""
    return pd.to_numeric(values, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run."""
    return frame.sort_values("epoch", kind="stable").groupby("run_dir", sort=False).tail(1)


def select_lr(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's LR selection: one row per architecture.

    Architecture = the config columns varying in ``frame`` other than ``optim.lr`` (and the seed).
    Columns: those, ``optim.lr`` (the chosen initial LR, NaN if none qualifies), ``final_loss``
    (its mean over seeds of the last epoch's train_loss), ``n_seeds`` and ``note`` (empty, or why
    no LR qualifies). An LR qualifies when every seed's run is complete with a finite final loss;
    running runs are ignored.
    """
    finished = frame[frame["status"] != "running"]
    arch = varying_columns(finished, exclude=("optim.lr",))
    last = final_rows(finished)
    last = last.assign(final_loss=finite(last["train_loss"]))
    last = last.assign(ok=(last["status"] == "complete") & last["final_loss"].notna())
    rows = []
    for key, runs in groups(last, arch):
        per_lr = runs.groupby("optim.lr").agg(final_loss=("final_loss", "mean"),
                                              n_seeds=("run_dir", "size"), ok=("ok", "all"),
                                              statuses=("status", lambda s: "/".join(sorted(set(s)))))
        eligible = per_lr[per_lr["ok"]]
        if eligible.empty:
            why = ", ".join(f"lr {lr:g} {s}" for lr, s in per_lr["statuses"].items())
            rows.append({**key, "optim.lr": np.nan, "final_loss": np.nan, "n_seeds": 0,
                         "note": f"diverged or failed at every LR ({why})"})
        else:
            lr = eligible["final_loss"].idxmin()
            rows.append({**key, "optim.lr": lr, "final_loss": eligible.at[lr, "final_loss"],
                         "n_seeds": int(eligible.at[lr, "n_seeds"]), "note": ""})
    return pd.DataFrame(rows, columns=[*arch, "optim.lr", "final_loss", "n_seeds", "note"])


def chosen_runs(frame: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The rows of the complete runs at each architecture's chosen LR (``select_lr``)."""
    keys = [c for c in selection.columns if c not in ("final_loss", "n_seeds", "note")]
    chosen = selection.dropna(subset=["optim.lr"])[keys]
    complete = frame[frame["status"] == "complete"]
    return complete.merge(chosen, on=keys, how="inner")


def split_figures(frame: pd.DataFrame, keep: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """One part of ``frame`` per figure: (file-name suffix, rows).

    Config columns varying in ``frame`` other than ``keep``, ``optim.lr`` and ``sweep.name``
    (e.g. two datasets) give one figure each, with their values as the suffix
    (``fig2_depth_cifar100``); no suffix when there is only one.
    """
    rest = varying_columns(frame, exclude=(*keep, "optim.lr", "sweep.name"))
    rest.sort(key=lambda c: c != "dataset.name")
    parts = list(groups(frame, rest))
    if len(parts) == 1:
        return [("", frame)]
    return [("_" + "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", format_value(v)) for v in key.values()),
             part) for key, part in parts]


# -- statistics -------------------------------------------------------------------------------
def _mean_std(data: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, std (ddof=1, 0 for one value) and count of ``data.value`` per combination of ``keys``."""
    grouped = data.assign(_all=0).groupby(keys or ["_all"], dropna=False, sort=True)["value"]
    stats = grouped.agg(mean="mean", std="std", n="count").reset_index().drop(columns="_all", errors="ignore")
    return stats.assign(std=stats["std"].fillna(0.0))


def aggregate_seeds(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; 0 for a single seed) and count over runs of ``value``
    at every epoch, per combination of the ``by`` columns: columns ``*by, epoch, mean, std, n``.
    NaN and infinite values (epochs without a probe, a diverged loss) are left out."""
    data = frame[[*by, "epoch"]].assign(value=finite(frame[value])).dropna(subset=["value"])
    return _mean_std(data, [*by, "epoch"])


def aggregate_final(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """``aggregate_seeds`` of each run's last finite ``value`` (e.g. min_cos at the last probed
    epoch): columns ``*by, mean, std, n``."""
    data = frame[[*by, "run_dir", "epoch"]].assign(value=finite(frame[value])).dropna(subset=["value"])
    return _mean_std(final_rows(data), list(by))


def scott_bandwidth(samples: np.ndarray) -> float:
    """Scott's rule for 1-D data: h = sigma n^(-1/5), sigma the sample std (ddof=1); NaN when
    fewer than two distinct finite samples leave it undefined."""
    x = samples[np.isfinite(samples)]
    return x.std(ddof=1) * x.size ** (-1 / 5) if x.size > 1 and np.ptp(x) > 0 else np.nan


def gaussian_kde(samples: Sequence[float] | np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density estimate of 1-D ``samples`` evaluated on ``grid``, as
    scipy.stats.gaussian_kde: p(x) = 1 / (n h) sum_i phi((x - x_i) / h), h = ``scott_bandwidth``.
    NaN everywhere when the bandwidth is undefined."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    grid = np.asarray(grid, dtype=float)
    h = scott_bandwidth(x)
    if np.isnan(h):
        return np.full(grid.shape, np.nan)
    density = np.zeros(grid.shape)
    for chunk in np.array_split(x, -(-x.size // 4096)):  # bounded memory: (grid, 4096) at a time
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / h) ** 2).sum(axis=1)
    return density / (x.size * h * np.sqrt(2 * np.pi))


def probe_samples(run_dir: str | Path, epoch: int) -> pd.DataFrame | None:
    """The probe pairs of one run at one epoch (``samples/epoch_NNNN.csv``), or None if absent."""
    return records.read_samples_file(records.samples_path(run_dir, epoch))


def cosine_density(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """KDE of the pairwise cosines at the last probed epoch, pooled over the seeds of every
    combination of ``by``, on one grid within [-1, 1] wide enough for the kernels' tails:
    columns ``*by, epoch, x, mean (density), std, n``."""
    probed = frame[finite(frame.get("min_cos", pd.Series(np.nan, frame.index))).notna()]
    pooled = []
    for key, rows in groups(probed, by):
        epoch = int(rows["epoch"].max())
        found = [probe_samples(d, epoch) for d in rows.loc[rows["epoch"] == epoch, "run_dir"].unique()]
        cos = np.concatenate([s["cos"].to_numpy(float) for s in found if s is not None] or [[]])
        if cos.size:
            pooled.append((key, epoch, cos))
    if not pooled:
        return pd.DataFrame(columns=[*by, "epoch", "x", "mean", "std", "n"])
    low = min(c.min() for _, _, c in pooled)
    high = max(c.max() for _, _, c in pooled)
    pad = 3 * np.nanmax([scott_bandwidth(c) for _, _, c in pooled] + [0.01])  # the kernels' tails
    grid = np.linspace(max(low - pad, -1.0), min(high + pad, 1.0), KDE_POINTS)
    return pd.concat([pd.DataFrame({**key, "epoch": epoch, "x": grid, "mean": gaussian_kde(cos, grid),
                                    "std": np.nan, "n": cos.size}) for key, epoch, cos in pooled],
                     ignore_index=True)


# -- labels -----------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """16.0 -> '16', 0.01 -> '0.01', True -> 'True', NaN -> 'none'."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
        return str(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    if isinstance(value, (int, float, np.number)):
        return f"{float(value):g}"
    return str(value)


def symbol(model: Any, column: str) -> str:
    """The paper's letter for a swept quantity: beta / l for CNN-beta-l, L / w for an MLP, d."""
    cnn = model == "cnn"
    return {"model.depth": "β" if cnn else "L", "model.width": "l" if cnn else "w",
            "dataset.dim": "d"}.get(column, column)


def model_title(row: Mapping[str, Any], vary: Sequence[str] = ()) -> str:
    """'CNN-β-2' (the swept quantities as letters), 'MLP-4x256 (relu)', 'linear model', ..."""
    name = row.get("model.name")
    show = {c: symbol(name, c) if c in vary else format_value(row.get(c))
            for c in ("model.depth", "model.width")}
    if name == "cnn":
        extras = [label for c, label in (("model.batch_norm", "BN"), ("model.skip", "skip"))
                  if c not in vary and row.get(c) in (True,)]
        return "+".join([f"CNN-{show['model.depth']}-{show['model.width']}", *extras])
    if name == "mlp":
        return f"MLP-{show['model.depth']}x{show['model.width']} ({row.get('model.activation')})"
    if name == "linear":
        return f"deep linear {show['model.depth']}x{show['model.width']} ({row.get('model.init')} init)"
    if name == "linreg":
        return "linear model"
    return format_value(name)


def describe(frame: pd.DataFrame, vary: Sequence[str] = ()) -> str:
    """'CIFAR-10, CNN-β-2': the dataset(s) and, when there is one kind of model, the model."""
    datasets = ", ".join(DATASET_TITLES.get(d, format_value(d))
                         for d in frame["dataset.name"].dropna().unique()) if "dataset.name" in frame else ""
    if "model.name" not in frame or frame["model.name"].nunique() != 1:
        return datasets
    return ", ".join(filter(None, [datasets, model_title(frame.iloc[0], vary)]))


def footnote(runs: pd.DataFrame, by: Sequence[str], extra: str = "") -> str:
    """'scale quick; 2 seeds per curve (mean ± std)' plus ``extra``."""
    seeds = [rows["run_dir"].nunique() for _, rows in groups(runs, by)] or [0]
    count = f"{min(seeds)}" if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}"
    count += " seed" if max(seeds) == 1 else " seeds"
    scales = runs["scale.name"].dropna().unique() if "scale.name" in runs else ["?"]
    scale = ", ".join(map(format_value, scales))
    return "; ".join(filter(None, [f"scale {scale}", f"{count} per curve (mean ± std)",
                                   bn_note(runs), extra]))


def bn_note(runs: pd.DataFrame) -> str:
    """'probe: BN batch statistics (train mode)' for the BN convention of the runs' probes (only
    where a run has BatchNorm: the convention changes nothing otherwise)."""
    has_bn = runs.get("model.batch_norm", pd.Series(dtype=object)).eq(True)
    if "probe.bn_mode" not in runs or not has_bn.any():
        return ""
    names = {"train": "batch statistics (train mode)", "eval": "running statistics (eval mode)"}
    modes = runs.loc[has_bn, "probe.bn_mode"].dropna().unique()
    return "probe gradients: BN with " + " and ".join(names.get(m, str(m)) for m in sorted(modes))


def still_running(frame: pd.DataFrame) -> str:
    """'3 runs still running (not used)' or ''."""
    count = frame.loc[frame["status"] == "running", "run_dir"].nunique()
    return f"{count} run{'s' * (count > 1)} still running (not used)" if count else ""


def not_drawn(selection: pd.DataFrame, label: Callable[[dict[str, Any]], str]) -> str:
    """'not drawn: β=40 (diverged or failed at every LR ...)' for the architectures without an LR."""
    skipped = selection[selection["optim.lr"].isna()]
    arch = [c for c in selection.columns if c not in ("optim.lr", "final_loss", "n_seeds", "note")]
    return "; ".join(f"not drawn: {label(row[arch].to_dict())} ({row['note']})"
                     for _, row in skipped.iterrows())


# -- drawing ----------------------------------------------------------------------------------
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


def band(ax: Axes, x: Any, mean: Any, std: Any, color: Any, label: str | None = None) -> None:
    """A mean curve with a ± one standard deviation band."""
    ax.plot(x, mean, color=color, lw=1.5, label=label)
    ax.fill_between(x, np.asarray(mean) - np.asarray(std), np.asarray(mean) + np.asarray(std),
                    color=color, alpha=0.2, lw=0)


def new_figure(panels: int, title: str, note: str) -> tuple[Figure, list[Axes]]:
    """A row of ``panels`` axes with a title and a footnote (constrained layout, no pyplot state)."""
    fig = Figure(figsize=(4.3 * panels, 4.0), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    fig.suptitle(title)
    fig.supxlabel(textwrap.fill(note, width=int(15 * 4.3 * panels)), fontsize=8, color="0.3")
    return fig, axes


def add_legend(fig: Figure, axes: list[Axes], count: int) -> None:
    """One legend right of the panels, the figure widened to hold it (none past ``MAX_LEGEND``
    curves: the footnote says so)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles and count <= MAX_LEGEND:
        ncol = 1 + len(handles) // 20
        fig.legend(handles, labels, loc="outside right upper", ncol=ncol, fontsize=8, frameon=False)
        fig.set_figwidth(fig.get_figwidth() + ncol * (0.4 + 0.065 * max(map(len, labels))))


def save_figure(fig: Figure, data: pd.DataFrame, out: Path, stem: str) -> list[Path]:
    """Write ``stem``.png, .pdf and .csv (the plotted numbers) under ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf", out / f"{stem}.csv"]
    records.atomic_write(paths[0], lambda f: fig.savefig(f, format="png", dpi=150), binary=True)
    records.atomic_write(paths[1], lambda f: fig.savefig(f, format="pdf"), binary=True)
    records.write_csv(paths[2], data)
    return paths


CURVE_PANELS = (("train_loss", "training loss"), ("min_cos", "min pairwise cosine"))
# Fig 1: eta = -min_inner, the quantity Thm 3.1 bounds, on a log axis (the cosine is scale-free)
ETA_PANELS = (("train_loss", "training loss"), ("eta", "|min pairwise inner product| (η)"),
              ("min_cos", "min pairwise cosine"))
LOG_PANELS = ("train_loss", "eta")
# Figs 2 and 3 add the 5% quantile: far less noisy than one minimum, it can order architectures
# the minimum cannot (docs/results.md)
SWEEP_PANELS = (*CURVE_PANELS, ("q05_cos", "5% quantile of pairwise cosines"))


def curve_panels(runs: pd.DataFrame, by: Sequence[str], label: Callable[[dict[str, Any]], str],
                 title: str, note: str, out: Path, stem: str, density: bool = True,
                 notes: pd.DataFrame | None = None,
                 panels: Sequence[tuple[str, str]] = CURVE_PANELS) -> list[Path]:
    """``panels`` (default: training loss and min pairwise cosine; log scale for LOG_PANELS) vs
    epoch, mean ± std over the seeds of every combination of ``by``, and (``density``) the KDE of
    the pairwise cosines at the last probed epoch. ``eta`` is |min_inner| (computed here). The
    CSV holds ``*by, panel, epoch, x, mean, std, n`` (and ``notes`` rows)."""
    if "min_inner" in runs:
        runs = runs.assign(eta=runs["min_inner"].abs())
    by = list(by)
    name_of = lambda key: tuple(None if pd.isna(v) else v for v in key.values())  # NaN != NaN
    keys = [name_of(key) for key, _ in groups(runs, by)]
    colour = dict(zip(keys, palette(keys)))
    fig, axes = new_figure(len(panels) + density, title, note)
    tables = []
    for ax, (metric, name) in zip(axes, panels):
        stats = aggregate_seeds(runs, by, metric) if metric in runs else pd.DataFrame()
        for key, rows in groups(stats, by) if not stats.empty else ():
            band(ax, rows["epoch"], rows["mean"], rows["std"], colour[name_of(key)], label(key))
        if stats.empty:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", transform=ax.transAxes)
        elif metric in LOG_PANELS and (stats["mean"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=name, title=name)
        tables.append(stats.assign(panel=metric, x=stats.get("epoch")))
    if density:
        ax = axes[-1]
        stats = cosine_density(runs, by)
        for key, rows in groups(stats, by) if not stats.empty else ():
            epoch = int(rows["epoch"].iloc[0])
            ax.plot(rows["x"], rows["mean"], color=colour[name_of(key)], lw=1.5)
            ax.set_title(f"cosine density at epoch {epoch}")
        if stats.empty:
            ax.text(0.5, 0.5, "no probe samples", ha="center", transform=ax.transAxes)
            ax.set_title("cosine density")
        ax.set(xlabel="pairwise cosine similarity", ylabel="density")
        tables.append(stats.assign(panel="cos_density"))
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in axes[:len(panels)]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    add_legend(fig, axes, len(keys))
    columns = [*by, "panel", "epoch", "x", "mean", "std", "n"]
    data = pd.concat([t.reindex(columns=columns) for t in tables if not t.empty] + (
        [notes] if notes is not None and not notes.empty else []), ignore_index=True)
    return save_figure(fig, data, out, stem)


# -- the figures ------------------------------------------------------------------------------
def key_label(key: Mapping[str, Any]) -> str:
    """'cifar10, cnn, depth=16, lr=0.01': names bare, others by their last part; NaN left out."""
    parts = [format_value(v) if c.endswith(".name") else f"{c.split('.')[-1]}={format_value(v)}"
             for c, v in key.items() if not pd.isna(v)]
    return ", ".join(parts) or "all runs"


def curves_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The generic figure: curves of every configuration (the config columns that vary, LR
    included) among complete and diverged runs, mean ± std over seeds, and cosine densities."""
    runs = frame[frame["status"].isin(records.FINISHED)]
    if runs.empty:
        return []
    by = varying_columns(runs)
    count = len(list(groups(runs, by)))
    extra = f"legend omitted: {count} configurations, see curves.csv" if count > MAX_LEGEND else ""
    title = f"{describe(runs, by)}: {runs['run_dir'].nunique()} runs, {count} configurations"
    return curve_panels(runs, by, key_label, title, footnote(runs, by, extra), out, "curves")


def selected_notes(selection: pd.DataFrame) -> pd.DataFrame:
    """The architectures drawn nowhere, as CSV rows with their ``note``."""
    return selection[selection["optim.lr"].isna()].drop(columns=["final_loss", "n_seeds"])


def per_figure(frame: pd.DataFrame, keep: Sequence[str], stem: str,
               draw: Callable[[pd.DataFrame, str], list[Path]]) -> list[Path]:
    """``draw(part, stem + suffix)`` for every part of ``split_figures(frame, keep)``."""
    return [path for suffix, part in split_figures(frame, keep) for path in draw(part, stem + suffix)]


def sweep_curves_figure(frame: pd.DataFrame, out: Path, stem: str, hue: str) -> list[Path]:
    """Fig 2 (``hue`` = model.depth) and Fig 3 (model.width): the curve panels of every
    architecture at its selected LR, one colour per ``hue`` value, ordered by value."""
    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        selection = select_lr(part)
        runs = chosen_runs(part, selection)
        if runs.empty:
            return []
        letter = symbol(part["model.name"].iloc[0], hue)
        short = lambda key: f"{letter}={format_value(key[hue])}"
        label = lambda key: f"{short(key)} (lr {format_value(key['optim.lr'])})"
        lrs = ", ".join(map(format_value, sorted(part["optim.lr"].unique())))
        extra = f"initial LR per {letter}: lowest final training loss of {{{lrs}}}"
        note = footnote(runs, [hue], "; ".join(filter(None, [
            extra, not_drawn(selection, short), still_running(part)])))
        return curve_panels(runs, [hue, "optim.lr"], label, describe(part, [hue]), note, out, name,
                            notes=selected_notes(selection), panels=SWEEP_PANELS)
    return per_figure(frame, (hue,), stem, draw)


VARIANTS = {(False, False): "plain", (False, True): "skip", (True, False): "BN", (True, True): "BN+skip"}
FINAL_PANELS = (("train_loss", "final training loss"), ("min_cos", "min pairwise cosine (final epoch)"),
                ("test_acc", "test accuracy"))


def variant(row: Mapping[str, Any]) -> str:
    """plain / skip / BN / BN+skip from model.batch_norm and model.skip."""
    return VARIANTS[(bool(row["model.batch_norm"]), bool(row["model.skip"]))]


def bn_skip_figure(frame: pd.DataFrame, out: Path, stem: str = "fig4_bn_skip") -> list[Path]:
    """Fig 4: final training loss, final min cosine and test accuracy against depth for the four
    variants plain / skip / BN / BN+skip, each architecture at its selected LR, mean ± std."""
    by = ["variant", "model.depth", "optim.lr"]

    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        part = part.assign(variant=part.apply(variant, axis=1))
        selection = select_lr(part)
        runs = chosen_runs(part, selection)
        if runs.empty:
            return []
        names = [v for v in VARIANTS.values() if v in set(runs["variant"])]
        colour = dict(zip(names, palette([(v,) for v in names])))
        skipped = not_drawn(selection, lambda key: f"{variant(key)} β={format_value(key['model.depth'])}")
        note = footnote(runs, by, "; ".join(filter(None, [
            "each point at the initial LR with the lowest final training loss", skipped,
            still_running(part)])))
        fig, axes = new_figure(len(FINAL_PANELS), f"{describe(part, ['model.depth'])}: BN and skips", note)
        tables = []
        for ax, (metric, label) in zip(axes, FINAL_PANELS):
            stats = aggregate_final(runs, by, metric) if metric in runs else pd.DataFrame(columns=by)
            for v in names:
                rows = stats[stats["variant"] == v].sort_values("model.depth")
                ax.errorbar(rows["model.depth"], rows["mean"], yerr=rows["std"], marker="o", ms=4,
                            capsize=3, color=colour[v], label=v)
            ax.set(xlabel="depth β", ylabel=label, title=label)
            ax.grid(alpha=0.3)
            tables.append(stats.assign(metric=metric))
        add_legend(fig, axes, len(names))
        notes = selected_notes(selection)
        notes = notes.assign(variant=[variant(row) for _, row in notes.iterrows()])
        data = pd.concat([*tables, notes], ignore_index=True)
        return save_figure(fig, data.reindex(columns=[*by, "metric", "mean", "std", "n", "note"]), out, name)
    return per_figure(frame, ("model.batch_norm", "model.skip", "model.depth"), stem, draw)


def linreg_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Fig 1: linear regression with d < N (under-) and d > N (over-parameterised): training
    loss, eta = |min pairwise inner product| (both log scale; Thm 3.1 bounds eta, which goes to
    0 when d > N) and the min pairwise cosine (scale-free) over time, mean ± std over seeds."""
    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        selection = select_lr(part)
        runs = chosen_runs(part, selection)
        if runs.empty:
            return []
        n = part["dataset.n_train"].iloc[0]
        short = lambda key: f"d={format_value(key['dataset.dim'])}"
        label = lambda key: (f"{short(key)} ({'over' if key['dataset.dim'] > n else 'under'}-"
                             f"parameterised, lr {format_value(key['optim.lr'])})")
        dims = " vs ".join(map(format_value, sorted(runs["dataset.dim"].unique())))
        title = f"Linear regression, N = {format_value(n)} samples: d = {dims}"
        note = footnote(runs, ["dataset.dim"], "; ".join(filter(None, [
            "confusion over all per-sample gradient pairs", not_drawn(selection, short),
            still_running(part)])))
        return curve_panels(runs, ["dataset.dim", "optim.lr"], label, title, note, out, name,
                            density=False, notes=selected_notes(selection), panels=ETA_PANELS)
    return per_figure(frame, ("dataset.dim",), "fig1_linreg", draw)


FIGURES.update({
    "depth": partial(sweep_curves_figure, stem="fig2_depth", hue="model.depth"),
    "depth_mnist": partial(sweep_curves_figure, stem="fig2_depth_mnist", hue="model.depth"),
    "width": partial(sweep_curves_figure, stem="fig3_width", hue="model.width"),
    "width_mnist": partial(sweep_curves_figure, stem="fig3_width_mnist", hue="model.width"),
    "width_fmnist": partial(sweep_curves_figure, stem="fig3_width_fmnist", hue="model.width"),
    "depth_fmnist": partial(sweep_curves_figure, stem="fig2_depth_fmnist", hue="model.depth"),
    "bn_skip": bn_skip_figure,
    "bn_skip_fmnist": partial(bn_skip_figure, stem="fig4_bn_skip_fmnist"),
    "linreg": linreg_figure,
})


# -- everything -------------------------------------------------------------------------------
FALLBACK_SWEEPS = {"model.depth": "depth", "model.width": "width", "dataset.dim": "linreg"}


def infer_sweep(frame: pd.DataFrame) -> str | None:
    """The paper sweep that runs outside a named sweep amount to, from what varies among them
    (besides LR and seed): model.depth -> depth (depth_mnist for MLPs), model.width -> width,
    dataset.dim -> linreg, BN / skip (and depth) -> bn_skip; None otherwise."""
    vary = set(varying_columns(frame, exclude=("optim.lr",)))
    if len(vary) == 1 and (name := FALLBACK_SWEEPS.get(vary.pop())):
        mlp = name != "linreg" and (frame["model.name"] == "mlp").all()
        return f"{name}_mnist" if mlp else name
    bn_skip = {"model.batch_norm", "model.skip"}
    return "bn_skip" if vary & bn_skip and vary <= bn_skip | {"model.depth"} else None


def sweeps(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The records of every sweep present, by ``sweep.name``; runs outside a sweep ('single')
    count as the sweep ``infer_sweep`` recognises in them."""
    names = frame.get("sweep.name", pd.Series(None, frame.index, dtype=object)).fillna("single")
    found = {name: part for name, part in frame.groupby(names)}
    single = found.pop("single", None)
    if single is not None and (name := infer_sweep(single)):
        found[name] = pd.concat([found[name], single]) if name in found else single
    return found


def plot_all(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure the records support, under ``out``: the generic curves, then each registered
    figure (``FIGURES``) whose sweep is present. Returns the PNG, PDF and CSV paths written; a
    figure that fails is reported with a FigureWarning and the others are still drawn."""
    from . import figures_extra  # noqa: F401  (registers the theory, rank and curvature figures)

    out = Path(out)
    if frame.empty:
        return []
    jobs = [("curves", curves_figure, frame)]
    jobs += [(name, FIGURES[name], runs) for name, runs in sorted(sweeps(frame).items()) if name in FIGURES]
    written = []
    for name, draw, runs in jobs:
        try:
            written += draw(runs, out)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not stop the others
            warnings.warn(f"figure {name} failed: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=2)
    return written

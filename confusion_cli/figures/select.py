"""Which rows and runs a figure draws, their statistics, and the words under it.

Everything reads the DataFrame of ``records.load``: one row per run and probe event, the config
flattened into dotted columns (``model.depth``). Rows at a whole ``epoch`` are the per-epoch
evaluations; a run with a finer probe schedule also has mid-epoch rows (epoch 0.25 = a quarter
into epoch 1) holding only ``step``, ``lr``, ``batch_loss`` and probe columns.

LR selection: for every architecture (the config without ``optim.lr`` and ``seed``) the initial
LR drawn is the one with the lowest final training loss, averaged over seeds. An LR at which any
seed diverged or failed never wins; an architecture with no such LR is drawn nowhere and named
in the figure's footnote and CSV. ``select_runs`` is that step as every sweep figure takes it.

Estimators: a sweep figure is drawn once per confusion estimator and named by it
(``split_figures``, ``Estimator``): the run's probe (``probe.mode`` and its sizes) and, where
recorded, the fixed subset of the extra probe ``example_pairs`` (columns ``ex_*``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..records.layout import UNFINISHED
from ..spec import is_semantic

# Config columns that name a run's place in a sweep, not what it computes.
SEED_COLUMNS = ("seed", "scale.seeds")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST",
                  "fashion_mnist": "Fashion-MNIST", "digits": "digits (8x8)",
                  "regression": "synthetic regression", "sphere": "unit-sphere data"}
Label = Callable[[dict[str, Any]], str]


# -- columns and rows -------------------------------------------------------------------------
def config_columns(frame: pd.DataFrame) -> list[str]:
    """The flattened config columns that say what a run computes: the semantic fields of the run
    spec (``spec.is_semantic``, the fields the config hash is taken over), but the seed. So runs
    that differ in ``tf32`` or ``compile`` are different arms, never seeds of one; the scale, the
    grids of a sweep file (``sweep.depths.paper``), where and how verbosely a run happened
    (``device``, ``threads``) and the metric columns are not config columns."""
    return [c for c in frame.columns if isinstance(c, str) and c not in SEED_COLUMNS and is_semantic(c)]


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


def key_of(key: Mapping[str, Any]) -> tuple:
    """A group key as a hashable tuple that finds itself again (NaN != NaN, so NaN -> None)."""
    return tuple(None if pd.isna(v) else v for v in key.values())


def finite(values: pd.Series) -> pd.Series:
    """``values`` as floats with infinities turned into NaN (a diverged loss counts as missing)."""
    return pd.to_numeric(values, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def values(frame: pd.DataFrame, column: str) -> pd.Series:
    """``finite`` of ``frame[column]``, all NaN when the column is absent."""
    return finite(frame[column]) if column in frame else pd.Series(np.nan, frame.index)


def whole_epoch(frame: pd.DataFrame) -> pd.Series:
    """True for the per-epoch rows (a whole ``epoch``), False for mid-epoch probe events."""
    epoch = pd.to_numeric(frame["epoch"], errors="coerce")
    return epoch == np.floor(epoch)


def epoch_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch rows, epochs as integers: every figure drawn against the epoch reads these,
    so that the mid-epoch rows of a finer probe schedule change none of them."""
    rows = frame[whole_epoch(frame)]
    return rows if rows["epoch"].dtype.kind in "iu" else rows.astype({"epoch": "int64"})


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation (per-epoch row) of every run."""
    return epoch_rows(frame).sort_values("epoch", kind="stable").groupby("run_dir", sort=False).tail(1)


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "complete"]


# -- LR selection -----------------------------------------------------------------------------
def select_lr(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture with its selected initial LR.

    Architecture = the config columns varying in ``frame`` other than ``optim.lr`` (and the seed).
    Columns: those, ``optim.lr`` (the chosen initial LR, NaN if none qualifies), ``final_loss``
    (its mean over seeds of the last epoch's train_loss), ``n_seeds`` and ``note`` (empty, or why
    no LR qualifies). An LR qualifies when every seed's run is complete with a finite final loss;
    running and interrupted runs (``records.load``'s status of a run whose process is gone) are
    ignored.
    """
    finished = frame[~frame["status"].isin(UNFINISHED)]
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
    return complete(frame).merge(chosen, on=keys, how="inner")


def selected_notes(selection: pd.DataFrame) -> pd.DataFrame:
    """The architectures drawn nowhere, as CSV rows with their ``note``."""
    return selection[selection["optim.lr"].isna()].drop(columns=["final_loss", "n_seeds"])


def not_drawn(selection: pd.DataFrame, label: Label) -> str:
    """'not drawn: β=40 (diverged or failed at every LR ...)' for the architectures without an LR."""
    skipped = selection[selection["optim.lr"].isna()]
    arch = [c for c in selection.columns if c not in ("optim.lr", "final_loss", "n_seeds", "note")]
    name = lambda row: label(row[arch].to_dict()) if arch else "the architecture"  # one: nothing varies
    return "; ".join(f"not drawn: {name(row)} ({row['note']})" for _, row in skipped.iterrows())


def still_running(frame: pd.DataFrame) -> str:
    """'3 runs still running (not used)', '3 runs still running and 1 run interrupted (not
    used)', or ''."""
    parts = []
    for status, words in (("running", "still running"), ("interrupted", "interrupted")):
        count = frame.loc[frame["status"] == status, "run_dir"].nunique()
        if count:
            parts.append(f"{count} run{'s' * (count > 1)} {words}")
    return f"{' and '.join(parts)} (not used)" if parts else ""


class Selected(NamedTuple):
    runs: pd.DataFrame   # the complete runs at each architecture's selected LR
    note: str            # the footnote
    notes: pd.DataFrame  # CSV rows naming the architectures drawn nowhere, and why


def select_runs(frame: pd.DataFrame, by: Sequence[str], label: Label, rule: str,
                spread: str = "mean ± std") -> Selected | None:
    """The step every sweep figure starts with: select each architecture's LR (``select_lr``),
    keep its complete runs, and write the footnote (``footnote`` over ``by`` with ``spread``: the
    scale, seeds, ``rule``, the LR grid searched and the selected LRs at its edge, the
    architectures drawn nowhere as ``label`` names them, the runs still running). None when no
    run is left to draw."""
    selection = select_lr(frame)
    runs = chosen_runs(frame, selection)
    if runs.empty:
        return None
    chosen = ([ONE_LR_EACH] if one_lr_each(frame, selection)
              else [rule, lr_grid(frame), at_grid_edge(frame, selection, label)])
    extra = "; ".join(filter(None, [*chosen, not_drawn(selection, label), still_running(frame)]))
    return Selected(runs, footnote(runs, by, extra, spread), selected_notes(selection))


ONE_LR_EACH = ("each architecture at the one initial LR it was run at (fixed before its runs), "
               "the number beside it")


def one_lr_each(frame: pd.DataFrame, selection: pd.DataFrame) -> bool:
    """Whether every architecture ran at one initial LR only, while the LRs differ between them (a
    sweep of arms, each at its declared LR: nothing was selected, so no rule or grid is named)."""
    arch = [c for c in selection.columns if c not in ("optim.lr", "final_loss", "n_seeds", "note")]
    lrs = pd.to_numeric(frame["optim.lr"], errors="coerce")
    if not arch or lrs.nunique() < 2:
        return False
    return bool((frame.assign(lr=lrs).groupby(arch, dropna=False)["lr"].nunique() == 1).all())


def lr_grid(frame: pd.DataFrame) -> str:
    """'LR grid searched: {0.001, 0.003, 0.01}': the initial LRs of the runs in ``frame``."""
    lrs = sorted(pd.to_numeric(frame["optim.lr"], errors="coerce").dropna().unique())
    return f"LR grid searched: {{{', '.join(map(format_value, lrs))}}}" if lrs else ""


def at_grid_edge(frame: pd.DataFrame, selection: pd.DataFrame, label: Label) -> str:
    """'selected LR at the edge of its grid: L=64 (0.001)' for the architectures whose selected LR
    is the smallest or largest they were run at (the grid may not hold their best LR)."""
    arch = [c for c in selection.columns if c not in ("optim.lr", "final_loss", "n_seeds", "note")]
    edge = []
    for _, row in selection.dropna(subset=["optim.lr"]).iterrows():
        runs = frame
        for column in arch:
            runs = runs[runs[column].isna()] if pd.isna(row[column]) else runs[runs[column] == row[column]]
        lrs = runs["optim.lr"].dropna().unique()
        if len(lrs) > 1 and row["optim.lr"] in (lrs.min(), lrs.max()):
            name = label(row[arch].to_dict()) if arch else "the architecture"  # one: nothing varies
            edge.append(f"{name} ({format_value(row['optim.lr'])})")
    if edge and len(edge) == selection["optim.lr"].notna().sum() > 1:
        return "selected LR at the edge of its grid for every architecture"
    return f"selected LR at the edge of its grid: {', '.join(edge)}" if edge else ""


class Estimator(NamedTuple):
    """How a figure's confusion statistics were estimated: ``slug`` names its files
    (``minibatch-100x128``), ``text`` its title ("100 pairs of mini-batches of 128"); its columns
    are the metric names with ``prefix`` ('' for the run's probe, 'ex_' for the fixed subset of
    the extra probe ``example_pairs``); ``samples``: per-pair samples on disk (a cosine density)."""
    slug: str
    text: str
    prefix: str = ""
    samples: bool = True

    def column(self, metric: str) -> str:
        """The column of ``metric`` for this estimator: min_cos -> ex_min_cos for the fixed subset;
        columns that are no confusion statistic (train_loss, test_acc) are left as they are."""
        return self.prefix + metric if metric in STATISTICS else metric

    def panels(self, panels: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(self.column(metric), name) for metric, name in panels]


STATISTICS = ("min_cos", "q05_cos", "mean_cos", "q50_cos", "min_inner", "eta", "frac_neg_cos")
# The probe settings that make one estimator differ from another (probe.group, chunk_size, ...
# change how it is computed, not what).
ESTIMATOR_COLUMNS = ("probe.mode", "probe.pairs", "probe.batches", "probe.examples",
                     "probe.batch_size", "probe.bn_mode")
FIXED_EXAMPLES = "extra_probes.example_pairs.examples"


def _count(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else format_value(value)


def probe_estimator(row: Mapping[str, Any]) -> Estimator:
    """The estimator of a run's probe (``probe.*`` of one row): minibatch-100x128 = "100 pairs of
    mini-batches of 128", all-pairs-20x128, per-example-256 = "all pairs of 256 per-example
    gradients"; "-bn-eval" / "-bn-train" when BatchNorm's mode is not the mode's own default."""
    mode = row.get("probe.mode")
    pairs, batches, examples, size = (_count(row, f"probe.{c}")
                                      for c in ("pairs", "batches", "examples", "batch_size"))
    of = f" of {size}" if size else ""
    by = f"x{size}" if size else ""
    if mode == "minibatch_pairs":
        slug, text = f"minibatch-{pairs}{by}", f"{pairs} pairs of mini-batches{of}"
    elif mode == "all_pairs":
        slug, text = f"all-pairs-{batches}{by}", f"all pairs of {batches} mini-batches{of}"
    elif mode == "per_example":
        slug, text = f"per-example-{examples}", f"all pairs of {examples} per-example gradients"
    else:
        name = format_value(mode) if isinstance(mode, str) else "probe"
        slug, text = re.sub(r"[^A-Za-z0-9.]+", "-", name), f"probe {name}"
    bn = row.get("probe.bn_mode")
    if isinstance(bn, str) and bn != ("eval" if mode == "per_example" else "train"):
        slug, text = f"{slug}-bn-{bn}", f"{text}, BN in {bn} mode"
    return Estimator(slug, text)


def fixed_estimator(row: Mapping[str, Any]) -> Estimator:
    """The estimator of the extra probe ``example_pairs`` (columns ex_*): all pairs of the
    per-example gradients of one fixed subset of training examples."""
    examples = _count(row, FIXED_EXAMPLES)
    return Estimator(f"fixed-subset-{examples}" if examples else "fixed-subset",
                     f"all pairs of {examples + ' ' if examples else ''}per-example gradients of a "
                     "fixed training subset (the same examples at every event)", "ex_", False)


def split_figures(frame: pd.DataFrame, keep: Sequence[str]) -> list[tuple[str, pd.DataFrame, Estimator]]:
    """One part of ``frame`` per figure: (file-name suffix, rows, estimator).

    Config columns varying in ``frame`` other than ``keep``, ``optim.lr``, ``sweep.name`` and the
    probe's estimator (e.g. two datasets) give one figure each, with their values in the suffix
    (``fig2_depth_cifar100``); then every estimator gets a figure of its own, named by it
    (``_minibatch-100x128``, ``_per-example-256``): the run's probe when it recorded anything, and
    the fixed subset of the extra probe ``example_pairs`` where its ``ex_`` columns are recorded.
    """
    rest = varying_columns(frame, exclude=(*keep, "optim.lr", "sweep.name", *ESTIMATOR_COLUMNS))
    rest.sort(key=lambda c: c != "dataset.name")
    parts = list(groups(frame, rest))
    found = []
    for key, part in parts:
        base = "" if len(parts) == 1 else "_" + "_".join(
            re.sub(r"[^A-Za-z0-9.]+", "-", format_value(v)) for v in key.values())
        probes = list(groups(part, [c for c in ESTIMATOR_COLUMNS if c in part]))
        for _, rows in probes:
            main = probe_estimator(rows.iloc[0])
            fixed = values(rows, "ex_min_cos").notna().any()
            if values(rows, "min_cos").notna().any() or not fixed:
                found.append((f"{base}_{main.slug}", rows, main))
            if fixed:
                extra = fixed_estimator(rows.iloc[0])
                slug = extra.slug if len(probes) == 1 else f"{main.slug}_{extra.slug}"
                # per-example gradients exist only with BN's running statistics: the footnote's
                # BN convention is eval mode for this estimator, whatever the run's probe used
                found.append((f"{base}_{slug}", rows.assign(**{"probe.bn_mode": "eval"}), extra))
    return found


def per_figure(frame: pd.DataFrame, keep: Sequence[str], stem: str,
               draw: Callable[[pd.DataFrame, str, Estimator], list]) -> list:
    """``draw(part, stem + suffix, estimator)`` for every part of ``split_figures(frame, keep)``."""
    return [path for suffix, part, estimator in split_figures(frame, keep)
            for path in draw(part, stem + suffix, estimator)]


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


def aggregate_quantiles(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Median and interquartile range over runs of each run's last finite ``value``, per
    combination of ``by``: columns ``*by, median, q25, q75, n`` (quantiles as numpy's default)."""
    data = frame[[*by, "run_dir", "epoch"]].assign(value=finite(frame[value])).dropna(subset=["value"])
    grouped = final_rows(data).assign(_all=0).groupby(list(by) or ["_all"], dropna=False, sort=True)["value"]
    stats = grouped.agg(median="median", q25=lambda v: v.quantile(0.25), q75=lambda v: v.quantile(0.75),
                        n="count")
    return stats.reset_index().drop(columns="_all", errors="ignore")


def aggregate_final(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """``aggregate_seeds`` of each run's last finite ``value`` (e.g. min_cos at the last probed
    epoch): columns ``*by, mean, std, n``."""
    data = frame[[*by, "run_dir", "epoch"]].assign(value=finite(frame[value])).dropna(subset=["value"])
    return _mean_std(final_rows(data), list(by))


# -- labels and footnotes ---------------------------------------------------------------------
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
    """The letter of a swept quantity: beta / l for CNN-beta-l, L / w for an MLP, d."""
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


def key_label(key: Mapping[str, Any]) -> str:
    """'cifar10, cnn, depth=16, lr=0.01': names bare, others by their last part; NaN left out."""
    parts = [format_value(v) if c.endswith(".name") else f"{c.split('.')[-1]}={format_value(v)}"
             for c, v in key.items() if not pd.isna(v)]
    return ", ".join(parts) or "all runs"


SETTING_LABELS: dict[str, Callable[[Any], str]] = {
    "optim.full_batch": lambda v: "GD" if v else "SGD",
    "optim.batch_size": lambda v: f"batch {format_value(v)}",
    "optim.lr": lambda v: f"lr {format_value(v)}",
    "optim.weight_decay": lambda v: f"wd {format_value(v)}",
    "model.width": lambda v: f"width {format_value(v)}",
    "model.depth": lambda v: f"depth {format_value(v)}",
    "model.init": lambda v: f"{v} init",
    "phase": str,
}


def setting_label(key: dict[str, Any]) -> str:
    """'GD, wd 0.005', 'batch 16, lr 0.1', 'width 64', 'orthogonal init' from a group key."""
    return ", ".join(SETTING_LABELS[c](v) for c, v in key.items())


SYMBOLS = {
    "L": "L = number of hidden layers of the MLP",
    "w": "w = units per hidden layer of the MLP",
    "β": "β = depth of CNN-β-l (a WideResNet of β = 6n + 4 layers)",
    "l": "l = width factor of CNN-β-l (16l, 32l and 64l channels)",
    "d": "d = input dimension",
    "N": "N = training examples",
    "η": "η = max(0, −min pairwise inner product of gradients), the paper's gradient confusion",
    "q05": "q05 = 5% quantile of the pairwise cosines",
}


def symbols_note(names: Sequence[str]) -> str:
    """'symbols: L = number of hidden layers of the MLP; η = ...' for the symbols a figure uses."""
    known = [SYMBOLS[n] for n in dict.fromkeys(names) if n in SYMBOLS]
    return "symbols: " + "; ".join(known) if known else ""


def footnote(runs: pd.DataFrame, by: Sequence[str] | None, extra: str = "",
             spread: str = "mean ± std") -> str:
    """'scale quick; 2 seeds per curve (mean ± std)' (``by``: a curve's columns; None: one line
    per run; ``spread``: what the bands show) plus the BN convention of the probes and ``extra``."""
    if by is None:
        curves = f"one line per run ({runs['run_dir'].nunique()} runs)"
    else:
        seeds = [rows["run_dir"].nunique() for _, rows in groups(runs, by)] or [0]
        count = f"{min(seeds)}" if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}"
        curves = f"{count} seed{'s' * (max(seeds) != 1)} per curve ({spread})"
    scales = runs["scale.name"].dropna().unique() if "scale.name" in runs else ["?"]
    scale = ", ".join(map(format_value, scales))
    return "; ".join(filter(None, [f"scale {scale}", curves, bn_note(runs), extra]))


def bn_note(runs: pd.DataFrame) -> str:
    """'probe gradients: BN with batch statistics (train mode)' for the BN convention of the runs'
    probes (only where a run has BatchNorm: the convention changes nothing otherwise)."""
    has_bn = runs.get("model.batch_norm", pd.Series(dtype=object)).eq(True)
    if "probe.bn_mode" not in runs or not has_bn.any():
        return ""
    names = {"train": "batch statistics (train mode)", "eval": "running statistics (eval mode)"}
    modes = runs.loc[has_bn, "probe.bn_mode"].dropna().unique()
    if not len(modes):
        return ""
    return "probe gradients: BN with " + " and ".join(names.get(m, str(m)) for m in sorted(modes))

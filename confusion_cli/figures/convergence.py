"""The convergence claim (Thm 3.1): with a constant LR, SGD settles at a loss floor that grows
with LR x eta, eta = max(0, -min pairwise gradient inner product) (``probes.stats.eta``).

``convergence_linreg`` / ``convergence_fmnist``: one point per complete run, the floor (mean
training loss over the run's last ``LAST`` epochs) against LR x eta (eta averaged over its last
``LAST`` probe events), coloured by LR, with the OLS fit on log-log values (slope = the exponent
of a power law, 1 = proportional) and its 95% interval (Student t, n - 2 degrees of freedom); a
second panel, the floor against LR alone; and for linear regression a third, the floor minus the
exact least-squares minimum of the run's data.
The CSV holds the per-run points (``kind`` = point) and the fits (``kind`` = fit).

``run_points`` and ``fit_slope`` are the computation, usable without drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .. import data
from ..probes.stats import eta
from .registry import register
from .select import bn_note, complete, describe, format_value, still_running, values
from .style import finish, new_figure, palette

LAST = 5            # epochs (floor) and probe events (eta) averaged per run, as the claims' mean_last
FLAT_FRACTION = 0.2  # the drift check: mean loss of the last 20% of epochs vs the 20% before


class Fit(NamedTuple):
    """OLS of y on x (of log10 y on log10 x when ``log``): slope with its 95% interval."""

    slope: float
    ci_low: float
    ci_high: float
    intercept: float
    stderr: float
    r2: float
    n: int
    log: bool


def fit_slope(x: Sequence[float], y: Sequence[float], log: bool = True, level: float = 0.95) -> Fit:
    """OLS slope of ``y`` on ``x`` (log10 of both when ``log``) with its ``level`` interval from
    Student's t with n - 2 degrees of freedom. Pairs with a NaN (or, when ``log``, a value <= 0) are
    left out; fewer than 3 pairs, or x without spread, give NaN slope and interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) & (y > 0) if log else True)
    x, y = x[keep], y[keep]
    if log:
        x, y = np.log10(x), np.log10(y)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return Fit(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, n, log)
    result = scipy_stats.linregress(x, y)
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 2) * result.stderr
    return Fit(result.slope, result.slope - half, result.slope + half, result.intercept,
               result.stderr, result.rvalue ** 2, n, log)


def fit_text(fit: Fit, short: bool = False) -> str:
    """'log-log slope 1.02 [0.95, 1.09] (95%, n = 15)', or over two lines when ``short``."""
    if np.isnan(fit.slope):
        return f"no fit (n = {fit.n})"
    what = "log-log slope" if fit.log else "OLS slope"
    sep = "\n" if short else " "
    return f"{what} {fit.slope:.3g}{sep}[{fit.ci_low:.3g}, {fit.ci_high:.3g}] (95%, n = {fit.n})"


# -- per-run points ---------------------------------------------------------------------------
def least_squares(row: pd.Series | dict[str, Any]) -> tuple[float, float]:
    """(minimum, eta there) of the training loss 0.5 * mean (<w, x_i> - y_i)^2 over w (no bias) on
    the run's regression data, regenerated from its ``dataset.*`` config: the exact least-squares
    minimum and the confusion of the per-sample gradients r_i x_i at the least-squares solution
    (all pairs); NaN for another dataset."""
    if row.get("dataset.name") != "regression":
        return np.nan, np.nan
    cfg = {key.split(".", 1)[1]: (None if _missing(v) else v) for key, v in row.items()
           if isinstance(key, str) and key.startswith("dataset.") and key.count(".") == 1}
    for key in ("n_train", "n_test", "dim", "data_seed", "subset_seed", "train_size", "test_size"):
        if cfg.get(key) is not None:
            cfg[key] = int(cfg[key])
    train = data.load(cfg, data_dir=".")
    x, y = train.x_train.double().numpy(), train.y_train.double().numpy()
    residual = x @ np.linalg.lstsq(x, y, rcond=None)[0] - y
    gram = np.outer(residual, residual) * (x @ x.T)
    return float(0.5 * np.mean(residual ** 2)), float(eta(gram[np.triu_indices(len(x), 1)].min()))


def least_squares_minimum(row: pd.Series | dict[str, Any]) -> float:
    """The exact least-squares minimum of the run's training loss (``least_squares``)."""
    return least_squares(row)[0]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def run_points(frame: pd.DataFrame, last: int = LAST, eta_column: str = "min_inner") -> pd.DataFrame:
    """One row per run of ``frame`` (per-epoch rows), as the claims' ``mean_last`` reads it:
    ``floor`` = mean ``train_loss`` over the run's last ``last`` epochs, ``eta`` = mean of
    max(0, -``eta_column``) over its last ``last`` probe events (rows where it is recorded),
    ``lr_eta`` = optim.lr x eta; ``loss_from`` / ``eta_from`` (the first epoch of each window),
    ``drift`` = mean loss over the 20% of epochs before the last 20% divided by that of the last
    20%, minus 1 (about 0 at a floor; > 0 while the loss still falls), and ``ex_eta`` (the same
    mean from the fixed-subset probe's ``ex_min_inner``, where recorded). Runs without a probe
    event are left out."""
    rows = []
    for run_dir, run in frame.sort_values("epoch", kind="stable").groupby("run_dir", sort=True):
        trained = run[(run["epoch"] >= 1) & values(run, "train_loss").notna()]
        probed = run[values(run, eta_column).notna()].tail(last)
        if probed.empty or trained.empty:
            continue
        first = run.iloc[0]
        lr = float(first["optim.lr"])
        eta_mean = float(eta(values(probed, eta_column)).mean())
        loss = values(trained, "train_loss")
        k = max(1, int(round(FLAT_FRACTION * len(loss))))
        recent, before = loss.iloc[-k:], loss.iloc[-2 * k:-k]
        ex = values(probed, "ex_min_inner")
        rows.append({"run_dir": run_dir, "seed": first.get("seed"), "optim.lr": lr,
                     "floor": float(loss.tail(last).mean()), "eta": eta_mean, "lr_eta": lr * eta_mean,
                     "loss_from": trained["epoch"].tail(last).min(), "eta_from": probed["epoch"].min(),
                     "epochs": trained["epoch"].max(),
                     "drift": float(before.mean() / recent.mean() - 1) if len(before) else np.nan,
                     "ex_eta": float(eta(ex).mean()) if ex.notna().any() else np.nan})
    return pd.DataFrame(rows)


def add_least_squares(points: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``points`` with ``ls_min`` and ``ls_eta`` (``least_squares`` of each run's data, regression
    only; computed once per distinct dataset) and ``floor_minus_ls``."""
    first = frame.groupby("run_dir", sort=False).head(1).set_index("run_dir")
    columns = [c for c in first.columns if c.startswith("dataset.") and c.count(".") == 1]
    cache: dict[tuple, tuple[float, float]] = {}
    found = []
    for run_dir in points["run_dir"]:
        row = first.loc[run_dir, columns]
        key = tuple(None if _missing(v) else v for v in row)
        if key not in cache:
            cache[key] = least_squares(row.to_dict())
        found.append(cache[key])
    minima, etas = (np.array(v, dtype=float) for v in zip(*found)) if found else ([], [])
    return points.assign(ls_min=minima, ls_eta=etas, floor_minus_ls=points["floor"] - minima)


# -- the figure -------------------------------------------------------------------------------
def estimator(frame: pd.DataFrame) -> str:
    """How eta was measured, for the title: 'per-example gradients, all pairs of the N = 100
    training examples' or '... all pairs of 128 training examples drawn at each probe'."""
    first = frame.iloc[0]
    mode = first.get("probe.mode")
    if mode != "per_example":
        return f"probe {format_value(mode)}"
    examples = first.get("probe.examples")
    n = first.get("dataset.train_size")
    n = first.get("dataset.n_train") if _missing(n) else n
    if not _missing(n) and not _missing(examples) and int(examples) >= int(n):
        return f"per-example gradients, all pairs of the N = {int(n)} training examples"
    return (f"per-example gradients, all pairs of {format_value(examples)} training examples "
            "drawn at each probe")


PANELS = (("lr_eta", "LR × η"), ("optim.lr", "LR"))


def convergence_figure(frame: pd.DataFrame, out: Path, stem: str = "convergence",
                       last: int = LAST) -> list[Path]:
    """The floor against LR x eta and against LR, one point per complete run coloured by LR, with
    the log-log OLS fit and its 95% interval in each panel's title (linear fit if a value is <= 0);
    linear regression adds the floor minus the exact least-squares minimum against LR x eta."""
    runs = complete(frame)
    points = run_points(runs, last)
    if points.empty:
        return []
    regression = (runs["dataset.name"] == "regression").all()
    panels = list(PANELS)
    if regression:
        points = add_least_squares(points, runs)
        panels.append(("lr_eta", "LR × η", "floor_minus_ls", "floor − least-squares minimum"))
    lrs = sorted(points["optim.lr"].unique())
    colour = dict(zip(lrs, palette([(lr,) for lr in lrs])))
    seeds = points.groupby("optim.lr")["run_dir"].nunique()
    count = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    note = "; ".join(filter(None, [
        "scale " + ", ".join(map(format_value, runs["scale.name"].dropna().unique())),
        f"{count} seeds per LR, one point per run", bn_note(runs),
        f"floor = mean training loss (each epoch's mean SGD mini-batch loss) over each run's last "
        f"{last} epochs, η = mean over its last {last} probe events",
        f"drift (mean loss of the 20% of epochs before the last 20% / last 20% − 1): "
        f"max {points['drift'].abs().max():.3g}",
        "OLS on log10 values, 95% interval from Student's t", still_running(frame)]))
    title = (f"{describe(runs)}: loss floor of constant-LR SGD vs LR × η\n"
             f"η = max(0, −min pairwise inner product), {estimator(runs)}")
    fig, axes = new_figure(len(panels), title, note)
    fits = []
    for ax, panel in zip(axes, panels):
        x_column, x_name = panel[:2]
        y_column, y_name = panel[2:] if len(panel) > 2 else ("floor", "loss floor")
        x, y = points[x_column].to_numpy(float), points[y_column].to_numpy(float)
        log = bool((x > 0).all() and (y > 0).all())
        fit = fit_slope(x, y, log=log)
        for lr in lrs:
            mine = points["optim.lr"] == lr
            ax.scatter(x[mine], y[mine], color=colour[lr], s=28, zorder=3, label=f"lr {format_value(lr)}")
        if not np.isnan(fit.slope):
            grid = np.geomspace(x.min(), x.max(), 50) if log else np.linspace(x.min(), x.max(), 50)
            line = (10 ** (fit.intercept + fit.slope * np.log10(grid)) if log
                    else fit.intercept + fit.slope * grid)
            ax.plot(grid, line, color="0.3", lw=1.2, ls="--", label="OLS fit" if ax is axes[0] else None)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set(xlabel=x_name, ylabel=y_name, title=f"{y_name} vs {x_name}")
        left = not fit.slope < 0  # the empty upper corner: left for a rising cloud, right for a falling one
        ax.text(0.03 if left else 0.97, 0.97, fit_text(fit, short=True), transform=ax.transAxes, va="top",
                ha="left" if left else "right", fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.85, "pad": 2})
        fits.append({"kind": "fit", "x": x_column, "y": y_column, **fit._asdict()})
    table = pd.concat([points.assign(kind="point"), pd.DataFrame(fits)], ignore_index=True)
    return finish(fig, axes, len(lrs) + 1, [table], out, stem)


for _sweep in ("convergence_linreg", "convergence_fmnist"):
    register(_sweep)(partial(convergence_figure, stem=_sweep))

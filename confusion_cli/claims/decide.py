"""Deciding claims from records: the runs of each arm, a statistic's value per run at a point,
the interval of the effect, and the verdict.

Runs: an arm's runs are those of the claim's sweep that satisfy ``where`` and the arm's
equalities. Running runs are not used; at the arm's LR (``lr: select``: the figures' rule,
``figures.select.select_lr``, over the arm's seeds) only complete runs count, and the
diverged or failed ones are counted in the note. An arm whose runs differ in some other config
column is not decided (the note names the columns to fix).

Points of a contrast: at epoch E the whole-epoch row E; ``final`` each run's last row with the
statistic; at step S the row at step S; at loss level L the first probe event (epoch >= 1 or
step > 0) whose ``train_loss`` <= L and whose statistic is not NaN; a run without a value at a
point is left out and counted ("k of n").

Verdict: ``observed`` when the 95% interval excludes 0 on the expected side, ``not observed``
when it excludes 0 on the other side, ``inconclusive`` when it spans 0 or there is none (fewer
than 2 runs in an arm, 3 for a slope); the note says why, and what was left out.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfusionError
from ..figures.select import chosen_runs, finite, format_value, select_lr, varying_columns, whole_epoch
from ..probes.stats import eta
from ..records.layout import UNFINISHED
from . import intervals
from .intervals import Interval
from .schema import Claim, Contrast, Point, Slope, Term

COLUMNS = ("claim", "paper", "comparison", "estimator", "effect", "ci_low", "ci_high", "g", "n",
           "probe_se", "verdict", "note", "kind", "statistic", "point", "arms", "test", "expect",
           "r", "sweep")
OBSERVED, NOT_OBSERVED, INCONCLUSIVE = "observed", "not observed", "inconclusive"
NO_INTERVAL = Interval(math.nan, math.nan, math.nan)


class ClaimWarning(UserWarning):
    """A claim that gets no row: no records of its sweep."""


@dataclass
class Arm:
    """The runs an arm uses (every row of them) and what was left out, in words."""

    name: str
    rows: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    lr: float | None = None  # the selected initial LR, with lr: select


def decide(frame: pd.DataFrame, claims: Iterable[Claim]) -> pd.DataFrame:
    """One row per comparison and point of every claim (columns ``COLUMNS``), from the records
    ``frame`` of ``records.load``. A claim whose sweep has no records gets no row; all such
    claims share one ClaimWarning, one line grouped by sweep. A config column of a claim missing
    from its sweep's records is a ConfusionError naming the claim file and key."""
    rows: list[dict[str, Any]] = []
    missing: dict[str, list[str]] = {}  # sweep -> its claims without records: one warning for all
    for claim in claims:
        records = (frame[frame["sweep.name"] == claim.sweep] if "sweep.name" in frame
                   else frame.iloc[:0])
        if records.empty:
            missing.setdefault(claim.sweep, []).append(claim.name)
            continue
        check_columns(claim, records)
        arms = {name: arm_runs(records, claim, name) for name in claim.arms}
        for comparison in claim.comparisons:
            if isinstance(comparison, Contrast):
                rows += contrast_rows(claim, comparison, arms, records.columns)
            else:
                rows.append(slope_row(claim, comparison, arms, records.columns))
    if missing:
        warnings.warn("no records for " + "; ".join(
            f"sweep {sweep} (claim{'s' if len(names) > 1 else ''} {', '.join(names)})"
            for sweep, names in missing.items()), ClaimWarning, stacklevel=2)
    return pd.DataFrame(rows, columns=list(COLUMNS))


# -- columns ---------------------------------------------------------------------------------
def check_columns(claim: Claim, records: pd.DataFrame) -> None:
    """Every config column the claim names is in its sweep's records (else a typo, or a key
    newer than the records): a ConfusionError naming the file, the key and the nearest column."""
    config = [c for c in records.columns if "." in c or c == "seed"]

    def need(key: str, column: str) -> None:
        if column not in records:
            near = difflib.get_close_matches(column, config, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfusionError(f"{claim.source}: {key}: no column {column} in the records of "
                                 f"sweep {claim.sweep}{hint}")

    for column in claim.where:
        need(f"where.{column}", column)
    for arm, equalities in claim.arms.items():
        for column in equalities:
            need(f"arms.{arm}.{column}", column)
    for comparison in claim.comparisons:
        if isinstance(comparison, Slope):
            for axis, terms in (("y", comparison.y), ("x", comparison.x)):
                for term in terms:
                    if term.column is not None:
                        need(f"{comparison.key}.{axis}", term.column)
                        if "." not in term.column and term.column != "seed":
                            raise ConfusionError(
                                f"{claim.source}: {comparison.key}.{axis}: {term.column} is a metrics "
                                f"column; give it as {{statistic: {term.column}, aggregate: ...}}")


def eta_source(statistic: str) -> str | None:
    """The column a derived eta is computed from: ``eta`` <- ``min_inner``, ``ex_eta`` <-
    ``ex_min_inner`` (any ``PREFIX_eta`` <- ``PREFIX_min_inner``); None for other names."""
    if statistic == "eta" or statistic.endswith("_eta"):
        return statistic[: -len("eta")] + "min_inner"
    return None


def missing_statistic(columns: Sequence[str], statistic: str) -> str | None:
    """Why ``statistic`` cannot be read from records with ``columns`` (None: it can)."""
    source = eta_source(statistic)
    if statistic in columns or (source is not None and source in columns):
        return None
    if source is not None:
        return f"no {statistic} in the records (no column {source})"
    near = difflib.get_close_matches(statistic, [c for c in columns if "." not in c], n=1)
    return f"no column {statistic} in the records" + (f" (did you mean {near[0]}?)" if near else "")


def statistic_values(rows: pd.DataFrame, statistic: str) -> pd.Series:
    """The values of ``statistic`` in ``rows`` (a metrics column, or eta = max(0, -min inner
    product) from its ``min_inner`` column, ``probes.stats.eta``); infinities become NaN."""
    if statistic in rows:
        return finite(rows[statistic])
    return finite(eta(finite(rows[eta_source(statistic)])))


def events(rows: pd.DataFrame, statistic: str) -> pd.DataFrame:
    """The rows of ``rows`` with a value of ``statistic``, in the order they happened:
    columns run_dir, seed, epoch, step, train_loss, value."""
    def column(name: str) -> pd.Series:
        return rows[name] if name in rows else pd.Series(np.nan, rows.index)

    data = pd.DataFrame({"run_dir": rows["run_dir"], "seed": column("seed"),
                         "epoch": pd.to_numeric(rows["epoch"]), "step": pd.to_numeric(column("step")),
                         "train_loss": finite(column("train_loss")),
                         "value": statistic_values(rows, statistic)}, index=rows.index)
    return data.dropna(subset=["value"]).sort_values(["epoch", "step"], kind="stable")


# -- runs ------------------------------------------------------------------------------------
def matches(frame: pd.DataFrame, equalities: dict[str, Any]) -> pd.Series:
    """Which rows satisfy every config equality (numbers compared to 1e-9, None matches NaN)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in equalities.items():
        values = frame[column]
        if value is None:
            mask &= values.isna()
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
            mask &= np.isclose(values.astype(float), float(value), rtol=1e-9, atol=0.0)
        else:
            mask &= values == value
    return mask


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def arm_runs(records: pd.DataFrame, claim: Claim, name: str) -> Arm:
    """The rows of the runs arm ``name`` of ``claim`` uses, with notes on those left out."""
    equalities = claim.equalities(name)
    rows = records[matches(records, equalities)]
    notes = [f"{name}: {plural(count, 'run')} {words}, not used"
             for status, words in (("running", "still running"), ("interrupted", "interrupted"))
             if (count := rows.loc[rows["status"] == status, "run_dir"].nunique())]
    finished = rows[~rows["status"].isin(UNFINISHED)]
    if finished.empty:
        wanted = ", ".join(f"{k}={format_value(v)}" for k, v in equalities.items()) or "any config"
        return Arm(name, finished, [*notes, f"{name}: no finished run with {wanted}"])
    mixed = varying_columns(finished, exclude=("optim.lr",))
    if mixed:
        return Arm(name, finished.iloc[:0], [*notes, f"{name}: its runs differ in {', '.join(mixed)}; "
                                                      "fix them in where or the arm"])
    if claim.lr == "select":
        selection = select_lr(finished)
        lr = selection["optim.lr"].iloc[0]
        if pd.isna(lr):
            return Arm(name, finished.iloc[:0], [*notes, f"{name}: {selection['note'].iloc[0]}"])
        return Arm(name, chosen_runs(finished, selection), notes, float(lr))
    left = finished[finished["status"] != "complete"].groupby("run_dir")["status"].first()
    if len(left):
        counts = ", ".join(f"{count} {status}" for status, count in left.value_counts().sort_index().items())
        notes.append(f"{name}: {counts} of {finished['run_dir'].nunique()} runs excluded")
    return Arm(name, finished[finished["status"] == "complete"], notes)


def lr_note(arms: Sequence[Arm]) -> list[str]:
    chosen = [f"{arm.name} {format_value(arm.lr)}" for arm in arms if arm.lr is not None]
    return [f"lr selected: {', '.join(chosen)}"] if chosen else []


# -- contrasts -------------------------------------------------------------------------------
def at_point(events: pd.DataFrame, point: Point) -> pd.DataFrame:
    """Each run's value at ``point`` (columns run_dir, seed, value); runs without one are absent."""
    if point.kind == "epoch" and point.value == "final":
        picked = events.groupby("run_dir", sort=False).tail(1)
    elif point.kind == "epoch":
        picked = events[whole_epoch(events) & (events["epoch"] == point.value)]
    elif point.kind == "step":
        picked = events[events["step"] == point.value]
    else:
        probe_event = (events["epoch"] >= 1) | (events["step"] > 0)
        picked = events[probe_event & (events["train_loss"] <= point.value)]
    return picked.groupby("run_dir", sort=True).head(1)[["run_dir", "seed", "value"]]


def pairing_problem(a: pd.DataFrame, b: pd.DataFrame, names: Sequence[str]) -> str | None:
    """Why the runs of two arms cannot be paired by seed (None: each seed once in each arm)."""
    if a["seed"].isna().any() or b["seed"].isna().any():
        return "runs without a seed"
    for name, values in zip(names, (a, b)):
        if values["seed"].duplicated().any():
            return f"a seed repeats in {name}"
    missing = [f"seed {', '.join(map(format_value, sorted(set(mine) - set(other))))} missing in {name}"
               for name, mine, other in ((names[1], a["seed"], b["seed"]), (names[0], b["seed"], a["seed"]))
               if set(mine) - set(other)]
    return f"seeds differ ({'; '.join(missing)})" if missing else None


def contrast(a: pd.DataFrame, b: pd.DataFrame, test: str,
             names: Sequence[str]) -> tuple[Interval, str, list[str]]:
    """(the interval of mean(a) - mean(b) by ``test``, the test used, notes). Paired falls back
    to Welch when the seeds do not pair; fewer than 2 runs in an arm give no interval."""
    small = [f"{name} {len(v)}" for name, v in zip(names, (a, b)) if len(v) < 2]
    if small:
        effect = a["value"].mean() - b["value"].mean() if len(a) and len(b) else math.nan
        return Interval(effect, math.nan, math.nan), test, [f"n < 2 in an arm ({', '.join(small)})"]
    notes = []
    if test == "paired":
        why = pairing_problem(a, b, names)
        if why is None:
            pairs = a.merge(b, on="seed", suffixes=("_a", "_b"))
            return intervals.paired(pairs["value_a"], pairs["value_b"]), test, notes
        notes.append(f"{why}: welch instead of paired")
        test = "welch"
    if test == "welch":
        return intervals.welch(a["value"], b["value"]), test, notes
    interval = intervals.bootstrap(a["value"], b["value"])
    if math.isnan(interval.low) or math.isnan(interval.high):
        notes.append("the BCa interval is undefined (no spread in the resamples)")
    return interval, test, notes


def verdict(interval: Interval, expect: str) -> tuple[str, str]:
    """(verdict, why it is inconclusive or '') of a 95% interval for an expected sign; without
    an interval (NaN) the caller's notes say why."""
    low, high = interval.low, interval.high
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE, ""
    above, below = low > 0, high < 0
    if (above and expect == "greater") or (below and expect == "less"):
        return OBSERVED, ""
    if above or below:
        return NOT_OBSERVED, ""
    return INCONCLUSIVE, "95% CI spans 0"


def contrast_rows(claim: Claim, comparison: Contrast, arms: dict[str, Arm],
                  columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per point of a contrast."""
    first, second = (arms[name] for name in comparison.arms)
    names = comparison.arms
    base = [*first.notes, *second.notes, *lr_note([first, second])]
    missing = missing_statistic(columns, comparison.statistic)
    rows = []
    for point in comparison.points:
        label = f"{comparison.statistic} @ {point.label()}: {names[0]} - {names[1]}"
        common = dict(claim=claim, comparison=comparison, label=label, point=point.label(),
                      statistic=comparison.statistic, arms=",".join(names))
        if missing:
            rows.append(make_row(**common, n="", test=comparison.test, interval=NO_INTERVAL,
                                 notes=[*base, missing]))
            continue
        values = [at_point(events(arm.rows, comparison.statistic), point) for arm in (first, second)]
        totals = [arm.rows["run_dir"].nunique() for arm in (first, second)]
        counts = [f"{name} {len(v)} of {total}" for name, v, total in zip(names, values, totals)
                  if point.kind == "loss" or len(v) < total]
        reach = ("reached" if point.kind == "loss" else f"with {comparison.statistic} at {point.label()}")
        notes = [*base, *([f"{reach}: {', '.join(counts)}"] if counts else [])]
        interval, test, more = contrast(*values, comparison.test, names)
        rows.append(make_row(**common, n=", ".join(f"{name} {len(v)}" for name, v in zip(names, values)),
                             test=test, interval=interval, notes=[*notes, *more],
                             g=intervals.hedges_g(values[0]["value"], values[1]["value"])))
    return rows


def make_row(claim: Claim, comparison: Contrast | Slope, label: str, point: str, statistic: str,
             arms: str, n: str, test: str, interval: Interval, notes: list[str],
             g: float = math.nan, r: float = math.nan) -> dict[str, Any]:
    decision, why = verdict(interval, comparison.expect)
    notes = [*notes, why] if why else notes
    return {"claim": claim.name, "paper": claim.paper, "comparison": label,
            "estimator": comparison.estimator, "effect": interval.effect, "ci_low": interval.low,
            "ci_high": interval.high, "g": g, "n": n,
            "probe_se": math.nan if comparison.probe_se is None else comparison.probe_se,
            "verdict": decision, "note": "; ".join(notes), "kind": type(comparison).__name__.lower(),
            "statistic": statistic, "point": point, "arms": arms, "test": test,
            "expect": comparison.expect, "r": r, "sweep": claim.sweep}


# -- slopes ----------------------------------------------------------------------------------
def term_values(rows: pd.DataFrame, term: Term) -> pd.Series:
    """One value per run (indexed by run_dir; NaN where the run has none) of a term."""
    runs = pd.Index(rows["run_dir"].unique(), name="run_dir")
    if term.column is not None:
        return pd.to_numeric(rows.groupby("run_dir")[term.column].first(), errors="coerce").reindex(runs)
    data = events(rows, term.statistic)
    if term.aggregate == "final":
        values = data.groupby("run_dir")["value"].last()
    elif term.aggregate == "at_epoch":
        values = data[whole_epoch(data) & (data["epoch"] == term.epoch)].groupby("run_dir")["value"].first()
    else:  # mean_last: a run with fewer than `last` events has no value
        tail = data.groupby("run_dir").tail(term.last).groupby("run_dir")["value"]
        values = tail.mean().where(tail.count() >= term.last)
    return values.reindex(runs)


def quantity_label(terms: Sequence[Term], log: bool) -> str:
    label = " × ".join(term.label() for term in terms)
    return f"log({label})" if log else label


def slope_row(claim: Claim, comparison: Slope, arms: dict[str, Arm],
              columns: Sequence[str]) -> dict[str, Any]:
    """The row of a slope: OLS of y on x over the runs of its arms, one point per run."""
    chosen = [arms[name] for name in comparison.arms]
    y_label, x_label = (quantity_label(t, comparison.log) for t in (comparison.y, comparison.x))
    common = dict(claim=claim, comparison=comparison, label=f"slope of {y_label} on {x_label}; arms "
                  f"{', '.join(comparison.arms)}", point="", statistic=y_label,
                  arms=",".join(comparison.arms), test="ols")
    notes = [note for arm in chosen for note in arm.notes] + lr_note(chosen)
    missing = [why for term in (*comparison.y, *comparison.x) if term.statistic is not None
               and (why := missing_statistic(columns, term.statistic))]
    if missing:
        return make_row(**common, n="", interval=NO_INTERVAL, notes=[*notes, *dict.fromkeys(missing)])
    seen: set[str] = set()
    parts = []
    for arm in chosen:  # a run in two arms counts once
        parts.append(arm.rows[~arm.rows["run_dir"].isin(seen)])
        seen |= set(arm.rows["run_dir"])
    rows = pd.concat(parts)
    if rows.empty:
        return make_row(**common, n="0 runs", interval=NO_INTERVAL, notes=[*notes, "n < 3 runs"])
    points = pd.DataFrame({axis: np.prod([term_values(rows, t) for t in terms], axis=0)
                           for axis, terms in (("x", comparison.x), ("y", comparison.y))},
                          index=pd.Index(rows["run_dir"].unique()))
    total = len(points)
    points = points.dropna()
    if len(points) < total:
        notes.append(f"{len(points)} of {total} runs have x and y")
    if comparison.log:
        positive = points[(points["x"] > 0) & (points["y"] > 0)]
        if len(positive) < len(points):
            notes.append(f"log: {plural(len(points) - len(positive), 'run')} with x or y <= 0 left out")
        points = np.log(positive)
    n = f"{len(points)} runs"
    if len(points) < 3:
        return make_row(**common, n=n, interval=NO_INTERVAL, notes=[*notes, "n < 3 runs"])
    if points["x"].nunique() < 2:
        return make_row(**common, n=n, interval=NO_INTERVAL, notes=[*notes, "x does not vary"])
    interval, r = intervals.ols_slope(points["x"], points["y"])
    return make_row(**common, n=n, interval=interval, notes=notes, r=r)

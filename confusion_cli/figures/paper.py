"""The paper's figures, each architecture at its selected initial LR, mean ± std over seeds.

- ``fig1_linreg``: linear regression with d < N (under-) and d > N (over-parameterised):
  training loss, eta = max(0, -min pairwise inner product) (goes to 0 when d > N) and min cosine vs epoch;
- ``fig2_depth*`` / ``fig3_width*``: training loss, min pairwise cosine, its 5% quantile and the
  cosine density at the last probed epoch, one curve per depth / width;
- ``fig4_bn_skip*``: final training loss, final min cosine and test accuracy against depth for
  plain / skip / BN / BN+skip nets.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from .registry import register
from .select import aggregate_final, describe, format_value, per_figure, select_runs, symbol
from .style import CURVE_PANELS, curve_panels, finish, new_figure, palette

# eta = max(0, -min_inner) on a log axis: it vanishes when over-parameterised (the cosine is scale-free)
ETA_PANELS = (("train_loss", "training loss"), ("eta", "η = max(0, −min pairwise inner product)"),
              ("min_cos", "min pairwise cosine"))
# the 5% quantile: far less noisy than one minimum, it can order architectures the minimum cannot
SWEEP_PANELS = (*CURVE_PANELS, ("q05_cos", "5% quantile of pairwise cosines"))


def sweep_curves_figure(frame: pd.DataFrame, out: Path, stem: str, hue: str) -> list[Path]:
    """Fig 2 (``hue`` = model.depth) and Fig 3 (model.width): the curve panels of every
    architecture at its selected LR, one colour per ``hue`` value, ordered by value."""
    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        letter = symbol(part["model.name"].iloc[0], hue)
        short = lambda key: f"{letter}={format_value(key[hue])}"
        lrs = ", ".join(map(format_value, sorted(part["optim.lr"].unique())))
        chosen = select_runs(part, [hue], short,
                             f"initial LR per {letter}: lowest final training loss of {{{lrs}}}")
        if chosen is None:
            return []
        label = lambda key: f"{short(key)} (lr {format_value(key['optim.lr'])})"
        return curve_panels(chosen.runs, [hue, "optim.lr"], label, describe(part, [hue]), chosen.note,
                            out, name, notes=chosen.notes, panels=SWEEP_PANELS)
    return per_figure(frame, (hue,), stem, draw)


for _sweep in ("depth", "depth_mnist", "depth_fmnist"):
    register(_sweep)(partial(sweep_curves_figure, stem=f"fig2_{_sweep}", hue="model.depth"))
for _sweep in ("width", "width_mnist", "width_fmnist"):
    register(_sweep)(partial(sweep_curves_figure, stem=f"fig3_{_sweep}", hue="model.width"))


VARIANTS = {(False, False): "plain", (False, True): "skip", (True, False): "BN", (True, True): "BN+skip"}
FINAL_PANELS = (("train_loss", "final training loss"), ("min_cos", "min pairwise cosine (final epoch)"),
                ("test_acc", "test accuracy"))


def variant(row: dict[str, Any]) -> str:
    """plain / skip / BN / BN+skip from model.batch_norm and model.skip."""
    return VARIANTS[(bool(row["model.batch_norm"]), bool(row["model.skip"]))]


def bn_skip_figure(frame: pd.DataFrame, out: Path, stem: str = "fig4_bn_skip") -> list[Path]:
    """Fig 4: final training loss, final min cosine and test accuracy against depth for the four
    variants plain / skip / BN / BN+skip, each architecture at its selected LR, mean ± std."""
    by = ["variant", "model.depth", "optim.lr"]

    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        part = part.assign(variant=part.apply(variant, axis=1))
        chosen = select_runs(part, by, lambda key: f"{variant(key)} β={format_value(key['model.depth'])}",
                             "each point at the initial LR with the lowest final training loss")
        if chosen is None:
            return []
        runs = chosen.runs
        names = [v for v in VARIANTS.values() if v in set(runs["variant"])]
        colour = dict(zip(names, palette([(v,) for v in names])))
        fig, axes = new_figure(len(FINAL_PANELS), f"{describe(part, ['model.depth'])}: BN and skips",
                               chosen.note)
        tables = []
        for ax, (metric, label) in zip(axes, FINAL_PANELS):
            stats = aggregate_final(runs, by, metric) if metric in runs else pd.DataFrame(columns=by)
            for v in names:
                rows = stats[stats["variant"] == v].sort_values("model.depth")
                ax.errorbar(rows["model.depth"], rows["mean"], yerr=rows["std"], marker="o", ms=4,
                            capsize=3, color=colour[v], label=v)
            ax.set(xlabel="depth β", ylabel=label, title=label)
            tables.append(stats.assign(metric=metric))
        notes = chosen.notes.assign(variant=[variant(row) for _, row in chosen.notes.iterrows()])
        data = pd.concat([*tables, notes], ignore_index=True)
        columns = [*by, "metric", "mean", "std", "n", "note"]
        return finish(fig, axes, len(names), [data.reindex(columns=columns)], out, name)
    return per_figure(frame, ("model.batch_norm", "model.skip", "model.depth"), stem, draw)


for _sweep in ("bn_skip", "bn_skip_fmnist"):
    register(_sweep)(partial(bn_skip_figure, stem=f"fig4_{_sweep}"))


@register("linreg")
def linreg_figure(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Fig 1: linear regression with d < N (under-) and d > N (over-parameterised): training
    loss, eta = max(0, -min pairwise inner product) (both log scale; eta goes to 0 when d > N) and the
    min pairwise cosine (scale-free) over time, mean ± std over seeds."""
    def draw(part: pd.DataFrame, name: str) -> list[Path]:
        n = part["dataset.n_train"].iloc[0]
        short = lambda key: f"d={format_value(key['dataset.dim'])}"
        chosen = select_runs(part, ["dataset.dim"], short, "confusion over all per-sample gradient pairs")
        if chosen is None:
            return []
        label = lambda key: (f"{short(key)} ({'over' if key['dataset.dim'] > n else 'under'}-"
                             f"parameterised, lr {format_value(key['optim.lr'])})")
        dims = " vs ".join(map(format_value, sorted(chosen.runs["dataset.dim"].unique())))
        title = f"Linear regression, N = {format_value(n)} samples: d = {dims}"
        return curve_panels(chosen.runs, ["dataset.dim", "optim.lr"], label, title, chosen.note, out, name,
                            density=False, notes=chosen.notes, panels=ETA_PANELS)
    return per_figure(frame, ("dataset.dim",), "fig1_linreg", draw)

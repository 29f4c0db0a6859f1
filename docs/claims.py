"""The numbers of docs/results.md, from the records on disk: `python docs/claims.py RUNS_DIR`.

For every sweep found under RUNS_DIR (and, within it, every probe estimator), one markdown table
with one row per architecture at its selected initial LR (the figures' rule: lowest mean final
training loss over seeds, diverged LRs never win): the LR and whether it sits at the edge of the
grid, and the final-epoch training loss, test accuracy, min pairwise cosine, its 5% quantile
and eta = |min inner product|, each the mean ± std over seeds.
"""

from __future__ import annotations

import sys
import warnings

import pandas as pd

from confusion_cli import figures, records

ARCH = {"depth_fmnist": ["model.depth"], "width_fmnist": ["model.width"],
        "bn_skip_fmnist": ["model.batch_norm", "model.skip", "model.depth"], "linreg": ["dataset.dim"]}
METRICS = ("train_loss", "test_acc", "min_cos", "q05_cos", "eta")


def fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    digits = ".2e" if 0 < abs(mean) < 1e-2 else ".3f"
    return f"{mean:{digits}} ± {std:{digits}}"


def table(part: pd.DataFrame, by: list[str]) -> str:
    selection = figures.select_lr(part)
    runs = figures.chosen_runs(part, selection)
    last = figures.final_rows(runs).assign(eta=lambda f: f["min_inner"].abs())
    grid = sorted(part["optim.lr"].unique())
    lines = [f"| {' | '.join(by)} | LR (grid {grid[0]:g}-{grid[-1]:g}) | seeds | "
             + " | ".join(f"final {m}" for m in METRICS) + " |",
             "|" + "---|" * (len(by) + 2 + len(METRICS))]
    for key, rows in last.groupby(by):
        lr = rows["optim.lr"].iloc[0]
        edge = " (edge)" if len(grid) > 1 and lr in (grid[0], grid[-1]) else ""
        cells = [fmt(rows[m].mean(), rows[m].std(ddof=1) if len(rows) > 1 else 0.0) for m in METRICS]
        key = key if isinstance(key, tuple) else (key,)
        lines.append(f"| {' | '.join(map(str, key))} | {lr:g}{edge} | {len(rows)} | "
                     + " | ".join(cells) + " |")
    for _, row in selection[selection["optim.lr"].isna()].iterrows():
        lines.append(f"| {' | '.join(str(row[c]) for c in by)} | none | 0 | {row['note']} |")
    return "\n".join(lines)


def equal_loss_table(part: pd.DataFrame, by: list[str], level: float) -> str:
    """Each architecture (at its selected LR) at the first epoch >= 1 where a run's training loss
    is <= ``level``: the epoch, min cosine and 5% quantile, mean ± std over the runs that get
    there (comparing nets at equal loss instead of equal epochs)."""
    runs = figures.chosen_runs(part, figures.select_lr(part))
    reached = runs[(runs["epoch"] >= 1) & (runs["train_loss"] <= level)]
    first = reached.sort_values("epoch").groupby("run_dir").head(1)
    lines = [f"| {' | '.join(by)} | runs reaching loss <= {level:g} | epoch | min_cos | q05_cos |",
             "|" + "---|" * (len(by) + 4)]
    for key, rows in runs.groupby(by):
        got = first[first["run_dir"].isin(rows["run_dir"])]
        key = key if isinstance(key, tuple) else (key,)
        cells = [fmt(got[m].mean(), got[m].std(ddof=1) if len(got) > 1 else 0.0) if len(got) else "-"
                 for m in ("epoch", "min_cos", "q05_cos")]
        lines.append(f"| {' | '.join(map(str, key))} | {len(got)} of {rows['run_dir'].nunique()} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


EQUAL_LOSS = {"depth_fmnist": 0.75, "width_fmnist": 0.45}


def main(root: str) -> None:
    warnings.simplefilter("ignore")
    frame = records.load(root)
    for sweep, part in sorted(figures.sweeps(frame).items()):
        by = ARCH.get(sweep, figures.varying_columns(part, exclude=("optim.lr",)))
        probes = part.get("probe.mode", pd.Series("?", part.index)).fillna("?")
        for mode, rows in part.groupby(probes):
            print(f"\n### {sweep}, probe {mode}: {rows['run_dir'].nunique()} runs\n")
            print(table(rows, by))
            if sweep in EQUAL_LOSS:
                print(f"\nAt equal training loss:\n\n{equal_loss_table(rows, by, EQUAL_LOSS[sweep])}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs")

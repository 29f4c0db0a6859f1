"""The probe's own noise: how much a confusion estimate moves when only the probe's draw changes.

At fixed weights, each estimator is repeated on fresh random draws and its spread is measured:

- ``minibatch_pairs`` (the paper's protocol): ONE pool of ``pool_pairs`` independent pairs of
  mini-batches is drawn and split into disjoint chunks of P pairs. Pairs being independent and
  identically distributed, each chunk is an independent replicate of the P-pair estimator:
  ``pool_pairs // P`` replicates at each P (the chunks at different P share pairs, so the
  estimates at different P are correlated, not independent of each other).
- ``all_pairs``: K mini-batches and their K (K - 1) / 2 pairs, ``repeats`` times with fresh batches.
- ``per_example``: all pairs of the exact per-example gradients of B examples (BatchNorm in eval
  mode, the only mode where they exist), ``repeats`` times with fresh example subsets: the
  between-subset noise that a fixed-subset estimator (``extra_probes=[example_pairs]``) carries
  once, for all its events.

Per replicate: min_cos, q05_cos (linear interpolation, as ``stats.quantile``), mean_cos and
eta = max(0, -min inner product) (``stats.eta``). The summary gives, per (estimator, size,
statistic), the mean over replicates and ``se``, the standard deviation over replicates
(ddof=1): the standard error of ONE estimate at that size, the noise a single probe event
carries. ``se_err`` = se / sqrt(2 (n - 1)) is the (normal-theory) uncertainty of se itself.
For the mini-batch estimator a least-squares fit log se = log a + b log P over the measured P
gives the pairs a target standard error needs, P = (target / a)^(1 / b), when b < 0.
``one_pair`` rows: the mean and standard deviation of a single pair's cosine (and inner product)
over the pool, for reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .backend import exact_matmul
from .errors import ConfusionError, is_count
from .probes import (
    ProbeContext,
    all_pairs_stats,
    gram_pair_statistics,
    minibatch_pair_stats,
    per_example_gram,
)
from .probes.naive import LossFn
from .probes.stats import eta

STATISTICS = ("min_cos", "q05_cos", "mean_cos", "eta")
COSINE_STATISTICS = ("min_cos", "q05_cos", "mean_cos")
PAIR_COUNTS = (10, 25, 50, 100, 200, 400)
FLAT_EXPONENT = -0.1  # a fitted b above this (P 10 -> 400 shrinks se by less than a third): flat
POOL_CHUNK = 50  # pairs of mini-batches drawn and differentiated at a time while filling the pool
COLUMNS = ("estimator", "size", "pairs", "statistic", "mean", "se", "se_err", "replicates",
           "fit_a", "fit_b", "target_se", "pairs_for_target", "note")
Progress = Callable[[str], None]


# -- statistics of one replicate -----------------------------------------------------------------
def replicate_statistics(cos: np.ndarray, inner: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of each row of (n, P) ``cos`` / ``inner``: n replicates of P pairs each."""
    cos, inner = np.atleast_2d(cos), np.atleast_2d(inner)
    return {"min_cos": cos.min(axis=1), "q05_cos": np.quantile(cos, 0.05, axis=1),
            "mean_cos": cos.mean(axis=1), "eta": eta(inner.min(axis=1))}


def chunk_replicates(cos: np.ndarray, inner: np.ndarray, pairs: int) -> dict[str, np.ndarray]:
    """Statistics of the ``len(cos) // pairs`` disjoint consecutive chunks of ``pairs`` pairs of
    a pool of independent pairs (the rest of the pool is left out): each chunk is one independent
    replicate of the ``pairs``-pair estimator."""
    n = len(cos) // pairs
    if n < 1:
        raise ValueError(f"a pool of {len(cos)} pairs holds no chunk of {pairs}")
    return replicate_statistics(np.asarray(cos)[:n * pairs].reshape(n, pairs),
                                np.asarray(inner)[:n * pairs].reshape(n, pairs))


def fit_power_law(sizes: Sequence[float], ses: Sequence[float],
                  replicates: Sequence[int] | None = None) -> tuple[float, float]:
    """(a, b) of the least-squares fit log se = log a + b log size; (nan, nan) with fewer than two
    usable points (a zero or non-finite se has no logarithm and is left out). With
    ``replicates`` (the n behind each se) each point is weighted by 1 / var(log se) ~ 2 (n - 1),
    so that an se from 5 chunks counts for less than one from 200."""
    size, se = np.asarray(sizes, float), np.asarray(ses, float)
    weight = np.ones_like(se) if replicates is None else 2 * (np.asarray(replicates, float) - 1)
    keep = np.isfinite(se) & (se > 0) & (size > 0) & (weight > 0)
    if len(np.unique(size[keep])) < 2:
        return math.nan, math.nan
    b, log_a = np.polyfit(np.log(size[keep]), np.log(se[keep]), 1, w=np.sqrt(weight[keep]))
    return float(math.exp(log_a)), float(b)


def pairs_needed(a: float, b: float, target_se: float) -> float:
    """The P with a P^b = target_se (rounded up), or nan when se does not fall with P (b >= 0)."""
    if not (math.isfinite(a) and math.isfinite(b)) or b >= 0:
        return math.nan
    return float(math.ceil((target_se / a) ** (1 / b)))


# -- drawing ---------------------------------------------------------------------------------------
def pair_pool(model: nn.Module, loss_fn: LossFn, ctx: ProbeContext, pool_pairs: int, batch_size: int,
              bn_mode: str, group: int = 1, progress: Progress | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(cos, inner) of ``pool_pairs`` independent pairs of mini-batches of ``batch_size``, each
    batch drawn as the minibatch_pairs probe draws it; POOL_CHUNK pairs held at a time."""
    cos, inner = [], []
    start = time.perf_counter()
    for done in range(0, pool_pairs, POOL_CHUNK):
        count = min(POOL_CHUNK, pool_pairs - done)
        pairs = [(ctx.batch(batch_size), ctx.batch(batch_size)) for _ in range(count)]
        stats = minibatch_pair_stats(model, loss_fn, pairs, group, bn_mode)
        cos.append(stats["cos"].numpy())
        inner.append(stats["inner"].numpy())
        if (done + count) % (10 * POOL_CHUNK) == 0 or done + count == pool_pairs:
            _say(progress, f"minibatch pool: {done + count}/{pool_pairs} pairs "
                           f"({time.perf_counter() - start:.0f}s)")
    return np.concatenate(cos), np.concatenate(inner)


def _say(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)


def _rows(estimator: str, size: int, pairs: int, stats: dict[str, np.ndarray]) -> list[dict]:
    return [{"estimator": estimator, "size": size, "pairs": pairs, "replicate": i,
             "statistic": name, "value": float(v)}
            for name in STATISTICS for i, v in enumerate(stats[name])]


def check_settings(*, pair_counts: Sequence[int], pool_pairs: int, batch_size: int,
                   batches_list: Sequence[int], examples_list: Sequence[int], repeats: int,
                   train_size: int | None = None) -> None:
    """A one-line ConfusionError for settings that cannot give two replicates of every estimator."""
    if not is_count(repeats, minimum=2):
        raise ConfusionError(f"--repeats must be an integer >= 2 (a spread needs two replicates), "
                             f"got {repeats!r}")
    for name, values, least in (("--pair-counts", pair_counts, 1), ("--batches", batches_list, 2),
                                ("--examples", examples_list, 2)):
        if not all(is_count(v, minimum=least) for v in values):
            raise ConfusionError(f"{name} must be integers >= {least} (one pair at least), got "
                                 f"{list(values)!r}")
    if not is_count(batch_size):
        raise ConfusionError(f"the mini-batch size must be a positive integer, got {batch_size!r}")
    if pair_counts and not (is_count(pool_pairs) and pool_pairs >= 2 * max(pair_counts)):
        raise ConfusionError(f"--pool-pairs={pool_pairs} gives fewer than two chunks of "
                             f"{max(pair_counts)} pairs: use at least {2 * max(pair_counts)}, or "
                             "smaller --pair-counts")
    if train_size is not None:
        for name, size in (("probe.batch_size", batch_size), ("--examples", max(examples_list, default=0))):
            if size > train_size:
                raise ConfusionError(f"{name}={size} is larger than the training set "
                                     f"({train_size} examples): lower it")


# -- measuring -------------------------------------------------------------------------------------
def measure_replicates(model: nn.Module, loss_fn: LossFn, x_train: torch.Tensor, y_train: torch.Tensor,
                       *, pair_counts: Sequence[int] = PAIR_COUNTS, pool_pairs: int = 2000,
                       batch_size: int = 128, batches_list: Sequence[int] = (20,),
                       examples_list: Sequence[int] = (128,), repeats: int = 10,
                       bn_mode: str = "train", generator: torch.Generator, group: int = 1,
                       progress: Progress | None = None) -> pd.DataFrame:
    """Every replicate of every estimator at the current weights, one row per (estimator, size,
    replicate, statistic) with its ``value``; ``one_pair`` rows hold each pool pair's cos and
    inner. Parameters, buffers and module modes are left as they were."""
    check_settings(pair_counts=pair_counts, pool_pairs=pool_pairs, batch_size=batch_size,
                   batches_list=batches_list, examples_list=examples_list, repeats=repeats,
                   train_size=x_train.shape[0])
    ctx = ProbeContext(model, loss_fn, x_train, y_train, generator)
    rows: list[dict] = []
    with exact_matmul(x_train.device):
        if pair_counts:
            cos, inner = pair_pool(model, loss_fn, ctx, pool_pairs, batch_size, bn_mode, group, progress)
            rows += [{"estimator": "one_pair", "size": 1, "pairs": 1, "replicate": i,
                      "statistic": name, "value": float(v)}
                     for name, values in (("cos", cos), ("inner", inner)) for i, v in enumerate(values)]
            for count in sorted(set(pair_counts)):
                rows += _rows("minibatch_pairs", count, count, chunk_replicates(cos, inner, count))
        for k in batches_list:
            start = time.perf_counter()
            for r in range(repeats):
                batches = [ctx.batch(batch_size) for _ in range(k)]
                stats = all_pairs_stats(model, loss_fn, batches, group=group, mode=bn_mode)
                rows += [{**row, "replicate": r} for row in _rows(
                    "all_pairs", k, k * (k - 1) // 2,
                    replicate_statistics(stats["cos"].numpy(), stats["inner"].numpy()))]
            _say(progress, f"all_pairs K={k}: {repeats} replicates ({time.perf_counter() - start:.0f}s)")
        for b in examples_list:
            start = time.perf_counter()
            for r in range(repeats):
                x, y = ctx.batch(b)
                stats = gram_pair_statistics(per_example_gram(model, loss_fn, x, y).double())
                rows += [{**row, "replicate": r} for row in _rows(
                    "per_example", b, b * (b - 1) // 2,
                    replicate_statistics(stats["cos"].numpy(), stats["inner"].numpy()))]
            _say(progress, f"per_example B={b}: {repeats} replicates ({time.perf_counter() - start:.0f}s)")
    return pd.DataFrame(rows, columns=["estimator", "size", "pairs", "replicate", "statistic", "value"])


ORDER = {"one_pair": 0, "minibatch_pairs": 1, "all_pairs": 2, "per_example": 3}


def summarise(replicates: pd.DataFrame, target_se: float = 0.02) -> pd.DataFrame:
    """Per (estimator, size, statistic): mean, se (std over replicates, ddof=1), se_err, the
    number of replicates, and for minibatch_pairs the fit se = a P^b over the measured P, the
    pairs ``target_se`` needs and a note on what more pairs buy."""
    grouped = replicates.groupby(["estimator", "size", "pairs", "statistic"], sort=False)["value"]
    table = grouped.agg(mean="mean", se=lambda v: v.std(ddof=1), replicates="count").reset_index()
    table["se_err"] = table["se"] / np.sqrt(2 * (table["replicates"] - 1).clip(lower=1))
    for column in ("fit_a", "fit_b", "target_se", "pairs_for_target"):
        table[column] = math.nan
    table["note"] = ""
    mini = table[table["estimator"] == "minibatch_pairs"]
    for statistic, rows in mini.groupby("statistic", sort=False):
        a, b = fit_power_law(rows["size"], rows["se"], rows["replicates"])
        table.loc[rows.index, ["fit_a", "fit_b"]] = a, b
        table.loc[rows.index, "note"] = _fit_note(statistic, rows, b)
        if statistic in COSINE_STATISTICS:
            needed = pairs_needed(a, b, target_se)
            table.loc[rows.index, "target_se"] = target_se
            table.loc[rows.index, "pairs_for_target"] = needed
            low, high = rows["size"].min(), rows["size"].max()
            if not low <= needed <= high and math.isfinite(needed):
                where = f"beyond P={high}" if needed > high else f"below P={low}"
                table.loc[rows.index, "note"] += f"; pairs_for_target extrapolated {where}"
    names = [*STATISTICS, "cos", "inner"]
    table["_order"] = table["estimator"].map(ORDER)
    table["_statistic"] = table["statistic"].map(names.index)
    table = table.sort_values(["_order", "size", "_statistic"], kind="stable")
    return table[list(COLUMNS)].reset_index(drop=True)


def _fit_note(statistic: str, rows: pd.DataFrame, b: float) -> str:
    """What a larger P buys for ``statistic``: honest about the minimum being a moving target."""
    first, last = rows.loc[rows["size"].idxmin()], rows.loc[rows["size"].idxmax()]
    drift = (f"mean {first['mean']:.3g} at P={int(first['size'])}, {last['mean']:.3g} at "
             f"P={int(last['size'])}")
    if last["se"] > 0 and statistic != "mean_cos":
        drift += f", a move of {abs(last['mean'] - first['mean']) / last['se']:.1f} se"
    if (rows["se"] == 0).all():
        return f"se 0 at every P: the statistic is constant (eta is 0 when every pair is aligned) ({drift})"
    if not math.isfinite(b):
        return f"no fit (fewer than two P with a positive se) ({drift})"
    if b >= 0 or (b > FLAT_EXPONENT and statistic in ("min_cos", "eta")):
        text = (f"se does not fall with P (b = {b:.2f}): the minimum of more pairs is not a less noisy "
                "estimate of the same quantity, it is a different quantity (a further tail)")
    elif statistic in ("min_cos", "eta"):
        text = ("se falls with P, but the minimum of more pairs is a different quantity (a further "
                "tail): its mean moves with P")
    elif statistic == "q05_cos":
        text = ("the 5% quantile is the same quantity at every P, more pairs estimate it better (below "
                "P=20 it lies between the two smallest pairs: biased low, closer to the minimum)")
    else:
        text = "a mean: se ~ P^-0.5 expected"
    if statistic == "eta":
        text += "; eta is an inner product, not a cosine: the target se does not apply"
    return f"{text} ({drift})"


def measure_noise(model: nn.Module, loss_fn: LossFn, x_train: torch.Tensor, y_train: torch.Tensor, *,
                  pair_counts: Sequence[int] = PAIR_COUNTS, pool_pairs: int = 2000,
                  batch_size: int = 128, batches_list: Sequence[int] = (20,),
                  examples_list: Sequence[int] = (128,), repeats: int = 10, bn_mode: str = "train",
                  generator: torch.Generator, group: int = 1, target_se: float = 0.02,
                  progress: Progress | None = None) -> pd.DataFrame:
    """The noise of each confusion estimator at ``model``'s current weights (see the module
    docstring): measure_replicates, then summarise. An empty ``pair_counts``, ``batches_list``
    or ``examples_list`` leaves that estimator out."""
    replicates = measure_replicates(model, loss_fn, x_train, y_train, pair_counts=pair_counts,
                                    pool_pairs=pool_pairs, batch_size=batch_size,
                                    batches_list=batches_list, examples_list=examples_list,
                                    repeats=repeats, bn_mode=bn_mode, generator=generator,
                                    group=group, progress=progress)
    return summarise(replicates, target_se)


# -- the report ------------------------------------------------------------------------------------
def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()
                                                 and abs(value) >= 1):
        return str(int(value))
    return f"{value:.4g}"


def markdown(table: pd.DataFrame) -> str:
    """Two markdown tables: every (estimator, size, statistic), then the mini-batch fits."""
    head = ["estimator", "size", "pairs", "statistic", "mean", "se", "se_err", "replicates"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_number(row[c]) if c not in ("estimator", "statistic")
                                      else str(row[c]) for c in head) + " |")
    fits = table[table["estimator"] == "minibatch_pairs"].drop_duplicates("statistic")
    if len(fits):
        head = ["statistic", "fit_a", "fit_b", "target_se", "pairs_for_target", "note"]
        lines += ["", "mini-batch pairs: se = a P^b fitted over the measured P", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, row in fits.iterrows():
            lines.append("| " + " | ".join(str(row[c]) if c in ("statistic", "note")
                                          else _number(row[c]) for c in head) + " |")
    return "\n".join(lines) + "\n"


# -- `confusion noise`: one run's config, trained, then measured -----------------------------------
def parse_counts(text: str | None, option: str) -> list[int] | None:
    """'10,25,50' -> [10, 25, 50]; 'none' or '' -> [] (the estimator left out); None -> None."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfusionError(f"{option} must be comma-separated integers or none, got "
                             f"'{text}'") from None


def settings_of(cfg, *, repeats: int, pair_counts: str, pool_pairs: int, batches: str | None,
                examples: str | None, target_se: float) -> dict:
    """The measurement settings of a `confusion noise` line on the run config ``cfg``, checked
    (a one-line ConfusionError): all_pairs' K and per_example's B default to probe.batches and
    probe.examples, the mini-batch size and BN mode are the probe's."""
    from . import data
    from .probes import check_bn_mode

    if not (isinstance(target_se, (int, float)) and math.isfinite(target_se) and target_se > 0):
        raise ConfusionError(f"--target-se must be a positive number, got {target_se!r}")
    settings = {
        "repeats": repeats, "pair_counts": parse_counts(pair_counts, "--pair-counts"),
        "pool_pairs": pool_pairs, "batch_size": cfg.probe.batch_size,
        "batches_list": parse_counts(batches, "--batches") or [],
        "examples_list": parse_counts(examples, "--examples") or [],
        "bn_mode": check_bn_mode(cfg.probe), "group": cfg.probe.group,
        "target_se": target_se}
    if batches is None:
        settings["batches_list"] = [cfg.probe.batches]
    if examples is None:
        settings["examples_list"] = [cfg.probe.examples]
    check_settings(**{k: settings[k] for k in ("pair_counts", "pool_pairs", "batch_size",
                                               "batches_list", "examples_list", "repeats")},
                   train_size=data.sizes(cfg.dataset)[0])
    return settings


def train_then_measure(cfg, settings: dict, progress: Progress | None = None
                       ) -> tuple[pd.DataFrame, dict]:
    """Train the run ``cfg`` as `confusion run` trains it (the same Trainer, seed and backend;
    probes off, which leaves the training path unchanged) for optim.epochs epochs (0: the
    initial weights), writing nothing, then measure every replicate at the final weights with
    the run's probe generator. Returns (replicates, the training's last row)."""
    from . import data
    from .backend import backend, resolve_device
    from .train import Trainer

    device = resolve_device(str(cfg.device))
    with backend(cfg, device):
        trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, device), device)
        trainer.probes = []  # training only: the probes have their own generator, so none is lost
        _say(progress, f"{cfg.model.name} depth {cfg.model.get('depth')} width {cfg.model.get('width')}"
                       f" on {cfg.dataset.name} ({trainer.data.x_train.shape[0]} examples), "
                       f"{cfg.optim.epochs} epochs, device {device}")
        last: dict = {}
        for event in trainer.run():
            last = event.row
            if event.epoch_end:
                _say(progress, f"epoch {int(last['epoch'])}/{cfg.optim.epochs}  loss "
                               f"{last['train_loss']:.4g}  test_acc {last.get('test_acc', math.nan):.3f}")
            if event.diverged:
                raise ConfusionError(f"training diverged at epoch {int(last['epoch'])} (loss "
                                     f"{last['train_loss']}): lower optim.lr")
        keys = ("pair_counts", "pool_pairs", "batch_size", "batches_list", "examples_list",
                "repeats", "bn_mode", "group")
        replicates = measure_replicates(trainer.model, trainer.loss_fn, trainer.data.x_train,
                                        trainer.data.y_train, generator=trainer.probe_generator,
                                        progress=progress, **{k: settings[k] for k in keys})
    return replicates, last


def write_report(out, cfg, settings: dict, replicates: pd.DataFrame, table: pd.DataFrame,
                 last: dict, command: str) -> str:
    """noise.csv, noise.md, replicates.csv and config.yaml (the run config with the measurement
    settings under ``noise``) under ``out``, each written atomically; returns the markdown."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from .records import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = (f"weights after {int(last.get('epoch', 0))} epochs (train loss "
               f"{last.get('train_loss', math.nan):.4g}, test accuracy "
               f"{last.get('test_acc', math.nan):.3f})")
    text = (f"# Probe noise\n\n`{command}`\n\n{weights}; probe generator seeded from seed={cfg.seed}; "
            f"mini-batches of {settings['batch_size']}, BN mode {settings['bn_mode']} (per_example: "
            f"eval); se = standard deviation over replicates (ddof=1), the standard error of one "
            f"estimate; se_err = se / sqrt(2 (n - 1)).\n\n{markdown(table)}")
    node = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True),
                             "noise": {**settings, "command": command,
                                       "epochs_done": int(last.get("epoch", 0))}})
    atomic_write(out / "noise.csv", lambda f: table.to_csv(f, index=False))
    atomic_write(out / "replicates.csv", lambda f: replicates.to_csv(f, index=False))
    atomic_write(out / "noise.md", lambda f: f.write(text))
    atomic_write(out / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(node, resolve=True)))
    return text


def main(overrides: list[str], *, repeats: int = 10, out: str | None = None, target_se: float = 0.02,
         pair_counts: str = ",".join(map(str, PAIR_COUNTS)), pool_pairs: int = 2000,
         batches: str | None = None, examples: str | None = None,
         progress: Progress | None = None) -> tuple[str, str]:
    """`confusion noise`: compose and validate the run config as `confusion run` does for a
    single run, train, measure, write the report. Returns (its folder, the markdown)."""
    from pathlib import Path

    from .config import prepare

    launch = prepare(overrides, [])
    if launch.multirun:
        raise ConfusionError("confusion noise measures one config: give one value per key "
                             "(no 'a,b' sweeps, no +sweep=NAME)")
    cfg = launch.cfg
    settings = settings_of(cfg, repeats=repeats, pair_counts=pair_counts, pool_pairs=pool_pairs,
                           batches=batches, examples=examples, target_se=target_se)
    folder = Path(out) if out else Path(cfg.records_root) / "noise" / str(cfg.launch_id)
    start = time.perf_counter()
    replicates, last = train_then_measure(cfg, settings, progress)
    table = summarise(replicates, target_se)
    command = " ".join(["confusion noise", *overrides, f"--repeats {repeats}",
                        f"--pair-counts {pair_counts}", f"--pool-pairs {pool_pairs}",
                        f"--batches {','.join(map(str, settings['batches_list'])) or 'none'}",
                        f"--examples {','.join(map(str, settings['examples_list'])) or 'none'}",
                        f"--target-se {target_se}"])
    text = write_report(folder, cfg, settings, replicates, table, last, command)
    _say(progress, f"done in {time.perf_counter() - start:.0f}s -> {folder}")
    return str(folder), text

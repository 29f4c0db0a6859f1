"""Kernel density of the pairwise gradient cosines that a run's probe recorded at one epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import records
from .select import groups, values

KDE_POINTS = 256


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
    probed = frame[values(frame, "min_cos").notna()]
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

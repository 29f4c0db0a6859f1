"""Outliers of a spectrum: the rule the Fisher and Hessian probes share (docs/extra.md, "Curvature").

Sagun et al. (2017) and Papyan (2019) describe the spectra of the Hessian and of the empirical
Fisher of a classifier as a bulk near zero plus a few outliers, about one per class. Which
eigenvalues are "outliers" needs a rule; the one used here, fixed before any run, is

    the largest gap in log eigenvalues: with lambda_1 >= lambda_2 >= ... the eigenvalues above
    FLOOR * lambda_1 (descending) and s = min(search, their number - 1), the outliers are
    lambda_1 .. lambda_k, k = argmax_{1 <= i <= s} (log lambda_i - log lambda_{i+1}).

The floor (1e-6: the round-off of a float32 Gram or Hessian-vector product is about 1e-7 of
lambda_1) and searching only the top ``search`` + 1 eigenvalues keep the gap into the
numerically-zero tail of a rank-deficient spectrum (saturated examples at the end of training)
from being taken for the edge of the bulk. With fewer than two eigenvalues above the floor the
count is their number (0 or 1).
The rule counts a single far outlier (the mean-gradient direction) as 1 even when C class
outliers follow it; the share of the trace in the top C eigenvalues (``top_share``) is reported
beside it for that reason.
"""

from __future__ import annotations

import torch

SEARCH = 50  # eigenvalues the largest log gap is looked for among (default)
FLOOR = 1e-6  # eigenvalues below FLOOR * the largest are round-off, not bulk


def outlier_count(eigenvalues: torch.Tensor, search: int = SEARCH) -> int:
    """The number of outliers of ``eigenvalues`` by the largest log gap (module docstring)."""
    finite = eigenvalues[torch.isfinite(eigenvalues)].double()
    if finite.numel() == 0 or finite.max() <= 0:
        return 0
    positive = finite[finite > FLOOR * finite.max()].sort(descending=True).values[: search + 1]
    if positive.numel() < 2:
        return int(positive.numel())
    gaps = positive[:-1].log() - positive[1:].log()
    return int(gaps.argmax()) + 1


def top_share(eigenvalues: torch.Tensor, k: int) -> float:
    """The share of the trace (the sum of ``eigenvalues``) in the k largest; NaN for a zero trace."""
    values = eigenvalues.double().sort(descending=True).values
    trace = float(values.sum())
    return float(values[:k].sum()) / trace if trace > 0 else float("nan")

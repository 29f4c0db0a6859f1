"""Gradient-confusion statistics from pairwise inner products and squared norms.

For pairs (a, b) of gradients with inner products <g_a, g_b> and squared norms |g_a|^2, |g_b|^2,
cos(a, b) = <g_a, g_b> / (|g_a| |g_b|). The confusion eta of the set (De, Sankararaman et al., ICML 2020)
is the smallest eta >= 0 with <g_a, g_b> >= -eta for every pair: eta = max(0, -min <g_a, g_b>)
(``eta``), so it is 0 when every pair is aligned. Records keep the raw ``min_inner``; ``min_cos``
is its scale-free version, the one the paper plots. A pair with a zero gradient has cosine 0
(a zero vector is orthogonal to all).
Quantiles interpolate linearly between order statistics, as ``numpy.quantile`` does by default.
"""

from __future__ import annotations

import numpy as np
import torch

SCALARS = ("min_inner", "min_cos", "mean_cos", "mean_inner", "q05_cos", "q50_cos",
           "frac_neg_cos", "n_pairs")
SAMPLES = ("cos", "inner")


def eta(min_inner):
    """The paper's confusion eta = max(0, -min inner product), from the recorded ``min_inner``
    (a float, a NumPy array or a pandas Series, kept as such; NaN stays NaN)."""
    return np.maximum(-min_inner, 0.0)


def quantile(ordered: torch.Tensor, q: float) -> float:
    """The q-quantile of sorted 1-D ``ordered``: linear interpolation at position q (n - 1).

    Written out because ``torch.quantile`` refuses inputs of more than 2^24 values.
    """
    position = q * (ordered.numel() - 1)
    low = int(position)
    high = min(low + 1, ordered.numel() - 1)
    return (ordered[low] + (position - low) * (ordered[high] - ordered[low])).item()


def pair_statistics(inner: torch.Tensor, sq_norm_a: torch.Tensor,
                    sq_norm_b: torch.Tensor) -> dict[str, float | torch.Tensor]:
    """Statistics of the pairs given by 1-D ``inner`` and the pairs' squared norms.

    The keys of ``SCALARS`` (floats) and of ``SAMPLES``: "cos" and "inner", every pair's value
    (float64 on CPU, in the order given).
    """
    inner, sq_norm_a, sq_norm_b = (t.detach().to("cpu", torch.float64).reshape(-1)
                                   for t in (inner, sq_norm_a, sq_norm_b))
    if inner.numel() == 0:
        raise ValueError("pair_statistics needs at least one pair")
    norms = (sq_norm_a.clamp_min(0) * sq_norm_b.clamp_min(0)).sqrt()
    cos = torch.where(norms > 0, inner / norms.where(norms > 0, 1.0), 0.0)
    ordered = cos.sort().values
    return {"min_inner": inner.min().item(), "min_cos": ordered[0].item(),
            "mean_cos": cos.mean().item(), "mean_inner": inner.mean().item(),
            "q05_cos": quantile(ordered, 0.05), "q50_cos": quantile(ordered, 0.5),
            "frac_neg_cos": (cos < 0).double().mean().item(), "n_pairs": float(inner.numel()),
            "cos": cos, "inner": inner}


def gram_pair_statistics(gram: torch.Tensor) -> dict[str, float | torch.Tensor]:
    """pair_statistics of every pair i < j of a Gram matrix: inner G_ij, squared norms G_ii, G_jj."""
    rows, cols = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1, device=gram.device)
    diag = gram.diagonal()
    return pair_statistics(gram[rows, cols], diag[rows], diag[cols])

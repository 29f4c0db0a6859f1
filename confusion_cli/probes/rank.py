"""Low-rank bias: the effective and numerical rank of every weight matrix (docs/extra.md;
Galanti & Poggio: SGD with weight decay drives weight matrices towards low rank).

For a weight matrix W (a Conv2d kernel is read as the (out, in * k * k) matrix it applies to
each unfolded patch) with singular values s_1 >= ... >= s_r:

- effective rank (Roy & Vetterli 2007): p_i = s_i / sum_j s_j, erank(W) = exp(-sum_i p_i log p_i);
  a real number in [1, r], equal to r when all singular values are equal;
- numerical rank: #{i : s_i > rtol * s_1}, what ``torch.linalg.matrix_rank(W, rtol=rtol)`` counts;
  ``rtol = None`` is torch's default max(m, n) * eps(dtype).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfusionError
from .base import Probe, ProbeContext, Samples, Scalars, register


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weight of every Linear and Conv2d of ``model`` in module order, as (out, fan_in) matrices."""
    return [m.weight.detach().reshape(m.weight.shape[0], -1) for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))]


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp of the Shannon entropy of the normalised singular values (Roy & Vetterli 2007); 0 for W = 0."""
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    p = singular_values / total
    entropy = -torch.special.xlogy(p, p).sum()
    return float(entropy.exp())


def numerical_rank(singular_values: torch.Tensor, shape: tuple[int, int],
                   rtol: float | None = None) -> int:
    """How many singular values exceed rtol * s_max (rtol None: max(m, n) * eps, torch's default)."""
    if rtol is None:
        rtol = max(shape) * torch.finfo(singular_values.dtype).eps
    return int((singular_values > rtol * singular_values.max()).sum())


def rank_stats(model: nn.Module, rtol: float | None = None) -> dict[str, float]:
    """Per layer ``rank_eff_L{i}`` and ``rank_num_L{i}``, and their means over layers.

    Layers are the Linear/Conv2d modules in module order (L0 = the first, the readout last).
    """
    stats: dict[str, float] = {}
    for i, weight in enumerate(weight_matrices(model)):
        s = torch.linalg.svdvals(weight)
        stats[f"rank_eff_L{i}"] = effective_rank(s)
        stats[f"rank_num_L{i}"] = float(numerical_rank(s, tuple(weight.shape), rtol))
    for kind in ("eff", "num"):
        values = [v for k, v in stats.items() if k.startswith(f"rank_{kind}_L")]
        stats[f"rank_{kind}_mean"] = sum(values) / len(values)
    return stats


@register("rank")
class Rank(Probe):
    """``rank_eff_*`` and ``rank_num_*`` with ``extra_probes.rank.rtol``; reads the weights only."""

    def check(self, train_size: int) -> None:
        rtol = self.settings.get("rtol")
        if rtol is not None and not (isinstance(rtol, (int, float)) and rtol > 0):
            raise ConfusionError(f"extra_probes.rank.rtol must be a positive number or null "
                                 f"(max(m, n) * eps), got {rtol!r}")

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        return rank_stats(ctx.model, self.settings.get("rtol")), {}

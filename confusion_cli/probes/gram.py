"""Per-example Gram matrices <g_i, g_j>."""

from __future__ import annotations

import torch
from torch import nn

from .func import vmap_per_example_gram
from .naive import LossFn


def per_example_gram(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                     chunk_size: int | None = None) -> torch.Tensor:
    """(B, B) Gram matrix <g_i, g_j> of per-example gradients, exact, in eval mode."""
    return vmap_per_example_gram(model, loss_fn, x, y, chunk_size=chunk_size)

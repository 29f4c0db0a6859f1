"""Mini-batch gradient pairs: the paper's protocol and its all-pairs variant.

A mini-batch gradient is the gradient of the mean loss on that batch, taken with plain autograd
(one backward pass per mini-batch), with the model in eval mode (see ``BN_CONVENTION``).

- ``minibatch_pair_stats``: the paper's protocol (PAPER.md, "Confusion measurement"): given
  pairs of mini-batches, the inner product and cosine of each pair's two gradients.
- ``all_pairs_stats``: K mini-batch gradients and all K (K - 1) / 2 pairs among them, i.e. the
  off-diagonal of the (K, K) Gram matrix of the flat gradients; many more pairs for the same
  number of backward passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .naive import LossFn, blocked_gram, eval_mode, flat_gradient, flat_gradients, trainable
from .stats import gram_pair_statistics, pair_statistics

Batch = tuple[torch.Tensor, torch.Tensor]
GRADIENT_BUDGET_BYTES = 1 << 30  # automatic chunk_size: flat gradients held at once, in bytes


def minibatch_pair_stats(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Batch, Batch]]
                         ) -> dict[str, float | torch.Tensor]:
    """pair_statistics over pairs ((xa, ya), (xb, yb)) of mini-batches.

    Two gradients are held at a time; pair k contributes <g_a, g_b> and |g_a|^2, |g_b|^2.
    """
    inner, sq_a, sq_b = [], [], []
    with eval_mode(model):
        for (xa, ya), (xb, yb) in batches:
            grad_a = flat_gradient(model, loss_fn, xa, ya)
            grad_b = flat_gradient(model, loss_fn, xb, yb)
            inner.append(grad_a @ grad_b)
            sq_a.append(grad_a @ grad_a)
            sq_b.append(grad_b @ grad_b)
    return pair_statistics(torch.stack(inner), torch.stack(sq_a), torch.stack(sq_b))


def minibatch_gram(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                   chunk_size: int | None = None) -> torch.Tensor:
    """(K, K) Gram matrix <g_k, g_l> of the K mini-batch gradients of ``batches``.

    At most 2 ``chunk_size`` flat gradients are held at once (None: as many as fit in
    GRADIENT_BUDGET_BYTES); with c < K some are recomputed (see blocked_gram).
    """
    with eval_mode(model):
        if chunk_size is None:
            params = trainable(model)
            bytes_per_gradient = sum(p.numel() for p in params) * params[0].element_size()
            chunk_size = max(1, GRADIENT_BUDGET_BYTES // bytes_per_gradient)
        return blocked_gram(lambda start, end: flat_gradients(model, loss_fn, batches[start:end]),
                            len(batches), chunk_size)


def all_pairs_stats(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                    chunk_size: int | None = None) -> dict[str, float | torch.Tensor]:
    """pair_statistics over all K (K - 1) / 2 pairs of K mini-batches."""
    return gram_pair_statistics(minibatch_gram(model, loss_fn, batches, chunk_size))

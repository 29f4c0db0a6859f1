"""Mini-batch gradient pairs: the paper's protocol and its all-pairs variant.

A mini-batch gradient is the gradient of the mean loss on that batch, taken with plain autograd
(one backward pass per mini-batch). ``bn_mode`` (see ``bn_convention``): "train" (the default)
gives the gradient an SGD step takes on that batch, BatchNorm with the batch's own statistics
and running statistics untouched; "eval" uses the running statistics.

- ``minibatch_pair_stats``: the paper's protocol (De, Sankararaman et al., ICML 2020, Sec. 5): given
  pairs of mini-batches, the inner product and cosine of each pair's two gradients.
- ``all_pairs_stats``: K mini-batch gradients and all K (K - 1) / 2 pairs among them, i.e. the
  off-diagonal of the (K, K) Gram matrix of the flat gradients; many more pairs for the same
  number of backward passes.

Both can batch the gradient computations: ``group`` mini-batches of equal size go through one
torch.func vmap(grad) call (see ``group_size``), which gives the same gradients as one backward
pass each, to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfusionError, is_count
from .func import vmap_batch_gradients
from .naive import LossFn, blocked_gram, bn_mode, flat_gradients, trainable
from .stats import gram_pair_statistics, pair_statistics

Batch = tuple[torch.Tensor, torch.Tensor]
GRADIENT_BUDGET_BYTES = 1 << 30  # automatic chunk_size: flat gradients held at once, in bytes


def group_size(model: nn.Module, group: int) -> int:
    """Mini-batch gradients per vmapped call for ``probe.group``, capped so that at most
    GRADIENT_BUDGET_BYTES of flat gradients are held at once.

    1 (the default) is one backward pass per mini-batch. Grouping gives the same gradients;
    whether it is faster depends on the model and the device: `make bench` times both
    ("probe pairs, group N vs 1").
    """
    return max(1, min(check_group(group), GRADIENT_BUDGET_BYTES // gradient_bytes(model)))


def check_group(group: object) -> int:
    """``probe.group`` if it is a positive integer, else a one-line ConfusionError."""
    if not is_count(group):
        raise ConfusionError(f"probe.group must be a positive integer, got {group}: 1 computes one "
                             "mini-batch gradient per backward pass, N > 1 vmaps N at a time")
    return group


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of one flat gradient of ``model``'s trainable parameters."""
    params = trainable(model)
    return sum(p.numel() for p in params) * params[0].element_size()


def minibatch_gradients(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                        group: int = 1) -> torch.Tensor:
    """(K, P) flat mini-batch gradients: one backward pass each (group 1), or ``group`` equal-sized
    mini-batches at a time through one vmapped call. The caller sets the BN mode."""
    if group == 1 or len(batches) == 1 or len({x.shape for x, _ in batches}) > 1:
        return flat_gradients(model, loss_fn, batches)
    rows = []
    for start in range(0, len(batches), group):
        chunk = batches[start:start + group]
        rows.append(vmap_batch_gradients(model, loss_fn, torch.stack([x for x, _ in chunk]),
                                         torch.stack([y for _, y in chunk])))
    return torch.cat(rows)


def minibatch_pair_stats(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Batch, Batch]],
                         group: int = 1, mode: str = "train") -> dict[str, float | torch.Tensor]:
    """pair_statistics over pairs ((xa, ya), (xb, yb)) of mini-batches.

    ``group`` mini-batch gradients are held (and, above 1, computed in one vmapped call) at a
    time; pair k contributes <g_a, g_b> and |g_a|^2, |g_b|^2. ``mode``: the BN convention.
    """
    inner, sq_a, sq_b = [], [], []
    with bn_mode(model, mode):
        size = group_size(model, group)
        pairs_at_once = max(1, size // 2)
        for start in range(0, len(batches), pairs_at_once):
            chunk = batches[start:start + pairs_at_once]
            grads = minibatch_gradients(model, loss_fn, [a for a, _ in chunk] + [b for _, b in chunk], size)
            grad_a, grad_b = grads[:len(chunk)], grads[len(chunk):]
            inner.append(torch.linalg.vecdot(grad_a, grad_b))
            sq_a.append(torch.linalg.vecdot(grad_a, grad_a))
            sq_b.append(torch.linalg.vecdot(grad_b, grad_b))
    return pair_statistics(torch.cat(inner), torch.cat(sq_a), torch.cat(sq_b))


def minibatch_gram(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                   chunk_size: int | None = None, group: int = 1, mode: str = "train") -> torch.Tensor:
    """(K, K) Gram matrix <g_k, g_l> of the K mini-batch gradients of ``batches``.

    At most 2 ``chunk_size`` flat gradients are held at once (None: as many as fit in
    GRADIENT_BUDGET_BYTES); with c < K some are recomputed (see blocked_gram). ``group``: as in
    minibatch_pair_stats, ``mode`` the BN convention.
    """
    with bn_mode(model, mode):
        if chunk_size is None:
            chunk_size = max(1, GRADIENT_BUDGET_BYTES // gradient_bytes(model))
        size = group_size(model, group)
        return blocked_gram(lambda start, end: minibatch_gradients(model, loss_fn, batches[start:end], size),
                            len(batches), chunk_size)


def all_pairs_stats(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                    chunk_size: int | None = None, group: int = 1, mode: str = "train"
                    ) -> dict[str, float | torch.Tensor]:
    """pair_statistics over all K (K - 1) / 2 pairs of K mini-batches (``mode``: BN convention)."""
    return gram_pair_statistics(minibatch_gram(model, loss_fn, batches, chunk_size, group, mode))

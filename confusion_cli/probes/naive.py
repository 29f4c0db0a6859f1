"""Reference gradients by plain autograd: one backward pass per example or per mini-batch.

These are the slow, obviously-correct definitions that every fast path is tested against.
Gradients are taken with ``torch.autograd.grad`` over the parameters that require grad, so the
parameters' ``.grad`` fields are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .hessian import eval_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters gradients are taken over: those with ``requires_grad``, in module order."""
    return [p for p in model.parameters() if p.requires_grad]


def flat_gradient(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss_fn(model(x), y)`` (a mean over the batch) as one flat vector."""
    params = trainable(model)
    grads = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True,
                                materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads])


def flat_gradients(model: nn.Module, loss_fn: LossFn,
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(K, P): row k is the flat gradient of the mean loss on the k-th (x, y) batch."""
    return torch.stack([flat_gradient(model, loss_fn, x, y) for x, y in batches])


def naive_per_example_gram(model: nn.Module, loss_fn: LossFn, x: torch.Tensor,
                           y: torch.Tensor) -> torch.Tensor:
    """(B, B) Gram matrix <g_i, g_j> of per-example gradients, one backward pass per example.

    g_i is the gradient of ``loss_fn`` on example i alone, ``loss_fn(model(x[i:i+1]), y[i:i+1])``.
    The model is evaluated in eval mode (see BN_CONVENTION) and its modes restored afterwards.
    """
    with eval_mode(model):
        grads = flat_gradients(model, loss_fn, [(x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])])
    return grads @ grads.T


def blocked_gram(rows: Callable[[int, int], torch.Tensor], count: int, chunk_size: int) -> torch.Tensor:
    """(count, count) Gram matrix of the vectors ``rows(start, end)`` -> (end - start, P), in blocks.

    At most two blocks of ``chunk_size`` vectors are held at once: block I is kept while every
    later block J is recomputed, G[I, J] = V_I V_J^T, so with c < count the vectors are computed
    about count / (2 c) times each.
    """
    gram = None
    for start in range(0, count, chunk_size):
        end = min(start + chunk_size, count)
        block = rows(start, end)
        if gram is None:
            gram = block.new_zeros(count, count)
        gram[start:end, start:end] = block @ block.T
        for other in range(end, count, chunk_size):
            other_end = min(other + chunk_size, count)
            cross = block @ rows(other, other_end).T
            gram[start:end, other:other_end] = cross
            gram[other:other_end, start:end] = cross.T
    return gram

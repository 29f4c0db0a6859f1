"""Reference gradients by plain autograd: one backward pass per example or per mini-batch.

These are the slow, obviously-correct definitions that every fast path is tested against.
Gradients are taken with ``torch.autograd.grad`` over the parameters that require grad, so the
parameters' ``.grad`` fields are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the duration; each submodule's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


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


def blocked_gram(rows: Callable[[int, int], T], count: int, chunk_size: int,
                 inner: Callable[[T, T], torch.Tensor] = lambda u, v: u @ v.T) -> torch.Tensor:
    """(count, count) Gram matrix of ``count`` items, assembled in blocks of ``chunk_size``.

    ``rows(start, end)`` computes the features of items [start, end) (by default a matrix of
    flat vectors); ``inner(u, v)`` the block of inner products between two such feature sets.
    At most two blocks are held at once: block I is kept while every later block J is
    recomputed, G[I, J] = inner(V_I, V_J), so with c < count features are computed about
    count / (2 c) times each.
    """
    gram = None
    for start in range(0, count, chunk_size):
        end = min(start + chunk_size, count)
        block = rows(start, end)
        diagonal = inner(block, block)
        if gram is None:
            gram = diagonal.new_zeros(count, count)
        gram[start:end, start:end] = diagonal
        for other in range(end, count, chunk_size):
            other_end = min(other + chunk_size, count)
            cross = inner(block, rows(other, other_end))
            gram[start:end, other:other_end] = cross
            gram[other:other_end, start:end] = cross.T
    return gram

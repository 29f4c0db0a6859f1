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


BN_MODES = ("train", "eval")
BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def train_mode_frozen_stats(model: nn.Module) -> Iterator[None]:
    """``model`` in train mode for the duration, as in an SGD step, with every buffer frozen.

    BatchNorm normalises each mini-batch with that batch's own statistics, exactly as a training
    step does, but its running statistics are neither used nor updated (``track_running_stats``
    is off meanwhile). Every buffer is copied first and written back afterwards, and each
    module's mode and flags are restored, so a probe leaves no trace on training.
    """
    modes = [(m, m.training) for m in model.modules()]
    norms = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, BATCH_NORM_TYPES)]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    model.train()
    for module, _ in norms:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module, track in norms:
            module.track_running_stats = track
        for module, training in modes:
            module.train(training)
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def bn_mode(model: nn.Module, mode: str) -> contextlib.AbstractContextManager[None]:
    """The probes' BatchNorm convention ``mode``: "train" (train_mode_frozen_stats: each
    mini-batch gradient is the one SGD steps on) or "eval" (eval_mode: running statistics,
    examples independent, the only mode with per-example gradients)."""
    if mode == "train":
        return train_mode_frozen_stats(model)
    if mode == "eval":
        return eval_mode(model)
    raise ValueError(f"unknown BN mode {mode!r}: choose one of {BN_MODES}")


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
    The model is evaluated in eval mode (the eval convention, see bn_convention) and its modes
    restored afterwards.
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

"""Per-example and per-mini-batch gradients with torch.func: ``vmap(grad)`` of a functional call.

The general path for any model (and the baseline the hook-based fast path is benchmarked
against): per-example gradients g_i of ``chunk_size`` examples at a time are materialised as a
(c, P) matrix and the (B, B) Gram is assembled block by block, G[I, J] = g_I g_J^T. The same call over K
equal-sized mini-batches gives K mini-batch gradients at once (the probes' ``group``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .naive import LossFn, blocked_gram, eval_mode

VMAP_CHUNK = 32  # default examples per vmap call


def vmap_batch_gradients(model: nn.Module, loss_fn: LossFn, xs: torch.Tensor,
                         ys: torch.Tensor) -> torch.Tensor:
    """(K, P): row k is the flat gradient of ``loss_fn(model(xs[k]), ys[k])``, the mean loss on
    the k-th of K equal-sized batches, all K in one vmapped call (trainable parameters)."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def batch_loss(trained: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor):
        return loss_fn(functional_call(model, (trained, frozen, buffers), (xb,)), yb)

    grads = vmap(grad(batch_loss), in_dims=(None, 0, 0))(params, xs, ys)
    return torch.cat([g.reshape(xs.shape[0], -1) for g in grads.values()], dim=1)


def vmap_per_example_gradients(model: nn.Module, loss_fn: LossFn, x: torch.Tensor,
                               y: torch.Tensor) -> torch.Tensor:
    """(B, P): row i is the flat gradient of ``loss_fn`` on example i alone (trainable parameters)."""
    return vmap_batch_gradients(model, loss_fn, x[:, None], y[:, None])


def vmap_per_example_gram(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                          *, chunk_size: int | None = None) -> torch.Tensor:
    """(B, B) per-example Gram <g_i, g_j> from vmapped per-example gradients, in eval mode.

    Gradients of ``chunk_size`` examples (default VMAP_CHUNK) are held at once; the blocks of
    later chunks are recomputed for each earlier chunk.
    """
    with eval_mode(model):
        return blocked_gram(lambda start, end: vmap_per_example_gradients(
            model, loss_fn, x[start:end], y[start:end]), x.shape[0], chunk_size or VMAP_CHUNK)

"""Curvature: the top eigenvalues of the Hessian of the training loss (docs/extra.md;
Sagun et al.: a few outliers above a bulk near zero).

The Hessian H of L(w) = mean_i loss(f(x_i; w), y_i) over ``examples`` training examples is never
formed. A Hessian-vector product is one double backward pass, Hv = d/dw <grad L(w), v>, and the
Lanczos iteration (with full reorthogonalisation) builds from m such products an orthonormal
basis Q of the Krylov space span{v, Hv, ..., H^(m-1) v} and the tridiagonal T = Q^T H Q; the
largest eigenvalues of T (Ritz values) approach the largest eigenvalues of H from below, the
extreme ones first, and equal them once m reaches the number of parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .base import Probe, ProbeContext, Samples, Scalars, positive_int, register
from .naive import LossFn, eval_mode, trainable


def hessian_vector_product(model: nn.Module, loss_fn: LossFn, x: torch.Tensor,
                           y: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """(v -> Hv, number of parameters) for the loss of ``model`` on (x, y), parameters flattened.

    One forward and backward pass builds the gradient graph; each product is then one backward
    pass through it (double backward). Neither the parameters nor their ``.grad`` are touched.
    """
    params = trainable(model)
    grads = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def hvp(v: torch.Tensor) -> torch.Tensor:
        products = torch.autograd.grad(flat_grad, params, grad_outputs=v, retain_graph=True,
                                       allow_unused=True, materialize_grads=True)
        return torch.cat([h.reshape(-1) for h in products]).detach()

    return hvp, flat_grad.numel()


def lanczos_top_eigenvalues(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int,
                            iters: int, start: torch.Tensor) -> torch.Tensor:
    """The k largest Ritz values (descending) of the symmetric operator ``matvec`` on R^dim.

    m = min(iters, dim) Lanczos steps from ``start`` with full (twice-applied Gram-Schmidt)
    reorthogonalisation: q_{j+1} beta_j = (I - Q Q^T) H q_j, alpha_j = q_j^T H q_j. Stops early
    when the Krylov space is invariant (beta_j ~ 0), where the Ritz values are exact. Fewer than
    k Ritz values (a tiny operator) are padded with NaN.
    """
    steps = min(iters, dim)
    basis = torch.zeros(steps, dim, dtype=start.dtype, device=start.device)
    q = start / start.norm()
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alphas.append(q @ w)
        for _ in range(2):
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        beta = w.norm()
        scale = max(abs(float(a)) for a in alphas)
        if j == steps - 1 or beta <= 10 * torch.finfo(w.dtype).eps * max(scale, 1e-30):
            break
        betas.append(beta)
        q = w / beta
    tridiagonal = (torch.diag(torch.stack(alphas))
                   + torch.diag(torch.stack(betas), 1) + torch.diag(torch.stack(betas), -1)
                   if betas else torch.stack(alphas).reshape(1, 1))
    ritz = torch.linalg.eigvalsh(tridiagonal).flip(0)[:k]
    return torch.cat([ritz, ritz.new_full((k - ritz.numel(),), math.nan)])


def top_hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                            k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """The k largest eigenvalues (descending) of the Hessian of the loss on (x, y), in eval mode.

    The Lanczos start vector is drawn from ``generator``; the model is left as it was.
    """
    with eval_mode(model):
        hvp, dim = hessian_vector_product(model, loss_fn, x, y)
        start = torch.randn(dim, generator=generator, device=x.device, dtype=x.dtype)
        return lanczos_top_eigenvalues(hvp, dim, k, iters, start)


@register("hessian")
class Hessian(Probe):
    """``hess_top1`` .. ``hess_top{top_k}`` on ``examples`` training examples (all of them when
    the training set is smaller), ``iters`` Lanczos steps. The examples and the start vector
    come from the probe generator, so the training path is unchanged."""

    def check(self, train_size: int) -> None:
        for key in ("examples", "top_k", "iters"):
            positive_int(self.settings, key, "extra_probes.hessian")

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        floats = self.settings.iters * params + self.settings.examples * example_floats  # Lanczos basis
        return 4 * floats, "extra_probes.hessian.iters"

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        cfg, generator = self.settings, ctx.generator
        n = ctx.x_train.shape[0]
        index = torch.randperm(n, generator=generator, device=generator.device)[:cfg.examples]
        values = top_hessian_eigenvalues(ctx.model, ctx.loss_fn, ctx.x_train[index],
                                         ctx.y_train[index], cfg.top_k, cfg.iters, generator)
        return {f"hess_top{i + 1}": float(v) for i, v in enumerate(values)}, {}

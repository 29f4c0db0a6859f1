"""Curvature: the top eigenvalues of the Hessian of the training loss, its spectral density, and
the same for its Gauss-Newton part (docs/extra.md; Sagun et al.: a few outliers above a bulk near
zero, coming from the Gauss-Newton term; Papyan 2019).

The Hessian H of L(w) = mean_i loss(f(x_i; w), y_i) over ``examples`` training examples is never
formed. A Hessian-vector product is one double backward pass, Hv = d/dw <grad L(w), v>, and the
Lanczos iteration (with full reorthogonalisation) builds from m such products an orthonormal
basis Q of the Krylov space span{v, Hv, ..., H^(m-1) v} and the tridiagonal T = Q^T H Q; the
largest eigenvalues of T (Ritz values) approach the largest eigenvalues of H from below, the
extreme ones first, and equal them once m reaches the number of parameters.

The Gauss-Newton part: with f the (n, C) outputs on the examples and J = df/dw,

    H = J^T H_l J + sum_i sum_c (dL/df_ic) d^2 f_ic / dw^2,   G := J^T H_l J,

H_l = d^2 L / df^2 (block diagonal, one (C, C) block per example; for the mean cross-entropy
(diag(p_i) - p_i p_i^T) / n). G is positive semi-definite for a convex loss. A product Gv is a
forward-mode product u = J v (torch.func.jvp), u' = H_l u (a vjp of the loss gradient in f,
H_l being symmetric) and a reverse-mode product J^T u' (torch.func.vjp).

Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan
& Xiao 2019): for a start vector v of norm 1, m Lanczos steps give T = V diag(theta) V^T and
v^T g(H) v ~ sum_k tau_k g(theta_k) with tau_k = V_{1k}^2, so the density of H's eigenvalues,
(1/N) sum_j delta(lambda - lambda_j), is estimated by the nodes theta_k with weights tau_k,
averaged over ``density_probes`` Rademacher start vectors (each weight divided by their number;
the weights sum to 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfusionError
from .base import Probe, ProbeContext, Samples, Scalars, positive_int, register
from .naive import LossFn, eval_mode, trainable
from .spectrum import outlier_count

Matvec = Callable[[torch.Tensor], torch.Tensor]


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


def lanczos_tridiagonal(matvec: Matvec, dim: int, iters: int, start: torch.Tensor) -> torch.Tensor:
    """The (m, m) tridiagonal T = Q^T H Q of m <= min(iters, dim) Lanczos steps from ``start``.

    Full (twice-applied Gram-Schmidt) reorthogonalisation: q_{j+1} beta_j = (I - Q Q^T) H q_j,
    alpha_j = q_j^T H q_j. Stops early when the Krylov space is invariant (beta_j ~ 0), where the
    Ritz values (the eigenvalues of T) are exact.
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
    return (torch.diag(torch.stack(alphas)) + torch.diag(torch.stack(betas), 1)
            + torch.diag(torch.stack(betas), -1) if betas else torch.stack(alphas).reshape(1, 1))


def lanczos_top_eigenvalues(matvec: Matvec, dim: int, k: int, iters: int,
                            start: torch.Tensor) -> torch.Tensor:
    """The k largest Ritz values (descending) of the symmetric operator ``matvec`` on R^dim, from
    ``lanczos_tridiagonal``. Fewer than k Ritz values (a tiny operator) are padded with NaN."""
    ritz = torch.linalg.eigvalsh(lanczos_tridiagonal(matvec, dim, iters, start)).flip(0)[:k]
    return torch.cat([ritz, ritz.new_full((k - ritz.numel(),), math.nan)])


def lanczos_quadrature(matvec: Matvec, dim: int, iters: int,
                       start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nodes theta_k, weights tau_k = V_1k^2) of the Gauss quadrature of v^T g(H) v, v = start
    normalised: the eigen-decomposition T = V diag(theta) V^T (module docstring). Padded to
    min(iters, dim) entries with NaN nodes and zero weights when the iteration stopped early."""
    nodes, vectors = torch.linalg.eigh(lanczos_tridiagonal(matvec, dim, iters, start))
    weights = vectors[0] ** 2
    pad = min(iters, dim) - nodes.numel()
    return (torch.cat([nodes, nodes.new_full((pad,), math.nan)]),
            torch.cat([weights, weights.new_zeros(pad)]))


def spectral_density(matvec: Matvec, dim: int, probes: int, iters: int,
                     generator: torch.Generator, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature: (nodes, weights), ``probes`` x min(iters, dim) of each, from
    Rademacher start vectors drawn with ``generator`` (dtype and device of ``like``); each weight
    is divided by ``probes``, so the weights sum to 1."""
    nodes, weights = [], []
    for _ in range(probes):
        bits = torch.randint(0, 2, (dim,), generator=generator, device=generator.device)
        start = (2 * bits - 1).to(dtype=like.dtype, device=like.device)
        theta, tau = lanczos_quadrature(matvec, dim, iters, start)
        nodes.append(theta)
        weights.append(tau / probes)
    return torch.cat(nodes), torch.cat(weights)


def gauss_newton_vector_product(model: nn.Module, loss_fn: LossFn, x: torch.Tensor,
                                y: torch.Tensor) -> tuple[Matvec, int]:
    """(v -> G v, number of parameters), G = J^T H_l J the Gauss-Newton part of the Hessian of the
    loss of ``model`` on (x, y) (module docstring), parameters flattened in module order.

    One forward pass (torch.func.vjp) is kept; each product is a jvp through the model, a vjp of
    the loss gradient in the outputs and a vjp through the model. Neither the parameters nor
    their ``.grad`` are touched.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in named]
    primals = tuple(p.detach() for _, p in named)
    sizes = [p.numel() for p in primals]

    def forward(*params: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, params)), (x,))

    outputs, pullback = torch.func.vjp(forward, *primals)
    # H_l u as a vjp of the loss gradient (H_l is symmetric); a jvp of it fails on mse_loss
    _, loss_hessian = torch.func.vjp(torch.func.grad(lambda out: loss_fn(out, y)), outputs.detach())

    def gnvp(v: torch.Tensor) -> torch.Tensor:
        tangents = tuple(t.reshape(p.shape) for t, p in zip(v.split(sizes), primals))
        _, jv = torch.func.jvp(forward, primals, tangents)
        (hjv,) = loss_hessian(jv)
        return torch.cat([g.reshape(-1) for g in pullback(hjv)]).detach()

    return gnvp, sum(sizes)


def top_hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                            k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """The k largest eigenvalues (descending) of the Hessian of the loss on (x, y), in eval mode.

    The Lanczos start vector is drawn from ``generator``; the model is left as it was.
    """
    with eval_mode(model):
        hvp, dim = hessian_vector_product(model, loss_fn, x, y)
        start = torch.randn(dim, generator=generator, device=x.device, dtype=x.dtype)
        return lanczos_top_eigenvalues(hvp, dim, k, iters, start)


OPERATORS = (("hess", hessian_vector_product), ("gn", gauss_newton_vector_product))


def curvature_spectrum(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                       top_k: int, iters: int, generator: torch.Generator, gauss_newton: bool = True,
                       density_probes: int = 0, density_iters: int = 24) -> Scalars:
    """Columns for the Hessian (``hess_``) and, with ``gauss_newton``, its Gauss-Newton part
    (``gn_``), in eval mode: ``{hess,gn}_top1`` .. ``_top{top_k}`` (Lanczos, ``iters`` steps), with
    ``gauss_newton`` also ``{hess,gn}_outliers`` (the largest log gap among the top k,
    ``spectrum.outlier_count``), and with ``density_probes`` > 0 the quadrature
    ``{hess,gn}_sld_node{i}`` and ``{hess,gn}_sld_weight{i}``. Start vectors come from
    ``generator``: the first draw is the Hessian's Lanczos start, as in ``top_hessian_eigenvalues``."""
    stats: Scalars = {}
    with eval_mode(model):
        for prefix, product in OPERATORS[:2 if gauss_newton else 1]:
            matvec, dim = product(model, loss_fn, x, y)
            start = torch.randn(dim, generator=generator, device=x.device, dtype=x.dtype)
            top = lanczos_top_eigenvalues(matvec, dim, top_k, iters, start)
            stats |= {f"{prefix}_top{i + 1}": float(v) for i, v in enumerate(top)}
            if gauss_newton:
                stats[f"{prefix}_outliers"] = float(outlier_count(top, top_k - 1))
            if density_probes:
                nodes, weights = spectral_density(matvec, dim, density_probes, density_iters, generator, x)
                stats |= {f"{prefix}_sld_node{i}": float(v) for i, v in enumerate(nodes)}
                stats |= {f"{prefix}_sld_weight{i}": float(v) for i, v in enumerate(weights)}
    return stats


@register("hessian")
class Hessian(Probe):
    """``hess_top1`` .. ``hess_top{top_k}`` on ``examples`` training examples (all of them when
    the training set is smaller), ``iters`` Lanczos steps; with ``spectrum`` also the
    ``curvature_spectrum`` columns (``density_probes`` start vectors of ``density_iters`` steps).
    The examples and the start vectors come from the probe generator, so the training path is
    unchanged."""

    def check(self, train_size: int) -> None:
        for key in ("examples", "top_k", "iters"):
            positive_int(self.settings, key, "extra_probes.hessian")
        if not isinstance(self.settings.spectrum, bool):
            raise ConfusionError("extra_probes.hessian.spectrum must be true or false, got "
                                 f"{self.settings.spectrum!r}")
        if self.settings.spectrum:
            positive_int(self.settings, "density_iters", "extra_probes.hessian")
            probes = self.settings.density_probes
            if not (isinstance(probes, int) and not isinstance(probes, bool) and probes >= 0):
                raise ConfusionError("extra_probes.hessian.density_probes must be a non-negative "
                                     f"integer (0: no density), got {probes!r}")

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        steps = max(self.settings.iters, self.settings.density_iters or 0)
        floats = steps * params + self.settings.examples * example_floats  # Lanczos basis
        return 4 * floats, "extra_probes.hessian.iters"

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        cfg, generator = self.settings, ctx.generator
        n = ctx.x_train.shape[0]
        index = torch.randperm(n, generator=generator, device=generator.device)[:cfg.examples]
        spectrum = cfg.spectrum
        density_probes = cfg.density_probes if spectrum else 0
        return curvature_spectrum(ctx.model, ctx.loss_fn, ctx.x_train[index], ctx.y_train[index],
                                  top_k=cfg.top_k, iters=cfg.iters, generator=generator,
                                  gauss_newton=spectrum, density_probes=density_probes,
                                  density_iters=cfg.density_iters), {}

"""Canonical vs parametric confusion of deep linear nets (issue 24; docs/theory.md, "Canonical vs
parametric confusion").

A bias-free deep linear net computes f(x) = W x with W = W_L ... W_1 (theta = (W_1, ..., W_L);
``model=linear``, or ``linreg`` without a bias). With e_i = dl_i/df at f = W x_i the residual of
example i (cross-entropy: softmax(f) - onehot(y); squared error: f - y; taken here by autograd of
the run's loss, so any per-example loss works), the gradients of its loss l_i are:

- canonical (with respect to W): G_i = e_i x_i^T, flattened row-major to c_i;
- parametric (with respect to theta): g_i = J^T c_i, J the Jacobian of theta -> W; its layer-k
  block is W_{L:k+1}^T e_i x_i^T W_{k-1:1}^T (an empty product is the identity).

With A_k = W_{L:k+1} W_{L:k+1}^T (m x m) and B_k = W_{k-1:1}^T W_{k-1:1} (n x n), the
preconditioner P = J J^T = sum_k A_k (x) B_k (Kronecker product, row-major flattening), and

    C_ij  = <c_i, c_j> = (e_i . e_j)(x_i . x_j)                           (canonical Gram)
    Pi_ij = <g_i, g_j> = c_i^T P c_j = sum_k (e_i^T A_k e_j)(x_i^T B_k x_j)  (parametric Gram).

Everything is computed in float64 from these closed forms; J is never formed, P (mn x mn, m
outputs, n inputs) is, for its spectrum. Scalars (one column each):

- ``canon_eta``, ``canon_min_cos``, ``canon_mean_cos`` and ``param_*`` the same: the paper's
  eta = max(0, -min inner product) and the min and mean pairwise cosine over all B (B - 1) / 2
  pairs, from C and from Pi;
- ``precond_top1`` .. ``precond_top{top_k}``, ``precond_min``, ``precond_cond`` (largest over
  smallest eigenvalue; inf when P is singular) and ``precond_trace`` = sum_k tr(A_k) tr(B_k);
- ``self_alignment_min`` = min_i cos(c_i, P c_i) over the examples with c_i != 0 (a saturated
  softmax gives e_i = 0 exactly): > 0, P being positive semi-definite, whenever c_i is not in
  P's null space (each example's parametric step still lowers its own loss);
- ``balancedness`` = sum_{k<L} ||W_{k+1}^T W_{k+1} - W_k W_k^T||_F (0 for balanced factors);
- with ``identity``: ``identity_err`` = max_ij |Pi_ij - c_i^T P c_j| with Pi from the project's
  per-example Gram (``gram.per_example_gram``, an autograd path that knows nothing of P) and P
  the materialised closed form, and ``identity_err_rel`` = identity_err / max |Pi|.

Examples: ``examples`` distinct training examples drawn with the probe generator (all of them
when ``examples`` is the training-set size, as in the canonical_* sweeps).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfusionError
from .base import Probe, ProbeContext, Samples, Scalars, fits, positive_int, register
from .gram import per_example_gram
from .naive import LossFn
from .stats import gram_pair_statistics

WHERE = "extra_probes.canonical"
PASSIVE = (nn.Flatten, nn.Identity)  # modules a deep linear net may hold besides its layers


def linear_factors(model: nn.Module) -> list[torch.Tensor]:
    """The weights W_1, ..., W_L (first layer first) of a bias-free deep linear net, detached.

    A deep linear net here is an ``nn.Sequential`` of bias-free ``nn.Linear`` layers, with
    ``nn.Flatten`` / ``nn.Identity`` between them (models.MLP with activation linear and no bias:
    model=linear, and model=linreg with bias false). Anything else is a one-line ConfusionError.
    """
    children = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    layers = [m for m in children if isinstance(m, nn.Linear)]
    if not layers or any(not isinstance(m, (nn.Linear, *PASSIVE)) for m in children):
        raise ConfusionError("extra_probes=[canonical] measures bias-free deep linear nets only: "
                             "choose model=linear, or model=linreg with model.bias=false")
    if any(m.bias is not None for m in layers):
        raise ConfusionError("extra_probes=[canonical] needs a net without biases: set model.bias=false")
    return [m.weight.detach() for m in layers]


def residuals(weights: list[torch.Tensor], inputs: torch.Tensor, y: torch.Tensor,
              loss: LossFn) -> torch.Tensor:
    """(B, m): e_i = dl_i/df at f = W x_i (``inputs``: (B, n)), l_i = loss on example i alone.

    ``loss`` is mean-reduced over the batch (the project's convention), so the gradient of
    B * loss(f, y) with respect to row i of f is e_i exactly.
    """
    outputs = inputs
    for weight in weights:
        outputs = outputs @ weight.T
    outputs = outputs.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(outputs, y) * inputs.shape[0], outputs)
    return grad.detach()


def as_sequential(weights: list[torch.Tensor]) -> nn.Sequential:
    """A fresh nn.Sequential of bias-free Linear layers holding ``weights`` (their dtype, device)."""
    layers = []
    for weight in weights:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype,
                          device=weight.device)
        with torch.no_grad():
            layer.weight.copy_(weight)
        layers.append(layer)
    return nn.Sequential(nn.Flatten(), *layers)


def partial_products(weights: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(A_k, B_k) for k = 1..L: A_k = W_{L:k+1} W_{L:k+1}^T, B_k = W_{k-1:1}^T W_{k-1:1}."""
    m, n = weights[-1].shape[0], weights[0].shape[1]
    prefix = [torch.eye(n, dtype=weights[0].dtype, device=weights[0].device)]  # W_{k-1:1}
    for weight in weights[:-1]:
        prefix.append(weight @ prefix[-1])
    suffix = [torch.eye(m, dtype=weights[0].dtype, device=weights[0].device)]  # W_{L:k+1}
    for weight in reversed(weights[1:]):
        suffix.append(suffix[-1] @ weight)
    suffix.reverse()
    return [s @ s.T for s in suffix], [p.T @ p for p in prefix]


def preconditioner(weights: list[torch.Tensor]) -> torch.Tensor:
    """P = J J^T = sum_k A_k (x) B_k, (mn, mn), row-major flattening of the (m, n) matrix W."""
    a, b = partial_products(weights)
    return sum(torch.kron(a_k, b_k) for a_k, b_k in zip(a, b))


def canonical_gradients(errors: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(B, m n): c_i = vec(e_i x_i^T), row-major."""
    return (errors[:, :, None] * inputs[:, None, :]).flatten(1)


def parametric_blocks(weights: list[torch.Tensor], errors: torch.Tensor,
                      inputs: torch.Tensor) -> list[torch.Tensor]:
    """Per layer k the (B, d_k, d_{k-1}) per-example gradients W_{L:k+1}^T e_i x_i^T W_{k-1:1}^T."""
    blocks = []
    for k in range(len(weights)):
        back, forward = errors, inputs
        for weight in reversed(weights[k + 1:]):
            back = back @ weight  # rows e_i^T W_{L:k+1}
        for weight in weights[:k]:
            forward = forward @ weight.T  # rows x_i^T W_{k-1:1}^T
        blocks.append(back[:, :, None] * forward[:, None, :])
    return blocks


def balancedness(weights: list[torch.Tensor]) -> float:
    """sum_{k<L} ||W_{k+1}^T W_{k+1} - W_k W_k^T||_F (0 for depth 1 and for balanced factors)."""
    return sum(float(torch.linalg.matrix_norm(after.T @ after - before @ before.T))
               for before, after in zip(weights, weights[1:]))


def confusion_scalars(gram: torch.Tensor, prefix: str) -> Scalars:
    """eta, min and mean pairwise cosine of the pairs i < j of ``gram``."""
    stats = gram_pair_statistics(gram)
    return {f"{prefix}_eta": max(0.0, -stats["min_inner"]), f"{prefix}_min_cos": stats["min_cos"],
            f"{prefix}_mean_cos": stats["mean_cos"]}


def canonical_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn, *,
                    top_k: int = 3, identity: bool = True) -> Scalars:
    """The probe's scalars (module docstring) for ``model`` on the batch (x, y), float64.

    ``loss(output, target)`` is mean-reduced over the batch (F.cross_entropy, train.regression_loss).
    ``identity``: also compare with the project's per-example Gram of a float64 copy of the net.
    A model that is not a bias-free deep linear net is a one-line ConfusionError.
    """
    weights = [w.double() for w in linear_factors(model)]
    inputs = x.detach().double().flatten(1)
    errors = residuals(weights, inputs, y, loss)
    a, b = partial_products(weights)
    canonical = (errors @ errors.T) * (inputs @ inputs.T)
    parametric = sum((errors @ a_k @ errors.T) * (inputs @ b_k @ inputs.T) for a_k, b_k in zip(a, b))
    precond = sum(torch.kron(a_k, b_k) for a_k, b_k in zip(a, b))
    eigenvalues = torch.linalg.eigvalsh(precond).flip(0)  # descending
    smallest, largest = eigenvalues[-1].item(), eigenvalues[0].item()
    stats = {**confusion_scalars(canonical, "canon"), **confusion_scalars(parametric, "param")}
    stats |= {f"precond_top{i + 1}": (eigenvalues[i].item() if i < eigenvalues.numel() else float("nan"))
              for i in range(top_k)}
    stats |= {"precond_min": smallest,
              "precond_cond": largest / smallest if smallest > 0 else float("inf"),
              "precond_trace": float(sum(a_k.trace() * b_k.trace() for a_k, b_k in zip(a, b)))}
    flat = canonical_gradients(errors, inputs)
    mapped = flat @ precond  # rows (P c_i)^T, P symmetric
    norms = flat.norm(dim=1) * mapped.norm(dim=1)
    moving = norms > 0  # an example with c_i = 0 (a saturated softmax) has no direction to keep
    stats["self_alignment_min"] = ((flat * mapped).sum(1)[moving] / norms[moving]).min().item() \
        if moving.any() else float("nan")
    stats["balancedness"] = balancedness(weights)
    if identity:
        reference = per_example_gram(as_sequential(weights), loss, inputs, y)
        error = (reference - flat @ precond @ flat.T).abs().max().item()
        stats |= {"identity_err": error, "identity_err_rel": error / reference.abs().max().item()}
    return stats


@register("canonical")
class Canonical(Probe):
    """``canonical_stats`` on ``examples`` training examples, with ``top_k`` and ``identity``."""

    outputs_inputs: tuple[int, int] | None = None  # (m, n), known once check_model has seen the model

    def check(self, train_size: int) -> None:
        for key in ("examples", "top_k"):
            positive_int(self.settings, key, WHERE)
        if self.settings.examples < 2:
            raise ConfusionError(f"{WHERE}.examples must be at least 2 (one pair)")
        if not isinstance(self.settings.get("identity"), bool):
            raise ConfusionError(f"{WHERE}.identity must be true or false, got "
                                 f"{self.settings.get('identity')!r}")
        fits(self.settings, "examples", WHERE, train_size)

    def check_model(self, model: nn.Module) -> None:
        weights = linear_factors(model)
        self.outputs_inputs = (weights[-1].shape[0], weights[0].shape[1])

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        """float64: P and eigvalsh's copy and workspace (3 (mn)^2), the examples' gradients and
        their images under P (2 B mn), the Grams, and a float64 copy of the model."""
        examples = self.settings.examples
        m, n = self.outputs_inputs or (1, example_floats)
        size = m * n
        precond, rest = 3 * size ** 2, 2 * examples * size + 4 * examples ** 2 + params
        option = (f"{WHERE}.examples" if rest > precond else
                  "the input size (extra_probes=[canonical] holds P, (outputs x inputs)^2 floats)")
        return 8 * (precond + rest), option

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        x, y = ctx.batch(self.settings.examples)
        return canonical_stats(ctx.model, x, y, ctx.loss_fn, top_k=self.settings.top_k,
                               identity=self.settings.identity), {}

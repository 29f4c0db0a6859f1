"""The empirical Fisher's spectrum from the per-example Gram (docs/extra.md, "Curvature").

With G the (n, N) matrix whose rows are the per-example gradients g_i of n training examples
(N parameters), the uncentred gradient covariance (the empirical Fisher) F = G^T G / n and the
scaled Gram K = G G^T / n have the same non-zero eigenvalues (G = U S V^T: both are S^2 / n on
the singular directions). K is (n, n) and comes exact from ``gram.per_example_gram`` at the cost
of one forward and one backward pass, so F's spectrum costs no Hessian-vector product at all.

Scalars (one column each), eigenvalues in float64:

- ``fisher_top1`` .. ``fisher_top{top_k}``: the largest eigenvalues of K, descending (NaN past n);
- ``fisher_trace`` = tr F = mean_i |g_i|^2;
- ``fisher_outliers``: the number of outliers by the largest log gap among the top ``search`` + 1
  eigenvalues (``spectrum.outlier_count``), and ``fisher_outlier_share``, their share of the trace;
- ``fisher_top_classes_share``: the share of the trace in the top C eigenvalues, C the model's
  number of outputs (the classes; Papyan 2019: C outliers carry most of the trace);
- ``fisher_params``: N, the number of trainable parameters (the jamming figure's x axis is N / P).

Examples: ``examples`` training examples drawn with the probe generator (all of them when the
training set is smaller), BatchNorm in eval mode (the per-example convention).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Probe, ProbeContext, Samples, Scalars, positive_int, register
from .gram import CHUNK_BUDGET, per_example_gram
from .naive import LossFn, eval_mode, trainable
from .spectrum import outlier_count, top_share

WHERE = "extra_probes.fisher"


def fisher_eigenvalues(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The eigenvalues of G G^T / n (descending, float64): the empirical Fisher's non-zero ones."""
    gram = per_example_gram(model, loss_fn, x, y).double()
    return torch.linalg.eigvalsh(gram / x.shape[0]).flip(0)


def outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of outputs of ``model`` (the classes of a classifier), from one example."""
    with eval_mode(model), torch.no_grad():
        return int(model(x[:1]).reshape(1, -1).shape[1])


def fisher_stats(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                 top_k: int = 12, search: int = 50) -> Scalars:
    """The probe's scalars (module docstring) on the batch (x, y)."""
    eigenvalues = fisher_eigenvalues(model, loss_fn, x, y)
    count = outlier_count(eigenvalues, search)
    stats = {f"fisher_top{i + 1}": (float(eigenvalues[i]) if i < eigenvalues.numel() else float("nan"))
             for i in range(top_k)}
    classes = outputs(model, x)
    return stats | {"fisher_trace": float(eigenvalues.sum()), "fisher_outliers": float(count),
                    "fisher_outlier_share": top_share(eigenvalues, count) if count else 0.0,
                    "fisher_top_classes_share": top_share(eigenvalues, classes),
                    "fisher_params": float(sum(p.numel() for p in trainable(model)))}


@register("fisher")
class Fisher(Probe):
    """``fisher_stats`` on ``examples`` training examples, with ``top_k`` and ``search``."""

    def check(self, train_size: int) -> None:
        for key in ("examples", "top_k", "search"):
            positive_int(self.settings, key, WHERE)

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        examples = self.settings.examples  # the Gram (float64, a few copies) and one layer's chunk
        return 24 * examples ** 2 + 4 * (examples * example_floats + CHUNK_BUDGET), f"{WHERE}.examples"

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        n = ctx.x_train.shape[0]
        index = ctx.sample_index(min(self.settings.examples, n))
        return fisher_stats(ctx.model, ctx.loss_fn, ctx.x_train[index], ctx.y_train[index],
                            top_k=self.settings.top_k, search=self.settings.search), {}

"""The gradient-confusion probe the training loop calls at each probe event (``cfg.probe``).

``cfg.mode`` picks what is measured at the current weights, with the BatchNorm convention
``cfg.bn_mode`` (see ``bn_convention``; train for the mini-batch modes, eval for per_example):
- ``minibatch_pairs``: the paper's protocol, ``cfg.pairs`` pairs of mini-batches of
  ``cfg.batch_size`` examples each, one inner product and cosine per pair;
- ``all_pairs``: ``cfg.batches`` mini-batches of ``cfg.batch_size``, all K (K - 1) / 2 pairs;
- ``per_example``: ``cfg.examples`` examples, all pairs of per-example gradients, plus the
  mean gradient norm and the extreme eigenvalues of the per-example Gram matrix (the empirical
  NTK up to loss-derivative weights).
Each mini-batch (and the per-example set) is drawn uniformly without replacement within itself,
independently of the others, using only ``generator``; the global RNG is never touched.
``cfg.group``: mini-batch gradients computed per vmapped call (1: a backward pass each; pairs.group_size).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfusionError
from .gram import per_example_gram
from .naive import BN_MODES, LossFn
from .pairs import all_pairs_stats, minibatch_pair_stats
from .stats import SAMPLES, gram_pair_statistics

MODES = ("minibatch_pairs", "all_pairs", "per_example")


def check_bn_mode(cfg) -> str:
    """``cfg.bn_mode`` if the probe ``cfg.mode`` supports it, else a one-line ConfusionError."""
    mode = cfg.get("bn_mode", "train")
    if mode not in BN_MODES:
        raise ConfusionError(f"unknown probe.bn_mode '{mode}': choose train (the gradient SGD "
                             "takes, batch statistics) or eval (running statistics)")
    if mode == "train" and cfg.get("mode") == "per_example":
        raise ConfusionError("probe=per_example needs probe.bn_mode=eval: in train mode BatchNorm "
                             "couples the examples of a batch, so per-example gradients are not defined")
    return mode


def _sample(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` distinct indices in [0, n), drawn with ``generator`` on its device."""
    if size > n:
        raise ConfusionError(f"the probe needs {size} distinct examples but the training set has "
                             f"{n}: lower probe.batch_size / probe.examples")
    return torch.randperm(n, generator=generator, device=generator.device)[:size]


def confusion_probe(model: nn.Module, loss_fn: LossFn, x_train: torch.Tensor, y_train: torch.Tensor,
                    cfg, generator: torch.Generator,
                    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
                    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """(scalars, samples) of the probe ``cfg.mode`` at the current weights of ``model``.

    scalars: min_inner (= -eta, the confusion), min_cos, mean_cos, mean_inner, q05_cos, q50_cos,
    frac_neg_cos, n_pairs, and in per_example mode grad_norm_mean, gram_eig_min, gram_eig_max.
    samples: {"cos", "inner"}, every pair's value (float64, CPU). The parameters, their .grad
    and every module's train/eval mode are left as they were.
    """
    mode = check_bn_mode(cfg)
    n = x_train.shape[0]

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = _sample(n, size, generator).to(x_train.device)
        x = x_train[index]
        return (x if augment is None else augment(x)), y_train[index]

    group = cfg.get("group", 1)
    if cfg.mode == "minibatch_pairs":
        stats = minibatch_pair_stats(model, loss_fn,
                                     [(batch(cfg.batch_size), batch(cfg.batch_size))
                                      for _ in range(cfg.pairs)], group, mode)
    elif cfg.mode == "all_pairs":
        stats = all_pairs_stats(model, loss_fn, [batch(cfg.batch_size) for _ in range(cfg.batches)],
                                chunk_size=cfg.chunk_size, group=group, mode=mode)
    elif cfg.mode == "per_example":
        x, y = batch(cfg.examples)
        gram = per_example_gram(model, loss_fn, x, y, chunk_size=cfg.chunk_size).double()
        stats = gram_pair_statistics(gram)
        eigenvalues = torch.linalg.eigvalsh(gram.cpu())
        stats |= {"grad_norm_mean": gram.diagonal().clamp_min(0).sqrt().mean().item(),
                  "gram_eig_min": eigenvalues[0].item(), "gram_eig_max": eigenvalues[-1].item()}
    else:
        raise ConfusionError(f"unknown probe.mode '{cfg.mode}': choose one of {', '.join(MODES)}")
    samples = {key: stats.pop(key) for key in SAMPLES}
    return stats, samples

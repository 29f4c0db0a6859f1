"""Gradient confusion, the probe the ``probe`` config group chooses (``probe.mode``).

Each mode measures at the current weights, with the BatchNorm convention ``probe.bn_mode``
(see ``bn_convention``; train for the mini-batch modes, eval for per_example):
- ``minibatch_pairs``: the paper's protocol, ``pairs`` pairs of mini-batches of
  ``batch_size`` examples each, one inner product and cosine per pair;
- ``all_pairs``: ``batches`` mini-batches of ``batch_size``, all K (K - 1) / 2 pairs;
- ``per_example``: ``examples`` examples, all pairs of per-example gradients, plus the
  mean gradient norm and the extreme eigenvalues of the per-example Gram matrix (the empirical
  NTK up to loss-derivative weights).
Each mini-batch (and the per-example set) is drawn uniformly without replacement within itself,
independently of the others, using only the probe generator; the global RNG is never touched.
``group``: mini-batch gradients computed per vmapped call (1: a backward pass each; pairs.group_size).

Scalars: min_inner (= -eta, the confusion), min_cos, mean_cos, mean_inner, q05_cos, q50_cos,
frac_neg_cos, n_pairs; samples: {"cos", "inner"}, every pair's value (float64, CPU).
"""

from __future__ import annotations

import torch

from ..errors import ConfusionError
from ..spec import probe_key_modes
from .base import Probe, ProbeContext, Samples, Scalars, fits, positive_int, register
from .gram import CHUNK_BUDGET, per_example_gram
from .naive import BN_MODES
from .pairs import GRADIENT_BUDGET_BYTES, all_pairs_stats, check_group, minibatch_pair_stats
from .stats import SAMPLES, gram_pair_statistics


def check_bn_mode(cfg) -> str:
    """``cfg.bn_mode`` if the probe ``cfg.mode`` supports it, else a one-line ConfusionError."""
    mode = cfg.bn_mode
    if mode not in BN_MODES:
        raise ConfusionError(f"unknown probe.bn_mode '{mode}': choose train (the gradient SGD "
                             "takes, batch statistics) or eval (running statistics)")
    if mode == "train" and cfg.mode == "per_example":
        raise ConfusionError("probe=per_example needs probe.bn_mode=eval: in train mode BatchNorm "
                             "couples the examples of a batch, so per-example gradients are not defined")
    return mode


class ConfusionProbe(Probe):
    """The shared checks and the split into scalars and samples of the three modes."""

    kind = "confusion"  # chosen by probe.mode, its settings the probe node
    size_key = "batch_size"  # the setting that must fit in the training set

    def check(self, train_size: int) -> None:
        """The settings this mode reads (the run spec's ``probe_key_modes``); another mode's key
        is left to `confusion run`'s check of the command line (one line naming its mode)."""
        for key in ("pairs", "batches", "examples", "batch_size"):
            if self.settings.mode in (probe_key_modes(key) or (self.settings.mode,)):
                positive_int(self.settings, key, "probe")
        positive_int(self.settings, "chunk_size", "probe", allow_none=True)
        check_group(self.settings.group)
        check_bn_mode(self.settings)
        fits(self.settings, self.size_key, "probe", train_size)

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        stats = self.statistics(ctx, check_bn_mode(self.settings), self.settings.group)
        samples = {key: stats.pop(key) for key in SAMPLES}
        return stats, samples

    def statistics(self, ctx: ProbeContext, bn_mode: str, group: int) -> dict:
        raise NotImplementedError


@register("minibatch_pairs")
class MinibatchPairs(ConfusionProbe):
    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        inputs = 2 * self.settings.pairs * self.settings.batch_size * example_floats  # drawn up front
        return 4 * (inputs + 2 * self.settings.group * params), "probe.pairs"

    def statistics(self, ctx: ProbeContext, bn_mode: str, group: int) -> dict:
        size = self.settings.batch_size
        pairs = [(ctx.batch(size), ctx.batch(size)) for _ in range(self.settings.pairs)]
        return minibatch_pair_stats(ctx.model, ctx.loss_fn, pairs, group, bn_mode)


@register("all_pairs")
class AllPairs(ConfusionProbe):
    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        batches = self.settings.batches
        held = min(batches, self.settings.chunk_size or GRADIENT_BUDGET_BYTES // (4 * params) or 1)
        floats = batches * self.settings.batch_size * example_floats + 2 * held * params
        return 4 * floats + 8 * batches ** 2, "probe.batches"

    def statistics(self, ctx: ProbeContext, bn_mode: str, group: int) -> dict:
        batches = [ctx.batch(self.settings.batch_size) for _ in range(self.settings.batches)]
        return all_pairs_stats(ctx.model, ctx.loss_fn, batches, chunk_size=self.settings.chunk_size,
                               group=group, mode=bn_mode)


@register("per_example")
class PerExample(ConfusionProbe):
    size_key = "examples"

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        examples = self.settings.examples  # the Gram (float64, a few copies) and one layer's chunk
        return 24 * examples ** 2 + 4 * (examples * example_floats + CHUNK_BUDGET), "probe.examples"

    def statistics(self, ctx: ProbeContext, bn_mode: str, group: int) -> dict:
        x, y = ctx.batch(self.settings.examples)
        gram = per_example_gram(ctx.model, ctx.loss_fn, x, y,
                                chunk_size=self.settings.chunk_size).double()
        stats = gram_pair_statistics(gram)
        eigenvalues = torch.linalg.eigvalsh(gram.cpu())
        return stats | {"grad_norm_mean": gram.diagonal().clamp_min(0).sqrt().mean().item(),
                        "gram_eig_min": eigenvalues[0].item(), "gram_eig_max": eigenvalues[-1].item()}

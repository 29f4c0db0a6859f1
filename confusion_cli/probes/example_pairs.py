"""Per-example gradient confusion on a fixed subset: a second estimator beside the mini-batch one.

``examples`` training examples, the same ones at every probe event, for every seed and every
architecture (the first ``examples`` indices of a permutation drawn from ``subset_seed``, not from
the probe generator), and all B (B - 1) / 2 pairs of their exact per-example gradients, BatchNorm
with running statistics (eval mode, the only mode where per-example gradients are defined).
Because the examples never change, the estimator adds no sampling noise between events or
architectures: differences come from the weights alone.

Scalars, prefixed ``ex_``: ex_min_inner, ex_min_cos, ex_mean_cos, ex_q05_cos, ex_q50_cos,
ex_frac_neg_cos, ex_n_pairs (see ``stats.pair_statistics``); no per-pair samples are stored.
"""

from __future__ import annotations

import torch

from ..errors import ConfusionError
from .base import Probe, ProbeContext, Samples, Scalars, fits, positive_int, register
from .gram import CHUNK_BUDGET, per_example_gram
from .stats import SAMPLES, gram_pair_statistics


@register("example_pairs")
class ExamplePairs(Probe):
    def check(self, train_size: int) -> None:
        positive_int(self.settings, "examples", "extra_probes.example_pairs")
        if self.settings.examples < 2:
            raise ConfusionError("extra_probes.example_pairs.examples must be at least 2 (one pair)")
        if not isinstance(self.settings.get("subset_seed"), int) or isinstance(
                self.settings.get("subset_seed"), bool) or self.settings.subset_seed < 0:
            raise ConfusionError("extra_probes.example_pairs.subset_seed must be a non-negative "
                                 f"integer, got {self.settings.get('subset_seed')!r}")
        fits(self.settings, "examples", "extra_probes.example_pairs", train_size)

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        examples = self.settings.examples  # the Gram (float64, a few copies) and one layer's chunk
        return (24 * examples ** 2 + 4 * (examples * example_floats + CHUNK_BUDGET),
                "extra_probes.example_pairs.examples")

    def subset(self, n: int) -> torch.Tensor:
        """The fixed example indices: the same for every event, seed and architecture."""
        generator = torch.Generator().manual_seed(int(self.settings.subset_seed))
        return torch.randperm(n, generator=generator)[: self.settings.examples]

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        index = self.subset(ctx.x_train.shape[0]).to(ctx.x_train.device)
        gram = per_example_gram(ctx.model, ctx.loss_fn, ctx.x_train[index], ctx.y_train[index]).double()
        stats = gram_pair_statistics(gram)
        return {f"ex_{key}": value for key, value in stats.items() if key not in SAMPLES}, {}

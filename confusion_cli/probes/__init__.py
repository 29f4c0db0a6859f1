"""Probes: statistics of the gradients at the current weights, computed without changing them.

BatchNorm convention: every probe computes gradients with the model in eval mode, so that
BatchNorm uses its running statistics, examples are independent and a per-example gradient is
well defined (in train mode BN couples the examples of a batch). At initialisation the running
statistics are (mean 0, variance 1): BN is then an affine map, which is part of the convention.
Each module's train/eval mode is restored afterwards. ``BN_CONVENTION`` is written into each
run's record.

Loss functions are mean-reduced over the batch; g_i is the gradient of the loss on example i
alone, a mini-batch gradient the gradient of the mean loss on that batch.
"""

from .confusion import MODES, confusion_probe
from .extra import EXTRA_PROBES, run_extra
from .gram import per_example_gram
from .naive import naive_per_example_gram
from .pairs import all_pairs_stats, minibatch_pair_stats
from .stats import gram_pair_statistics, pair_statistics

BN_CONVENTION = ("eval: gradients are taken with every module in eval mode (BatchNorm uses its "
                 "running statistics, examples are independent)")

__all__ = ["BN_CONVENTION", "EXTRA_PROBES", "MODES", "all_pairs_stats", "confusion_probe",
           "gram_pair_statistics", "minibatch_pair_stats", "naive_per_example_gram",
           "pair_statistics", "per_example_gram", "run_extra"]

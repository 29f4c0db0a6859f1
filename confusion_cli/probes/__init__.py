"""Probes: statistics of the gradients at the current weights, computed without changing them.

BatchNorm convention (``probe.bn_mode``, written into each run's record by ``bn_convention``):
- ``train``, the default of the mini-batch probes (minibatch_pairs, all_pairs): each mini-batch
  gradient is the one an SGD step takes on that batch, BatchNorm normalising with the batch's
  own statistics; running statistics are neither used nor updated, and every buffer is restored.
- ``eval``, the only mode of per_example (and of the rank / Hessian probes): BatchNorm uses its
  running statistics, so examples are independent and per-example gradients are defined. At
  initialisation the running statistics are (mean 0, variance 1) and BN is an affine map.
Each module's train/eval mode is restored afterwards.

Loss functions are mean-reduced over the batch; g_i is the gradient of the loss on example i
alone, a mini-batch gradient the gradient of the mean loss on that batch.
"""

from .confusion import MODES, check_bn_mode, confusion_probe
from .extra import EXTRA_PROBES, run_extra
from .gram import per_example_gram
from .naive import BN_MODES, bn_mode, naive_per_example_gram
from .pairs import all_pairs_stats, minibatch_pair_stats
from .stats import gram_pair_statistics, pair_statistics

BN_CONVENTIONS = {
    "train": ("train: each mini-batch gradient is the one SGD steps on (BatchNorm uses the batch's "
              "own statistics; running statistics untouched)"),
    "eval": ("eval: gradients are taken with every module in eval mode (BatchNorm uses its "
             "running statistics, examples are independent)"),
}


def bn_convention(cfg) -> str:
    """The sentence run.json records for the probe config ``cfg`` (its ``bn_mode``)."""
    return BN_CONVENTIONS[check_bn_mode(cfg)]


__all__ = ["BN_CONVENTIONS", "BN_MODES", "EXTRA_PROBES", "MODES", "all_pairs_stats", "bn_convention",
           "bn_mode", "check_bn_mode", "confusion_probe",
           "gram_pair_statistics", "minibatch_pair_stats", "naive_per_example_gram",
           "pair_statistics", "per_example_gram", "run_extra"]

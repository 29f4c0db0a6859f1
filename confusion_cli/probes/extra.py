"""Extra probes by name: statistics beyond gradient confusion, run at the confusion probe's cadence.

``cfg.extra_probes`` lists names of ``EXTRA_PROBES``; the Trainer calls ``run_extra(name, self)``
after the confusion probe (eval mode, TF32 off) and merges the returned scalars into that
epoch's metrics row. A probe reads the trainer's model, data, loss and probe generator and
leaves the parameters, their gradients and the module modes as it found them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfusionError
from .hessian import hessian_probe
from .rank import rank_probe

if TYPE_CHECKING:
    from ..train import Trainer

EXTRA_PROBES: dict[str, Callable[[Trainer], dict[str, float]]] = {
    "rank": rank_probe,        # rank_eff_*, rank_num_*: effective / numerical rank of each weight
    "hessian": hessian_probe,  # hess_top1..k: top Hessian eigenvalues of the training loss
}


def run_extra(name: str, trainer: Trainer) -> dict[str, float]:
    """The scalars of the extra probe ``name`` at the trainer's current weights."""
    if name not in EXTRA_PROBES:
        raise ConfusionError(f"unknown extra probe '{name}': choose from {', '.join(EXTRA_PROBES)} "
                             "(extra_probes=[NAME,...])")
    return EXTRA_PROBES[name](trainer)

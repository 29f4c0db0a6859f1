"""Optional trackers beside the records (``logger=tensorboard``): off by default, imported only
when chosen. The records stay the source of truth; a tracker is a view for live monitoring.

``tensorboard`` writes, into the run directory's ``tensorboard/``, every numeric column of each
metrics row as a scalar against the SGD step (so epoch rows and step-level probe rows share one
axis) and, at each probe, the histogram of the pair cosines.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import ConfusionError

TRACKERS = ("none", "tensorboard")


def check(name: str) -> None:
    if name not in TRACKERS:
        raise ConfusionError(f"unknown logger '{name}': choose {' or '.join(TRACKERS)} (logger=NAME)")
    if name == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfusionError("logger=tensorboard needs the tensorboard package: pip install "
                                 "tensorboard (or 'confusion[tensorboard]')") from None


class Tracker:
    """The no-op tracker (``logger=none``)."""

    def log(self, row: dict[str, float], samples: dict[str, torch.Tensor]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, row: dict[str, float], samples: dict[str, torch.Tensor]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        if "cos" in samples:
            self.writer.add_histogram("pair_cos", samples["cos"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tracker(name: str, run_dir: Path) -> Tracker:
    check(name)
    return TensorBoard(run_dir) if name == "tensorboard" else Tracker()

"""Optional trackers beside the records (``logger=tensorboard``): off by default, imported only
when chosen. The records stay the source of truth; a tracker is a view for live monitoring.

``tensorboard`` writes every numeric column of each metrics row as a scalar against the SGD step
(so epoch rows and step-level probe rows share one axis), its tags grouped as TensorBoard's
sections: ``train/`` (losses, accuracies, lr, epoch), ``probe/`` (every probe's statistics, and
the histogram of the pair cosines ``probe/pair_cos``) and ``time/`` (the ``*_seconds``
columns). When the run ends (complete or diverged) it adds its hyperparameters (the swept
values and the model, data and optimizer settings) with its final metrics for TensorBoard's
HParams tab. In a sweep each run's events go to ``SWEEP_DIR/tensorboard/depth=8_lr=0.03_seed=1``
(its swept values), so that ``tensorboard --logdir SWEEP_DIR/tensorboard`` names the runs by
them; a single run's go to ``RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .errors import ConfusionError

TRACKERS = ("none", "tensorboard")
TRAIN_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "batch_loss")
# the hyperparameters every run reports (with the keys its sweep varies)
HPARAMS = ("sweep.name", "dataset.name", "model.name", "model.depth", "model.width", "model.batch_norm",
           "model.skip", "model.init", "optim.lr", "optim.batch_size", "optim.epochs", "seed")
# the final metrics the HParams tab shows, when the run has them
FINAL = ("train/train_loss", "train/train_acc", "train/test_loss", "train/test_acc",
         "probe/min_cos", "probe/q05_cos", "probe/mean_cos", "probe/min_inner")


def check(name: str) -> None:
    if name not in TRACKERS:
        raise ConfusionError(f"unknown logger '{name}': choose {' or '.join(TRACKERS)} (logger=NAME)")
    if name == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfusionError("logger=tensorboard needs the tensorboard package: pip install "
                                 "tensorboard (or 'confusion[tensorboard]')") from None


def tag(column: str) -> str:
    """The TensorBoard tag of a metrics column: train/..., time/... or probe/..."""
    if column in TRAIN_COLUMNS:
        return f"train/{column}"
    if column.endswith("_seconds"):
        return f"time/{column}"
    return f"probe/{column}"


def run_name(label: str, job: int | None = None) -> str:
    """'depth=8_lr=0.03_seed=1' from the swept label 'depth=8 lr=0.03 seed=1' (a folder name:
    no '/'), or 'job3' when nothing is swept."""
    name = "_".join(label.split()).replace("/", "-").replace("\\", "-")
    return name if name and name not in (".", "..") else f"job{job if job is not None else 0}"


def hparams_of(cfg: Any, swept: list[str] = ()) -> dict[str, Any]:
    """{key: value} of the run's hyperparameters: ``HPARAMS`` and the keys ``swept``, as numbers,
    booleans or strings (TensorBoard's types; null and lists as text)."""
    from omegaconf import OmegaConf

    absent = object()
    found: dict[str, Any] = {}
    for key in [*HPARAMS, *(k for k in swept if k not in HPARAMS)]:
        value = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False)
        if value is not absent:
            found[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return found


class Tracker:
    """The no-op tracker (``logger=none``)."""

    def log(self, row: dict[str, float], samples: dict[str, torch.Tensor]) -> None:
        pass

    def finish(self, status: str) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, folder: Path, hparams: dict[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        self.hparams = dict(hparams or {})
        self.last: dict[str, float] = {}

    def log(self, row: dict[str, float], samples: dict[str, torch.Tensor]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag(key), value, step)
                self.last[tag(key)] = float(value)
        if "cos" in samples:
            self.writer.add_histogram("probe/pair_cos", samples["cos"], step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        """The run's hyperparameters and final metrics (the last value of each ``FINAL`` tag) for
        the HParams tab, in the run's own event file (no sub-run), its status among them."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {name: self.last[name] for name in FINAL if name in self.last}
        exp, start, end = hparams({**self.hparams, "status": status}, metrics)
        for summary in (exp, start, end):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tracker(name: str, run_dir: Path, folder: Path | None = None,
            hparams: dict[str, Any] | None = None) -> Tracker:
    """The tracker ``name``: TensorBoard's writes into ``folder`` (default RUN_DIR/tensorboard)."""
    check(name)
    if name != "tensorboard":
        return Tracker()
    return TensorBoard(folder if folder is not None else run_dir / "tensorboard", hparams)

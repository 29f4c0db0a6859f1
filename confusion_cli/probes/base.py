"""The probe protocol: what a probe sees (ProbeContext), what it is (Probe), when it runs (Schedule).

A probe is one statistic of the gradients (or weights) at the current weights. It is built from
its own config node, checks that node against the training-set size before training starts
(``check``: a one-line ConfusionError), and measures from a ProbeContext, never from the
training loop: model, loss, training data, its own random generator and the augmentation.
It leaves the parameters, their ``.grad``, buffers and module modes as it found them.

Adding a statistic is one file in this package holding a ``@register("name")`` subclass of
Probe, one config file ``configs/extra_probes/name.yaml`` (its settings, under ``name:``) and
one test; ``extra_probes=[name]`` then runs it at the probe schedule.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfusionError, is_count
from .naive import LossFn

Scalars = dict[str, float]
Samples = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may read: the model at its current weights, the loss, the training set, the
    probes' own random generator (never the training one) and the augmentation, if probes use it."""

    model: nn.Module
    loss_fn: LossFn
    x_train: torch.Tensor
    y_train: torch.Tensor
    generator: torch.Generator
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None

    def sample_index(self, size: int) -> torch.Tensor:
        """``size`` distinct training indices, drawn uniformly with the probe generator."""
        n = self.x_train.shape[0]
        if size > n:
            raise ConfusionError(f"the probe needs {size} distinct examples but the training set "
                                 f"has {n}: lower the probe's batch_size / examples")
        index = torch.randperm(n, generator=self.generator, device=self.generator.device)[:size]
        return index.to(self.x_train.device)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A mini-batch of ``size`` distinct training examples (augmented if probes augment)."""
        index = self.sample_index(size)
        x = self.x_train[index]
        return (x if self.augment is None else self.augment(x)), self.y_train[index]


class Probe(ABC):
    """One statistic at the current weights, configured by its config node ``settings``.

    ``kind``: "confusion" for the probes ``probe.mode`` chooses (their settings are the ``probe``
    node), "extra" for those ``extra_probes=[...]`` chooses (settings: ``extra_probes.NAME``)."""

    name: ClassVar[str]
    kind: ClassVar[str] = "extra"

    def __init__(self, settings: Any):
        self.settings = settings

    def check(self, train_size: int) -> None:
        """Raise a one-line ConfusionError if the settings cannot work on ``train_size`` examples
        (the default: any settings work)."""
        return None

    def check_model(self, model: nn.Module) -> None:
        """Raise a one-line ConfusionError if the probe cannot measure ``model`` (built on the meta
        device before training: shapes and types only; the default: any model)."""
        return None

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        """(bytes, the setting that sets them): an estimate of the largest memory the probe holds
        for a model of ``params`` float32 parameters on examples of ``example_floats`` floats."""
        return 0, ""

    @abstractmethod
    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        """(scalars for the metrics row, per-pair samples or {}) at the current weights."""


PROBES: dict[str, type[Probe]] = {}


def register(name: str) -> Callable[[type[Probe]], type[Probe]]:
    """Class decorator: make the Probe subclass available as ``name``."""

    def add(cls: type[Probe]) -> type[Probe]:
        cls.name = name
        PROBES[name] = cls
        return cls

    return add


def positive_int(settings: Any, key: str, where: str, allow_none: bool = False) -> None:
    """A one-line ConfusionError unless ``settings[key]`` is a positive integer (or None)."""
    value = settings.get(key)
    if not is_count(value, allow_none=allow_none):
        extra = " or null (automatic)" if allow_none else ""
        raise ConfusionError(f"{where}.{key} must be a positive integer{extra}, got {value!r}")


def fits(settings: Any, key: str, where: str, train_size: int) -> None:
    """A one-line ConfusionError if the probe asks for more distinct examples than there are."""
    if settings[key] > train_size:
        raise ConfusionError(f"{where}.{key}={settings[key]} is larger than the training set "
                             f"({train_size} examples): lower {where}.{key}")


# -- when probes run ---------------------------------------------------------------------------
SCHEDULES = "epoch, steps:N (every N SGD steps) or log:K (about K points per decade of steps)"


@dataclass(frozen=True)
class Schedule:
    """When the probes run, from ``probe.schedule`` (with ``probe.every`` and ``probe.at_init``).

    - ``epoch``: after every ``every``-th epoch;
    - ``steps:N``: after every N-th SGD step;
    - ``log:K``: after steps round(10^(i/K)), i = 0, 1, ... (about K per decade);
    and always after the run's last step, however it ends (its epochs or ``optim.max_steps``).
    Step 0 (initialisation) is probed when ``at_init``. A probe that falls on the last step of an
    epoch is part of that epoch's row; any other is a row of its own (a fractional epoch).
    """

    kind: str = "epoch"
    n: int = 1
    at_init: bool = True

    @classmethod
    def from_config(cls, probe_cfg: Any) -> Schedule:
        """The schedule of the probe config ``probe_cfg`` (its schedule, every, at_init), checked."""
        positive_int(probe_cfg, "every", "probe")
        return cls.parse(probe_cfg.schedule, probe_cfg.every, probe_cfg.at_init)

    @classmethod
    def parse(cls, text: Any, every: int = 1, at_init: bool = True) -> Schedule:
        kind, _, count = str(text).partition(":")
        if kind == "epoch" and not count:
            return cls("epoch", every, bool(at_init))
        if kind in ("steps", "log") and count.isdigit() and int(count) >= 1:
            return cls(kind, int(count), bool(at_init))
        raise ConfusionError(f"unknown probe.schedule '{text}': choose {SCHEDULES}")

    def at_step(self, step: int) -> bool:
        """Whether a step schedule probes after SGD step ``step`` (never for ``epoch``)."""
        if self.kind == "epoch":
            return False
        if step == 0:
            return self.at_init
        if self.kind == "log":
            near = round(self.n * math.log10(step))
            return any(round(10 ** (i / self.n)) == step for i in (near - 1, near, near + 1))
        return step % self.n == 0

    def at_epoch_end(self, epoch: int, step: int, last: bool) -> bool:
        """Whether the row of epoch ``epoch`` (ending at ``step``) carries a probe: always the
        run's ``last`` row (train.finished: its epochs done or its max_steps taken)."""
        if last:
            return True
        if epoch == 0:
            return self.at_init
        return epoch % self.n == 0 if self.kind == "epoch" else self.at_step(step)

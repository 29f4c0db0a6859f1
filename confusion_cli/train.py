"""The SGD loop: model, optimizer, random generators and probes; yields records, writes no file.

Data stay on the training device; a batch is an index into the resident tensors (no
DataLoader, no per-image Python), and the loss is read back to the host once per epoch, not per
step. ``run.py`` writes what ``Trainer.run`` yields and runs it inside ``backend.backend``
(threads, TF32, cuDNN flags set for the run and restored after).

Conventions recorded with every run:
- ``train_loss`` / ``train_acc`` at epoch e >= 1 are means over that epoch's SGD mini-batches
  (what SGD saw, augmented if augmentation is on); at epoch 0 (initialization) they come from
  one pass over the training set in eval mode.
- The probes run at the events of their Schedule (after an epoch's last step, or after a given
  step), with BatchNorm in ``probe.bn_mode`` (see probes.bn_convention; running statistics
  untouched), with TF32 off, from their own random generator, so probing never changes the
  training path. A probe between two steps of an epoch is a row of its own: a fractional
  ``epoch``, its ``step``, ``lr``, the ``batch_loss`` of that step's mini-batch and the probes'
  columns; evaluation happens only at epoch ends.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from omegaconf import ListConfig
from torch import nn

from . import probes
from .backend import exact_matmul
from .data import Data, augment_batch
from .errors import ConfusionError, is_count, is_number
from .models import build_model

PROBE_SEED_OFFSET = 1_000_003  # the probe's generator is seeded with seed + this


def regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * mean squared error of a scalar output."""
    return 0.5 * (output.reshape(-1) - target).pow(2).mean()


def loss_for(task: str):
    return F.cross_entropy if task == "classification" else regression_loss


UPDATES = ("auto", "hooks", "step", "fused")


LR_MAX = 1e3  # a larger step diverges at once for every model here; checked before anything runs
EPOCHS_MAX = 1_000_000
COUNT_MAX = 1 << 31  # batch sizes and step counts: beyond this no tensor of the run fits anyway


def check_optim(optim: Any) -> None:
    """A one-line ConfusionError for an optimizer setting SGD cannot run with."""
    if not (is_number(optim.lr) and math.isfinite(optim.lr) and 0 < optim.lr <= LR_MAX):
        raise ConfusionError(f"optim.lr must be a positive number, got {optim.lr} (finite, at "
                             f"most {LR_MAX:g}; true/false are not numbers)")
    for key, minimum, limit in (("batch_size", 1, COUNT_MAX), ("epochs", 0, EPOCHS_MAX)):
        if not (is_count(optim[key], minimum=minimum) and optim[key] <= limit):
            kind = "positive" if minimum else "non-negative"
            raise ConfusionError(f"optim.{key} must be a {kind} integer (at most {limit}), "
                                 f"got {optim[key]!r}")
    for key, below in (("momentum", 1), ("weight_decay", math.inf)):
        if not (is_number(optim[key]) and math.isfinite(optim[key]) and 0 <= optim[key] < below):
            bound = "and < 1" if below == 1 else "and finite"
            raise ConfusionError(f"optim.{key} must be a number >= 0 {bound}, got {optim[key]!r}")
    if not (is_number(optim.gamma) and math.isfinite(optim.gamma) and optim.gamma > 0):
        raise ConfusionError(f"optim.gamma must be a finite positive number, got {optim.gamma!r}")
    milestones = optim.milestones
    if milestones is None:
        milestones = []
    if not (isinstance(milestones, (list, ListConfig)) and all(is_count(m) for m in milestones)):
        shown = list(milestones) if isinstance(milestones, ListConfig) else milestones
        raise ConfusionError(f"optim.milestones must be a list of positive epoch numbers, got "
                             f"{shown!r} (e.g. optim.milestones=[80,160])")
    update = optim["update"]  # not optim.update: the mapping's own method
    if update not in UPDATES:
        raise ConfusionError(f"unknown optim.update '{update}': choose {', '.join(UPDATES)}")
    if update == "hooks" and (optim.momentum or optim.weight_decay):
        raise ConfusionError("optim.update=hooks applies plain SGD only: with momentum or weight "
                             "decay use optim.update=step or fused")
    steps = optim.max_steps
    if not (is_count(steps, minimum=0, allow_none=True) and (steps is None or steps <= COUNT_MAX)):
        raise ConfusionError(f"optim.max_steps must be a non-negative integer or null, got {steps!r}")
    stop = optim.stop_loss
    if stop is not None and not (is_number(stop) and math.isfinite(stop) and stop > 0):
        raise ConfusionError(f"optim.stop_loss must be a positive number or null, got {stop!r} "
                             "(e.g. optim.stop_loss=0.001: stop once an epoch's training loss is that low)")
    stop = optim.stop_acc
    if stop is not None and not (is_number(stop) and 0 < stop <= 1):
        raise ConfusionError(f"optim.stop_acc must be a number in (0, 1] or null, got {stop!r} "
                             "(e.g. optim.stop_acc=1: stop at the first epoch that fits every example)")


def finished(optim: Any, epoch: int, step: int, last: dict[str, float] | None = None) -> bool:
    """Whether a run that has done ``epoch`` epochs and ``step`` SGD steps is over: its
    ``optim.epochs`` done, its ``optim.max_steps`` taken, or its last epoch's statistics ``last``
    at a stopping level: mean training loss at or below ``optim.stop_loss``, training accuracy at
    or above ``optim.stop_acc`` (a diverged run ends too, but on its loss, not here). The one
    decision of the end: the loop stops on it, the last row carries a probe on it, no checkpoint
    follows it (run.py) and the bench counts probe events with it (as an upper bound where a
    stopping level may end the run sooner)."""
    max_steps = optim.max_steps
    if epoch >= optim.epochs or (max_steps is not None and step >= max_steps):
        return True
    if not last:
        return False
    stop_loss, stop_acc = optim.stop_loss, optim.stop_acc
    return ((stop_loss is not None and last["train_loss"] <= stop_loss)
            or (stop_acc is not None and last["train_acc"] >= stop_acc))


def steps_in_epoch(optim: Any, steps_per_epoch: int, step: int) -> int:
    """The SGD steps of the epoch that starts after step ``step``: a whole epoch, or what
    ``optim.max_steps`` leaves of it (0 once it is spent)."""
    max_steps = optim.max_steps
    return steps_per_epoch if max_steps is None else max(0, min(steps_per_epoch, max_steps - step))


class Event(NamedTuple):
    """One row of metrics.csv with its probe samples. ``epoch_end``: the row closes an epoch (a
    checkpoint may follow); ``diverged``: the training loss is no longer finite (the last event);
    ``last``: the run's last event, diverged or ``finished`` (no checkpoint follows it)."""

    row: dict[str, float]
    samples: dict[str, torch.Tensor]
    diverged: bool
    epoch_end: bool
    last: bool = False


class Trainer:
    """Plain SGD (optionally momentum, weight decay, step milestones) on device-resident data.

    Takes the model, the data, the ``optim`` settings and the probes with their schedule; backend
    flags (threads, TF32, cuDNN) are not the Trainer's. ``Trainer.from_config`` builds one from a
    run's whole config.
    """

    def __init__(self, model: nn.Module, data: Data, optim: Any, *, seed: int, device: torch.device,
                 probe_list: Sequence[probes.Probe] = (), schedule: probes.Schedule | None = None,
                 probe_augment: bool = False, eval_batch_size: int = 1000, compile: bool = False):
        self.model, self.data, self.optim, self.device = model, data, optim, device
        self.probes, self.schedule = list(probe_list), schedule or probes.Schedule()
        self.eval_batch_size = eval_batch_size
        self.loss_fn = loss_for(data.task)
        update = optim["update"]  # not optim.update: the mapping's own method
        self.optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                                         weight_decay=optim.weight_decay,
                                         fused=True if update == "fused" else None)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(optim.milestones or []), gamma=optim.gamma)
        # Plain SGD (the paper's protocol) is applied inside the backward pass: each parameter
        # takes p -= lr * g as soon as its gradient is complete, and the gradient is dropped.
        # It is torch.optim.SGD's own update for momentum = weight decay = 0, bit for bit, but
        # it touches each gradient while it is still in cache and needs no zero_grad / step
        # passes. Gated by _in_step, so the probes' backward passes never update anything.
        # Momentum or weight decay, or optim.update=step|fused: optimizer.step() as usual
        # (fused: torch's single-kernel SGD); `make bench` times the three.
        plain = optim.momentum == 0 and optim.weight_decay == 0
        self.update_in_backward = update == "hooks" or (update == "auto" and plain)
        self._in_step = False
        if self.update_in_backward:
            # The hook holds the Trainer weakly: a parameter's hooks live in the autograd graph,
            # out of reach of Python's garbage collector, so a bound method there would keep every
            # Trainer (data included) alive for good in a long-lived sweep worker.
            trainer = weakref.ref(self)

            def sgd_update(param: torch.Tensor) -> None:
                if (owner := trainer()) is not None:
                    owner._sgd_update(param)

            for param in model.parameters():
                param.register_post_accumulate_grad_hook(sgd_update)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.probe_generator = torch.Generator(device).manual_seed(seed + PROBE_SEED_OFFSET)
        augment = None
        if data.augment and probe_augment:
            augment = lambda x: augment_batch(x, self.probe_generator)  # noqa: E731
        self.probe_context = probes.ProbeContext(model, self.loss_fn, data.x_train, data.y_train,
                                                 self.probe_generator, augment)
        n = data.x_train.shape[0]
        self.batch_size = n if optim.full_batch else min(optim.batch_size, n)
        self.steps_per_epoch = n // self.batch_size
        self.epoch = 0
        self.step = 0
        self.init_recorded = False  # the epoch-0 record (initialization) has been yielded
        # the last epoch's train_loss and train_acc (optim.stop_loss, optim.stop_acc), None before
        self.last_epoch: dict[str, float] | None = None
        self.on_step: Callable[[int], None] | None = None  # called after each SGD step (live progress)
        # torch.compile'd forward for training only; probes and evaluation use the plain module
        self.forward = torch.compile(model) if compile else model

    @classmethod
    def from_config(cls, cfg: Any, data: Data, device: torch.device) -> Trainer:
        """The Trainer of a run's config: the model initialised from ``cfg.seed``, the probes of
        ``cfg.probe`` and ``cfg.extra_probes`` at the schedule ``cfg.probe.schedule``."""
        torch.manual_seed(cfg.seed)  # model initialisation
        model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
        if device.type == "cuda" and cfg.channels_last and len(data.input_shape) == 3:
            model = model.to(memory_format=torch.channels_last)
        probe = cfg.probe
        return cls(model, data, cfg.optim, seed=cfg.seed, device=device,
                   probe_list=probes.build(probe, cfg.get("extra_probes")),
                   schedule=probes.Schedule.from_config(probe),
                   probe_augment=bool(probe.augment), eval_batch_size=cfg.eval_batch_size,
                   compile=cfg.compile)

    # -- state, for checkpoints ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "probe_generator": self.probe_generator.get_state(),
                "epoch": self.epoch, "step": self.step, "init_recorded": self.init_recorded,
                "last_epoch": self.last_epoch, "device_type": self.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a ``state_dict``. A state that does not fit (a key missing or of the wrong type,
        tensors of other shapes: a corrupt or planted checkpoint) is a ValueError naming what is
        wrong; the trainer may then hold part of it and must be built afresh."""
        if not isinstance(state, dict):
            raise ValueError(f"a state is a dict, not {type(state).__name__}")
        missing = sorted(set(self.state_dict()) - {"device_type", "last_epoch"} - set(state))
        if missing:
            raise ValueError(f"the state lacks {', '.join(missing)}")
        for key in ("epoch", "step"):
            if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
                raise ValueError(f"the state's {key} is {state[key]!r}, not a count")
        if not isinstance(state["init_recorded"], bool):
            raise ValueError(f"the state's init_recorded is {state['init_recorded']!r}")
        last_epoch = state.get("last_epoch")  # absent from checkpoints written before stop_loss
        if last_epoch is not None and not (
                isinstance(last_epoch, dict) and set(last_epoch) == {"train_loss", "train_acc"}
                and all(isinstance(v, float) for v in last_epoch.values())):
            raise ValueError(f"the state's last_epoch is {last_epoch!r}, not train_loss and train_acc")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            self.probe_generator.set_state(state["probe_generator"])
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError, IndexError) as exc:
            text = str(exc).strip()
            raise ValueError(text.splitlines()[0][:160] if text else type(exc).__name__) from None
        self.epoch, self.step = state["epoch"], state["step"]
        self.init_recorded = state["init_recorded"]
        self.last_epoch = last_epoch

    # -- the loop, top to bottom -----------------------------------------------------------
    def run(self) -> Iterator[Event]:
        """Yield the initialization row (epoch 0), then, epoch by epoch, any step-level probe
        rows and the epoch's row. Stops after the epoch whose training loss is NaN or infinite
        (``diverged``), or once ``finished`` (``optim.epochs`` done, or ``optim.max_steps`` taken,
        mid-epoch or not); the last row carries a probe however the run ends. Resumes from
        ``self.epoch`` when loaded from a checkpoint."""
        if not self.init_recorded:
            start = time.perf_counter()
            loss, acc = self.evaluate(self.data.x_train, self.data.y_train)
            row, samples = self.record({"train_loss": loss, "train_acc": acc})
            row["epoch_seconds"] = time.perf_counter() - start
            self.init_recorded = True
            diverged = not math.isfinite(loss)
            yield Event(row, samples, diverged, True, diverged or self.finished)
        while not self.finished:
            start = time.perf_counter()
            step_events: list[Event] = []
            train_stats = self.train_epoch(step_events)
            yield from step_events
            self.last_epoch = {key: float(train_stats[key]) for key in ("train_loss", "train_acc")}
            row, samples = self.record(train_stats)
            row["epoch_seconds"] = time.perf_counter() - start
            diverged = not math.isfinite(train_stats["train_loss"])
            yield Event(row, samples, diverged, True, diverged or self.finished)
            if diverged:
                return

    @property
    def finished(self) -> bool:
        """The run's epochs done, its step budget spent or a stopping level reached (``finished``)."""
        return finished(self.optim, self.epoch, self.step, self.last_epoch)

    def train_epoch(self, step_events: list[Event] | None = None) -> dict[str, float]:
        """One pass of SGD over a fresh permutation of the training set (last partial batch
        dropped); returns the epoch's mean training loss and accuracy, and appends the
        step-level probe rows the schedule asks for to ``step_events`` (none if it is None).

        The hot loop is a gather by index and the step: each step's loss and output are kept
        (as device tensors) and reduced once, after the last step, with one read to the host.
        """
        self.model.train()
        data, bs = self.data, self.batch_size
        order = torch.randperm(data.x_train.shape[0], generator=self.generator, device=self.device)
        steps = steps_in_epoch(self.optim, self.steps_per_epoch, self.step)
        losses, outputs = [], []
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            x = data.x_train.index_select(0, idx)
            if data.augment:
                x = augment_batch(x, self.generator)
            loss, output = self.sgd_step(x, data.y_train.index_select(0, idx))
            losses.append(loss)
            outputs.append(output)
            self.step += 1
            if self.on_step is not None:
                self.on_step(self.step)
            if step_events is not None and i + 1 < steps and self.schedule.at_step(self.step):
                step_events.append(self.step_event(loss, fraction=(i + 1) / self.steps_per_epoch))
        with warnings.catch_warnings():  # updates made in backward never call optimizer.step()
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        self.epoch += 1
        if not steps:
            return {"train_loss": math.nan, "train_acc": math.nan}
        loss_sum = torch.stack(losses).double().sum()
        correct = self._correct(torch.cat(outputs), data.y_train[order[:steps * bs]])
        stats = torch.stack([loss_sum / steps, correct.double() / (steps * bs)]).tolist()
        return {"train_loss": stats[0], "train_acc": self._acc(stats[1])}

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on (x, y); returns the detached loss and output (no host sync)."""
        output = self.forward(x)
        loss = self.loss_fn(output, y)
        if self.update_in_backward:
            self._in_step = True
            try:
                loss.backward()
            finally:
                self._in_step = False
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach(), output.detach()

    def _sgd_update(self, param: torch.Tensor) -> None:
        """Post-accumulate-grad hook: the plain SGD update of one parameter during a step."""
        if not self._in_step:
            return
        with torch.no_grad():
            param.add_(param.grad, alpha=-self.optimizer.param_groups[0]["lr"])
        param.grad = None

    # -- measuring -------------------------------------------------------------------------
    def _correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.data.task != "classification":
            return torch.zeros((), device=output.device, dtype=torch.int64)
        return (output.argmax(1) == y).sum()

    def _acc(self, value: float) -> float:
        return value if self.data.task == "classification" else math.nan

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy over (x, y) in eval mode, in chunks."""
        if x.shape[0] == 0:
            return math.nan, math.nan
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        chunk = self.eval_batch_size
        for i in range(0, x.shape[0], chunk):
            out = self.model(x[i:i + chunk])
            loss_sum += self.loss_fn(out, y[i:i + chunk]).double() * out.shape[0]
            correct += self._correct(out, y[i:i + chunk])
        return (loss_sum / x.shape[0]).item(), self._acc(correct.item() / x.shape[0])

    def probe(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Every probe at the current weights, TF32 off: (scalars, samples), with the seconds taken."""
        scalars: dict[str, float] = {}
        samples: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        with exact_matmul(self.device):
            for probe in self.probes:
                more_scalars, more_samples = probe.measure(self.probe_context)
                scalars.update(more_scalars)
                samples.update(more_samples)
        scalars["probe_seconds"] = time.perf_counter() - start
        return scalars, samples

    def record(self, train_stats: dict[str, float]) -> tuple[dict[str, float], dict]:
        """Evaluate, and probe if the schedule says so (always on the run's last row): one epoch
        row of metrics.csv plus samples."""
        test_loss, test_acc = self.evaluate(self.data.x_test, self.data.y_test)
        row = {"epoch": self.epoch, "step": self.step,
               "lr": self.optimizer.param_groups[0]["lr"], **train_stats,
               "test_loss": test_loss, "test_acc": test_acc}
        samples: dict[str, torch.Tensor] = {}
        due = self.schedule.at_epoch_end(self.epoch, self.step, self.finished)
        if due and math.isfinite(row["train_loss"]):
            scalars, samples = self.probe()
            row.update(scalars)
        return row, samples

    def step_event(self, loss: torch.Tensor, fraction: float) -> Event:
        """A probe between two steps of an epoch: a row at the fractional epoch it falls on."""
        row = {"epoch": self.epoch + fraction, "step": self.step,
               "lr": self.optimizer.param_groups[0]["lr"], "batch_loss": loss.item()}
        samples: dict[str, torch.Tensor] = {}
        if math.isfinite(row["batch_loss"]):
            scalars, samples = self.probe()
            row.update(scalars)
        return Event(row, samples, False, False)

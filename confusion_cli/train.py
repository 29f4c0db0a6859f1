"""The SGD loop: one object holding model, optimizer and RNG state; yields per-epoch records.

No file I/O here: ``run.py`` writes what this yields. Data stay on the training device; a
batch is an index into the resident tensors (no DataLoader, no per-image Python), and the
loss is read back to the host once per epoch, not per step.

Conventions recorded with every run:
- ``train_loss`` / ``train_acc`` at epoch e >= 1 are means over that epoch's SGD mini-batches
  (what SGD saw, augmented if augmentation is on); at epoch 0 (initialization) they come from
  one pass over the training set in eval mode.
- The confusion probe runs after the epoch's last step, with BatchNorm in ``probe.bn_mode``
  (see probes.bn_convention; running statistics untouched),
  with TF32 off, from its own random generator, so probing never changes the training path.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import probes
from .data import Data, augment_batch
from .errors import ConfusionError
from .models import build_model

PROBE_SEED_OFFSET = 1_000_003  # the probe's generator is seeded with seed + this


def regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * mean squared error of a scalar output."""
    return 0.5 * (output.reshape(-1) - target).pow(2).mean()


def loss_for(task: str):
    return F.cross_entropy if task == "classification" else regression_loss


def check_device(name: str) -> None:
    """A one-line ConfusionError unless ``name`` (auto, cpu, cuda, cuda:N) names a device here."""
    if name in ("auto", "cpu"):
        return
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfusionError(f"unknown device '{name}': choose auto (CUDA when present, else CPU), "
                             "cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfusionError(f"device={name} but no CUDA GPU is visible here: use device=cpu, or "
                             "device=auto on a node that may have one")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfusionError(f"device={name} but this node has {torch.cuda.device_count()} CUDA "
                             f"GPU(s), numbered from 0: pick one below that")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


@contextlib.contextmanager
def exact_matmul(device: torch.device):
    """Turn TF32 off (matmul and cuDNN) for the duration: gradient statistics stay float32."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def backend(cfg, device: torch.device):
    """A run's backend settings for the duration, the process's previous ones restored after:
    the CPU thread count (``cfg.threads``) and, on CUDA, TF32 for matmuls and convolutions
    (``cfg.tf32``) and deterministic vs benchmarked cuDNN kernels (``cfg.deterministic``)."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (torch.get_num_threads(), cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark,
             cudnn.deterministic)
    try:
        if cfg.get("threads"):
            torch.set_num_threads(cfg.threads)
        if device.type == "cuda":
            cuda.allow_tf32 = cudnn.allow_tf32 = bool(cfg.tf32)
            cudnn.benchmark = not cfg.deterministic
            cudnn.deterministic = bool(cfg.deterministic)
        yield
    finally:
        torch.set_num_threads(saved[0])
        cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic = saved[1:]


class Trainer:
    """Plain SGD (optionally momentum, weight decay, step milestones) on device-resident data.

    Backend flags (threads, TF32, cuDNN) are not the Trainer's: run it inside ``backend``."""

    def __init__(self, cfg, data: Data, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        optim = cfg.optim
        torch.manual_seed(cfg.seed)  # model initialisation
        self.model: nn.Module = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
        if device.type == "cuda" and cfg.channels_last and len(data.input_shape) == 3:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = loss_for(data.task)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=optim.lr,
                                         momentum=optim.momentum, weight_decay=optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(optim.milestones or []), gamma=optim.gamma)
        # Plain SGD (the paper's protocol) is applied inside the backward pass: each parameter
        # takes p -= lr * g as soon as its gradient is complete, and the gradient is dropped.
        # It is torch.optim.SGD's own update for momentum = weight decay = 0, bit for bit, but
        # it touches each gradient while it is still in cache and needs no zero_grad / step
        # passes (about 10% of a CPU MLP step). Gated by _in_step, so the probes' backward
        # passes never update anything. Momentum or weight decay: optimizer.step() as usual.
        self.update_in_backward = optim.momentum == 0 and optim.weight_decay == 0
        self._in_step = False
        if self.update_in_backward:
            # The hook holds the Trainer weakly: a parameter's hooks live in the autograd graph,
            # out of reach of Python's garbage collector, so a bound method there would keep every
            # Trainer (data included) alive for good in a long-lived sweep worker.
            trainer = weakref.ref(self)

            def sgd_update(param: torch.Tensor) -> None:
                if (owner := trainer()) is not None:
                    owner._sgd_update(param)

            for param in self.model.parameters():
                param.register_post_accumulate_grad_hook(sgd_update)
        self.generator = torch.Generator(device).manual_seed(cfg.seed)
        self.probe_generator = torch.Generator(device).manual_seed(cfg.seed + PROBE_SEED_OFFSET)
        n = data.x_train.shape[0]
        self.batch_size = n if optim.full_batch else min(optim.batch_size, n)
        self.steps_per_epoch = n // self.batch_size
        self.epoch = 0
        self.step = 0
        self.init_recorded = False  # the epoch-0 record (initialization) has been yielded
        # torch.compile'd forward for training only; probes and evaluation use the plain module
        self.forward = torch.compile(self.model) if cfg.compile else self.model

    # -- state, for checkpoints ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "probe_generator": self.probe_generator.get_state(),
                "epoch": self.epoch, "step": self.step, "init_recorded": self.init_recorded,
                "device_type": self.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.probe_generator.set_state(state["probe_generator"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.init_recorded = state["init_recorded"]

    # -- one epoch of SGD ------------------------------------------------------------------
    def _sgd_update(self, param: torch.Tensor) -> None:
        """Post-accumulate-grad hook: the plain SGD update of one parameter during a step."""
        if not self._in_step:
            return
        with torch.no_grad():
            param.add_(param.grad, alpha=-self.optimizer.param_groups[0]["lr"])
        param.grad = None

    def _sgd_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def _correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.data.task != "classification":
            return torch.zeros((), device=output.device, dtype=torch.int64)
        return (output.argmax(1) == y).sum()

    def train_epoch(self) -> dict[str, float]:
        """One pass of SGD over a fresh permutation of the training set (last partial batch dropped).

        The hot loop is a gather by index and the step, nothing else: each step's loss and
        output are kept (as device tensors) and reduced to the epoch's mean loss and accuracy
        once, after the last step, with one read back to the host.
        """
        self.model.train()
        data, bs = self.data, self.batch_size
        order = torch.randperm(data.x_train.shape[0], generator=self.generator, device=self.device)
        max_steps = self.cfg.optim.max_steps
        steps = self.steps_per_epoch
        if max_steps is not None:
            steps = max(0, min(steps, max_steps - self.step))
        losses, outputs = [], []
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            x = data.x_train.index_select(0, idx)
            if data.augment:
                x = augment_batch(x, self.generator)
            loss, output = self._sgd_step(x, data.y_train.index_select(0, idx))
            losses.append(loss)
            outputs.append(output)
        self.step += steps
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
        chunk = self.cfg.eval_batch_size
        for i in range(0, x.shape[0], chunk):
            out = self.model(x[i:i + chunk])
            loss_sum += self.loss_fn(out, y[i:i + chunk]).double() * out.shape[0]
            correct += self._correct(out, y[i:i + chunk])
        return (loss_sum / x.shape[0]).item(), self._acc(correct.item() / x.shape[0])

    def probe(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The gradient-confusion probe of cfg.probe, then the extra probes, at the current weights."""
        scalars: dict[str, float] = {}
        samples: dict[str, torch.Tensor] = {}
        with exact_matmul(self.device):
            if self.cfg.probe.mode != "none":
                augment = None
                if self.data.augment and self.cfg.probe.augment:
                    augment = lambda x: augment_batch(x, self.probe_generator)  # noqa: E731
                scalars, samples = probes.confusion_probe(
                    self.model, self.loss_fn, self.data.x_train, self.data.y_train,
                    self.cfg.probe, self.probe_generator, augment=augment)
            for name in self.cfg.extra_probes or []:
                scalars.update(probes.run_extra(name, self))
        return scalars, samples

    def _probe_due(self) -> bool:
        probe = self.cfg.probe
        if self.epoch == 0:
            return bool(probe.at_init)
        return self.epoch % probe.every == 0 or self.epoch == self.cfg.optim.epochs

    def record(self, train_stats: dict[str, float]) -> tuple[dict[str, float], dict]:
        """Evaluate and probe at the current weights: one row of metrics.csv plus pair samples."""
        test_loss, test_acc = self.evaluate(self.data.x_test, self.data.y_test)
        row = {"epoch": self.epoch, "step": self.step,
               "lr": self.optimizer.param_groups[0]["lr"], **train_stats,
               "test_loss": test_loss, "test_acc": test_acc}
        samples: dict[str, torch.Tensor] = {}
        if self._probe_due() and math.isfinite(row["train_loss"]):
            start = time.perf_counter()
            scalars, samples = self.probe()
            row.update(scalars)
            row["probe_seconds"] = time.perf_counter() - start
        return row, samples

    def epochs(self) -> Iterator[tuple[dict[str, float], dict, bool]]:
        """Yield (metrics row, probe samples, diverged) at init (epoch 0) and after every epoch.

        Stops after the epoch whose training loss is NaN or infinite (diverged = True).
        Resumes from ``self.epoch`` when loaded from a checkpoint.
        """
        if not self.init_recorded:
            start = time.perf_counter()
            loss, acc = self.evaluate(self.data.x_train, self.data.y_train)
            row, samples = self.record({"train_loss": loss, "train_acc": acc})
            row["epoch_seconds"] = time.perf_counter() - start
            self.init_recorded = True
            yield row, samples, not math.isfinite(loss)
        while self.epoch < self.cfg.optim.epochs:
            max_steps = self.cfg.optim.max_steps
            if max_steps is not None and self.step >= max_steps:
                return
            start = time.perf_counter()
            train_stats = self.train_epoch()
            row, samples = self.record(train_stats)
            row["epoch_seconds"] = time.perf_counter() - start
            diverged = not math.isfinite(train_stats["train_loss"])
            yield row, samples, diverged
            if diverged:
                return

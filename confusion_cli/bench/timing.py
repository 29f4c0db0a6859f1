"""The bench's one row format and its timers.

Every section returns ``Row``s: the tool's number and a baseline's, measured in the same run, and
their ratio, which is one of two kinds (``Row.ratio_is``):
- ``SPEEDUP``: baseline / value, how many times faster the tool is (> 1: faster), for times;
- ``SHARE``: value / baseline, the tool's number over the baseline's (images/s over images/s,
  a probe over an epoch, hours over a goal, peak memory over a budget).
``goal`` is the ratio aimed at: met when ratio >= goal, or <= goal if ``lower_is_better``.

Timers take the best wall time of a few calls after a warm-up, CUDA synchronised around each.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

SPEEDUP = "baseline/value"
SHARE = "value/baseline"


@dataclass(frozen=True)
class Row:
    """One line of the bench table (and of bench_<device>.csv)."""

    name: str
    device: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio_is: str = SPEEDUP
    goal: float = math.nan
    lower_is_better: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        if self.ratio_is not in (SPEEDUP, SHARE):
            raise ValueError(f"Row.ratio_is must be {SPEEDUP!r} or {SHARE!r}, got {self.ratio_is!r}")

    @property
    def ratio(self) -> float:
        num, den = ((self.baseline_value, self.value) if self.ratio_is == SPEEDUP
                    else (self.value, self.baseline_value))
        return num / den if den else math.nan

    @property
    def goal_met(self) -> bool | None:
        """Whether the ratio meets the goal (None: no goal)."""
        if math.isnan(self.goal):
            return None
        return bool(self.ratio <= self.goal if self.lower_is_better else self.ratio >= self.goal)

    def as_dict(self) -> dict:
        """The row's columns, ratio and goal_met included (ratio and goal next to the values)."""
        fields = asdict(self)
        head = {key: fields.pop(key) for key in ("name", "device", "value", "unit", "baseline",
                                                   "baseline_value")}
        return head | {"ratio": self.ratio, "goal": fields.pop("goal"), "goal_met": self.goal_met,
                       **fields}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call, CUDA synchronised around each."""
    return interleaved_best_seconds([fn], device, repeat)[0]


def interleaved_best_seconds(fns: list[Callable[[], object]], device: torch.device,
                             repeat: int) -> list[float]:
    """best_seconds of each of ``fns``, their calls interleaved (f1, f2, f1, f2, ...) so that a
    slow spell of a noisy machine falls on all of them, not on one."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def forget_compiled() -> None:
    """Drop torch.compile's caches between bench cases, if torch.compile has been used (its
    module is loaded) in this process: a case never runs on another case's compiled graphs."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and hasattr(dynamo, "reset"):
        dynamo.reset()

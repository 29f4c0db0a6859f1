"""Speed of the per-example Gram against its baselines, each timed in the same run.

For a batch of 128: an MLP 4x256 on 28x28 inputs (10 classes) and CNN-16-2 (WideResNet depth 16,
width 2, no BN, no skip) on 3x32x32, ``probes.per_example_gram`` against
- the naive loop (one backward pass per example, ``naive_per_example_gram``),
- torch.func vmap(grad) in chunks of 32 (``func.vmap_per_example_gram``),
- one SGD step (forward, backward, update) on the same batch.
ratio = baseline seconds / Gram seconds (> 1: the Gram is faster), goal = the ratio aimed at.
Timings are float32, the best of a few calls after a warm-up, CUDA synchronised around each.
Goals: MLP Gram >= 80x faster than naive and <= 2x one SGD step; CNN-16-2 >= 2x faster than naive.

Run through `make bench` (confusion_cli.bench), which prints these rows with the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from . import probes
from .models import build_model
from .probes.func import vmap_per_example_gram


def _sync(device: torch.device) -> None:
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
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def bench_case(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, goals: dict[str, float],
               repeat: int) -> list[dict]:
    """Rows for one model: the per-example Gram on (x, y) against each baseline."""
    device = x.device
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: same cost, weights unchanged

    def sgd_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    baselines = {
        "naive loop": lambda: probes.naive_per_example_gram(model, F.cross_entropy, x, y),
        "torch.func vmap (chunks of 32)": lambda: vmap_per_example_gram(model, F.cross_entropy, x, y,
                                                                        chunk_size=32),
        "one SGD step": sgd_step,
    }
    gram_seconds = best_seconds(lambda: probes.per_example_gram(model, F.cross_entropy, x, y), device, repeat)
    rows = []
    for baseline, fn in baselines.items():
        seconds = best_seconds(fn, device, 1 if baseline == "naive loop" else repeat)
        rows.append({"name": f"{name} per-example gram (B={x.shape[0]})", "device": str(device),
                     "seconds": gram_seconds, "baseline": baseline, "baseline_seconds": seconds,
                     "ratio": seconds / gram_seconds, "goal": goals.get(baseline)})
    return rows


def bench_probes(device: torch.device | str, quick: bool) -> list[dict]:
    """Rows {name, device, seconds, baseline, baseline_seconds, ratio, goal}; see the module docstring."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch, repeat = (8, 1) if quick else (128, 3)
    cases = {"mlp4x256": ({"name": "mlp", "depth": 4, "width": 32 if quick else 256}, (1, 28, 28),
                          {"naive loop": 80.0, "one SGD step": 0.5}),
             "cnn16-2": ({"name": "cnn", "depth": 16, "width": 1 if quick else 2},
                         (3, 8, 8) if quick else (3, 32, 32),
                         {"naive loop": 10.0 if device.type == "cuda" else 2.0})}
    rows = []
    for name, (model_cfg, shape, goals) in cases.items():
        model = build_model(OmegaConf.create(model_cfg), shape, 10).to(device)
        x = torch.randn(batch, *shape, generator=generator).to(device)
        y = torch.randint(0, 10, (batch,), generator=generator).to(device)
        rows += bench_case(name, model, x, y, goals, repeat)
    return rows

"""Peak memory of the largest paper model (CNN-100-2 with BN and skips) with CIFAR-10-sized data
on the device, one SGD step, a probe and a chunk of evaluation, against MEMORY_BUDGET_MIB: CUDA's
max allocated bytes (counted after a warm-up of the same case), or on a CPU the max RSS of a
fresh process that runs the case alone (the Python and PyTorch runtime included).
"""

from __future__ import annotations

import gc
import multiprocessing
import resource

import torch

from ..train import Trainer
from .timing import SHARE, Row
from .training import bench_config, cifar_like

MEMORY_BUDGET_MIB = 8192  # stated budget: CNN-100-2 BN+skip with CIFAR-10 on the device, step + probe


def _peak_rss_child(queue, depth: int, n_train: int, n_test: int) -> None:
    queue.put(memory_case(torch.device("cpu"), depth, n_train, n_test)[0])


def memory_case(device: torch.device, depth: int, n_train: int, n_test: int) -> tuple[float, str]:
    """Peak memory (MiB) of CIFAR-10-sized tensors on ``device``, one SGD step, a probe and an
    evaluation chunk of CNN-``depth``-2 with BN and skips: CUDA max allocated, or this process's
    max RSS on a CPU. On CUDA the case runs once as a warm-up (cuDNN autotuning, the allocator),
    then the peak is reset and the case measured with the data and model already resident."""
    cfg = bench_config({"name": "cnn", "depth": depth, "width": 2, "batch_norm": True, "skip": True},
                       probe={"pairs": 2})
    data = cifar_like(device, n_train, n_test=n_test)
    trainer = Trainer.from_config(cfg, data, device)
    idx = torch.arange(128, device=device)
    chunk = cfg.eval_batch_size  # evaluation holds one chunk of the test set at a time

    def case():
        trainer.sgd_step(data.x_train[idx], data.y_train[idx])
        trainer.probe()
        trainer.evaluate(data.x_test[:chunk], data.y_test[:chunk])

    if device.type == "cuda":
        case()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        case()
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    case()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max_rss (fresh process)"


def peak_memory(device: torch.device, depth: int, n_train: int, n_test: int) -> tuple[float, str]:
    """memory_case, on a CPU in a fresh process so that the max RSS is this case's alone (the
    Python and PyTorch runtime included)."""
    if device.type == "cuda":
        gc.collect()  # earlier cases' tensors out of the measured allocation
        torch.cuda.empty_cache()
        return memory_case(device, depth, n_train, n_test)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_child, args=(queue, depth, n_train, n_test))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the peak-memory case of CNN-{depth}-2 failed in its process "
                           f"(exit code {child.exitcode}; out of memory?)")
    return queue.get(timeout=60), "max_rss (fresh process)"


def bench_memory(device: torch.device, quick: bool) -> list[Row]:
    """The peak-memory row: CNN-100-2 (CNN-10-2 when quick) against the budget."""
    depth = 10 if quick else 100
    mib, kind = peak_memory(device, depth, 256 if quick else 50_000, 64 if quick else 10_000)
    return [Row(f"cnn{depth}-2 bn+skip peak memory (CIFAR-10 data + step + probe)", str(device), mib,
                "MiB", kind, MEMORY_BUDGET_MIB, SHARE, goal=1.0, lower_is_better=True,
                note="ratio = peak/budget")]

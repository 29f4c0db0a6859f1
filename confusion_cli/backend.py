"""The device a run uses and the process-wide backend flags it sets for its duration.

``backend`` sets the CPU thread count, TF32 and cuDNN flags when a run (or a bench section)
starts and restores the previous values when it ends; ``exact_matmul`` turns TF32 off around
the probes, so gradient statistics stay float32 while training may use TF32.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfusionError


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

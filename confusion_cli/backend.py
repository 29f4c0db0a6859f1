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


def resolve_device(name: str, job: int | None = None) -> torch.device:
    """The device of ``name``. ``auto`` is CUDA when there is a GPU, else the CPU; with K > 1
    visible GPUs, job ``job`` of a sweep gets GPU ``job mod K`` (for ``auto`` and ``cuda``), so
    parallel local jobs spread over the node's GPUs in the order CUDA_VISIBLE_DEVICES lists
    them. ``cuda:N`` pins GPU N."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    check_device("cuda" if name == "auto" else name)
    if name in ("auto", "cuda"):
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{job % count}") if job is not None and count > 1 else torch.device("cuda")
    return torch.device(name)


def tf32_flags() -> tuple[bool, bool]:
    """(cuBLAS matmuls, cuDNN convolutions and RNNs) may use TF32, as torch's flags say."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@contextlib.contextmanager
def tf32(enabled: bool):
    """CUDA float32 matmuls (cuBLAS) and cuDNN convolutions and RNNs in TF32 (``enabled``) or in
    full float32 for the duration; the previous settings restored after.

    One API, the ``allow_tf32`` flags: their setters write the legacy state and, in torch 2.9+,
    the per-operator ``fp32_precision`` the kernels read (cudnn.allow_tf32 sets conv and rnn
    together), so every reader stays readable: the flags, ``torch.get_float32_matmul_precision()``
    (both read by inductor's autotuning and caches) and ``fp32_precision``. Writing
    ``fp32_precision = "tf32"`` instead leaves the legacy state behind, and the legacy readers then
    raise "mix of the legacy and new APIs" (tests/test_train.py reads them all)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = tf32_flags()
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@contextlib.contextmanager
def exact_matmul(device: torch.device):
    """Turn TF32 off (cuBLAS matmuls, cuDNN convolutions and RNNs) for the duration on CUDA:
    gradient statistics stay float32. On the CPU nothing to change."""
    if device.type != "cuda":
        yield
        return
    with tf32(False):
        yield


@contextlib.contextmanager
def backend(cfg, device: torch.device):
    """A run's backend settings for the duration, the process's previous ones restored after:
    the CPU thread count (``cfg.threads``) and, on CUDA, TF32 for matmuls and convolutions
    (``cfg.tf32``) and deterministic vs benchmarked cuDNN kernels (``cfg.deterministic``)."""
    cudnn = torch.backends.cudnn
    saved = torch.get_num_threads(), cudnn.benchmark, cudnn.deterministic
    with contextlib.ExitStack() as stack:
        try:
            if cfg.get("threads"):
                torch.set_num_threads(cfg.threads)
            if device.type == "cuda" and device.index is not None:  # its context, not GPU 0's
                stack.enter_context(torch.cuda.device(device.index))
            if device.type == "cuda":
                stack.enter_context(tf32(bool(cfg.tf32)))
                cudnn.benchmark = not cfg.deterministic
                cudnn.deterministic = bool(cfg.deterministic)
            yield
        finally:
            torch.set_num_threads(saved[0])
            cudnn.benchmark, cudnn.deterministic = saved[1:]

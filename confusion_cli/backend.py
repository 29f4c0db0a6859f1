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


def _precision_knobs() -> list:
    """The objects whose ``fp32_precision`` says whether CUDA float32 matmuls and convolutions
    may use TF32 ("tf32") or not ("ieee"). torch 2.9+ has this API and raises when it is mixed
    with the older ``allow_tf32`` flags, so only it is used where it exists."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return [matmul, conv]
    return []


@contextlib.contextmanager
def tf32(enabled: bool):
    """CUDA float32 matmuls and convolutions in TF32 (``enabled``) or full float32 for the
    duration; the previous settings restored after."""
    knobs = _precision_knobs()
    if knobs:
        attribute, value = "fp32_precision", "tf32" if enabled else "ieee"
    else:  # an older torch: the legacy flags
        knobs, attribute, value = [torch.backends.cuda.matmul, torch.backends.cudnn], "allow_tf32", enabled
    saved = [getattr(knob, attribute) for knob in knobs]
    for knob in knobs:
        setattr(knob, attribute, value)
    try:
        yield
    finally:
        for knob, old in zip(knobs, saved):
            setattr(knob, attribute, old)


@contextlib.contextmanager
def exact_matmul(device: torch.device):
    """Turn TF32 off (matmul and cuDNN) for the duration: gradient statistics stay float32."""
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

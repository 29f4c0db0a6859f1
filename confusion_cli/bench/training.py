"""Training throughput: the tool's epoch against a textbook torchvision DataLoader epoch, same
model and images, and the bench's shared set-up (random images, the tool's data and Trainer).

- MNIST MLP 4x256 (goal on a CPU: TRAIN_SPEEDUP_GOAL times the DataLoader loop's images/s);
- CIFAR-10 CNN-16-2 with crop + flip (goal on a GPU: GPU_IMAGES_PER_S_GOAL images/s), and the
  same epoch with cuDNN's benchmark mode on (a labelled row: runs use deterministic kernels);
- the SGD update applied in backward vs optimizer.step() vs fused SGD, on the MLP and on
  CNN-100-2 with BN and skips (UPDATE_CNN: 296 parameter tensors, where per-parameter kernel
  launches show).
Every case runs with a run's default backend flags (TF32 on, deterministic cuDNN kernels).
"""

from __future__ import annotations

import math
import os
from functools import partial

import torch
import torchvision.datasets as tvd
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

from ..backend import backend
from ..config import run_config
from ..data import DATASETS, Data, augment_batch
from ..models import build_model
from ..train import Trainer
from .timing import SHARE, Row, best_seconds, interleaved_best_seconds

TRAIN_SPEEDUP_GOAL = 5.0  # the tool's loop vs the DataLoader loop, MNIST MLP on a CPU (issue goal)
GPU_IMAGES_PER_S_GOAL = 20_000  # CNN-16-2 on CIFAR-10 on one GPU (issue goal)
MNIST_STEPS_PER_EPOCH = 60_000 // 128
MLP = {"name": "mlp", "depth": 4, "width": 256}
UPDATE_CNN = {"name": "cnn", "depth": 100, "width": 2, "batch_norm": True, "skip": True}


def bench_config(model_cfg: dict, batch_size: int = 128, probe: dict | None = None) -> DictConfig:
    """The project's own default config (as `confusion run` composes it, Hydra's node left out)
    with ``model_cfg``, the batch size and ``probe`` settings merged in."""
    cfg = run_config([f"model={model_cfg['name']}", "probe=minibatch_pairs"])
    return OmegaConf.merge(cfg, {"model": model_cfg,
                                 "optim": {"lr": 0.01, "batch_size": batch_size, "milestones": []},
                                 "probe": {"pairs": 100, "batch_size": 128, **(probe or {})}})


def trainer_for(model_cfg: dict, data: Data, device: torch.device, batch_size: int = 128,
                probe: dict | None = None) -> Trainer:
    """Trainer.from_config of ``bench_config``: the confusion probe is ``trainer.probes[0]``."""
    return Trainer.from_config(bench_config(model_cfg, batch_size, probe), data, device)


def fake_images(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images as torchvision stores them, (N, H, W) or (N, H, W, C), and labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def dataset_mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return DATASETS[dataset].mean, DATASETS[dataset].std


def device_data(images: torch.Tensor, labels: torch.Tensor, mean_std: tuple, augment: bool,
                device: torch.device) -> Data:
    """The tool's view of uint8 ``images``: normalised float32 (N, C, H, W) on ``device``."""
    x = images.float().div(255)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in mean_std)
    x = ((x - mean) / std).to(device)
    return Data("bench", x, labels.to(device), x[:0], labels[:0].to(device), 10, "classification", augment)


def cifar_like(device: torch.device, n: int, size: int = 32, n_test: int = 0) -> Data:
    """Random tensors of CIFAR-10's shape: timing needs the shapes, not the pictures."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return Data("cifar10", x[:n].to(device), y[:n].to(device), x[n:].to(device), y[n:].to(device), 10,
                "classification", True)


def torchvision_dataset(images: torch.Tensor, labels: torch.Tensor, transform) -> VisionDataset:
    """torchvision's own MNIST (uint8 (N, H, W) tensor) or CIFAR10 ((N, H, W, 3) array) dataset
    on in-memory ``images``: the real classes' per-item path (index, PIL image, transforms),
    with the arrays they would have read from disk set directly (no files, no __init__)."""
    if images.dim() == 3:
        dataset = object.__new__(tvd.MNIST)
        dataset.data, dataset.targets = images, labels
    else:
        dataset = object.__new__(tvd.CIFAR10)
        dataset.data, dataset.targets = images.numpy(), labels.tolist()
    dataset.transform, dataset.target_transform = transform, None
    return dataset


def train_throughput(device: torch.device, name: str, model_cfg: dict, images: torch.Tensor,
                     labels: torch.Tensor, mean_std: tuple, augment: bool = False, repeat: int = 3,
                     goal: float = math.nan) -> tuple[Row, Trainer]:
    """The tool's training epoch vs a plain torchvision DataLoader epoch on the same uint8 images.

    The baseline is the textbook loop: torchvision's per-image path (PIL image, the transforms,
    with RandomCrop(padding=4) + RandomHorizontalFlip when ``augment``), a DataLoader of batch
    128 (no worker processes on a CPU, where they would take the cores the step uses; on a GPU
    up to 8, with pinned memory), its own copy of the model (same config and seed) and a plain
    torch.optim.SGD with zero_grad / backward / step. Both are timed best of ``repeat`` epochs,
    the two loops' epochs interleaved.
    Returns the row (images/s, ratio = the tool's over the baseline's) and the tool's Trainer.
    """
    data = device_data(images, labels, mean_std, augment, device)
    cfg = bench_config(model_cfg)
    trainer = Trainer.from_config(cfg, data, device)

    size = images.shape[1]
    per_image = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    gpu = device.type == "cuda"
    loader = DataLoader(torchvision_dataset(images, labels, transforms.Compose(
        [*per_image, transforms.ToTensor(), transforms.Normalize(*mean_std)])), batch_size=128,
        shuffle=True, drop_last=True, num_workers=min(8, os.cpu_count() or 1) if gpu else 0,
        pin_memory=gpu, persistent_workers=gpu)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)

    def dataloader_epoch():
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = trainer.loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    tool, baseline = interleaved_best_seconds([trainer.train_epoch, dataloader_epoch], device, repeat)
    images_per_epoch = (len(labels) // 128) * 128
    return Row(f"train_throughput {name}", str(device), images_per_epoch / tool, "images/s",
               "DataLoader+transforms", images_per_epoch / baseline, SHARE, goal=goal), trainer


def mlp_throughput(device: torch.device, quick: bool) -> tuple[Row, Trainer]:
    """MNIST MLP 4x256: the throughput row (with its goal on a CPU) and the tool's Trainer."""
    images, labels = fake_images(2048 if quick else 20_000, (28, 28))
    return train_throughput(device, "mnist mlp4x256", MLP, images, labels, dataset_mean_std("mnist"),
                            repeat=2 if quick else 5,
                            goal=TRAIN_SPEEDUP_GOAL if device.type == "cpu" else math.nan)


def cnn_throughput(device: torch.device, quick: bool) -> list[Row]:
    """CIFAR-10 CNN-16-2 with crop + flip augmentation: the tool's epoch vs a DataLoader epoch
    (RandomCrop(padding=4) + RandomHorizontalFlip + ToTensor + Normalize per image), then the
    tool's epoch with cuDNN's benchmark mode on vs the deterministic kernels runs use (on a CPU
    cuDNN plays no part: the two should agree), and on a GPU the tool's images/s against the goal."""
    gpu = device.type == "cuda"
    size = 8 if quick else 32
    images, labels = fake_images(256 if quick else (10_000 if gpu else 512), (size, size, 3))
    depth = 10 if quick else 16
    throughput, trainer = train_throughput(
        device, f"cifar10 cnn{depth}-2, crop+flip", {"name": "cnn", "depth": depth, "width": 2},
        images, labels, dataset_mean_std("cifar10"), augment=True, repeat=1 if gpu or quick else 2)
    rows = [throughput, benchmark_mode_row(trainer, device, f"cnn{depth}-2", 1 if gpu or quick else 2)]
    if gpu:
        rows.append(Row(f"cnn{depth}-2 training images/s vs goal", str(device), throughput.value,
                        "images/s", "GPU goal", GPU_IMAGES_PER_S_GOAL, SHARE, goal=1.0,
                        note="ratio = tool/goal"))
    return rows


def benchmark_mode_row(trainer: Trainer, device: torch.device, name: str, repeat: int) -> Row:
    """``trainer``'s epoch with cuDNN benchmark mode on (deterministic off) vs the deterministic
    kernels runs use (deterministic=true, the default), the epochs interleaved; ratio > 1: benchmark
    mode is faster. Each epoch sets its flags and restores them after (backend.backend)."""

    def epoch_with(deterministic: bool):
        flags = OmegaConf.create({"threads": None, "tf32": True, "deterministic": deterministic})
        with backend(flags, device):
            trainer.train_epoch()

    deterministic, benchmark = interleaved_best_seconds(
        [partial(epoch_with, True), partial(epoch_with, False)], device, repeat)
    return Row(f"{name} epoch, BENCHMARK MODE (cudnn.benchmark=true, deterministic=false) vs "
               "deterministic", str(device), benchmark, "s", "deterministic kernels (runs' default)",
               deterministic, note="ratio > 1: benchmark mode is faster; runs do not use it")


def update_case(name: str, model_cfg: dict, data: Data, batch_size: int, device: torch.device,
                repeat: int) -> list[Row]:
    """An epoch with the plain-SGD update applied in backward (the default) vs optimizer.step()
    (optim.update=step) and vs torch's fused SGD (optim.update=fused), same model, data and
    batch size, the epochs interleaved; ratio > 1: the alternative is faster."""
    cfg = bench_config(model_cfg, batch_size)
    trainers = {update: Trainer.from_config(OmegaConf.merge(cfg, {"optim": {"update": update}}), data, device)
                for update in ("hooks", "step", "fused")}
    hooks, *others = interleaved_best_seconds([t.train_epoch for t in trainers.values()], device, repeat)
    return [Row(f"{name} epoch, SGD update {update} vs in-backward hooks", str(device), other,
                "s", "hooks (the default)", hooks, note="ratio > 1: faster than the hooks")
            for update, other in zip(("step", "fused"), others)]


def update_rows(device: torch.device, quick: bool) -> list[Row]:
    """The three SGD updates on the MNIST MLP 4x256 (10 parameter tensors) and on CNN-100-2 with
    BN and skips (296): on CUDA the measurement that decides whether the default should become
    fused. The CNN's epoch is CIFAR-10-sized batches on a GPU; on a CPU a small one (16x16
    images, 8 steps of 32; quick: 8x8, 4 steps of 8), where a step of the deep net takes seconds."""
    images, labels = fake_images(2048 if quick else 20_000, (28, 28))
    data = device_data(images, labels, dataset_mean_std("mnist"), False, device)
    rows = update_case("mlp4x256", MLP, data, 128, device, 2 if quick else 5)
    gpu = device.type == "cuda"
    batch, steps, size = (128, 16, 32) if gpu else ((8, 4, 8) if quick else (32, 8, 16))
    cnn_data = cifar_like(device, batch * steps, size=size)
    return rows + update_case("cnn100-2 bn+skip", UPDATE_CNN, cnn_data, batch, device,
                              1 if quick else (5 if gpu else 2))


def step_seconds(trainer: Trainer, device: torch.device, steps: int) -> float:
    """Seconds per SGD step (with augmentation), from a timed run of ``steps`` steps."""
    data, bs = trainer.data, trainer.batch_size
    idx = torch.arange(bs, device=device)

    def run():
        for _ in range(steps):
            trainer.sgd_step(augment_batch(data.x_train[idx], trainer.generator), data.y_train[idx])

    return best_seconds(run, device, 1) / steps

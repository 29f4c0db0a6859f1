"""`make bench`: speed and memory of the tool, each as a ratio against a baseline timed in the same run.

Rows (written to OUT/bench_<device>.csv and printed as a table, with the device they came from;
``goal`` is the ratio aimed at and ``goal_met`` says whether this run met it):
- train_throughput: images/s of the tool's loop (device-resident tensors, index sampling, batched
  augmentation) vs a torchvision DataLoader + per-image transforms loop, same model and images:
  MNIST MLP 4x256 (goal on a CPU: 5x) and CIFAR-10 CNN-16-2 with crop + flip (goal on a GPU:
  20,000 images/s);
- the paper's probe (100 pairs of mini-batches of 128) vs one training epoch (goal: at most 60%
  of a CNN-16-2 epoch), and the probe's mini-batch gradients grouped (probe.group) vs one each;
- per-example Gram vs the naive loop, vs torch.func vmap and vs one SGD step (bench_probes);
- device-hours of each paper-scale sweep and of the quick depth sweep (goal on a GPU: half an
  hour), from the measured step and probe times of every architecture they train;
- peak memory of the largest paper model (CNN-100-2, BN+skip) with CIFAR-10-sized data, a step
  and a probe, against MEMORY_BUDGET_MIB.
Machines here are noisy: ratios taken in one run are what to compare, not absolute seconds.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import resource
from pathlib import Path

import pandas as pd
import torch
import torchvision.datasets as tvd
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

from .bench_probes import bench_probes, best_seconds, interleaved_best_seconds
from .cli import compose, sweep_values
from .data import DATASETS, Data, augment_batch
from .models import build_model
from .train import Trainer, backend, resolve_device

CIFAR_STEPS_PER_EPOCH = 50_000 // 128
MNIST_STEPS_PER_EPOCH = 60_000 // 128
TRAIN_SPEEDUP_GOAL = 5.0  # the tool's loop vs the DataLoader loop, MNIST MLP on a CPU (issue goal)
GPU_IMAGES_PER_S_GOAL = 20_000  # CNN-16-2 on CIFAR-10 on one GPU (issue goal)
QUICK_DEPTH_HOURS_GOAL = 0.5  # the whole quick-scale depth sweep on one H100 (issue goal)
MEMORY_BUDGET_MIB = 8192  # stated budget: CNN-100-2 BN+skip with CIFAR-10 on the device, step + probe
PROBE_SHARE_GOAL = 0.6  # the paper's probe adds at most 60% to a CNN-16-2 epoch (issue goal)


def row(name: str, device: torch.device, seconds: float, baseline: str, baseline_seconds: float,
        unit: str = "s", goal: float = math.nan, lower_is_better: bool = False, **extra) -> dict:
    """A table row; ratio = baseline / tool (how many times faster; > 1 is better) unless told.

    ``goal`` is the ratio aimed at: met when ratio >= goal (<= goal if ``lower_is_better``).
    """
    return {"name": name, "device": str(device), "value": seconds, "unit": unit,
            "baseline": baseline, "baseline_value": baseline_seconds,
            "ratio": baseline_seconds / seconds if seconds else math.nan, "goal": goal,
            "lower_is_better": lower_is_better, **extra}


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


def fake_images(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images as torchvision stores them, (N, H, W) or (N, H, W, C), and labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def _mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return DATASETS[dataset].mean, DATASETS[dataset].std


def device_data(images: torch.Tensor, labels: torch.Tensor, mean_std: tuple, augment: bool,
                device: torch.device) -> Data:
    """The tool's view of uint8 ``images``: normalised float32 (N, C, H, W) on ``device``."""
    x = images.float().div(255)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in mean_std)
    x = ((x - mean) / std).to(device)
    return Data("bench", x, labels.to(device), x[:0], labels[:0].to(device), 10, "classification", augment)


def trainer_for(model_cfg: dict, data: Data, device: torch.device, batch_size: int = 128,
                probe: dict | None = None) -> Trainer:
    """A Trainer on the project's own default config (as `confusion run` composes it), with
    ``model_cfg``, the batch size and ``probe`` settings merged in; non-deterministic cuDNN."""
    cfg = compose([f"model={model_cfg['name']}", "probe=minibatch_pairs"])
    with open_dict(cfg):
        del cfg["hydra"]
    cfg = OmegaConf.merge(cfg, {"deterministic": False, "model": model_cfg,
                                "optim": {"lr": 0.01, "batch_size": batch_size, "milestones": []},
                                "probe": {"pairs": 100, "batch_size": 128, **(probe or {})}})
    return Trainer(cfg, data, device)


def bench_mlp(device: torch.device, quick: bool) -> list[dict]:
    """MNIST MLP 4x256: training throughput, the paper's probe vs an MNIST epoch, and the probe's
    mini-batch gradients 16 at a time (probe.group=16, vmapped) vs one backward pass each."""
    images, labels = fake_images(2048 if quick else 20_000, (28, 28))
    throughput, trainer = bench_train_throughput(device, "mnist mlp4x256", {"name": "mlp", "depth": 4,
                                                 "width": 256}, images, labels, _mean_std("mnist"),
                                                 repeat=2 if quick else 5)
    throughput["goal"] = TRAIN_SPEEDUP_GOAL if device.type == "cpu" else math.nan
    group, single = probe_group_row(trainer, device, "mlp4x256", 16, 4 if quick else 20)
    epoch = 128 / throughput["value"] * MNIST_STEPS_PER_EPOCH
    return [throughput,
            row("mlp4x256 probe(100 pairs) vs MNIST epoch", device, 100 * single,
                "one epoch", epoch, lower_is_better=True, note="ratio = probe/epoch")
            | {"ratio": 100 * single / epoch},
            group]


def probe_group_row(trainer: Trainer, device: torch.device, name: str, group: int,
                    pairs: int) -> tuple[dict, float]:
    """The probe's mini-batch gradients ``group`` at a time (vmapped) vs one backward pass each
    (the default, probe.group=1): the row, and the seconds per pair at group 1."""
    trainer.cfg.probe.group = 1
    single = probe_seconds(trainer, device, pairs)
    trainer.cfg.probe.group = group
    grouped = probe_seconds(trainer, device, pairs)
    trainer.cfg.probe.group = 1
    return row(f"{name} probe pairs, group {group} vs 1", device, grouped, "group=1 (a backward each)",
               single, note="ratio > 1: grouping is faster"), single


def bench_cnn_throughput(device: torch.device, quick: bool) -> list[dict]:
    """CIFAR-10 CNN-16-2 with crop + flip augmentation: the tool's epoch vs a DataLoader epoch
    (RandomCrop(padding=4) + RandomHorizontalFlip + ToTensor + Normalize per image), and on a GPU
    the tool's images/s against the goal."""
    gpu = device.type == "cuda"
    size = 8 if quick else 32
    images, labels = fake_images(256 if quick else (10_000 if gpu else 512), (size, size, 3))
    depth = 10 if quick else 16
    throughput, _ = bench_train_throughput(
        device, f"cifar10 cnn{depth}-2, crop+flip", {"name": "cnn", "depth": depth, "width": 2},
        images, labels, _mean_std("cifar10"), augment=True, repeat=1 if gpu or quick else 2)
    rows = [throughput]
    if gpu:
        rows.append(row(f"cnn{depth}-2 training images/s vs goal", device, throughput["value"],
                        "GPU goal", GPU_IMAGES_PER_S_GOAL, unit="images/s", goal=1.0,
                        note="ratio = tool/goal") | {"ratio": throughput["value"] / GPU_IMAGES_PER_S_GOAL})
    return rows


def bench_cnn_probe_group(device: torch.device, quick: bool, group: int = 8) -> dict:
    """CNN-16-2: the probe's mini-batch gradients ``group`` at a time vs one backward pass each."""
    data = cifar_like(device, 64 if quick else 512, size=8 if quick else 32)
    depth = 10 if quick else 16
    trainer = trainer_for({"name": "cnn", "depth": depth, "width": 2}, data, device,
                          probe={"batch_size": 16} if quick else None)
    return probe_group_row(trainer, device, f"cnn{depth}-2", group, group // 2)[0]


def bench_train_throughput(device: torch.device, name: str, model_cfg: dict, images: torch.Tensor,
                           labels: torch.Tensor, mean_std: tuple, augment: bool = False,
                           repeat: int = 3) -> tuple[dict, Trainer]:
    """The tool's training epoch vs a plain torchvision DataLoader epoch on the same uint8 images.

    The baseline is the textbook loop: torchvision's per-image path (PIL image, the transforms,
    with RandomCrop(padding=4) + RandomHorizontalFlip when ``augment``), a DataLoader of batch
    128 (no worker processes on a CPU, where they would take the cores the step uses; on a GPU
    up to 8, with pinned memory), its own copy of the model (same config and seed) and a plain
    torch.optim.SGD with zero_grad / backward / step. Both are timed best of ``repeat`` epochs,
    the two loops' epochs interleaved.
    Returns the row (ratio = tool images/s over the baseline's) and the tool's Trainer.
    """
    data = device_data(images, labels, mean_std, augment, device)
    trainer = trainer_for(model_cfg, data, device)

    size = images.shape[1]
    per_image = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    gpu = device.type == "cuda"
    loader = DataLoader(torchvision_dataset(images, labels, transforms.Compose(
        [*per_image, transforms.ToTensor(), transforms.Normalize(*mean_std)])), batch_size=128,
        shuffle=True, drop_last=True, num_workers=min(8, os.cpu_count() or 1) if gpu else 0,
        pin_memory=gpu, persistent_workers=gpu)
    torch.manual_seed(trainer.cfg.seed)
    model = build_model(trainer.cfg.model, data.input_shape, data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=trainer.cfg.optim.lr)

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
    return row(f"train_throughput {name}", device, images_per_epoch / tool, "DataLoader+transforms",
               images_per_epoch / baseline, unit="images/s") | {"ratio": baseline / tool}, trainer


def cifar_like(device: torch.device, n: int, size: int = 32, n_test: int = 0) -> Data:
    """Random tensors of CIFAR-10's shape: timing needs the shapes, not the pictures."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return Data("cifar10", x[:n].to(device), y[:n].to(device), x[n:].to(device), y[n:].to(device), 10,
                "classification", True)


def step_seconds(trainer: Trainer, device: torch.device, steps: int) -> float:
    """Seconds per SGD step (with augmentation), from a timed run of ``steps`` steps."""
    data, bs = trainer.data, trainer.batch_size
    idx = torch.arange(bs, device=device)

    def run():
        for _ in range(steps):
            trainer._sgd_step(augment_batch(data.x_train[idx], trainer.generator), data.y_train[idx])

    return best_seconds(run, device, 1) / steps


def probe_seconds(trainer: Trainer, device: torch.device, pairs: int) -> float:
    """Seconds per probe pair of mini-batches of 128 (the paper's probe is 100 pairs)."""
    trainer.cfg.probe.pairs = pairs
    return best_seconds(trainer.probe, device, 1) / pairs


def _peak_rss_child(queue, depth: int, n_train: int, n_test: int) -> None:
    queue.put(_memory_case(torch.device("cpu"), depth, n_train, n_test)[0])


def _memory_case(device: torch.device, depth: int, n_train: int, n_test: int) -> tuple[float, str]:
    """Peak memory (MiB) of CIFAR-10-sized tensors on ``device``, one SGD step and a probe of
    CNN-``depth``-2 with BN and skips: CUDA max allocated, or this process's max RSS on a CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = cifar_like(device, n_train, n_test=n_test)
    trainer = trainer_for({"name": "cnn", "depth": depth, "width": 2, "batch_norm": True, "skip": True},
                          data, device, probe={"pairs": 2})
    idx = torch.arange(128, device=device)
    trainer._sgd_step(data.x_train[idx], data.y_train[idx])
    trainer.probe()
    chunk = trainer.cfg.eval_batch_size  # evaluation holds one chunk of the test set at a time
    trainer.evaluate(data.x_test[:chunk], data.y_test[:chunk])
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max_rss (fresh process)"


def peak_memory(device: torch.device, depth: int, n_train: int, n_test: int) -> tuple[float, str]:
    """_memory_case, on a CPU in a fresh process so that the max RSS is this case's alone (the
    Python and PyTorch runtime included)."""
    if device.type == "cuda":
        return _memory_case(device, depth, n_train, n_test)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_child, args=(queue, depth, n_train, n_test))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the peak-memory case of CNN-{depth}-2 failed in its process "
                           f"(exit code {child.exitcode}; out of memory?)")
    return queue.get(timeout=60), "max_rss (fresh process)"


Arch = tuple[int, int, bool, bool]  # CNN depth, width, batch_norm, skip


def sweep_plan(sweep: str, scale: str) -> tuple[DictConfig, list[Arch]]:
    """The config `confusion run +sweep=SWEEP scale=SCALE` composes, and the architecture of each of
    its runs (the sweep's own grid, expanded as Hydra expands it)."""
    cfg = compose([f"+sweep={sweep}", f"scale={scale}"])
    axes = {key: [yaml.safe_load(v) for v in sweep_values(f"{key}={value}")]
            for key, value in cfg.hydra.sweeper.params.items()}
    archs = []
    for combo in itertools.product(*axes.values()):
        run = dict(zip(axes, combo))
        model = {k: run.get(f"model.{k}", cfg.model[k]) for k in ("depth", "width", "batch_norm", "skip")}
        archs.append((model["depth"], model["width"], model["batch_norm"], model["skip"]))
    return cfg, archs


def sweep_seconds(cfg: DictConfig, archs: list[Arch], timings: dict[Arch, tuple[float, float]]) -> float:
    """Estimated device-seconds of a sweep: per run, epochs x steps x step time plus every probe
    event's pairs x pair time (evaluation and I/O left out)."""
    spec = DATASETS[cfg.dataset.name]
    steps = (cfg.dataset.train_size or spec.sizes[0]) // cfg.optim.batch_size
    epochs = cfg.optim.epochs
    probes = epochs // cfg.probe.every + int(cfg.probe.at_init) + int(epochs % cfg.probe.every != 0)
    return sum(epochs * steps * timings[a][0] + probes * cfg.probe.pairs * timings[a][1] for a in archs)


def bench_cnn(device: torch.device, quick: bool) -> list[dict]:
    """CNN-16-2 step and probe; device-hours of the paper's sweeps (and the quick depth sweep)
    from the step and probe-pair times of every architecture they train; peak memory of the
    largest paper model."""
    rows = []
    gpu = device.type == "cuda"
    steps = 3 if quick else (20 if gpu else 2)
    pairs = 2 if quick else (20 if gpu else 1)
    data = cifar_like(device, 64 if quick else 512, size=8 if quick else 32)
    planned = [("depth", "smoke")] if quick else [("depth", "paper"), ("width", "paper"),
                                                  ("bn_skip", "paper"), ("depth", "quick")]
    plans = {(sweep, scale): sweep_plan(sweep, scale) for sweep, scale in planned}
    timings: dict[Arch, tuple[float, float]] = {}
    for depth, width, bn, skip in sorted({a for _, archs in plans.values() for a in archs}):
        trainer = trainer_for({"name": "cnn", "depth": depth, "width": width, "batch_norm": bn, "skip": skip},
                              data, device, batch_size=16 if quick else 128,
                              probe={"batch_size": 16} if quick else None)
        step = step_seconds(trainer, device, steps)
        pair = probe_seconds(trainer, device, pairs)
        timings[(depth, width, bn, skip)] = step, pair
        print(f"  cnn{depth}-{width} bn={bn} skip={skip}: step {step:.3g} s, probe pair "
              f"{pair:.3g} s", flush=True)
        if (depth, width, bn, skip) == ((10 if quick else 16), 2, False, False):
            epoch = step * CIFAR_STEPS_PER_EPOCH
            rows.append(row(f"cnn{depth}-{width} probe(100 pairs) vs epoch", device, 100 * pair, "one epoch",
                            epoch, goal=PROBE_SHARE_GOAL, lower_is_better=True, note="ratio = probe/epoch")
                        | {"ratio": 100 * pair / epoch})
    for (sweep, scale), (cfg, archs) in plans.items():
        hours = sweep_seconds(cfg, archs, timings) / 3600
        has_goal = gpu and (sweep, scale) == ("depth", "quick")
        goal = QUICK_DEPTH_HOURS_GOAL if has_goal else math.nan
        rows.append(row(f"{scale} sweep {sweep}: {len(archs)} runs (est.)", device, hours,
                        "GPU goal" if has_goal else "-", goal, unit=f"{device.type}-hours",
                        goal=1.0 if has_goal else math.nan, lower_is_better=True)
                    | {"ratio": hours / goal})
    depth = 10 if quick else 100
    mib, kind = peak_memory(device, depth, 256 if quick else 50_000, 64 if quick else 10_000)
    rows.append(row(f"cnn{depth}-2 bn+skip peak memory (CIFAR-10 data + step + probe)", device, mib,
                    kind, MEMORY_BUDGET_MIB, unit="MiB", goal=1.0, lower_is_better=True,
                    note="ratio = peak/budget") | {"ratio": mib / MEMORY_BUDGET_MIB})
    return rows


def run_all(device: torch.device, quick: bool) -> pd.DataFrame:
    rows = bench_mlp(device, quick) + bench_cnn_throughput(device, quick)
    rows += [row(r["name"], device, r["seconds"], r["baseline"], r["baseline_seconds"], goal=r["goal"])
             for r in bench_probes(device, quick)]
    rows += bench_cnn(device, quick)
    rows.append(bench_cnn_probe_group(device, quick))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    # the training flags of a run (TF32 on, cuDNN benchmarking as in trainer_for), restored after
    with backend(OmegaConf.create({"threads": None, "tf32": True, "deterministic": False}), device):
        table = run_all(device, args.quick)
    table["goal_met"] = [None if pd.isna(g) else bool(r <= g if low else r >= g)
                         for g, r, low in zip(table["goal"], table["ratio"], table["lower_is_better"])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"bench_{device.type}.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(table.drop(columns=[c for c in table.columns if table[c].isna().all()]).to_string(
            index=False))
    print(f"written: {out / f'bench_{device.type}.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


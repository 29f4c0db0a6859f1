"""`make bench`: speed and memory of the tool, each as a ratio against a baseline timed in the same run.

Rows (written to OUT/bench.csv and printed as a table, with the device they came from):
- train_throughput: images/s of the tool's loop (device-resident tensors, index sampling) vs a
  torchvision DataLoader + per-image transforms loop, same model and data;
- probe_vs_epoch: the paper's probe (100 pairs of mini-batches of 128) vs one training epoch;
- per-example Gram vs the naive loop, vs torch.func vmap and vs one SGD step (bench_probes);
- peak memory of a training step and a probe for the largest paper model (CNN-100-2, BN+skip);
- sweep_hours: an estimate of device-hours for each paper-scale sweep from measured step times.
Machines here are noisy: ratios taken in one run are what to compare, not absolute seconds.
"""

from __future__ import annotations

import argparse
import math
import resource
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

from .bench_probes import bench_probes, best_seconds
from .cli import compose
from .data import Data, augment_batch
from .models import build_model
from .train import Trainer, resolve_device

CIFAR_STEPS_PER_EPOCH = 50_000 // 128
MNIST_MEAN_STD = ((0.1307,), (0.3081,))
TRAIN_SPEEDUP_GOAL = 5.0  # the tool's loop vs the DataLoader loop, MNIST MLP on a CPU (issue goal)
GPU_IMAGES_PER_S_GOAL = 20_000  # CNN-16-2 on CIFAR-10 on one GPU (issue goal)
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


class MNISTLike(VisionDataset):
    """torchvision's MNIST item path (uint8 array -> PIL image -> transforms), on given arrays."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        super().__init__(root="", transform=transform)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i].numpy(), mode="L")
        return self.transform(img), int(self.labels[i])


def fake_mnist(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


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


def bench_train_throughput(device: torch.device, n: int, repeat: int = 3) -> dict:
    """MNIST MLP 4x256: the tool's epoch vs a plain DataLoader epoch (PIL + ToTensor + Normalize).

    The baseline is the textbook loop: its own copy of the model (same config and seed) and a
    plain torch.optim.SGD with zero_grad / backward / step; both are timed best of ``repeat``.
    """
    images, labels = fake_mnist(n)
    mean, std = MNIST_MEAN_STD
    x = ((images.float() / 255 - mean[0]) / std[0]).unsqueeze(1)
    data = Data("mnist", x.to(device), labels.to(device), x[:0].to(device), labels[:0].to(device),
                10, "classification", False)
    trainer = trainer_for({"name": "mlp", "depth": 4, "width": 256}, data, device)
    tool = best_seconds(trainer.train_epoch, device, repeat)

    loader = DataLoader(MNISTLike(images, labels, transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean, std)])), batch_size=128, shuffle=True,
        drop_last=True, num_workers=0)
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

    baseline = best_seconds(dataloader_epoch, device, repeat)
    images_per_epoch = (n // 128) * 128
    goal = TRAIN_SPEEDUP_GOAL if device.type == "cpu" else math.nan
    return row("train_throughput mnist mlp4x256", device, images_per_epoch / tool, "DataLoader+transforms",
               images_per_epoch / baseline, unit="images/s", goal=goal) | {"ratio": baseline / tool}


def cifar_like(device: torch.device, n: int, size: int = 32) -> Data:
    """Random tensors of CIFAR-10's shape: timing needs the shapes, not the pictures."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Data("cifar10", x.to(device), y.to(device), x[:0].to(device), y[:0].to(device), 10,
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


def peak_memory(device: torch.device, fn: Callable[[], object]) -> tuple[float, str]:
    """Peak memory of ``fn`` in MiB: CUDA max allocated, or the process's max RSS on a CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max_rss"


def bench_cnn(device: torch.device, quick: bool) -> list[dict]:
    """CNN-16-2 step, probe and the paper-sweep estimates; CNN-100-2 BN+skip peak memory."""
    rows = []
    steps = 3 if quick else (20 if device.type == "cuda" else 2)
    pairs = 2 if quick else (20 if device.type == "cuda" else 1)
    data = cifar_like(device, 64 if quick else 512, 8 if quick else 32)
    per_arch: dict[tuple, float] = {}
    archs = {("cnn", 10, 1, False, False)} if quick else {
        ("cnn", d, 2, False, False) for d in (16, 22, 28, 34, 40)} | {
        ("cnn", 16, w, False, False) for w in (3, 4, 5, 6)} | {
        ("cnn", d, 2, bn, skip) for d in (16, 28, 40, 52, 76, 100)
        for bn in (False, True) for skip in (False, True)}
    for name, depth, width, bn, skip in sorted(archs):
        trainer = trainer_for({"name": name, "depth": depth, "width": width, "batch_norm": bn,
                               "skip": skip}, data, device, batch_size=16 if quick else 128,
                              probe={"batch_size": 16} if quick else None)
        step = step_seconds(trainer, device, steps)
        pair = probe_seconds(trainer, device, pairs)
        epoch = step * CIFAR_STEPS_PER_EPOCH
        print(f"  cnn{depth}-{width} bn={bn} skip={skip}: step {step:.3g} s, probe pair "
              f"{pair:.3g} s", flush=True)
        per_arch[(depth, width, bn, skip)] = epoch + 100 * pair
        if (depth, width, bn, skip) in ((16, 2, False, False), (10, 1, False, False)):
            gpu = device.type == "cuda"
            rows.append(row(f"cnn{depth}-{width} train_throughput (est.)", device, 128 / step,
                            "GPU goal" if gpu else "-", GPU_IMAGES_PER_S_GOAL if gpu else math.nan,
                            unit="images/s", goal=1.0 if gpu else math.nan,
                            note="ratio = tool/goal" if gpu else "")
                        | {"ratio": 128 / step / GPU_IMAGES_PER_S_GOAL if gpu else math.nan})
            rows.append(row(f"cnn{depth}-{width} probe(100 pairs) vs epoch", device, 100 * pair, "one epoch",
                            epoch, goal=PROBE_SHARE_GOAL, lower_is_better=True, note="ratio = probe/epoch")
                        | {"ratio": 100 * pair / epoch})
    if not quick:
        trainer = trainer_for({"name": "cnn", "depth": 100, "width": 2, "batch_norm": True,
                               "skip": True}, data, device, probe={"pairs": 2})
        idx = torch.arange(128, device=device)
        mib, kind = peak_memory(device, lambda: (trainer._sgd_step(data.x_train[idx],
                                                                   data.y_train[idx]),
                                                 trainer.probe()))
        rows.append(row("cnn100-2 bn+skip peak memory (step+probe)", device, mib, kind, math.nan,
                        unit="MiB") | {"ratio": math.nan})
        seeds, lrs, epochs = 5, 5, 200
        sweeps = {"depth": [(d, 2, False, False) for d in (16, 22, 28, 34, 40)],
                  "width": [(16, w, False, False) for w in (2, 3, 4, 5, 6)],
                  "bn_skip": [(d, 2, bn, sk) for d in (16, 28, 40, 52, 76, 100)
                              for bn in (False, True) for sk in (False, True)]}
        for sweep, keys in sweeps.items():
            hours = sum(per_arch[k] for k in keys) * epochs * seeds * lrs / 3600
            rows.append(row(f"paper sweep {sweep}: {len(keys) * seeds * lrs} runs", device, hours,
                            "-", math.nan, unit=f"{device.type}-hours") | {"ratio": math.nan})
    return rows


def run_all(device: torch.device, quick: bool) -> pd.DataFrame:
    rows = [bench_train_throughput(device, 2048 if quick else 20_000)]
    rows += [row(r["name"], device, r["seconds"], r["baseline"], r["baseline_seconds"], goal=r["goal"])
             for r in bench_probes(device, quick)]
    rows += bench_cnn(device, quick)
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


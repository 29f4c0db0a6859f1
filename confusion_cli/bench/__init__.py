"""`make bench`: speed and memory of the tool, each as a ratio against a baseline timed in the same run.

Rows (written to OUT/bench_<device>.csv and printed as a table, with the device they came from,
one format for all: ``timing.Row``; ``goal`` is the ratio aimed at and ``goal_met`` says whether
this run met it):
- train_throughput (``training``): images/s of the tool's loop (device-resident tensors, index
  sampling, batched augmentation) vs a torchvision DataLoader + per-image transforms loop, same
  model and images: MNIST MLP 4x256 (goal on a CPU: 5x) and CIFAR-10 CNN-16-2 with crop + flip
  (goal on a GPU: 20,000 images/s);
- the paper's probe (100 pairs of mini-batches of 128) vs one training epoch (goal: at most 60%
  of a CNN-16-2 epoch), and the probe's mini-batch gradients grouped (probe.group) vs one each;
  per-example Gram vs the naive loop, vs torch.func vmap and vs one SGD step (``probes``), and
  where its time goes (``gram_breakdown_rows``: stages and layer kinds against one SGD step);
- device-hours of each paper-scale sweep and of the quick depth sweep (goal on a GPU: half an
  hour), from the measured step and probe times of every architecture they train (``sweeps``);
- peak memory of the largest paper model (CNN-100-2, BN+skip) with CIFAR-10-sized data, a step
  and a probe, against MEMORY_BUDGET_MIB (``memory``).
Each section runs inside ``backend.backend`` with a run's default flags (TF32 on, deterministic
cuDNN kernels, no benchmark mode), restored after; one row, labelled BENCHMARK MODE, times an
epoch with cuDNN's benchmark mode on against them. ``--sections`` picks sections by name (make
gpu-check's short bench), and the CSV is rewritten after each section, so a bench stopped by a
time limit keeps the rows it finished. Machines here are noisy: ratios taken in one run are what
to compare, not absolute seconds; the README's table holds the latest numbers of `make bench`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from .. import backend
from .memory import bench_memory
from .probes import cnn_probe_group, gram_breakdown_rows, gram_method_rows, gram_rows, mlp_probe_rows
from .startup import startup_rows
from .sweeps import bench_sweeps
from .timing import Row, forget_compiled
from .training import cnn_throughput, mlp_throughput, update_rows

# a run's default flags (configs/config.yaml: tf32 true, deterministic true)
BENCH_BACKEND = OmegaConf.create({"threads": None, "tf32": True, "deterministic": True})


def bench_mlp(device: torch.device, quick: bool) -> list[Row]:
    """MNIST MLP 4x256: training throughput, then on the same Trainer the paper's probe vs an
    MNIST epoch and the probe's mini-batch gradients 16 at a time vs one backward pass each."""
    throughput, trainer = mlp_throughput(device, quick)
    return [throughput, *mlp_probe_rows(trainer, throughput.value, device, quick)]


SECTIONS: list[Callable[[torch.device, bool], list[Row]]] = [
    bench_mlp, update_rows, cnn_throughput, gram_rows, gram_breakdown_rows, gram_method_rows, bench_sweeps,
    bench_memory, cnn_probe_group, startup_rows]


SECTION_NAMES = [section.__name__ for section in SECTIONS]


def run_all(device: torch.device, quick: bool, sections: list[str] | None = None,
            csv: Path | None = None) -> pd.DataFrame:
    """The named sections (all by default), each inside ``backend.backend`` (flags set, then
    restored), as one table; written to ``csv`` after each section when given."""
    rows: list[Row] = []
    for section in SECTIONS:
        if sections is not None and section.__name__ not in sections:
            continue
        with backend.backend(BENCH_BACKEND, device):
            rows += section(device, quick)
        forget_compiled()
        if csv is not None:
            pd.DataFrame([r.as_dict() for r in rows]).to_csv(csv, index=False)
    return pd.DataFrame([r.as_dict() for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs")
    parser.add_argument("--sections", help=f"comma-separated, of: {','.join(SECTION_NAMES)} (default: all)")
    args = parser.parse_args(argv)
    sections = args.sections.split(",") if args.sections else None
    unknown = sorted(set(sections or []) - set(SECTION_NAMES))
    if unknown:
        print(f"error: unknown bench section(s) {', '.join(unknown)}: choose from {', '.join(SECTION_NAMES)}",
              file=sys.stderr)
        return 2
    device = backend.resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = run_all(device, args.quick, sections, csv=out / f"bench_{device.type}.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(table.drop(columns=[c for c in table.columns if table[c].isna().all()]).to_string(
            index=False))
    print(f"written: {out / f'bench_{device.type}.csv'}")
    return 0

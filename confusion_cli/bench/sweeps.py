"""Device-hours of the paper's sweeps (and of the quick depth sweep: goal on a GPU, half an hour),
estimated from the measured SGD-step and probe-pair times of every architecture they train and
from each sweep's own config (epochs, seeds, grid, probe pairs and schedule; evaluation and I/O
left out). The same timings give CNN-16-2's probe against a CIFAR-10 epoch.
"""

from __future__ import annotations

import itertools
import math

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from .. import probes
from ..config import compose, sweep_values
from ..data import DATASETS
from ..train import finished, steps_in_epoch
from .probes import PROBE_SHARE_GOAL, probe_seconds, probe_vs_epoch_row
from .timing import SHARE, Row
from .training import cifar_like, step_seconds, trainer_for

QUICK_DEPTH_HOURS_GOAL = 0.5  # the whole quick-scale depth sweep on one H100 (issue goal)
CIFAR_STEPS_PER_EPOCH = 50_000 // 128

Arch = tuple[int, int, bool, bool]  # CNN depth, width, batch_norm, skip


def sweep_plan(sweep: str, scale: str) -> tuple[DictConfig, list[Arch]]:
    """The config `confusion run +sweep=SWEEP scale=SCALE` composes, and the architecture of each of
    its runs (the sweep's own grid, expanded as Hydra expands it)."""
    cfg = compose([f"+sweep={sweep}", f"scale={scale}"])
    axes = {key: [yaml.safe_load(v) for v in sweep_values(f"{key}={value}")]
            for key, value in cfg.hydra.sweeper.params.items()}
    archs = []
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for combo in itertools.product(*axes.values()):
        job = base.copy()  # each job's own values, so a sweep of arms (sweep.arm) resolves per arm
        for key, value in zip(axes, combo):
            OmegaConf.update(job, key, value, force_add=True)
        archs.append((job.model.depth, job.model.width, job.model.batch_norm, job.model.skip))
    return cfg, archs


def probe_events(probe_cfg: DictConfig, optim_cfg: DictConfig, steps_per_epoch: int) -> int:
    """How many times a run of ``steps_per_epoch`` steps an epoch probes, at the schedule
    ``probe.schedule`` (with ``every`` and ``at_init``), ending where train.finished ends it
    (``optim.epochs``, ``optim.max_steps``), as the Trainer does."""
    schedule = probes.Schedule.from_config(probe_cfg)
    epoch = step = 0
    events = int(schedule.at_epoch_end(0, 0, finished(optim_cfg, 0, 0)))
    while not finished(optim_cfg, epoch, step):
        steps = steps_in_epoch(optim_cfg, steps_per_epoch, step)
        if schedule.kind != "epoch":  # probes between two steps of the epoch
            events += sum(schedule.at_step(s) for s in range(step + 1, step + steps))
        epoch, step = epoch + 1, step + steps
        events += schedule.at_epoch_end(epoch, step, finished(optim_cfg, epoch, step))
    return events


def sweep_seconds(cfg: DictConfig, archs: list[Arch], timings: dict[Arch, tuple[float, float]]) -> float:
    """Estimated device-seconds of a sweep: per run, epochs x steps x step time plus every probe
    event's pairs x pair time (evaluation and I/O left out)."""
    spec = DATASETS[cfg.dataset.name]
    steps = (cfg.dataset.train_size or spec.sizes[0]) // cfg.optim.batch_size
    max_steps = cfg.optim.max_steps
    sgd_steps = cfg.optim.epochs * steps if max_steps is None else min(max_steps, cfg.optim.epochs * steps)
    events = probe_events(cfg.probe, cfg.optim, steps)
    return sum(sgd_steps * timings[a][0] + events * cfg.probe.pairs * timings[a][1] for a in archs)


def sweep_check_row(quick: bool) -> Row:
    """Seconds `confusion run` takes to compose and validate every job of a 1,000-job sweep
    before launching it (MLP depth 1-10 x 10 LRs x 10 seeds on digits: config.prepare), against
    composing and validating each job on its own (Hydra's compose + validate, 3 jobs timed)."""
    import tempfile
    import time

    from ..config import prepare, run_config, sweep_jobs, validate

    n = 2 if quick else 10
    with tempfile.TemporaryDirectory() as root:
        overrides = [f"model.depth=range(1,{n + 1})", f"seed=range({n})", f"records_root={root}",
                     "optim.lr=" + ",".join(f"{0.01 * i:.2f}" for i in range(1, n + 1))]
        prepare(["optim.lr=0.01,0.02", f"records_root={root}"], [])  # imports and first compose
        start = time.perf_counter()
        launch = prepare(overrides, [])
        seconds = time.perf_counter() - start
        jobs = sweep_jobs(compose(launch.overrides).hydra, launch.overrides)
        start = time.perf_counter()
        for job in jobs[:3]:
            validate(run_config(job))
        one_by_one = (time.perf_counter() - start) / 3 * len(jobs)
    return Row(f"sweep check: every job of a {len(jobs)}-job sweep", "cpu", seconds, "s",
               "compose + validate each job alone (3 timed)", one_by_one,
               note="before launch: config.validate_sweep")


def bench_sweeps(device: torch.device, quick: bool) -> list[Row]:
    """CNN-16-2's probe vs an epoch, and the device-hours of the paper's sweeps (and the quick
    depth sweep), from the step and probe-pair times of every architecture they train."""
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
            rows.append(probe_vs_epoch_row(f"cnn{depth}-{width}", "epoch", device, pair,
                                           step * CIFAR_STEPS_PER_EPOCH, goal=PROBE_SHARE_GOAL))
    for (sweep, scale), (cfg, archs) in plans.items():
        hours = sweep_seconds(cfg, archs, timings) / 3600
        has_goal = gpu and (sweep, scale) == ("depth", "quick")
        rows.append(Row(f"{scale} sweep {sweep}: {len(archs)} runs (est.)", str(device), hours,
                        f"{device.type}-hours", "GPU goal" if has_goal else "-",
                        QUICK_DEPTH_HOURS_GOAL if has_goal else math.nan, SHARE,
                        goal=1.0 if has_goal else math.nan, lower_is_better=True))
    rows.append(sweep_check_row(quick))
    return rows

"""The README's table of every sweep at every scale, made from the configs (issue 23, item 6):
each sweep's jobs as `confusion run +sweep=NAME scale=SCALE` expands them (``config.sweep_jobs``,
each job's config as Hydra composes it: ``config.job_configs``), counted: runs, epochs, seeds and
learning rates. A sweep that sets its own epochs or seeds in place of the scale's gets a footnote
naming them; a scale whose grid a sweep does not define is a dash (the run refuses it in one line).

`python -m confusion_cli.sweep_table` prints the table; `--write README.md` puts it between the
README's markers; tests/test_sweep_table.py fails when the README's copy differs from the configs.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .config import compose, job_configs, options, split_hydra, sweep_jobs, sweep_values
from .errors import ConfusionError

BEGIN = "<!-- sweep table: made by `python -m confusion_cli.sweep_table --write README.md`; do not edit -->"
END = "<!-- end of the sweep table -->"
SCALES = ("smoke", "demo", "default", "quick", "confirm", "paper")  # small to large


@dataclass(frozen=True)
class Plan:
    """What `confusion run +sweep=NAME scale=SCALE` runs, and its estimated CPU seconds in all."""

    runs: int
    epochs: tuple[int, ...]
    seeds: int
    lrs: tuple[float, ...]
    cpu_seconds: float = math.nan


# -- the CPU-time estimate ----------------------------------------------------------------------
# Training throughput measured by `make bench` on this project's 2-core CPU (README, "Latest
# numbers"): (model config, input shape, classes, images per second of SGD training, batch 128).
# Each becomes a rate in FLOP/s, 3 x forward FLOPs x images/s, for the models of its kind.
MEASURED = {
    "mlp": ({"name": "mlp", "depth": 4, "width": 256}, (1, 28, 28), 10, 68_600.0),
    "cnn": ({"name": "cnn", "depth": 16, "width": 2}, (3, 32, 32), 10, 422.0),
}
# What a tiny model's SGD step costs beyond its FLOPs (Python, dispatch, the optimizer): each SGD
# step and each probe gradient counts it once. An assumption of the order of a tiny MLP's step on
# this CPU, not a measurement (the shared 2 cores could not time it cleanly).
CALL_SECONDS = 0.5e-3
ESTIMATE_NOTE = (
    "CPU time: estimated from the configs (each run's SGD steps, evaluations and confusion-probe "
    "gradients in FLOPs, at the training rates `make bench` measured on this 2-core CPU: 68,600 "
    "images/s for an MLP 4x256 on MNIST, 422 for CNN-16-2 on CIFAR-10; 0.5 ms assumed per step; "
    "extra probes, I/O and start-up left out; ~1 min: a minute or less), for the 2 cores to itself. "
    "The committed records' "
    "runs took a median 10x longer (3-55x) on this machine, its 2 cores shared with other sweeps "
    "(estimate and wall time of a sample of docs/records/fmnist_confirm and cnn_fmnist)")
GPU_NOTE = ("GPU time: not measured (no GPU has timed these models yet: `python -m confusion_cli.bench "
            "--device cuda` on a GPU node prints its own estimates)")

_FLOPS: dict[str, float] = {}


def forward_flops(model: Any, shape: tuple[int, ...], classes: int) -> float:
    """FLOPs of one example's forward pass through ``model``: 2 x the multiply-adds of its linear
    and convolution layers (the rest is small), their shapes taken from a forward pass on the
    meta device (nothing is allocated or computed)."""
    import torch
    from omegaconf import OmegaConf

    from . import models

    raw = OmegaConf.to_container(model, resolve=True) if OmegaConf.is_config(model) else dict(model)
    key = repr((sorted(raw.items()), shape, classes))
    if key in _FLOPS:
        return _FLOPS[key]
    macs = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            macs[0] += module.in_features * module.out_features
        elif isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            macs[0] += output[0].numel() * per_output

    with torch.device("meta"):
        net = models.build_model(OmegaConf.create(raw), shape, classes)
        x = torch.empty(1, *shape)
    net.eval()
    hooks = [m.register_forward_hook(count) for m in net.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    _FLOPS[key] = 2.0 * macs[0]
    return _FLOPS[key]


_EVENTS: dict[tuple, int] = {}


def _probe_events(probe: Any, optim: Any, per_epoch: int) -> int:
    """``bench.sweeps.probe_events``, once per distinct schedule and length."""
    from .bench.sweeps import probe_events

    key = (str(probe.schedule), int(probe.every), bool(probe.at_init), int(optim.epochs),
           optim.max_steps, per_epoch)
    if key not in _EVENTS:
        _EVENTS[key] = probe_events(probe, optim, per_epoch)
    return _EVENTS[key]


def cpu_rate(kind: str) -> float:
    """FLOP/s of SGD training on this CPU for models of ``kind`` (mlp: every model but the CNN)."""
    model, shape, classes, images = MEASURED[kind]
    return 3 * forward_flops(model, shape, classes) * images


def run_cpu_seconds(cfg: Any) -> float:
    """Estimated CPU seconds of one run of ``cfg``: its SGD steps, its evaluations (the test set
    after every epoch, the training set once at initialization) and its confusion probe's
    gradients at every probe event of its schedule, in FLOPs at ``cpu_rate``, plus CALL_SECONDS
    per step and per probe gradient. Extra probes, I/O and start-up are left out."""
    from omegaconf import OmegaConf

    from . import data
    from .train import steps_in_epoch

    if OmegaConf.is_config(cfg):  # resolved once: each access to a config re-parses its interpolations
        cfg = OmegaConf.create({part: OmegaConf.to_container(cfg[part], resolve=True)
                                for part in ("dataset", "model", "optim", "probe")})
    train, test, shape = data.sizes(cfg.dataset)
    flops = forward_flops(cfg.model, shape, data.num_classes(cfg.dataset))
    optim = cfg.optim
    batch = train if optim.full_batch else min(int(optim.batch_size), train)
    per_epoch = train // batch if batch else 0
    steps = epochs = 0
    while epochs < int(optim.epochs) and (optim.max_steps is None or steps < optim.max_steps):
        steps += steps_in_epoch(optim, per_epoch, steps)
        epochs += 1
    probe = cfg.probe
    mode = str(probe.mode)
    events = _probe_events(probe, optim, per_epoch) if mode != "none" else 0
    size = min(int(probe.batch_size), train)
    examples, calls = {"minibatch_pairs": (2 * probe.pairs * size, 2 * probe.pairs),
                       "all_pairs": (probe.batches * size, probe.batches),
                       "per_example": (min(int(probe.examples), train), 1)}.get(mode, (0, 0))
    work = 3 * flops * (steps * batch + events * examples) + flops * (train + test * (epochs + 1))
    rate = cpu_rate("cnn" if cfg.model.name == "cnn" else "mlp")
    return work / rate + CALL_SECONDS * (steps + events * calls)


def hours(seconds: float) -> str:
    """'~3 min', '~2.5 CPU-h', '~1,200 CPU-h' (two significant figures)."""
    if math.isnan(seconds):
        return ""
    if seconds < 3600:
        return f"~{max(1, round(seconds / 60))} min"
    h = seconds / 3600
    return f"~{h:.2g} CPU-h" if h < 100 else f"~{float(f'{h:.2g}'):,.0f} CPU-h"


def plan(sweep: str, scale: str) -> Plan | None:
    """The runs of ``sweep`` at ``scale``, or None where the sweep has no grid for the scale.
    Epochs and LRs are read from each job's config as Hydra composes it; jobs that differ only in
    their seed are composed once where neither depends on the seed."""
    overrides = [f"+sweep={sweep}", f"scale={scale}", "launch_id=table"]
    try:
        cfg, hydra_cfg = split_hydra(compose(overrides))
        jobs = sweep_jobs(hydra_cfg, overrides)
    except ConfusionError:
        return None
    seeds = {_seed(job, cfg) for job in jobs}
    raw = OmegaConf.to_container(cfg.optim, resolve=False)
    if "seed" not in f"{raw.get('epochs')} {raw.get('lr')}":
        jobs = list({tuple(o for o in job if not o.startswith("seed=")): job for job in jobs}.values())
    epochs, lrs = set(), set()
    seconds = 0.0
    for _, _, job in job_configs(cfg, overrides, jobs):
        epochs.add(int(job.optim.epochs))
        if job.optim.lr is not None:
            lrs.add(float(job.optim.lr))
        seconds += run_cpu_seconds(job)
    total = len(sweep_jobs(hydra_cfg, overrides))
    seconds *= total / len(jobs)  # jobs that differ only in their seed were composed once
    return Plan(total, tuple(sorted(epochs)), len(seeds), tuple(sorted(lrs)), seconds)


def _seed(job: list[str], cfg) -> str:
    """The seed a job runs with: its seed= override, else the config's."""
    return next((o.split("=", 1)[1] for o in job if o.startswith("seed=")), str(cfg.seed))


def scale_defaults(scale: str) -> tuple[int, int]:
    """(epochs, seeds) that ``scale`` itself sets, for a sweep that does not set its own."""
    cfg = compose([f"scale={scale}", "launch_id=table"])
    return int(cfg.optim.epochs), len(sweep_values(f"seed={cfg.scale.seeds}"))


def _number(value: float) -> str:
    return f"{value:g}"


def cell(p: Plan | None) -> str:
    if p is None:
        return "-"
    cost = f", {hours(p.cpu_seconds)}" if not math.isnan(p.cpu_seconds) else ""
    if p.epochs == (0,):
        return f"{p.runs} runs: at initialization, {p.seeds} seed{'s' * (p.seeds > 1)}{cost}"
    epochs = "/".join(map(str, p.epochs)) if len(p.epochs) <= 3 else f"{p.epochs[0]}-{p.epochs[-1]}"
    lrs = ("no LR" if not p.lrs else "LR " + ", ".join(map(_number, p.lrs)) if len(p.lrs) <= 2
           else f"{len(p.lrs)} LRs {_number(p.lrs[0])}-{_number(p.lrs[-1])}")
    return f"{p.runs} runs: {epochs} ep, {p.seeds} seed{'s' * (p.seeds > 1)}, {lrs}{cost}"


def table() -> str:
    """The markdown table (and its footnotes) of every shipped sweep at every scale."""
    scales = [s for s in SCALES if s in options("scale")] + sorted(set(options("scale")) - set(SCALES))
    defaults = {scale: scale_defaults(scale) for scale in scales}
    lines = ["| sweep | " + " | ".join(f"`scale={s}`" for s in scales) + " |",
             "|---|" + "---|" * len(scales)]
    notes = []
    for sweep in options("sweep"):
        plans = {scale: plan(sweep, scale) for scale in scales}
        own = [what for what, k in (("epochs", 0), ("seeds", 1))
               if any(p is not None and (p.epochs if k == 0 else (p.seeds,)) != (defaults[s][k],)
                      for s, p in plans.items())]
        mark = ""
        if own:
            note = f"sets {' and '.join(own)} of its own at each scale, in place of the scale's"
            notes += [note] if note not in notes else []
            mark = f" [{notes.index(note) + 1}]"
        lines.append(f"| `{sweep}`{mark} | " + " | ".join(cell(plans[s]) for s in scales) + " |")
    lines.append("")
    lines.append("- scales on their own: " + "; ".join(
        f"`{s}` {e} epochs, {n} seed{'s' * (n > 1)}" for s, (e, n) in defaults.items()))
    lines += [f"- [{i}] {note}" for i, note in enumerate(notes, 1)]
    lines += [f"- {ESTIMATE_NOTE}", f"- {GPU_NOTE}"]
    return "\n".join(lines)


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with what lies between BEGIN and END replaced by ``body``."""
    if BEGIN not in text or END not in text:
        raise ConfusionError(f"no sweep table markers in the file: put {BEGIN} and {END} where it goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.sweep_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", metavar="README", help="replace the table between its markers")
    args = parser.parse_args(argv)
    body = table()
    if args.write is None:
        print(body)
        return 0
    path = Path(args.write)
    path.write_text(replace_between_markers(path.read_text(), body))
    print(f"written: the sweep table of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

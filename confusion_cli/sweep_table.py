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
# One run's CPU seconds: what it does (``run_parts``) times what each thing cost in the committed
# records (docs/records: each run folder's run.json wall time and segments, its metrics.csv
# epoch_seconds and probe_seconds, its config.yaml). Those runs took one thread each (threads=1),
# mostly two at a time on the 2-core machine, so a run's wall time is taken as one core's time;
# where n > 2 recorded runs overlapped, each stretch counts at 2/n (``recorded_runs``). The machine
# was also shared with work the records do not show (test suites, other sessions' sweeps): the
# constants carry that load, and a quiet machine is faster (a width_fmnist config rerun alone:
# 9.9 s against the estimate's 25 s and the records' 28-52 s).
#
# START_SECONDS: a run's own start-up (config, data, model, records), the init-only sweeps'
#   (theory/, canonical/: one row, no SGD step) 0.2-1.5 s a run; fitted: 0.25 s.
# ROW_SECONDS: each row outside its epoch_seconds (checkpoint, metrics.csv, the progress line):
#   run.json's wall time less the summed epoch_seconds, over rows, in linreg (37 ms a row) and
#   convergence_linreg (58 ms).
# STEP_SECONDS: each SGD step and each mini-batch probe gradient beyond its FLOPs (Python,
#   dispatch, the optimizer): linreg's 40,000 steps of a tiny model took 0.61 ms a step,
#   convergence_linreg's 78,000 0.54 ms.
# BN_LAYER_SECONDS: each BatchNorm layer's share of a step or probe gradient; FLOP_RATE: forward
#   and backward FLOPs a second on one thread (MLPs and CNNs fitted apart came out within 3% of
#   each other: one rate). Both fitted, with START_SECONDS, to the per-folder times (least squares
#   of the log ratios, then the worst folder's), ROW and STEP held at the values above. The rate
#   is 5-7x below `make bench`'s on the quiet machine (164.6 GFLOP/s for an MLP 4x256 and 252 for
#   CNN-16-2 on CIFAR-10, on 2 threads): the records' load, mostly; so the CIFAR sweeps, which no
#   record has timed, are estimated at that load too (8x the bench's core-hours).
# HVP_SECONDS_PER_FLOP: one example's Hessian-vector product (the hessian probe's Lanczos) per
#   FLOP of its forward pass, from docs/records/spectra's spectrum_batch (3 Dec): its
#   probe_seconds over its products (1.72e-10; spectrum_classes 1.23e-10), a folder whose SGD
#   epochs took what the other constants say (0.9x).
# Left out of the fit: docs/records/spectra_pilot (jamming, spectrum_batch, spectrum_classes, run
# on 2 Dec after 17:40), whose SGD epochs alone took 8-9x what the same constants say, the machine
# loaded far more than for the others: their configs rerun on this machine took 25-40x less, and
# the confirmatory jamming runs of 3 Dec took 0.65x their estimate where the pilot's took 10x.
# tests/test_sweep_table.py holds every other committed sweep folder to within 2.5x.
START_SECONDS = 0.25
ROW_SECONDS = 0.045
STEP_SECONDS = 0.55e-3
BN_LAYER_SECONDS = 0.68e-3
FLOP_RATE = 16.8e9  # FLOP/s, one thread
HVP_SECONDS_PER_FLOP = 1.7e-10
GRAM_PROBES = ("example_pairs", "fisher", "canonical")  # per-example gradients of `examples` examples
ESTIMATE_NOTE = (
    "CPU time: estimated from the configs in core-hours, one thread a run (a sweep run two at a "
    "time on 2 cores takes about half of it in wall time): each run's start-up, rows, SGD steps, "
    "probe gradients, per-example gradients, Hessian-vector products and BatchNorm layers, at the "
    "costs the committed runs under docs/records took on this 2-core machine while it was shared "
    "with other work. Calibrated against every committed sweep folder there (fmnist_confirm, "
    "cnn_fmnist, convergence, linreg, theory, canonical, spectra): each folder's "
    "measured time within 2.5x of its estimate (worst 2.43x, median 1.5x either way), a test holds "
    "it there; the spectra pilot (docs/records/spectra_pilot) ran 10-17x over, the machine loaded "
    "far more, and is left out. A quiet machine is faster: a width_fmnist run alone took 9.9 s "
    "against 25 s estimated, and `make bench` runs large models 5-7x faster per FLOP than the "
    "records did (no record has timed the CIFAR sweeps: their times assume the records' load). "
    "~1 min: a minute or less")
GPU_NOTE = ("GPU time: not measured (no GPU has timed these models yet: `python -m confusion_cli.bench "
            "--device cuda` on a GPU node prints its own estimates)")

_SHAPES: dict[str, tuple[float, int]] = {}


def model_costs(model: Any, shape: tuple[int, ...], classes: int) -> tuple[float, int]:
    """(FLOPs of one example's forward pass through ``model``, its BatchNorm layers). FLOPs: 2 x
    the multiply-adds of its linear and convolution layers (the rest is small), their shapes taken
    from a forward pass on the meta device (nothing is allocated or computed)."""
    import torch
    from omegaconf import OmegaConf

    from . import models

    raw = OmegaConf.to_container(model, resolve=True) if OmegaConf.is_config(model) else dict(model)
    key = repr((sorted(raw.items()), shape, classes))
    if key in _SHAPES:
        return _SHAPES[key]
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
    norms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    _SHAPES[key] = (2.0 * macs[0], norms)
    return _SHAPES[key]


def forward_flops(model: Any, shape: tuple[int, ...], classes: int) -> float:
    """FLOPs of one example's forward pass through ``model`` (``model_costs``)."""
    return model_costs(model, shape, classes)[0]


_EVENTS: dict[tuple, int] = {}


def _probe_events(probe: Any, optim: Any, per_epoch: int) -> int:
    """``bench.sweeps.probe_events``, once per distinct schedule and length."""
    from .bench.sweeps import probe_events

    key = (str(probe.schedule), int(probe.every), bool(probe.at_init), int(optim.epochs),
           optim.max_steps, per_epoch)
    if key not in _EVENTS:
        _EVENTS[key] = probe_events(probe, optim, per_epoch)
    return _EVENTS[key]


def run_parts(cfg: Any) -> dict[str, float]:
    """What one run of ``cfg`` does, counted: ``rows`` (epochs + the initialization row),
    ``calls`` (SGD steps and mini-batch probe gradients), ``norm_calls`` (those calls x BatchNorm
    layers), ``flops`` (training, evaluation: the test set after every epoch and the training set
    once at initialization, and every probe's gradients, 3 x forward FLOPs an example) and
    ``hvp_flops`` (the hessian probe's Hessian-vector products, in forward FLOPs an example)."""
    from omegaconf import OmegaConf

    from . import data
    from .train import steps_in_epoch

    parts = ("dataset", "model", "optim", "probe", "extra_probes")
    if OmegaConf.is_config(cfg):  # resolved once: each access to a config re-parses its interpolations
        cfg = OmegaConf.create({part: OmegaConf.to_container(cfg[part], resolve=True)
                                if cfg.get(part) is not None else None for part in parts})
    train, test, shape = data.sizes(cfg.dataset)
    flops, norms = model_costs(cfg.model, shape, data.num_classes(cfg.dataset))
    optim = cfg.optim
    batch = train if optim.full_batch else min(int(optim.batch_size), train)
    per_epoch = train // batch if batch else 0
    steps = epochs = 0
    while epochs < int(optim.epochs) and (optim.max_steps is None or steps < optim.max_steps):
        steps += steps_in_epoch(optim, per_epoch, steps)
        epochs += 1
    probe = cfg.probe
    mode = str(probe.mode)
    extras = cfg.extra_probes or {}
    events = _probe_events(probe, optim, per_epoch) if mode != "none" or extras else 0
    size = min(int(probe.batch_size), train)
    examples, calls = {"minibatch_pairs": (2 * probe.pairs * size, 2 * probe.pairs),
                       "all_pairs": (probe.batches * size, probe.batches),
                       "per_example": (min(int(probe.examples), train), 0)}.get(mode, (0, 0))
    hvp = 0
    for name, settings in extras.items():
        if name in GRAM_PROBES:
            examples += min(int(settings.examples), train)
        elif name == "grad_norm":
            examples += settings.batches * min(int(settings.batch_size), train)
            calls += settings.batches
        elif name == "hessian":
            products = int(settings.iters)
            if settings.get("spectrum"):  # the Gauss-Newton part's Lanczos and the densities too
                products = 2 * (products + int(settings.density_probes) * int(settings.density_iters))
            hvp += products * min(int(settings.examples), train)
    calls = steps + events * calls
    return {"runs": 1, "rows": epochs + 1, "calls": calls, "norm_calls": calls * norms,
            "flops": 3 * flops * (steps * batch + events * examples) + flops * (train + test * (epochs + 1)),
            "hvp_flops": events * hvp * flops}


COSTS = {"runs": START_SECONDS, "rows": ROW_SECONDS, "calls": STEP_SECONDS,
         "norm_calls": BN_LAYER_SECONDS, "flops": 1 / FLOP_RATE, "hvp_flops": HVP_SECONDS_PER_FLOP}


def run_cpu_seconds(cfg: Any) -> float:
    """Estimated CPU seconds (one thread) of one run of ``cfg``: what it does (``run_parts``) at
    the cost each part took in the committed records (COSTS)."""
    return sum(COSTS[key] * count for key, count in run_parts(cfg).items())


def recorded_runs(root: Path) -> list[tuple[Path, Any, float]]:
    """Every complete run under ``root``: (its folder, its config as recorded, the CPU seconds it
    took). A run took its run.json segments' wall time, each stretch counted at a share of 2/n
    where n > 2 recorded runs ran at once (n one-thread runs on the 2 cores). A run that ended
    early (diverged, or stopped at its fit) has its config's epochs cut to the epochs it ran
    (run.json's epochs_done), which no estimate made before it can know."""
    import json
    from datetime import datetime

    runs = []
    for path in sorted(root.rglob("run.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "complete" or not (path.parent / "config.yaml").is_file():
            continue
        segments = record.get("segments") or [{"start": record["start_time"], "end": record.get("end_time")}]
        stamp = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731
        spans = [(stamp(s["start"]), stamp(s["end"])) for s in segments if s.get("end")]
        runs.append((path.parent, record, spans))
    edges = sorted({t for _, _, spans in runs for span in spans for t in span})
    index = {t: i for i, t in enumerate(edges)}
    active = [0] * len(edges)
    for _, _, spans in runs:
        for start, end in spans:
            for i in range(index[start], index[end]):
                active[i] += 1
    out = []
    for folder, record, spans in runs:
        cfg = OmegaConf.load(folder / "config.yaml")
        done = record.get("epochs_done")
        if isinstance(done, int) and not isinstance(done, bool) and done < int(cfg.optim.epochs):
            cfg.optim.epochs = done
        seconds = sum((edges[i + 1] - edges[i]) * min(1.0, 2.0 / active[i])
                      for start, end in spans for i in range(index[start], index[end]))
        out.append((folder, cfg, seconds))
    return out


def recorded_seconds(root: Path) -> dict[Path, tuple[str, float, float]]:
    """Every launch folder under ``root`` (the folder its runs' folders are in): (its sweep, the
    CPU seconds its runs took, the seconds ``run_cpu_seconds`` estimates for them), from
    ``recorded_runs``."""
    folders: dict[Path, tuple[str, float, float]] = {}
    for folder, cfg, seconds in recorded_runs(root):
        sweep = str(cfg.sweep.name) if cfg.get("sweep") and cfg.sweep.get("name") else ""
        _, took, estimate = folders.get(folder.parent, (sweep, 0.0, 0.0))
        folders[folder.parent] = (sweep, took + seconds, estimate + run_cpu_seconds(cfg))
    return folders


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

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
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .config import compose, job_configs, options, split_hydra, sweep_jobs, sweep_values
from .errors import ConfusionError

BEGIN = "<!-- sweep table: made by `python -m confusion_cli.sweep_table --write README.md`; do not edit -->"
END = "<!-- end of the sweep table -->"
SCALES = ("smoke", "demo", "default", "quick", "confirm", "paper")  # small to large


@dataclass(frozen=True)
class Plan:
    """What `confusion run +sweep=NAME scale=SCALE` runs."""

    runs: int
    epochs: tuple[int, ...]
    seeds: int
    lrs: tuple[float, ...]


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
    for _, _, job in job_configs(cfg, overrides, jobs):
        epochs.add(int(job.optim.epochs))
        if job.optim.lr is not None:
            lrs.add(float(job.optim.lr))
    return Plan(len(sweep_jobs(hydra_cfg, overrides)), tuple(sorted(epochs)), len(seeds), tuple(sorted(lrs)))


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
    if p.epochs == (0,):
        return f"{p.runs} runs: at initialization, {p.seeds} seed{'s' * (p.seeds > 1)}"
    epochs = "/".join(map(str, p.epochs)) if len(p.epochs) <= 3 else f"{p.epochs[0]}-{p.epochs[-1]}"
    lrs = ("no LR" if not p.lrs else "LR " + ", ".join(map(_number, p.lrs)) if len(p.lrs) <= 2
           else f"{len(p.lrs)} LRs {_number(p.lrs[0])}-{_number(p.lrs[-1])}")
    return f"{p.runs} runs: {epochs} ep, {p.seeds} seed{'s' * (p.seeds > 1)}, {lrs}"


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

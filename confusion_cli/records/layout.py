"""The layout of a records root: which file holds what, and every path built from it.

A records root holds ``runs/LAUNCH_ID/`` (single runs), ``sweeps/NAME/LAUNCH_ID/JOB/`` (sweep
jobs, with ``sweep.json`` and ``finished.log`` beside them), ``.claims/HASH.lock`` (one per
config) and ``figures/``. A run directory holds
- ``config.yaml``: the resolved config (Hydra's own copy is in ``.hydra/``),
- ``run.json``: status (running | complete | diverged | failed | interrupted: stopped by Ctrl-C
  or SIGTERM; ``records.load`` reads a running run whose process is gone as interrupted too),
  config hash, seed, device, library versions, git commit, first start and end time, every
  segment across resumes (start, end, host, device, wall seconds), total wall seconds, conventions,
- ``metrics.csv``: one row per evaluation (epoch 0 = initialization) and per step-level probe,
- ``samples/epoch_NNNN.csv``: every probe pair of that epoch (pair, cos, inner), and
  ``samples/step_NNNNNNNN.csv`` for a probe between two steps of an epoch,
- ``checkpoint.pt``: the latest end-of-epoch state while the run is unfinished,
- ``run.log``: what the console showed for this run, ``error.txt``: the traceback of a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_JSON, METRICS, CONFIG, SAMPLES, CHECKPOINT, RUN_LOG, ERROR, LOCK = (
    "run.json", "metrics.csv", "config.yaml", "samples", "checkpoint.pt", "run.log", "error.txt",
    ".lock")
SWEEP_JSON, FINISHED_LOG, CLAIMS = "sweep.json", "finished.log", ".claims"
FINISHED = ("complete", "diverged")
UNFINISHED = ("running", "interrupted")  # interrupted: running in run.json, its process gone


class RecordWarning(UserWarning):
    """A run directory or file that cannot be read; it is skipped."""


def samples_path(run_dir: str | os.PathLike, epoch: float, step: int | None = None) -> Path:
    """The probe pairs of one event: ``samples/epoch_NNNN.csv`` at the end of an epoch, or
    ``samples/step_NNNNNNNN.csv`` for a probe at ``step`` between two steps of an epoch."""
    if step is not None and float(epoch) != int(epoch):
        return Path(run_dir) / SAMPLES / f"step_{int(step):08d}.csv"
    return Path(run_dir) / SAMPLES / f"epoch_{int(epoch):04d}.csv"


def claim_path(root: str | os.PathLike, cfg_hash: str) -> Path:
    return Path(root) / CLAIMS / f"{cfg_hash}.lock"


def run_folder(root: str | os.PathLike, launch_id: str) -> Path:
    """The folder of the single run launched as ``launch_id`` (Hydra's ``hydra.run.dir``)."""
    return Path(root) / "runs" / launch_id

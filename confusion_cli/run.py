"""One run: Hydra's task function. Sets up data and trainer, writes records, resumes, skips.

Before it trains, a run looks for records with the same config hash under ``records_root``:
a finished one (complete or diverged) means there is nothing to do; an interrupted one (its
process gone, a checkpoint left) is resumed in its own directory, so that re-launching a
killed sweep continues where it stopped and every config has one record.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import __version__, data, probes, records
from .errors import ConfusionError
from .train import Trainer, backend, resolve_device

LOCK = ".lock"


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, '+dirty' if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: torch.device) -> dict[str, Any]:
    import hydra
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"device": str(device), "device_name": name or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "host": socket.gethostname(), "git_commit": git_commit(),
            "versions": {"confusion": __version__, "python": platform.python_version(),
                         "torch": torch.__version__, "torchvision": torchvision.__version__,
                         "hydra": hydra.__version__, "cuda": torch.version.cuda}}


def _open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing, never through a link)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)


@contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on ``run_dir`` held while this process runs there.

    The operating system drops it when the process dies, however it dies, so a held lock
    means a live run; yields False (and holds nothing) when another process has it.
    """
    fd = _open_lock_file(run_dir / LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_total() -> int | str:
    """Runs in this job's sweep (from sweep.json, written by `confusion run`), or '?'."""
    try:
        return json.loads((Path(HydraConfig.get().sweep.dir) / "sweep.json").read_text())["total"]
    except (OSError, ValueError, KeyError):
        return "?"


def progress_prefix() -> str:
    """'[run 3/20] ' inside a sweep, '' for a single run."""
    if not is_multirun():
        return ""
    return f"[run {HydraConfig.get().job.num + 1}/{sweep_total()}] "


def mark_finished(status: str) -> None:
    """Append one line per finished run to the sweep's finished.log and print sweep progress.

    The log is shared by every job of the sweep, whichever process or node runs it; one short
    O_APPEND write per job keeps the lines whole.
    """
    if not is_multirun():
        return
    hc = HydraConfig.get()
    log = Path(hc.sweep.dir) / "finished.log"
    records.append_line(log, f"{hc.job.num} {status}")
    done = len(log.read_text().splitlines())
    print(f"sweep progress: {done}/{sweep_total()} runs finished", flush=True)


class RunRecorder:
    """Writes one run's directory: run.json, config, metrics, samples, checkpoints."""

    def __init__(self, run_dir: Path, cfg: DictConfig, meta: dict[str, Any], resume: bool):
        self.dir = run_dir
        self.meta = meta
        self.rows: list[dict[str, float]] = []
        metrics = run_dir / records.METRICS
        if resume:  # keep the rows up to the checkpoint; later ones are recomputed
            self.rows = pd.read_csv(metrics).to_dict("records") if metrics.is_file() else []
        else:  # a new run, or a restart of one that died before its first checkpoint
            metrics.unlink(missing_ok=True)
            shutil.rmtree(run_dir / records.SAMPLES, ignore_errors=True)
        (run_dir / records.SAMPLES).mkdir(exist_ok=True)
        records.atomic_write(run_dir / records.CONFIG,
                             lambda f: f.write(OmegaConf.to_yaml(cfg, resolve=True)))

    def say(self, prefix: str, line: str, err: bool = False) -> None:
        """Print ``prefix + line`` (to stderr with ``err``) and ``log`` it."""
        print(f"{prefix}{line}", file=sys.stderr if err else sys.stdout, flush=True)
        self.log(line)

    def log(self, line: str) -> None:
        """Append ``line`` to the run's log, run.log: what the console showed for this run,
        across resumes, with UTC times (opened without following a link)."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        records.append_line(self.dir / records.RUN_LOG, f"{stamp} {line}")

    def set_status(self, status: str, **extra: Any) -> None:
        self.meta.update(status=status, **extra)
        if status != "running":
            end = datetime.now(timezone.utc)
            self.meta["end_time"] = end.isoformat()
            self.meta["wall_seconds"] = self.meta.get("wall_seconds_before", 0.0) + (
                time.perf_counter() - self.meta["_t0"])
        records.write_json(self.dir / records.RUN_JSON,
                           {k: v for k, v in self.meta.items() if not k.startswith("_")})

    def add_epoch(self, row: dict[str, float], samples: dict[str, torch.Tensor],
                  state: dict[str, Any] | None) -> None:
        if samples:
            frame = pd.DataFrame({k: v.detach().cpu().double().numpy() for k, v in samples.items()})
            frame.insert(0, "pair", range(len(frame)))
            records.write_csv(records.samples_path(self.dir, row["epoch"]), frame)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        records.write_csv(self.dir / records.METRICS, pd.DataFrame(self.rows))
        if state is not None:
            records.atomic_write(self.dir / records.CHECKPOINT, lambda f: torch.save(state, f),
                                 binary=True)


def choose_run_dir(cfg: DictConfig, cfg_hash: str) -> tuple[Path | None, str]:
    """Where this config runs: (None, why) to skip it, or (directory, 'new' | 'resume' | 'restart').

    An unfinished run of the same config whose process is gone is continued in its own
    directory: from its checkpoint if it has one, else from the start.
    """
    for run_dir, meta in records.find_runs(cfg.records_root, cfg_hash):
        if meta["status"] in records.FINISHED:
            return None, f"already {meta['status']} in {run_dir}"
        with run_lock(run_dir) as free:
            if not free:
                return None, f"already running in {run_dir}"
        return run_dir, "resume" if (run_dir / records.CHECKPOINT).is_file() else "restart"
    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(".")
    return out, "new"


def check_fits(cfg: DictConfig, n_train: int) -> None:
    """The probe must be able to draw what it needs from the training set."""
    probe = cfg.probe
    need = {"minibatch_pairs": ("batch_size", probe.batch_size),
            "all_pairs": ("batch_size", probe.batch_size),
            "per_example": ("examples", probe.examples)}.get(probe.mode)
    if need and need[1] > n_train:
        raise ConfusionError(f"probe.{need[0]}={need[1]} is larger than the training set "
                             f"({n_train} examples): lower probe.{need[0]}")


def format_row(row: dict[str, float], epochs: int) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['train_loss']:.4g}"]
    if not math.isnan(row.get("train_acc", math.nan)):
        parts.append(f"acc {row['train_acc']:.3f}")
    if not math.isnan(row.get("test_acc", math.nan)):
        parts.append(f"test_acc {row['test_acc']:.3f}")
    if "min_cos" in row:
        parts.append(f"min_cos {row['min_cos']:.4f}")
    parts.append(f"{row.get('epoch_seconds', 0):.1f}s")
    return "  ".join(parts)


def read_checkpoint(run_dir: Path, prefix: str = "") -> dict | None:
    """The checkpoint of an interrupted run, loaded as tensors and plain containers only
    (``weights_only``: a planted pickle never runs), on the CPU (generator states must stay CPU
    tensors; ``Trainer.load_state_dict`` moves the rest). None, with a one-line warning, when it
    is missing or unreadable (truncated, a full disk, not a checkpoint): the run then restarts
    from scratch instead of failing on every relaunch."""
    path = run_dir / records.CHECKPOINT
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: start again
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prefix}warning: checkpoint {path} is unreadable ({reason[:120]}); "
              "restarting this run from scratch", file=sys.stderr, flush=True)
        return None


def execute(cfg: DictConfig) -> str:
    """Run (or skip, or resume) the experiment ``cfg``; return its final status."""
    prefix = progress_prefix()
    cfg_hash = records.config_hash(cfg)
    with ExitStack() as held:
        # The per-hash claim: choosing a directory and marking it running happen under one
        # records-root lock, so that identical launches started together never both run.
        with claim_lock(Path(cfg.records_root), cfg_hash):
            run_dir, how = choose_run_dir(cfg, cfg_hash)
            if run_dir is None:
                print(f"{prefix}skip: {how}", flush=True)
                return "skipped"
            run_dir.mkdir(parents=True, exist_ok=True)
            if not held.enter_context(run_lock(run_dir)):
                print(f"{prefix}skip: already running in {run_dir}", flush=True)
                return "skipped"
            if how == "new":
                records.write_json(run_dir / records.RUN_JSON, {"status": "running",
                                                                "config_hash": cfg_hash})
        device = resolve_device(cfg.device)
        with backend(cfg, device):
            return _run(cfg, cfg_hash, run_dir, how, prefix, device)


@contextmanager
def claim_lock(root: Path, cfg_hash: str):
    """An exclusive OS lock on ``root/.claims/HASH.lock`` for the duration (blocking: a claim
    is held for milliseconds). See the README on locks on network filesystems."""
    claims = root / ".claims"
    claims.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(claims / f"{cfg_hash}.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _run(cfg, cfg_hash, run_dir: Path, how: str, prefix: str, device: torch.device) -> str:
    state = read_checkpoint(run_dir, prefix) if how == "resume" else None
    unreadable = how == "resume" and state is None
    if unreadable:
        how = "restart"
    started_on = (state or {}).get("device_type", device.type)
    if started_on != device.type:  # random-generator states are per device type
        raise ConfusionError(f"{run_dir} was started on {started_on} and can only resume there: "
                             f"rerun with device={started_on}, or delete that directory to start "
                             f"the run again on {device.type}")
    old = records.read_run_json(run_dir) if how == "resume" else None
    meta = {"status": "running", "config_hash": cfg_hash, "seed": cfg.seed,
            "start_time": datetime.now(timezone.utc).isoformat(), "argv": sys.argv,
            "bn_convention": probes.bn_convention(cfg.probe), "_t0": time.perf_counter(),
            "wall_seconds_before": (old or {}).get("wall_seconds", 0.0),
            **provenance(device)}
    recorder = RunRecorder(run_dir, cfg, meta, resume=how == "resume")
    recorder.set_status("running")
    if unreadable:
        recorder.log("restarting from scratch: the checkpoint was unreadable")
    try:
        dataset = data.load(cfg.dataset, cfg.data_dir, device)
        check_fits(cfg, dataset.x_train.shape[0])
        trainer = Trainer(cfg, dataset, device)
        if state is not None:
            trainer.load_state_dict(state)
            recorder.say(prefix, f"resuming {run_dir} from epoch {trainer.epoch}")
        recorder.say(prefix, f"{run_dir}: {cfg.model.name} on {cfg.dataset.name}, "
                             f"{trainer.steps_per_epoch} steps/epoch, device {device}")
        status = "complete"
        for row, samples, diverged in trainer.epochs():
            finished = diverged or trainer.epoch >= cfg.optim.epochs
            recorder.add_epoch(row, samples, None if finished else trainer.state_dict())
            if cfg.progress:
                recorder.say(prefix, format_row(row, cfg.optim.epochs))
            if diverged:
                status = "diverged"
                recorder.say(prefix, f"diverged at epoch {int(row['epoch'])} (loss {row['train_loss']}):"
                                     " recorded as diverged; lower optim.lr")
    except ConfusionError as exc:
        recorder.set_status("failed", error=str(exc))
        recorder.log(f"error: {exc}")
        raise
    except Exception as exc:
        text = traceback.format_exc()
        records.atomic_write(run_dir / "error.txt", lambda f: f.write(text))
        recorder.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        recorder.log(f"failed: {type(exc).__name__}: {exc} (traceback in error.txt)")
        raise
    recorder.say(prefix, f"{status}: {trainer.epoch} epochs, {trainer.step} steps")
    recorder.set_status(status, epochs_done=trainer.epoch, steps_done=trainer.step)
    (run_dir / records.CHECKPOINT).unlink(missing_ok=True)
    return status


def task(cfg: DictConfig) -> str:
    """Hydra task function. In a sweep a failed run is recorded and the sweep goes on."""
    try:
        status = execute(cfg)
    except ConfusionError as exc:
        if not is_multirun():
            raise
        print(f"{progress_prefix()}error: {exc}", file=sys.stderr, flush=True)
        status = "failed"
    except Exception as exc:
        if not is_multirun():
            raise
        print(f"{progress_prefix()}run failed ({type(exc).__name__}: {exc}); "
              "traceback in its error.txt; the sweep goes on", file=sys.stderr, flush=True)
        status = "failed"
    mark_finished(status)
    return status

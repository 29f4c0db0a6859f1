"""One run, Hydra's task function: the order of the steps, choose -> build -> loop -> record.

Before it trains, a run claims its config hash under ``records_root`` and looks for records of
the same config: a finished one (complete or diverged) means there is nothing to do; an
interrupted one (its process gone, a checkpoint left) is resumed in its own directory, so that
re-launching a killed sweep continues where it stopped and every config has one record.
"""

from __future__ import annotations

import contextlib
import errno
import math
import signal
import sys
import threading
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import data, probes, progress, records, tracker
from .backend import backend, resolve_device
from .errors import ConfusionError
from .train import Trainer


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def progress_prefix() -> str:
    """'[run 3/20] ' inside a sweep, '' for a single run."""
    if not is_multirun():
        return ""
    hc = HydraConfig.get()
    return f"[run {hc.job.num + 1}/{records.planned_total(Path(hc.sweep.dir))}] "


def job_label() -> str:
    """'depth=8 lr=0.03 seed=1': the values this sweep job takes for the parameters its sweep
    varies (sweep.json's grid, the job's own overrides); '' for a single run."""
    if not is_multirun():
        return ""
    hc = HydraConfig.get()
    return records.swept_label(records.planned_grid(Path(hc.sweep.dir)), list(hc.overrides.task))


def live_view(cfg: DictConfig) -> progress.Live | None:
    """The live lines (``progress.Live``) when ``progress`` is on, stderr is a terminal and the runs
    are in this process (a single run, or Hydra's basic launcher); else None: the plain lines."""
    if not cfg.progress:
        return None
    if is_multirun():
        launcher = str(HydraConfig.get().launcher.get("_target_", ""))
        if not launcher.endswith(".BasicLauncher"):
            return None
    return progress.live()


def say(recorder: records.RunRecorder, prefix: str, line: str) -> None:
    """``recorder.say``, above the live lines when they show."""
    if progress.current() is None:
        recorder.say(prefix, line)
    else:
        progress.echo(f"{prefix}{line}")
        recorder.log(line)


def total_steps(optim, steps_per_epoch: int) -> int:
    """The SGD steps of a whole run: its epochs' steps, or ``optim.max_steps`` if fewer."""
    steps = int(optim.epochs) * steps_per_epoch
    max_steps = optim.max_steps
    return steps if max_steps is None else min(steps, int(max_steps))


def estimate_seconds(cfg: DictConfig) -> float | None:
    """The run's CPU seconds estimated from its config (the README table's estimate), for the live
    ETA before its first steps are timed; None where it cannot be made (a GPU run: not measured)."""
    if str(cfg.device) not in ("cpu", "auto") or torch.cuda.is_available():
        return None
    try:
        from .sweep_table import run_cpu_seconds

        return run_cpu_seconds(cfg)
    except Exception:  # noqa: BLE001 - an estimate only: the ETA waits for the first steps
        return None


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


def execute(cfg: DictConfig) -> str:
    """Run (or skip, or resume) the experiment ``cfg``; return its final status."""
    prefix = progress_prefix()
    skip = f"skip {label}" if (label := job_label()) else "skip"
    view = live_view(cfg)
    if view is not None and is_multirun():
        hc = HydraConfig.get()
        sweep_dir = Path(hc.sweep.dir)
        view.start_sweep(str(cfg.sweep.name), records.finished_count(sweep_dir),
                         records.planned_total(sweep_dir))
    cfg_hash = records.config_hash(cfg)
    new_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(".")
    root = Path(cfg.records_root)
    with ExitStack() as held:
        # 1. choose: the per-hash claim makes choosing a directory and marking it running one
        # step, so identical launches started together never both run.
        with records.claim_lock(root, cfg_hash):
            run_dir, how = records.choose_run_dir(root, cfg_hash, new_dir)
            if run_dir is None:
                progress.echo(f"{prefix}{skip}: {how}")
                return "skipped"
            records.make_dir(run_dir, root)  # no folder on the way is a link
            if not held.enter_context(records.run_lock(run_dir)):
                lock = run_dir / records.LOCK
                fix = ("this launch_id's folder is in use by another run: give this run a new "
                       "launch_id" if how == "new" else "run the same command again once it has stopped")
                raise ConfusionError(f"{run_dir} is locked ({lock} is held "
                                     f"{records.lock_holder_text(lock)}): {fix}")
            if how == "new":  # config first: a claimed directory is always one that can be vetted
                records.check_new_dir(root, run_dir, cfg_hash)  # again, now that it is ours
                records.write_config(run_dir, cfg)
                records.write_json(run_dir / records.RUN_JSON, {"status": "running",
                                                                "config_hash": cfg_hash})
        device = resolve_device(cfg.device, HydraConfig.get().job.num if is_multirun() else None)
        with backend(cfg, device), sigterm_as_interrupt():
            return _run(cfg, cfg_hash, run_dir, how, prefix, device)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill``, a scheduler's preemption) ends the run as Ctrl-C does: a
    KeyboardInterrupt, so the run is recorded as interrupted and the command ends with one line.
    Only in the main thread, where Python handles signals; the old handler is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _start(cfg, cfg_hash, run_dir: Path, how: str, prefix: str, device: torch.device):
    """The checkpoint to resume from (None: from scratch) and the run's recorder. A checkpoint
    that cannot be read, is no state, or beside samples that are not the user's own, restarts
    the run from scratch with one warning line."""
    restart_why = None
    state = records.read_checkpoint(run_dir, prefix) if how == "resume" else None
    if how == "resume" and state is None:
        restart_why = "the checkpoint was unreadable"
    elif state is not None and (why := records.resume_problem(run_dir)):
        records.warn(f"{why}; restarting {run_dir} from scratch", prefix)
        state, restart_why = None, why
    started_on = (state or {}).get("device_type", device.type)
    if started_on not in ("cpu", "cuda", "mps"):
        records.warn(f"checkpoint {run_dir / records.CHECKPOINT} names no device ({started_on!r}); "
                     "restarting this run from scratch", prefix)
        state, restart_why, started_on = None, "the checkpoint named no device", device.type
    if started_on != device.type:  # random-generator states are per device type
        raise ConfusionError(f"{run_dir} was started on {started_on} and can only resume there: "
                             f"rerun with device={started_on}, or delete that directory to start "
                             f"the run again on {device.type}")
    old = records.read_run_json(run_dir) if how != "new" else None  # its segments so far
    meta = records.segment_meta({"status": "running", "config_hash": cfg_hash, "seed": cfg.seed,
                                 "start_time": datetime.now(timezone.utc).isoformat(), "argv": sys.argv,
                                 "bn_convention": probes.bn_convention(cfg.probe),
                                 "_t0": time.perf_counter(), **records.provenance(device)}, old)
    rows = None
    if state is not None:  # a checkpoint from before rows travelled with it: its metrics.csv
        rows = state["metrics_rows"] if "metrics_rows" in state else records.legacy_rows(run_dir)
    recorder = records.RunRecorder(run_dir, cfg, meta, rows)
    recorder.set_status("running")
    if restart_why:
        recorder.log(f"restarting from scratch: {restart_why}")
    return state, recorder


def _run(cfg, cfg_hash, run_dir: Path, how: str, prefix: str, device: torch.device) -> str:
    state, recorder = _start(cfg, cfg_hash, run_dir, how, prefix, device)
    epochs = cfg.optim.epochs
    view = tracker.Tracker()
    ran_through = False  # the loop ended by itself (its wall time counts for the sweep's ETA)
    try:
        view = open_tracker(cfg, run_dir)
        # 2. build
        dataset = data.load(cfg.dataset, cfg.data_dir, device)
        trainer = Trainer.from_config(cfg, dataset, device)
        if state is not None:
            try:
                trainer.load_state_dict(state)
            except ValueError as exc:  # it loaded but is no state of this run: start again
                why = f"the checkpoint is not a state of this run ({exc})"
                records.warn(f"checkpoint {run_dir / records.CHECKPOINT}: {why}; restarting this "
                             "run from scratch", prefix)
                trainer = Trainer.from_config(cfg, dataset, device)  # it may hold part of it
                recorder = records.RunRecorder(run_dir, cfg, recorder.meta, None)
                recorder.log(f"restarting from scratch: {why}")
            else:
                say(recorder, prefix, f"resuming {run_dir} from epoch {trainer.epoch}")
        label = job_label()
        say(recorder, prefix, f"{label + ': ' if label else ''}{cfg.model.name} on {cfg.dataset.name}, "
                              f"{trainer.steps_per_epoch} steps/epoch, device {device} -> {run_dir}")
        live = progress.current() if cfg.progress else None
        if live is not None:
            live.start_run(f"{prefix}{label}".strip() or "run", int(epochs),
                           total_steps(cfg.optim, trainer.steps_per_epoch), trainer.epoch, trainer.step,
                           estimate_seconds(cfg) if trainer.step == 0 else None)
            trainer.on_step = live.on_step
        # 3. loop, 4. record: a checkpoint after every epoch but the last
        status = "complete"
        for event in trainer.run():
            row = event.row
            checkpoint = event.epoch_end and not event.last
            recorder.add_row(row, event.samples, trainer.state_dict() if checkpoint else None)
            view.log(row, event.samples)
            if cfg.progress and event.epoch_end:
                if live is None:
                    recorder.say(prefix, format_row(row, epochs))
                else:  # the live line; the epoch's line in the log, and on stdout when it is no
                    live.on_row(row)  # terminal, or when it is the run's last
                    if not live.shared or event.last:
                        live.write(f"{prefix}{format_row(row, epochs)}")
                    recorder.log(format_row(row, epochs))
            if event.diverged:
                status = "diverged"
                say(recorder, prefix, f"diverged at epoch {int(row['epoch'])} (loss {row['train_loss']}):"
                                      " recorded as diverged; lower optim.lr")
        ran_through = True
        view.finish(status)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (sigterm_as_interrupt)
        with contextlib.suppress(OSError, ConfusionError):
            recorder.set_status("interrupted")
            recorder.log("interrupted: relaunching the same command resumes it")
        raise
    except (OSError, records.DiskFull) as exc:
        if not isinstance(exc, records.DiskFull) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        full = exc if isinstance(exc, records.DiskFull) else records.DiskFull(run_dir, exc)
        error = f"{full}; relaunching resumes this run from its last checkpoint"
        with contextlib.suppress(OSError, ConfusionError):  # the disk may be too full to say so
            recorder.set_status("failed", error=error)
        raise ConfusionError(error) from None
    except ConfusionError as exc:
        recorder.set_status("failed", error=str(exc))
        recorder.log(f"error: {exc}")
        raise
    except Exception as exc:
        text = traceback.format_exc()
        records.atomic_write(run_dir / records.ERROR, lambda f: f.write(text))
        recorder.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        recorder.log(f"failed: {type(exc).__name__}: {exc} (traceback in error.txt)")
        raise
    finally:
        view.close()
        if (live := progress.current()) is not None:
            live.end_run(ran=ran_through)
    say(recorder, prefix, f"{status}: {trainer.epoch} epochs, {trainer.step} steps")
    recorder.set_status(status, epochs_done=trainer.epoch, steps_done=trainer.step)
    (run_dir / records.CHECKPOINT).unlink(missing_ok=True)
    return status


def open_tracker(cfg: DictConfig, run_dir: Path) -> tracker.Tracker:
    """The run's tracker (``logger``). TensorBoard's events: in a sweep under
    SWEEP_DIR/tensorboard/<the swept values>, made without following a link; else in
    RUN_DIR/tensorboard. Its hyperparameters: the fixed ones and those the sweep varies."""
    name = cfg.logger
    if name != "tensorboard":
        return tracker.tracker(name, run_dir)
    swept: list[str] = []
    folder = None
    if is_multirun():
        hc = HydraConfig.get()
        sweep_dir = Path(hc.sweep.dir)
        swept = [k for k, n in records.planned_grid(sweep_dir).items() if isinstance(n, int) and n > 1]
        folder = sweep_dir / "tensorboard" / tracker.run_name(job_label(), hc.job.num)
        records.make_dir(folder, Path(cfg.records_root))
    return tracker.tracker(name, run_dir, folder, tracker.hparams_of(cfg, swept))


def task(cfg: DictConfig) -> str:
    """Hydra task function. In a sweep a failed run is recorded and the sweep goes on."""
    try:
        status = execute(cfg)
    except ConfusionError as exc:
        if not is_multirun():
            raise
        progress.echo(f"{progress_prefix()}error: {exc}", err=True)
        status = "failed"
    except Exception as exc:
        if not is_multirun():
            raise
        progress.echo(f"{progress_prefix()}run failed ({type(exc).__name__}: {exc}); "
                      "traceback in its error.txt; the sweep goes on", err=True)
        status = "failed"
    if is_multirun():
        hc = HydraConfig.get()
        sweep_dir = Path(hc.sweep.dir)
        try:
            done = records.mark_finished(sweep_dir, hc.job.num, status)
        except (ConfusionError, OSError) as exc:  # a finished.log that cannot be appended to
            progress.echo(f"{progress_prefix()}warning: progress not recorded: {exc}", err=True)
            return status
        total = records.planned_total(sweep_dir)
        if (live := progress.current()) is not None and live.sweep is not None:
            live.finished_job(done, total)
            if not live.shared:
                live.write(f"sweep progress: {done}/{total} runs finished")
        else:
            print(f"sweep progress: {done}/{total} runs finished", flush=True)
    return status

"""Reading records: many run directories into one tidy DataFrame, and one run's pieces.

Anything unreadable (a corrupt run.json, config, metrics or samples file) is skipped with a
RecordWarning that names it, so one bad file never hides the others."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from ..errors import ConfusionError
from .hashing import config_hash
from .layout import CHECKPOINT, CONFIG, FINISHED, METRICS, RUN_JSON, SAMPLES, RecordWarning
from .liveness import live_status
from .migrate import migrate


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of ``run_dir``, or None (with a RecordWarning naming the path) if unreadable."""
    path = Path(run_dir) / RUN_JSON
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or "status" not in meta:
            raise ValueError("no status field")
        return meta
    except (OSError, ValueError) as exc:
        warnings.warn(f"skipping corrupt record {path}: {exc}", RecordWarning, stacklevel=2)
        return None


def run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (or ``root`` itself) that holds a run.json, sorted."""
    root = Path(root)
    if (root / RUN_JSON).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(RUN_JSON))


def distrust(root: Path, run_dir: Path, cfg_hash: str) -> str | None:
    """Why the run directory ``run_dir``, which claims the config hash ``cfg_hash``, must not be
    believed (None: it may be): it must lie under ``root`` through no symlink, be owned by the
    current user with its run.json, and hold a config.yaml that hashes to the claimed hash."""
    root, run_dir = Path(os.path.abspath(root)), Path(os.path.abspath(run_dir))
    if root not in run_dir.parents or root.resolve() not in run_dir.resolve().parents:
        return f"it is outside records_root {root}"
    path = root
    for part in run_dir.relative_to(root).parts:
        path = path / part
        if path.is_symlink():
            return f"{path} is a symbolic link"
    for name in (RUN_JSON, CONFIG, CHECKPOINT, METRICS):
        if (run_dir / name).is_symlink():
            return f"its {name} is a symbolic link"
    if any(os.stat(p).st_uid != os.getuid() for p in (run_dir, run_dir / RUN_JSON)):
        return "it belongs to another user"
    try:
        claimed = config_hash(OmegaConf.load(run_dir / CONFIG))
    except Exception as exc:  # noqa: BLE001 - any unreadable config is not believed
        return f"its {CONFIG} is unreadable ({type(exc).__name__})"
    return None if claimed == cfg_hash else f"its {CONFIG} does not hash to the hash its run.json claims"


def find_runs(root: str | os.PathLike, cfg_hash: str) -> list[tuple[Path, dict[str, Any]]]:
    """The trusted runs under ``root`` whose config hash is ``cfg_hash``, finished ones first.
    A directory that claims the hash but cannot be trusted (see ``distrust``) is skipped with a
    one-line warning on stderr: a planted record never makes a run skip or resume."""
    if not Path(root).is_dir():
        return []
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordWarning)
        for d in run_dirs(root):
            meta = read_run_json(d)
            if meta is None or meta.get("config_hash") != cfg_hash:
                continue
            if (why := distrust(Path(root), d, cfg_hash)) is not None:
                print(f"warning: ignoring the record in {d}: {why}", file=sys.stderr, flush=True)
                continue
            found.append((d, meta))
    found.sort(key=lambda item: item[1]["status"] not in FINISHED)
    return found


def legacy_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics rows of a run whose checkpoint predates rows in checkpoints: its metrics.csv."""
    metrics = Path(run_dir) / METRICS
    return pd.read_csv(metrics).to_dict("records") if metrics.is_file() else []


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"depth": 8}} -> {"model.depth": 8}; lists become strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value) if isinstance(value, list) else value
    return flat


def _load_one(run_dir: Path) -> pd.DataFrame | None:
    meta = read_run_json(run_dir)
    if meta is None:
        return None
    try:
        config = migrate(OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG)))  # today's layout
        metrics = (pd.read_csv(run_dir / METRICS) if (run_dir / METRICS).is_file()
                   else pd.DataFrame({"epoch": pd.Series(dtype="int64")}))
        if "epoch" not in metrics or not pd.api.types.is_numeric_dtype(metrics["epoch"]):
            raise ValueError(f"{METRICS} has no numeric epoch column")
    except Exception as exc:  # noqa: BLE001 - any unreadable record is skipped by path
        warnings.warn(f"skipping corrupt record {run_dir}: {exc}", RecordWarning, stacklevel=3)
        return None
    info = {"run_dir": str(run_dir), "status": live_status(run_dir, meta["status"]),
            "config_hash": meta.get("config_hash"), "device": meta.get("device"),
            **{k: v for k, v in flatten(config).items() if k not in ("device",)}}
    for key, value in info.items():
        metrics[key] = value
    return metrics


def load(path: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every run under ``path`` (one or many directories) as one tidy DataFrame.

    One row per (run, evaluation): the metrics.csv columns, plus ``run_dir``, ``status``,
    ``config_hash``, ``device`` and the config flattened into columns (``model.depth``,
    ``optim.lr``, ``seed``, ...). Unreadable runs are skipped with a RecordWarning naming them.
    ``status`` is run.json's (complete, diverged, failed, running), except that a run marked
    running whose process is gone (its run lock not held) is ``interrupted``.
    """
    roots = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    frames = [f for root in roots for d in run_dirs(root) if (f := _load_one(d)) is not None]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def load_samples(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every probe pair sample of one run: columns epoch, pair, cos, inner (and step, for probes
    between two steps of an epoch, whose epoch is then NaN). An unreadable or malformed file
    (empty, truncated, wrong columns) is skipped with a RecordWarning naming it."""
    paths = sorted((Path(run_dir) / SAMPLES).glob("epoch_*.csv"))
    paths += sorted((Path(run_dir) / SAMPLES).glob("step_*.csv"))
    frames = [frame for path in paths if (frame := read_samples_file(path)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "pair", "cos", "inner"])


def read_samples_file(path: Path) -> pd.DataFrame | None:
    """One samples file with its epoch (or step) column; None if it is missing, or (with a
    RecordWarning naming it) unreadable or malformed: empty, truncated, wrong columns."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
        if not {"pair", "cos", "inner"} <= set(frame.columns):
            raise ValueError(f"columns {list(frame.columns)}, expected pair, cos, inner")
        kind, number = path.stem.split("_")
        return frame.assign(**{kind: int(number)})
    except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
        warnings.warn(f"skipping corrupt samples file {path}: {exc}", RecordWarning, stacklevel=3)
        return None


def require_records(path: str | os.PathLike) -> pd.DataFrame:
    """``load`` for the CLI: a ConfusionError if the directory is missing or holds no run."""
    if not Path(path).exists():
        raise ConfusionError(f"no such directory: {path} (give the records directory, "
                             "e.g. `confusion plot outputs`)")
    frame = load(path)
    if frame.empty:
        raise ConfusionError(f"no run records under {path}: run `confusion run ...` first, "
                             "or point `confusion plot` at the directory it wrote")
    return frame



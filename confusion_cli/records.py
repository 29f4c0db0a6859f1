"""Records on disk: one directory per run, written atomically; many runs read into one DataFrame.

A run directory holds
- ``config.yaml``: the resolved config (Hydra's own copy is in ``.hydra/``),
- ``run.json``: status (running | complete | diverged | failed), config hash, seed, device,
  library versions, git commit, start/end time, wall seconds, conventions,
- ``metrics.csv``: one row per evaluation (epoch 0 = initialization),
- ``samples/epoch_NNNN.csv``: every probe pair of that epoch (pair, cos, inner),
- ``checkpoint.pt``: the latest end-of-epoch state while the run is unfinished.
Every file is written to a temporary name and renamed into place, so a reader sees either
the old or the new version, never half a file. A complete run is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .errors import ConfusionError

RUN_JSON, METRICS, CONFIG, SAMPLES, CHECKPOINT, RUN_LOG = (
    "run.json", "metrics.csv", "config.yaml", "samples", "checkpoint.pt", "run.log")
FINISHED = ("complete", "diverged")
# Config keys that say where or how verbosely a run happens, not what it computes.
NON_SEMANTIC_KEYS = ("records_root", "data_dir", "launch_id", "progress", "device", "threads", "sweep")


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class RecordWarning(UserWarning):
    """A run directory that cannot be read; it is skipped."""


def atomic_write(path: Path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a fresh temporary file beside ``path`` (text, or bytes with
    ``binary``), fsync it, rename it onto ``path`` and fsync the directory.

    The temporary file is created new by mkstemp (O_EXCL: never an existing file or a planted
    link), and the rename replaces whatever ``path`` was, a symlink included, without following
    it: no write lands outside the directory. A reader sees the old file or the new one, whole.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; records are for the whole group
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` (created if missing, never through a link): a single short
    O_APPEND write, so lines from concurrent writers stay whole."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(f"{line}\n")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda f: frame.to_csv(f, index=False))


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that do not change what a run computes.

    The sweep's name stays (each sweep's records are its own, so a figure finds all its runs),
    but not its grids or the scale's seed list: growing a grid keeps the runs already done.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    semantic = {k: v for k, v in container.items() if k not in NON_SEMANTIC_KEYS}
    semantic["sweep"] = (container.get("sweep") or {}).get("name")
    semantic.pop("scale", None)
    return semantic


def config_hash(cfg: DictConfig) -> str:
    """A short stable hash of the semantic config: runs with equal hashes compute the same thing."""
    text = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def find_runs(root: str | os.PathLike, cfg_hash: str) -> list[tuple[Path, dict[str, Any]]]:
    """Runs under ``root`` whose config hash is ``cfg_hash``, finished ones first."""
    if not Path(root).is_dir():
        return []
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordWarning)
        for d in run_dirs(root):
            meta = read_run_json(d)
            if meta is not None and meta.get("config_hash") == cfg_hash:
                found.append((d, meta))
    found.sort(key=lambda item: item[1]["status"] not in FINISHED)
    return found


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
        config = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG))
        metrics = (pd.read_csv(run_dir / METRICS) if (run_dir / METRICS).is_file()
                   else pd.DataFrame({"epoch": pd.Series(dtype="int64")}))
        if "epoch" not in metrics or not pd.api.types.is_numeric_dtype(metrics["epoch"]):
            raise ValueError(f"{METRICS} has no numeric epoch column")
    except Exception as exc:  # noqa: BLE001 - any unreadable record is skipped by path
        warnings.warn(f"skipping corrupt record {run_dir}: {exc}", RecordWarning, stacklevel=3)
        return None
    info = {"run_dir": str(run_dir), "status": meta["status"],
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
    """
    roots = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    frames = [f for root in roots for d in run_dirs(root) if (f := _load_one(d)) is not None]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def load_samples(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every probe pair sample of one run: columns epoch, pair, cos, inner. An unreadable or
    malformed file (empty, truncated, wrong columns) is skipped with a RecordWarning naming it."""
    frames = [frame for path in sorted((Path(run_dir) / SAMPLES).glob("epoch_*.csv"))
              if (frame := read_samples_file(path)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "pair", "cos", "inner"])


def samples_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``samples/epoch_NNNN.csv`` of ``run_dir``: the probe pairs of one epoch."""
    return Path(run_dir) / SAMPLES / f"epoch_{int(epoch):04d}.csv"


def read_samples_file(path: Path) -> pd.DataFrame | None:
    """One samples file with its epoch column; None if it is missing, or (with a RecordWarning
    naming it) unreadable or malformed: empty, truncated, wrong columns."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
        if not {"pair", "cos", "inner"} <= set(frame.columns):
            raise ValueError(f"columns {list(frame.columns)}, expected pair, cos, inner")
        return frame.assign(epoch=int(path.stem.split("_")[1]))
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



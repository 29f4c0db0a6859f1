"""Reading records: many run directories into one tidy DataFrame, and one run's pieces.

Every reader (the runner choosing a directory, ``load`` for figures, claims and users, and
``confusion status``) believes a run directory only after one vetting, ``vet``: it lies under the
root read through no symbolic link, it and its files are the current user's, regular files read
with a size cap (``safe``), and its config.yaml hashes to the hash its run.json claims. A run
that fails, or any unreadable file (a corrupt run.json, config, metrics or samples file), is
skipped with a one-line RecordWarning naming it and why, so one bad file never hides the others
and a planted record is never drawn, selected or resumed."""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import sys
import warnings
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import ConfusionError
from . import safe
from .hashing import config_hash
from .layout import CHECKPOINT, CONFIG, FINISHED, METRICS, RUN_JSON, SAMPLES, RecordWarning
from .liveness import live_status
from .migrate import migrate
from .safe import UnsafeRecord, kind, read_bytes, read_text


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its message's first line, else its type's name."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of ``run_dir`` (a regular file of the current user, at most 1 MiB, read
    without following a link or blocking), or None with a RecordWarning naming the path."""
    path = Path(run_dir) / RUN_JSON
    try:
        meta = json.loads(read_text(path))
        if not isinstance(meta, dict) or "status" not in meta:
            raise ValueError("no status field")
        return meta
    except (OSError, ValueError) as exc:
        warnings.warn(f"skipping corrupt record {path}: {one_line(exc)}", RecordWarning, stacklevel=2)
        return None


@cache
def _yaml_loader() -> type:
    """A YAML loader that reads a config.yaml as ``OmegaConf.load`` does (its float and
    duplicate-key rules, no timestamps), with libyaml's parser where installed: a plain dict,
    several times faster, so that vetting every record stays cheap."""
    from omegaconf._utils import get_yaml_loader

    omega = get_yaml_loader()

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_mapping(self, node, deep=False):
            keys = [k.value for k, _ in node.value if k.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG]
            if len(keys) != len(set(keys)):
                raise ValueError(f"duplicate key in a mapping at line {node.start_mark.line + 1}")
            return super().construct_mapping(node, deep=deep)

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in omega.yaml_implicit_resolvers.items()}
    return Loader


def parse_config(text: str) -> dict[str, Any]:
    """A config.yaml's text as a plain dict (a ValueError if it is not a YAML mapping)."""
    try:
        config = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML ({one_line(exc)})") from None
    if not isinstance(config, dict):
        raise ValueError(f"not a mapping but {type(config).__name__}")
    return config


def read_config(path: Path) -> dict[str, Any]:
    """The config file ``path`` read as a record file (``safe``) and parsed (``parse_config``)."""
    return parse_config(read_text(path))


def run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (or ``root`` itself) that holds a run.json, sorted; folders
    reached through a symbolic link are not searched."""
    root = Path(root)
    if os.path.lexists(root / RUN_JSON):
        return [root]
    return sorted(p.parent for p in root.rglob(RUN_JSON))


def vet(root: str | os.PathLike, run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, config.yaml as a dict) of the run directory ``run_dir`` found under ``root``,
    once it may be believed; else an UnsafeRecord or ValueError saying why: ``run_dir`` lies
    under ``root`` (or is it) through no symbolic link and belongs to the current user; its
    run.json and config.yaml are regular files of the current user within their size caps, as
    are its metrics.csv and checkpoint.pt where present; and its config.yaml hashes to the hash
    its run.json claims."""
    absolute, root_abs = Path(os.path.abspath(run_dir)), Path(os.path.abspath(root))
    if absolute != root_abs and root_abs not in absolute.parents:
        raise UnsafeRecord(f"it is outside records_root {root}")
    path, run_dir = Path(root), Path(run_dir)  # named as given, in messages
    for part in absolute.relative_to(root_abs).parts:
        path = path / part
        if os.path.islink(path):
            raise UnsafeRecord(f"{path} is a symbolic link")
    try:
        safe.check_owner(run_dir, os.stat(run_dir))
    except UnsafeRecord as exc:
        raise UnsafeRecord(str(exc).replace(str(run_dir), "it", 1)) from None
    for name in (METRICS, CHECKPOINT):
        try:
            mode = os.lstat(run_dir / name).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            raise UnsafeRecord(f"its {name} is {kind(mode)}")
    try:
        meta = json.loads(read_text(run_dir / RUN_JSON))
        if not isinstance(meta, dict) or "status" not in meta:
            raise ValueError("no status field")
    except UnsafeRecord:
        raise
    except ValueError as exc:
        raise CorruptRecord(f"{run_dir / RUN_JSON}: {one_line(exc)}") from None
    try:
        text = read_text(run_dir / CONFIG)
    except UnsafeRecord:
        raise
    except OSError as exc:
        raise ValueError(f"its {CONFIG} is unreadable ({one_line(exc)})") from None
    config, actual = _parsed_and_hashed(text, _declared_defaults())
    if actual != meta.get("config_hash"):
        raise ValueError(f"its {CONFIG} does not hash to the hash its run.json claims")
    return meta, copy.deepcopy(config)


def _declared_defaults() -> tuple:
    """What the hash's declared defaults are read from (the config tree, the spec's schemas): a
    test that swaps them gets fresh hashes."""
    from .. import spec
    from . import migrate as migration

    return str(migration.CONFIGS), tuple(id(s) for group in spec.SCHEMAS.values() for s in group.values())


@lru_cache(maxsize=8192)
def _parsed_and_hashed(text: str, defaults: tuple) -> tuple[dict[str, Any], str]:
    """(the config, its hash) of a config.yaml's text, or the ValueError saying why neither can be
    had. Kept by text (and ``defaults``): a reader that vets the same records again (``confusion
    status`` every few seconds, claims and figures reading one sweep) parses, migrates and hashes
    each config once; the file is still opened and its path, owner and kind checked every call."""
    try:
        config = parse_config(text)
    except ValueError as exc:
        raise ValueError(f"its {CONFIG} is unreadable ({one_line(exc)})") from None
    try:
        return config, config_hash(config)
    except Exception as exc:  # noqa: BLE001 - a config no hash can be taken of is not believed
        raise ValueError(f"its {CONFIG} cannot be hashed ({type(exc).__name__}: {one_line(exc)})") from None


class CorruptRecord(ValueError):
    """A record file that is not what it should be (half-written JSON, no status): the message is
    its path and why."""


def distrust(root: Path, run_dir: Path, cfg_hash: str) -> str | None:
    """Why the run directory ``run_dir``, which claims the config hash ``cfg_hash``, must not be
    believed (None: it may be): ``vet``'s reasons, or a config that is not ``cfg_hash``'s."""
    try:
        meta, _ = vet(root, run_dir)
    except (OSError, ValueError) as exc:
        return one_line(exc)
    if meta.get("config_hash") != cfg_hash:
        return f"its {CONFIG} does not hash to the hash its run.json claims"
    return None


def vetted(root: str | os.PathLike, run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``vet`` for readers: None, with a one-line RecordWarning naming ``run_dir`` and why,
    for a run that may not be believed."""
    try:
        return vet(root, run_dir)
    except CorruptRecord as exc:
        warnings.warn(f"skipping corrupt record {one_line(exc)}", RecordWarning, stacklevel=3)
    except (OSError, ValueError) as exc:
        warnings.warn(f"skipping the record in {run_dir}: {one_line(exc)}", RecordWarning, stacklevel=3)
    return None


def find_runs(root: str | os.PathLike, cfg_hash: str) -> list[tuple[Path, dict[str, Any]]]:
    """The trusted runs under ``root`` whose config hash is ``cfg_hash``, finished ones first.
    A directory that claims the hash but cannot be trusted (see ``vet``) is skipped with a
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


def read_csv(path: Path) -> pd.DataFrame:
    """A record's CSV file (metrics or samples) read as a record file: regular, the current
    user's, within its size cap. Rows that are not whole (a last line cut short, a line with
    another number of fields than the header) are left out with one RecordWarning naming the
    file: the writer ends every row with a newline and writes no quoted commas."""
    raw = read_bytes(path)
    lines = raw.split(b"\n")
    header, body = lines[0], lines[1:]
    cut = bool(body) and body[-1] != b""  # the file does not end with a newline
    body = body if cut else body[:-1]
    fields = header.count(b",")
    whole = [line for line in body[:-1 if cut else None] if line.count(b",") == fields]
    if (dropped := len(body) - len(whole)) and header:
        warnings.warn(f"{path}: {dropped} truncated or malformed row{'s' * (dropped > 1)} left out",
                      RecordWarning, stacklevel=3)
        raw = b"\n".join([header, *whole, b""])
    return pd.read_csv(io.BytesIO(raw))


LOSS_COLUMNS = ("train_loss", "test_loss", "batch_loss")  # infinite in a diverged run


def _clean_metrics(run_dir: Path, metrics: pd.DataFrame, status: str) -> pd.DataFrame:
    """``metrics`` with its rows at a non-finite epoch or step left out, its non-numeric values
    and its infinities (other than a diverged run's losses) as missing, with one RecordWarning
    naming the run and what was found."""
    found = []
    for key in ("epoch", "step"):
        if key in metrics:
            values = pd.to_numeric(metrics[key], errors="coerce")
            bad = ~np.isfinite(values.to_numpy(dtype=float))
            if bad.any():
                found.append(f"{int(bad.sum())} rows at a non-finite {key} left out")
                metrics = metrics[~bad]
    text, infinite = [], []
    for column in metrics.columns:
        values = metrics[column]
        if not pd.api.types.is_numeric_dtype(values):
            numbers = pd.to_numeric(values, errors="coerce")
            if (numbers.isna() & values.notna()).any():
                text.append(column)
            metrics = metrics.assign(**{column: numbers})
            values = numbers
        if pd.api.types.is_bool_dtype(values):
            continue
        is_inf = np.isinf(values.to_numpy(dtype=float))
        if is_inf.any() and not (status == "diverged" and column in LOSS_COLUMNS):
            infinite.append(column)
            metrics = metrics.assign(**{column: values.where(~is_inf)})
    if text:
        found.append(f"text in {', '.join(text)} read as missing")
    if infinite:
        found.append(f"infinite {', '.join(infinite)} read as missing")
    if found:
        warnings.warn(f"{run_dir / METRICS}: {'; '.join(found)}", RecordWarning, stacklevel=4)
    return metrics.reset_index(drop=True)


def legacy_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics rows of a run whose checkpoint predates rows in checkpoints: its metrics.csv."""
    metrics = Path(run_dir) / METRICS
    return read_csv(metrics).to_dict("records") if os.path.lexists(metrics) else []


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


def _load_one(root: str | os.PathLike, run_dir: Path) -> pd.DataFrame | None:
    if (found := vetted(root, run_dir)) is None:
        return None
    meta, config = found
    try:
        config = migrate(config)  # today's layout
        metrics = (read_csv(run_dir / METRICS) if os.path.lexists(run_dir / METRICS)
                   else pd.DataFrame({"epoch": pd.Series(dtype="int64")}))
        if "epoch" not in metrics:
            raise ValueError(f"{METRICS} has no epoch column")
        metrics = _clean_metrics(run_dir, metrics, meta["status"])
    except Exception as exc:  # noqa: BLE001 - any unreadable record is skipped by path
        warnings.warn(f"skipping corrupt record {run_dir}: {one_line(exc)}", RecordWarning, stacklevel=3)
        return None
    info = {"run_dir": str(run_dir), "status": live_status(run_dir, meta["status"]),
            "config_hash": meta.get("config_hash"), "device": meta.get("device"),
            **{k: v for k, v in flatten(config).items() if k not in ("device",)}}
    # every config column at once (one insert per column fragments the frame: a warning per run)
    constant = pd.DataFrame({k: [v] * len(metrics) for k, v in info.items() if k not in metrics},
                            index=metrics.index)
    for key in info.keys() & set(metrics.columns):
        metrics[key] = info[key]
    return pd.concat([metrics, constant], axis=1).copy()  # copy: one block per dtype


def load(path: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every run under ``path`` (one or many directories) as one tidy DataFrame.

    One row per (run, evaluation): the metrics.csv columns, plus ``run_dir``, ``status``,
    ``config_hash``, ``device`` and the config flattened into columns (``model.depth``,
    ``optim.lr``, ``seed``, ...). Only runs that pass ``vet`` (under each ``path``) are read:
    the others, and unreadable ones, are skipped with a one-line RecordWarning naming them.
    ``status`` is run.json's (complete, diverged, failed, running), except that a run marked
    running whose process is gone (its run lock not held) is ``interrupted``.
    """
    roots = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    frames = [f for root in roots for d in run_dirs(root) if (f := _load_one(root, d)) is not None]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).copy()  # copy: consolidated, so assigns don't warn


def load_samples(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every probe pair sample of one run: columns epoch, pair, cos, inner (and step, for probes
    between two steps of an epoch, whose epoch is then NaN). An unreadable or malformed file
    (empty, truncated, wrong columns, see ``read_samples_file``) is skipped with a RecordWarning
    naming it; a samples folder that is a symbolic link is not read."""
    folder = Path(run_dir) / SAMPLES
    if os.path.islink(folder):
        warnings.warn(f"skipping the samples of {run_dir}: {folder} is a symbolic link", RecordWarning,
                      stacklevel=2)
        paths = []
    else:
        paths = sorted(folder.glob("epoch_*.csv")) + sorted(folder.glob("step_*.csv"))
    frames = [frame for path in paths if (frame := read_samples_file(path)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "pair", "cos", "inner"])


def read_samples_file(path: Path) -> pd.DataFrame | None:
    """One samples file with its epoch (or step) column; None if it is missing, or (with a
    RecordWarning naming it) unreadable or malformed: empty, truncated, wrong columns, a link,
    not a regular file, another user's, over its size cap."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        if os.path.islink(path.parent):
            raise UnsafeRecord(f"{path.parent} is a symbolic link")
        frame = read_csv(path)
        if not {"pair", "cos", "inner"} <= set(frame.columns):
            raise ValueError(f"columns {list(frame.columns)}, expected pair, cos, inner")
        for column in ("pair", "cos", "inner"):
            if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
                raise ValueError(f"its {column} column holds text")
        values = frame[["cos", "inner"]].to_numpy(dtype=float)
        bad = ~np.isfinite(values).all(axis=1) | (np.abs(values[:, 0]) > 1 + 1e-6)
        if bad.all():
            raise ValueError("no pair has a finite cosine within [-1, 1]")
        if bad.any():
            warnings.warn(f"{path}: {int(bad.sum())} of {len(frame)} pairs with a NaN, infinite or "
                          "out-of-range value left out", RecordWarning, stacklevel=3)
            frame = frame[~bad]
        which, number = path.stem.split("_")
        return frame.assign(**{which: int(number)})
    except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
        warnings.warn(f"skipping corrupt samples file {path}: {one_line(exc)}", RecordWarning, stacklevel=3)
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



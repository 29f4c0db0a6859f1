"""Where datasets live when no one says (issue 23, item 9): ``$CONFUSION_DATA``, else a per-user
cache folder, ``$XDG_CACHE_HOME/confusion/data`` (``~/.cache/confusion/data``), as torchvision
and Hugging Face keep theirs, so that a run finds a dataset from any working directory.

Backward compatibility: a ``data/`` folder in the working directory that holds something (the
default before) is still the default there, and `confusion run` and `confusion data` say so in
a note. The configs read the default as ``${confusion.data_dir:}``, registered here (the package
imports this module, so every process that composes or resolves a config has it).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

LEGACY_DATA_DIR = "data"


def cache_data_dir() -> Path:
    """The per-user data folder: $XDG_CACHE_HOME/confusion/data, else ~/.cache/confusion/data
    (a relative XDG_CACHE_HOME is ignored, as the XDG specification says)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "confusion" / "data"


def uses_legacy_data_dir() -> bool:
    """Whether the default is the working directory's data/ (no $CONFUSION_DATA, and data/ is a
    folder that holds a file somewhere below it: empty dataset folders, as a failed import or a
    stray mkdir leaves, do not hide the cache folder's datasets)."""
    legacy = Path(LEGACY_DATA_DIR)
    if os.environ.get("CONFUSION_DATA") or legacy.is_symlink() or not legacy.is_dir():
        return False
    try:
        return any(files for _, _, files in os.walk(legacy))
    except OSError:
        return False


def default_data_dir() -> str:
    """data_dir when none is given: $CONFUSION_DATA, else data/ where it holds datasets (the old
    default), else the per-user cache folder."""
    if os.environ.get("CONFUSION_DATA"):
        return os.environ["CONFUSION_DATA"]
    return LEGACY_DATA_DIR if uses_legacy_data_dir() else str(cache_data_dir())


def legacy_note() -> str:
    return (f"note: datasets are read from ./{LEGACY_DATA_DIR}, which holds some; the default data "
            f"folder is now {cache_data_dir()} (move them there, or set CONFUSION_DATA=PATH to keep "
            "a folder of your choice)")


OmegaConf.register_new_resolver("confusion.data_dir", default_data_dir, replace=True)

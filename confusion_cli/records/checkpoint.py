"""Reading a run's checkpoint without running anything in it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .layout import CHECKPOINT
from .safe import open_file


def read_checkpoint(run_dir: Path, prefix: str = "") -> dict | None:
    """The checkpoint of an interrupted run, loaded as tensors and plain containers only
    (``weights_only``: a planted pickle never runs), on the CPU (generator states must stay CPU
    tensors; ``Trainer.load_state_dict`` moves the rest). None, with a one-line warning, when it
    is missing or unreadable (truncated, a full disk, not a checkpoint, a link, not a regular
    file, another user's): the run then restarts from scratch instead of failing on every
    relaunch."""
    import torch  # here, not at the top: reading records needs no torch

    path = run_dir / CHECKPOINT
    try:
        fd, _ = open_file(path)  # no link, a regular file (never a FIFO), the current user's
        with os.fdopen(fd, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: start again
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prefix}warning: checkpoint {path} is unreadable ({reason[:120]}); "
              "restarting this run from scratch", file=sys.stderr, flush=True)
        return None

"""What every run records about where it ran: device, host, library versions, git commit."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    import torch


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
    import torch  # here, not at the top: reading records needs no torch
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"device": str(device), "device_name": name or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "host": socket.gethostname(), "git_commit": git_commit(),
            "versions": {"confusion": __version__, "python": platform.python_version(),
                         "torch": torch.__version__, "torchvision": torchvision.__version__,
                         "hydra": hydra.__version__, "cuda": torch.version.cuda}}

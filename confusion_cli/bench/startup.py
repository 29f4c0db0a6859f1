"""Start-up of the command line (issue 23, item 4): wall seconds from launch to exit of
`confusion --help`, `confusion run --help`, `confusion run --cfg job` and one tab completion
(`confusion run optim.l<TAB>`), each a fresh process, best of a few. The goal is under 1.5 s each
on a 2-core machine: the row's ratio is its time over that goal (met at <= 1). The note gives a
bare `python -c "import torch"` timed in the same run, the import the CLI leaves to the moment a
run starts (composing, checking keys, printing and completing never import torch).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .timing import SHARE, Row

STARTUP_GOAL_SECONDS = 1.5
COMPLETION_LINE = "confusion run optim.l"
CASES = {  # row name: (arguments of `confusion`, extra environment)
    "confusion --help": (["--help"], {}),
    "confusion run --help": (["run", "--help"], {}),
    "confusion run --cfg job": (["run", "--cfg", "job"], {}),
    "tab completion (confusion run optim.l<TAB>)": (
        ["-sc", "query=bash"], {"COMP_LINE": COMPLETION_LINE, "COMP_POINT": str(len(COMPLETION_LINE))}),
}


def confusion_command() -> list[str]:
    """The installed `confusion` script beside this Python, else `python -m confusion_cli.cli`."""
    script = Path(sys.executable).with_name("confusion")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "confusion_cli.cli"]


def process_seconds(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall seconds of one process from start to exit; a failing process is an error."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def startup_rows(device: torch.device, quick: bool) -> list[Row]:
    """One row per CASES entry (``device`` is unused: start-up runs on the CPU). Best of 3 runs
    after a warm-up (the file cache), 1 run when ``quick``."""
    repeat = 1 if quick else 3
    command = confusion_command()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "CONFUSION_OUTPUTS": str(Path(folder) / "outputs")}
        bare = [sys.executable, "-c", "import torch"]
        if not quick:
            process_seconds(bare, env, folder)
        torch_seconds = min(process_seconds(bare, env, folder) for _ in range(repeat))
        rows = []
        for name, (args, extra) in CASES.items():
            argv = [*command, *args]
            if not quick:
                process_seconds(argv, {**env, **extra}, folder)
            seconds = min(process_seconds(argv, {**env, **extra}, folder) for _ in range(repeat))
            rows.append(Row(f"start-up: {name}", "cpu", seconds, "s", "goal", STARTUP_GOAL_SECONDS,
                            SHARE, goal=1.0, lower_is_better=True,
                            note=f"import torch alone: {torch_seconds:.2f} s; {os.cpu_count()} cores"))
    return rows

"""`make gpu-check`: the whole CUDA check in one command, on any machine with a GPU.

1. ``pytest -m cuda`` (tests/test_cuda.py: every probe on CUDA float32 against CPU float64, the
   step without host syncs, resume and reruns bit for bit, backend flags restored);
2. ``python -m confusion_cli.bench --device cuda`` (throughput, the probe's share of an epoch,
   peak memory, device-hours of the paper sweeps);
3. a timed ``confusion run +sweep=depth scale=quick`` on CIFAR-10, or on CIFAR-shaped synthetic
   images (``dataset=cifar_shaped``) where CIFAR-10 is not under data_dir (the report says which).

Writes OUT/report.md (and the pieces it is made of beside it) and prints where. Commit the
report under docs/ whenever a GPU was available.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from .bench.training import GPU_IMAGES_PER_S_GOAL


def run(command: list[str], log: Path) -> tuple[int, float]:
    """Run ``command``, its output teed to ``log``; (exit code, wall seconds)."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    return proc.wait(), time.perf_counter() - start


def test_summary(junit: Path) -> tuple[dict[str, int], list[str]]:
    """({passed, failed, skipped}, names of the failed tests) from a pytest JUnit XML file."""
    counts, failed = {"passed": 0, "failed": 0, "skipped": 0}, []
    if not junit.is_file():
        return counts, ["(no test report: pytest did not run)"]
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failed.append(f"{case.get('classname')}::{case.get('name')}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failed


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def bench_lines(csv: Path) -> list[str]:
    """The bench rows the report quotes: throughput against the goal, the probe's share of an
    epoch, peak memory; then every row as a table."""
    if not csv.is_file():
        return ["The bench did not finish: see bench.log."]
    table = pd.read_csv(csv)
    lines = []
    for pattern, what in (("images/s vs goal", f"training throughput vs the {GPU_IMAGES_PER_S_GOAL:,} "
                           "images/s goal"), ("probe(100 pairs) vs epoch", "the probe's share of an epoch"),
                          ("peak memory", "peak memory")):
        for _, row in table[table["name"].str.contains(pattern, regex=False)].iterrows():
            lines.append(f"- {what}: {number(row['value'])} {row['unit']} ({row['name']}; ratio "
                         f"{row['ratio']:.3g}, goal met: {row.get('goal_met')})")
    shown = table[[c for c in ("name", "value", "unit", "baseline", "baseline_value", "ratio", "goal_met")
                   if c in table]]
    lines += ["", "| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in shown.itertuples(index=False)]
    return lines


def sweep_lines(root: Path, seconds: float, code: int, dataset: str) -> list[str]:
    from . import records

    frame = records.load(root) if root.is_dir() else pd.DataFrame()
    status = (frame.groupby("run_dir")["status"].first().value_counts().to_dict()
              if not frame.empty else {})
    data_note = ("CIFAR-10" if dataset == "cifar10" else
                 "CIFAR-shaped synthetic images (dataset=cifar_shaped): CIFAR-10 is not under data_dir")
    return [f"- `confusion run +sweep=depth scale=quick dataset={dataset}`: exit code {code}, "
            f"wall time {seconds / 60:.1f} min, runs by status {status}", f"- data: {data_note}"]


def report(out: Path, device: str, tests: tuple[dict[str, int], list[str]], bench: list[str],
           sweep: list[str]) -> Path:
    import torch

    counts, failed = tests
    lines = [f"# gpu-check on {device}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d %H:%M')}",
             "", "## pytest -m cuda", "",
             f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped",
             *[f"- FAILED {name}" for name in failed], "", "## bench (--device cuda)", "", *bench,
             "", "## quick depth sweep", "", *sweep, ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/gpu-check")
    parser.add_argument("--data-dir", default=os.environ.get("CONFUSION_DATA", "data"))
    parser.add_argument("--sweep", nargs="*", default=[],
                        help="extra overrides for the timed sweep (e.g. seed=0 to time a part)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: gpu-check needs a CUDA GPU and none is visible here: run it on a GPU node "
              "(make test covers the CPU, with the CUDA tests skipped)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    run([python, "-m", "pytest", "-m", "cuda", "-rs", f"--junitxml={out / 'cuda-tests.xml'}",
         "tests/test_cuda.py"], out / "pytest.log")
    run([python, "-m", "confusion_cli.bench", "--device", "cuda", "--out", str(out / "bench")],
        out / "bench.log")
    cifar = Path(args.data_dir) / "cifar-10-batches-py" / "data_batch_1"
    dataset = "cifar10" if cifar.is_file() else "cifar_shaped"
    code, seconds = run([python, "-m", "confusion_cli.cli", "run", "+sweep=depth", "scale=quick",
                         f"dataset={dataset}", f"records_root={out / 'sweep'}", *args.sweep],
                        out / "sweep.log")
    path = report(out, torch.cuda.get_device_name(0), test_summary(out / "cuda-tests.xml"),
                  bench_lines(out / "bench" / "bench_cuda.csv"),
                  sweep_lines(out / "sweep", seconds, code, dataset))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

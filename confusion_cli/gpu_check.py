"""`make gpu-check`: the CUDA path checked in one command, in 8 minutes, on a GPU node that may
be offline (only the system Python, with the wheelhouse installed: README, "GPU nodes without
internet"):

    PYTHONPATH=DIR python3 -m confusion_cli.gpu_check --out OUT

Four stages, each a child process of this Python (its interpreter flags kept, output unbuffered
and teed to OUT/STAGE.log), each with its own time limit; together they share ``--budget-s``
(default 480 s): a stage may use its share (STAGES) of what is left, so time one stage does not
use goes to the next. A stage that overruns is killed with its process group.

1. env: where every package comes from and its version, the GPU, and TF32 on the GPU: a matmul
   and a convolution in float32 against float64 with TF32 on, inside ``exact_matmul`` and after,
   with every TF32 reader (legacy and new) read;
2. pytest: ``tests/test_cuda.py`` (every probe on CUDA float32 against CPU float64, the step
   without host syncs, resume and reruns and the update bit for bit, compile included) and the
   CPU test that reads every TF32 setting;
3. bench: ``python -m confusion_cli.bench --device cuda`` on the sections that matter on a GPU
   (BENCH_SECTIONS: throughput against the goal, the three SGD updates on the MLP and on
   CNN-100-2 BN+skip, the Gram and where its time goes, the probe, peak memory); ``--full`` runs
   every section;
4. sweep: a timed ``confusion run +sweep=depth scale=quick`` at one seed, one LR, 2 depths and
   2 epochs (``--full``: the whole quick sweep, 20 runs of 15 epochs), on CIFAR-10 when it is
   under the data folder, else CIFAR-shaped synthetic images (``dataset=cifar_shaped``).

OUT/report.md is rewritten after every stage, so a job killed at its time limit keeps what
finished. OUT holds at most 8 files: report.md, the four logs, cuda-tests.xml, bench_DEVICE.csv
and artifacts.tar.gz (the sweep's records, anything else). The exit code is 0 only when every
stage passed (2: no GPU here, nothing run). ``--dry-run`` runs the same stages on the CPU at the
smallest sizes, the CUDA parts skipped (make test runs it from an offline install).

Commit the report under docs/ whenever a GPU was available.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .paths import default_data_dir

KEEP = ("report.md", "env.log", "pytest.log", "bench.log", "sweep.log", "cuda-tests.xml",
        "bench_cuda.csv", "bench_cpu.csv", "artifacts.tar.gz")  # at most 8 of these at once
ARCHIVE = "artifacts.tar.gz"
REPORT_SECONDS = 10  # kept back from the budget to write the report and the archive
# the bench sections a GPU check needs (bench_sweeps times every paper architecture: --full)
BENCH_SECTIONS = ("bench_mlp", "update_rows", "cnn_throughput", "gram_rows", "gram_breakdown_rows",
                  "cnn_probe_group", "bench_memory")
REQUIRED = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "pytest", "yaml", "omegaconf",
            "hydra", "antlr4", "confusion_cli")  # what every stage imports
OPTIONAL = ("submitit", "hydra_plugins.hydra_submitit_launcher", "joblib",
            "hydra_plugins.hydra_joblib_launcher", "scipy")  # cluster launchers; confusion claims
TF32_TESTS = "tests/test_train.py::test_backend_flags_are_set_for_a_run_and_restored_after"


@dataclass
class Stage:
    """One stage: its share (a weight) of the budget left when it starts, and what it came to."""

    name: str
    title: str
    share: float
    status: str = "not run"
    seconds: float = 0.0
    limit: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not (self.status == "passed" or self.status.startswith("skipped"))


def stages() -> list[Stage]:
    """The four stages; shares in seconds of the default budget's 470 for the stages."""
    return [Stage("env", "environment and TF32 on the device", 60),  # a cold import of torch
            Stage("pytest", "the CUDA tests and the TF32 readers", 150),
            Stage("bench", "bench", 120),
            Stage("sweep", "timed depth sweep", 140)]


def python_command() -> list[str]:
    """This Python with its interpreter flags (-S, -s, -E: a check run with only chosen folders
    on the path keeps them in its children), unbuffered."""
    flags = [flag for flag, on in (("-S", sys.flags.no_site), ("-s", sys.flags.no_user_site),
                                   ("-E", sys.flags.ignore_environment)) if on]
    return [sys.executable, *flags, "-u"]


class Interrupted(Exception):
    """SIGTERM (a job's time limit) or SIGINT: the running stage is stopped, the report written."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_stage(command: list[str], log: Path, limit: float, env: dict[str, str]) -> tuple[str, float]:
    """Run ``command`` in its own process group, output teed to ``log`` and to stdout as it comes;
    killed (the whole group) after ``limit`` seconds. (status, wall seconds)."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(log, "w", buffering=1) as out:
        out.write("$ " + " ".join(command) + "\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True, bufsize=1)

        def tee():
            for line in proc.stdout:
                sys.stdout.write(line)
                out.write(line)

        reader = threading.Thread(target=tee, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=max(limit, 1.0))
            status = "passed" if code == 0 else f"failed (exit code {code})"
        except subprocess.TimeoutExpired:
            stop(proc)
            status = f"timed out after {limit:.0f} s (its time limit; the log has what it printed)"
        except Interrupted as why:
            stop(proc)
            reader.join(timeout=5)
            out.write(f"\n[gpu-check: stopped by {why}]\n")
            raise
        reader.join(timeout=5)
    return status, time.perf_counter() - start


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL 5 s later if it is still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(log: Path, lines: int = 15) -> list[str]:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return ["```", *text[-lines:], "```"] if text else []


def test_summary(junit: Path) -> tuple[dict[str, int], list[str]]:
    """({passed, failed, skipped}, names of the failed tests) from a pytest JUnit XML file."""
    counts, failed = {"passed": 0, "failed": 0, "skipped": 0}, []
    if not junit.is_file():
        return counts, ["(no test report: pytest did not finish)"]
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
    epoch, peak memory, the SGD updates, benchmark mode; then every row as a table."""
    if not csv.is_file():
        return ["No bench rows: see bench.log."]
    import pandas as pd

    table = pd.read_csv(csv)
    lines = []
    for pattern, what in (("images/s vs goal", "training throughput vs the GPU goal"),
                          ("probe(100 pairs) vs epoch", "the probe's share of an epoch"),
                          ("peak memory", "peak memory"), ("SGD update", "SGD update"),
                          ("BENCHMARK MODE", "cuDNN benchmark mode")):
        for _, row in table[table["name"].str.contains(pattern, regex=False)].iterrows():
            goal = "" if pd.isna(row.get("goal_met")) else f", goal met: {row['goal_met']}"
            lines.append(f"- {what}: {number(row['value'])} {row['unit']} ({row['name']}; ratio "
                         f"{row['ratio']:.3g}{goal})")
    shown = table[[c for c in ("name", "value", "unit", "baseline", "baseline_value", "ratio", "goal_met")
                   if c in table]]
    lines += ["", "| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in shown.itertuples(index=False)]
    return lines


def sweep_lines(root: Path, overrides: list[str], seconds: float, status: str, dataset: str) -> list[str]:
    """The sweep's command, wall time and runs by status (from its records)."""
    try:
        from . import records

        frame = records.load(root) if root.is_dir() else None
        runs = ({} if frame is None or frame.empty else
                frame.groupby("run_dir")["status"].first().value_counts().to_dict())
    except Exception as error:  # noqa: BLE001  (the report says why, the check goes on)
        runs = f"records unreadable: {type(error).__name__}: {error}"
    data_note = ("CIFAR-10" if dataset == "cifar10" else "CIFAR-shaped synthetic images "
                 "(dataset=cifar_shaped): CIFAR-10 is not under the data folder, or a dry run")
    return [f"- `confusion run {' '.join(overrides)}`: {status}, wall time {seconds / 60:.1f} min, "
            f"runs by status {runs}", f"- data: {data_note}"]


def write_report(out: Path, title: str, budget: float, all_stages: list[Stage]) -> Path:
    """report.md from what the stages came to so far (rewritten after every stage)."""
    lines = [f"# {title}", "", time.strftime("%Y-%m-%d %H:%M %Z"), "",
             f"Budget {budget:.0f} s; each stage's limit is its share of what was left when it started.",
             "", "| stage | status | seconds | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.limit:.0f} |" for s in all_stages]
    for s in all_stages:
        lines += ["", f"## {s.name}: {s.title}", "", f"Status: {s.status}.", "", *s.lines]
    path = out / "report.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def bundle(out: Path) -> None:
    """Everything in ``out`` but KEEP goes into artifacts.tar.gz (added to what it holds)."""
    extra = sorted(p for p in out.iterdir() if p.name not in KEEP and not p.name.endswith(".tmp"))
    if not extra:
        return
    archive = out / ARCHIVE
    old = out / (ARCHIVE + ".old")
    if archive.exists():
        archive.rename(old)
    with tarfile.open(archive, "w:gz") as tar:
        if old.exists():
            with tarfile.open(old) as previous:
                for member in previous.getmembers():
                    tar.addfile(member, previous.extractfile(member) if member.isfile() else None)
            old.unlink()
        for path in extra:
            tar.add(path, arcname=path.name)
    for path in extra:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def print_environment(dry_run: bool) -> int:
    """The env stage (run as a child): markdown lines on stdout; 1 if a required package does
    not import or a TF32 reader raises or TF32 does not switch on the GPU."""
    import importlib

    ok = True
    site = "off (-S)" if sys.flags.no_site else "on"
    print(f"- python {sys.version.split()[0]} ({sys.executable}), site {site}")
    for name in REQUIRED + OPTIONAL:
        try:
            module = importlib.import_module(name)
        except Exception as error:  # noqa: BLE001  (any import failure is the finding)
            ok = ok and name not in REQUIRED
            kind = "MISSING (required)" if name in REQUIRED else "missing (optional)"
            print(f"- {name}: {kind}: {type(error).__name__}: {error}")
            continue
        where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
        print(f"- {name} {getattr(module, '__version__', '')}: {where}")
    if not ok:
        return 1
    import torch

    from .backend import exact_matmul, tf32

    print(f"- torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
    cuda = torch.cuda.is_available()
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print(f"- GPU 0 of {torch.cuda.device_count()}: {props.name}, compute capability "
              f"{props.major}.{props.minor}, {props.total_memory / 2**30:.1f} GiB")
    device = torch.device("cuda" if cuda and not dry_run else "cpu")

    def readers() -> str:
        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        return (f"matmul.allow_tf32={matmul.allow_tf32}, cudnn.allow_tf32={cudnn.allow_tf32}, "
                f"float32_matmul_precision={torch.get_float32_matmul_precision()}, "
                f"fp32_precision matmul/conv/rnn={matmul.fp32_precision}/"
                f"{cudnn.conv.fp32_precision}/{cudnn.rnn.fp32_precision}")

    def errors() -> tuple[float, float]:
        """Max relative error of a float32 matmul and convolution on ``device`` vs float64."""
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
        x, w = torch.randn(16, 64, 32, 32, generator=g), torch.randn(64, 64, 3, 3, generator=g)
        conv2d = torch.nn.functional.conv2d
        mm = (a.to(device) @ b.to(device)).cpu().double()
        conv = conv2d(x.to(device), w.to(device), padding=1).cpu().double()
        mm_ref, conv_ref = a.double() @ b.double(), conv2d(x.double(), w.double(), padding=1)
        return (((mm - mm_ref).abs().max() / mm_ref.abs().max()).item(),
                ((conv - conv_ref).abs().max() / conv_ref.abs().max()).item())

    gpu = device.type == "cuda"
    try:
        with tf32(True):
            print(f"- TF32 on: {readers()}")
            tf32_error = errors() if gpu else None
            with exact_matmul(torch.device("cuda")):  # its CUDA settings, also on a CPU
                print(f"- inside exact_matmul: {readers()}")
                exact_error = errors() if gpu else None
            print(f"- after exact_matmul: {readers()}")
        print(f"- after: {readers()}")
    except RuntimeError as error:
        print(f"- a TF32 reader raised: {error}")
        return 1
    if not gpu:
        print("- CUDA parts skipped (dry run on the CPU): the TF32 errors on the GPU")
        return 0
    print(f"- max relative error vs float64 on {device}, matmul / conv: TF32 on {tf32_error[0]:.1e} / "
          f"{tf32_error[1]:.1e}, inside exact_matmul {exact_error[0]:.1e} / {exact_error[1]:.1e}")
    if exact_error[0] > 1e-5 or exact_error[1] > 1e-4:  # cuDNN's float32 algorithms (Winograd) err more
        print("- exact_matmul left TF32 on: its error is not float32's")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/gpu-check")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="seconds for all stages together (default 480: an 8-minute check)")
    parser.add_argument("--full", action="store_true",
                        help="every bench section and the whole quick depth sweep (20 runs x 15 epochs)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same stages on the CPU at the smallest sizes, CUDA parts skipped")
    parser.add_argument("--data-dir", default=None, help="where CIFAR-10 may be (default: the runs' own)")
    parser.add_argument("--bench-sections", default=None,
                        help=f"comma-separated bench sections (default: {','.join(BENCH_SECTIONS)})")
    parser.add_argument("--sweep", nargs="*", default=[], help="extra overrides for the timed sweep")
    parser.add_argument("--environment", action="store_true", help=argparse.SUPPRESS)  # the env stage
    args = parser.parse_args(argv)
    if args.environment:
        return print_environment(args.dry_run)
    if args.budget_s <= REPORT_SECONDS:
        print(f"error: --budget-s {args.budget_s:g} leaves nothing for the stages: give more than "
              f"{REPORT_SECONDS} s (default 480)", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError as error:
        print(f"error: torch does not import ({error}): gpu-check needs the node's torch", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("error: gpu-check needs a CUDA GPU and none is visible here: run it on a GPU node "
              "(--dry-run runs its stages on the CPU; make test covers the CPU)", file=sys.stderr)
        return 2
    if not Path("tests/test_cuda.py").is_file():
        print("error: tests/test_cuda.py is not here: run gpu-check from the project's folder (the "
              "tests are not in the wheel)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.dry_run else "cuda"
    title = ("gpu-check --dry-run on the CPU" if args.dry_run
             else f"gpu-check on {torch.cuda.get_device_name(0)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CONFUSION_OUTPUTS": str(out / "outputs")}
    if args.data_dir:
        env["CONFUSION_DATA"] = args.data_dir
    data_dir = Path(default_data_dir())  # the runs' own default, $CONFUSION_DATA first
    cifar = (data_dir / "cifar-10-batches-py" / "data_batch_1").is_file()
    dataset = "cifar10" if cifar and not args.dry_run else "cifar_shaped"
    py = python_command()
    sections = args.bench_sections or ("" if args.full else ",".join(BENCH_SECTIONS))
    if args.dry_run:
        # the script's path, not a timing: one run (depth 10) of one epoch, the lightest the sweep has
        sweep = ["+sweep=depth", "scale=smoke", f"dataset={dataset}", "device=cpu",
                 "sweep.depths.smoke='10'", "optim.epochs=1", "optim.milestones=[]"]
    elif args.full:
        sweep = ["+sweep=depth", "scale=quick", f"dataset={dataset}"]
    else:  # one seed, one LR, 2 depths, 2 epochs of the quick sweep
        sweep = ["+sweep=depth", "scale=quick", f"dataset={dataset}", "scale.seeds=0",
                 "sweep.lrs.quick='0.03'", "sweep.depths.quick='16,40'", "optim.epochs=2",
                 "optim.milestones=[1]"]
    sweep += [f"records_root={out / 'sweep'}", *args.sweep]
    commands = {
        "env": [*py, "-m", "confusion_cli.gpu_check", "--environment",
                *(["--dry-run"] if args.dry_run else [])],
        "pytest": [*py, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--durations=10",
                   f"--junitxml={out / 'cuda-tests.xml'}", "tests/test_cuda.py", TF32_TESTS],
        "bench": [*py, "-m", "confusion_cli.bench", "--device", device, "--out", str(out),
                  *(["--quick"] if args.dry_run else []), *(["--sections", sections] if sections else [])],
        "sweep": [*py, "-m", "confusion_cli.cli", "run", *sweep],
    }
    all_stages = stages()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    deadline = time.monotonic() + args.budget_s - REPORT_SECONDS
    write_report(out, title, args.budget_s, all_stages)  # a check killed at once still leaves one
    try:
        for k, stage in enumerate(all_stages):
            left = deadline - time.monotonic()
            shares = sum(s.share for s in all_stages[k:])
            stage.limit = max(left * stage.share / shares, 0.0)
            if stage.limit < 1:
                stage.status = "not run: the budget was spent"
                continue
            log = out / f"{stage.name}.log"
            stage.status, stage.seconds = run_stage(commands[stage.name], log, stage.limit, env)
            stage.lines = summarise(stage, out, log, device, sweep, dataset)
            write_report(out, title, args.budget_s, all_stages)
    except Interrupted as why:
        for stage in all_stages:
            if stage.status == "not run" and stage.limit:
                stage.status = f"stopped by {why}"
        print(f"gpu-check: stopped by {why}", file=sys.stderr)
    finally:
        bundle(out)
        path = write_report(out, title, args.budget_s, all_stages)
    failed = [s.name for s in all_stages if s.failed]
    print(f"written: {path} ({'every stage passed' if not failed else 'failed: ' + ', '.join(failed)})")
    return 1 if failed else 0


def summarise(stage: Stage, out: Path, log: Path, device: str, sweep: list[str], dataset: str) -> list[str]:
    """The report's lines for a stage that ran; a failed stage's log tail is quoted."""
    tail = log_tail(log) if stage.failed else []
    try:
        if stage.name == "env":
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("- ")]
            return lines if lines else tail
        if stage.name == "pytest":
            counts, failed = test_summary(out / "cuda-tests.xml")
            return [f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped",
                    *[f"- FAILED {name}" for name in failed], *tail]
        if stage.name == "bench":
            return bench_lines(out / f"bench_{device}.csv") + tail
        bundle_note = [f"- records: {ARCHIVE} (sweep/)"]
        return sweep_lines(out / "sweep", sweep, stage.seconds, stage.status, dataset) + bundle_note + tail
    except Exception as error:  # noqa: BLE001  (a summary that fails is reported, not fatal)
        return [f"- could not summarise: {type(error).__name__}: {error}", *tail]


if __name__ == "__main__":
    raise SystemExit(main())

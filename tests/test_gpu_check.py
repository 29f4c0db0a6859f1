"""`make gpu-check` without a GPU: one line and exit 2; its stages' time limits, report and
folder; and the offline path whole: the wheelhouse installed with --no-index into a fresh folder,
then `gpu_check --dry-run` with only that folder and a stand-in for a node's system site-packages
(torch, torchvision, numpy, pandas, matplotlib, pytest and their dependencies) on the path."""

import os
import re
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement

from confusion_cli import gpu_check, wheelhouse

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_without_a_gpu_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0] and "--dry-run" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_budget_that_leaves_nothing_is_one_line(capsys, tmp_path):
    assert gpu_check.main(["--dry-run", "--budget-s", "5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget-s 5" in err[0]


def test_a_stage_past_its_limit_is_killed_with_its_children_and_its_output_kept(tmp_path):
    child = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(child)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    log = tmp_path / "stage.log"
    status, seconds = gpu_check.run_stage([sys.executable, "-c", script], log, 3, dict(os.environ))
    assert status.startswith("timed out after 3 s") and seconds < 15
    assert "started" in log.read_text()  # unbuffered: the line is there although it was killed
    grandchild = Path(f"/proc/{child.read_text()}/stat")
    for _ in range(50):  # the whole process group went (gone, or a zombie left for init to reap)
        try:
            if grandchild.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the stage's own child outlived the time limit")
    status, _ = gpu_check.run_stage([sys.executable, "-c", "raise SystemExit(3)"], log, 30, dict(os.environ))
    assert status == "failed (exit code 3)"


def test_the_report_quotes_tests_bench_and_sweep_and_says_what_failed(tmp_path):
    junit = tmp_path / "cuda-tests.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="tests.test_cuda" name="a"/>'
                     '<testcase classname="tests.test_cuda" name="b"><failure message="x"/></testcase>'
                     '<testcase classname="tests.test_cuda" name="c"><skipped/></testcase>'
                     '</testsuite></testsuites>')
    counts, failed = gpu_check.test_summary(junit)
    assert counts == {"passed": 1, "failed": 1, "skipped": 1} and failed == ["tests.test_cuda::b"]
    bench = tmp_path / "bench_cuda.csv"
    pd.DataFrame([{"name": "cnn16-2 training images/s vs goal", "value": 25000.0, "unit": "images/s",
                   "baseline": "GPU goal", "baseline_value": 20000.0, "ratio": 1.25, "goal_met": True},
                  {"name": "cnn16-2 probe(100 pairs) vs epoch", "value": 3.0, "unit": "s",
                   "baseline": "one epoch", "baseline_value": 10.0, "ratio": 0.3, "goal_met": True}]
                 ).to_csv(bench, index=False)
    lines = gpu_check.bench_lines(bench)
    assert any("25,000 images/s" in line and "ratio 1.25" in line for line in lines)
    assert any("share of an epoch" in line and "ratio 0.3" in line for line in lines)
    sweep = gpu_check.sweep_lines(tmp_path / "no-sweep", ["+sweep=depth"], 90.0, "passed", "cifar_shaped")
    assert "1.5 min" in sweep[0] and "CIFAR-10 is not under the data folder" in sweep[1]
    (tmp_path / "pytest.log").write_text("collected\nE   AssertionError: the last line\n")
    stages = gpu_check.stages()
    stages[1].status, stages[1].seconds = "failed (exit code 1)", 12.0
    stages[1].lines = gpu_check.summarise(stages[1], tmp_path, tmp_path / "pytest.log", "cuda", [], "")
    stages[2].status, stages[2].lines = "passed", lines
    path = gpu_check.write_report(tmp_path, "gpu-check on Fake GPU", 480, stages)
    text = path.read_text()
    assert text.startswith("# gpu-check on Fake GPU") and "| pytest | failed (exit code 1) | 12 |" in text
    assert "1 passed, 1 failed, 1 skipped" in text and "FAILED tests.test_cuda::b" in text
    assert "E   AssertionError: the last line" in text  # a failed stage's log tail
    assert "| sweep | not run |" in text and [s.failed for s in stages] == [True, True, False, True]


def test_the_folder_keeps_at_most_8_files_the_rest_in_one_archive(tmp_path):
    for name in gpu_check.KEEP[:-2]:
        (tmp_path / name).write_text(name)
    (tmp_path / "sweep" / "runs").mkdir(parents=True)
    (tmp_path / "sweep" / "runs" / "run.json").write_text("{}")
    gpu_check.bundle(tmp_path)
    (tmp_path / "late.txt").write_text("after the first bundle")
    gpu_check.bundle(tmp_path)
    assert len(list(tmp_path.iterdir())) == 8 and all(p.is_file() for p in tmp_path.iterdir())
    with tarfile.open(tmp_path / gpu_check.ARCHIVE) as tar:
        assert {"sweep/runs/run.json", "late.txt"} <= set(tar.getnames())


def node_distributions() -> dict[str, metadata.Distribution]:
    """NODE_PACKAGES and everything they require (extras followed), as installed here: what a
    torch-equipped node's system Python holds."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(name, frozenset()) for name in wheelhouse.NODE_PACKAGES]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a platform's optional requirement
        if key in found and not extras:
            continue
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((req.name, frozenset(req.extras)))
    return found


def stand_in_site(folder: Path) -> Path:
    """A folder of links to the top-level files of node_distributions() in this venv: a system
    site-packages with torch and friends and without Hydra, OmegaConf, PyYAML or this project."""
    folder.mkdir()
    for dist in node_distributions().values():
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if (site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


@pytest.mark.slow
def test_offline_install_from_the_wheelhouse_then_the_dry_run(tmp_path):
    """make install builds wheelhouse/ (make wheelhouse); here nothing is downloaded. The budget
    is generous (each stage imports torch: minutes on a loaded 2-core machine, seconds on a quiet
    one); the time limits themselves are tested above. The bench stage runs its cheapest section
    (tests/test_bench.py runs them all)."""
    house = ROOT / "wheelhouse"
    wheels = sorted(p.name for p in house.glob("*.whl"))
    assert wheels, f"no wheels in {house}: run `make wheelhouse` (make install does)"
    names = {re.sub(r"[-_.]+", "-", w.split("-")[0]).lower() for w in wheels}
    assert names == {"confusion"} | {re.sub(r"[-_.]+", "-", n).lower() for n in wheelhouse.OFFLINE_PACKAGES}
    assert all(w.endswith("-py3-none-any.whl") for w in wheels)

    target = tmp_path / "target"
    install = wheelhouse.install_command(house, target, sys.executable)
    assert "--no-index" in install and "--no-deps" in install
    done = subprocess.run([*install, "--disable-pip-version-check", "-q"], capture_output=True, text=True,
                          env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert done.returncode == 0, done.stderr
    assert not list(target.glob("torch*")) and not list(target.glob("numpy*"))  # touched neither

    system = stand_in_site(tmp_path / "system")
    for module in ("hydra", "omegaconf", "yaml", "antlr4", "submitit", "confusion_cli"):
        assert not (system / module).exists(), f"{module} would not come from the wheelhouse"
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{system}", "MPLBACKEND": "Agg"}
    site_free = [sys.executable, "-S"]  # no site-packages of this venv: only PYTHONPATH and the tree

    # the project's own wheel, away from the tree
    where = subprocess.run([*site_free, "-c", "import confusion_cli; print(confusion_cli.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.returncode == 0 and where.stdout.startswith(str(target)), where.stderr

    out = tmp_path / "out"
    check = subprocess.run([*site_free, "-m", "confusion_cli.gpu_check", "--dry-run", "--out", str(out),
                            "--budget-s", "3000", "--bench-sections", "gram_method_rows"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=3100)
    report = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    assert check.returncode == 0, check.stderr[-3000:] + report
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["report.md", "env.log", "pytest.log", "bench.log", "sweep.log", "cuda-tests.xml",
                            "bench_cpu.csv", "artifacts.tar.gz"])
    env_log = (out / "env.log").read_text()
    assert "site off (-S)" in env_log
    for module in ("hydra", "omegaconf", "yaml", "antlr4", "hydra_plugins.hydra_submitit_launcher"):
        assert re.search(rf"^- {re.escape(module)} \S*: {re.escape(str(target))}", env_log, re.M), module
    assert re.search(rf"^- torch \S+: {re.escape(str(system))}", env_log, re.M)
    assert "scipy: missing (optional)" in env_log  # the stand-in is a node's, not this venv
    assert "CUDA parts skipped" in env_log
    for stage in ("env", "pytest", "bench", "sweep"):
        assert re.search(rf"^\| {stage} \| passed \|", report, re.M), stage
    assert re.search(r"^1 passed, 0 failed, \d+ skipped", report, re.M)  # the TF32 readers; CUDA skipped
    assert "runs by status {'complete': 1}" in report
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        assert sum(name.endswith("run.json") for name in tar.getnames()) == 1

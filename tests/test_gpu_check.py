"""`make gpu-check` on a machine without a GPU: one line and exit 2; its report from the pieces."""

import pandas as pd
import torch

from confusion_cli import gpu_check


def test_gpu_check_without_a_gpu_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_report_quotes_tests_bench_and_sweep(tmp_path):
    junit = tmp_path / "t.xml"
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
    assert any("25,000 images/s" in line and "20,000" in line for line in lines)
    assert any("share of an epoch" in line and "ratio 0.3" in line for line in lines)
    sweep = gpu_check.sweep_lines(tmp_path / "no-sweep", 90.0, 0, "cifar_shaped")
    assert "1.5 min" in sweep[0] and "CIFAR-10 is not under data_dir" in sweep[1]
    path = gpu_check.report(tmp_path, "Fake GPU", (counts, failed), lines, sweep)
    text = path.read_text()
    assert "1 passed, 1 failed, 1 skipped" in text and "FAILED tests.test_cuda::b" in text
    assert "# gpu-check on Fake GPU" in text

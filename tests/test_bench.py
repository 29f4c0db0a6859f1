"""`make bench` in miniature: every row is produced, ratios are finite, the CSV is written."""

import math

import pandas as pd

from confusion_cli import bench


def test_quick_bench_writes_its_table(tmp_path, capsys):
    assert bench.main(["--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "bench_cpu.csv")
    names = " ".join(table["name"])
    for part in ("train_throughput", "per-example gram", "probe(100 pairs) vs epoch"):
        assert part in names
    gram = table[table["name"].str.contains("per-example gram")]
    assert set(gram["baseline"]) == {"naive loop", "torch.func vmap (chunks of 32)", "one SGD step"}
    assert all(math.isfinite(r) and r > 0 for r in gram["ratio"])
    assert (table["device"] == "cpu").all()
    assert "bench_cpu.csv" in capsys.readouterr().out

"""`make bench` in miniature: every row is produced, ratios are finite, the CSV is written;
the sweep estimates come from the sweeps' own configs."""

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from confusion_cli.bench import BENCH_BACKEND, main
from confusion_cli.bench.memory import MEMORY_BUDGET_MIB
from confusion_cli.bench.probes import GRAM_STEPS_GOAL, gram_breakdown_rows, gram_rows, probe_group_row
from confusion_cli.bench.sweeps import probe_events, sweep_plan, sweep_seconds
from confusion_cli.bench.training import TRAIN_SPEEDUP_GOAL, cifar_like, trainer_for


@pytest.mark.slow
def test_quick_bench_writes_its_table(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "bench_cpu.csv")
    names = " ".join(table["name"])
    for part in ("train_throughput mnist", "train_throughput cifar10", "per-example gram",
                 "probe(100 pairs) vs epoch", "group 16 vs 1", "group 8 vs 1",
                 "smoke sweep depth: 2 runs", "peak memory", "mlp4x256 epoch, SGD update fused vs",
                 "mlp4x256 epoch, SGD update step vs", "cnn100-2 bn+skip epoch, SGD update fused vs",
                 "cnn100-2 bn+skip epoch, SGD update step vs", "BENCHMARK MODE (cudnn.benchmark=true",
                 "per-layer method by count vs by timing", "Gram breakdown (B=8): whole per-example Gram",
                 "sweep check: every job of a 8-job sweep"):
        assert part in names
    gram = table[table["name"].str.contains("per-example gram")]
    assert set(gram["baseline"]) == {"naive loop", "torch.func vmap (chunks of 32)", "one SGD step"}
    assert all(math.isfinite(r) and r > 0 for r in gram["ratio"])
    assert (table["device"] == "cpu").all()
    cnn = table[table["name"].str.startswith("train_throughput cifar10")].iloc[0]
    assert cnn["value"] > 0 and cnn["baseline_value"] > 0 and pd.isna(cnn["goal"])  # no CPU goal
    train = table[table["name"].str.startswith("train_throughput mnist")].iloc[0]
    assert train["goal"] == TRAIN_SPEEDUP_GOAL and train["value"] > train["baseline_value"] > 0
    assert train["goal_met"] == (train["ratio"] >= TRAIN_SPEEDUP_GOAL)
    memory = table[table["name"].str.contains("peak memory")].iloc[0]
    assert 0 < memory["value"] < MEMORY_BUDGET_MIB and bool(memory["goal_met"])  # lower is better
    assert "bench_cpu.csv" in capsys.readouterr().out


def test_bench_sections_are_chosen_by_name_and_a_wrong_one_is_one_line(tmp_path, capsys):
    assert BENCH_BACKEND.deterministic is True and BENCH_BACKEND.tf32 is True  # a run's defaults
    assert main(["--sections", "gram_method_rows,nope", "--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "gram_method_rows" in err[0]
    assert main(["--quick", "--sections", "gram_method_rows", "--out", str(tmp_path), "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "bench_cpu.csv")
    assert list(table["name"]) == ["cnn16-2 Gram terms (B=8): per-layer method by count vs by timing"]


def test_a_sweep_of_arms_is_planned_arm_by_arm():
    _, archs = sweep_plan("bn_skip_fmnist_cnn", "smoke")  # sweep.arm picks variant, depth and LR
    assert archs == [(10, 1, False, False), (10, 1, False, True), (16, 1, True, False), (16, 1, True, True)]


def test_sweep_plans_follow_the_sweep_configs():
    cfg, archs = sweep_plan("bn_skip", "paper")
    assert len(archs) == 5 * 2 * 2 * 6 * 5  # seeds x BN x skip x depths x LRs
    assert (100, 2, True, True) in archs and (16, 2, False, False) in archs
    cfg_q, archs_q = sweep_plan("depth", "quick")
    assert sorted({a[0] for a in archs_q}) == [16, 22, 28, 34, 40] and len(archs_q) == 2 * 5 * 2
    assert cfg_q.optim.epochs < cfg.optim.epochs


def test_sweep_seconds_counts_steps_and_probe_events():
    cfg, archs = sweep_plan("width", "quick")
    steps = 50_000 // cfg.optim.batch_size
    timings = {a: (1.0, 0.0) for a in archs}
    assert sweep_seconds(cfg, archs, timings) == pytest.approx(len(archs) * cfg.optim.epochs * steps)
    timings = {a: (0.0, 1.0) for a in archs}  # probe at init and after every epoch
    assert sweep_seconds(cfg, archs, timings) == pytest.approx(
        len(archs) * (cfg.optim.epochs + 1) * cfg.probe.pairs)


def test_probe_events_follow_the_probe_schedule():
    cfg, _ = sweep_plan("width", "quick")
    epochs, steps = cfg.optim.epochs, 50_000 // cfg.optim.batch_size
    assert probe_events(cfg.probe, cfg.optim, steps) == epochs + 1  # schedule=epoch: init + every epoch
    every_100 = OmegaConf.merge(cfg.probe, {"schedule": "steps:100", "at_init": False})
    last_on_grid = (epochs * steps) % 100 == 0
    assert probe_events(every_100, cfg.optim, steps) == epochs * steps // 100 + (not last_on_grid)
    assert cfg.probe.schedule == "epoch"  # the sweep's own config is left as it was
    # max_steps ends the run mid-epoch: the probes of whole epochs, then the last row's
    stopped = OmegaConf.merge(cfg.optim, {"max_steps": 2 * steps + 5})
    assert probe_events(cfg.probe, stopped, steps) == 1 + 2 + 1


def test_probe_timings_leave_the_trainers_probe_as_it_was():
    data = cifar_like(torch.device("cpu"), 32, size=8)
    trainer = trainer_for({"name": "mlp", "depth": 2, "width": 8}, data, torch.device("cpu"),
                          probe={"batch_size": 8})
    probe = trainer.probes[0]
    before = OmegaConf.to_container(probe.settings)
    row, single = probe_group_row(trainer, torch.device("cpu"), "mlp2x8", 2, 2)
    assert trainer.probes == [probe] and OmegaConf.to_container(probe.settings) == before
    assert before["group"] == 1 and before["pairs"] == 100
    assert row.value > 0 and single == row.baseline_value > 0
    assert row.ratio == pytest.approx(single / row.value)


def test_gram_rows_give_the_gram_in_sgd_steps_and_the_breakdown_its_stages():
    step = [r for r in gram_rows("cpu", quick=True) if r.baseline == "one SGD step"]
    assert [r.goal for r in step] == [GRAM_STEPS_GOAL["mlp4x256"], GRAM_STEPS_GOAL["cnn16-2"]]
    assert all(r.lower_is_better and r.ratio == r.value / r.baseline_value for r in step)
    rows = gram_breakdown_rows("cpu", quick=True)
    names = [r.name for r in rows]
    for stage in ("cnn16-2 Gram breakdown (B=8): forward (no graph)",
                  "cnn16-2 Gram breakdown (B=8): hooked pass: forward + output-gradient backward",
                  "cnn16-2 Gram breakdown (B=8): Conv2d terms (13 layers): per-example grads + Gram",
                  "mlp4x256 Gram breakdown (B=8): Linear terms (5 layers): per-example grads + Gram",
                  "mlp4x256 Gram breakdown (B=8): whole per-example Gram"):
        assert stage in names
    assert all(r.value > 0 and r.baseline == "one SGD step" and "multiply-adds" in r.note for r in rows)

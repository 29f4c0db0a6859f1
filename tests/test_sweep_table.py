"""The README's table of every sweep x scale is made from the configs (issue 23, item 6), and
the README holds the table the configs make today."""

import math
from pathlib import Path

import pytest

from confusion_cli import sweep_table
from confusion_cli.errors import ConfusionError
from confusion_cli.sweep_table import Plan, cell, plan, replace_between_markers

README = Path(__file__).parents[1] / "README.md"


def counts(p: Plan) -> Plan:
    return Plan(p.runs, p.epochs, p.seeds, p.lrs)  # its CPU estimate left out


def test_a_plan_counts_the_jobs_hydra_would_launch():
    assert counts(plan("depth", "quick")) == Plan(runs=20, epochs=(15,), seeds=2, lrs=(0.01, 0.03))
    assert counts(plan("depth_fmnist", "confirm")) == Plan(75, (10,), 5, (0.01, 0.03, 0.1))  # its own seeds
    assert plan("depth", "confirm") is None  # no confirm grid: the run refuses it
    # each grid point its own LR and epoch count (sweep.point indexes the lists)
    assert counts(plan("convergence_linreg", "smoke")) == Plan(3, (3, 4), 1, (0.1, 0.5, 1.0))
    assert plan("init_depth", "smoke").epochs == (0,)
    assert plan("depth", "smoke").cpu_seconds > 0


def test_the_cpu_estimate_is_the_benchs_rate_applied_to_each_runs_work():
    from confusion_cli.config import run_config

    def seconds(*overrides):
        return sweep_table.run_cpu_seconds(run_config([*overrides, "launch_id=x"]))

    # the bench's own row: an MLP 4x256 trains 60,000 MNIST images at 68,600 images/s
    one_epoch = seconds("dataset=mnist", "model.depth=4", "model.width=256", "optim.epochs=1",
                        "probe=none", "dataset.test_size=0")
    steps = 60_000 // 128
    evaluation = 60_000 / (3 * 68_600)  # one forward pass over the training set at initialization
    assert one_epoch == pytest.approx(steps * 128 / 68_600 + evaluation + steps * sweep_table.CALL_SECONDS)
    two = seconds("dataset=mnist", "model.depth=4", "model.width=256", "optim.epochs=2",
                  "probe=none", "dataset.test_size=0")
    assert two - one_epoch == pytest.approx(steps * (128 / 68_600 + sweep_table.CALL_SECONDS))
    probed = seconds("dataset=mnist", "model.depth=4", "model.width=256", "optim.epochs=1",
                     "probe.pairs=10", "dataset.test_size=0")
    events = 2  # at initialization and after the epoch
    assert probed - one_epoch == pytest.approx(
        events * 20 * (128 / 68_600 + sweep_table.CALL_SECONDS))  # 2 x 10 gradients of 128 each
    assert seconds("model=cnn", "dataset=cifar_shaped", "optim.epochs=1") > 100 * one_epoch
    assert [sweep_table.hours(s) for s in (20, 600, 7200, 4.5e6)] == ["~1 min", "~10 min", "~2 CPU-h",
                                                                     "~1,200 CPU-h"]
    assert sweep_table.hours(math.nan) == ""


def test_a_cell_says_runs_epochs_seeds_and_lrs():
    assert cell(Plan(20, (15,), 2, (0.01, 0.03))) == "20 runs: 15 ep, 2 seeds, LR 0.01, 0.03"
    assert cell(Plan(20, (15,), 2, (0.01,), 9000.0)) == "20 runs: 15 ep, 2 seeds, LR 0.01, ~2.5 CPU-h"
    assert cell(Plan(105, (10,), 3, (0.001, 0.01, 1.0))) == "105 runs: 10 ep, 3 seeds, 3 LRs 0.001-1"
    assert cell(Plan(15, (200, 500, 1000, 2000), 1, (0.5,))) == "15 runs: 200-2000 ep, 1 seed, LR 0.5"
    assert cell(Plan(4, (0,), 2, (0.05,))) == "4 runs: at initialization, 2 seeds"
    assert cell(None) == "-"


def test_the_table_goes_between_the_markers_only():
    text = f"intro\n{sweep_table.BEGIN}\nold table\n{sweep_table.END}\noutro\n"
    expected = f"intro\n{sweep_table.BEGIN}\nnew\n{sweep_table.END}\noutro\n"
    assert replace_between_markers(text, "new") == expected
    with pytest.raises(ConfusionError, match="no sweep table markers"):
        replace_between_markers("no markers", "new")
    readme = README.read_text()
    assert readme.count(sweep_table.BEGIN) == 1 and readme.count(sweep_table.END) == 1


@pytest.mark.slow
def test_the_readme_holds_the_table_the_configs_make():
    """Fails when a sweep or scale changes and README.md was not remade with
    `python -m confusion_cli.sweep_table --write README.md`."""
    readme = README.read_text()
    assert replace_between_markers(readme, sweep_table.table()) == readme, (
        "README.md's sweep table is out of date: python -m confusion_cli.sweep_table --write README.md")

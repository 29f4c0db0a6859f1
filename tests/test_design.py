"""The shape of the package: no import circles, stable config hashes, probe schedules, and a
statistic added as one probe file (the gradient norm) running end to end."""

import ast
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from confusion_cli import config, data, probes, records
from confusion_cli.errors import ConfusionError
from confusion_cli.probes.naive import flat_gradient
from confusion_cli.train import Trainer

PACKAGE = Path(__file__).parent.parent / "confusion_cli"
FIXTURES = Path(__file__).parent / "fixtures"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (relative or absolute, at any depth of the file)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:  # `from . import records` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in modules and m != name}


def test_the_package_import_graph_has_no_circles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(files)) for name, path in files.items()}
    assert graph["confusion_cli.run"] >= {"confusion_cli.train", "confusion_cli.records"}
    # a package's __init__ re-exports its modules; an edge into a package means its __init__
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_module_cites_files_that_are_not_in_the_repository():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "PAPER.md" not in text and "DESIGN.md" not in text, path


def composed(overrides: list[str]):
    return config.run_config([*overrides, "launch_id=x"])


# the keys that moved in the redesign, for the overrides the fixture was written with
MOVED = {"hessian.": "extra_probes.hessian.", "rank.rtol": "extra_probes.rank.rtol"}


@pytest.mark.slow
def test_config_hashes_are_those_of_the_code_before_the_redesign():
    """tests/fixtures/config_hashes.json was written by the code before the probe redesign:
    every sweep at smoke and paper scale, extra probes and their settings, the probe modes."""
    cases = json.loads((FIXTURES / "config_hashes.json").read_text())
    assert len(cases) > 30
    for case in cases:
        overrides = list(case["overrides"])
        for old, new in MOVED.items():
            overrides = [o.replace(old, new) if o.startswith(old) else o for o in overrides]
        assert records.config_hash(composed(overrides)) == case["hash"], overrides
    base = records.config_hash(composed([]))
    assert records.config_hash(composed(["probe.schedule=log:10"])) != base
    assert records.config_hash(composed(["probe.schedule=epoch"])) == base


def test_schedules_say_when_probes_run():
    log = probes.Schedule.parse("log:10")
    assert [s for s in range(101) if log.at_step(s)] == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20,
                                                         25, 32, 40, 50, 63, 79, 100]
    assert [s for s in range(1, 1001) if probes.Schedule.parse("log:1").at_step(s)] == [1, 10, 100, 1000]
    steps = probes.Schedule.parse("steps:5", at_init=False)
    assert [s for s in range(16) if steps.at_step(s)] == [5, 10, 15]
    epoch = probes.Schedule.parse("epoch", every=3)
    assert not any(epoch.at_step(s) for s in range(50))
    assert [e for e in range(11) if epoch.at_epoch_end(e, 10 * e, last=e == 10)] == [0, 3, 6, 9, 10]
    for bad in ("sometimes", "log", "log:0", "steps:-1", "epoch:2"):
        with pytest.raises(ConfusionError, match="unknown probe.schedule"):
            probes.Schedule.parse(bad)


def train(overrides: list[str]):
    cfg = composed(["dataset.train_size=320", "dataset.test_size=50", "optim.batch_size=32",
                    "optim.epochs=3", "probe.pairs=2", "probe.batch_size=16", "model.width=16",
                    *overrides])
    trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    return trainer, [event.row for event in trainer.run()]


def test_a_step_schedule_adds_rows_between_steps_and_changes_no_training_number():
    _, by_epoch = train([])
    trainer, by_log = train(["probe.schedule=log:4"])
    assert trainer.steps_per_epoch == 10
    steps = [row["step"] for row in by_log]
    # log:4 probes after steps 1, 2, 3, 6, 10, 18 and 30 (and at init); 10 and 30 end epochs
    assert steps == [0, 1, 2, 3, 6, 10, 18, 20, 30]
    assert [row["epoch"] for row in by_log if row["step"] in (1, 18)] == [0.1, 1.8]
    assert "min_cos" not in by_log[7]  # epoch 2 ends at step 20: no probe due
    assert all("min_cos" in row and "batch_loss" in row for row in by_log if row["epoch"] % 1)
    epoch_rows = [row for row in by_log if row["epoch"] % 1 == 0]
    keys = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
    assert [[row[k] for k in keys] for row in epoch_rows] == [[row[k] for k in keys] for row in by_epoch]


def test_the_gradient_norm_probe_is_the_norm_of_each_mini_batch_gradient():
    trainer, rows = train(["extra_probes=[grad_norm]", "extra_probes.grad_norm.batches=3",
                           "extra_probes.grad_norm.batch_size=8", "probe=none"])
    assert all(row["grad_norm_min"] <= row["grad_norm"] <= row["grad_norm_max"] for row in rows)
    (probe,) = trainer.probes
    ctx = trainer.probe_context
    state = ctx.generator.get_state()
    scalars, _ = probe.measure(ctx)
    ctx.generator.set_state(state)
    norms = [flat_gradient(trainer.model, trainer.loss_fn, *ctx.batch(8)).norm().item() for _ in range(3)]
    assert scalars["grad_norm"] == pytest.approx(sum(norms) / 3, rel=1e-6)
    assert scalars["grad_norm_max"] == pytest.approx(max(norms), rel=1e-6)


def test_a_probe_is_found_by_name_from_its_own_file_and_config():
    assert "grad_norm" in probes.extra_names() and "grad_norm" in config.options("extra_probes")
    cfg = composed(["extra_probes=[grad_norm,rank]"])
    assert list(cfg.extra_probes) == ["grad_norm", "rank"]
    built = probes.build(cfg.probe, cfg.extra_probes)
    assert [p.name for p in built] == ["minibatch_pairs", "grad_norm", "rank"]
    with pytest.raises(ConfusionError, match="larger than the training set"):
        probes.check(cfg.probe, OmegaConf.create({"grad_norm": {"batches": 1, "batch_size": 99}}), 50)


@pytest.mark.slow
def test_a_record_written_before_the_redesign_is_found_skipped_and_plotted(tmp_path, monkeypatch, capsys):
    """tests/fixtures/old_record: a run made by the code before the redesign (extra_probes as a
    list, rank and hessian settings at the root). Its config still hashes to the hash it claims,
    the same config in today's syntax is recognised as done, and it plots."""
    import shutil

    from confusion_cli import cli

    root = tmp_path / "outputs"
    shutil.copytree(FIXTURES / "old_record", root / "runs" / "old")
    old = root / "runs" / "old"
    claimed = json.loads((old / records.RUN_JSON).read_text())["config_hash"]
    assert records.config_hash(OmegaConf.load(old / records.CONFIG)) == claimed
    monkeypatch.chdir(tmp_path)
    args = ["run", "optim.epochs=2", "probe.pairs=20", "model.depth=4", "model.width=256",
            "extra_probes=[rank,hessian]", "extra_probes.hessian.examples=64",
            "extra_probes.hessian.iters=5", f"records_root={root}"]
    assert cli.main(args) == 0
    assert f"skip: already complete in {old}" in capsys.readouterr().out
    assert cli.main(["plot", str(root), "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "curves.png").is_file()

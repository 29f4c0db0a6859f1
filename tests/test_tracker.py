"""logger=tensorboard: the event files hold every metrics row's numbers under grouped tags
(train/, probe/, time/), the cosine histograms, the hyperparameters with the final metrics, and
a sweep's runs are named by their swept values (issue 23, item 11)."""

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG

from confusion_cli import cli, records, tracker


def events(folder):
    found = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    found.Reload()
    return found


def session_start(found) -> dict:
    """The hyperparameters of the HParams plugin's session start info in ``found``."""
    content = found.PluginTagToContent("hparams")[SESSION_START_INFO_TAG]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    hparams = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[key] = getattr(value, kind)
    return hparams


def test_tags_are_grouped_and_hparams_come_with_the_final_metrics(tmp_path):
    view = tracker.tracker("tensorboard", tmp_path, tmp_path / "tb" / "depth=8_lr=0.03_seed=1",
                           {"model.depth": 8, "optim.lr": 0.03, "seed": 1, "model.name": "mlp"})
    rows = [{"epoch": 0, "step": 0, "lr": 0.03, "train_loss": 2.3, "test_acc": 0.1, "min_cos": 0.5,
             "n_pairs": 3.0, "probe_seconds": 0.2, "epoch_seconds": 0.3},
            {"epoch": 0.5, "step": 4, "lr": 0.03, "batch_loss": 1.9, "min_cos": 0.25, "probe_seconds": 0.1},
            {"epoch": 1, "step": 8, "lr": 0.03, "train_loss": 1.5, "test_acc": 0.4, "min_cos": -0.125,
             "n_pairs": 3.0, "epoch_seconds": 0.3, "test_loss": math.nan}]
    for row in rows:
        view.log(row, {"cos": torch.tensor([0.1, 0.2, -0.125])} if "n_pairs" in row else {})
    view.finish("complete")
    view.close()
    found = events(tmp_path / "tb" / "depth=8_lr=0.03_seed=1")
    assert set(found.Tags()["scalars"]) == {
        "train/epoch", "train/lr", "train/train_loss", "train/test_acc", "train/batch_loss",
        "probe/min_cos", "probe/n_pairs", "time/probe_seconds", "time/epoch_seconds"}
    assert [(e.step, e.value) for e in found.Scalars("probe/min_cos")] == [(0, 0.5), (4, 0.25), (8, -0.125)]
    assert [h.histogram_value.num for h in found.Histograms("probe/pair_cos")] == [3, 3]
    assert session_start(found) == {"model.depth": 8.0, "optim.lr": pytest.approx(0.03), "seed": 1.0,
                                    "model.name": "mlp", "status": "complete"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        found.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    # the final metrics: the last value of each of these tags
    assert {m.name.tag for m in experiment.metric_infos} == {"train/train_loss", "train/test_acc",
                                                             "probe/min_cos"}


def test_a_run_is_named_by_its_swept_values():
    assert tracker.run_name("depth=8 lr=0.03 seed=1", 3) == "depth=8_lr=0.03_seed=1"
    assert tracker.run_name("", 3) == "job3"
    assert tracker.run_name("dataset.name=a/b", 0) == "dataset.name=a-b"
    assert tracker.tag("train_loss") == "train/train_loss" and tracker.tag("q05_cos") == "probe/q05_cos"
    assert tracker.tag("epoch_seconds") == "time/epoch_seconds" and tracker.tag("rank") == "probe/rank"


def test_hparams_are_the_fixed_keys_and_the_swept_ones():
    from confusion_cli.config import run_config

    cfg = run_config(["model.depth=3", "optim.lr=0.1", "launch_id=x"])
    found = tracker.hparams_of(cfg, ["probe.pairs", "model.depth"])
    assert found["model.depth"] == 3 and found["optim.lr"] == 0.1 and found["probe.pairs"] == 20
    assert found["dataset.name"] == "digits" and found["sweep.name"] == "single"
    assert all(isinstance(v, (bool, int, float, str)) for v in found.values())


@pytest.mark.slow
def test_a_sweeps_tensorboard_runs_hold_what_the_records_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    assert cli.main(["run", "model.depth=1,2", "optim.epochs=2", "probe.pairs=3", "dataset.train_size=256",
                     "model.width=16", "logger=tensorboard", "probe.schedule=steps:3"]) == 0
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps" / "single").iterdir()
    assert sorted(p.name for p in (sweep_dir / "tensorboard").iterdir()) == ["depth=1", "depth=2"]
    frame = records.load(tmp_path / "outputs")
    for depth in (1, 2):
        found = events(sweep_dir / "tensorboard" / f"depth={depth}")
        metrics = frame[frame["model.depth"] == depth]
        for column, name in (("train_loss", "train/train_loss"), ("min_cos", "probe/min_cos"),
                             ("test_acc", "train/test_acc")):
            logged = {e.step: e.value for e in found.Scalars(name)}
            expected = metrics.dropna(subset=[column]).set_index("step")[column]
            assert sorted(logged) == sorted(expected.index)
            assert all(logged[s] == pytest.approx(v, rel=1e-6) for s, v in expected.items())
        assert len(found.Histograms("probe/pair_cos")) == metrics["min_cos"].notna().sum()
        hparams = session_start(found)
        assert hparams["model.depth"] == depth and hparams["status"] == "complete"


def test_an_unknown_logger_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "logger=wandb"]) == 2
    assert "unknown logger 'wandb': choose none or tensorboard" in capsys.readouterr().err

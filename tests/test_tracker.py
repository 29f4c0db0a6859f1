"""logger=tensorboard: the event file holds every metrics row's numbers and the cosine histograms."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from confusion_cli import cli, records


@pytest.mark.slow
def test_tensorboard_logger_writes_what_the_records_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    assert cli.main(["run", "optim.epochs=2", "probe.pairs=3", "dataset.train_size=256",
                     "model.width=16", "logger=tensorboard", "probe.schedule=steps:3"]) == 0
    (run_dir,) = records.run_dirs(tmp_path / "outputs")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    metrics = records.load(run_dir)
    for column in ("train_loss", "min_cos", "test_acc"):
        logged = {e.step: e.value for e in events.Scalars(column)}
        expected = metrics.dropna(subset=[column]).set_index("step")[column]
        assert sorted(logged) == sorted(expected.index)
        assert all(logged[s] == pytest.approx(v, rel=1e-6) for s, v in expected.items())
    histograms = events.Histograms("pair_cos")
    assert len(histograms) == metrics["min_cos"].notna().sum()
    assert all(h.histogram_value.num == 3 for h in histograms)


def test_an_unknown_logger_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "logger=wandb"]) == 2
    assert "unknown logger 'wandb': choose none or tensorboard" in capsys.readouterr().err

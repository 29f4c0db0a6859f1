"""Records: atomic writes, config hashing, loading many runs into one DataFrame, corrupt runs."""

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from confusion_cli import records
from confusion_cli.errors import ConfusionError


def make_run(path, status="complete", depth=4, seed=0, losses=(2.0, 1.0)):
    path.mkdir(parents=True)
    cfg = OmegaConf.create({"seed": seed, "model": {"name": "mlp", "depth": depth},
                            "optim": {"lr": 0.1, "milestones": [1, 2]}, "records_root": "x"})
    (path / records.CONFIG).write_text(OmegaConf.to_yaml(cfg))
    records.write_json(path / records.RUN_JSON, {"status": status,
                                                 "config_hash": records.config_hash(cfg)})
    records.write_csv(path / records.METRICS, pd.DataFrame(
        {"epoch": range(len(losses)), "train_loss": losses, "min_cos": [-0.1] * len(losses)}))
    (path / records.SAMPLES).mkdir()
    records.write_csv(path / records.SAMPLES / "epoch_0001.csv",
                      pd.DataFrame({"pair": [0, 1], "cos": [0.5, -0.2], "inner": [1.0, -0.3]}))
    return cfg


def test_load_round_trips_metrics_and_flattens_config(tmp_path):
    make_run(tmp_path / "a", depth=4, seed=0)
    make_run(tmp_path / "sweep" / "0", depth=8, seed=1, losses=(3.0, 2.0, 1.5))
    frame = records.load(tmp_path)
    assert len(frame) == 5
    assert set(frame["model.depth"]) == {4, 8}
    assert frame.loc[frame["model.depth"] == 8, "train_loss"].tolist() == [3.0, 2.0, 1.5]
    assert frame["optim.milestones"].iloc[0] == "[1, 2]"
    assert set(frame["status"]) == {"complete"}
    samples = records.load_samples(tmp_path / "a")
    assert samples["cos"].tolist() == [0.5, -0.2] and set(samples["epoch"]) == {1}


def test_corrupt_records_are_skipped_with_their_path(tmp_path):
    make_run(tmp_path / "good")
    make_run(tmp_path / "bad")
    (tmp_path / "bad" / records.RUN_JSON).write_text('{"status": "comp')  # half written
    make_run(tmp_path / "bad_metrics")
    (tmp_path / "bad_metrics" / records.CONFIG).write_text("model: [unclosed")
    with pytest.warns(records.RecordWarning) as caught:
        frame = records.load(tmp_path)
    assert frame["run_dir"].unique().tolist() == [str(tmp_path / "good")]
    messages = " ".join(str(w.message) for w in caught)
    assert str(tmp_path / "bad") in messages and str(tmp_path / "bad_metrics") in messages


def test_config_hash_ignores_where_but_not_what():
    base = {"seed": 0, "optim": {"lr": 0.1}, "records_root": "a", "data_dir": "d",
            "launch_id": "x", "sweep": {"name": "depth"}}
    h = records.config_hash(OmegaConf.create(base))
    moved = {**base, "records_root": "b", "data_dir": "e", "launch_id": "y",
             "sweep": {"name": "depth", "depths": {"quick": "2,4,8"}}, "scale": {"seeds": "0,1"}}
    assert records.config_hash(OmegaConf.create(moved)) == h
    assert records.config_hash(OmegaConf.create({**base, "sweep": {"name": "width"}})) != h
    assert records.config_hash(OmegaConf.create({**base, "seed": 1})) != h
    assert records.config_hash(OmegaConf.create({**base, "optim": {"lr": 0.2}})) != h


def test_find_runs_matches_by_hash_finished_first(tmp_path):
    cfg = make_run(tmp_path / "old", status="running")
    make_run(tmp_path / "new", status="complete")
    make_run(tmp_path / "other", depth=16)
    found = records.find_runs(tmp_path, records.config_hash(cfg))
    assert [d.name for d, _ in found] == ["new", "old"]


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "run.json"
    records.write_json(target, {"status": "running"})

    def broken(f):
        f.write('{"status": "compl')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        records.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind


def test_require_records_explains_an_empty_directory(tmp_path):
    with pytest.raises(ConfusionError, match="no run records"):
        records.require_records(tmp_path)
    with pytest.raises(ConfusionError, match="no such directory"):
        records.require_records(tmp_path / "missing")


def test_records_are_readable_by_the_group(tmp_path):
    records.write_json(tmp_path / "run.json", {"status": "complete"})
    assert (tmp_path / "run.json").stat().st_mode & 0o044 == 0o044


def test_writes_never_follow_a_planted_link(tmp_path):
    """Records, checkpoints and figures replace a symlink planted at their path (or at the old
    fixed temporary name) instead of writing through it to a file outside the run directory."""
    import torch
    from omegaconf import OmegaConf

    from confusion_cli.records import RunRecorder

    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = [records.CHECKPOINT, records.CHECKPOINT + ".tmp", records.METRICS, records.RUN_JSON,
             records.CONFIG]
    for name in names:
        (run_dir / name).symlink_to(outside)
    recorder = RunRecorder(run_dir, OmegaConf.create({"seed": 0}), {"_t0": 0.0})
    recorder.add_row({"epoch": 0, "step": 0, "train_loss": 1.0},
                     {"cos": torch.ones(2), "inner": torch.ones(2)}, {"w": torch.zeros(3)})
    recorder.set_status("running")
    assert outside.read_text() == "precious"
    for name in (records.CHECKPOINT, records.METRICS, records.RUN_JSON, records.CONFIG):
        assert not (run_dir / name).is_symlink(), name
    assert torch.load(run_dir / records.CHECKPOINT, weights_only=True)["w"].shape == (3,)
    figure = tmp_path / "fig.png"
    figure.symlink_to(outside)
    records.atomic_write(figure, lambda f: f.write(b"\x89PNG"), binary=True)
    assert outside.read_text() == "precious" and figure.read_bytes() == b"\x89PNG"


def test_run_json_keeps_the_first_start_every_segment_and_the_total_wall_time_across_resumes(tmp_path):
    import time

    cfg = OmegaConf.create({"seed": 0})
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def segment(start, host, old):  # a segment that has run for 10 s
        meta = {"status": "running", "start_time": start, "host": host, "device": "cpu",
                "_t0": time.perf_counter() - 10}
        return records.segment_meta(meta, old)

    first = records.RunRecorder(run_dir, cfg, segment("2026-01-01T00:00:00+00:00", "a", None))
    first.set_status("running")
    first.add_row({"epoch": 1, "step": 4, "train_loss": 1.0}, {}, state={"x": 1})  # a checkpoint, then a kill
    killed = json.loads((run_dir / records.RUN_JSON).read_text())
    assert killed["status"] == "running" and killed["wall_seconds"] == pytest.approx(10, abs=5)
    assert killed["segments"][0]["end"] is not None
    second = records.RunRecorder(run_dir, cfg, segment("2026-01-02T00:00:00+00:00", "b", killed),
                                 resume_rows=first.rows)
    second.set_status("complete")
    meta = json.loads((run_dir / records.RUN_JSON).read_text())
    assert meta["start_time"] == "2026-01-01T00:00:00+00:00"
    assert [(s["start"][:10], s["host"], s["device"]) for s in meta["segments"]] == [
        ("2026-01-01", "a", "cpu"), ("2026-01-02", "b", "cpu")]
    assert meta["wall_seconds_before"] == pytest.approx(killed["wall_seconds"])
    assert meta["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in meta["segments"]))
    assert meta["wall_seconds"] == pytest.approx(20, abs=10)
    # a run.json written before segments were kept: its one segment is read from start and end
    legacy = {"status": "running", "start_time": "2025-01-01T00:00:00+00:00", "host": "old", "device": "cuda"}
    resumed = records.segment_meta({"start_time": "2025-01-02T00:00:00+00:00", "host": "new"}, legacy)
    assert resumed["start_time"] == "2025-01-01T00:00:00+00:00" and resumed["wall_seconds_before"] == 0.0
    assert [s["host"] for s in resumed["segments"]] == ["old", "new"]

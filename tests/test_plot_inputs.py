"""Records that would break or fool a plot (issue 22, item 10): each is left out or drawn with
one line naming the run or file, never a traceback, an empty figure set or a 2-line warning."""

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from confusion_cli import cli, records


def honest_run(path, lr=0.03, seed=0, status="complete"):
    """A run directory as the runner writes it: config.yaml, run.json (its config's hash),
    metrics.csv (epochs 0-2), samples of every epoch."""
    cfg = {"seed": seed, "model": {"name": "mlp", "depth": 2}, "optim": {"lr": lr, "epochs": 2},
           "dataset": {"name": "digits"}, "sweep": {"name": "inputs"}}
    path.mkdir(parents=True)
    (path / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    records.write_json(path / records.RUN_JSON, {"status": status, "config_hash": records.config_hash(cfg)})
    records.write_csv(path / records.METRICS, pd.DataFrame(
        {"epoch": [0, 1, 2], "step": [0, 10, 20], "train_loss": [2.0, 1.0, 0.5],
         "test_acc": [0.1, 0.5, 0.7], "min_cos": [0.1, -0.1, -0.2]}))
    (path / records.SAMPLES).mkdir()
    for epoch in range(3):
        records.write_csv(records.samples_path(path, epoch), pd.DataFrame(
            {"pair": [0, 1, 2], "cos": [0.5, -0.25, 0.1], "inner": [1.0, -2.0, 0.3]}))
    return path


def warned(recwarn):
    return [str(w.message) for w in recwarn if issubclass(w.category, records.RecordWarning)]


def edit_metrics(run_dir, column, row, value):
    text = (run_dir / records.METRICS).read_text().splitlines()
    header = text[0].split(",")
    cells = text[row + 1].split(",")
    cells[header.index(column)] = value
    text[row + 1] = ",".join(cells)
    (run_dir / records.METRICS).write_text("\n".join(text) + "\n")


@pytest.mark.parametrize("column,value,says", [
    ("epoch", "inf", "1 rows at a non-finite epoch left out"),
    ("epoch", "nan", "1 rows at a non-finite epoch left out"),
    ("step", "-inf", "1 rows at a non-finite step left out"),
    ("train_loss", "inf", "infinite train_loss read as missing"),
    ("min_cos", "-inf", "infinite min_cos read as missing"),
    ("test_acc", "abc", "text in test_acc read as missing"),
])
def test_bad_metrics_values_are_left_out_with_one_line(tmp_path, recwarn, column, value, says):
    run_dir = honest_run(tmp_path / "runs" / "a")
    edit_metrics(run_dir, column, 1, value)
    frame = records.load(tmp_path)
    (message,) = warned(recwarn)
    assert message == f"{run_dir / records.METRICS}: {says}"
    assert frame["epoch"].map(math.isfinite).all() and len(frame) >= 2
    assert not frame.select_dtypes("number").isin([math.inf, -math.inf]).any().any()
    assert frame["epoch"].astype(int).tolist() == frame["epoch"].tolist()  # an int cast works


def test_a_diverged_runs_infinite_loss_is_kept_without_a_warning(tmp_path, recwarn):
    run_dir = honest_run(tmp_path / "runs" / "a", status="diverged")
    edit_metrics(run_dir, "train_loss", 2, "inf")
    frame = records.load(tmp_path)
    assert warned(recwarn) == [] and frame["train_loss"].iloc[-1] == math.inf


@pytest.mark.parametrize("cut", [5, 1])
def test_truncated_rows_are_left_out_with_one_line(tmp_path, recwarn, cut):
    run_dir = honest_run(tmp_path / "runs" / "a")
    text = (run_dir / records.METRICS).read_text()
    (run_dir / records.METRICS).write_text(text[:-cut])  # the last row cut short
    frame = records.load(tmp_path)
    (message,) = warned(recwarn)
    assert message == f"{run_dir / records.METRICS}: 1 truncated or malformed row left out"
    assert frame["epoch"].tolist() == [0, 1]
    samples = records.samples_path(run_dir, 2)
    samples.write_text("pair,cos,inner\n0,0.5,1.0\n1,-0.25\n2,0.1,0.3\n")  # a row short of a field
    frame = records.load_samples(run_dir)
    assert warned(recwarn)[-1] == f"{samples}: 1 truncated or malformed row left out"
    assert frame[frame["epoch"] == 2]["pair"].tolist() == [0, 2]


def test_a_config_that_is_a_list_is_skipped_with_one_line(tmp_path, recwarn):
    run_dir = honest_run(tmp_path / "runs" / "a")
    honest_run(tmp_path / "runs" / "b", seed=1)
    (run_dir / records.CONFIG).write_text("- 1\n- 2\n")
    frame = records.load(tmp_path)
    (message,) = warned(recwarn)
    assert "runs/a" in message and "not a mapping but list" in message
    assert set(frame["seed"]) == {1}


@pytest.mark.parametrize("body,says", [
    ("pair,cos,inner\n0,abc,1.0\n1,0.5,2.0\n",
     "skipping corrupt samples file {path}: its cos column holds text"),
    ("pair,cos,inner\n0,nan,1.0\n1,0.5,inf\n2,0.1,0.3\n",
     "{path}: 2 of 3 pairs with a NaN, infinite or out-of-range value left out"),
    ("pair,cos,inner\n0,7.5,1.0\n1,0.5,2.0\n",
     "{path}: 1 of 2 pairs with a NaN, infinite or out-of-range value left out"),
    ("pair,cos,inner\n0,nan,1.0\n",
     "skipping corrupt samples file {path}: no pair has a finite cosine within [-1, 1]"),
])
def test_bad_samples_are_left_out_with_one_line_naming_the_file(tmp_path, recwarn, body, says):
    run_dir = honest_run(tmp_path / "runs" / "a")
    path = records.samples_path(run_dir, 1)
    path.write_text(body)
    frame = records.load_samples(run_dir)
    (message,) = warned(recwarn)
    assert message == says.format(path=path)
    assert pd.api.types.is_float_dtype(frame["cos"]) and frame["cos"].between(-1, 1).all()


def test_plot_draws_past_bad_samples_and_metrics_with_one_line_each(tmp_path, capsys):
    """Text in the cosines of every samples file of a run, and inf in its metrics: the figures
    are drawn, each problem is one 'warning:' line, no Python warning of two lines."""
    root = tmp_path / "outputs"
    run_dir = honest_run(root / "runs" / "a")
    honest_run(root / "runs" / "b", lr=0.1)
    for epoch in range(3):
        records.samples_path(run_dir, epoch).write_text("pair,cos,inner\n0,abc,1.0\n")
    edit_metrics(run_dir, "epoch", 1, "inf")
    assert cli.main(["plot", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), lines
    assert any("samples file" in line and "cos column holds text" in line for line in lines), lines
    assert sum(line.endswith("non-finite epoch left out") for line in lines) == 1
    assert "figures written:" in out

"""Live progress (issue 23, item 3): on a terminal one live line per run (epoch, loss, min cos,
ETA) and a sweep line (runs done of the total, ETA), with tqdm or a hand-written line; off a
terminal the plain lines, one per epoch, exactly as before."""

import io
import os
import re

import pytest

from confusion_cli import cli, progress


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def terminal_env(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv(progress.PLAIN_ENV, raising=False)
    yield
    progress.close()


def drive(view: progress.Live, clock: Clock) -> list[list[tuple[str, str, float]]]:
    """A sweep of 3 runs of 2 epochs x 10 steps (2 s a step): the live lines after each event."""
    seen = []
    view.start_sweep("depth", 0, 3)
    view.start_run("[run 1/3] depth=1 lr=0.1", 2, 20)
    seen.append(view.lines())
    for step in range(1, 6):
        clock.now += 2.0
        view.on_step(step)
    seen.append(view.lines())
    for step in range(6, 11):
        clock.now += 2.0
        view.on_step(step)
    view.on_row({"epoch": 1, "step": 10, "train_loss": 0.5, "min_cos": -0.125})
    seen.append(view.lines())
    clock.now += 20.0
    view.on_row({"epoch": 2, "step": 20, "train_loss": 0.25, "min_cos": -0.0625})
    view.end_run()
    view.finished_job(1, 3)
    seen.append(view.lines())
    view.start_run("[run 2/3] depth=2 lr=0.1", 2, 20)
    clock.now += 10.0
    view.on_step(5)
    seen.append(view.lines())
    return seen


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_the_live_lines_say_epoch_loss_min_cos_and_the_etas(use_tqdm, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: lines are cut to its width (under
    # pytest-xdist a worker has no terminal, and the fallback of 80 columns cut them)
    clock, stream, out = Clock(), Tty(), Tty()
    view = progress.Live(stream, out, use_tqdm=use_tqdm, clock=clock)
    start, steps, epoch, ended, second = drive(view, clock)
    assert start == [("sweep depth", "0/3 runs  ETA ?", 0.0),
                     ("[run 1/3] depth=1 lr=0.1", "epoch 0/2  ETA ?", 0.0)]
    assert steps[1] == ("[run 1/3] depth=1 lr=0.1", "epoch 0/2  ETA 30s", 0.25)  # 15 steps x 2 s
    # before a run ends: this run's projected length (40 s) for each of the 2 runs after it
    assert steps[0][1] == "0/3 runs  ETA 1m50s (from this run's speed)"
    assert epoch[1][1] == "epoch 1/2  loss 0.5  min_cos -0.1250  ETA 20s"
    # once one has ended: its wall time (40 s) is the median, 2 runs left
    assert ended == [("sweep depth", "1/3 runs  ETA 1m20s (median run 40s)", pytest.approx(1 / 3))]
    assert second[1][1] == "epoch 0/2  ETA 30s"  # 10 s for 5 steps, 15 left
    assert second[0][1] == "1/3 runs  ETA 1m10s (median run 40s)"  # 30 s + 40 s
    view.write("[run 2/3] a plain line")
    view.close()
    drawn = stream.getvalue()
    for text in ("sweep depth", "epoch 1/2  loss 0.5  min_cos -0.1250  ETA 20s",
                 "1/3 runs  ETA 1m20s (median run 40s)", "[run 2/3] depth=2 lr=0.1"):
        assert text in drawn
    assert "\r" in drawn
    if use_tqdm:
        assert "|" in drawn and re.search(r"\d+%\|", drawn)  # tqdm's bars
    else:
        assert "[run 1/3] depth=1 lr=0.1  epoch 1/2  loss 0.5  min_cos -0.1250  ETA 20s  |  sweep depth" \
            in drawn
    assert out.getvalue() == "[run 2/3] a plain line\n"


def test_before_its_first_steps_a_run_shows_its_estimate_from_the_config():
    clock = Clock()
    view = progress.Live(Tty(), Tty(), use_tqdm=False, clock=clock)
    view.start_sweep("depth", 0, 3)
    view.start_run("run", 2, 20, estimate=50.0)
    clock.now += 10.0
    sweep, run = view.lines()
    assert run[1] == "epoch 0/2  ETA 40s"
    assert sweep[1] == "0/3 runs  ETA 2m20s (estimated from the config)"  # 40 s + 2 x 50 s
    clock.now += 2.0
    view.on_step(1)  # timed from now on: 12 s a step, 19 left
    assert view.lines()[1][1] == "epoch 0/2  ETA 3m48s" and "this run's speed" in view.lines()[0][1]


def test_a_plain_line_goes_above_the_live_line_on_the_same_terminal():
    stream = Tty()
    view = progress.Live(stream, stream, use_tqdm=False, clock=Clock())
    view.start_run("run", 3, 30)
    view.write("header")
    text = stream.getvalue()
    assert text.index("\r\x1b[Kheader\n") < text.rindex("run  epoch 0/3  ETA ?")


def test_live_lines_only_on_a_terminal(monkeypatch):
    assert not progress.wanted(io.StringIO())
    assert progress.wanted(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.wanted(Tty())
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv(progress.PLAIN_ENV, "plain")
    assert not progress.wanted(Tty())


TINY = ["optim.epochs=2", "dataset.train_size=128", "dataset.test_size=64", "model.width=8",
        "model.depth=1", "probe.pairs=2", "probe.batch_size=16", "optim.batch_size=32"]


def run_tiny(tmp_path, monkeypatch, stdout, stderr) -> int:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("sys.stderr", stderr)
    return cli.main(["run", *TINY])


EPOCH_LINE = re.compile(r"^epoch (\d)/2  loss \S+  acc \S+  test_acc \S+  min_cos \S+  \S+s$")


@pytest.mark.slow
def test_off_a_terminal_a_run_prints_the_plain_lines(tmp_path, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    assert run_tiny(tmp_path, monkeypatch, out, err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("mlp on digits, 4 steps/epoch, device cpu -> ")
    assert [EPOCH_LINE.match(line).group(1) for line in lines[1:4]] == ["0", "1", "2"]
    assert lines[4:] == ["complete: 2 epochs, 8 steps"]
    assert "\r" not in out.getvalue() + err.getvalue() and "ETA" not in err.getvalue()


@pytest.mark.slow
def test_on_a_terminal_a_run_draws_its_live_line(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for the whole line
    tty = Tty()
    assert run_tiny(tmp_path, monkeypatch, tty, tty) == 0
    text = tty.getvalue()
    assert re.search(r"run\s+\d+%\|.*\| epoch 1/2  loss \S+  min_cos \S+  ETA \S+", text)
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    printed = [line for line in lines if line.startswith(("mlp on", "epoch", "complete"))]
    assert printed[0].startswith("mlp on digits") and printed[-1] == "complete: 2 epochs, 8 steps"
    assert [EPOCH_LINE.match(line).group(1) for line in printed[1:-1]] == ["2"]  # the last epoch only
    assert progress.current() is None  # taken down at the end of the command


def test_without_tqdm_the_live_line_is_hand_written(monkeypatch):
    """tqdm is imported only when a live line is drawn, and may be missing (an offline GPU node
    installs the wheelhouse, which leaves it out: confusion_cli/wheelhouse.py): the default then
    draws the hand-written line; asking for tqdm by name says it is missing."""
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` raises ImportError
    assert progress._tqdm_class() is None
    with pytest.raises(ImportError):
        progress.Live(Tty(), Tty(), use_tqdm=True)
    monkeypatch.setenv("COLUMNS", "200")
    clock, stream = Clock(), Tty()
    view = progress.Live(stream, Tty(), clock=clock)
    assert view.tqdm is None
    drive(view, clock)
    view.close()
    assert "[run 1/3] depth=1 lr=0.1  epoch 1/2  loss 0.5  min_cos -0.1250  ETA 20s  |  sweep depth" \
        in stream.getvalue()


def test_the_plain_lines_never_import_tqdm():
    """Off a terminal (logs, Slurm, the GPU node's checks) nothing imports tqdm."""
    import subprocess
    import sys

    code = ("import sys; from confusion_cli import progress; "
            "assert progress.live() is None; progress.echo('epoch 1/2'); progress.close(); "
            "print('tqdm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TERM": "xterm"})  # stderr a pipe: no live view
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["epoch 1/2", "False"]

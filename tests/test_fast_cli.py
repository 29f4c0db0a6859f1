"""A fast command line (issue 23, item 4): composing, printing the config, --help and tab
completion never import torch (or torchvision, pandas, matplotlib); completion offers the
commands and their arguments and never prints an error. Checked by module, not by the clock."""

import json
import os
import re
import subprocess
import sys

import pytest

from confusion_cli import cli
from confusion_cli.config import options

HEAVY = ("torch", "torchvision", "pandas", "matplotlib")

_NO_HEAVY_IMPORTS = """
import contextlib, io, json, os, sys
from confusion_cli.cli import main
queries = [("--help",), ("run", "--help"), ("run", "model=cnn", "--help"), ("run", "--cfg", "job"),
           ("run", "+sweep=depth", "scale=smoke", "model=cnn", "--cfg", "job"),
           ("run", "-sc", "install=bash")]
for args in queries:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(list(args)) == 0, args
for line in ("confusion ", "confusion run optim.l", "confusion plot DIR ", "confusion noise model.",
             "confusion data f"):
    os.environ.update(COMP_LINE=line, COMP_POINT=str(len(line)))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["-sc", "query=bash"]) == 0, line
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def test_printing_composing_and_completing_never_import_torch(tmp_path):
    env = {**os.environ, "CONFUSION_OUTPUTS": str(tmp_path / "outputs")}
    done = subprocess.run([sys.executable, "-c", _NO_HEAVY_IMPORTS, *HEAVY], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert not (tmp_path / "outputs").exists()  # printing a config writes nothing


@pytest.mark.parametrize("line, offered", [
    ("confusion ", ["run", "status", "plot", "claims", "data", "noise"]),
    ("confusion p", ["plot"]),
    ("confusion st", ["status"]),
    ("confusion plot outputs ", []),  # a folder: the shell's file names
    ("confusion plot outputs --o", ["--out"]),
    ("confusion plot --out ", []),
    ("confusion status --", ["--help", "--table"]),
    ("confusion claims --c", ["--claims"]),
    ("confusion data f", ["fashion_mnist"]),
    ("confusion data --from ", []),
    ("confusion data cifar10 --", ["--help", "--from", "--data-dir"]),
    ("confusion data cifar10 ", []),
    ("confusion noise --rep", ["--repeats"]),
    ("confusion run --cfg ", ["job", "hydra", "all"]),
    ("confusion run --multi", ["--multirun"]),
    ("confusion frobnicate ", []),
])
def test_completion_offers_commands_and_their_arguments(line, offered):
    assert cli.completions(line) == offered


@pytest.mark.parametrize("line", ["confusion run optim.l", "confusion run model=cnn optim.l",
                                  "confusion noise optim.l", "confusion noise --repeats 3 optim.l"])
def test_overrides_are_left_to_hydras_completion(line):
    assert cli.completions(line) is None


@pytest.mark.parametrize("line, expected", [
    ("confusion p", {"plot"}),
    ("confusion run optim.l", {"optim.lr="}),
    ("confusion noise --repeats 3 optim.l", {"optim.lr="}),
    ("confusion plot DIR ", set()),
    ("confusion plot DIR plot", set()),
    ("confusion run 'unclosed", set()),  # Hydra cannot parse it: nothing offered, no error
    ("confusion run model=nosuch optim.l", None),  # whatever Hydra offers, without an error
    ("confusion run --config-dir ", set()),
])
def test_a_completion_query_prints_choices_and_never_an_error(tmp_path, line, expected):
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "CONFUSION_OUTPUTS": str(tmp_path / "outputs")}
    done = subprocess.run([sys.executable, "-m", "confusion_cli.cli", "-sc", "query=bash"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "rror" not in done.stdout
    if expected is not None:
        assert set(done.stdout.split()) == expected


@pytest.mark.parametrize("command", ["status", "plot", "claims", "data", "noise"])
def test_completed_options_are_those_of_each_commands_help(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    helped = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", capsys.readouterr().out))
    assert helped == set(cli.COMMAND_FLAGS[command])


def test_completed_datasets_are_those_confusion_data_takes():
    from confusion_cli import data

    assert cli.completions("confusion data ") == sorted(data.DATASETS) == options("dataset")


@pytest.mark.slow
def test_the_bench_times_each_start_up_against_its_goal():
    import math

    import torch

    from confusion_cli.bench.startup import CASES, STARTUP_GOAL_SECONDS, startup_rows

    rows = startup_rows(torch.device("cpu"), quick=True)
    assert [r.name for r in rows] == [f"start-up: {name}" for name in CASES]
    for row in rows:
        assert 0 < row.value < 300 and row.baseline_value == STARTUP_GOAL_SECONDS
        assert row.lower_is_better and row.goal == 1.0 and math.isclose(row.ratio, row.value / 1.5)
        assert row.goal_met == (row.value <= STARTUP_GOAL_SECONDS) and "import torch alone" in row.note


def test_run_help_shows_the_groups_and_the_config_as_hydras_help_does(capsys):
    assert cli.main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "== Configuration groups ==" in text and "== Config ==" in text
    assert "\nmodel: cnn, linear, linreg, mlp*  (model=NAME)\n" in text  # the chosen option marked
    assert "\nscale: confirm, default*, demo, paper, quick, smoke  (scale=NAME)\n" in text
    assert "\nsweep: bn_skip, " in text and "  (+sweep=NAME)\n" in text
    config = text.split("== Config ==", 1)[1]
    for line in ("optim:", "  lr: 0.05", "seed: 0", "records_root: ${oc.env:CONFUSION_OUTPUTS,outputs}"):
        assert f"\n{line}" in config, line
    assert re.search(r"\n  activation: relu +# relu \| tanh \| linear\n", config)  # the key's comment
    assert re.search(r"\ndevice: auto +# auto = cuda when present", config)
    assert "--config-dir DIR" in text and "--cfg job|hydra|all" in text


def test_run_help_composes_the_overrides_given(capsys):
    assert cli.main(["run", "model=cnn", "optim.lr=0.3", "-h"]) == 0
    text = capsys.readouterr().out
    assert "\nmodel: cnn*, linear, linreg, mlp  (model=NAME)\n" in text
    assert "\nmodel:\n  name: cnn\n" in text and "\n  lr: 0.3\n" in text
    assert cli.main(["run", "model=nosuch", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "nosuch" in err

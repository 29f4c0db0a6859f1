"""Your own sweep the Hydra way (issue 23, item 5): `--config-dir DIR` in both spellings puts the
folder on Hydra's search path for the checks before launch and for Hydra's launcher alike;
`experiment=NAME` chooses one file of choices and values, after the root config's own."""

from pathlib import Path

import pytest
from fakes import run_cli
from omegaconf import OmegaConf

from confusion_cli import cli, config, records

# the README's example, a sweep in one file
MY_SWEEP = """\
# @package _global_
defaults:
  - override /model: mlp
sweep:
  name: my_depth
hydra:
  mode: MULTIRUN
  sweeper:
    params:
      model.depth: 1,2
      optim.lr: 0.05,0.1
"""
MY_EXPERIMENT = """\
# @package _global_
defaults:
  - override /dataset: sphere
model:
  width: 32
seed: 3
"""


@pytest.fixture
def my_configs(tmp_path) -> Path:
    folder = tmp_path / "my configs"  # a space: the search path entry is quoted
    (folder / "sweep").mkdir(parents=True)
    (folder / "experiment").mkdir()
    (folder / "sweep" / "my_depth.yaml").write_text(MY_SWEEP)
    (folder / "experiment" / "sphere32.yaml").write_text(MY_EXPERIMENT)
    return folder


@pytest.mark.parametrize("spelling", ["--config-dir X", "--config-dir=X", "-cd X"])
def test_both_spellings_put_the_folder_on_the_search_path(my_configs, spelling):
    flag = [part.replace("X", str(my_configs)) for part in spelling.split(" ")]
    overrides, flags = cli.split_hydra_flags(["+sweep=my_depth", *flag, "--cfg", "job", "scale=smoke"])
    overrides, flags = cli.config_dirs_on_searchpath(overrides, flags)
    assert flags == ["--cfg", "job"]
    assert overrides == ["+sweep=my_depth", "scale=smoke", f"hydra.searchpath=['file://{my_configs}']"]
    cfg = config.compose(overrides)
    assert cfg.sweep.name == "my_depth" and dict(cfg.hydra.sweeper.params) == {
        "model.depth": "1,2", "optim.lr": "0.05,0.1"}
    assert config.plan_sweep(cfg.hydra, overrides) == {"model.depth": 2, "optim.lr": 2}


def test_a_given_searchpath_is_kept_and_the_folder_added_after_it(my_configs, tmp_path):
    given = "hydra.searchpath=[pkg://confusion_cli.configs]"
    assert config.with_config_dirs([given, "seed=1"], [str(my_configs)]) == [
        "seed=1", f"hydra.searchpath=['pkg://confusion_cli.configs','file://{my_configs}']"]


def test_an_experiment_sets_choices_and_values_over_the_root_configs(my_configs):
    overrides = config.with_config_dirs(["experiment=sphere32"], [str(my_configs)])
    cfg = config.run_config(overrides)
    assert (cfg.dataset.name, cfg.model.width, cfg.seed) == ("sphere", 32, 3)  # root says seed: 0
    assert config.run_config([*overrides, "seed=5"]).seed == 5  # the command line wins
    shipped = config.run_config(["experiment=cnn_digits"])
    assert (shipped.model.name, shipped.model.depth, shipped.optim.lr) == ("cnn", 10, 0.03)
    assert "experiment" not in config.run_config([])  # no experiment: the root config as before


@pytest.mark.parametrize("experiment", config.options("experiment"))
def test_every_shipped_experiment_composes_and_validates(experiment, tmp_path):
    cfg = config.run_config([f"experiment={experiment}"])
    config.validate(OmegaConf.merge(cfg, {"records_root": str(tmp_path)}))


@pytest.mark.parametrize("args, message", [
    (["run", "--config-dir", "nowhere", "+sweep=x"], "--config-dir nowhere: no such folder"),
    (["run", "+sweep=my_depth"], "unknown sweep 'my_depth': choose one of"),
    (["run", "experiment=nosuch"], "unknown experiment 'nosuch': choose one of cnn_digits"),
    (["run", "--config-dir"], "--config-dir needs a folder"),
])
def test_config_dir_mistakes_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "--config-dir DIR" in lines[0] or "--config-dir" in args


def test_a_mistyped_user_sweep_lists_the_users_sweeps_too(my_configs, capsys):
    assert cli.main(["run", f"--config-dir={my_configs}", "+sweep=my_deph"]) == 2
    assert "my_depth" in capsys.readouterr().err


def test_cfg_job_prints_the_users_sweep_and_experiment(my_configs, capsys):
    assert cli.main(["run", f"--config-dir={my_configs}", "experiment=sphere32", "--cfg", "job"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.dataset.name == "sphere" and printed.seed == 3


@pytest.mark.slow
def test_a_users_sweep_runs_through_hydras_launcher(my_configs, tmp_path):
    done = run_cli(["run", "--config-dir", str(my_configs), "+sweep=my_depth", "scale=smoke",
                    "optim.epochs=1", "probe.pairs=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sweep my_depth: 4 runs (model.depth 2 x optim.lr 2)" in done.stdout
    frame = records.load(tmp_path / "outputs")
    assert set(frame["status"]) == {"complete"} and frame["run_dir"].nunique() == 4
    assert set(frame["model.depth"]) == {1, 2} and set(frame["sweep.name"]) == {"my_depth"}


def test_the_readme_shows_this_sweep_in_one_file():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert MY_SWEEP in readme
    assert "confusion run --config-dir ~/my-configs +sweep=my_depth scale=smoke" in readme

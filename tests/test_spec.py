"""The run spec (confusion_cli/spec.py): each default declared once, Hydra type-checking every
composed config, each part checking itself, and the semantic fields that the hash and the
figures share."""

import dataclasses
from importlib import resources

import pandas as pd
import pytest
import yaml

from confusion_cli import config, records, spec
from confusion_cli.errors import ConfusionError
from confusion_cli.figures.select import config_columns, varying_columns
from confusion_cli.records import migrate

CONFIGS = resources.files("confusion_cli") / "configs"


@pytest.mark.parametrize("group", [g for g in spec.SCHEMAS if g])
def test_no_config_file_repeats_a_default_of_the_spec(group):
    """An option's file holds only what makes it differ from the dataclass it extends."""
    for path in CONFIGS.joinpath(group).iterdir():
        if not path.name.endswith(".yaml"):
            continue
        node = yaml.safe_load(path.read_text()) or {}
        parents = [p for p in node.pop("defaults", []) if isinstance(p, str) and p != "_self_"]
        assert parents, f"{path.name} extends no schema of the run spec"
        inherited = migrate._load(group, parents[0]) if parents[0] not in spec.SCHEMAS[group] \
            else spec.schema_defaults(group, parents[0])
        repeated = {k: v for k, v in node.items() if k in inherited and inherited[k] == v
                    and k not in ("name", "mode")}
        assert not repeated, f"{group}/{path.name} repeats the spec's defaults {repeated}"


def test_the_composed_config_is_typed_by_the_spec():
    from omegaconf import OmegaConf

    cfg = config.run_config(["model=cnn", "probe=per_example"])
    assert OmegaConf.get_type(cfg) is spec.RunOptions
    assert OmegaConf.get_type(cfg.model) is spec.CNN and OmegaConf.get_type(cfg.probe) is spec.Probe
    assert cfg.probe.bn_mode == "eval" and cfg.probe.examples == spec.Probe.examples


def test_a_value_of_the_wrong_type_is_its_parts_own_line():
    """Hydra refuses 1.5 for the integer model.depth; the line is the model's own check's
    (tests/test_cli.py: seed=abc, threads=abc; tests/test_bad_inputs.py: every other)."""
    with pytest.raises(ConfusionError) as caught:
        config.compose(["model.depth=1.5"])
    assert str(caught.value) == "model.depth must be a non-negative integer (at most 1000), got 1.5"


def test_each_part_validates_itself():
    names = [name for name, _, _ in config.VALIDATORS]
    assert names[:4] == ["model", "dataset", "optim", "probes"] and names[-1] == "memory"
    assert set(spec.PARTS) - {"extra_probes"} <= {n.removesuffix("s") for n in names} | {"probe"}


def test_semantic_fields_are_those_the_hash_reads():
    """Changing a root field marked semantic changes the hash; one marked semantic=False does not."""
    base = config.run_config(["launch_id=x"])
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(base, resolve=True)
    other = {"seed": 1, "device": "cpu", "threads": 2, "data_dir": "/elsewhere", "records_root": "/r",
             "launch_id": "y", "progress": False, "logger": "tensorboard", "eval_batch_size": 7,
             "memory_budget_gib": 4, "tf32": False, "channels_last": True, "deterministic": False,
             "compile": True}
    fields = {f.name for f in dataclasses.fields(spec.RunOptions)} - {*spec.PARTS, "sweep", "scale"}
    assert set(other) == fields  # a new root field is added here, with its semantic mark checked
    for key, value in other.items():
        changed = records.config_hash({**container, key: value}) != records.config_hash(container)
        assert changed == spec.is_semantic(key), key


def test_figures_take_the_semantic_fields_as_config_columns():
    frame = pd.DataFrame({"seed": [0, 1, 0, 1], "tf32": [True, True, False, False],
                          "compile": [False] * 4, "device": ["cpu", "cuda"] * 2, "threads": [1] * 4,
                          "scale.name": ["quick"] * 4, "sweep.name": ["s"] * 4,
                          "sweep.depths.paper": ["1,2"] * 4, "model.depth": [2] * 4,
                          "optim.lr": [0.1] * 4, "train_loss": [1.0, 0.9, 0.8, 0.7]})
    assert config_columns(frame) == ["tf32", "compile", "sweep.name", "model.depth", "optim.lr"]
    # runs that differ only in tf32 are two arms of two seeds each, not four seeds of one
    assert varying_columns(frame) == ["tf32"]


# -- the probe node: each key declares the confusion modes that read it ---------------------------
PROBE_FIELDS = [f for f in dataclasses.fields(spec.Probe) if f.name != "mode"]


def test_every_probe_key_declares_its_modes_and_they_are_registered():
    from confusion_cli import probes

    for found in PROBE_FIELDS:
        assert "modes" in found.metadata, f"probe.{found.name} declares no modes (spec.probe_setting)"
        assert set(found.metadata["modes"]) <= {*probes.MODES, spec.SCHEDULE}, found.name
    assert spec.probe_key_modes("pairs") == ("minibatch_pairs",)
    assert spec.probe_key_modes("every") is None and spec.probe_key_modes("bn_mode") is None


def _prepare(overrides, tmp_path):
    return config.prepare([*overrides, f"records_root={tmp_path / 'records'}"], [])


@pytest.mark.parametrize("key", [f.name for f in PROBE_FIELDS if spec.probe_key_modes(f.name)])
def test_a_probe_key_of_another_mode_on_the_command_line_is_one_line(key, tmp_path):
    """Each key the declaration gives to some modes, set away from its default on the command line
    for a mode that does not read it, is refused naming the key, its modes and the fix; nothing
    is written."""
    from confusion_cli import probes

    readers = spec.probe_key_modes(key)
    other = next(m for m in (*probes.MODES, "none") if m not in readers)
    value = 7 if key != "chunk_size" else 3
    with pytest.raises(ConfusionError) as caught:
        _prepare([f"probe={other}", f"probe.{key}={value}"], tmp_path)
    assert str(caught.value) == (
        f"probe.{key}={value} is a setting of probe={' or probe='.join(readers)}, which this run "
        f"does not use (probe={other}): drop probe.{key}, or choose probe={readers[0]}")
    assert not (tmp_path / "records").exists()
    _prepare([f"probe={readers[0]}", f"probe.{key}={value}"], tmp_path)  # its own mode takes it


def test_a_probe_key_is_refused_only_when_no_job_of_the_launch_reads_it(tmp_path):
    """At its default, or read by one mode of a sweep over modes, a key passes; schedule keys and
    keys of every mode pass for every mode; a sweep whose modes none read it is one line."""
    _prepare(["probe=per_example", "probe.pairs=100"], tmp_path)  # the default: no change
    _prepare(["probe=minibatch_pairs,per_example", "probe.pairs=2"], tmp_path)
    _prepare(["probe=none", "probe.every=2", "probe.bn_mode=eval", "probe.at_init=false"], tmp_path)
    with pytest.raises(ConfusionError, match=r"^probe.pairs=3 is a setting of probe=minibatch_pairs, "
                       r"which this launch does not use \(probe=all_pairs, per_example\)"):
        _prepare(["probe=per_example,all_pairs", "probe.pairs=3,100"], tmp_path)


def test_a_bad_value_of_another_modes_key_gets_the_mode_error_not_the_value_error(tmp_path):
    """probe.pairs=0 with probe=per_example: the probe checks only the keys its mode reads, so the
    one line says the key belongs to another mode; under its own mode, 0 is the value error."""
    with pytest.raises(ConfusionError, match=r"^probe.pairs=0 is a setting of probe=minibatch_pairs"):
        _prepare(["probe=per_example", "probe.bn_mode=eval", "probe.pairs=0"], tmp_path)
    with pytest.raises(ConfusionError, match=r"^probe.pairs must be a positive integer, got 0"):
        _prepare(["probe=minibatch_pairs", "probe.pairs=0"], tmp_path)


def test_a_sweep_job_is_checked_by_the_check_a_single_run_gets(tmp_path, monkeypatch):
    """One validation path: a single run and every job of a sweep go through validate_jobs and
    its per-job check_job."""
    seen = []
    monkeypatch.setattr(config, "check_job", lambda cfg, memo: seen.append(int(cfg.seed)))
    _prepare(["seed=3"], tmp_path)
    _prepare(["seed=4,5"], tmp_path)
    assert seen == [3, 4, 5]


def test_run_help_tags_each_probe_key_with_the_modes_that_read_it():
    from confusion_cli.cli import run_help

    lines = {line.split(":")[0].strip(): line for line in run_help(["probe=per_example"]).splitlines()
             if line.startswith("  ")}
    assert "# [probe=minibatch_pairs (not read by probe=per_example)]" in lines["pairs"]
    assert "# [probe=per_example] " in lines["examples"]
    assert "# [schedule: every probe] " in lines["every"]

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

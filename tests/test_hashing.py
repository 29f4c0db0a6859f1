"""The config hash survives new keys: a key added with a default changes no hash, a changed
default changes the hashes of the runs that use it and no other, and records of every earlier
version are read in today's layout (records/migrate.py)."""

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from confusion_cli import records, spec
from confusion_cli.records import migrate

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(migrate.__file__).parents[1] / "configs"
MOVED = {"hessian.": "extra_probes.hessian.", "rank.rtol": "extra_probes.rank.rtol"}  # the redesign


def fixture_cases() -> list[tuple[list[str], str]]:
    cases = json.loads((FIXTURES / "config_hashes.json").read_text())
    out = []
    for case in cases:
        overrides = list(case["overrides"])
        for old, new in MOVED.items():
            overrides = [o.replace(old, new) if o.startswith(old) else o for o in overrides]
        out.append((overrides, case["hash"]))
    return out


def config_tree(tmp_path, monkeypatch, edit) -> Path:
    """A copy of the package's config tree, changed by ``edit(root)``, that both Hydra (through
    ``composed``) and the hash's declared defaults read."""
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root, ignore=shutil.ignore_patterns("__pycache__", "claims"))
    edit(root)
    monkeypatch.setattr(migrate, "CONFIGS", root)
    migrate._options.cache_clear()
    migrate._root.cache_clear()
    spec.register()
    return root


def with_field(monkeypatch, group: str, key: str, default: Any) -> None:
    """Every schema of ``group`` in the run spec (spec.SCHEMAS; "" the root) with the field ``key``
    at ``default``: added, or its default changed."""
    for name, schema in list(spec.SCHEMAS[group].items()):
        new = dataclasses.field(default_factory=lambda: copy.deepcopy(default))
        extended = dataclasses.make_dataclass(schema.__name__, [(key, Any, new)], bases=(schema,))
        monkeypatch.setitem(spec.SCHEMAS[group], name, extended)


def composed(root: Path, cases: list[list[str]]) -> list:
    with initialize_config_dir(str(root), version_base=None):
        return [compose("config", overrides=[*o, "launch_id=x"]) for o in cases]


def hashes(root: Path, cases: list[list[str]]) -> list[str]:
    return [records.config_hash(cfg) for cfg in composed(root, cases)]


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text().rstrip("\n") + "\n" + text)


@pytest.fixture(autouse=True)
def fresh_defaults():
    yield
    migrate._options.cache_clear()
    migrate._root.cache_clear()
    spec.register()  # the schemas as they are again (monkeypatch has put them back)


def add_keys(monkeypatch):
    """A new key with a default in every part: a field of the spec's schemas, a line of each
    extra probe's config file."""
    for group, key, default in (("probe", "foo", 1), ("optim", "nesterov", False),
                                ("", "new_root_flag", True), ("model", "dropout", 0.0),
                                ("dataset", "shuffle_seed", 7)):
        with_field(monkeypatch, group, key, default)

    def edit(root: Path) -> None:
        for name in ("rank", "hessian", "grad_norm", "example_pairs"):
            append(root / "extra_probes" / f"{name}.yaml", "  new_setting: [1, 2]\n")
    return edit


@pytest.mark.slow
def test_adding_keys_with_defaults_changes_none_of_the_fixed_hashes(tmp_path, monkeypatch):
    root = config_tree(tmp_path, monkeypatch, add_keys(monkeypatch))
    cases = fixture_cases()
    assert len(cases) == 41
    assert hashes(root, [o for o, _ in cases]) == [h for _, h in cases]
    with initialize_config_dir(str(root), version_base=None):  # the keys are there, and count
        cfg = compose("config", overrides=["extra_probes=[rank]", "launch_id=x"])
        added = (cfg.probe.foo, cfg.optim.nesterov, cfg.model.dropout, cfg.new_root_flag,
                 cfg.dataset.shuffle_seed, list(cfg.extra_probes.rank.new_setting))
        assert added == (1, False, 0.0, True, 7, [1, 2])
        base = records.config_hash(cfg)
        for key in ("probe.foo=2", "optim.nesterov=true", "model.dropout=0.1", "new_root_flag=false",
                    "dataset.shuffle_seed=8", "extra_probes.rank.new_setting=[1]"):
            changed = compose("config", overrides=["extra_probes=[rank]", key, "launch_id=x"])
            assert records.config_hash(changed) != base, key
    # a record written before the keys existed is filled with their defaults: the same hash
    old = OmegaConf.load(FIXTURES / "old_record" / records.CONFIG)
    claimed = json.loads((FIXTURES / "old_record" / records.RUN_JSON).read_text())["config_hash"]
    assert records.config_hash(old) == claimed
    filled = migrate.migrate(OmegaConf.to_container(old))
    assert filled["probe"]["foo"] == 1 and filled["extra_probes"]["rank"]["new_setting"] == [1, 2]
    assert filled["probe"]["schedule"] == "epoch" and "rank" not in filled  # today's layout


def change_defaults(root: Path) -> None:
    rank = root / "extra_probes" / "rank.yaml"
    rank.write_text(rank.read_text().replace("rtol: 1.0e-3", "rtol: 1.0e-4"))
    hessian = root / "extra_probes" / "hessian.yaml"
    hessian.write_text(hessian.read_text().replace("iters: 20", "iters: 30"))


@pytest.mark.slow
def test_a_changed_default_changes_only_the_hashes_of_runs_that_use_it(tmp_path, monkeypatch):
    """rank's rtol and hessian's iters get new defaults: the runs that choose the probe at its
    default get new hashes; the others (the probe not chosen, or its setting set) keep theirs."""
    root = config_tree(tmp_path, monkeypatch, change_defaults)
    cases = fixture_cases()
    configs = composed(root, [o for o, _ in cases])
    changed = 0
    for (overrides, before), cfg in zip(cases, configs):
        extras = cfg.get("extra_probes") or {}
        uses_default = (("rank" in extras and extras.rank.rtol == 1.0e-4)
                        or ("hessian" in extras and extras.hessian.iters == 30))
        assert (records.config_hash(cfg) != before) == uses_default, overrides
        changed += uses_default
    assert 0 < changed < len(cases)


@pytest.mark.slow
def test_a_key_added_later_is_left_out_at_its_first_default(tmp_path, monkeypatch):
    """probe.schedule came after the first release with the default epoch: were its default
    changed, runs at epoch keep their hashes (FIRST_DEFAULTS) and runs at the new default differ."""
    with_field(monkeypatch, "probe", "schedule", "log:10")
    root = config_tree(tmp_path, monkeypatch, lambda root: None)
    overrides, base = fixture_cases()[0]
    assert overrides == []
    at_new_default, at_epoch = hashes(root, [[], ["probe.schedule=epoch"]])
    assert at_epoch == base and at_new_default != base


def test_vetting_a_record_again_parses_and_hashes_its_config_once(monkeypatch):
    """records.vet keeps each config.yaml's hash by its text: readers that vet the same records
    on every call (status, claims, plot) hash each once; a changed file is hashed again."""
    from confusion_cli.records import reader

    calls = []
    monkeypatch.setattr(reader, "config_hash", lambda cfg: calls.append(1) or records.config_hash(cfg))
    reader._parsed_and_hashed.cache_clear()
    first = reader.vet(FIXTURES, FIXTURES / "old_record")
    again = reader.vet(FIXTURES, FIXTURES / "old_record")
    assert first == again and len(calls) == 1
    again[1]["seed"] = -5  # the caller's copy: the kept config is untouched
    assert reader.vet(FIXTURES, FIXTURES / "old_record")[1] == first[1]

"""The one migration step: a record's config, as any earlier version wrote it, in today's layout.

``migrate`` is applied to every ``config.yaml`` read back (``reader`` and ``config_hash``), so
code reads one layout, and a record says what its run computed in today's terms:

1. ``extra_probes`` written as a list of names, with the ``rank`` and ``hessian`` settings at
   the root (before the probe redesign), becomes today's node (name -> settings); the root
   copies go.
2. Every key it lacks is filled with its declared default: the value in the config file of the
   option it chose (``configs/GROUP/OPTION.yaml`` over the dataclass of the run spec it extends,
   found by its ``name`` or ``mode``; optim's default option; ``config.yaml`` over
   ``spec.RunOptions`` for the root). A record without a key was written before the
   key existed, when the code did what the key's first default does, so a key whose default has
   changed since is filled with its first default, listed in ``FIRST_DEFAULTS``.

Adding a key is one field of the run spec (``spec.py``; an extra probe's: one line in its config
file) and nothing here. Changing a key's default takes one
entry in ``FIRST_DEFAULTS`` (its old default): the hash leaves a key out only at that value (see
``hashing``), so runs at the new default get new hashes and runs that set the old value keep
theirs.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from .. import spec

CONFIGS = resources.files("confusion_cli") / "configs"  # where the declared defaults live

# the groups a run chooses one option of, and the key that names the chosen option (None: the
# option config.yaml chooses by default)
PARTS = {"dataset": "name", "model": "name", "optim": None, "probe": "mode"}
LEGACY_ROOT_PROBES = ("rank", "hessian")  # extra probes whose settings sat at the root

# "GROUP.KEY" (or a root "KEY") -> the key's first default, for each key whose default has
# changed since it was added (the keys added after the first release are listed with theirs)
FIRST_DEFAULTS: dict[str, Any] = {"probe.schedule": "epoch", "optim.update": "auto"}


def _raw(path: str) -> dict[str, Any]:
    """``configs/PATH.yaml`` as a plain dict, interpolations left as written."""
    node = OmegaConf.create(CONFIGS.joinpath(*f"{path}.yaml".split("/")).read_text())
    return OmegaConf.to_container(node, resolve=False)


def _load(group: str, name: str) -> dict[str, Any]:
    """The keys of ``configs/GROUP/NAME.yaml``, after the configs of its group that its defaults
    list names: another file of the group, or a schema of the run spec (``spec.SCHEMAS``)."""
    node = _raw(f"{group}/{name}")
    merged: dict[str, Any] = {}
    for parent in node.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_":
            schema = spec.schema_defaults(group, parent)
            merged.update(schema if schema is not None else _load(group, parent))
    return {**merged, **node}


@cache
def _options(group: str) -> dict[str, dict[str, Any]]:
    """{option (its name / mode, or for an extra probe its file name): its declared defaults}."""
    found = {}
    for path in CONFIGS.joinpath(group).iterdir():
        if path.name.endswith(".yaml"):
            stem = path.name.removesuffix(".yaml")
            node = _load(group, stem)
            if group == "extra_probes":
                found[stem] = node.get(stem, {})
            else:
                found[str(node.get(PARTS[group], stem) if PARTS[group] else stem)] = node
    return found


@cache
def _root() -> tuple[dict[str, Any], dict[str, str]]:
    """(the root keys config.yaml declares, {group: the option it chooses by default})."""
    node = _raw("config")
    defaults = node.pop("defaults", [])
    chosen = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if isinstance(v, str)}
    node.pop("hydra", None)
    schemas = [spec.schema_defaults("", d) for d in defaults if isinstance(d, str)]
    return {k: v for schema in schemas if schema for k, v in schema.items()} | node, chosen


def declared(group: str, option: str | None) -> dict[str, Any] | None:
    """The declared defaults of ``option`` of ``group`` ("" for the root keys; option None: the
    group's default option), or None for an option that no config file declares."""
    if group == "":
        return _root()[0]
    if option is None:
        option = _root()[1].get(group)
    return _options(group).get(str(option))


def option_of(group: str, node: dict[str, Any]) -> str | None:
    """The option of ``group`` a config node is (its name / mode; None: the default option)."""
    key = PARTS.get(group)
    return str(node.get(key)) if key else None


def first_default(path: str, defaults: dict[str, Any] | None, key: str) -> tuple[bool, Any]:
    """(whether the key has a default, its first default) for the key ``key`` at ``path``."""
    if path in FIRST_DEFAULTS:
        return True, FIRST_DEFAULTS[path]
    if defaults is not None and key in defaults:
        return True, defaults[key]
    return False, None


def _fill(node: dict[str, Any], defaults: dict[str, Any] | None, prefix: str) -> None:
    for key, value in (defaults or {}).items():
        if key not in node:
            node[key] = copy.deepcopy(first_default(f"{prefix}{key}", defaults, key)[1])
        elif isinstance(node[key], dict) and isinstance(value, dict):
            _fill(node[key], value, f"{prefix}{key}.")


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a record's config.yaml as a plain dict, from any version) in today's layout,
    every key it lacks filled with its default; a new dict, ``config`` is left as it was."""
    config = copy.deepcopy(config)
    extras = config.get("extra_probes")
    if isinstance(extras, list):  # before the probe redesign
        config["extra_probes"] = {
            name: config.get(name, copy.deepcopy(declared("extra_probes", name) or {}))
            for name in extras}
        for name in LEGACY_ROOT_PROBES:
            config.pop(name, None)
    _fill(config, declared("", None), "")
    for group in PARTS:
        if isinstance(config.get(group), dict):
            _fill(config[group], declared(group, option_of(group, config[group])), f"{group}.")
    for name, settings in (config.get("extra_probes") or {}).items():
        if isinstance(settings, dict):
            _fill(settings, declared("extra_probes", name), f"extra_probes.{name}.")
    return config

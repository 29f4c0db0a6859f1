"""The config hash: runs with equal hashes compute the same thing, so a relaunch finds them.

The hash is taken over the semantic config (without the keys that say where or how verbosely a
run happens) in the layout of the first release, so that records written before the probe
redesign still match: ``extra_probes`` as a list of names with the ``rank`` and ``hessian``
settings at the root (their defaults when not chosen), and the keys added since left out at
their defaults (``probe.schedule=epoch``, ``optim.update=auto``): a key added later enters the
hash only when it is set away from its default.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Config keys that say where or how verbosely a run happens, not what it computes.
NON_SEMANTIC_KEYS = ("records_root", "data_dir", "launch_id", "progress", "device", "threads", "sweep",
                     "memory_budget_gib", "logger")
ROOT_PROBE_SETTINGS = ("rank", "hessian")  # extra probes whose settings sat at the root
DEFAULTS_LEFT_OUT = (("probe", "schedule", "epoch"), ("optim", "update", "auto"))  # keys added later


@cache
def _default_settings(name: str) -> dict[str, Any]:
    path = resources.files("confusion_cli") / "configs" / "extra_probes" / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(str(path)))[name]


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that do not change what a run computes.

    The sweep's name stays (each sweep's records are its own, so a figure finds all its runs),
    but not its grids or the scale's seed list: growing a grid keeps the runs already done.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    semantic = {k: v for k, v in container.items() if k not in NON_SEMANTIC_KEYS}
    semantic["sweep"] = (container.get("sweep") or {}).get("name")
    semantic.pop("scale", None)
    return semantic


def hashed_layout(semantic: dict[str, Any]) -> dict[str, Any]:
    """``semantic`` in the layout the hash is taken over (see the module's docstring)."""
    layout = dict(semantic)
    extras = layout.pop("extra_probes", None) or {}
    if isinstance(extras, list):  # a config.yaml written before the redesign: already this layout
        return {**semantic, "extra_probes": extras}
    layout["extra_probes"] = list(extras)
    for name in ROOT_PROBE_SETTINGS:
        layout[name] = extras.get(name, _default_settings(name))
    layout.update({name: settings for name, settings in extras.items()
                   if name not in ROOT_PROBE_SETTINGS})
    for group, key, default in DEFAULTS_LEFT_OUT:
        if isinstance(layout.get(group), dict) and layout[group].get(key) == default:
            layout[group] = {k: v for k, v in layout[group].items() if k != key}
    return layout


def config_hash(cfg: DictConfig) -> str:
    """A short stable hash of the semantic config: runs with equal hashes compute the same thing."""
    text = json.dumps(hashed_layout(semantic_config(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

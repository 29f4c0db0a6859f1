"""The config hash: runs with equal hashes compute the same thing, so a relaunch finds them.

The hash is taken over the semantic fields of the parts a run chose (its dataset, model,
optimizer, confusion probe, each chosen extra probe, and the root's own keys), after the config
is migrated to today's layout (``migrate``), in the layout it had when records were first
written, so that every earlier record still matches:

- the keys each option had when this rule was frozen (``HASHED_ALWAYS``) enter with their value,
  as they always did; any other key enters only when set away from its default (its first
  default: ``migrate.FIRST_DEFAULTS``). So adding a key with a default changes no hash, and
  changing a default changes the hashes of the runs that use it and no other;
- the keys that say where or how verbosely a run happens (``NON_SEMANTIC_KEYS``: the fields the
  run spec marks ``semantic=False``), the scale and
  the sweep's grids do not enter (the sweep's name does: each sweep's records are its own);
- ``extra_probes`` enters as the list of chosen names, each chosen probe's settings at the root;
  the ``rank`` and ``hessian`` settings, which the first release kept at the root whether chosen
  or not, enter as the constants they then were when not chosen: an extra probe that is not
  chosen changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..spec import non_semantic_root_keys
from .migrate import PARTS, declared, first_default, migrate, option_of

# Config keys that say where or how verbosely a run happens, not what it computes: the root's
# fields the run spec marks semantic=False, and the sweep (its name enters, not its grids).
NON_SEMANTIC_KEYS = (*non_semantic_root_keys(), "sweep")

# The keys each option had when the rule above was frozen (issue 21): they always enter the hash.
# "*" applies to every option of the group (the name or mode, which tells options apart, always).
# Frozen: a key added since is not listed here, whatever its group.
HASHED_ALWAYS = {
    "": {"*": "seed eval_batch_size tf32 channels_last deterministic compile sweep"},
    "dataset": {"*": "name train_size test_size augment",
                "cifar_shaped": "n_train n_test data_seed",
                "regression": "n_train n_test dim noise data_seed",
                "sphere": "n_train n_test dim num_classes data_seed"},
    "model": {"*": "name",
              "cnn": "depth width batch_norm skip init init_gain",
              "linear": "depth width activation init init_gain",
              "linreg": "bias init activation init_gain",
              "mlp": "depth width activation bias init init_gain batch_norm skip"},
    "optim": {"*": "lr batch_size momentum weight_decay epochs milestones gamma full_batch max_steps"},
    "probe": {"*": "mode pairs batches examples batch_size chunk_size group bn_mode every at_init augment"},
    "extra_probes": {"rank": "rtol", "hessian": "examples top_k iters", "grad_norm": "batches batch_size",
                     "example_pairs": "examples subset_seed"},
}
# the first release's rank and hessian settings, hashed at the root when the probe is not chosen
UNCHOSEN_ROOT_PROBES = {"rank": {"rtol": 0.001}, "hessian": {"examples": 512, "top_k": 3, "iters": 20}}


def semantic_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The config (resolved, migrated to today's layout) without the keys that do not change what
    a run computes.

    The sweep's name stays (each sweep's records are its own, so a figure finds all its runs),
    but not its grids or the scale's seed list: growing a grid keeps the runs already done.
    """
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    container = migrate(container)
    semantic = {k: v for k, v in container.items() if k not in NON_SEMANTIC_KEYS}
    semantic["sweep"] = (container.get("sweep") or {}).get("name")
    semantic.pop("scale", None)
    return semantic


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _hashed(group: str, option: str | None, node: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``node`` (an option of ``group``) that enter the hash."""
    frozen = HASHED_ALWAYS.get(group, {})
    always = set(frozen.get("*", "").split()) | set(frozen.get(str(option), "").split())
    defaults = declared(group, option)
    prefix = f"{group}.{option}." if group == "extra_probes" else f"{group}." if group else ""
    kept = {}
    for key, value in node.items():
        has_default, default = first_default(f"{prefix}{key}", defaults, key)
        if key in always or not has_default or not _same(value, default):
            kept[key] = value
    return kept


def hashed_layout(semantic: dict[str, Any]) -> dict[str, Any]:
    """``semantic`` in the layout the hash is taken over (see the module's docstring)."""
    extras = semantic.get("extra_probes") or {}
    root = {k: v for k, v in semantic.items() if k not in PARTS and k != "extra_probes"}
    layout = _hashed("", None, root)
    for group in PARTS:
        if group in semantic:
            node = semantic[group]
            layout[group] = (_hashed(group, option_of(group, node), node) if isinstance(node, dict)
                             else node)
    layout["extra_probes"] = list(extras)
    layout.update(UNCHOSEN_ROOT_PROBES)
    layout.update({name: _hashed("extra_probes", name, settings) if isinstance(settings, dict)
                   else settings for name, settings in extras.items()})
    return layout


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """A short stable hash of the semantic config: runs with equal hashes compute the same thing."""
    text = json.dumps(hashed_layout(semantic_config(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

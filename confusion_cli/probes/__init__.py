"""Probes: statistics of the gradients at the current weights, computed without changing them.

The protocol (Probe, ProbeContext, Schedule) is in ``base``; every module of this package is
imported here, so a ``@register``-ed Probe in a new file is found by name with no other edit.
``probe.mode`` picks the confusion probe (a registered probe of kind "confusion": ``MODES``),
``extra_probes=[...]`` the others (kind "extra").

BatchNorm convention (``probe.bn_mode``, written into each run's record by ``bn_convention``):
- ``train``, the default of the mini-batch probes (minibatch_pairs, all_pairs, grad_norm): each
  mini-batch gradient is the one an SGD step takes on that batch, BatchNorm normalising with the
  batch's own statistics; running statistics are neither used nor updated, and every buffer is
  restored.
- ``eval``, the only mode of per_example (and of the rank / Hessian probes): BatchNorm uses its
  running statistics, so examples are independent and per-example gradients are defined. At
  initialisation the running statistics are (mean 0, variance 1) and BN is an affine map.
Each module's train/eval mode is restored afterwards.

Loss functions are mean-reduced over the batch; g_i is the gradient of the loss on example i
alone, a mini-batch gradient the gradient of the mean loss on that batch.
"""

import importlib
import pkgutil

from omegaconf import OmegaConf
from torch import nn

from ..errors import ConfusionError
from ..spec import schema_defaults
from .base import PROBES, Probe, ProbeContext, Schedule, register
from .confusion import check_bn_mode
from .gram import per_example_gram
from .naive import BN_MODES, bn_mode, naive_per_example_gram
from .pairs import all_pairs_stats, minibatch_pair_stats
from .stats import gram_pair_statistics, pair_statistics

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# the confusion probes (probe.mode), in the order they registered: the registry's own entries
MODES = tuple(name for name, probe in PROBES.items() if probe.kind == "confusion")

BN_CONVENTIONS = {
    "train": ("train: each mini-batch gradient is the one SGD steps on (BatchNorm uses the batch's "
              "own statistics; running statistics untouched)"),
    "eval": ("eval: gradients are taken with every module in eval mode (BatchNorm uses its "
             "running statistics, examples are independent)"),
}


def bn_convention(cfg) -> str:
    """The sentence run.json records for the probe config ``cfg`` (its ``bn_mode``)."""
    return BN_CONVENTIONS[check_bn_mode(filled(cfg))]


def extra_names() -> list[str]:
    """The probes ``extra_probes=[...]`` can name: every registered one of kind "extra"."""
    return sorted(name for name, probe in PROBES.items() if probe.kind == "extra")


def filled(probe_cfg):
    """The probe config ``probe_cfg`` (maybe partial: library use, tests) with every key it lacks
    at the run spec's default (``spec.Probe``)."""
    given = probe_cfg if isinstance(probe_cfg, dict) else OmegaConf.to_container(probe_cfg, resolve=True)
    return OmegaConf.create({**schema_defaults("probe", "spec"), **given})


def build(probe_cfg, extra_cfg) -> list[Probe]:
    """The probes a run uses: the confusion probe ``probe_cfg.mode`` (none: no confusion probe),
    then each probe named in ``extra_cfg`` (the ``extra_probes`` node: name -> settings)."""
    built: list[Probe] = []
    probe_cfg = filled(probe_cfg)
    if probe_cfg.mode != "none":
        if probe_cfg.mode not in MODES:
            raise ConfusionError(f"unknown probe.mode '{probe_cfg.mode}': choose "
                                 f"{', '.join(MODES)} or none")
        built.append(PROBES[probe_cfg.mode](probe_cfg))
    for name, settings in (extra_cfg or {}).items():
        if name not in extra_names():
            raise ConfusionError(f"unknown extra probe '{name}': choose from "
                                 f"{', '.join(extra_names())} (extra_probes=[NAME,...])")
        built.append(PROBES[name](settings))
    return built


def memory(probe_cfg, extra_cfg, params: int, example_floats: int,
           model: nn.Module | None = None) -> list[tuple[int, str]]:
    """Each probe's memory estimate (bytes, the setting that sets it); see Probe.memory. Given the
    run's ``model`` (meta device), each probe first checks it can measure it (Probe.check_model)."""
    estimates = []
    for probe in build(probe_cfg, extra_cfg):
        if model is not None:
            probe.check_model(model)
        estimates.append(probe.memory(params, example_floats))
    return estimates


def check(probe_cfg, extra_cfg, train_size: int) -> Schedule:
    """Validate every probe of a run and its schedule before training; return the schedule."""
    schedule = Schedule.from_config(filled(probe_cfg))
    for probe in build(probe_cfg, extra_cfg):
        probe.check(train_size)
    return schedule


__all__ = ["BN_CONVENTIONS", "BN_MODES", "MODES", "PROBES", "Probe", "ProbeContext", "Schedule",
           "all_pairs_stats", "bn_convention", "bn_mode", "build", "check", "check_bn_mode",
           "extra_names", "gram_pair_statistics", "memory", "minibatch_pair_stats", "naive_per_example_gram",
           "pair_statistics", "per_example_gram", "register"]

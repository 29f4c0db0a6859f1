"""The run's config: composed from the Hydra tree and checked, every job of a sweep, before
anything is written.

``compose`` turns Hydra's errors (an unknown option, a mistyped key) into one line naming the
fix; ``validate`` asks each part to check its own keys (model, dataset, optimizer, probes and
their schedule, then the run's own options) against the training set's size; ``plan_sweep``
counts a sweep's runs; ``sweep_jobs`` expands a sweep into its jobs as Hydra's basic sweeper
does and ``validate_sweep`` composes and checks every one of them before the first starts.
Hydra's launcher composes each job again from the same overrides: that is how it hands one job
to one process or cluster node, and a job then trusts its config.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf.errors import InterpolationKeyError, ValidationError

from . import spec
from .errors import ConfusionError

GROUPS = ("dataset", "model", "optim", "probe", "extra_probes", "scale", "sweep", "experiment")
SEARCHPATH = "hydra.searchpath"


def options(group: str, overrides: list[str] = ()) -> list[str]:
    """The config names available in ``group``: the YAML files of configs/GROUP, and of GROUP in
    the folders a ``hydra.searchpath=[file://...]`` override of ``overrides`` adds (--config-dir)."""
    folders = [resources.files("confusion_cli") / "configs" / group]
    folders += [Path(d) / group for d in search_dirs(overrides)]
    return sorted({p.name.removesuffix(".yaml") for folder in folders if folder.is_dir()
                   for p in folder.iterdir() if p.name.endswith(".yaml")})


def search_dirs(overrides: list[str]) -> list[str]:
    """The local folders (file://) of the ``hydra.searchpath=[...]`` overrides of ``overrides``."""
    if not any(text.split("=", 1)[0].lstrip("+") == SEARCHPATH for text in overrides):
        return []  # Hydra's grammar not imported: `confusion --help` lists every group's options
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = []
    for text in overrides:
        if text.split("=", 1)[0].lstrip("+") == SEARCHPATH:
            value = OverridesParser.create().parse_overrides([text])[0].value()
            found += [v.removeprefix("file://") for v in (value if isinstance(value, list) else [value])
                      if isinstance(v, str) and v.startswith("file://")]
    return found


def with_config_dirs(overrides: list[str], folders: list[str]) -> list[str]:
    """``overrides`` with the config folders ``folders`` (`confusion run --config-dir DIR`, the
    user's own sweeps, experiments and options) on Hydra's search path after any given, as one
    ``hydra.searchpath`` override: the override the composition checked before launch and Hydra's
    launcher composing each job both read. A folder that is not there is one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    paths = []
    for folder in folders:
        path = Path(folder).expanduser().absolute()
        if not path.is_dir():
            raise ConfusionError(f"--config-dir {folder}: no such folder (it holds your config groups: "
                                 "sweep/NAME.yaml, experiment/NAME.yaml, model/NAME.yaml, ...)")
        paths.append(f"file://{path}")
    rest, given = [], []
    for text in overrides:
        if text.split("=", 1)[0].lstrip("+") == SEARCHPATH:
            value = OverridesParser.create().parse_overrides([text])[0].value()
            given += value if isinstance(value, list) else [value]
        else:
            rest.append(text)
    quoted = ["'" + str(p).replace("\\", "\\\\").replace("'", "\\'") + "'" for p in [*given, *paths]]
    return [*rest, f"{SEARCHPATH}=[{','.join(quoted)}]"] if quoted else rest



def is_sweep_override(text: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([text])[0].is_sweep_override()


def sweep_values(text: str) -> list[str]:
    """The values of one override 'key=v1,v2,...' (or 'key=range(...)'), as Hydra expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_overrides([text])[0]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [text.split("=", 1)[1]]


def _sweep_size(text: str) -> int:
    return len(sweep_values(text))


def compose(overrides: list[str]):
    """Compose the config the way `confusion run` would; turn Hydra errors into one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_syntax(overrides)
    spec.register()
    plain = [o for o in overrides if not is_sweep_override(o)]
    if any(o.startswith("+") and o.split("=", 1)[0].lstrip("+") not in GROUPS for o in overrides):
        _check_keys(overrides, hydra_compose, initialize_config_module)  # Hydra would add the key
    try:
        with initialize_config_module("confusion_cli.configs", version_base=None):
            return hydra_compose("config", overrides=plain, return_hydra_config=True)
    except HydraException as exc:
        _check_keys(overrides, hydra_compose, initialize_config_module)  # a mistyped key: name it
        if isinstance(exc.__cause__, ValidationError):  # a value of the wrong type for its field
            raise _wrong_type(plain, exc.__cause__) from None
        raise ConfusionError(_explain_hydra_error(exc, overrides)) from None
    except OmegaConfBaseException as exc:
        raise ConfusionError(f"bad override: {str(exc).splitlines()[0]}") from None


def _wrong_type(overrides: list[str], error) -> ConfusionError:
    """The one line for an override whose value the spec's type refuses (``seed=abc``,
    ``model.depth=1.5``): the check of its part, run on the config composed without it and given
    the value untyped, names the fix (``seed must be a non-negative integer ...``); Hydra's
    reason where that check lets the value pass."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key = str(getattr(error, "full_key", "") or "")
    mine = [o for o in overrides if o.split("=", 1)[0].lstrip("+") == key]
    reason = ConfusionError(f"{key or 'a value'}: {str(error).splitlines()[0]}")
    if not mine:
        return reason
    rest = [o for o in overrides if o not in mine]
    value = OverridesParser.create().parse_overrides(mine[-1:])[0].value()
    return _untyped_check(split_hydra(compose(rest))[0], {key: value}) or reason


def _untyped_check(cfg, values: dict[str, Any]) -> ConfusionError | None:
    """The error the parts' checks give for ``cfg`` (untyped) with ``values`` set, or None."""
    from omegaconf import OmegaConf

    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in values.items():
        OmegaConf.update(plain, key, value, force_add=True)
    try:
        check_job(plain, {})
    except ConfusionError as exc:
        return exc
    return None


def check_syntax(overrides: list[str]) -> None:
    """Each override parses as Hydra's grammar reads it, or one line saying how to write it: no
    control character (a newline), a key and an '=' (``optim`` alone, ``=5``), one value
    (``optim.lr=0.1=2``), a non-ASCII character only inside quotes (Hydra's grammar; launch_id
    and sweep.name are ASCII names in any case), no ``~KEY`` deleting a value every run reads."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ConfusionError(f"override {text!r} contains a control character (a newline?): "
                                 "write one KEY=VALUE per argument")
        key = text.lstrip("+~").split("=", 1)[0]
        if "=" not in text and not text.startswith("~"):
            raise ConfusionError(f"override {text!r} has no '=': write KEY=VALUE, or GROUP=OPTION "
                                 "to choose a config (e.g. optim=sgd)")
        if not key:
            raise ConfusionError(f"override {text!r} has no key: write KEY=VALUE")
        try:
            parser.parse_overrides([text])
        except OverrideParseException as exc:
            if any(ord(c) > 127 for c in text):
                raise ConfusionError(f"override {text!r} does not parse: a non-ASCII character "
                                     "must be inside quotes (key='value'); launch_id and sweep.name "
                                     "take ASCII letters, digits, '.', '_', '-'") from None
            lines = [line for line in str(exc).splitlines() if line.strip() and "hydra.cc" not in line]
            reason = lines[-1].strip() if lines else "Hydra's override grammar"
            raise ConfusionError(f"override {text!r} does not parse ({reason}): write KEY=VALUE with "
                                 "one value (quote a value holding '=', brackets or spaces: "
                                 "key='...'; a sweep: key=v1,v2)") from None
        if text.startswith("~") and key not in GROUPS:
            raise ConfusionError(f"override {text!r} deletes a value every run reads: set it "
                                 f"instead ({key}=VALUE)")


def _config_keys(node: object, prefix: str = "") -> set[str]:
    """Every dotted key of a config container, inner nodes included."""
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}{key}"
            keys |= {name} | _config_keys(value, f"{name}.")
    return keys


KEY_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "epoch": "epochs",
               "n_epochs": "epochs", "num_epochs": "epochs", "seeds": "seed"}


def _check_keys(overrides: list[str], hydra_compose, initialize_config_module) -> None:
    """The schema check: every overridden key must exist in the config that the same group
    choices compose to (a typo such as ``optim.learning_rate=0.1``, with or without ``+``, is
    one line naming the nearest valid key). ``hydra.*`` keys are Hydra's to check."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    def key_of(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    choices = [o for o in overrides if (key_of(o) in GROUPS or key_of(o) == SEARCHPATH) and "=" in o
               and not is_sweep_override(o)]
    try:
        with initialize_config_module("confusion_cli.configs", version_base=None):
            base = hydra_compose("config", overrides=choices)
    except HydraException:
        return  # an unknown group option: compose() says which, in one line
    known = _config_keys(OmegaConf.to_container(base, resolve=False))
    for override in overrides:
        key = key_of(override)
        if "=" not in override or key in GROUPS or key in known or "/" in key or key.split(".")[0] == "hydra":
            continue
        raise ConfusionError(f"unknown config key '{key}' in '{override}'{_key_hint(key, known)}")


def _key_hint(key: str, known: set[str]) -> str:
    """The end of the unknown-key line: the nearest valid key, an extra probe to choose first,
    or the keys the node takes."""
    parts = key.split(".")
    probe = parts[1] if parts[0] == "extra_probes" and len(parts) > 1 else parts[0]
    if probe not in options("extra_probes"):
        nearest = _nearest_key(key, known)
        if nearest:
            return f": did you mean '{nearest}'?"
        head = key.rpartition(".")[0]
        if head in known:
            return f" ({head} takes {', '.join(_children(head, known))})"
        return " (see `confusion run --cfg job`)"
    settings = {f"extra_probes.{k}" for k in _config_keys(_extra_probe_settings(probe))}
    full = key if parts[0] == "extra_probes" else f"extra_probes.{key}"
    nearest = full if full in settings else _nearest_key(full, settings)
    takes = ", ".join(_children(f"extra_probes.{probe}", settings))
    if f"extra_probes.{probe}" in known:  # chosen
        return f": did you mean '{nearest}'?" if nearest else f" (extra_probes.{probe} takes {takes})"
    if nearest == full != key:  # a setting of the probe, without its extra_probes. prefix
        return f": the {probe} probe's settings are {full}, with extra_probes=[{probe}]"
    mean = f"did you mean '{nearest}'? " if nearest and nearest != key else ""
    return f": {mean}choose the probe with extra_probes=[{probe}] to set its settings ({takes})"


def _children(node: str, known: set[str]) -> list[str]:
    """The names of the keys right under ``node`` (a dotted key of ``known``)."""
    return sorted(k.removeprefix(f"{node}.") for k in known if k.rpartition(".")[0] == node)


def _nearest_key(key: str, known: set[str]) -> str | None:
    """The valid key a mistyped ``key`` most likely meant (difflib): a known alias
    (``learning_rate`` -> ``lr``) or the closest key of the same node (``extra_probes.hessian.itres``
    -> ``extra_probes.hessian.iters``); where that node does not exist, the closest key of the
    same depth (``modle.depth`` -> ``model.depth``)."""
    import difflib

    head, _, leaf = key.rpartition(".")
    if head and head not in known:
        same_depth = sorted(k for k in known if k.count(".") == key.count("."))
        close = difflib.get_close_matches(key, same_depth, n=1, cutoff=0.6)
        return close[0] if close else None
    join = (lambda name: f"{head}.{name}") if head else (lambda name: name)
    if leaf in KEY_ALIASES and join(KEY_ALIASES[leaf]) in known:
        return join(KEY_ALIASES[leaf])
    close = difflib.get_close_matches(leaf, _children(head, known) if head else
                                      sorted(k for k in known if "." not in k), n=1, cutoff=0.6)
    return join(close[0]) if close else None


def _extra_probe_settings(probe: str) -> dict:
    """The settings node of an extra probe as its config file declares it ({probe: {key: value}})."""
    import yaml

    text = (resources.files("confusion_cli") / "configs" / "extra_probes" / f"{probe}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _explain_hydra_error(exc: Exception, overrides: list[str]) -> str:
    text = str(exc).splitlines()[0]
    for group in GROUPS:
        for o in overrides:
            key, _, value = o.lstrip("+~").partition("=")
            names = options(group, overrides)
            if key == group == "extra_probes":
                unknown = [v for v in re.split(r"[\[\],\s]+", value) if v and v not in names]
                if unknown:
                    return (f"unknown extra_probes {unknown}: choose from "
                            f"{', '.join(names)} (extra_probes=[NAME,...])")
            elif key == group and value not in names:
                return (f"unknown {group} '{value}': choose one of {', '.join(names)} "
                        f"({'+' if group == 'sweep' else ''}{group}=NAME"
                        f"{'' if search_dirs(overrides) else '; your own: --config-dir DIR'})")
    return f"{text} (see `confusion --help`)"


def validate(cfg, given: frozenset[str] = frozenset()) -> None:
    """Check everything a run needs before anything is launched or written, as for every job of
    a sweep (``validate_jobs``, the one validation path): each part checks its own keys
    (``VALIDATORS``), the probes against the training set's size; ``given``: the keys the command
    line set (a probe key of another mode is refused); a mistake is one line."""
    validate_jobs([(None, [], cfg)], given)


def given_keys(overrides: list[str]) -> frozenset[str]:
    """The keys the overrides ``overrides`` set (``probe.pairs=3,5``: probe.pairs)."""
    return frozenset(o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o)


def validate_jobs(jobs, given: frozenset[str] = frozenset()) -> None:
    """Check each of ``jobs`` ((job number, its swept overrides, its config); number None: a single
    run) by the per-job check (``check_job``), each part once per distinct value; the first bad
    job is one line naming its swept overrides (``job 3 (model.depth=10 optim.lr=-1): optim.lr
    must be ...``). Then the launch: no probe key of ``given`` is set away from its default for
    modes none of the jobs runs (``check_probe_keys``). records_root is checked last, so a
    refused launch writes nothing."""
    memo: dict = {}
    roots, modes, set_away = set(), set(), {}
    defaults = spec.schema_defaults("probe", "spec") or {}
    probe_keys = [k for k in sorted(given) if k.startswith("probe.") and spec.probe_key_modes(k[6:])]
    for num, swept, job_cfg in jobs:
        try:
            check_job(job_cfg, memo)
        except ConfusionError as exc:
            raise (exc if num is None else _job_error(num, swept, exc)) from None
        roots.add(str(job_cfg.records_root))
        modes.add(str(job_cfg.probe.mode))
        for key in probe_keys:
            value = job_cfg.probe.get(key[6:])
            if value != defaults[key[6:]]:
                set_away.setdefault(key, value)
    check_probe_keys(set_away, modes)
    for root in sorted(roots):
        _check_writable(Path(root))


def check_probe_keys(set_away: dict[str, Any], modes: set[str]) -> None:
    """Refuse, in one line, a probe key the command line set away from its default
    (``set_away``: key -> value) that none of the launch's confusion modes (``modes``) reads, as
    the run spec declares (``spec.probe_key_modes``): ``probe.pairs=50`` with ``probe=per_example``
    would change nothing the run computes, only its config hash."""
    for key, value in set_away.items():
        readers = spec.probe_key_modes(key.removeprefix("probe."))
        if readers and not modes & set(readers):
            chosen = ", ".join(sorted(modes))
            raise ConfusionError(
                f"{key}={value} is a setting of probe={' or probe='.join(readers)}, which this "
                f"{'run' if len(modes) == 1 else 'launch'} does not use (probe={chosen}): drop "
                f"{key}, or choose probe={readers[0]}")


def _memo_key(value: Any) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return json.dumps(value, sort_keys=True, default=repr)


def check_job(cfg, memo: dict) -> None:
    """``validate`` without the records_root check: every interpolation resolves, the booleans
    are booleans, then each part's check (``VALIDATORS``), run once per distinct value of
    the nodes it reads (``memo``: shared by the jobs of a sweep, so a 1,000-job sweep builds
    each distinct model once for its memory estimate)."""
    spec.check_resolves(cfg)
    spec.check_flags(cfg)
    results: dict[str, Any] = {}
    for name, nodes, check in VALIDATORS:
        if nodes is None:
            results[name] = check(cfg, results)
            continue
        key = (name, *(_memo_key(cfg.get(node)) for node in nodes))
        if key not in memo:
            memo[key] = check(cfg, results)
        results[name] = memo[key]


GIB = 1 << 30


def check_memory(cfg) -> None:
    """Refuse, in one line naming the setting to change, a run whose estimated memory (the data
    on the device, the model with its gradients and optimizer state, and the largest of its
    probes) is above ``memory_budget_gib``. Estimates, not measurements: `make bench` measures."""
    import torch

    from . import data, models, probes

    train, test, shape = data.sizes(cfg.dataset)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = models.build_model(cfg.model, shape, data.num_classes(cfg.dataset))
    params = sum(p.numel() for p in model.parameters())
    floats = math.prod(shape)
    parts = [(4 * (train + test) * floats, "dataset.train_size"), (16 * params, "model.width")]
    parts += probes.memory(cfg.probe, cfg.get("extra_probes"), params, floats, model)  # checks the model too
    budget = cfg.memory_budget_gib
    total = sum(size for size, _ in parts)
    if total > budget * GIB:
        size, option = max(parts)
        raise ConfusionError(f"this run would hold about {total / GIB:.1f} GiB ({size / GIB:.1f} GiB "
                             f"set by {option}), above memory_budget_gib={budget}: lower {option}, "
                             "or raise memory_budget_gib if the device has the memory")


def _model(cfg, sizes):
    from . import models

    return models.validate(cfg.model)


def _dataset(cfg, sizes):
    from . import data

    return data.validate(cfg.dataset, cfg.data_dir)


def _optim(cfg, sizes):
    from .train import check_optim

    return check_optim(cfg.optim)


def check_extra_nodes(extras) -> None:
    """An extra probe's node that lacks settings its config file declares was not chosen: a sweep
    (or the command line) set some of its settings, and extra_probes=[...] then left it out. One
    line that says so, rather than a check of the missing setting."""
    for name, settings in (extras or {}).items():
        declared = _extra_probe_settings(name).get(name) if name in options("extra_probes") else None
        if not declared or not hasattr(settings, "keys"):
            continue
        missing = sorted(set(declared) - set(settings.keys()))
        if missing:
            raise ConfusionError(
                f"extra_probes.{name} has settings ({', '.join(sorted(settings.keys()))}) but the "
                f"{name} probe is not chosen (it lacks {', '.join(missing)}): add {name} to "
                f"extra_probes=[...], or choose a sweep that does not set its settings")


def _probes(cfg, sizes):
    from . import probes

    check_extra_nodes(cfg.get("extra_probes"))
    return probes.check(cfg.probe, cfg.get("extra_probes"), sizes["dataset"])


def _device(cfg, sizes):
    from .backend import check_device

    return check_device(str(cfg.device))


def _logger(cfg, sizes):
    from . import tracker

    return tracker.check(cfg.logger)


# (check name, the config nodes its result depends on, the check): each part's check, in the
# order ``check_job`` runs them; a check's result is kept by name (the dataset's: the
# training set's size, which the probes' check reads). Run once per distinct value of its nodes.
VALIDATORS = (
    ("model", ("model",), _model),
    ("dataset", ("dataset", "data_dir"), _dataset),
    ("optim", ("optim",), _optim),
    ("probes", ("probe", "extra_probes", "dataset", "data_dir"), _probes),
    ("device", ("device",), _device),
    ("logger", ("logger",), _logger),
    ("run", None, lambda cfg, sizes: spec.check_run_options(cfg)),  # before memory reads its budget
    ("memory", ("dataset", "model", "probe", "extra_probes", "memory_budget_gib"),
     lambda cfg, sizes: check_memory(cfg)),
)


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        from .records.safe import DiskFull, is_disk_full  # the one wording for a full disk
        if is_disk_full(exc):
            raise DiskFull(path, exc) from None
        raise ConfusionError(f"cannot write records to {path} ({exc.strerror}): choose a writable "
                             "directory with records_root=PATH") from None


def _grid_params(hydra_cfg) -> dict[str, Any]:
    """The sweep file's grid (``hydra.sweeper.params``), resolved for the chosen scale."""
    try:
        return {k: v for k, v in (hydra_cfg.sweeper.params or {}).items()}
    except InterpolationKeyError as exc:  # a sweep without a column for this scale's grid
        raise ConfusionError(f"this sweep has no grid for the chosen scale ({exc.full_key}: "
                             f"{str(exc).splitlines()[0]}): choose a scale whose grid the sweep "
                             "defines (paper, quick, smoke; confirm for the *_fmnist MLP sweeps)") from None


def plan_sweep(hydra_cfg, overrides: list[str]) -> dict[str, int]:
    """{parameter: number of values} of the sweep: the sweep file's grid, where the command line
    replaces a parameter by one value (``model.depth=64``) or by a sweep of its own."""
    sizes = {k: _sweep_size(f"{k}={v}") for k, v in _grid_params(hydra_cfg).items()}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+")
        if is_sweep_override(o):
            sizes[key] = _sweep_size(o)
        elif key in sizes and "=" in o:
            sizes[key] = 1
    return sizes




def sweep_jobs(hydra_cfg, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, in Hydra's job order: the sweep file's grid and the command line's
    overrides (Hydra's own ``hydra.*`` ones left out) crossed as Hydra's basic sweeper crosses
    them (``BasicSweeper.split_arguments``: a key on both takes the command line's values in the
    grid's place; ``a=1,2``, ``range(...)``, ``choice(...)`` expanded)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    params = [f"{k}={v}" for k, v in _grid_params(hydra_cfg).items()]
    try:
        parsed = OverridesParser.create().parse_overrides([*params, *overrides])
        task = [o for o in parsed if not o.is_hydra_override()]
        return BasicSweeper.split_arguments(task, None)[0]
    except HydraException as exc:
        raise ConfusionError(f"bad sweep: {str(exc).splitlines()[0]}") from None


def _is_group_choice(override) -> bool:
    """Whether a parsed override chooses a config (``model=cnn``, ``+sweep=x``, ``extra_probes=[..]``,
    ``hydra/launcher=...``) rather than setting a value: such jobs are composed by Hydra."""
    key = override.key_or_group
    return key in GROUPS or "/" in key or override.package is not None


def validate_sweep(cfg, overrides: list[str], jobs: list[list[str]]) -> None:
    """Compose and check every job of a sweep before the first starts (``job_configs``), each by
    the check a single run gets (``validate_jobs``); the first bad job is one line naming its
    swept overrides, and a refused sweep writes nothing."""
    validate_jobs(job_configs(cfg, overrides, jobs), given_keys(overrides))


def _job_error(num: int, swept: list[str], exc: ConfusionError) -> ConfusionError:
    return ConfusionError(f"job {num} ({' '.join(swept) or 'no swept values'}): {exc}")


def job_configs(cfg, overrides: list[str], jobs: list[list[str]]) -> Iterator[tuple[int, list[str], Any]]:
    """(job number, its swept overrides, its config) of each of ``jobs`` (``sweep_jobs``), the
    config as Hydra composes it, cheaply: the config of the job's group choices is composed once
    per distinct choice (``cfg``, composed from ``overrides``, is the one of the command line's),
    then the job's value overrides are applied as Hydra applies them after composing
    (``_apply_overrides_to_config``): on a copy, or, when each sets an existing leaf to a plain
    value, in place, undone when the next job is asked for (use each config before that).
    A job that does not compose is one line naming it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    fixed = [o for o in overrides if not is_sweep_override(o)]  # in cfg already
    fixed_set = set(fixed)  # a key both fixed and swept takes the sweep's values (Hydra's last wins)
    parsed: dict[str, Any] = {}
    bases = {(): (copy.deepcopy(cfg), OmegaConf.to_container(cfg, resolve=False))}
    for num, job in enumerate(jobs):
        swept = [o for o in job if o not in fixed_set]
        for text in swept:
            if text not in parsed:
                parsed[text] = parser.parse_overrides([text])[0]
        choices = tuple(o for o in swept if _is_group_choice(parsed[o]))
        values = [parsed[o] for o in swept if o not in choices]
        try:
            if choices not in bases:
                base = run_config([*fixed, *choices])
                bases[choices] = base, OmegaConf.to_container(base, resolve=False)
        except ConfusionError as exc:
            raise _job_error(num, swept, exc) from None
        base, raw = bases[choices]
        olds = [_leaf(raw, o.key_or_group) for o in values]
        in_place = all(_plain_set(o) and old is not _NO_LEAF for o, old in zip(values, olds))
        job_cfg = base if in_place else copy.deepcopy(base)
        try:
            try:
                ConfigLoaderImpl._apply_overrides_to_config(values, job_cfg)
            except (HydraException, OmegaConfBaseException) as exc:
                try:
                    _check_keys([*fixed, *swept], *_hydra_api())  # a mistyped key: name it
                except ConfusionError as typo:
                    raise _job_error(num, swept, typo) from None
                cause = exc.__cause__ or exc
                untyped = isinstance(cause, ValidationError) and _untyped_check(
                    base, {o.key_or_group: o.value() for o in values})
                raise _job_error(num, swept, untyped or ConfusionError(
                    f"bad override: {str(cause).splitlines()[0]}")) from None
            yield num, swept, job_cfg
        finally:
            if in_place:
                for override, old in zip(values, olds):
                    OmegaConf.update(job_cfg, override.key_or_group, old, merge=True)


_NO_LEAF = object()


def _leaf(raw: dict, key: str) -> Any:
    """The value as written (interpolations unresolved) of the leaf ``key`` of a config container,
    or _NO_LEAF where there is no such leaf."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _NO_LEAF
        node = node[part]
    return _NO_LEAF if isinstance(node, (dict, list)) else node


def _plain_set(override) -> bool:
    """An override that sets a value (no +, ++ or ~) to a plain value (not a list or a dict)."""
    return not (override.is_add() or override.is_force_add() or override.is_delete()
                or isinstance(override.value(), (dict, list)))


def _hydra_api():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    return hydra_compose, initialize_config_module


@dataclass
class Launch:
    """What `confusion run` launches: the validated config (without Hydra's node), the overrides
    Hydra gets, and for a sweep its folder and grid ({parameter: number of values})."""

    cfg: Any
    overrides: list[str]
    multirun: bool
    sweep_dir: Path
    grid: dict[str, int]

    @property
    def total(self) -> int:
        return math.prod(self.grid.values())


def split_hydra(cfg):
    """(the config a run sees, Hydra's own node) of a config composed with ``compose``."""
    from omegaconf import open_dict

    hydra_cfg = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra_cfg


def run_config(overrides: list[str]):
    """The config a run of ``overrides`` sees: composed as `confusion run` composes it, without
    Hydra's own node (for library use, the bench and the tests)."""
    return split_hydra(compose(overrides))[0]


def prepare(overrides: list[str], flags: list[str], check_values: bool = True) -> Launch:
    """Compose and validate the config of a `confusion run` line (``flags``: Hydra's own), with a
    launch_id unique to this launch unless one is given; for a sweep, plan it and compose and
    validate every one of its jobs. ``check_values=False`` (Hydra only prints the config: --cfg,
    --info) composes it, its keys and group options checked, and leaves the values to the run:
    their checks build models and probes, which needs torch (seconds to import)."""
    if not any(o.startswith("launch_id=") for o in overrides):
        overrides = [*overrides, f"launch_id={datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"]
    cfg, hydra_cfg = split_hydra(compose(overrides))
    multirun = str(hydra_cfg.mode) in ("MULTIRUN", "RunMode.MULTIRUN") or any(
        f in ("-m", "--multirun") for f in flags) or any(map(is_sweep_override, overrides))
    if not check_values:
        return Launch(cfg, overrides, multirun, Path(str(hydra_cfg.sweep.dir)), {})
    if not multirun:
        validate(cfg, given_keys(overrides))
        return Launch(cfg, overrides, False, Path(str(hydra_cfg.sweep.dir)), {})
    grid = plan_sweep(hydra_cfg, overrides)
    if str(hydra_cfg.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        validate_sweep(cfg, overrides, sweep_jobs(hydra_cfg, overrides))  # every job, before any runs
    else:  # another sweeper chooses its own jobs: the command line's config is checked
        validate(cfg)
    return Launch(cfg, overrides, multirun, Path(str(hydra_cfg.sweep.dir)), grid)

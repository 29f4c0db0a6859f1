"""`confusion run|plot|data`: the command line. User mistakes end in one line and exit code 2."""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import sys
import tempfile
import warnings
from datetime import datetime
from importlib import resources
from pathlib import Path

from .errors import ConfusionError

GROUPS = ("dataset", "model", "optim", "probe", "scale", "sweep")
EXIT_USER_ERROR = 2


def options(group: str) -> list[str]:
    """The config names available in ``group`` (the YAML files of configs/GROUP)."""
    folder = resources.files("confusion_cli") / "configs" / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def usage() -> str:
    lines = [
        "confusion: gradient confusion and SGD (De, Sankararaman et al., ICML 2020)",
        "",
        "usage:",
        "  confusion run [OVERRIDES]          one run, e.g. confusion run model=mlp model.depth=8",
        "  confusion run +sweep=NAME [OVERRIDES]   a sweep, e.g. confusion run +sweep=depth scale=quick",
        "  confusion plot [RUNS_DIR] [--out DIR]  every figure the records under RUNS_DIR support",
        "  confusion data NAME [--from DIR]   fetch a dataset, or import archives you already have",
        "",
        "Overrides are Hydra's: key=value, group=option, hydra/launcher=joblib|submitit_slurm.",
    ]
    for group in GROUPS:
        lines.append(f"  {group + ':':9s} {', '.join(options(group))}")
    lines += ["", "Records: outputs/ (records_root=PATH or $CONFUSION_OUTPUTS); "
              "data: data/ (data_dir=PATH or $CONFUSION_DATA)."]
    return "\n".join(lines)


# -- run ------------------------------------------------------------------------------------
def _is_sweep_override(text: str) -> bool:
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

    plain = [o for o in overrides if not _is_sweep_override(o)]
    if any(o.startswith("+") and o.split("=", 1)[0].lstrip("+") not in GROUPS for o in overrides):
        _check_keys(overrides, hydra_compose, initialize_config_module)  # Hydra would add the key
    try:
        with initialize_config_module("confusion_cli.configs", version_base=None):
            return hydra_compose("config", overrides=plain, return_hydra_config=True)
    except HydraException as exc:
        _check_keys(overrides, hydra_compose, initialize_config_module)  # a mistyped key: name it
        raise ConfusionError(_explain_hydra_error(exc, overrides)) from None
    except OmegaConfBaseException as exc:
        raise ConfusionError(f"bad override: {str(exc).splitlines()[0]}") from None


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
    import difflib

    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    def key_of(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    choices = [o for o in overrides if key_of(o) in GROUPS and "=" in o and not _is_sweep_override(o)]
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
        head, _, leaf = key.rpartition(".")
        alias = ".".join(filter(None, [head, KEY_ALIASES[leaf]])) if leaf in KEY_ALIASES else ""
        nearest = [alias] if alias in known else difflib.get_close_matches(key, sorted(known), n=1,
                                                                           cutoff=0.5)
        hint = f": did you mean '{nearest[0]}'?" if nearest else " (see `confusion run --cfg job`)"
        raise ConfusionError(f"unknown config key '{key}' in '{override}'{hint}")


def _explain_hydra_error(exc: Exception, overrides: list[str]) -> str:
    text = str(exc).splitlines()[0]
    for group in GROUPS:
        for o in overrides:
            key, _, value = o.lstrip("+~").partition("=")
            if key == group and value not in options(group):
                return (f"unknown {group} '{value}': choose one of {', '.join(options(group))} "
                        f"({'+' if group == 'sweep' else ''}{group}=NAME)")
    return f"{text} (see `confusion --help`)"


def validate(cfg) -> None:
    """Check the values a run needs before anything is launched."""
    from . import data, models
    from .probes.confusion import check_bn_mode
    from .probes.pairs import check_group

    models.validate(cfg.model)
    if cfg.dataset.name not in data.DATASETS:
        raise ConfusionError(f"unknown dataset '{cfg.dataset.name}': choose one of "
                             f"{', '.join(data.DATASETS)}")
    data.ensure_available(cfg.dataset, cfg.data_dir)
    optim = cfg.optim
    if not (isinstance(optim.lr, (int, float)) and math.isfinite(optim.lr) and optim.lr > 0):
        raise ConfusionError(f"optim.lr must be a positive number, got {optim.lr}")
    for key in ("batch_size", "epochs"):
        if not isinstance(optim[key], int) or optim[key] < (1 if key == "batch_size" else 0):
            raise ConfusionError(f"optim.{key} must be a positive integer, got {optim[key]}")
    if cfg.probe.mode not in ("minibatch_pairs", "all_pairs", "per_example", "none"):
        raise ConfusionError(f"unknown probe.mode '{cfg.probe.mode}': choose minibatch_pairs, "
                             "all_pairs, per_example or none")
    for key in ("pairs", "batches", "examples", "batch_size", "every"):
        if not isinstance(cfg.probe[key], int) or cfg.probe[key] < 1:
            raise ConfusionError(f"probe.{key} must be a positive integer, got {cfg.probe[key]}")
    check_group(cfg.probe.get("group", 1))
    check_bn_mode(cfg.probe)
    _check_run_options(cfg)
    _check_writable(Path(cfg.records_root))


def _positive_int(value: object, allow_none: bool = False, minimum: int = 1) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_run_options(cfg) -> None:
    """The numeric, name and list options outside the groups validated above (one line each)."""
    from . import probes
    from .train import check_device

    if not _positive_int(cfg.seed, minimum=0):
        raise ConfusionError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if not _positive_int(cfg.threads, allow_none=True):
        raise ConfusionError(f"threads must be a positive integer or null (torch's default), "
                             f"got {cfg.threads!r}")
    if not _positive_int(cfg.eval_batch_size):
        raise ConfusionError(f"eval_batch_size must be a positive integer, got {cfg.eval_batch_size!r}")
    if not _positive_int(cfg.probe.get("chunk_size"), allow_none=True):
        raise ConfusionError(f"probe.chunk_size must be a positive integer or null (automatic), "
                             f"got {cfg.probe.chunk_size!r}")
    optim = cfg.optim
    for key in ("momentum", "weight_decay"):
        if not (isinstance(optim[key], (int, float)) and optim[key] >= 0):
            raise ConfusionError(f"optim.{key} must be a number >= 0, got {optim[key]!r}")
    if not (isinstance(optim.gamma, (int, float)) and optim.gamma > 0):
        raise ConfusionError(f"optim.gamma must be a positive number, got {optim.gamma!r}")
    if not all(_positive_int(m) for m in optim.milestones or []):
        raise ConfusionError(f"optim.milestones must be a list of positive epoch numbers, got "
                             f"{list(optim.milestones)!r}")
    if not _positive_int(optim.get("max_steps"), allow_none=True, minimum=0):
        raise ConfusionError(f"optim.max_steps must be a non-negative integer or null, "
                             f"got {optim.max_steps!r}")
    unknown = [name for name in cfg.extra_probes or [] if name not in probes.EXTRA_PROBES]
    if unknown:
        raise ConfusionError(f"unknown extra_probes {unknown}: choose from {', '.join(probes.EXTRA_PROBES)}")
    for key in ("examples", "top_k", "iters"):
        if not _positive_int(cfg.hessian[key]):
            raise ConfusionError(f"hessian.{key} must be a positive integer, got {cfg.hessian[key]!r}")
    check_device(str(cfg.device))
    for key, value in (("launch_id", cfg.launch_id), ("sweep.name", cfg.sweep.name)):
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", str(value)):
            raise ConfusionError(f"{key} must be a plain name (letters, digits, '.', '_', '-'; no "
                                 f"'/' or leading '.'), got {value!r}: it names a folder under records_root")


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfusionError(f"cannot write records to {path} ({exc.strerror}): choose a writable "
                             "directory with records_root=PATH") from None


def plan_sweep(hydra_cfg, overrides: list[str]) -> dict[str, int]:
    """{parameter: number of values} of the sweep: the sweep file's grid, where the command line
    replaces a parameter by one value (``model.depth=64``) or by a sweep of its own."""
    sizes = {k: _sweep_size(f"{k}={v}") for k, v in (hydra_cfg.sweeper.params or {}).items()}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+")
        if _is_sweep_override(o):
            sizes[key] = _sweep_size(o)
        elif key in sizes and "=" in o:
            sizes[key] = 1
    return sizes


HYDRA_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--info", "-i", "--shell-completion", "-sc")


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra's own flags such as `--cfg job` or `--multirun`) of a `confusion run` line."""
    overrides: list[str] = []
    flags: list[str] = []
    it = iter(args)
    for arg in it:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        if arg in HYDRA_FLAGS_WITH_VALUE:
            value = next(it, None)
            if value is not None:
                flags.append(value)
    return overrides, flags


def cmd_run(args: list[str]) -> int:
    from omegaconf import open_dict

    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return 0
    overrides, flags = split_hydra_flags(args)
    if any(f in ("-sc", "--shell-completion") for f in flags):  # Hydra's tab completion
        return _hydra_main([*overrides, *flags], prog="confusion")
    launch_id = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
    if not any(o.startswith("launch_id=") for o in overrides):
        overrides = [*overrides, f"launch_id={launch_id}"]
    cfg = compose(overrides)
    hydra_cfg = cfg.hydra
    sweep_dir = Path(str(hydra_cfg.sweep.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    if any(f in ("--cfg", "-c", "--info", "-i") for f in flags):  # Hydra prints, runs nothing
        return _hydra_main([*overrides, *flags])
    multirun = str(hydra_cfg.mode) in ("MULTIRUN", "RunMode.MULTIRUN") or any(
        f in ("-m", "--multirun") for f in flags) or any(map(_is_sweep_override, overrides))
    if multirun:
        sizes = plan_sweep(hydra_cfg, overrides)
        total = math.prod(sizes.values())
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from . import records

        records.write_json(sweep_dir / "sweep.json", {"total": total, "grid": sizes})
        grid = " x ".join(f"{k} {n}" for k, n in sizes.items())
        print(f"sweep {cfg.sweep.name}: {total} runs ({grid}) -> {sweep_dir}", flush=True)
        if not any(f in ("-m", "--multirun") for f in flags):
            flags = [*flags, "--multirun"]
    return _hydra_main([*overrides, *flags])


def _hydra_main(overrides: list[str], prog: str = "confusion run") -> int:
    import hydra

    from .run import task

    def single_run_task(cfg):
        try:
            return task(cfg)
        except ConfusionError as exc:  # one line, no traceback, for single runs too
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    single_run_task.__module__ = task.__module__  # Hydra finds configs/ relative to this module
    sys.argv = [prog, *overrides]
    hydra.main(config_path="configs", config_name="config", version_base=None)(single_run_task)()
    return 0


# -- plot and data --------------------------------------------------------------------------
def cmd_plot(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="confusion plot",
                                     description="Regenerate every figure the records support.")
    parser.add_argument("runs_dir", nargs="?", default=os.environ.get("CONFUSION_OUTPUTS", "outputs"))
    parser.add_argument("--out", default=None, help="figure directory (default RUNS_DIR/figures)")
    args = parser.parse_args(argv)
    from . import figures, records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", records.RecordWarning)
        frame = records.require_records(args.runs_dir)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    out = Path(args.out or Path(args.runs_dir) / "figures")
    written = figures.plot_all(frame, out)
    if not written:
        print(f"no figure could be drawn from the {frame['run_dir'].nunique()} runs under "
              f"{args.runs_dir}", file=sys.stderr)
        return 1
    print("figures written:")
    for path in written:
        print(f"  {path}")
    return 0


def cmd_data(argv: list[str]) -> int:
    from . import data

    parser = argparse.ArgumentParser(prog="confusion data",
                                     description="Fetch a dataset, or import archives you have.")
    parser.add_argument("name", choices=sorted(data.DATASETS))
    parser.add_argument("--from", dest="from_dir", default=None,
                        help="directory holding the dataset's original archives")
    parser.add_argument("--data-dir", default=os.environ.get("CONFUSION_DATA", "data"))
    args = parser.parse_args(argv)
    path = data.fetch(args.name, args.data_dir, args.from_dir)
    print(f"{args.name}: ready under {path}")
    return 0


def _strip_run_from_completion_line() -> None:
    """Hydra's completion reads the line being typed from COMP_LINE and takes every word after
    the program's name for an override: drop the ``run`` of ``confusion run ...`` (and move
    COMP_POINT with it) so that it completes the overrides that follow."""
    line = os.environ.get("COMP_LINE", "")
    match = re.match(r"(\S+)(\s+run)(\s|$)", line)
    if match:
        os.environ["COMP_LINE"] = line[:match.end(1)] + line[match.end(2):]
        point = int(os.environ.get("COMP_POINT", len(line)))
        os.environ["COMP_POINT"] = str(max(point - len(match.group(2)), match.end(1)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-sc", "--shell-completion"):  # the installed completion's queries
        _strip_run_from_completion_line()
        argv = ["run", *argv]
    commands = {"run": cmd_run, "plot": cmd_plot, "data": cmd_data}
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in commands:
        print(f"error: unknown command '{argv[0]}': use run, plot or data (confusion --help)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return commands[argv[0]](argv[1:])
    except ConfusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: complete runs are kept; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

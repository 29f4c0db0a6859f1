"""`confusion run|status|plot|claims|data|noise`: the command line. User mistakes end in one line and
exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

from . import paths, progress
from .config import GROUPS, options, prepare, with_config_dirs
from .errors import ConfusionError

EXIT_USER_ERROR = 2


def usage() -> str:
    lines = [
        "confusion: gradient confusion and SGD (De, Sankararaman et al., ICML 2020)",
        "",
        "usage:",
        "  confusion run [OVERRIDES]          one run, e.g. confusion run model=mlp model.depth=8",
        "  confusion run +sweep=NAME [OVERRIDES]   a sweep, e.g. confusion run +sweep=depth scale=quick",
        "  confusion run --config-dir DIR +sweep=NAME   your own sweep: DIR/sweep/NAME.yaml (README)",
        "  confusion status [RUNS_DIR] [--table]  per sweep: runs complete, running, interrupted,",
        "                                     failed, diverged, to do; ETA; failures by reason",
        "  confusion plot [RUNS_DIR] [--out DIR]  every figure the records under RUNS_DIR support",
        "  confusion claims [RUNS_DIR...] [--claims PATH]... [--out DIR]",
        "                                     decide each declared claim of the paper from the records",
        "  confusion data NAME [--from DIR]   fetch a dataset, or import archives you already have",
        "  confusion noise [OVERRIDES] [--repeats R] [--out DIR] [--target-se 0.02]",
        "                                     the confusion estimators' own noise at one run's final weights",
        "",
        "Overrides are Hydra's: key=value, group=option, hydra/launcher=joblib|submitit_slurm.",
    ]
    for group in GROUPS:
        lines.append(f"  {group + ':':13s} {', '.join(options(group))}")
    lines += ["", "Records: outputs/ (records_root=PATH or $CONFUSION_OUTPUTS); "
              f"data: {paths.default_data_dir()} (data_dir=PATH or $CONFUSION_DATA)."]
    return "\n".join(lines)


# -- run ------------------------------------------------------------------------------------
HYDRA_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--info", "-i", "--shell-completion", "-sc",
                          "--config-dir", "-cd")


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


def config_dirs_on_searchpath(overrides: list[str], flags: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, flags) with every ``--config-dir DIR`` / ``--config-dir=DIR`` (``-cd``) taken
    out of the flags and put on Hydra's search path as a ``hydra.searchpath`` override, which
    the composition checked before launch and Hydra's launcher read alike."""
    folders, rest = [], []
    it = iter(flags)
    for flag in it:
        name, equals, value = flag.partition("=")
        if name in ("--config-dir", "-cd"):
            folder = value if equals else next(it, None)
            if not folder:
                raise ConfusionError(f"{name} needs a folder: {name} DIR (it holds sweep/NAME.yaml, ...)")
            folders.append(folder)
        else:
            rest.append(flag)
    return (with_config_dirs(overrides, folders) if folders else overrides), rest


def cmd_run(args: list[str]) -> int:
    overrides, flags = split_hydra_flags(args)
    overrides, flags = config_dirs_on_searchpath(overrides, flags)
    if any(f in ("-h", "--help") for f in flags):
        print(run_help(overrides))
        return 0
    if any(f in ("-sc", "--shell-completion") for f in flags):  # Hydra's tab completion
        return _hydra_main([*overrides, *flags], prog="confusion")
    if any(f in ("--cfg", "-c", "--info", "-i") for f in flags):  # Hydra prints, runs nothing:
        launch = prepare(overrides, flags, check_values=False)  # keys checked, values when it runs
        return _hydra_main([*launch.overrides, *flags])
    launch = prepare(overrides, flags)
    from . import data, records

    if (paths.uses_legacy_data_dir() and not any(o.startswith("data_dir=") for o in overrides)
            and data.DATASETS[str(launch.cfg.dataset.name)].source == "torchvision"):
        print(paths.legacy_note(), file=sys.stderr, flush=True)

    root = Path(str(launch.cfg.records_root))
    if launch.multirun:  # a launch folder belongs to one sweep, checked before anything is written
        semantic = records.plan_overrides(launch.overrides)
        values, digest = sweep_identity(launch)
        again = ""
        if digest is not None and not any(o.startswith("launch_id=") for o in overrides):
            folder = records.previous_launch(root, launch.sweep_dir, semantic, digest)
            if folder is not None:  # a relaunch of the same sweep continues in its folder
                launch = dataclasses.replace(
                    launch, sweep_dir=folder,
                    overrides=[f"launch_id={folder.name}" if o.startswith("launch_id=") else o
                               for o in launch.overrides])
                again = f" (relaunched: {records.finished_count(folder)} of them finished)"
        records.check_sweep_folder(root, launch.sweep_dir, launch.total, launch.grid, semantic)
        records.write_plan(launch.sweep_dir, launch.total, launch.grid, semantic, root, values, digest)
        grid = " x ".join(f"{k} {n}" for k, n in launch.grid.items())
        print(f"sweep {launch.cfg.sweep.name}: {launch.total} runs ({grid}) -> {launch.sweep_dir}{again}",
              flush=True)
        if not any(f in ("-m", "--multirun") for f in flags):
            flags = [*flags, "--multirun"]
    else:  # a launch_id's folder belongs to one config
        records.check_run_folder(root, records.run_folder(root, str(launch.cfg.launch_id)),
                                 records.config_hash(launch.cfg))
    try:
        code = _hydra_main([*launch.overrides, *flags])
    finally:  # the live lines down, the sweep's last count left in the scrollback
        if (last := progress.close()) is not None:
            print(last, flush=True)
    if launch.multirun:
        print_sweep_end(launch.sweep_dir)
    return code


RUN_FLAGS_HELP = """== Flags ==
--cfg job|hydra|all   print the composed config and run nothing (keys and options checked)
--info                Hydra's information about the config's sources; runs nothing
--multirun, -m        a sweep even without a comma (one job per grid point)
--config-dir DIR      your own configs, in the groups above (DIR/sweep/NAME.yaml, ...)
-sc install=bash      tab completion: eval "$(confusion -sc install=bash)"

Run it again to resume: finished runs are skipped, interrupted ones continue (matched by config)."""


def run_help(overrides: list[str]) -> str:
    """`confusion run [OVERRIDES] --help`, as Hydra's help: the config groups with their options
    (the chosen one marked *), then the config these overrides compose, each key with its comment
    from the config files. Composes without running anything or importing torch."""
    from omegaconf import OmegaConf

    from .config import compose, split_hydra

    plain = [o for o in overrides if "=" in o]
    cfg, hydra_cfg = split_hydra(compose(plain))
    chosen = {str(k): (None if v is None else str(v)) for k, v in hydra_cfg.runtime.choices.items()}
    lines = ["confusion run [OVERRIDES]: one run; a sweep with +sweep=NAME or KEY=a,b,c (Hydra's syntax)",
             "", "== Configuration groups ==",
             "Compose your configuration from those groups (GROUP=OPTION; * the one chosen now)", ""]
    for group in GROUPS:
        how = {"sweep": "+sweep=NAME", "extra_probes": "extra_probes=[A,B]",
               "experiment": "experiment=NAME"}.get(group, f"{group}=NAME")
        marked = [f"{o}*" if chosen.get(group) == o else o for o in options(group, overrides)]
        lines.append(f"{group}: {', '.join(marked)}  ({how})")
    lines += ["", "== Config ==", "Override anything in the config (KEY=VALUE, e.g. optim.lr=0.1; "
              "a sweep: optim.lr=0.01,0.1)", ""]
    comments = config_comments(chosen, overrides)
    path: list[str] = []
    for line in OmegaConf.to_yaml(cfg, resolve=False).splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        key = line.strip().split(":", 1)[0]
        if line.strip().startswith("- ") or ":" not in line:
            lines.append(line)
            continue
        path = [*path[:depth], key]
        note = comments.get(".".join(path))
        if len(path) == 2 and path[0] == "probe":
            note = _probe_note(path[1], str(cfg.probe.mode), note)
        lines.append(f"{line:38s} # {note}" if note else line)
    return "\n".join([*lines, "", RUN_FLAGS_HELP])


def _probe_note(key: str, mode: str, note: str | None) -> str | None:
    """A probe key's --help comment, led by who reads it as the run spec declares it
    (``spec.probe_key_scope``: its modes, every mode, or the schedule of every probe), and marked
    when the chosen ``mode`` does not read it."""
    from .spec import probe_key_modes, probe_key_scope

    scope = probe_key_scope(key)
    if scope is None:
        return note
    modes = probe_key_modes(key)
    unread = f" (not read by probe={mode})" if modes is not None and mode not in modes else ""
    return f"[{scope}{unread}] {note or ''}".rstrip()


def config_comments(chosen: dict[str, str | None], overrides: list[str]) -> dict[str, str]:
    """{dotted key: its end-of-line comment} from the root config and the group options chosen
    (``# @package _global_`` files by their full keys, the others under their group)."""
    import re
    from importlib import resources

    from .config import search_dirs

    roots = [resources.files("confusion_cli") / "configs", *map(Path, search_dirs(overrides))]
    files = [("", "config")] + [(g, o) for g, o in chosen.items() if o and g in GROUPS]
    found: dict[str, str] = {}
    for group, option in files:
        for root in roots:
            path = root / group / f"{option}.yaml" if group else root / f"{option}.yaml"
            try:
                text = path.read_text()
            except OSError:
                continue
            package = "" if not group or "@package _global_" in text else group
            keys: list[str] = []
            for line in text.splitlines():
                match = re.match(r"^( *)([A-Za-z_][\w]*):(.*?)(?:\s#\s*(.*))?$", line)
                if not match:
                    continue
                depth = len(match.group(1)) // 2
                keys = [*keys[:depth], match.group(2)]
                if match.group(4):
                    found.setdefault(".".join([*([package] if package else []), *keys]), match.group(4))
            break
    from .spec import comments

    return comments(chosen) | found  # the run spec's comments, where the files have none


def sweep_identity(launch) -> tuple[dict[str, list[str]] | None, str | None]:
    """(the values each parameter of the sweep's grid takes, in its jobs' order; a digest of what
    its jobs compute), as Hydra's basic sweeper expands the sweep; (None, None) for another
    sweeper, which chooses its own jobs. The digest covers each job's overrides and the config of
    each distinct set of group choices (composed once each, as ``config.job_configs`` composes
    them: a job's config is that and its value overrides), the keys that say where a run happens
    left out: the same sweep with the same defaults has the same digest."""
    import hashlib
    import json

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from .config import _is_group_choice, compose, is_sweep_override, run_config, split_hydra, sweep_jobs
    from .records.sweep import WHERE_KEYS

    def what(override: str) -> bool:  # an override that says what a run computes
        key = override.split("=", 1)[0].lstrip("+~")
        return key not in WHERE_KEYS and not key.startswith("hydra")

    cfg, hydra_cfg = split_hydra(compose(launch.overrides))
    if not str(hydra_cfg.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None, None
    jobs = sweep_jobs(hydra_cfg, launch.overrides)
    values: dict[str, list[str]] = {key: [] for key in launch.grid}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            if key in values and value not in values[key]:
                values[key].append(value)
    parser = OverridesParser.create()
    fixed = [o for o in launch.overrides if not is_sweep_override(o)]
    parsed: dict[str, object] = {}
    bases: dict[tuple[str, ...], str] = {}
    for job in jobs:
        swept = [o for o in job if o not in fixed]
        for text in swept:
            if text not in parsed:
                parsed[text] = parser.parse_overrides([text])[0]
        choices = tuple(o for o in swept if _is_group_choice(parsed[o]))
        if choices not in bases:
            base = cfg if not choices else run_config([*fixed, *choices])
            raw = OmegaConf.to_container(base, resolve=False)
            bases[choices] = json.dumps({k: v for k, v in raw.items() if k not in WHERE_KEYS},
                                        sort_keys=True, default=str)
    text = json.dumps([sorted(bases.items()), [[o for o in job if what(o)] for job in jobs]])
    return values, hashlib.sha256(text.encode()).hexdigest()[:32]


def print_sweep_end(sweep_dir: Path) -> None:
    """The results table of a sweep that has ended, and the command that draws its figures."""
    from .status import sweep_end

    try:
        text = sweep_end(sweep_dir)
    except Exception as exc:  # noqa: BLE001 - the runs are recorded; only the summary is lost
        text = (f"(no results table: {type(exc).__name__}: {exc}; "
                f"`confusion status {sweep_dir} --table` prints it)")
    print(text, flush=True)


def _hydra_main(overrides: list[str], prog: str = "confusion run") -> int:
    import hydra

    from .spec import register

    register()  # the run spec's dataclasses, which the config files extend

    def single_run_task(cfg):
        from confusion_cli.run import task  # torch and the rest: only once a run starts

        try:
            return task(cfg)
        except ConfusionError as exc:  # one line, no traceback, for single runs too
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    single_run_task.__module__ = "confusion_cli.run"  # Hydra finds configs/ relative to this module
    sys.argv = [prog, *overrides]
    hydra.main(config_path="configs", config_name="config", version_base=None)(single_run_task)()
    return 0


# -- status, plot and data ------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (a ConfusionError), the usage left to --help."""

    def error(self, message: str):
        raise ConfusionError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def cmd_status(argv: list[str]) -> int:
    parser = Parser(prog="confusion status",
                    description="Where the runs under RUNS_DIR stand: per sweep launch and for the "
                                "single runs, runs complete / running / interrupted (process gone) / "
                                "failed / diverged / to do, the sweep's ETA, failures by reason.")
    parser.add_argument("runs_dir", nargs="?", default=os.environ.get("CONFUSION_OUTPUTS", "outputs"),
                        help="records directory (default $CONFUSION_OUTPUTS, else outputs)")
    parser.add_argument("--table", action="store_true",
                        help="also each sweep's results at every architecture's selected LR "
                             "(mean ± std over seeds)")
    args = parser.parse_args(argv)
    from .status import report

    with record_warnings_as_lines():
        text = report(args.runs_dir, table=args.table)
    print(text)
    return 0


@contextmanager
def record_warnings_as_lines():
    """While inside: each RecordWarning (a record skipped, and why) printed once as one line on
    stderr, 'warning: ...'; other warnings shown as before."""
    from .records import RecordWarning

    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RecordWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, RecordWarning):
                return shown(message, category, filename, lineno, file, line)
            text = str(message).strip()
            text = f"warning: {text.splitlines()[0] if text else category.__name__}"
            if text not in seen:
                seen.add(text)
                print(text, file=sys.stderr, flush=True)
            return None

        warnings.showwarning = show
        yield


def cmd_plot(argv: list[str]) -> int:
    parser = Parser(prog="confusion plot",
                                     description="Regenerate every figure the records support.")
    parser.add_argument("runs_dir", nargs="?", default=os.environ.get("CONFUSION_OUTPUTS", "outputs"))
    parser.add_argument("--out", default=None, help="figure directory (default RUNS_DIR/figures)")
    args = parser.parse_args(argv)
    from . import figures, records

    with record_warnings_as_lines():
        frame = records.require_records(args.runs_dir)
        out = Path(args.out or Path(args.runs_dir) / "figures")
        if args.out is None:  # made and entered without following a link planted at its name
            records.make_dir(out, args.runs_dir)
        written = figures.plot_all(frame, out)
    if not written:
        print(f"no figure could be drawn from the {frame['run_dir'].nunique()} runs under "
              f"{args.runs_dir}", file=sys.stderr)
        return 1
    print("figures written:")
    for path in written:
        print(f"  {path}")
    return 0


def cmd_claims(argv: list[str]) -> int:
    parser = Parser(prog="confusion claims",
                    description="Decide each declared claim of the paper from the run records.")
    parser.add_argument("runs_dir", nargs="*", metavar="RUNS_DIR",
                        default=[os.environ.get("CONFUSION_OUTPUTS", "outputs")],
                        help="records directories, one or more (default outputs)")
    parser.add_argument("--claims", action="append", metavar="PATH",
                        help="a claim file or a folder of them, repeatable (default: the claims "
                             "shipped in confusion_cli/configs/claims)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where claims.md and claims.csv go (default: the first RUNS_DIR/claims)")
    args = parser.parse_args(argv)
    from . import claims, records

    declared = claims.load_claims(args.claims)  # a bad claim file fails before any record is read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", records.RecordWarning)
        warnings.simplefilter("always", claims.ClaimWarning)
        table = claims.decide(claims.read_records(args.runs_dir), declared)
    for w in caught:
        prefix = "" if issubclass(w.category, claims.ClaimWarning) else "warning: "
        print(f"{prefix}{w.message}", file=sys.stderr)
    if table.empty:
        print(f"no claim could be decided from the records under {', '.join(args.runs_dir)}",
              file=sys.stderr)
        return 1
    print(claims.markdown_table(table))
    out = Path(args.out or Path(args.runs_dir[0]) / "claims")
    written = claims.write_report(table, declared, args.runs_dir, out)
    print(f"written: {', '.join(map(str, written))}", file=sys.stderr)
    return 0


def cmd_data(argv: list[str]) -> int:
    from . import data

    parser = Parser(prog="confusion data",
                                     description="Fetch a dataset, or import archives you have.")
    parser.add_argument("name", choices=sorted(data.DATASETS))
    parser.add_argument("--from", dest="from_dir", default=None,
                        help="directory holding the dataset's original archives")
    parser.add_argument("--data-dir", default=None,
                        help=f"where datasets live (default $CONFUSION_DATA, else {paths.cache_data_dir()})")
    args = parser.parse_args(argv)
    if args.data_dir is None and paths.uses_legacy_data_dir():
        print(paths.legacy_note(), file=sys.stderr)
    data_dir = Path(args.data_dir or paths.default_data_dir())
    path = data.fetch(args.name, data_dir, args.from_dir)
    if data.DATASETS[args.name].source != "torchvision":
        return 0
    print(f"{args.name}: ready under {Path(path).absolute()}")
    if args.data_dir is not None and data_dir.absolute() != Path(paths.default_data_dir()).absolute():
        print(f"runs read it with data_dir={data_dir.absolute()} (or CONFUSION_DATA={data_dir.absolute()})")
    return 0


def cmd_noise(argv: list[str]) -> int:
    from . import noise

    parser = Parser(prog="confusion noise",
                    description="Train one run's config (no records), then measure, at its final "
                                "weights, the standard error of each confusion estimator.")
    parser.add_argument("overrides", nargs="*", help="as for `confusion run`, one config")
    parser.add_argument("--repeats", type=int, default=10, help="replicates of all_pairs and per_example")
    parser.add_argument("--out", default=None, help="report folder (default RECORDS_ROOT/noise/LAUNCH_ID)")
    parser.add_argument("--target-se", type=float, default=0.02,
                        help="the standard error of a cosine statistic to find the pairs for")
    parser.add_argument("--pair-counts", default=",".join(map(str, noise.PAIR_COUNTS)),
                        help="P of the mini-batch pair estimator, comma-separated (none: skip)")
    parser.add_argument("--pool-pairs", type=int, default=2000,
                        help="independent mini-batch pairs drawn once and cut into chunks of P")
    parser.add_argument("--batches", default=None, help="K of all_pairs, comma-separated "
                        "(default probe.batches; none: skip)")
    parser.add_argument("--examples", default=None, help="B of per_example, comma-separated "
                        "(default probe.examples; none: skip)")
    args = parser.parse_intermixed_args(argv)
    folder, text = noise.main(args.overrides, repeats=args.repeats, out=args.out,
                              target_se=args.target_se, pair_counts=args.pair_counts,
                              pool_pairs=args.pool_pairs, batches=args.batches,
                              examples=args.examples,
                              progress=lambda line: print(f"noise: {line}", file=sys.stderr, flush=True))
    print(text, end="")
    print(f"written: {folder}/noise.csv, noise.md, replicates.csv, config.yaml")
    return 0


# -- tab completion -------------------------------------------------------------------------
COMMANDS = ("run", "status", "plot", "claims", "data", "noise")
# Each command's options as its --help lists them (tests/test_cli.py holds the two together);
# those taking a value are followed by it, which is left to the shell (file names).
COMMAND_FLAGS = {
    "run": ("--help", "--cfg", "--info", "--multirun", "--config-dir"),
    "status": ("--help", "--table"),
    "plot": ("--help", "--out"),
    "claims": ("--help", "--claims", "--out"),
    "data": ("--help", "--from", "--data-dir"),
    "noise": ("--help", "--repeats", "--out", "--target-se", "--pair-counts", "--pool-pairs",
              "--batches", "--examples"),
}
FLAGS_WITH_VALUE = ("--out", "--claims", "--from", "--data-dir", "--repeats", "--target-se",
                    "--pair-counts", "--pool-pairs", "--batches", "--examples", "--config-dir",
                    "--cfg", "-c", "--info", "-i")


def completions(line: str) -> list[str] | None:
    """The words to offer where the `confusion` command line ``line`` (up to the cursor) ends:
    the commands after `confusion`, each command's options and arguments after it; None where
    the word is an override of `confusion run` or `confusion noise`, for Hydra's completion. An
    empty list leaves the shell to complete file names (RUNS_DIR, --out DIR)."""
    words = line.split()
    typing = "" if not line or line[-1].isspace() else words.pop()
    before = words[1:]  # the words after the program's name, the one being typed left out
    if not before:
        return [c for c in COMMANDS if c.startswith(typing)]
    command, args = before[0], before[1:]
    if command not in COMMANDS:
        return []
    if typing.startswith("-"):
        return [f for f in COMMAND_FLAGS[command] if f.startswith(typing.split("=")[0])]
    if args and args[-1] in ("--cfg", "-c"):
        return [part for part in ("job", "hydra", "all") if part.startswith(typing)]
    if args and args[-1] in FLAGS_WITH_VALUE:
        return []  # the option's value: a folder, a file or a number
    if command in ("run", "noise"):
        return None
    positional = [a for i, a in enumerate(args) if not a.startswith("-")
                  and not (i and args[i - 1] in FLAGS_WITH_VALUE)]
    if command == "data" and not positional:
        return [name for name in options("dataset") if name.startswith(typing)]
    return []


def _complete() -> int:
    """Answer the shell's completion query (``confusion -sc query=bash`` with COMP_LINE and
    COMP_POINT set by the installed completion): the choices on stdout, never an error."""
    try:
        line = os.environ.get("COMP_LINE", "")
        point = os.environ.get("COMP_POINT", "")
        line = line[:int(point)] if point.isdigit() else line
        choices = completions(line)
        if choices is None:
            choices = _hydra_completions(line)
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than an error
        choices = []
    print(" ".join(choices))
    return 0


def _hydra_completions(line: str) -> list[str]:
    """Hydra's completion of the overrides of a `confusion run|noise ...` line. It takes every
    word after the program's name for an override: the command's name, its flags and their
    values are left out of the line it reads (COMP_LINE); its errors are swallowed."""
    program, _, *args = line.split()
    overrides = [a for i, a in enumerate(args) if not a.startswith("-")
                 and not (i and args[i - 1] in FLAGS_WITH_VALUE)]
    os.environ["COMP_LINE"] = " ".join([program, *overrides]) + (" " if line[-1].isspace() else "")
    os.environ["COMP_POINT"] = str(len(os.environ["COMP_LINE"]))
    buffer = io.StringIO()
    try:
        with redirect_stdout(buffer), redirect_stderr(io.StringIO()):
            _hydra_main(["-sc", "query=bash"], prog="confusion")
    except SystemExit:  # Hydra's way to end on an error
        return []
    return buffer.getvalue().split()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-sc", "--shell-completion"):  # the installed completion's queries
        if any(a.startswith("query=") for a in argv[1:]):
            return _complete()
        argv = ["run", *argv]  # install=bash, uninstall=bash: Hydra's
    commands = {"run": cmd_run, "status": cmd_status, "plot": cmd_plot, "claims": cmd_claims,
                "data": cmd_data, "noise": cmd_noise}
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in commands:
        print(f"error: unknown command '{argv[0]}': use run, status, plot, claims, data or noise "
              "(confusion --help)", file=sys.stderr)
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

"""The run spec: one dataclass per part of a run, registered as Hydra structured configs.

A run's config has parts: the run's own options (the root), ``dataset``, ``model``, ``optim``,
``probe`` (the confusion probe and the schedule every probe runs at) and ``extra_probes``. Each
option of a part is a dataclass here (``SCHEMAS``), registered in Hydra's ConfigStore as
``GROUP/NAME_spec``, that the option's YAML file extends (``defaults: [NAME_spec, _self_]``):

- every default is declared once, here; a YAML file holds only what makes its option differ
  (``probe/per_example.yaml``: ``mode`` and ``bn_mode``), the scales and sweeps their values;
- Hydra checks every composed config against its dataclass, each job of a sweep included: an
  unknown key, or a value of the wrong type for an integer or string field
  (``model.depth=1.5``), is refused where it is composed, and the part's own check names the fix
  (``invalid``). Floats and booleans are ``Any``: OmegaConf would turn an override's ``1`` into
  ``1.0`` (a different config hash for every record written with it) and read ``no`` or ``1``
  as a boolean; their part's check refuses anything but numbers and true/false;
- each part validates itself (``config.VALIDATORS``: the run options' check here, each group's
  in its own module: ``models.validate``, ``data.validate``, ``train.check_optim``, ``probes.check``);
- each field says whether it is semantic (``semantic``): whether it changes what a run computes,
  so it enters the config hash (``records.hashing``) and tells runs apart in figures and claims
  (``figures.select.config_columns``). The fields of dataset, model, optim, probe and every extra
  probe are; of the root, those marked ``semantic=False`` are not (where and how verbosely a run
  happens), and of ``sweep`` only its ``name``;
- each key of the probe node says which confusion modes read it (``probe_setting``: ``pairs``
  minibatch_pairs, ``examples`` per_example, the schedule every probe): `confusion run` refuses
  a key of a mode the launch does not run, set on its command line (``config.check_probe_keys``),
  and --help tags each key with its modes. The node stays flat (``probe.pairs=...``) and hashed
  as it was.

An extra probe's settings are declared by its one config file ``configs/extra_probes/NAME.yaml``
(a new probe is one file and one config; its ``check`` types them), so they have no dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfusionError, is_count, is_number

# the parts of a run's config besides the root's own options, in the order they are checked
PARTS = ("model", "dataset", "optim", "probe", "extra_probes")


def setting(default: Any = None, semantic: bool = True, factory: Any = None) -> Any:
    """A dataclass field with its default and whether it is semantic (enters the hash)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"semantic": semantic})
    return field(default=default, metadata={"semantic": semantic})


# -- the run's own options ----------------------------------------------------------------------
@dataclass
class RunOptions:
    """The root of a run's config: its own options, and the parts its groups fill."""

    seed: int = 0
    device: str = setting("auto", semantic=False)  # auto = cuda when present, else cpu
    threads: int | None = setting(None, semantic=False)  # CPU threads for torch (null = torch's default)
    # $CONFUSION_DATA, else ~/.cache/confusion/data (./data where it holds datasets)
    data_dir: str = setting("${confusion.data_dir:}", semantic=False)
    records_root: str = setting("${oc.env:CONFUSION_OUTPUTS,outputs}", semantic=False)
    launch_id: str = setting("${now:%Y-%m-%d_%H-%M-%S}", semantic=False)  # unique per `confusion run`
    progress: Any = setting(True, semantic=False)  # live lines on a terminal, else a line per epoch
    # none | tensorboard: train/ probe/ time/ scalars, pair-cosine histograms and hparams in
    # RUN_DIR/tensorboard (a sweep's runs: SWEEP_DIR/tensorboard/<swept values>)
    logger: str = setting("none", semantic=False)
    eval_batch_size: int = 1000
    # refuse a run estimated to hold more (data, model, probes); raise it on a big GPU
    memory_budget_gib: Any = setting(8, semantic=False)
    tf32: Any = True  # CUDA training matmuls/convs in TF32; probes always run with TF32 off
    channels_last: Any = False  # CUDA conv nets in channels_last memory format
    deterministic: Any = True  # cuDNN deterministic kernels (same records on the same device)
    compile: Any = False  # torch.compile the training forward pass
    # the sweep's name (semantic: each sweep's records are its own) and its grids (not semantic)
    sweep: dict[str, Any] = setting(factory=lambda: {"name": "single"})
    scale: Any = setting(None, semantic=False)  # the scale's name, grid column and seed list
    dataset: Any = None
    model: Any = None
    optim: Any = None
    probe: Any = None
    extra_probes: Any = setting(factory=dict)  # name -> settings of each chosen extra probe


# -- datasets -------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """A dataset by name (data.DATASETS); train_size / test_size: the first n of a fixed
    permutation (null = all)."""

    name: str = "digits"
    train_size: int | None = None
    test_size: int | None = None
    augment: Any = False  # cifar*: random crop (pad 4) + horizontal flip, batched on the device
    classes: int | None = None  # k: only the first k classes (labels 0 .. k-1), a k-way classifier
    subset_seed: int = 0  # the permutation train_size / test_size take the first n of


@dataclass
class CifarShaped(Dataset):
    """CIFAR-10's shapes and sizes, Gaussian images, random labels (timing without the dataset)."""

    name: str = "cifar_shaped"
    n_train: int = 50000
    n_test: int = 10000
    data_seed: int = 0


@dataclass
class Regression(Dataset):
    """Fig 1: N samples on the unit sphere in d dimensions (d=80 under-, 120 over-parameterised)."""

    name: str = "regression"
    n_train: int = 100
    n_test: int = 100
    dim: int = 80
    noise: Any = 0.1
    data_seed: int = 0


@dataclass
class Sphere(Dataset):
    """Synthetic data on the unit sphere with random labels: the paper's theory setting."""

    name: str = "sphere"
    n_train: int = 256
    n_test: int = 0
    dim: int = 64
    num_classes: int = 2
    data_seed: int = 0


# -- models ---------------------------------------------------------------------------------------
@dataclass
class MLP:
    """Fully connected net: depth hidden layers of width units."""

    name: str = "mlp"
    depth: int = 4
    width: int = 256
    activation: str = "relu"  # relu | tanh | linear
    bias: Any = True
    init: str = "gaussian"  # gaussian (N(0, 1/(kappa fan_in)), He for ReLU) | orthogonal | default
    init_gain: Any = 1.0  # gaussian: std times gain; orthogonal: times gain
    batch_norm: Any = False  # BatchNorm1d before each activation (pre-activation blocks, as CNN-beta-l)
    skip: Any = False  # identity skip around each hidden layer after the first


@dataclass
class CNN:
    """CNN-beta-l: WideResNet depth beta = 6n+4, width factor l; the paper's has no BN, no skips."""

    name: str = "cnn"
    depth: int = 16
    width: int = 2
    batch_norm: Any = False
    skip: Any = False
    init: str = "gaussian"  # He (Kaiming-normal, fan-in) for ReLU
    init_gain: Any = 1.0


@dataclass
class Linear:
    """Deep linear net: depth weight matrices, no biases, no activations."""

    name: str = "linear"
    depth: int = 8
    width: int = 64
    activation: str = "linear"
    init: str = "orthogonal"  # orthogonal | gaussian | balanced | default
    init_gain: Any = 1.0


@dataclass
class Linreg:
    """Linear regression: one linear layer, no bias (Fig 1)."""

    name: str = "linreg"
    bias: Any = False
    init: str = "gaussian"
    activation: str = "linear"
    init_gain: Any = 1.0


# -- optimizer ------------------------------------------------------------------------------------
@dataclass
class SGD:
    """Plain SGD as in the paper: no momentum, no weight decay, LR / gamma at the milestones."""

    lr: Any = 0.05
    batch_size: int = 128
    momentum: Any = 0.0
    weight_decay: Any = 0.0
    epochs: int = 10
    milestones: Any = setting(factory=list)  # epochs at which lr is times gamma; the paper: [80, 160] of 200
    gamma: Any = 0.1
    full_batch: Any = False  # true = gradient descent on the whole training set (one step per epoch)
    max_steps: int | None = None  # stop after this many SGD steps in all (null = run all epochs)
    # stop after the first epoch whose mean training loss is at or below this (null = never)
    stop_loss: Any = None
    # stop after the first epoch whose training accuracy is at or above this (1 = a fit: every
    # example of the epoch classified right before its step; null = never)
    stop_acc: Any = None
    # how the step is applied: auto (in-backward hooks for plain SGD, else step) | hooks | step | fused
    update: str = "auto"


# -- the confusion probe and the schedule ---------------------------------------------------------
SCHEDULE = "schedule"  # a probe key every probe of the run reads: when, and on what batches


def probe_setting(default: Any, *modes: str) -> Any:
    """A field of the probe node with the confusion modes that read it (``modes``: the registered
    probes of kind "confusion" by name; none given: every mode; ``SCHEDULE``: every probe of the
    run, extra probes too). ``probe_key_modes`` reads it; `confusion run` refuses a key of
    another mode set on its command line, and --help tags each key with its modes."""
    return field(default=default, metadata={"semantic": True, "modes": modes})


@dataclass
class Probe:
    """The confusion probe (``mode``, a registered probe of kind "confusion", or none) with its
    sizes, and the schedule every probe of the run (extra probes too) runs at. Each field declares
    the modes that read it (``probe_setting``)."""

    mode: str = "minibatch_pairs"  # minibatch_pairs | all_pairs | per_example | none
    pairs: int = probe_setting(100, "minibatch_pairs")  # pairs of independent mini-batches
    batches: int = probe_setting(20, "all_pairs")  # K mini-batches, all K(K-1)/2 pairs
    examples: int = probe_setting(128, "per_example")  # the (B, B) Gram matrix of B examples
    batch_size: int = probe_setting(128, "minibatch_pairs", "all_pairs")  # examples per mini-batch
    # bound on gradients held at once (null = automatic)
    chunk_size: int | None = probe_setting(None, "all_pairs", "per_example")
    # mini-batch gradients per torch.func vmap call (1 = one backward pass each)
    group: int = probe_setting(1, "minibatch_pairs", "all_pairs")
    # BatchNorm: train = batch statistics, the gradient SGD takes; eval = running statistics
    bn_mode: str = probe_setting("train")
    # when probes run: epoch | steps:N (every N SGD steps) | log:K (about K points per decade of steps)
    schedule: str = probe_setting("epoch", SCHEDULE)
    # with schedule=epoch: probe every N epochs (and at the last epoch)
    every: int = probe_setting(1, SCHEDULE)
    at_init: Any = probe_setting(True, SCHEDULE)  # and at initialization (epoch 0)
    augment: Any = probe_setting(False, SCHEDULE)  # probe on augmented batches when the dataset augments


def _declared_modes(key: str) -> tuple[str, ...] | None:
    """The ``modes`` the probe field ``key`` declares (``probe_setting``); None for no such field."""
    found = {f.name: f for f in dataclasses.fields(Probe)}.get(key)
    return found.metadata.get("modes") if found is not None else None


def probe_key_modes(key: str) -> tuple[str, ...] | None:
    """The confusion modes that read the probe key ``key`` (``pairs``: ("minibatch_pairs",)) as
    its field declares them; None for a key every mode reads, ``mode`` itself, a schedule key
    (every probe reads it) or no field of ``Probe``."""
    modes = _declared_modes(key)
    return modes if modes and SCHEDULE not in modes else None


def probe_key_scope(key: str) -> str | None:
    """Who reads the probe key ``key``, in words, from its declaration (what --help prints)."""
    modes = _declared_modes(key)
    if modes is None:
        return None
    if SCHEDULE in modes:
        return "schedule: every probe"
    return f"probe={' | '.join(modes)}" if modes else "every mode"


# {group: {schema name: dataclass}}: what ``register`` stores and ``records.migrate`` reads;
# "" is the root (config.yaml extends run_spec)
SCHEMAS: dict[str, dict[str, type]] = {
    "": {"run_spec": RunOptions},
    "dataset": {"spec": Dataset, "cifar_shaped_spec": CifarShaped, "regression_spec": Regression,
                "sphere_spec": Sphere},
    "model": {"mlp_spec": MLP, "cnn_spec": CNN, "linear_spec": Linear, "linreg_spec": Linreg},
    "optim": {"sgd_spec": SGD},
    "probe": {"spec": Probe},
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore (again: a test may have replaced one). Called
    before each composition (``config.compose``, `confusion run`); Hydra hands the store to the
    processes that compose a sweep's jobs (joblib, submitit)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(name=name, node=schema, group=group or None)


def schema_defaults(group: str, name: str) -> dict[str, Any] | None:
    """The defaults the schema ``name`` of ``group`` declares, as a plain dict (None: no such
    schema), without Hydra."""
    schema = SCHEMAS.get(group, {}).get(name)
    if schema is None:
        return None
    node = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(schema)}
    return {k: v for k, v in node.items() if not (group == "" and k in (*PARTS, "scale"))}


def comments(chosen: dict[str, str | None]) -> dict[str, str]:
    """{dotted key: the comment its field has here} for the root and the group options ``chosen``
    ({group: option}, as Hydra's runtime.choices): what `confusion run --help` prints beside
    each key (the config files' own comments come first)."""
    import inspect
    from importlib import resources

    import yaml

    def schema_of(group: str, option: str) -> type | None:
        """The schema an option's file extends, directly or through another file of its group."""
        try:
            text = (resources.files("confusion_cli") / "configs" / group / f"{option}.yaml").read_text()
        except OSError:
            return None
        for parent in (yaml.safe_load(text) or {}).get("defaults") or []:
            if isinstance(parent, str) and parent != "_self_":
                found = SCHEMAS[group].get(parent) or schema_of(group, parent)
                if found:
                    return found
        return None

    found: dict[str, str] = {}
    schemas = [("", RunOptions)] + [(g, schema_of(g, o)) for g, o in chosen.items() if g in SCHEMAS and o]
    for group, schema in schemas:
        for cls in (schema.__mro__ if schema else ()):
            if not dataclasses.is_dataclass(cls):
                continue
            above = None  # a comment on the line above a field is its comment too
            for line in inspect.getsource(cls).splitlines():
                match = re.match(r"^    (\w+): [^=]+=.*?(?:\s#\s*(.*))?$", line)
                if match and (match[2] or above):
                    found.setdefault(f"{group}.{match[1]}" if group else match[1], match[2] or above)
                above = line.strip()[2:] if line.startswith("    # ") else None
    return found


def option_defaults(group: str, name: Any) -> dict[str, Any]:
    """The defaults of the option of ``group`` (dataset or model) whose ``name`` is ``name``: its
    dataclass's (the group's plain one, ``Dataset``, for a name without its own), for code that
    is handed a partial config (library use, tests)."""
    for schema_name in SCHEMAS[group]:
        defaults = schema_defaults(group, schema_name) or {}
        if defaults.get("name") == name:
            return defaults
    return schema_defaults(group, "spec") or {} if "spec" in SCHEMAS[group] else {}


# -- semantic fields ------------------------------------------------------------------------------
def is_semantic(key: str) -> bool:
    """Whether the (dotted) config key ``key`` changes what a run computes: any key of a part, the
    root's fields but those marked semantic=False, ``sweep.name`` (not the sweep's grids), not
    ``scale.*``. A key that is no field of the spec (a metric column) is not."""
    top = key.split(".", 1)[0]
    if top in PARTS:
        return True
    if top == "sweep":
        return key == "sweep.name"
    found = {f.name: f for f in dataclasses.fields(RunOptions)}.get(top)
    return found is not None and "." not in key and found.metadata.get("semantic", True)


def non_semantic_root_keys() -> tuple[str, ...]:
    """The root's fields marked semantic=False (scale among them)."""
    return tuple(f.name for f in dataclasses.fields(RunOptions) if not f.metadata.get("semantic", True))


# -- each part validates itself -------------------------------------------------------------------
SEED_LIMIT = 1 << 63  # torch.manual_seed takes a seed in [0, 2^63)

# The keys that are booleans: true or false only (YAML's 'no', 'off', 1 or a string would be
# taken as truthy or falsy by the code that reads them).
FLAGS = ("model.batch_norm", "model.skip", "model.bias", "optim.full_batch", "probe.at_init",
         "probe.augment", "dataset.augment", "progress", "tf32", "channels_last", "deterministic",
         "compile")


def check_resolves(cfg) -> None:
    """Every interpolation of the config resolves (``optim.lr=${nosuch}`` is one line)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        where = getattr(exc, "full_key", None)
        raise ConfusionError(f"{where or 'a value'} does not resolve: "
                             f"{str(exc).splitlines()[0]}") from None


def check_flags(cfg) -> None:
    """The boolean keys (``FLAGS``) hold true or false, nothing else."""
    from omegaconf import OmegaConf

    for key in FLAGS:
        value = OmegaConf.select(cfg, key, default=False)
        if not isinstance(value, bool):
            raise ConfusionError(f"{key} must be true or false, got {value!r} (use true/false)")


def check_run_options(cfg) -> None:
    """The run's own options, outside the groups: seed, threads, evaluation chunk, names."""
    if not (is_count(cfg.seed, minimum=0) and cfg.seed < SEED_LIMIT):
        raise ConfusionError(f"seed must be a non-negative integer below 2^63, got {cfg.seed!r}")
    budget = cfg.memory_budget_gib
    if not (is_number(budget) and math.isfinite(budget) and budget > 0):
        raise ConfusionError(f"memory_budget_gib must be a positive number of GiB, got {budget!r}")
    for key in ("records_root", "data_dir"):
        if not isinstance(cfg.get(key), str) or not cfg.get(key).strip():
            raise ConfusionError(f"{key} must be a folder path, got {cfg.get(key)!r}")
    if not is_count(cfg.threads, allow_none=True):
        raise ConfusionError(f"threads must be a positive integer or null (torch's default), "
                             f"got {cfg.threads!r}")
    if not is_count(cfg.eval_batch_size):
        raise ConfusionError(f"eval_batch_size must be a positive integer, got {cfg.eval_batch_size!r}")
    for key, value in (("launch_id", cfg.launch_id), ("sweep.name", cfg.sweep.name)):
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", str(value)):
            raise ConfusionError(f"{key} must be a plain name (letters, digits, '.', '_', '-'; no "
                                 f"'/' or leading '.'), got {value!r}: it names a folder under records_root")

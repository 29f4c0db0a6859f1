"""Datasets as tensors resident on the device: registry, `load`, `fetch`, `augment_batch`.

Every dataset is held whole in (device) memory; training indexes it directly, so there is no
DataLoader anywhere. Image sets come back as float32 (N, C, H, W), normalised per channel;
synthetic sets as float32 (N, D) rows on the unit sphere.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from omegaconf import OmegaConf

from .errors import DataError, is_count
from .records.safe import UnsafeRecord, kind, open_file
from .records.writer import fsync_directory
from .spec import option_defaults

ASSETS = Path(__file__).parent / "assets"
DIGITS_TEST_SIZE = 297
DOWNLOAD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DatasetSpec:
    """What `--help`, error messages, `load` and `fetch` need to know about one dataset name."""

    description: str
    source: str  # "bundled" | "synthetic" | "torchvision"
    tv_class: str = ""  # torchvision.datasets class name
    folder: str = ""  # directory under data_dir in torchvision's layout
    archive: str = ""  # official archive name a user may already have (CIFAR)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    num_classes: int = 0
    sizes: tuple[int, int] = (0, 0)  # (train, test) of the full official set
    system_dirs: tuple[str, ...] = ()  # where a distribution package may have put the files
    shape: tuple[int, ...] = ()  # one input, (C, H, W) for images; () = (dataset.dim,)
    files: tuple[str, ...] = ()  # torchvision: the files under `folder` a complete copy has
    # bundled and synthetic sets: (dataset config) -> (x_train, y_train, x_test, y_test), all of it
    loader: Callable[[Any], tuple[torch.Tensor, ...]] | None = None
    task: str = "classification"  # or "regression" (float targets, a scalar output)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
_CIFAR100_FILES = ("train", "test", "meta")



@dataclass
class Data:
    """A whole dataset on one device. `y_*` are int64 labels, or float32 targets for regression."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    task: str
    augment: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------------------- config access


def _filled(cfg: Any) -> Any:
    """The dataset config ``cfg`` (a config node or a dict, maybe partial: library use) with every
    key it lacks at its default, which the run spec declares (``spec.option_defaults``)."""
    given = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create({**option_defaults("dataset", given.get("name")), **given})


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------------- load


def load(cfg: Any, data_dir: str | os.PathLike, device: torch.device | str = "cpu") -> Data:
    """Load the dataset `cfg.name` (see DATASETS) whole, subset it, and move it to `device` once.

    `train_size` / `test_size` (null = all) take the first n examples after a fixed
    permutation seeded by `subset_seed` (default 0), so subsets are class-mixed and reproducible.
    `classes` (null = all) keeps only the examples of the first k classes (labels 0 .. k-1)
    before that, and the model gets k outputs.
    """
    cfg = _filled(cfg)
    name = str(cfg.name)
    spec = _spec(name)
    if spec.loader is None:
        x_tr, y_tr, x_te, y_te = _load_torchvision(name, spec, cfg, Path(data_dir))
    else:
        x_tr, y_tr, x_te, y_te = _subset_split(cfg, *spec.loader(cfg))
    dev = torch.device(device)
    return Data(name=name, x_train=x_tr.to(dev), y_train=y_tr.to(dev),
                x_test=x_te.to(dev), y_test=y_te.to(dev), num_classes=num_classes(cfg), task=spec.task,
                augment=bool(cfg.augment) and name.startswith("cifar"))


def num_classes(cfg: Any) -> int:
    """Classes of the dataset config (sphere: its ``num_classes``; regression: 0, a scalar output;
    a labelled set restricted by ``classes``: that many)."""
    cfg = _filled(cfg)
    name = str(cfg.name)
    if name == "sphere":
        return int(cfg.num_classes)
    classes = cfg.classes
    return _spec(name).num_classes if classes is None else int(classes)


def _class_subset(cfg: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of the first `classes` classes (labels 0 .. classes-1); all when null."""
    classes = cfg.classes
    if classes is None:
        return x, y
    keep = torch.as_tensor(y) < int(classes)
    return x[keep], y[keep]


def _subset_index(n: int, size: Any, seed: int, what: str) -> torch.Tensor | None:
    """Indices of the first `size` of a permutation of range(n) seeded by `seed`; None = all."""
    if size is None:
        return None
    size = int(size)
    if not 0 <= size <= n:
        raise DataError(f"{what}={size} but only {n} examples are available; "
                        f"set {what} between 0 and {n}, or null for all")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size]


def _subset_split(cfg: Any, x_tr: torch.Tensor, y_tr: torch.Tensor,
                  x_te: torch.Tensor, y_te: torch.Tensor) -> tuple[torch.Tensor, ...]:
    seed = int(cfg.subset_seed)
    out = []
    for x, y, what in ((x_tr, y_tr, "train_size"), (x_te, y_te, "test_size")):
        x, y = _class_subset(cfg, x, y)
        idx = _subset_index(len(x), cfg[what], seed, what)
        out += [x, y] if idx is None else [x[idx], y[idx]]
    return tuple(out)


def _digits() -> tuple[torch.Tensor, ...]:
    """The bundled digits: shuffle with seed 0, the last 297 are test; scale /16, then
    standardise with the (scalar) mean and std of the 1500 training images."""
    with np.load(ASSETS / "digits.npz") as f:
        images, labels = f["images"], f["labels"]
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    n_train = len(x) - DIGITS_TEST_SIZE
    mean, std = x[:n_train].mean(), x[:n_train].std()
    x = (x - mean) / std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _unit_rows(n: int, dim: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, dim, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def _sphere(cfg: Any) -> tuple[torch.Tensor, ...]:
    """Rows uniform on the unit sphere in `dim` dimensions, labels uniform over `num_classes`."""
    n_train, n_test, dim, k = int(cfg.n_train), int(cfg.n_test), int(cfg.dim), int(cfg.num_classes)
    g = torch.Generator().manual_seed(int(cfg.data_seed))
    x = _unit_rows(n_train + n_test, dim, g)
    y = torch.randint(k, (n_train + n_test,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _cifar_shaped(cfg: Any) -> tuple[torch.Tensor, ...]:
    """Standard-normal (3, 32, 32) images with labels uniform over 10 classes: CIFAR-10's shapes
    and sizes, for timing on machines without the dataset."""
    n_train, n_test = int(cfg.n_train), int(cfg.n_test)
    g = torch.Generator().manual_seed(int(cfg.data_seed))
    x = torch.randn(n_train + n_test, 3, 32, 32, generator=g)
    y = torch.randint(10, (n_train + n_test,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _regression(cfg: Any) -> tuple[torch.Tensor, ...]:
    """Fig 1: x uniform on the unit sphere, w* ~ N(0, I_d), y = <w*, x> + noise * N(0, 1)."""
    n_train, n_test, dim, noise = int(cfg.n_train), int(cfg.n_test), int(cfg.dim), float(cfg.noise)
    g = torch.Generator().manual_seed(int(cfg.data_seed))
    x = _unit_rows(n_train + n_test, dim, g)
    w = torch.randn(dim, generator=g)
    y = x @ w + noise * torch.randn(n_train + n_test, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# Every dataset by name with its facts: what `load`, `sizes`, `fetch` and --help read.
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("scikit-learn's 8x8 digits, bundled (1500 train / 297 test), offline",
                          "bundled", num_classes=10, sizes=(1500, DIGITS_TEST_SIZE), shape=(1, 8, 8),
                          loader=lambda cfg: _digits()),
    "mnist": DatasetSpec("MNIST 28x28 digits (torchvision)", "torchvision", "MNIST", "MNIST/raw",
                         mean=(0.1307,), std=(0.3081,), num_classes=10, sizes=(60000, 10000),
                         shape=(1, 28, 28), files=_MNIST_FILES),
    "fashion_mnist": DatasetSpec("Fashion-MNIST 28x28 (torchvision)", "torchvision", "FashionMNIST",
                                 "FashionMNIST/raw", mean=(0.2860,), std=(0.3530,),
                                 num_classes=10, sizes=(60000, 10000),
                                 system_dirs=("/usr/share/datasets/fashion-mnist",),
                                 shape=(1, 28, 28), files=_MNIST_FILES),
    "cifar10": DatasetSpec("CIFAR-10 32x32 colour (torchvision)", "torchvision", "CIFAR10",
                           "cifar-10-batches-py", "cifar-10-python.tar.gz",
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                           num_classes=10, sizes=(50000, 10000), shape=(3, 32, 32),
                           files=_CIFAR10_FILES),
    "cifar100": DatasetSpec("CIFAR-100 32x32 colour (torchvision)", "torchvision", "CIFAR100",
                            "cifar-100-python", "cifar-100-python.tar.gz",
                            mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
                            num_classes=100, sizes=(50000, 10000), shape=(3, 32, 32),
                            files=_CIFAR100_FILES),
    "sphere": DatasetSpec("synthetic: Gaussian vectors on the unit sphere, random labels (theory)",
                          "synthetic", loader=lambda cfg: _sphere(cfg)),
    "regression": DatasetSpec("synthetic: linear regression on the unit sphere (Fig 1)",
                              "synthetic", loader=lambda cfg: _regression(cfg), task="regression"),
    "cifar_shaped": DatasetSpec("synthetic: Gaussian images of CIFAR-10's shape with random labels "
                                "(timing without the dataset: make gpu-check)", "synthetic",
                                num_classes=10, sizes=(50000, 10000), shape=(3, 32, 32),
                                loader=lambda cfg: _cifar_shaped(cfg)),
}


# ---------------------------------------------------------------------------- torchvision sets


def _layout_dir(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.folder


def _required_files(name: str, spec: DatasetSpec, root: Path) -> list[Path]:
    return [_layout_dir(spec, root) / f for f in spec.files]


def _missing_hint(name: str, spec: DatasetSpec, root: Path) -> str:
    return (f"{name} not found under {root}/ (torchvision layout {_layout_dir(spec, root)}); "
            f"run `confusion data {name}` with network, or `confusion data {name} --from DIR` "
            f"to import archives you have, or set data_dir=PATH")


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(spec: DatasetSpec, root: Path) -> None:
    """torchvision's own download (train and test); raises whatever it raises when offline."""
    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(tvd, spec.tv_class)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        for train in (True, False):
            cls(root=str(root), train=train, download=True)


def _read_raw(name: str, spec: DatasetSpec, root: Path) -> tuple[torch.Tensor, ...]:
    """uint8 images (N, C, H, W) and int64 labels of train and test, read by torchvision's
    dataset classes (whole arrays via `.data` / `.targets`). Files must exist."""
    cls = getattr(tvd, spec.tv_class)
    out: list[torch.Tensor] = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
            x = torch.as_tensor(np.asarray(ds.data))
            y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        except Exception as e:  # torchvision raises RuntimeError, pickle/IDX parse errors, ...
            raise DataError(f"{name} files under {_layout_dir(spec, root)} are corrupt or "
                            f"incomplete ({_corrupt_detail(name, spec, root, e)}); delete them and "
                            f"run `confusion data {name}` again") from e
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # CIFAR is stored NHWC
        if len(x) != len(y) or len(y) == 0:
            raise DataError(f"{name} {'train' if train else 'test'} files under "
                            f"{_layout_dir(spec, root)} hold {len(x)} images but {len(y)} labels; "
                            f"delete them and run `confusion data {name}` again")
        out += [x, y]
    return tuple(out)


def _corrupt_detail(name: str, spec: DatasetSpec, root: Path, err: Exception) -> str:
    """Name the file that fails torchvision's md5 check (CIFAR), else torchvision's message."""
    cls = getattr(tvd, spec.tv_class)
    if name.startswith("cifar"):
        files = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        for fname, md5 in files:
            path = _layout_dir(spec, root) / fname
            if not tvd.utils.check_integrity(str(path), md5):
                return f"{path} fails its md5 check"
    else:
        for path in _required_files(name, spec, root):
            try:
                tvd.mnist.read_sn3_pascalvincent_tensor(str(path), strict=True)
            except Exception:
                return f"{path} is not a valid IDX file"
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]



def sizes(cfg: Any) -> tuple[int, int, tuple[int, ...]]:
    """(training examples, test examples, shape of one input) of the dataset config, without
    loading anything."""
    cfg = _filled(cfg)
    full, shape = _full_sizes(cfg)
    train, test = (n if (size := cfg[key]) is None else min(int(size), n)
                   for n, key in zip(full, ("train_size", "test_size")))
    return train, test, shape


def _full_sizes(cfg: Any) -> tuple[tuple[int, int], tuple[int, ...]]:
    """((training, test) examples before any subset, the shape of one input), without loading,
    of the (filled) dataset config ``cfg``."""
    spec = DATASETS[str(cfg.name)]
    full = (int(cfg.n_train), int(cfg.n_test)) if spec.source == "synthetic" else spec.sizes
    shape = spec.shape or (int(cfg.dim),)
    classes = cfg.classes
    if classes is not None and spec.num_classes:  # balanced classes (exact for Fashion-MNIST, CIFAR)
        full = tuple(n * int(classes) // spec.num_classes for n in full)
    return full, shape


SYNTHETIC_MAX = 10_000_000  # examples or input dimensions of a generated dataset


def validate(cfg: Any, data_dir: str | os.PathLike) -> int:
    """Check the dataset config before a run (a known name, integer sizes within what the dataset
    has, files on disk) and return the number of training examples the run will have, without
    loading them."""
    cfg = _filled(cfg)
    name = str(cfg.name)
    spec = _spec(name)
    if spec.source == "synthetic":
        for key, least in (("n_train", 1), ("n_test", 0), ("dim", 1), ("num_classes", 2)):
            value = cfg.get(key)  # those this dataset has
            if value is not None and not (is_count(value, minimum=least) and value <= SYNTHETIC_MAX):
                raise DataError(f"dataset.{key} must be an integer in [{least}, {SYNTHETIC_MAX}], "
                                f"got {value!r}")
    classes = cfg.classes
    if classes is not None and not (spec.num_classes and is_count(classes, minimum=2)
                                    and classes <= spec.num_classes):
        raise DataError(f"dataset.classes must be an integer in [2, {spec.num_classes}] (the first "
                        f"k classes of {name}) or null for all, got {classes!r}"
                        if spec.num_classes else f"dataset.classes does not apply to {name}: set it to null")
    for n, key, least in zip(_full_sizes(cfg)[0], ("train_size", "test_size"), (1, 0)):
        size = cfg[key]
        if size is not None and not (is_count(size, minimum=least) and size <= n):
            raise DataError(f"dataset.{key} must be an integer in [{least}, {n}] ({name} has {n}) "
                            f"or null for all, got {size!r}")
    ensure_available(cfg, data_dir)
    return sizes(cfg)[0]


def ensure_available(cfg: Any, data_dir: str | os.PathLike) -> None:
    """Raise DataError (one line, with the fix) unless dataset `cfg.name` is on disk or downloadable.

    Cheap: checks that the files exist (downloading them when the network allows); `load`
    reads and verifies them.
    """
    name = str(_filled(cfg).name)
    spec = _spec(name)
    if spec.source != "torchvision":
        return
    root = Path(data_dir)
    if any(not p.is_file() for p in _required_files(name, spec, root)):
        try:
            _download(spec, root)
        except Exception as e:
            raise DataError(_missing_hint(name, spec, root)) from e


def _load_torchvision(name: str, spec: DatasetSpec, cfg: Any,
                      root: Path) -> tuple[torch.Tensor, ...]:
    ensure_available(cfg, root)
    x_tr, y_tr, x_te, y_te = _read_raw(name, spec, root)
    seed = int(cfg.subset_seed)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    out = []
    for x, y, what in ((x_tr, y_tr, "train_size"), (x_te, y_te, "test_size")):
        x, y = _class_subset(cfg, x, y)
        idx = _subset_index(len(x), cfg[what], seed, what)
        if idx is not None:  # subset before converting to float: less memory
            x, y = x[idx], y[idx]
        out += [(x.float().div_(255.0) - mean) / std, y]
    return tuple(out)


# ---------------------------------------------------------------------------- fetch


def fetch(name: str, data_dir: str | os.PathLike,
          from_dir: str | os.PathLike | None = None) -> Path:
    """Make dataset `name` ready under `data_dir` (torchvision's layout) and verify it.

    With `from_dir`, import files the user already has (MNIST-style `*-ubyte[.gz]` files;
    CIFAR's official `.tar.gz` archive or its extracted directory): verified in a staging folder,
    then installed (``_import``); without, download. Returns the dataset directory. Bundled and
    synthetic sets need nothing: returns `data_dir`.
    """
    spec = _spec(name)
    root = Path(data_dir)
    if spec.source != "torchvision":
        print(f"{name} is {spec.source}: nothing to fetch")
        return root
    if from_dir is not None:
        _import(name, spec, root, Path(from_dir))
        return _layout_dir(spec, root)
    try:
        _download(spec, root)
    except Exception as e:
        local = [Path(d) for d in spec.system_dirs if Path(d).is_dir()]
        if not local:
            raise DataError(f"could not download {name} ({type(e).__name__}); on a machine "
                            f"without network, run `confusion data {name} --from DIR` with "
                            f"DIR holding the official archives") from e
        _import(name, spec, root, local[0])
        return _layout_dir(spec, root)
    _verify(name, spec, root)
    return _layout_dir(spec, root)


def _verify(name: str, spec: DatasetSpec, root: Path) -> None:
    """The dataset under ``root`` reads, and holds its official numbers of images."""
    x_tr, _, x_te, _ = _read_raw(name, spec, root)
    if (len(x_tr), len(x_te)) != spec.sizes:
        raise DataError(f"{name} from the import has {len(x_tr)} train / {len(x_te)} test images, "
                        f"expected {spec.sizes[0]} / {spec.sizes[1]}; import complete archives "
                        f"with `confusion data {name} --from DIR`")


# The most an import may unpack, per dataset kind: the official files are 55 MB (MNIST-style,
# uncompressed) and 178 / 179 MB (CIFAR-10 / -100, extracted). A gzip or tar bomb is stopped
# when its unpacked bytes pass the cap, while it is being unpacked, before more is written.
IMPORT_CAP = {"idx": 128 << 20, "cifar": 512 << 20}
IMPORT_MEMBERS_CAP = 1000  # members of a CIFAR archive (the official ones hold 8 and 5)
STAGING_PREFIX = ".import-"
_CHUNK = 1 << 20


def _import_cap(name: str) -> int:
    return IMPORT_CAP["cifar" if name.startswith("cifar") else "idx"]


def _mib(n: int) -> str:
    return f"{n >> 20} MiB"


class _Budget:
    """The bytes an import may still write; ``take`` refuses (one line, naming the cap) the chunk
    that passes it."""

    def __init__(self, name: str, cap: int, slack: int = 0):
        self.name, self.cap, self.limit, self.used = name, cap, cap + slack, 0

    def take(self, n: int, source: Path) -> None:
        self.used += n
        if self.used > self.limit:
            raise DataError(f"{source} unpacks to more than {_mib(self.cap)}, the import cap for "
                            f"{self.name} (data.IMPORT_CAP): it is not the official file; stopped "
                            "while unpacking, nothing installed")


def _full_disk(exc: OSError, path: Path) -> DataError | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"disk full at {path} ({exc.strerror}): free some space, or import into "
                         "another folder with --data-dir PATH; nothing was installed")
    return None


def _copy_stream(fin: Any, dest: Path, budget: _Budget, source: Path) -> None:
    """Copy ``fin`` into the new file ``dest`` in chunks, within ``budget``."""
    with open(dest, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            budget.take(len(chunk), source)
            try:
                fout.write(chunk)
            except OSError as exc:
                raise (_full_disk(exc, dest) or exc) from None


def _open_source(path: Path) -> Any:
    """A binary file object of the regular file ``path`` of the source: never through a link,
    never blocking on a FIFO (one line for either)."""
    try:
        fd, _ = open_file(path, owner=False)
    except UnsafeRecord as exc:
        raise DataError(f"--from: {exc}; copy the real archives into a folder and import from "
                        "there") from None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _check_source(src: Path) -> None:
    """Refuse a source that is, or holds, anything but folders and regular files (a link, a FIFO,
    a device), in one line, before anything is written."""
    try:
        mode = os.lstat(src).st_mode
    except FileNotFoundError:
        raise DataError(f"--from {src} does not exist; point it at the directory holding "
                        "the archives") from None
    entries = [src]
    if stat.S_ISDIR(mode):
        entries += sorted(src.rglob("*"))
    for path in entries:
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DataError(f"--from {src}: {path} is {kind(mode)}; copy the real archives into "
                            "a folder and import from there")


def _remove_stale_staging(root: Path) -> None:
    """Remove the staging folders of imports that are no longer running (killed mid-import): a
    folder ``.import-PID-*`` whose process is gone on this host, or one without a pid."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # that import is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        path = root / name
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _import(name: str, spec: DatasetSpec, root: Path, src: Path) -> None:
    """Verify, then install: unpack into a fresh staging folder under ``root`` within the size cap
    (``IMPORT_CAP``), read the dataset there and check its numbers of images, and only then move
    each file into place, one rename per file. A failed import installs nothing, so good data is
    never replaced by bad.

    Links, FIFOs and devices are refused in ``src``, links among an archive's members too, and on
    the way to a destination under ``root``; a file at the destination, a planted link included,
    is replaced, never written through. The staging folder is removed in every case, and those of
    killed imports at the next import."""
    _check_source(src)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    except OSError as exc:
        raise (_full_disk(exc, root) or exc) from None
    try:
        budget = _Budget(name, _import_cap(name))
        if name.startswith("cifar"):
            _import_cifar(name, spec, staging, src, budget)
        else:
            _import_idx(name, spec, staging, src, budget)
        _verify(name, spec, staging)
        _install(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, root: Path) -> None:
    """Move every file of ``staging`` to the same place under ``root`` (rename: atomic, and a link
    at the destination is replaced, not followed), refusing a link on the way."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = root / path.relative_to(staging)
        folder = root
        for part in target.parent.relative_to(root).parts:
            folder = folder / part
            if folder.is_symlink():
                raise DataError(f"{folder} is a symbolic link; remove it (data is never written "
                                "through a link) and import again")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (_full_disk(exc, folder) or exc) from None
        os.replace(path, target)
        fsync_directory(folder)  # the rename survives a crash


def _idx_key(path: Path) -> str:
    """'train-images.idx3-ubyte.gz', 'train-images-idx3-ubyte' -> 'train-images-idx3-ubyte'."""
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    return stem.replace(".", "-")


def _import_idx(name: str, spec: DatasetSpec, root: Path, src: Path, budget: _Budget) -> None:
    """Copy the four IDX files found anywhere under `src` into <folder>/raw/, un-gzipped."""
    found: dict[str, Path] = {}
    for p in sorted(src.rglob("*")) if src.is_dir() else [src]:
        if p.is_file() and _idx_key(p) in _MNIST_FILES:
            found.setdefault(_idx_key(p), p)
    missing = [f for f in _MNIST_FILES if f not in found]
    if missing:
        raise DataError(f"--from {src} lacks {', '.join(f + '[.gz]' for f in missing)} for {name}; "
                        f"point it at the directory holding all four files")
    dest = _layout_dir(spec, root)  # root: the fresh staging folder
    dest.mkdir(parents=True, exist_ok=True)
    for key, p in found.items():
        try:
            with _open_source(p) as raw:
                gz = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw) if gz else raw as fin:
                    _copy_stream(fin, dest / key, budget, p)
        except (OSError, EOFError, zlib.error) as e:
            if isinstance(e, OSError) and (full := _full_disk(e, dest / key)):
                raise full from None
            raise DataError(f"cannot read {p} ({_one_line(e)}); replace it with an intact "
                            "copy") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _import_cifar(name: str, spec: DatasetSpec, root: Path, src: Path, budget: _Budget) -> None:
    """Extract the official archive, or copy an already-extracted directory, into `root`."""
    candidates = [src] if src.is_file() else [src / spec.archive, src / spec.folder, src]
    for c in candidates:
        if c.is_file():
            _extract(name, spec, root, c, budget)
            return
        if c.is_dir() and c.name == spec.folder:
            (root / spec.folder).mkdir()
            for p in sorted(c.rglob("*")):
                target = root / spec.folder / p.relative_to(c)
                if p.is_dir():
                    target.mkdir(exist_ok=True)
                    continue
                try:
                    with _open_source(p) as fin:
                        _copy_stream(fin, target, budget, p)
                except OSError as e:
                    raise (_full_disk(e, target) or e) from None
            return
    raise DataError(f"--from {src} holds neither {spec.archive} nor a {spec.folder}/ directory; "
                    f"point it at one of them or their parent")


class _Capped(io.RawIOBase):
    """A reader of ``f`` that refuses (``budget``) to hand out more bytes than the cap, so that a
    decompression bomb is stopped while it is being decompressed."""

    def __init__(self, f: Any, budget: _Budget, source: Path):
        self.f, self.budget, self.source = f, budget, source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.f.read(len(buffer))
        self.budget.take(len(data), self.source)
        buffer[:len(data)] = data
        return len(data)


def _extract(name: str, spec: DatasetSpec, root: Path, archive: Path, budget: _Budget) -> None:
    """Unpack the members under ``spec.folder/`` of the tar ``archive`` (gzip, bzip2, xz or plain)
    into ``root``, as a stream: every byte decompressed counts against ``budget`` (the archive's
    other members too), member by member; a link, a device or a FIFO among the members, or more
    than ``IMPORT_MEMBERS_CAP`` members, is one line."""
    written = _Budget(name, budget.cap)  # bytes unpacked into staging
    decompressed = _Budget(name, budget.cap, slack=1 << 20)  # all of the stream, headers too
    found = False
    try:
        with _open_source(archive) as raw:
            magic = raw.read(6)
            raw.seek(0)
            if magic[:2] == b"\x1f\x8b":
                stream: Any = gzip.GzipFile(fileobj=raw)
            elif magic[:3] == b"BZh":
                stream = bz2.BZ2File(raw)
            elif magic == b"\xfd7zXZ\x00":
                stream = lzma.LZMAFile(raw)
            else:
                stream = raw
            capped = io.BufferedReader(_Capped(stream, decompressed, archive), _CHUNK)
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for count, member in enumerate(tar, 1):
                    if count > IMPORT_MEMBERS_CAP:
                        raise DataError(f"{archive} holds more than {IMPORT_MEMBERS_CAP} members; "
                                        f"it is not the official {spec.archive}")
                    if not (member.name == spec.folder or member.name.startswith(spec.folder + "/")):
                        continue
                    _extract_member(tar, member, root, archive, written)
                    found = True
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        if isinstance(e, OSError) and (full := _full_disk(e, root)):
            raise full from None
        raise DataError(f"cannot extract {archive} ({_one_line(e)}): it is not a whole tar archive; "
                        f"replace it with an intact copy of {spec.archive}") from None
    if not found:
        raise DataError(f"{archive} has no {spec.folder}/ inside; is it the official "
                        f"{spec.archive}?")


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, archive: Path,
                    budget: _Budget) -> None:
    """One member of ``archive`` into ``root``: a folder or a regular file only, at a plain
    relative path, its declared size checked against ``budget`` before a byte is written."""
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        raise DataError(f"{archive}: the member {member.name!r} would land outside its folder")
    target = root.joinpath(*parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if not member.isreg():
        what = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "not a file"
        raise DataError(f"{archive}: the member {member.name} is {what}; links are never installed: "
                        "use the official archive")
    budget.take(member.size, archive)  # a bomb's declared size: refused before it is written
    budget.used -= member.size  # counted again as it is written
    target.parent.mkdir(parents=True, exist_ok=True)
    fin = tar.extractfile(member)
    assert fin is not None
    _copy_stream(fin, target, budget, archive)


# ---------------------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation, batched: a random HxW crop of each image zero-padded by
    `pad` on every side, then a horizontal flip with probability 1/2.

    Per example i with offsets (dy_i, dx_i) in [0, 2*pad] and flip bit f_i,
    out[i, c, r, s] = padded[i, c, dy_i + r, dx_i + (W-1-s if f_i else s)],
    done with two gathers. Randomness comes only from `generator` (on x's device).
    Note the zeros are in normalised space, i.e. padding with the per-channel mean colour.
    """
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=x.device).bool()
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = offsets[1, :, None] + torch.where(flip[:, None], w - 1 - cols, cols)  # (n, w)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))

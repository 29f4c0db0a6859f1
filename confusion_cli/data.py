"""Datasets as tensors resident on the device: registry, `load`, `fetch`, `augment_batch`.

Every dataset is held whole in (device) memory; training indexes it directly, so there is no
DataLoader anywhere. Image sets come back as float32 (N, C, H, W), normalised per channel;
synthetic sets as float32 (N, D) rows on the unit sphere.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from omegaconf import OmegaConf

from .errors import DataError, is_count
from .records.writer import fsync_directory

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


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
_CIFAR100_FILES = ("train", "test", "meta")

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("scikit-learn's 8x8 digits, bundled (1500 train / 297 test), offline",
                          "bundled", num_classes=10, sizes=(1500, DIGITS_TEST_SIZE)),
    "mnist": DatasetSpec("MNIST 28x28 digits (torchvision)", "torchvision", "MNIST", "MNIST/raw",
                         mean=(0.1307,), std=(0.3081,), num_classes=10, sizes=(60000, 10000)),
    "fashion_mnist": DatasetSpec("Fashion-MNIST 28x28 (torchvision)", "torchvision", "FashionMNIST",
                                 "FashionMNIST/raw", mean=(0.2860,), std=(0.3530,),
                                 num_classes=10, sizes=(60000, 10000),
                                 system_dirs=("/usr/share/datasets/fashion-mnist",)),
    "cifar10": DatasetSpec("CIFAR-10 32x32 colour (torchvision)", "torchvision", "CIFAR10",
                           "cifar-10-batches-py", "cifar-10-python.tar.gz",
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                           num_classes=10, sizes=(50000, 10000)),
    "cifar100": DatasetSpec("CIFAR-100 32x32 colour (torchvision)", "torchvision", "CIFAR100",
                            "cifar-100-python", "cifar-100-python.tar.gz",
                            mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
                            num_classes=100, sizes=(50000, 10000)),
    "sphere": DatasetSpec("synthetic: Gaussian vectors on the unit sphere, random labels (theory)",
                          "synthetic"),
    "regression": DatasetSpec("synthetic: linear regression on the unit sphere (Fig 1)",
                              "synthetic"),
    "cifar_shaped": DatasetSpec("synthetic: Gaussian images of CIFAR-10's shape with random labels "
                                "(timing without the dataset: make gpu-check)", "synthetic",
                                num_classes=10, sizes=(50000, 10000)),
}


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


def _opt(cfg: Any, key: str, default: Any) -> Any:
    """`cfg.key`, or `default` when the key is missing (None stays None: it means "all")."""
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------------- load


def load(cfg: Any, data_dir: str | os.PathLike, device: torch.device | str = "cpu") -> Data:
    """Load the dataset `cfg.name` (see DATASETS) whole, subset it, and move it to `device` once.

    `train_size` / `test_size` (null = all) take the first n examples after a fixed
    permutation seeded by `subset_seed` (default 0), so subsets are class-mixed and reproducible.
    """
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    name = str(_opt(cfg, "name", "digits"))
    spec = _spec(name)
    task = "regression" if name == "regression" else "classification"
    if spec.source == "torchvision":
        x_tr, y_tr, x_te, y_te = _load_torchvision(name, spec, cfg, Path(data_dir))
    elif name == "digits":
        x_tr, y_tr, x_te, y_te = _subset_split(cfg, *_digits())
    elif name == "sphere":
        x_tr, y_tr, x_te, y_te = _subset_split(cfg, *_sphere(cfg))
    elif name == "cifar_shaped":
        x_tr, y_tr, x_te, y_te = _subset_split(cfg, *_cifar_shaped(cfg))
    else:
        x_tr, y_tr, x_te, y_te = _subset_split(cfg, *_regression(cfg))
    dev = torch.device(device)
    return Data(name=name, x_train=x_tr.to(dev), y_train=y_tr.to(dev),
                x_test=x_te.to(dev), y_test=y_te.to(dev), num_classes=num_classes(cfg), task=task,
                augment=bool(_opt(cfg, "augment", False)) and name.startswith("cifar"))


def num_classes(cfg: Any) -> int:
    """Classes of the dataset config (sphere: its ``num_classes``; regression: 0, a scalar output)."""
    name = str(_opt(cfg, "name", "digits"))
    return int(_opt(cfg, "num_classes", 2)) if name == "sphere" else _spec(name).num_classes


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
    seed = int(_opt(cfg, "subset_seed", 0))
    out = []
    for x, y, what in ((x_tr, y_tr, "train_size"), (x_te, y_te, "test_size")):
        idx = _subset_index(len(x), _opt(cfg, what, None), seed, what)
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
    n_train, n_test = int(_opt(cfg, "n_train", 256)), int(_opt(cfg, "n_test", 0))
    dim, k = int(_opt(cfg, "dim", 64)), int(_opt(cfg, "num_classes", 2))
    g = torch.Generator().manual_seed(int(_opt(cfg, "data_seed", 0)))
    x = _unit_rows(n_train + n_test, dim, g)
    y = torch.randint(k, (n_train + n_test,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _cifar_shaped(cfg: Any) -> tuple[torch.Tensor, ...]:
    """Standard-normal (3, 32, 32) images with labels uniform over 10 classes: CIFAR-10's shapes
    and sizes, for timing on machines without the dataset."""
    n_train, n_test = int(_opt(cfg, "n_train", 50000)), int(_opt(cfg, "n_test", 10000))
    g = torch.Generator().manual_seed(int(_opt(cfg, "data_seed", 0)))
    x = torch.randn(n_train + n_test, 3, 32, 32, generator=g)
    y = torch.randint(10, (n_train + n_test,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _regression(cfg: Any) -> tuple[torch.Tensor, ...]:
    """Fig 1: x uniform on the unit sphere, w* ~ N(0, I_d), y = <w*, x> + noise * N(0, 1)."""
    n_train, n_test = int(_opt(cfg, "n_train", 100)), int(_opt(cfg, "n_test", 100))
    dim, noise = int(_opt(cfg, "dim", 80)), float(_opt(cfg, "noise", 0.0))
    g = torch.Generator().manual_seed(int(_opt(cfg, "data_seed", 0)))
    x = _unit_rows(n_train + n_test, dim, g)
    w = torch.randn(dim, generator=g)
    y = x @ w + noise * torch.randn(n_train + n_test, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---------------------------------------------------------------------------- torchvision sets


def _layout_dir(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.folder


def _required_files(name: str, spec: DatasetSpec, root: Path) -> list[Path]:
    files = {"cifar10": _CIFAR10_FILES, "cifar100": _CIFAR100_FILES}.get(name, _MNIST_FILES)
    return [_layout_dir(spec, root) / f for f in files]


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


INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "cifar_shaped": (3, 32, 32)}


def sizes(cfg: Any) -> tuple[int, int, tuple[int, ...]]:
    """(training examples, test examples, shape of one input) of the dataset config, without
    loading anything."""
    full, shape = _full_sizes(cfg)
    train, test = (n if (size := _opt(cfg, key, None)) is None else min(int(size), n)
                   for n, key in zip(full, ("train_size", "test_size")))
    return train, test, shape


def _full_sizes(cfg: Any) -> tuple[tuple[int, int], tuple[int, ...]]:
    """((training, test) examples before any subset, the shape of one input), without loading."""
    name = str(_opt(cfg, "name", "digits"))
    spec = DATASETS[name]
    if spec.source == "synthetic" and name not in INPUT_SHAPES:
        full = int(_opt(cfg, "n_train", 256)), int(_opt(cfg, "n_test", 0))
        shape: tuple[int, ...] = (int(_opt(cfg, "dim", 64)),)
    elif spec.source == "synthetic":
        full = int(_opt(cfg, "n_train", spec.sizes[0])), int(_opt(cfg, "n_test", spec.sizes[1]))
        shape = INPUT_SHAPES[name]
    else:
        full, shape = spec.sizes, INPUT_SHAPES[name]
    return full, shape


SYNTHETIC_MAX = 10_000_000  # examples or input dimensions of a generated dataset


def validate(cfg: Any, data_dir: str | os.PathLike) -> int:
    """Check the dataset config before a run (a known name, integer sizes within what the dataset
    has, files on disk) and return the number of training examples the run will have, without
    loading them."""
    name = str(_opt(cfg, "name", "digits"))
    spec = _spec(name)
    if spec.source == "synthetic":
        for key, least in (("n_train", 1), ("n_test", 0), ("dim", 1), ("num_classes", 2)):
            value = _opt(cfg, key, None)
            if value is not None and not (is_count(value, minimum=least) and value <= SYNTHETIC_MAX):
                raise DataError(f"dataset.{key} must be an integer in [{least}, {SYNTHETIC_MAX}], "
                                f"got {value!r}")
    for n, key, least in zip(_full_sizes(cfg)[0], ("train_size", "test_size"), (1, 0)):
        size = _opt(cfg, key, None)
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
    name = str(_opt(cfg, "name", "digits"))
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
    seed = int(_opt(cfg, "subset_seed", 0))
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    out = []
    for x, y, what in ((x_tr, y_tr, "train_size"), (x_te, y_te, "test_size")):
        idx = _subset_index(len(x), _opt(cfg, what, None), seed, what)
        if idx is not None:  # subset before converting to float: less memory
            x, y = x[idx], y[idx]
        out += [(x.float().div_(255.0) - mean) / std, y]
    return tuple(out)


# ---------------------------------------------------------------------------- fetch


def fetch(name: str, data_dir: str | os.PathLike,
          from_dir: str | os.PathLike | None = None) -> Path:
    """Make dataset `name` ready under `data_dir` (torchvision's layout) and verify it.

    With `from_dir`, import files the user already has (MNIST-style `*-ubyte[.gz]` files;
    CIFAR's official `.tar.gz` archive or its extracted directory); without, download.
    Returns the dataset directory. Bundled and synthetic sets need nothing: returns `data_dir`.
    """
    spec = _spec(name)
    root = Path(data_dir)
    if spec.source != "torchvision":
        print(f"{name} is {spec.source}: nothing to fetch")
        return root
    if from_dir is not None:
        _import(name, spec, root, Path(from_dir))
    else:
        try:
            _download(spec, root)
        except Exception as e:
            local = [Path(d) for d in spec.system_dirs if Path(d).is_dir()]
            if not local:
                raise DataError(f"could not download {name} ({type(e).__name__}); on a machine "
                                f"without network, run `confusion data {name} --from DIR` with "
                                f"DIR holding the official archives") from e
            _import(name, spec, root, local[0])
    x_tr, _, x_te, _ = _read_raw(name, spec, root)
    if (len(x_tr), len(x_te)) != spec.sizes:
        raise DataError(f"{name} under {_layout_dir(spec, root)} has {len(x_tr)} train / "
                        f"{len(x_te)} test images, expected {spec.sizes[0]} / {spec.sizes[1]}; "
                        f"import complete archives with `confusion data {name} --from DIR`")
    return _layout_dir(spec, root)


def _import(name: str, spec: DatasetSpec, root: Path, src: Path) -> None:
    """Import into a fresh staging folder under ``root``, then move each file into place.

    Links are refused on both sides: in ``src`` (a link could point anywhere) and on the way to a
    destination under ``root``; a file at the destination, a planted link included, is replaced,
    never written through. The staging folder, with whatever an error left in it (extracted
    archive members too), is removed in every case."""
    if not src.exists():
        raise DataError(f"--from {src} does not exist; point it at the directory holding "
                        f"the {name} archives")
    links = [p for p in [src, *(src.rglob("*") if src.is_dir() else [])] if p.is_symlink()]
    if links:
        raise DataError(f"--from {src}: {links[0]} is a symbolic link; copy the real archives "
                        "into a folder and import from there")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".import-"))
    try:
        if name.startswith("cifar"):
            _import_cifar(name, spec, staging, src)
        else:
            _import_idx(name, spec, staging, src)
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
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        fsync_directory(folder)  # the rename survives a crash


def _idx_key(path: Path) -> str:
    """'train-images.idx3-ubyte.gz', 'train-images-idx3-ubyte' -> 'train-images-idx3-ubyte'."""
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    return stem.replace(".", "-")


def _import_idx(name: str, spec: DatasetSpec, root: Path, src: Path) -> None:
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
            with (gzip.open(p) if _is_gzip(p) else open(p, "rb")) as fin, open(dest / key, "xb") as fout:
                shutil.copyfileobj(fin, fout)
        except (OSError, EOFError) as e:
            raise DataError(f"cannot read {p} ({e}); replace it with an intact copy") from e


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _import_cifar(name: str, spec: DatasetSpec, root: Path, src: Path) -> None:
    """Extract the official archive, or copy an already-extracted directory, into `root`."""
    candidates = [src] if src.is_file() else [src / spec.archive, src / spec.folder, src]
    for c in candidates:
        if c.is_file():
            _extract(name, spec, root, c)
            return
        if c.is_dir() and c.name == spec.folder:
            shutil.copytree(c, root / spec.folder, dirs_exist_ok=True)
            return
    raise DataError(f"--from {src} holds neither {spec.archive} nor a {spec.folder}/ directory; "
                    f"point it at one of them or their parent")


def _extract(name: str, spec: DatasetSpec, root: Path, archive: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.name == spec.folder or m.name.startswith(spec.folder + "/")]
            if not members:
                raise DataError(f"{archive} has no {spec.folder}/ inside; is it the official "
                                f"{spec.archive}?")
            root.mkdir(parents=True, exist_ok=True)
            tar.extractall(root, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive} ({type(e).__name__}: {e}); "
                        f"replace it with an intact copy of {spec.archive}") from e


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

"""Tiny datasets in the real on-disk formats (MNIST IDX, CIFAR pickles), for tests that must not download."""

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 20, 10
MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}




def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX format: magic 0x0000 08 ndim (2051 images, 2049 labels), big-endian dims, uint8 data."""
    magic = 0x0800 + arr.ndim
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def fake_mnist_arrays(seed=0, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx(folder: Path, arrays: dict, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        if gz:
            with gzip.open(folder / (fname + ".gz"), "wb") as f:
                f.write(idx_bytes(arr))
        else:
            (folder / fname).write_bytes(idx_bytes(arr))


def fake_cifar_arrays(k: int, seed=0, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 3072), dtype=np.uint8),
            rng.integers(0, k, n_train).tolist(),
            rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
            rng.integers(0, k, n_test).tolist())


def write_cifar(folder: Path, name: str, arrays) -> None:
    """CIFAR's python pickles: CIFAR-10 in 5 train batches + test_batch + batches.meta,
    CIFAR-100 as train/test/meta with fine_labels."""
    folder.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = arrays

    def dump(fname, obj):
        with open(folder / fname, "wb") as f:
            pickle.dump(obj, f)

    if name == "cifar10":
        for i, (xs, ys) in enumerate(zip(np.array_split(x_tr, 5),
                                         np.array_split(np.array(y_tr), 5), strict=True)):
            dump(f"data_batch_{i + 1}", {"data": xs, "labels": ys.tolist()})
        dump("test_batch", {"data": x_te, "labels": y_te})
        dump("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        dump("train", {"data": x_tr, "fine_labels": y_tr, "coarse_labels": y_tr})
        dump("test", {"data": x_te, "fine_labels": y_te, "coarse_labels": y_te})
        dump("meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                      "coarse_label_names": [f"c{i}" for i in range(20)]})


def write_dataset(data_dir: Path, name: str, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """A tiny `name` (mnist, fashion_mnist, cifar10, cifar100) in torchvision's layout under data_dir."""
    if name in MNIST_FOLDERS:
        folder = Path(data_dir) / MNIST_FOLDERS[name] / "raw"
        write_idx(folder, fake_mnist_arrays(n_train=n_train, n_test=n_test), gz=False)
    else:
        folder = Path(data_dir) / CIFAR_FOLDERS[name]
        k = 10 if name == "cifar10" else 100
        write_cifar(folder, name, fake_cifar_arrays(k, n_train=n_train, n_test=n_test))
    return folder


# The CLI in a fresh process, as a user runs it. With fake CIFAR files, only torchvision's md5
# check is relaxed (to "the file exists"); everything else is the real code path.
_SHIM = """
import sys
from pathlib import Path
if {patch_md5}:
    import torchvision.datasets.cifar as cifar
    cifar.check_integrity = lambda fpath, md5=None: Path(fpath).is_file()
from confusion_cli.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_command(args: list[str], cwd: Path, patch_md5: bool = False,
                env: dict | None = None) -> tuple[list[str], dict]:
    """argv and environment of `confusion ARGS` run in `cwd`, records and data under it."""
    environment = {**os.environ, "CONFUSION_OUTPUTS": str(Path(cwd) / "outputs"),
                   "CONFUSION_DATA": str(Path(cwd) / "data"), **(env or {})}
    return [sys.executable, "-c", _SHIM.format(patch_md5=patch_md5), *args], environment


def run_cli(args: list[str], cwd: Path, patch_md5: bool = False, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`confusion ARGS` in a subprocess in `cwd`; returns the completed process (text output)."""
    argv, environment = cli_command(args, cwd, patch_md5, env)
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    """`confusion ARGS` started in the background, in a process group of its own."""
    argv, environment = cli_command(args, cwd, **kwargs)
    return subprocess.Popen(argv, cwd=cwd, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def smoke_sweeps(root: Path, sweeps, extra=(), plot_args=(), patch_md5: bool = False,
                 expect_runs: int | None = None):
    """Each sweep of ``sweeps`` at scale=smoke through the real CLI into ROOT/outputs (ARGS
    ``extra`` appended), then `confusion plot outputs PLOT_ARGS`; (root, the records' frame).
    ``expect_runs``: each sweep's plan line must say that many runs."""
    from confusion_cli import records

    for name in sweeps:
        done = run_cli(["run", f"+sweep={name}", "scale=smoke", *extra], root, patch_md5=patch_md5)
        assert done.returncode == 0, done.stderr
        assert f"sweep {name}: {'' if expect_runs is None else f'{expect_runs} runs'}" in done.stdout
    plot = run_cli(["plot", "outputs", *plot_args], root)
    assert plot.returncode == 0, plot.stderr
    return root, records.load(root / "outputs")

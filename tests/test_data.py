"""confusion_cli.data through the real loading code, on tiny files in the real on-disk formats.

Nothing here downloads: `data._download` is replaced by a function that fails as offline.
"""

import dataclasses
import tarfile

import pytest
import torch
from fakes import N_TEST, N_TRAIN, fake_cifar_arrays, fake_mnist_arrays, write_cifar, write_idx

from confusion_cli import data
from confusion_cli.errors import DataError


@pytest.fixture
def tiny_sizes(monkeypatch):
    """`fetch` verifies the official sizes; make the tiny fakes count as complete."""
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        spec = dataclasses.replace(data.DATASETS[name], sizes=(N_TRAIN, N_TEST))
        monkeypatch.setitem(data.DATASETS, name, spec)


# ---------------------------------------------------------------------------- torchvision sets


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_load(tmp_path, name, folder):
    arrays = fake_mnist_arrays()
    write_idx(tmp_path / folder / "raw", arrays, gz=False)
    d = data.load({"name": name}, tmp_path)
    assert d.x_train.shape == (N_TRAIN, 1, 28, 28) and d.x_test.shape == (N_TEST, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert (d.num_classes, d.task, d.augment, d.input_shape) == (10, "classification", False,
                                                                  (1, 28, 28))
    mean, std = data.DATASETS[name].mean[0], data.DATASETS[name].std[0]
    raw = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float()
    torch.testing.assert_close(d.x_train[:, 0], (raw / 255 - mean) / std)
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_load(tmp_path, no_md5, name):
    k = 10 if name == "cifar10" else 100
    arrays = fake_cifar_arrays(k)
    write_cifar(tmp_path / data.DATASETS[name].folder, name, arrays)
    d = data.load({"name": name, "augment": True}, tmp_path)
    assert d.x_train.shape == (N_TRAIN, 3, 32, 32) and d.x_test.shape == (N_TEST, 3, 32, 32)
    assert d.num_classes == k and d.augment
    assert d.y_train.tolist() == arrays[1] and d.y_test.tolist() == arrays[3]
    spec = data.DATASETS[name]
    raw = torch.from_numpy(arrays[0]).float().view(N_TRAIN, 3, 32, 32) / 255
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    expect = (raw - mean) / std
    torch.testing.assert_close(d.x_train, expect)


def test_train_size_subset_is_fixed_and_class_mixed(tmp_path):
    arrays = fake_mnist_arrays()
    write_idx(tmp_path / "MNIST" / "raw", arrays, gz=False)
    full = data.load({"name": "mnist"}, tmp_path)
    a = data.load({"name": "mnist", "train_size": 7, "test_size": 3}, tmp_path)
    b = data.load({"name": "mnist", "train_size": 7, "test_size": 3}, tmp_path)
    c = data.load({"name": "mnist", "train_size": 7, "subset_seed": 1}, tmp_path)
    assert a.x_train.shape[0] == 7 and a.x_test.shape[0] == 3 and c.x_test.shape[0] == N_TEST
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_train, full.x_train[:7])  # permuted, not the first 7
    # every subset row is a row of the full set with its own label
    for x, y in zip(a.x_train, a.y_train, strict=True):
        i = int((full.x_train == x).flatten(1).all(1).nonzero())
        assert full.y_train[i] == y
    with pytest.raises(DataError, match="train_size=21"):
        data.load({"name": "mnist", "train_size": N_TRAIN + 1}, tmp_path)


@pytest.mark.parametrize("name,layout", [("mnist", "MNIST"), ("cifar10", "cifar-10-batches-py")])
def test_missing_files_give_the_hint(tmp_path, name, layout):
    with pytest.raises(DataError) as e:
        data.load({"name": name}, tmp_path / "data")
    msg = str(e.value)
    assert "\n" not in msg and layout in msg
    assert f"confusion data {name}" in msg and "--from DIR" in msg and "data_dir=" in msg


def test_corrupt_idx_names_the_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, fake_mnist_arrays(), gz=False)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as e:
        data.load({"name": "mnist"}, tmp_path)
    assert "\n" not in str(e.value)


def test_mismatched_idx_counts(tmp_path):
    arrays = fake_mnist_arrays()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:5]
    write_idx(tmp_path / "MNIST" / "raw", arrays, gz=False)
    with pytest.raises(DataError, match="20 images but 5 labels"):
        data.load({"name": "mnist"}, tmp_path)


def test_corrupt_cifar_pickle(tmp_path, no_md5):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, "cifar10", fake_cifar_arrays(10))
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="cifar-10-batches-py.*corrupt"):
        data.load({"name": "cifar10"}, tmp_path)


def test_cifar_md5_failure_names_the_file(tmp_path):
    """Without the md5 patch torchvision rejects the fakes; the message names the first file."""
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", fake_cifar_arrays(10))
    with pytest.raises(DataError, match="data_batch_1 fails its md5 check"):
        data.load({"name": "cifar10"}, tmp_path)


# ---------------------------------------------------------------------------- fetch


@pytest.mark.parametrize("gz", [True, False])
def test_fetch_idx_from_dir(tmp_path, tiny_sizes, gz):
    arrays = fake_mnist_arrays(seed=3)
    write_idx(tmp_path / "downloads" / "nested", arrays, gz=gz)
    out = data.fetch("fashion_mnist", tmp_path / "data", from_dir=tmp_path / "downloads")
    assert out == tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in out.iterdir()) == sorted(arrays)
    d = data.load({"name": "fashion_mnist"}, tmp_path / "data")
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_fetch_idx_missing_file_is_named(tmp_path, tiny_sizes):
    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=True)
    (src / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.fetch("mnist", tmp_path / "data", from_dir=src)


def test_fetch_verifies_sizes(tmp_path):
    """Real sizes are 60000/10000: the tiny fakes are reported incomplete."""
    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=True)
    with pytest.raises(DataError, match="expected 60000 / 10000"):
        data.fetch("mnist", tmp_path / "data", from_dir=src)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fetch_cifar_tar_gz_and_directory(tmp_path, tiny_sizes, no_md5, name):
    spec = data.DATASETS[name]
    arrays = fake_cifar_arrays(10 if name == "cifar10" else 100)
    write_cifar(tmp_path / "build" / spec.folder, name, arrays)
    src = tmp_path / "downloads"
    src.mkdir()
    with tarfile.open(src / spec.archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / spec.folder, arcname=spec.folder)
    out = data.fetch(name, tmp_path / "a", from_dir=src)
    assert out == tmp_path / "a" / spec.folder
    assert data.load({"name": name}, tmp_path / "a").y_test.tolist() == arrays[3]
    out = data.fetch(name, tmp_path / "b", from_dir=tmp_path / "build" / spec.folder)
    assert data.load({"name": name}, tmp_path / "b").y_train.tolist() == arrays[1]
    data.fetch(name, tmp_path / "c", from_dir=src / spec.archive)  # the archive file itself
    assert (tmp_path / "c" / spec.folder).is_dir()


def test_fetch_corrupt_archive(tmp_path, tiny_sizes):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        data.fetch("cifar10", tmp_path / "data", from_dir=tmp_path)


def test_import_refuses_source_links_and_replaces_planted_destination_links(tmp_path, tiny_sizes):
    src = tmp_path / "downloads"
    arrays = fake_mnist_arrays(seed=1)
    write_idx(src, arrays, gz=True)
    outside = tmp_path / "outside"
    outside.write_text("precious")
    (src / "extra-link").symlink_to(outside)
    with pytest.raises(DataError, match="extra-link is a symbolic link"):
        data.fetch("fashion_mnist", tmp_path / "data", from_dir=src)
    assert not (tmp_path / "data").exists()  # refused before anything was written
    (src / "extra-link").unlink()
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").symlink_to(outside)  # planted where a file will go
    data.fetch("fashion_mnist", tmp_path / "data", from_dir=src)
    assert outside.read_text() == "precious" and not (raw / "train-images-idx3-ubyte").is_symlink()
    assert data.load({"name": "fashion_mnist"}, tmp_path / "data").y_test.tolist() == \
        arrays["t10k-labels-idx1-ubyte"].tolist()
    assert not list((tmp_path / "data").glob(".import-*"))


def test_a_failed_archive_extraction_leaves_nothing_behind(tmp_path, tiny_sizes, no_md5):
    """A tar that breaks after some members: the members extracted before the error are removed."""
    spec = data.DATASETS["cifar10"]
    write_cifar(tmp_path / "build" / spec.folder, "cifar10", fake_cifar_arrays(10))
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(tmp_path / "build" / spec.folder, arcname=spec.folder)
    src = tmp_path / "downloads"
    src.mkdir()
    (src / spec.archive).write_bytes(whole.read_bytes()[:whole.stat().st_size * 2 // 3])  # cut short
    with pytest.raises(DataError, match="cannot extract"):
        data.fetch("cifar10", tmp_path / "data", from_dir=src)
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_fetch_offline_without_from_gives_hint(tmp_path):
    with pytest.raises(DataError, match="--from DIR"):
        data.fetch("cifar100", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        data.fetch("mnist", tmp_path, from_dir=tmp_path / "nope")


def test_fetch_falls_back_to_a_system_copy(tmp_path, tiny_sizes, monkeypatch):
    """Offline, `fetch` imports from a distribution's copy (e.g. Debian's dataset-fashion-mnist)."""
    write_idx(tmp_path / "usr", fake_mnist_arrays(), gz=True)
    spec = dataclasses.replace(data.DATASETS["fashion_mnist"], system_dirs=(str(tmp_path / "usr"),))
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", spec)
    out = data.fetch("fashion_mnist", tmp_path / "data")
    assert (out / "train-images-idx3-ubyte").is_file()


@pytest.mark.parametrize("name", ["digits", "sphere", "regression"])
def test_fetch_nothing_to_do(tmp_path, name, capsys):
    assert data.fetch(name, tmp_path) == tmp_path
    assert "nothing to fetch" in capsys.readouterr().out


def test_unknown_name_lists_datasets():
    with pytest.raises(DataError, match="cifar10.*regression"):
        data.load({"name": "imagenet"}, "data")


# ---------------------------------------------------------------------------- bundled, synthetic


def test_digits():
    d = data.load({"name": "digits"}, "unused", device="cpu")
    assert d.x_train.shape == (1500, 1, 8, 8) and d.x_test.shape == (297, 1, 8, 8)
    assert d.y_train.dtype == torch.int64 and d.num_classes == 10
    assert abs(d.x_train.mean()) < 1e-5 and abs(d.x_train.std() - 1) < 1e-4
    assert set(d.y_train.tolist()) == set(range(10))
    again = data.load({"name": "digits", "augment": True}, "unused")
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    assert not again.augment  # augmentation is for CIFAR only
    sub = data.load({"name": "digits", "train_size": 100}, "unused")
    assert sub.x_train.shape[0] == 100 and len(set(sub.y_train.tolist())) == 10


def test_cfg_object_with_attributes():
    from omegaconf import OmegaConf

    d = data.load(OmegaConf.create({"name": "sphere", "n_train": 5}), "unused")
    assert d.x_train.shape == (5, 64)


def test_sphere():
    cfg = {"name": "sphere", "n_train": 50, "n_test": 7, "dim": 16, "num_classes": 3,
           "data_seed": 4}
    d = data.load(cfg, "unused")
    assert d.x_train.shape == (50, 16) and d.x_test.shape == (7, 16)
    torch.testing.assert_close(d.x_train.norm(dim=1), torch.ones(50))
    assert d.num_classes == 3 and d.task == "classification" and d.y_train.dtype == torch.int64
    assert set(d.y_train.tolist()) <= {0, 1, 2}
    assert torch.equal(d.x_train, data.load(cfg, "unused").x_train)
    assert not torch.equal(d.x_train, data.load({**cfg, "data_seed": 5}, "unused").x_train)


def test_regression():
    d = data.load({"name": "regression", "n_train": 100, "n_test": 20, "dim": 120,
                   "noise": 0.0}, "unused")
    assert d.x_train.shape == (100, 120) and d.y_train.shape == (100,)
    assert d.y_train.dtype == torch.float32 and d.task == "regression" and d.num_classes == 0
    torch.testing.assert_close(d.x_test.norm(dim=1), torch.ones(20))
    # noiseless: the targets are exactly linear in x (d > n so solve through the test set too)
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    w = torch.linalg.lstsq(x.double(), y.double().unsqueeze(1)).solution
    torch.testing.assert_close((x.double() @ w).squeeze(1), y.double(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------- augment_batch


def reference_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Slow per-image version drawing the same random numbers in the same order."""
    n, _, h, w = x.shape
    offsets = torch.randint(0, 9, (2, n), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    out = []
    for i in range(n):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


def test_augment_matches_reference_and_is_deterministic():
    x = torch.randn(64, 3, 32, 32)
    before = x.clone()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    out = data.augment_batch(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)  # input untouched
    g.set_state(state)
    assert torch.equal(data.augment_batch(x, g), out)
    g.set_state(state)
    assert torch.equal(reference_augment(x, g), out)
    assert not torch.equal(data.augment_batch(x, g), out)  # fresh randomness


def test_augment_known_image_is_shifted_or_flipped_copy():
    """A ramp image: every output is the ramp, shifted by |d| <= 4 with zeros, maybe mirrored."""
    ramp = torch.arange(1, 33, dtype=torch.float32).expand(1, 1, 32, 32).repeat(200, 1, 1, 1)
    out = data.augment_batch(ramp, torch.Generator().manual_seed(1))
    seen = set()
    for img in out[:, 0]:
        row = img[img.abs().sum(1) > 0][0]  # a row that is not all padding
        nz = row[row > 0]
        flipped = len(nz) > 1 and bool(nz[0] > nz[1])
        vals = nz.flip(0) if flipped else nz
        assert torch.equal(vals, torch.arange(vals[0], vals[0] + len(vals)))  # contiguous ramp
        assert len(nz) >= 28 and (vals[0] == 1 or vals[-1] == 32)
        seen.add(flipped)
        zero_rows = int((img.abs().sum(1) == 0).sum())
        assert zero_rows <= 4
    assert seen == {True, False}


# ---------------------------------------------------------------------------- import: verify, then install
# (issue 22, item 7): checked in staging within a size cap, installed one rename per file


def write_gz_bomb(path, size):
    """A gzip file of ``size`` zero bytes (a few hundred KiB on disk)."""
    import gzip

    with gzip.open(path, "wb", compresslevel=1) as f:
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            f.write(block)


def installed_labels(root, name="fashion_mnist"):
    return data.load({"name": name}, root).y_test.tolist()


def test_a_failed_import_never_replaces_good_data(tmp_path, tiny_sizes):
    good, bad = tmp_path / "good", tmp_path / "bad"
    arrays = fake_mnist_arrays(seed=1)
    write_idx(good, arrays, gz=True)
    data.fetch("fashion_mnist", tmp_path / "data", from_dir=good)
    before = installed_labels(tmp_path / "data")
    write_idx(bad, fake_mnist_arrays(seed=2), gz=True)
    labels = bad / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])  # truncated: the others are whole and newer
    with pytest.raises(DataError, match="t10k-labels"):
        data.fetch("fashion_mnist", tmp_path / "data", from_dir=bad)
    assert installed_labels(tmp_path / "data") == before
    write_idx(bad, fake_mnist_arrays(seed=2, n_test=N_TEST - 1), gz=True)  # whole but too few
    with pytest.raises(DataError, match="expected"):
        data.fetch("fashion_mnist", tmp_path / "data", from_dir=bad)
    assert installed_labels(tmp_path / "data") == before
    assert not list((tmp_path / "data").glob(".import-*"))


def test_a_gzip_bomb_is_stopped_while_it_unpacks(tmp_path, tiny_sizes, monkeypatch):
    monkeypatch.setitem(data.IMPORT_CAP, "idx", 2 << 20)
    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=True)
    write_gz_bomb(src / "train-images-idx3-ubyte.gz", 64 << 20)
    written = []
    real_copy = data._copy_stream

    def copy(fin, dest, budget, source):
        try:
            real_copy(fin, dest, budget, source)
        finally:
            written.append(dest.stat().st_size)

    monkeypatch.setattr(data, "_copy_stream", copy)
    with pytest.raises(DataError, match=r"more than 2 MiB, the import cap for fashion_mnist") as err:
        data.fetch("fashion_mnist", tmp_path / "data", from_dir=src)
    assert "\n" not in str(err.value)
    assert max(written) <= 2 << 20  # stopped at the cap, not after unpacking all of it
    assert not list((tmp_path / "data").rglob("*-ubyte"))


def cifar_tar(tmp_path, name="cifar10", extra=None):
    """An archive in CIFAR's official layout, with ``extra(tar)`` adding members."""
    spec = data.DATASETS[name]
    write_cifar(tmp_path / "build" / spec.folder, name, fake_cifar_arrays(10))
    src = tmp_path / "downloads"
    src.mkdir(exist_ok=True)
    with tarfile.open(src / spec.archive, "w:gz", compresslevel=1) as tar:
        tar.add(tmp_path / "build" / spec.folder, arcname=spec.folder)
        if extra:
            extra(tar)
    return src


def zeros_member(name, size):
    import io

    class Zeros(io.RawIOBase):
        def __init__(self):
            self.left = size

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    info = tarfile.TarInfo(name)
    info.size = size
    return lambda tar: tar.addfile(info, io.BufferedReader(Zeros()))


@pytest.mark.parametrize("member", ["cifar-10-batches-py/data_batch_9", "elsewhere/padding"])
def test_a_tar_bomb_is_stopped_while_it_unpacks(tmp_path, tiny_sizes, no_md5, monkeypatch, member):
    """A member inside the dataset's folder is refused by its declared size before it is
    written; one outside it by the bytes decompressed to skip over it."""
    monkeypatch.setitem(data.IMPORT_CAP, "cifar", 4 << 20)
    src = cifar_tar(tmp_path, extra=zeros_member(member, 64 << 20))
    with pytest.raises(DataError, match=r"more than 4 MiB, the import cap for cifar10"):
        data.fetch("cifar10", tmp_path / "data", from_dir=src)
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_link_members_are_refused(tmp_path, tiny_sizes, no_md5):
    def link(tar):
        info = tarfile.TarInfo("cifar-10-batches-py/readme")
        info.type, info.linkname = tarfile.SYMTYPE, "data_batch_1"
        tar.addfile(info)

    src = cifar_tar(tmp_path, extra=link)
    with pytest.raises(DataError, match="readme is a symbolic link; links are never installed"):
        data.fetch("cifar10", tmp_path / "data", from_dir=src)
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_a_fifo_or_a_non_archive_is_one_line(tmp_path, tiny_sizes, capsys):
    import os

    from confusion_cli import cli

    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=True)
    os.mkfifo(src / "stuck")
    assert cli.main(["data", "fashion_mnist", "--from", str(src), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{src / 'stuck'} is a FIFO" in err[0], err
    assert cli.main(["data", "cifar10", "--from", str(src / "stuck"), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a FIFO" in err[0], err
    not_tar = tmp_path / "cifar-10-python.tar.gz"
    not_tar.write_bytes(b"PK\x03\x04 a zip file, not a tar" * 40)
    assert cli.main(["data", "cifar10", "--from", str(not_tar), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a whole tar archive" in err[0], err
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*"))


def test_staging_folders_of_killed_imports_are_removed_at_the_next(tmp_path, tiny_sizes):
    import os

    root = tmp_path / "data"
    for stale in (".import-a1b2c3", ".import-999999999-x"):  # no pid; a pid that is not running
        (root / stale / "FashionMNIST" / "raw").mkdir(parents=True)
        (root / stale / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"x" * 100)
    live = root / f".import-{os.getppid()}-busy"  # an import still running
    live.mkdir()
    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=False)
    data.fetch("fashion_mnist", root, from_dir=src)
    assert {p.name for p in root.iterdir()} == {"FashionMNIST", live.name}


def test_a_full_disk_during_an_import_is_one_line_naming_the_path(tmp_path, tiny_sizes, monkeypatch):
    import builtins
    import errno

    src = tmp_path / "downloads"
    write_idx(src, fake_mnist_arrays(), gz=True)
    root = tmp_path / "data"

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return Full(f) if "x" in mode or "w" in mode else f

    monkeypatch.setattr(data, "open", full_open, raising=False)
    with pytest.raises(DataError, match=r"^disk full at .*\.import-.*-ubyte \(No space left on device\)"):
        data.fetch("fashion_mnist", root, from_dir=src)
    assert not list(root.iterdir())

"""The data folder does not depend on the working directory (issue 23, item 9): $CONFUSION_DATA,
else a per-user cache folder; data/ where it already holds datasets, with a note; `confusion
data` says where it put a dataset. Every path here is set by the test: no real dataset is read."""

import dataclasses
from pathlib import Path

import pytest
from fakes import N_TEST, N_TRAIN, fake_mnist_arrays, write_idx

from confusion_cli import cli, config, data, paths


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory without data/, no $CONFUSION_DATA, the cache under tmp_path/xdg."""
    monkeypatch.delenv("CONFUSION_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


@pytest.fixture
def tiny_fashion(monkeypatch, tmp_path):
    """Fashion-MNIST as tiny IDX files in tmp_path/downloads, counted as complete by `fetch`."""
    spec = dataclasses.replace(data.DATASETS["fashion_mnist"], sizes=(N_TRAIN, N_TEST))
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", spec)
    write_idx(tmp_path / "downloads", fake_mnist_arrays(seed=1), gz=True)
    return tmp_path / "downloads"


def test_the_default_is_the_per_user_cache_folder(elsewhere, monkeypatch):
    cache = elsewhere / "xdg" / "confusion" / "data"
    assert config.run_config([]).data_dir == str(cache) == paths.default_data_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert config.run_config([]).data_dir == str(Path.home() / ".cache" / "confusion" / "data")
    monkeypatch.setenv("CONFUSION_DATA", str(elsewhere / "mine"))
    assert config.run_config([]).data_dir == str(elsewhere / "mine")
    assert config.run_config(["data_dir=/there"]).data_dir == "/there"


def test_a_data_folder_holding_datasets_stays_the_default_with_a_note(elsewhere):
    (Path("data")).mkdir()
    assert config.run_config([]).data_dir != "data"  # empty: not the old default's datasets
    (Path("data") / "FashionMNIST" / "raw").mkdir(parents=True)
    assert config.run_config([]).data_dir != "data"  # empty dataset folders hide nothing
    (Path("data") / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"")
    assert config.run_config([]).data_dir == "data" and paths.uses_legacy_data_dir()
    assert "./data" in paths.legacy_note() and str(elsewhere / "xdg") in paths.legacy_note()


def test_confusion_data_says_where_and_a_run_finds_it_from_any_folder(elsewhere, tiny_fashion, capsys,
                                                                   monkeypatch):
    assert cli.main(["data", "fashion_mnist", "--from", str(tiny_fashion)]) == 0
    raw = elsewhere / "xdg" / "confusion" / "data" / "FashionMNIST" / "raw"
    out, err = capsys.readouterr()
    assert out.strip() == f"fashion_mnist: ready under {raw}" and err == ""
    assert sorted(p.name for p in raw.iterdir()) == sorted(fake_mnist_arrays())
    (elsewhere / "other").mkdir()
    monkeypatch.chdir(elsewhere / "other")  # the case: import in one folder, cd elsewhere
    cfg = config.run_config(["dataset=fashion_mnist"])
    assert data.validate(cfg.dataset, cfg.data_dir) == N_TRAIN


def test_confusion_data_into_a_folder_names_the_setting_that_reads_it(elsewhere, tiny_fashion, capsys):
    assert cli.main(["data", "fashion_mnist", "--from", str(tiny_fashion), "--data-dir", "mine"]) == 0
    mine = elsewhere / "work" / "mine"
    assert capsys.readouterr().out.splitlines() == [
        f"fashion_mnist: ready under {mine / 'FashionMNIST' / 'raw'}",
        f"runs read it with data_dir={mine} (or CONFUSION_DATA={mine})"]


def test_confusion_data_into_the_old_folder_says_so(elsewhere, tiny_fashion, capsys):
    (Path("data") / "MNIST" / "raw").mkdir(parents=True)
    (Path("data") / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"")  # a dataset file
    assert cli.main(["data", "fashion_mnist", "--from", str(tiny_fashion)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"fashion_mnist: ready under {elsewhere / 'work' / 'data' / 'FashionMNIST' / 'raw'}"
    assert err.strip() == paths.legacy_note()

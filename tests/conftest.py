"""Shared fixtures: no test downloads, and tiny CIFAR fakes pass torchvision's md5 check."""

import sys
from pathlib import Path

import pytest
import torchvision.datasets.cifar

sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py

from confusion_cli import data  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test runs as if offline: torchvision's download fails at once."""

    def fail(spec, root):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data, "_download", fail)


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks CIFAR md5s; tiny fakes only need to exist."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: Path(fpath).is_file())

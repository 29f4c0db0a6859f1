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


def pytest_configure(config):
    """Under pytest-xdist (make test runs one worker per core) each worker, and each command it
    starts, computes on one thread: two workers of two threads each on two cores only contend."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests that share a module-scoped fixture (a smoke sweep run once for the module) go to
    one xdist worker (--dist loadgroup), so the sweep is not run again on every worker."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        shared = defs and any(d.scope == "module" for fds in defs.name2fixturedefs.values() for d in fds)
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

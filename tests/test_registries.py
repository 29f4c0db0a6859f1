"""One test per registry, over every entry (timm's habit): a new dataset, model, probe or figure
is tested here with no edit to a test, besides its own."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from confusion_cli import config, data, figures, models, probes, spec
from confusion_cli.records import migrate


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_every_dataset_holds_its_facts(name, tmp_path):
    """Each entry has a config file, a source its facts fit, and sizes and a shape that agree
    with what loads (bundled and synthetic sets load here, small; torchvision sets need files:
    tests/test_data.py writes them)."""
    entry = data.DATASETS[name]
    assert name in config.options("dataset") and entry.description
    train, test, shape = data.sizes({"name": name})
    assert train > 0 and all(n > 0 for n in shape)
    if entry.source == "torchvision":
        assert entry.loader is None and entry.files and entry.tv_class and entry.folder
        assert len(entry.mean) == len(entry.std) == entry.shape[0] and (train, test) == entry.sizes
        return
    assert entry.loader is not None
    small = {"name": name, "train_size": min(train, 16), "test_size": min(test, 4)}
    if name == "cifar_shaped":
        small |= {"n_train": 16, "n_test": 4}
    loaded = data.load(small, tmp_path)
    assert tuple(loaded.x_train.shape) == (small["train_size"], *shape)
    assert loaded.num_classes == data.num_classes(small) and loaded.task == entry.task


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_builds_and_runs_at_its_defaults(name):
    """Each model has its config file and dataclass, and builds and runs on the input it takes."""
    assert name in config.options("model") and spec.option_defaults("model", name)["name"] == name
    size = {"cnn": {"depth": 10, "width": 1}, "linreg": {}}.get(name, {"depth": 2, "width": 8})
    cfg = OmegaConf.create({"name": name, **size})
    shape = (3, 8, 8) if name == "cnn" else (1, 8, 8)
    net = models.build_model(cfg, shape, 10)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(probes.PROBES))
def test_every_probe_measures_at_its_declared_settings(name):
    """Each registered probe, confusion modes and extra probes alike, built from its declared
    settings (a confusion mode's: its probe config file; an extra probe's: its own; counts cut to
    32), checks them,
    estimates its memory and measures a small deep linear net (every probe measures it), leaving
    the weights as they were."""
    probe_class = probes.PROBES[name]
    assert probe_class.kind in ("confusion", "extra")
    if probe_class.kind == "confusion":
        small = {"pairs": 2, "batches": 3, "examples": 8, "batch_size": 8}
        settings = migrate.declared("probe", name) | small
    else:
        settings = migrate.declared("extra_probes", name)
        assert settings is not None, f"{name} has no configs/extra_probes/{name}.yaml"
    small = {k: min(v, 32) if isinstance(v, int) and not isinstance(v, bool) else v
             for k, v in settings.items()}
    probe = probe_class(OmegaConf.create(small))  # its settings, each count at most 32: seconds
    probe.check(64)
    torch.manual_seed(0)
    net = models.build_model(OmegaConf.create({"name": "linear", "depth": 2, "width": 8}), (6,), 3).double()
    probe.check_model(net)
    assert probe.memory(sum(p.numel() for p in net.parameters()), 6)[0] >= 0
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(3, (64,))
    ctx = probes.ProbeContext(net, torch.nn.functional.cross_entropy, x, y, torch.Generator().manual_seed(0))
    scalars, _ = probe.measure(ctx)
    assert scalars and all(math.isfinite(v) for v in scalars.values())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("sweep", sorted(figures.FIGURES))
def test_every_figure_is_registered_for_a_sweep_there_is(sweep):
    """Each registered figure names a sweep a config runs (or one that runs outside a sweep are
    recognised as), and is a function of (records, out folder)."""
    inferred = set(figures.registry.FALLBACK_SWEEPS.values()) | {"bn_skip", "depth_mnist", "width_mnist"}
    assert sweep in config.options("sweep") or sweep in inferred
    assert figures.FIGURES[sweep] and all(callable(function) for function in figures.FIGURES[sweep])

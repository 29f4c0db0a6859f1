"""Every model builds, runs forward and backward, and trains a step; bad configs are clear errors."""

import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from confusion_cli import models
from confusion_cli.errors import ConfusionError

CASES = {
    "mlp": ({"name": "mlp", "depth": 3, "width": 16}, (1, 8, 8), 10),
    "mlp_tanh_orth": ({"name": "mlp", "depth": 2, "width": 8, "activation": "tanh",
                       "init": "orthogonal"}, (5,), 3),
    "linear": ({"name": "linear", "depth": 4, "width": 8, "init": "orthogonal"}, (6,), 2),
    "linreg": ({"name": "linreg"}, (12,), 0),
    "cnn": ({"name": "cnn", "depth": 10, "width": 1}, (3, 8, 8), 10),
    "cnn_bn_skip": ({"name": "cnn", "depth": 16, "width": 1, "batch_norm": True, "skip": True},
                    (3, 8, 8), 10),
    "cnn_default_init": ({"name": "cnn", "depth": 10, "width": 1, "init": "default"}, (1, 8, 8), 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_model_trains_a_step(case):
    cfg, shape, classes = CASES[case]
    torch.manual_seed(0)
    model = models.build_model(OmegaConf.create(cfg), shape, classes)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, max(classes, 1))
    loss = out.pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_gaussian_init_is_he_for_relu_and_unit_for_tanh():
    torch.manual_seed(0)
    relu = models.build_model(OmegaConf.create({"name": "mlp", "depth": 1, "width": 2000}),
                              (500,), 2)
    tanh = models.build_model(OmegaConf.create({"name": "mlp", "depth": 1, "width": 2000,
                                                "activation": "tanh"}), (500,), 2)
    assert relu[1].weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    assert tanh[1].weight.std().item() == pytest.approx(math.sqrt(1 / 500), rel=0.02)
    assert relu[1].bias.abs().max() == 0


def test_orthogonal_init_gives_orthonormal_rows():
    model = models.build_model(OmegaConf.create({"name": "linear", "depth": 3, "width": 16,
                                                 "init": "orthogonal"}), (16,), 16)
    w = model[1].weight
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)


def test_cnn_depth_counts_wideresnet_blocks():
    model = models.build_model(OmegaConf.create({"name": "cnn", "depth": 22, "width": 2}),
                               (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 6 * 3  # stem + 3 groups x n=3 blocks x 2 convs, no shortcuts
    assert convs[-1].out_channels == 128
    skip = models.build_model(OmegaConf.create({"name": "cnn", "depth": 22, "width": 2,
                                                "skip": True}), (3, 32, 32), 10)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in skip.modules()) == 19 + 3


@pytest.mark.parametrize("cfg, fragment", [
    ({"name": "resnet"}, "unknown model 'resnet'"),
    ({"name": "mlp", "depth": -1, "width": 8}, "model.depth must be"),
    ({"name": "mlp", "depth": 2, "width": -3}, "model.width must be"),
    ({"name": "cnn", "depth": 15, "width": 2}, "6n + 4"),
    ({"name": "mlp", "depth": 2, "width": 4, "activation": "gelu"}, "unknown model.activation"),
    ({"name": "mlp", "depth": 2, "width": 4, "init": "xavier"}, "unknown model.init"),
])
def test_bad_model_configs_are_one_line_errors(cfg, fragment):
    with pytest.raises(ConfusionError, match=re.escape(fragment)) as err:
        models.build_model(OmegaConf.create(cfg), (1, 8, 8), 10)
    assert "\n" not in str(err.value)


def test_cnn_rejects_vector_data():
    with pytest.raises(ConfusionError, match="needs image data"):
        models.build_model(OmegaConf.create({"name": "cnn", "depth": 10, "width": 1}), (64,), 10)

"""Issue 26: the Fisher spectrum from the per-example Gram, the outlier rule, the Hessian's and
the Gauss-Newton part's top eigenvalues and spectral densities, against slow references."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from confusion_cli import data, probes
from confusion_cli.errors import ConfusionError, DataError
from confusion_cli.models import MLP
from confusion_cli.probes.fisher import fisher_eigenvalues, fisher_stats
from confusion_cli.probes.hessian import (
    curvature_spectrum,
    gauss_newton_vector_product,
    hessian_vector_product,
    lanczos_quadrature,
    spectral_density,
)
from confusion_cli.probes.naive import flat_gradient
from confusion_cli.probes.spectrum import outlier_count, top_share

F = nn.functional


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()


NETS = {"mlp": (lambda: MLP(5, 3, depth=2, width=6, activation="tanh").double(), (5,)),
        "cnn": (tiny_cnn, (1, 6, 6))}


def batch(shape, n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(classes, (n,), generator=g)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def as_function(model: nn.Module, x: torch.Tensor):
    """w -> model(x) at the flattened parameters w."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    def outputs(w: torch.Tensor) -> torch.Tensor:
        parts = [t.reshape(s) for t, s in zip(w.split(sizes), shapes)]
        return functional_call(model, dict(zip(names, parts)), (x,))
    return outputs


# -- the Fisher spectrum ----------------------------------------------------------------------
@pytest.mark.parametrize("net", NETS)
def test_gram_spectrum_is_the_empirical_fishers_nonzero_spectrum(net):
    torch.manual_seed(0)
    build, shape = NETS[net]
    model = build()
    x, y = batch(shape)
    n = len(x)
    grads = torch.stack([flat_gradient(model, F.cross_entropy, x[i:i + 1], y[i:i + 1]) for i in range(n)])
    fisher = torch.linalg.eigvalsh(grads.T @ grads / n).flip(0)[:n]  # N > n: the n non-zero ones
    torch.testing.assert_close(fisher_eigenvalues(model, F.cross_entropy, x, y), fisher,
                               rtol=1e-7, atol=1e-12)
    stats = fisher_stats(model, F.cross_entropy, x, y, top_k=3, search=5)
    assert stats["fisher_top1"] == pytest.approx(fisher[0].item(), rel=1e-7)
    assert stats["fisher_trace"] == pytest.approx((grads ** 2).sum(1).mean().item(), rel=1e-7)
    assert stats["fisher_params"] == grads.shape[1]
    assert stats["fisher_top_classes_share"] == pytest.approx((fisher[:3].sum() / fisher.sum()).item())
    assert stats["fisher_outliers"] == outlier_count(fisher, 5)


def test_outliers_are_above_the_largest_log_gap():
    spectrum = torch.tensor([100.0, 80.0, 50.0, 1.0, 0.9, 0.8, 0.7, 1e-12, 0.0, -3.0])
    assert outlier_count(spectrum) == 3
    assert outlier_count(spectrum, search=6) == 3
    assert outlier_count(spectrum, search=2) == 2  # among 100, 80, 50 only: the larger gap is below 80
    assert outlier_count(torch.tensor([5.0])) == 1 and outlier_count(torch.tensor([0.0, -1.0])) == 0
    assert outlier_count(torch.tensor([4.0, math.nan, 2.0, 1.0])) == 1
    assert top_share(spectrum[:7], 3) == pytest.approx(230 / 233.4)


# -- Lanczos quadrature and densities ---------------------------------------------------------
def test_lanczos_quadrature_reproduces_the_moments_of_the_start_vector():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = a + a.T
    v = torch.randn(30, generator=g, dtype=torch.float64)
    q = v / v.norm()
    nodes, weights = lanczos_quadrature(lambda u: a @ u, 30, 6, v)
    for power in range(2 * 6):  # Gauss quadrature with m nodes is exact to degree 2m - 1
        exact = q @ torch.linalg.matrix_power(a, power) @ q
        torch.testing.assert_close((weights * nodes ** power).sum(), exact, rtol=1e-8, atol=1e-8)
    full, _ = lanczos_quadrature(lambda u: a @ u, 30, 30, v)
    torch.testing.assert_close(full.sort().values, torch.linalg.eigvalsh(a), rtol=1e-8, atol=1e-8)
    diagonal = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    first = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    nodes, weights = lanczos_quadrature(lambda u: diagonal @ u, 3, 3, first)  # invariant at once
    assert nodes[0] == 1.0 and nodes[1:].isnan().all() and weights.tolist() == [1.0, 0.0, 0.0]


def test_density_weights_sum_to_one_and_estimate_the_mean_eigenvalue():
    g = torch.Generator().manual_seed(3)
    eigenvalues = torch.linspace(-1, 5, 40, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    a = basis @ torch.diag(eigenvalues) @ basis.T
    nodes, weights = spectral_density(lambda u: a @ u, 40, 30, 8, torch.Generator().manual_seed(0), a)
    assert nodes.shape == weights.shape == (240,)
    assert weights.sum().item() == pytest.approx(1.0)
    assert (weights * nodes).sum().item() == pytest.approx(eigenvalues.mean().item(), abs=0.25)


# -- the Hessian and its Gauss-Newton part ----------------------------------------------------
def test_quadratic_model_hessian_and_gauss_newton_are_the_known_matrix():
    """f(x) = w . x with the mean squared error: H = G = (2 / n) X^T X for every w; the
    second-order term vanishes. (Distinct eigenvalues: Lanczos from one start vector finds each
    eigenvalue once, whatever its multiplicity.)"""
    torch.manual_seed(1)
    n, d = 20, 6
    model = nn.Linear(d, 1, bias=False).double()
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randn(n, 1, dtype=torch.float64)
    known = x.T @ x * 2 / n
    expected = torch.linalg.eigvalsh(known).flip(0)
    stats = curvature_spectrum(model, F.mse_loss, x, y, top_k=4, iters=d,
                               generator=torch.Generator().manual_seed(0), density_probes=2, density_iters=d)
    for prefix in ("hess", "gn"):
        top = torch.tensor([stats[f"{prefix}_top{i + 1}"] for i in range(4)], dtype=torch.float64)
        torch.testing.assert_close(top, expected[:4], rtol=1e-8, atol=1e-10)
        assert stats[f"{prefix}_outliers"] == outlier_count(expected[:4], 3)
        weights = torch.tensor([stats[f"{prefix}_sld_weight{i}"] for i in range(2 * d)], dtype=torch.float64)
        nodes = torch.tensor([stats[f"{prefix}_sld_node{i}"] for i in range(2 * d)], dtype=torch.float64)
        assert weights.sum().item() == pytest.approx(1.0)
        torch.testing.assert_close(nodes[:d].sort().values, expected.flip(0), rtol=1e-8, atol=1e-10)
    v = torch.randn(d, dtype=torch.float64)
    for product in (hessian_vector_product, gauss_newton_vector_product):
        matvec, dim = product(model, F.mse_loss, x, y)
        assert dim == d
        torch.testing.assert_close(matvec(v), known @ v)


@pytest.mark.parametrize("net", ["mlp", pytest.param("cnn", marks=pytest.mark.slow)])
def test_tiny_net_hessian_and_gauss_newton_against_explicit_matrices(net):
    torch.manual_seed(0)
    build, shape = NETS[net]
    model = build()
    x, y = batch(shape)
    w = flat(model)
    outputs_of = as_function(model, x)
    hessian = torch.autograd.functional.hessian(lambda p: F.cross_entropy(outputs_of(p), y), w)
    jacobian = torch.autograd.functional.jacobian(outputs_of, w).reshape(-1, w.numel())  # (n C, N)
    out = outputs_of(w).detach()
    loss_hessian = torch.autograd.functional.hessian(lambda o: F.cross_entropy(o, y), out)
    loss_hessian = loss_hessian.reshape(out.numel(), -1)
    gauss_newton = jacobian.T @ loss_hessian @ jacobian
    v = torch.randn(w.numel(), dtype=torch.float64)
    gnvp, dim = gauss_newton_vector_product(model, F.cross_entropy, x, y)
    assert dim == w.numel()
    torch.testing.assert_close(gnvp(v), gauss_newton @ v, rtol=1e-8, atol=1e-12)
    stats = curvature_spectrum(model, F.cross_entropy, x, y, top_k=3, iters=w.numel(),
                               generator=torch.Generator().manual_seed(0))
    for prefix, matrix in (("hess", hessian), ("gn", gauss_newton)):
        top = torch.tensor([stats[f"{prefix}_top{i + 1}"] for i in range(3)], dtype=torch.float64)
        torch.testing.assert_close(top, torch.linalg.eigvalsh(matrix).flip(0)[:3], rtol=1e-6, atol=1e-10)
    assert torch.linalg.eigvalsh(gauss_newton).min() > -1e-10  # PSD: cross-entropy is convex in f
    assert not torch.allclose(hessian, gauss_newton)  # tanh: the second-order term is there


def test_gauss_newton_leaves_parameters_and_grads_alone():
    model = MLP(5, 3, depth=1, width=4)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch((5,))
    gnvp, dim = gauss_newton_vector_product(model, F.cross_entropy, x.float(), y)
    gnvp(torch.ones(dim))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


# -- settings and data ------------------------------------------------------------------------
@pytest.mark.parametrize("name, settings, message", [
    ("hessian", {"examples": 8, "top_k": 3, "iters": 5, "spectrum": "yes"}, "spectrum must be true or false"),
    ("hessian", {"examples": 8, "top_k": 3, "iters": 5, "spectrum": True, "density_probes": -1,
                 "density_iters": 4}, "density_probes must be a non-negative integer"),
    ("hessian", {"examples": 8, "top_k": 3, "iters": 5, "spectrum": True, "density_probes": 1,
                 "density_iters": 0}, "density_iters must be a positive integer"),
    ("fisher", {"examples": 0, "top_k": 3, "search": 5}, "examples must be a positive integer"),
    ("fisher", {"examples": 8, "top_k": 3, "search": "all"}, "search must be a positive integer")])
def test_bad_spectrum_settings_are_one_line(name, settings, message):
    probe = probes.PROBES[name](OmegaConf.create(settings))
    with pytest.raises(ConfusionError, match=message):
        probe.check(100)


def test_class_subset_keeps_the_first_k_classes():
    cfg = OmegaConf.create({"name": "digits", "classes": 3, "train_size": 100, "test_size": 30})
    loaded = data.load(cfg, ".")
    assert loaded.num_classes == 3 and set(loaded.y_train.tolist()) == {0, 1, 2}
    assert len(loaded.x_train) == 100 and set(loaded.y_test.tolist()) <= {0, 1, 2}
    assert data.sizes(OmegaConf.create({"name": "fashion_mnist", "classes": 2}))[:2] == (12000, 2000)
    for bad in (1, 11, 2.5, "two"):
        with pytest.raises(DataError, match=r"dataset.classes must be an integer in \[2, 10\]"):
            data.validate(OmegaConf.create({"name": "digits", "classes": bad}), ".")
    with pytest.raises(DataError, match="does not apply to sphere"):
        data.validate(OmegaConf.create({"name": "sphere", "classes": 2}), ".")

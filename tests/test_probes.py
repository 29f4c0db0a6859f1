"""The gradient-confusion probes against slow references: every fast path against one backward
pass per example, mini-batch statistics against a plain loop, statistics against numpy."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from confusion_cli import probes
from confusion_cli.bench.probes import gram_rows
from confusion_cli.errors import ConfusionError
from confusion_cli.models import ResidualMLP
from confusion_cli.probes.func import vmap_per_example_gram
from confusion_cli.probes.gram import hooked_pass, layer_gram

RTOL = 1e-10  # float64: the fast paths agree with the naive loop to about 1e-15 relative


def half_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.mse_loss(output, target)


class Block(nn.Module):
    """Pre-activation residual block: BN, inplace ReLU, strided conv, BN, ReLU, conv, + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False) if stride > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 1, 1)
        self.blocks = nn.Sequential(Block(4, 4, 1), Block(4, 6, 2))
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.blocks(self.stem(x)))).mean((2, 3)))


def randomise_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters (defaults make BN the identity)."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            size = module.num_features
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            with torch.no_grad():
                module.weight.normal_(1, 0.3, generator=generator)
                module.bias.normal_(0, 0.3, generator=generator)
            assert module.weight.shape == (size,)


class TwoBranch(nn.Module):
    """The first layer called is not upstream of every other: lin2 reads the input too."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.head = nn.Linear(12, 6), nn.Linear(12, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.lin1(x)) + self.lin2(x))


def mlp(bias: bool = True, activation=nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9, bias=bias), activation(),
                         nn.Linear(9, 7, bias=bias), activation(), nn.Linear(7, 4, bias=bias))


# name -> (model factory, input shape, classes (0: regression with 0.5 * MSE))
MODELS = {
    "mlp": (lambda: mlp(), (3, 4), 4),
    "mlp_nobias": (lambda: mlp(bias=False), (12,), 4),
    "mlp_tanh": (lambda: mlp(activation=nn.Tanh), (12,), 4),
    "mlp_inplace_bn1d": (lambda: nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True),
                                               nn.Linear(8, 3)), (12,), 3),
    "deep_linear": (lambda: nn.Sequential(*[nn.Linear(12 if i == 0 else 6, 6, bias=False)
                                            for i in range(5)], nn.Linear(6, 3, bias=False)), (12,), 3),
    "linreg": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(10, 1)), (10,), 0),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1),
                                  nn.ReLU(inplace=True), nn.Conv2d(5, 3, 2, dilation=2, padding=2),
                                  nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)), (2, 9, 9), 4),
    "resnet_bn": (ResNet, (3, 8, 8), 5),
    "two_branch": (TwoBranch, (12,), 3),
    "mlp_bn_skip": (lambda: ResidualMLP(12, 4, 3, 8, batch_norm=True, skip=True), (3, 4), 4),
    "mlp_skip": (lambda: ResidualMLP(12, 4, 3, 8, skip=True), (12,), 4),
}


def build(name: str, batch: int = 7, seed: int = 0):
    factory, shape, classes = MODELS[name]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = factory().double()
    randomise_batch_norms(model, generator)
    x = torch.randn(batch, *shape, generator=generator, dtype=torch.float64)
    if classes:
        return model, F.cross_entropy, x, torch.randint(0, classes, (batch,), generator=generator)
    return model, half_mse, x, torch.randn(batch, 1, generator=generator, dtype=torch.float64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * float(scale))


@pytest.mark.parametrize("name", MODELS)
def test_fast_gram_matches_naive_loop(name):
    model, loss_fn, x, y = build(name)
    expected = probes.naive_per_example_gram(model, loss_fn, x, y)
    assert_close(probes.per_example_gram(model, loss_fn, x, y), expected)
    assert_close(vmap_per_example_gram(model, loss_fn, x, y, chunk_size=3), expected)
    model.eval()
    captured = hooked_pass(model, loss_fn, x, y)
    assert captured is not None, "the per-layer fast path must apply"
    for method in ("kernel", "materialise"):
        for chunk_size in (None, 3):  # 3 does not divide the 7 examples
            assert_close(sum(layer_gram(c, chunk_size, method) for c in captured), expected)


@pytest.mark.slow
def test_per_example_gram_chunking_does_not_change_the_result():
    model, loss_fn, x, y = build("resnet_bn", batch=10)
    full = probes.per_example_gram(model, loss_fn, x, y)
    for chunk_size in (1, 3, 4, 10, 64):
        assert_close(probes.per_example_gram(model, loss_fn, x, y, chunk_size=chunk_size), full)


def test_unsupported_layers_take_the_vmap_path():
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Tanh(), nn.Conv1d(1, 2, 3), nn.Flatten(),
                          nn.Linear(6, 3)).double()
    model[3] = nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    assert_close(probes.per_example_gram(model, F.cross_entropy, x, y),
                 probes.naive_per_example_gram(model, F.cross_entropy, x, y))


def test_a_module_called_twice_takes_the_vmap_path():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    assert hooked_pass(model, F.cross_entropy, x, y) is None
    assert_close(probes.per_example_gram(model, F.cross_entropy, x, y),
                 probes.naive_per_example_gram(model, F.cross_entropy, x, y))


def test_frozen_parameters_are_left_out():
    model, loss_fn, x, y = build("resnet_bn")
    model.stem.bias.requires_grad_(False)
    model.blocks[1].bn1.weight.requires_grad_(False)
    model.head.weight.requires_grad_(False)
    assert_close(probes.per_example_gram(model, loss_fn, x, y),
                 probes.naive_per_example_gram(model, loss_fn, x, y))


def test_linear_regression_gram_is_the_closed_form():
    """0.5 (w.x + b - y)^2: g_i = r_i (x_i, 1), so G = (r r^T) * (X X^T + 1)."""
    model, loss_fn, x, y = build("linreg")
    residual = (model(x) - y).detach()
    expected = (residual @ residual.T) * (x @ x.T + 1)
    assert_close(probes.per_example_gram(model, loss_fn, x, y), expected)


def minibatches(count: int, size: int = 5, seed: int = 1):
    model, loss_fn, x, y = build("resnet_bn", batch=count * size, seed=seed)
    return model, loss_fn, [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(count)]


def loop_gradients(model, loss_fn, batches, mode: str = "eval") -> torch.Tensor:
    """Mini-batch gradients the plain way: zero_grad, backward, read .grad. ``mode="train"``:
    what a training step computes before its update, on a fresh copy of the model in train mode
    for each batch (the step's forward updates BN's running statistics: the copy takes that)."""
    rows = []
    for x, y in batches:
        net = copy.deepcopy(model).train() if mode == "train" else model.eval()
        net.zero_grad()
        loss_fn(net(x), y).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    model.zero_grad(set_to_none=True)
    model.train()
    return torch.stack(rows)


@pytest.mark.parametrize("mode", probes.BN_MODES)
def test_minibatch_pair_stats_matches_a_plain_loop(mode):
    model, loss_fn, batches = minibatches(6)
    grads = loop_gradients(model, loss_fn, batches, mode)
    a, b = grads[0::2], grads[1::2]
    inner = (a * b).sum(1)
    cos = inner / (a.norm(dim=1) * b.norm(dim=1))
    stats = probes.minibatch_pair_stats(model, loss_fn, list(zip(batches[0::2], batches[1::2])), mode=mode)
    assert_close(stats["inner"], inner)
    assert_close(stats["cos"], cos)
    assert stats["n_pairs"] == 3 and stats["min_cos"] == pytest.approx(cos.min().item(), rel=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("name, mode", [("mlp", "eval"), ("cnn", "eval"), ("resnet_bn", "eval"),
                                        ("resnet_bn", "train"), ("mlp_bn_skip", "train")])
@pytest.mark.parametrize("group", [2, 3, 4, 16])
def test_grouped_minibatch_gradients_match_a_plain_loop(name, mode, group, monkeypatch):
    """vmap over groups of mini-batches = one backward pass per mini-batch (conv, BN, skip too)."""
    from confusion_cli.probes import pairs

    calls = []
    vmapped = pairs.vmap_batch_gradients
    monkeypatch.setattr(pairs, "vmap_batch_gradients", lambda *a: calls.append(a[2].shape) or vmapped(*a))
    model, loss_fn, x, y = build(name, batch=7 * 4)
    batches = [(x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]) for i in range(7)]
    grads = loop_gradients(model, loss_fn, batches, mode)
    a, b = grads[0:6:2], grads[1:6:2]
    stats = probes.minibatch_pair_stats(model, loss_fn, list(zip(batches[0:6:2], batches[1:6:2])),
                                        group=group, mode=mode)
    assert_close(stats["inner"], (a * b).sum(1))
    assert_close(stats["cos"], (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))
    rows, cols = torch.triu_indices(7, 7, offset=1)
    all_pairs = probes.all_pairs_stats(model, loss_fn, batches, chunk_size=5, group=group, mode=mode)
    assert_close(all_pairs["inner"], (grads[rows] * grads[cols]).sum(1))
    sizes = [shape[0] for shape in calls]  # the vmapped path ran, in groups of at most `group`
    assert sizes and max(sizes) >= 2 and max(sizes) <= group


def test_group_size_budget_and_errors(monkeypatch):
    from confusion_cli.probes import pairs

    assert pairs.group_size(build("mlp")[0], 5) == 5
    assert pairs.group_size(build("cnn")[0], 1) == 1
    big = nn.Linear(1000, 1000)  # 4 MB of float32 gradient
    monkeypatch.setattr(pairs, "GRADIENT_BUDGET_BYTES", 3 * 4 * (1000 * 1000 + 1000))
    assert pairs.group_size(big, 16) == 3
    for bad in (0, -2, "auto", True):
        with pytest.raises(ConfusionError, match="probe.group"):
            pairs.group_size(big, bad)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 4])
@pytest.mark.parametrize("mode", probes.BN_MODES)
def test_all_pairs_stats_matches_a_plain_loop(chunk_size, mode):
    model, loss_fn, batches = minibatches(5)
    grads = loop_gradients(model, loss_fn, batches, mode)
    rows, cols = torch.triu_indices(5, 5, offset=1)
    inner = (grads[rows] * grads[cols]).sum(1)
    cos = inner / (grads[rows].norm(dim=1) * grads[cols].norm(dim=1))
    stats = probes.all_pairs_stats(model, loss_fn, batches, chunk_size=chunk_size, mode=mode)
    assert stats["n_pairs"] == 10
    assert_close(stats["inner"], inner)
    assert_close(stats["cos"], cos)


def test_pair_statistics_against_numpy():
    inner = torch.tensor([3.0, -1.0, 0.5, -4.0, 2.0, 0.0, 1.0])
    sq_a = torch.tensor([9.0, 1.0, 1.0, 4.0, 4.0, 0.0, 4.0])
    sq_b = torch.tensor([1.0, 4.0, 0.25, 4.0, 1.0, 3.0, 1.0])
    cos = np.array([1.0, -0.5, 1.0, -1.0, 1.0, 0.0, 0.5])  # a zero gradient has cosine 0
    stats = probes.pair_statistics(inner, sq_a, sq_b)
    np.testing.assert_allclose(stats["cos"].numpy(), cos)
    expected = {"min_inner": -4.0, "min_cos": -1.0, "mean_cos": cos.mean(), "mean_inner": 1.5 / 7,
                "q05_cos": np.quantile(cos, 0.05), "q50_cos": np.quantile(cos, 0.5),
                "frac_neg_cos": 2 / 7, "n_pairs": 7}
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_gram_pair_statistics_takes_the_upper_triangle():
    vectors = torch.randn(9, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gram = vectors @ vectors.T
    stats = probes.gram_pair_statistics(gram)
    normed = (vectors / vectors.norm(dim=1, keepdim=True)).numpy()
    cos = (normed @ normed.T)[np.triu_indices(9, 1)]
    np.testing.assert_allclose(stats["cos"].numpy(), cos, rtol=1e-12)
    assert stats["n_pairs"] == 36
    assert stats["q05_cos"] == pytest.approx(np.quantile(cos, 0.05), rel=1e-12)
    assert stats["frac_neg_cos"] == pytest.approx((cos < 0).mean())


def confusion_probe(model, loss_fn, x, y, cfg, generator, augment=None):
    """The confusion probe ``cfg.mode`` measured through the probe protocol."""
    (probe,) = probes.build(cfg, None)
    return probe.measure(probes.ProbeContext(model, loss_fn, x, y, generator, augment))


def probe_cfg(mode: str, **overrides):
    cfg = {"mode": mode, "pairs": 3, "batches": 4, "examples": 6, "batch_size": 4, "chunk_size": None,
           "bn_mode": "eval"}
    return OmegaConf.create(cfg | overrides)


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()])


@pytest.mark.slow
@pytest.mark.parametrize("mode, bn_mode", [(m, "eval") for m in probes.MODES]
                         + [("minibatch_pairs", "train"), ("all_pairs", "train")])
def test_confusion_probe_changes_nothing_and_is_deterministic(mode, bn_mode):
    """Parameters, .grad, every buffer (BN running statistics, batch counters) and every module's
    mode and track_running_stats flag are as they were after a probe, in either BN convention."""
    model, loss_fn, x, y = build("resnet_bn", batch=20)
    model.train()
    model.blocks[0].eval()  # a mixture of modes must come back as it was
    loss_fn(model(x[:4]), y[:4]).backward()  # some .grad fields set, to be left alone
    model.blocks[1].conv1.weight.grad = None
    model(x[:6])  # BN running statistics and num_batches_tracked away from their defaults
    before, rng = snapshot(model), torch.get_rng_state()
    tracking = [m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    results = [confusion_probe(model, loss_fn, x, y, probe_cfg(mode, bn_mode=bn_mode),
                                      torch.Generator().manual_seed(5)) for _ in range(2)]
    after = snapshot(model)
    assert torch.equal(torch.get_rng_state(), rng)
    for key in before[0]:
        assert torch.equal(before[0][key], after[0][key]), key
    assert all((g is None and h is None) or torch.equal(g, h) for g, h in zip(before[1], after[1]))
    assert before[2] == after[2]
    assert tracking == [m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    (scalars, samples), (scalars_again, samples_again) = results
    expected_keys = set(probes.stats.SCALARS)
    if mode == "per_example":
        expected_keys |= {"grad_norm_mean", "gram_eig_min", "gram_eig_max"}
    assert set(scalars) == expected_keys and set(samples) == {"cos", "inner"}
    assert scalars == scalars_again
    assert all(torch.equal(samples[k], samples_again[k]) for k in samples)
    assert len(samples["cos"]) == {"minibatch_pairs": 3, "all_pairs": 6, "per_example": 15}[mode]
    other, _ = confusion_probe(model, loss_fn, x, y, probe_cfg(mode, bn_mode=bn_mode),
                                      torch.Generator().manual_seed(6))
    assert other != scalars


def test_per_example_probe_scalars_match_the_naive_gram():
    model, loss_fn, x, y = build("mlp", batch=12)
    cfg = probe_cfg("per_example", examples=12, chunk_size=5)
    scalars, samples = confusion_probe(model, loss_fn, x, y, cfg, torch.Generator().manual_seed(0))
    index = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    gram = probes.naive_per_example_gram(model, loss_fn, x[index], y[index])
    eigenvalues = np.linalg.eigvalsh(gram.numpy())
    assert scalars["gram_eig_min"] == pytest.approx(eigenvalues[0], rel=RTOL)
    assert scalars["gram_eig_max"] == pytest.approx(eigenvalues[-1], rel=RTOL)
    assert scalars["grad_norm_mean"] == pytest.approx(gram.diagonal().sqrt().mean().item(), rel=RTOL)
    off_diagonal = gram[np.triu_indices(12, 1)]
    assert scalars["min_inner"] == pytest.approx(off_diagonal.min().item(), rel=RTOL)
    assert samples["inner"].shape == (66,)


def test_minibatch_probe_uses_augment_and_draws_distinct_examples():
    model, loss_fn, x, y = build("mlp", batch=8)
    seen = []

    def augment(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return batch.flip(-1)

    cfg = probe_cfg("minibatch_pairs", batch_size=8)
    plain, _ = confusion_probe(model, loss_fn, x, y, cfg, torch.Generator())
    augmented, _ = confusion_probe(model, loss_fn, x, y, cfg, torch.Generator(), augment=augment)
    assert len(seen) == 6 and plain != augmented

    def by_first_feature(rows: torch.Tensor) -> torch.Tensor:
        return rows.flatten(1)[rows.flatten(1)[:, 0].argsort()]

    for batch in seen:  # a mini-batch of the whole set without replacement is a permutation of it
        assert torch.equal(by_first_feature(batch), by_first_feature(x))


def test_probe_errors_are_one_line_confusion_errors():
    model, loss_fn, x, y = build("mlp", batch=8)
    bad = {"unknown probe.mode": probe_cfg("nope"), "needs 9 distinct": probe_cfg("per_example", examples=9),
           "per-example gradients are not defined": probe_cfg("per_example", bn_mode="train"),
           "unknown probe.bn_mode": probe_cfg("all_pairs", bn_mode="batch")}
    for message, cfg in bad.items():
        with pytest.raises(ConfusionError, match=message):
            confusion_probe(model, loss_fn, x, y, cfg, torch.Generator())


def test_train_mode_probe_differs_from_eval_mode_on_batch_norm_nets():
    """The two conventions are different measurements on a BN net (and the same without BN)."""
    for name, same in (("resnet_bn", False), ("mlp", True)):
        model, loss_fn, x, y = build(name, batch=16)
        train, eval_ = (confusion_probe(model, loss_fn, x, y, probe_cfg("all_pairs", bn_mode=m),
                                               torch.Generator().manual_seed(1))[0] for m in probes.BN_MODES)
        assert (train == eval_) is same, name


def test_bench_probes_quick_runs():
    rows = gram_rows("cpu", quick=True)
    assert {r.baseline for r in rows} == {"naive loop", "torch.func vmap (chunks of 32)", "one SGD step"}
    for r in rows:  # the step row: the Gram in SGD steps (Gram / step)
        speedup = r.value / r.baseline_value if r.baseline == "one SGD step" else r.baseline_value / r.value
        assert r.unit == "s" and r.value > 0 and r.ratio == pytest.approx(speedup)


PROJECT_MODELS = {
    "mlp": ({"name": "mlp", "depth": 2, "width": 8}, (1, 4, 4), 3),
    "mlp_tanh": ({"name": "mlp", "depth": 3, "width": 6, "activation": "tanh"}, (10,), 3),
    "linear": ({"name": "linear", "depth": 4, "width": 6, "init": "orthogonal"}, (10,), 3),
    "linreg": ({"name": "linreg", "bias": True}, (10,), 0),
    **{f"cnn_bn{int(bn)}_skip{int(skip)}": ({"name": "cnn", "depth": 10, "width": 1, "batch_norm": bn,
                                             "skip": skip}, (3, 8, 8), 4)
       for bn in (False, True) for skip in (False, True)},
    **{f"mlp_bn{int(bn)}_skip{int(skip)}": ({"name": "mlp", "depth": 3, "width": 6, "batch_norm": bn,
                                             "skip": skip}, (1, 3, 4), 4)
       for bn in (False, True) for skip in (False, True)},
}


@pytest.mark.parametrize("name", PROJECT_MODELS)
def test_fast_gram_matches_naive_loop_on_project_models(name):
    from confusion_cli.models import build_model

    cfg, shape, classes = PROJECT_MODELS[name]
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(cfg), shape, classes).double()
    randomise_batch_norms(model, generator)
    x = torch.randn(5, *shape, generator=generator, dtype=torch.float64)
    if classes:
        loss_fn, y = F.cross_entropy, torch.randint(0, classes, (5,), generator=generator)
    else:
        loss_fn, y = half_mse, torch.randn(5, 1, generator=generator, dtype=torch.float64)
    model.eval()
    assert hooked_pass(model, loss_fn, x, y) is not None, "the per-layer fast path must apply"
    assert_close(probes.per_example_gram(model, loss_fn, x, y, chunk_size=2),
                 probes.naive_per_example_gram(model, loss_fn, x, y))


def test_eta_is_zero_when_every_pair_is_aligned_and_minus_the_min_inner_otherwise():
    from confusion_cli.probes.stats import eta
    aligned = torch.tensor([[4.0, 1.0, 2.0], [1.0, 3.0, 0.5], [2.0, 0.5, 5.0]])  # every <g_i, g_j> > 0
    stats = probes.gram_pair_statistics(aligned)
    assert stats["min_inner"] == 0.5 and eta(stats["min_inner"]) == 0.0
    opposed = aligned.clone()
    opposed[0, 2] = opposed[2, 0] = -1.5
    assert eta(probes.gram_pair_statistics(opposed)["min_inner"]) == 1.5
    series = pd.Series([0.5, -1.5, float("nan")])
    assert eta(series).iloc[:2].tolist() == [0.0, 1.5] and pd.isna(eta(series).iloc[2])

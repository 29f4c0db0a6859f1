"""The extra probes (rank, hessian) against slow references, and that probing changes nothing."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from confusion_cli import config, data, probes
from confusion_cli.errors import ConfusionError
from confusion_cli.models import MLP
from confusion_cli.probes.hessian import lanczos_top_eigenvalues, top_hessian_eigenvalues
from confusion_cli.probes.rank import effective_rank, numerical_rank, rank_stats
from confusion_cli.train import Trainer


def low_rank_matrix(m: int, n: int, r: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)


@pytest.mark.parametrize("rtol", [None, 1e-3, 0.5])
def test_numerical_rank_is_torch_matrix_rank(rtol):
    for m, n, r in [(20, 30, 5), (40, 12, 12), (16, 16, 1)]:
        w = low_rank_matrix(m, n, r)
        expected = int(torch.linalg.matrix_rank(w, rtol=rtol))
        assert numerical_rank(torch.linalg.svdvals(w), (m, n), rtol) == expected
        if rtol is None:
            assert expected == r


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.ones(7)) == pytest.approx(7.0)
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4)) == 0.0
    s = torch.linalg.svdvals(low_rank_matrix(30, 20, 4).double())
    p = s[s > 0] / s.sum()
    assert effective_rank(s) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert 1.0 < effective_rank(s) <= 4.0 + 1e-9


def test_rank_stats_reads_every_linear_and_conv_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 5), nn.Linear(5, 2))
    with torch.no_grad():
        model[2].weight.copy_(low_rank_matrix(5, 8, 2))
    stats = rank_stats(model, rtol=1e-3)
    matrices = [model[0].weight.reshape(8, 27), model[2].weight, model[3].weight]
    for i, w in enumerate(matrices):
        assert stats[f"rank_num_L{i}"] == int(torch.linalg.matrix_rank(w.detach(), rtol=1e-3))
    assert stats["rank_num_L1"] == 2
    assert stats["rank_num_mean"] == pytest.approx((8 + 2 + 2) / 3)
    assert stats["rank_eff_mean"] == pytest.approx(sum(stats[f"rank_eff_L{i}"] for i in range(3)) / 3)


def test_lanczos_matches_eigvalsh_of_a_symmetric_matrix():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 40, generator=g, dtype=torch.float64)
    a = a + a.T
    start = torch.randn(40, generator=g, dtype=torch.float64)
    top = lanczos_top_eigenvalues(lambda v: a @ v, 40, 4, 40, start)
    torch.testing.assert_close(top, torch.linalg.eigvalsh(a).flip(0)[:4], rtol=1e-8, atol=1e-8)
    tiny = lanczos_top_eigenvalues(lambda v: 2 * v, 2, 3, 10, start[:2])  # invariant at once
    assert tiny[0] == pytest.approx(2.0) and tiny[1:].isnan().all()


def explicit_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    """The full Hessian of the loss in the flattened parameters (autograd.functional.hessian)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = [t.reshape(s) for t, s in zip(flat.split(sizes), shapes)]
        return loss_fn(functional_call(model, dict(zip(names, parts)), (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.autograd.functional.hessian(loss_of, flat)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_hessian_top_eigenvalues_match_the_explicit_hessian(loss):
    torch.manual_seed(0)
    model = MLP(5, 3, depth=2, width=6, activation="tanh").double()
    x = torch.randn(16, 5, dtype=torch.float64)
    if loss == "cross_entropy":
        y, loss_fn = torch.randint(3, (16,)), nn.functional.cross_entropy
    else:
        y = torch.randn(16, 3, dtype=torch.float64)
        loss_fn = nn.functional.mse_loss
    expected = torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, x, y)).flip(0)[:3]
    dim = sum(p.numel() for p in model.parameters())
    top = top_hessian_eigenvalues(model, loss_fn, x, y, k=3, iters=dim,
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(top, expected, rtol=1e-4, atol=1e-10)
    few = top_hessian_eigenvalues(model, loss_fn, x, y, k=1, iters=30,
                                  generator=torch.Generator().manual_seed(0))
    assert few[0].item() == pytest.approx(expected[0].item(), rel=1e-4)


def measures(probe: probes.Probe, model: nn.Module) -> bool:
    """Whether ``probe`` can measure ``model`` (Probe.check_model; canonical: deep linear nets only)."""
    try:
        probe.check_model(model)
    except ConfusionError:
        return False
    return True


def make_trainer(overrides: list[str]) -> Trainer:
    """Every registered extra probe that can measure the model: a new one is tested here."""
    every = ",".join(probes.extra_names())
    cfg = config.run_config(["probe=none", "optim.epochs=1", "dataset.train_size=256",
                              f"extra_probes=[{every}]", "extra_probes.hessian.examples=32",
                              "extra_probes.hessian.iters=8", "extra_probes.example_pairs.examples=16",
                              "extra_probes.canonical.examples=16", "extra_probes.fisher.examples=16",
                              *overrides])
    trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir), torch.device("cpu"))
    trainer.probes = [probe for probe in trainer.probes if measures(probe, trainer.model)]
    return trainer


# an MLP, a CNN with BN and skips (the per-layer fast paths of both kinds of layer), and a deep
# linear net (every probe, canonical included)
LINEAR = ["model=linear", "model.depth=3", "model.width=16"]
MODELS = [["model.depth=2", "model.width=16"],
          ["model=cnn", "model.depth=10", "model.width=1", "model.batch_norm=true", "model.skip=true"],
          LINEAR]


def trained_trainer(model: list[str]) -> Trainer:
    """make_trainer after one epoch: BN running statistics away from their initial values."""
    trainer = make_trainer(model)
    trainer.train_epoch()
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_extra_probes_leave_model_grads_and_modes_unchanged(model):
    trainer = trained_trainer(model)
    net = trainer.model
    net.train()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    if model is LINEAR:  # every registered extra probe measures a deep linear net
        assert sorted(p.name for p in trainer.probes) == probes.extra_names()
    for probe in trainer.probes:
        scalars, samples = probe.measure(trainer.probe_context)
        assert scalars and all(math.isfinite(v) for v in scalars.values()) and samples == {}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert all(m.training for m in net.modules())


def test_hessian_probe_columns_and_generator():
    trainer = make_trainer(["model.depth=1", "model.width=16", "extra_probes.hessian.top_k=2"])
    state = trainer.probe_generator.get_state()
    hessian = next(p for p in trainer.probes if p.name == "hessian")
    first, _ = hessian.measure(trainer.probe_context)
    assert list(first) == ["hess_top1", "hess_top2"] and first["hess_top1"] >= first["hess_top2"] > 0
    trainer.probe_generator.set_state(state)
    # examples and start vector come from the probe generator
    assert hessian.measure(trainer.probe_context)[0] == first
    assert not torch.equal(trainer.probe_generator.get_state(), state)
    assert torch.equal(trainer.generator.get_state(),
                       torch.Generator().manual_seed(0).get_state())


def test_unknown_extra_probe_is_one_line_with_the_choices():
    cfg = config.compose([])
    with pytest.raises(ConfusionError, match=", ".join(probes.extra_names())):
        probes.build(cfg.probe, {"nope": {}})


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_example_pairs_is_the_naive_gram_of_a_fixed_subset(model):
    trainer = trained_trainer(model)
    probe = next(p for p in trainer.probes if p.name == "example_pairs")
    ctx = trainer.probe_context
    first, samples = probe.measure(ctx)
    ctx.generator.manual_seed(12345)  # the subset does not come from the probe generator
    again, _ = probe.measure(ctx)
    assert first == again and samples == {}
    index = torch.randperm(ctx.x_train.shape[0], generator=torch.Generator().manual_seed(0))[:16]
    naive = probes.naive_per_example_gram(trainer.model, ctx.loss_fn, ctx.x_train[index],
                                          ctx.y_train[index]).double()
    expected = probes.gram_pair_statistics(naive)
    assert first["ex_n_pairs"] == 16 * 15 / 2
    for key in ("min_cos", "q05_cos", "mean_cos", "min_inner"):
        assert first[f"ex_{key}"] == pytest.approx(expected[key], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("setting, message", [("examples=1", "at least 2"),
                                              ("subset_seed=-1", "non-negative"),
                                              ("examples=999", "larger than the training set")])
def test_example_pairs_bad_settings_are_one_line(setting, message):
    cfg = config.run_config(["extra_probes=[example_pairs]", f"extra_probes.example_pairs.{setting}"])
    with pytest.raises(ConfusionError, match=message):
        probes.check(cfg.probe, cfg.extra_probes, 256)

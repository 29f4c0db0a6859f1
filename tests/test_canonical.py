"""The canonical probe (issue 24) against slow references in float64, the inits it studies, its
one-line refusals, and the canonical_* sweeps end to end."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fakes import run_cli, smoke_sweeps
from omegaconf import OmegaConf
from torch import nn

from confusion_cli import config, data, probes
from confusion_cli.errors import ConfusionError
from confusion_cli.models import balanced_factors, build_model, init_weights
from confusion_cli.probes.canonical import (
    as_sequential,
    canonical_gradients,
    canonical_stats,
    parametric_blocks,
    partial_products,
    preconditioner,
    residuals,
)
from confusion_cli.train import Trainer

TOL = 1e-10
# the tiny net of the issue: input 4, 3 classes, depth 3 (width 5), 6 examples, float64
INPUTS, CLASSES, DEPTH, WIDTH, EXAMPLES = 4, 3, 3, 5, 6


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 |f - y|^2 per example, mean over the batch: its residual is f - y."""
    return 0.5 * (output - target).pow(2).sum(1).mean()


def random_factors(seed: int = 0, depth: int = DEPTH, scale: float = 0.7) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dims = [INPUTS] + [WIDTH] * (depth - 1) + [CLASSES]
    return [scale * torch.randn(dims[k + 1], dims[k], generator=g, dtype=torch.float64) for k in range(depth)]


def tiny_batch(seed: int = 1, regression: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(EXAMPLES, INPUTS, generator=g, dtype=torch.float64)
    if regression:
        return x, torch.randn(EXAMPLES, CLASSES, generator=g, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (EXAMPLES,), generator=g)


def end_to_end(weights: list[torch.Tensor]) -> torch.Tensor:
    product = weights[0]
    for weight in weights[1:]:
        product = weight @ product
    return product


def naive_gradients(model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, params): one autograd backward per example, the parameters flattened in order."""
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(loss(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    assert (actual - expected).abs().max().item() < tol * max(1.0, expected.abs().max().item())


LOSSES = [pytest.param(F.cross_entropy, False, id="cross_entropy"),
          pytest.param(squared_error, True, id="squared_error")]


@pytest.mark.parametrize("loss, regression", LOSSES)
def test_residuals_are_the_closed_forms(loss, regression):
    weights = random_factors()
    x, y = tiny_batch(regression=regression)
    f = x @ end_to_end(weights).T
    expected = f - y if regression else torch.softmax(f, 1) - F.one_hot(y, CLASSES).double()
    assert_close(residuals(weights, x, y, loss), expected)


@pytest.mark.parametrize("loss, regression", LOSSES)
def test_canonical_gradients_are_autograd_with_respect_to_the_end_to_end_matrix(loss, regression):
    weights = random_factors()
    x, y = tiny_batch(regression=regression)
    one_layer = as_sequential([end_to_end(weights)])  # f = W x with W itself the parameter
    expected = naive_gradients(one_layer, loss, x, y)  # row-major flattening of dl_i/dW
    assert_close(canonical_gradients(residuals(weights, x, y, loss), x), expected)


@pytest.mark.parametrize("loss, regression", LOSSES)
def test_parametric_gradients_and_grams_are_the_naive_loop(loss, regression):
    weights = random_factors()
    x, y = tiny_batch(regression=regression)
    naive = naive_gradients(as_sequential(weights), loss, x, y)
    errors = residuals(weights, x, y, loss)
    blocks = torch.cat([b.flatten(1) for b in parametric_blocks(weights, errors, x)], dim=1)
    assert_close(blocks, naive)
    flat = canonical_gradients(errors, x)
    assert_close(flat @ preconditioner(weights) @ flat.T, naive @ naive.T)  # Pi = c^T P c
    a, b = partial_products(weights)
    closed = sum((errors @ a_k @ errors.T) * (x @ b_k @ x.T) for a_k, b_k in zip(a, b))
    assert_close(closed, naive @ naive.T)


def test_preconditioner_is_j_jt_of_the_autograd_jacobian():
    weights = random_factors()
    jacobian = torch.autograd.functional.jacobian(lambda *ws: end_to_end(list(ws)), tuple(weights))
    j = torch.cat([block.reshape(CLASSES * INPUTS, -1) for block in jacobian], dim=1)
    assert j.shape == (CLASSES * INPUTS, sum(w.numel() for w in weights))
    assert_close(preconditioner(weights), j @ j.T)
    assert preconditioner(weights).trace().item() == pytest.approx(
        canonical_stats(as_sequential(weights), *tiny_batch(), F.cross_entropy)["precond_trace"], rel=1e-12)


@pytest.mark.parametrize("loss, regression", LOSSES)
def test_canonical_stats_match_the_naive_grams(loss, regression):
    weights = random_factors()
    x, y = tiny_batch(regression=regression)
    stats = canonical_stats(as_sequential(weights), x, y, loss, top_k=2)
    naive = naive_gradients(as_sequential(weights), loss, x, y)
    canonical = naive_gradients(as_sequential([end_to_end(weights)]), loss, x, y)
    for prefix, grads in (("param", naive), ("canon", canonical)):
        expected = probes.gram_pair_statistics(grads @ grads.T)
        assert stats[f"{prefix}_min_cos"] == pytest.approx(expected["min_cos"], abs=TOL)
        assert stats[f"{prefix}_mean_cos"] == pytest.approx(expected["mean_cos"], abs=TOL)
        assert stats[f"{prefix}_eta"] == pytest.approx(max(0.0, -expected["min_inner"]), abs=TOL)
    eigenvalues = torch.linalg.eigvalsh(preconditioner(weights))
    assert stats["precond_top1"] == pytest.approx(eigenvalues[-1].item(), rel=TOL)
    assert stats["precond_top2"] == pytest.approx(eigenvalues[-2].item(), rel=TOL)
    assert stats["precond_min"] == pytest.approx(eigenvalues[0].item(), rel=1e-8)
    assert stats["precond_cond"] == pytest.approx((eigenvalues[-1] / eigenvalues[0]).item(), rel=1e-8)
    assert "precond_top3" not in stats
    assert stats["identity_err_rel"] < 1e-12  # relative to max |Pi|: Pi's scale is that of P
    largest = (naive @ naive.T).abs().max().item()
    assert stats["identity_err"] == pytest.approx(stats["identity_err_rel"] * largest, rel=1e-9)
    balance = sum(torch.linalg.matrix_norm(w2.T @ w2 - w1 @ w1.T).item()
                  for w1, w2 in zip(weights, weights[1:]))
    assert stats["balancedness"] == pytest.approx(balance, rel=TOL)
    assert "identity_err" not in canonical_stats(as_sequential(weights), x, y, loss, identity=False)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.5])
def test_orthogonal_init_makes_p_a_multiple_of_the_identity(gain):
    depth = 4
    torch.manual_seed(3)
    model = build_model(OmegaConf.create({"name": "linear", "depth": depth, "width": 6, "init": "orthogonal",
                                          "init_gain": gain}), (INPUTS,), CLASSES).double()
    init_weights(model, "orthogonal", "linear", gain)  # again in float64: orthogonal to 1e-16
    x, y = tiny_batch()
    stats = canonical_stats(model, x, y, F.cross_entropy)
    top = depth * gain ** (2 * (depth - 1))
    assert stats["precond_cond"] == pytest.approx(1.0, abs=TOL)
    assert stats["precond_top1"] == pytest.approx(top, rel=TOL)
    assert stats["precond_min"] == pytest.approx(top, rel=TOL)
    assert stats["param_min_cos"] == pytest.approx(stats["canon_min_cos"], abs=TOL)
    assert stats["param_mean_cos"] == pytest.approx(stats["canon_mean_cos"], abs=TOL)
    assert stats["param_eta"] == pytest.approx(top * stats["canon_eta"], rel=TOL)
    assert stats["self_alignment_min"] == pytest.approx(1.0, abs=TOL)


def test_depth_one_has_p_the_identity_and_equal_confusions():
    weights = random_factors(depth=1)
    assert torch.equal(preconditioner(weights), torch.eye(CLASSES * INPUTS, dtype=torch.float64))
    stats = canonical_stats(as_sequential(weights), *tiny_batch(), F.cross_entropy)
    assert stats["precond_cond"] == 1.0 and stats["balancedness"] == 0.0
    for key in ("min_cos", "mean_cos", "eta"):
        assert stats[f"param_{key}"] == pytest.approx(stats[f"canon_{key}"], abs=TOL)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_balanced_factors_have_the_closed_form_spectrum(depth):
    """Arora, Cohen and Hazan 2018: for balanced factors P's eigenvalues are
    sum_{j=1..L} s_r^(2(j-1)/L) s_q^(2(L-j)/L) over the pairs (q, r) of singular values of W
    (q over the m outputs, r over the n inputs, zeros past the rank, 0^0 = 1)."""
    shapes = [(WIDTH, INPUTS)] + [(WIDTH, WIDTH)] * (depth - 2) + [(CLASSES, WIDTH)]
    weights = balanced_factors(shapes, 1.3, torch.Generator().manual_seed(7))
    for w1, w2 in zip(weights, weights[1:]):
        assert_close(w2.T @ w2, w1 @ w1.T)
    s = torch.linalg.svdvals(end_to_end(weights))
    s_out = torch.cat([s, s.new_zeros(CLASSES - s.numel())])
    s_in = torch.cat([s, s.new_zeros(INPUTS - s.numel())])
    closed = sum(s_out[:, None] ** (2 * (depth - j) / depth) * s_in[None, :] ** (2 * (j - 1) / depth)
                 for j in range(1, depth + 1))
    assert_close(torch.linalg.eigvalsh(preconditioner(weights)), closed.flatten().sort().values)
    stats = canonical_stats(as_sequential(weights), *tiny_batch(), F.cross_entropy)
    assert stats["balancedness"] < TOL


def test_balanced_init_keeps_one_end_to_end_matrix_at_every_depth():
    def product(depth: int, width: int, gain: float = 1.0, seed: int = 5) -> torch.Tensor:
        torch.manual_seed(seed)  # the run's seed (Trainer.from_config), the init's generator's seed
        model = build_model(OmegaConf.create({"name": "linear", "depth": depth, "width": width,
                                              "init": "balanced", "init_gain": gain}), (INPUTS,), CLASSES)
        return end_to_end([m.weight.detach().double() for m in model if isinstance(m, nn.Linear)])

    reference = product(1, WIDTH)
    for depth, width in [(2, 5), (4, 3), (8, 9)]:
        torch.testing.assert_close(product(depth, width), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(product(3, WIDTH, gain=2.0), 2 * reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(product(1, WIDTH, seed=6), reference)


def test_gaussian_init_honours_the_gain_and_keeps_gain_one_as_before():
    def weights(gain: float | None) -> list[torch.Tensor]:
        torch.manual_seed(0)
        cfg = {"name": "mlp", "depth": 2, "width": 64, "activation": "relu", "init": "gaussian"}
        model = build_model(OmegaConf.create(cfg if gain is None else {**cfg, "init_gain": gain}), (32,), 10)
        return [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]

    torch.manual_seed(0)
    before = nn.Sequential(nn.Flatten(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                           nn.Linear(64, 10))
    expected = []
    for layer in before[1::2]:  # the init as it was: N(0, 2 / fan_in), no gain
        std = math.sqrt(1.0 / (0.5 * layer.in_features))
        expected.append(layer.weight.detach().normal_(0.0, std).clone())
    assert all(torch.equal(a, b) for a, b in zip(weights(None), expected))
    assert all(torch.equal(a, b) for a, b in zip(weights(1.0), expected))
    assert all(torch.allclose(a, 2.5 * b) for a, b in zip(weights(2.5), expected))


def test_self_alignment_leaves_out_examples_without_a_gradient():
    weights = [torch.tensor([[1e4, 0.0, 0.0, 0.0], [0.0, 1e4, 0.0, 0.0], [0.0, 0.0, 1e4, 0.0]],
                            dtype=torch.float64)]
    x = torch.eye(INPUTS, dtype=torch.float64)[:3] + 0.1  # examples 0-2 fitted: softmax saturates
    x = torch.cat([x, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    y = torch.tensor([0, 1, 2, 0])
    stats = canonical_stats(as_sequential(weights), x, y, F.cross_entropy)
    assert stats["self_alignment_min"] == pytest.approx(1.0, abs=TOL)  # example 3 alone; P = I


def test_self_alignment_is_positive_on_random_weights():
    for seed in range(5):
        weights = random_factors(seed, depth=5, scale=1.2)
        for loss, regression in ((F.cross_entropy, False), (squared_error, True)):
            stats = canonical_stats(as_sequential(weights), *tiny_batch(seed + 10, regression), loss)
            assert 0.0 < stats["self_alignment_min"] <= 1.0 + TOL


ONLY_LINEAR = "bias-free deep linear nets only"
REFUSED = [(["model=mlp"], ONLY_LINEAR),
           (["model=mlp", "model.bias=false", "model.activation=relu"], ONLY_LINEAR),
           (["model=cnn", "model.depth=10", "model.width=1", "dataset=cifar_shaped"], ONLY_LINEAR),
           (["model=linreg", "model.bias=true"], "needs a net without biases: set model.bias=false")]


@pytest.mark.parametrize("overrides, message", REFUSED)
def test_any_other_model_is_one_line_before_anything_is_written(tmp_path, overrides, message):
    cfg = config.run_config(["extra_probes=[canonical]", "extra_probes.canonical.examples=8", *overrides])
    with pytest.raises(ConfusionError, match=message) as error:
        config.validate(OmegaConf.merge(cfg, {"records_root": str(tmp_path / "records")}))
    assert "\n" not in str(error.value)
    model = build_model(cfg.model, (3, 32, 32) if "cnn" in overrides[0] else (64,), 10)
    with pytest.raises(ConfusionError, match=message):
        canonical_stats(model, torch.randn(4, *((3, 32, 32) if "cnn" in overrides[0] else (64,))),
                        torch.zeros(4, dtype=torch.long), F.cross_entropy)


@pytest.mark.slow
def test_the_cli_refuses_an_mlp_in_one_line_and_writes_nothing(tmp_path):
    done = run_cli(["run", "extra_probes=[canonical]", "model=mlp", "records_root=records"], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bias-free deep linear nets only" in lines[0], done.stderr
    assert not (tmp_path / "records").exists() or not any((tmp_path / "records").rglob("*.json"))


def test_linear_nets_pass_and_the_estimate_grows_with_p():
    for overrides in (["model=linear"], ["model=linreg"], ["model=mlp", "model.activation=linear",
                                                             "model.bias=false"]):
        cfg = config.run_config(["extra_probes=[canonical]", *overrides])
        config.check_memory(cfg)
    small = probes.build(OmegaConf.create({"mode": "none"}), OmegaConf.create(
        {"canonical": {"examples": 64, "top_k": 3, "identity": True}}))[0]
    with torch.device("meta"):
        model = build_model(OmegaConf.create({"name": "linear", "depth": 3, "width": 32}), (784,), 10)
    small.check_model(model)
    size, setting = small.memory(sum(p.numel() for p in model.parameters()), 784)
    assert size >= 3 * 8 * 7840 ** 2 and "input size" in setting


def test_the_probe_in_a_run_is_exact_and_leaves_the_model_unchanged():
    cfg = config.run_config(["model=linear", "model.depth=4", "model.width=20", "model.init=balanced",
                             "dataset=sphere", "dataset.n_train=64", "dataset.dim=20",
                             "dataset.num_classes=5", "dataset.n_test=16", "probe=none",
                             "extra_probes=[canonical]", "optim.epochs=1"])
    trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir), torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    (probe,) = trainer.probes
    scalars, samples = probe.measure(trainer.probe_context)
    assert samples == {} and all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    expected = {"canon_eta", "canon_min_cos", "canon_mean_cos", "param_eta", "param_min_cos",
                "param_mean_cos", "precond_top1", "precond_top2", "precond_top3", "precond_min",
                "precond_cond", "precond_trace", "self_alignment_min", "balancedness", "identity_err",
                "identity_err_rel"}
    assert set(scalars) == expected
    assert scalars["identity_err_rel"] < 1e-12 and scalars["self_alignment_min"] > 0
    assert scalars["balancedness"] < 1e-4  # balanced in float64, stored in float32


@pytest.mark.parametrize("overrides, message", [
    (["extra_probes.canonical.examples=1"], "at least 2"),
    (["extra_probes.canonical.top_k=0"], "top_k must be a positive integer"),
    (["extra_probes.canonical.identity=1"], "identity must be true or false"),
    (["extra_probes.canonical.examples=99999"], "larger than the training set")])
def test_bad_settings_are_one_line(tmp_path, overrides, message):
    cfg = config.run_config(["model=linear", "extra_probes=[canonical]", *overrides])
    with pytest.raises(ConfusionError, match=message):
        config.validate(OmegaConf.merge(cfg, {"records_root": str(tmp_path)}))


# -- the sweeps ---------------------------------------------------------------------------------
SWEEPS = ("canonical_init", "canonical_train")


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_canonical_sweeps_compose_and_validate_every_job(scale):
    for name in SWEEPS:
        cfg = config.compose([f"+sweep={name}", f"scale={scale}"])
        assert cfg.model.name == "linear" and cfg.dataset.name == "sphere" and cfg.probe.mode == "none"
        assert list(cfg.extra_probes) == ["canonical"] and cfg.model.width == 20 and cfg.dataset.dim == 20
        sizes = config.plan_sweep(cfg.hydra, [])
        seeds = {"smoke": 1, "quick": 2 if name == "canonical_init" else 5, "paper": 20}
        assert sizes["seed"] == seeds[scale]
        if name == "canonical_init":
            assert cfg.optim.epochs == 0 and sizes["model.init"] == 3
        else:
            assert cfg.optim.full_batch and cfg.optim.epochs >= (300 if scale != "smoke" else 1)
            assert not cfg.optim.milestones and sizes["model.init"] == 2
    paper = config.compose(["+sweep=canonical_init", "scale=paper"]).hydra.sweeper.params
    assert paper["model.depth"] == "1,2,4,8,16,32" and paper["model.init_gain"] == "0.5,1.0,2.0"


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    """Both canonical sweeps at scale=smoke through the real CLI, then `confusion plot`."""
    return smoke_sweeps(tmp_path_factory.mktemp("canonical"), SWEEPS, extra=["threads=1"])


@pytest.mark.slow
def test_smoke_sweeps_record_exact_identities(smoke_outputs):
    _, frame = smoke_outputs
    assert set(frame["status"]) == {"complete"} and set(frame["sweep.name"]) == set(SWEEPS)
    probed = frame[frame["param_min_cos"].notna()]
    assert (probed["identity_err_rel"] < 1e-12).all() and (probed["self_alignment_min"] > 0).all()
    init = probed[probed["sweep.name"] == "canonical_init"]
    assert set(init["model.init"]) == {"gaussian", "orthogonal", "balanced"} and (init["epoch"] == 0).all()
    orthogonal = init[init["model.init"] == "orthogonal"]
    assert (orthogonal["precond_cond"] < 1 + 1e-4).all()  # float32 weights: orthogonal to ~1e-7
    train = probed[probed["sweep.name"] == "canonical_train"]
    assert train.groupby("run_dir")["step"].nunique().min() == 4  # steps 0..3, one per epoch


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["canonical_init", "canonical_cond", "canonical_gap", "canonical_train"])
def test_smoke_sweeps_plot_their_figures(smoke_outputs, stem):
    root, _ = smoke_outputs
    figures = root / "outputs" / "figures"
    for suffix in ("png", "pdf", "csv"):
        assert (figures / f"{stem}.{suffix}").is_file()
    assert len(pd.read_csv(figures / f"{stem}.csv")) > 0

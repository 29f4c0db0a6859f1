"""The CUDA code path (`make gpu-check`): skipped, with the reason, on a machine without a GPU.

CUDA float32 against CPU float64 for every probe, with the fast paths asserted; the training
step without host syncs; resume, reruns and the in-backward update bit for bit; backend flags
left as they were.
"""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from test_train import Textbook

from confusion_cli import config, data, probes
from confusion_cli.backend import backend, exact_matmul, tf32_flags
from confusion_cli.models import build_model
from confusion_cli.probes import gram
from confusion_cli.probes.hessian import hessian_vector_product, lanczos_top_eigenvalues
from confusion_cli.probes.rank import rank_stats
from confusion_cli.train import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: run `make gpu-check` on a machine with one")]
CUDA = torch.device("cuda")

MODELS = {  # name: (model config, input shape)
    "mlp": ({"name": "mlp", "depth": 2, "width": 32}, (1, 8, 8)),
    "mlp_bn_skip": ({"name": "mlp", "depth": 3, "width": 16, "batch_norm": True, "skip": True}, (1, 8, 8)),
    "cnn": ({"name": "cnn", "depth": 10, "width": 1}, (3, 8, 8)),
    "cnn_bn_skip": ({"name": "cnn", "depth": 10, "width": 1, "batch_norm": True, "skip": True}, (3, 8, 8)),
    "cnn_bn_skip_channels_last": ({"name": "cnn", "depth": 10, "width": 1, "batch_norm": True,
                                   "skip": True}, (3, 8, 8)),
}


def pair(name: str):
    """The same initialised model as CPU float64 and CUDA float32 (channels_last when named),
    with non-trivial BN running statistics, and a batch of inputs and labels for both."""
    cfg, shape = MODELS[name]
    torch.manual_seed(0)
    cpu = build_model(OmegaConf.create(cfg), shape, 10).double()
    cpu.train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, *shape, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (12,), generator=generator)
    with torch.no_grad():
        cpu(x)  # running statistics away from their defaults
    gpu = copy.deepcopy(cpu).float().to(CUDA)
    if name.endswith("channels_last"):
        gpu = gpu.to(memory_format=torch.channels_last)
    return cpu, gpu, x, y


def close(gpu_value: torch.Tensor, cpu_value: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = cpu_value.abs().max().item() or 1.0
    torch.testing.assert_close(gpu_value.double().cpu(), cpu_value, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", MODELS)
def test_per_example_gram_on_cuda_matches_the_cpu_float64_loop_through_the_fast_path(name, monkeypatch):
    cpu, gpu, x, y = pair(name)
    loss = torch.nn.functional.cross_entropy
    expected = probes.naive_per_example_gram(cpu.eval(), loss, x, y)
    for slow in ("vmap_per_example_gram", "naive_per_example_gram"):  # the hooked path only
        monkeypatch.setattr(gram, slow, lambda *a, **k: pytest.fail("left the fast path"))
    x_gpu = x.float().to(CUDA)
    if name.endswith("channels_last"):
        x_gpu = x_gpu.to(memory_format=torch.channels_last)
    with exact_matmul(CUDA):
        actual = probes.per_example_gram(gpu, loss, x_gpu, y.to(CUDA))
    close(actual, expected)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["minibatch_pairs", "all_pairs"])
def test_minibatch_probes_on_cuda_match_cpu_float64(name, mode):
    cpu, gpu, x, y = pair(name)
    loss = torch.nn.functional.cross_entropy
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 12, 4)]
    gpu_batches = [(a.float().to(CUDA), b.to(CUDA)) for a, b in batches]
    for bn in probes.BN_MODES:
        if mode == "minibatch_pairs":
            expected = probes.minibatch_pair_stats(cpu, loss, [tuple(batches[:2])], 1, bn)
            with exact_matmul(CUDA):
                actual = probes.minibatch_pair_stats(gpu, loss, [tuple(gpu_batches[:2])], 1, bn)
        else:
            expected = probes.all_pairs_stats(cpu, loss, batches, mode=bn)
            with exact_matmul(CUDA):
                actual = probes.all_pairs_stats(gpu, loss, gpu_batches, mode=bn)
        close(actual["inner"], expected["inner"])
        assert actual["min_cos"] == pytest.approx(expected["min_cos"], abs=1e-4)


@pytest.mark.parametrize("name", ["mlp", "cnn_bn_skip"])
def test_hessian_and_rank_on_cuda_match_cpu_float64(name):
    cpu, gpu, x, y = pair(name)
    loss = torch.nn.functional.cross_entropy
    hvp_cpu, dim = hessian_vector_product(cpu.eval(), loss, x, y)
    start = torch.randn(dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = lanczos_top_eigenvalues(hvp_cpu, dim, 3, 20, start)
    with exact_matmul(CUDA):
        hvp_gpu, _ = hessian_vector_product(gpu.eval(), loss, x.float().to(CUDA), y.to(CUDA))
        actual = lanczos_top_eigenvalues(hvp_gpu, dim, 3, 20, start.float().to(CUDA))
    close(actual, expected, rtol=1e-3)
    ranks_cpu, ranks_gpu = rank_stats(cpu), rank_stats(gpu)
    assert ranks_gpu["rank_eff_mean"] == pytest.approx(ranks_cpu["rank_eff_mean"], rel=1e-4)


def cuda_config(*overrides: str):
    return config.run_config(["dataset.train_size=512", "dataset.test_size=128", "optim.batch_size=64",
                              "optim.epochs=3", "probe.pairs=3", "probe.batch_size=32", "device=cuda",
                              "deterministic=true", *overrides])


def cuda_rows(cfg, stop_after: int | None = None, state=None):
    """The metrics rows of a run of ``cfg`` on CUDA inside its backend; with ``stop_after``,
    (rows, checkpoint state) after that many epochs."""
    with backend(cfg, CUDA):
        trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, CUDA), CUDA)
        if state is not None:
            trainer.load_state_dict(state)
        rows = []
        for event in trainer.run():
            rows.append({k: v for k, v in event.row.items() if not k.endswith("seconds")})
            if stop_after is not None and event.epoch_end and trainer.epoch == stop_after:
                return rows, trainer.state_dict()
    return rows


def test_the_training_step_never_syncs_with_the_host():
    cfg = cuda_config()
    with backend(cfg, CUDA):
        trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, CUDA), CUDA)
        trainer.train_epoch()  # warm-up: lazy initialisation may sync
        d, bs = trainer.data, trainer.batch_size
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            order = torch.randperm(d.x_train.shape[0], generator=trainer.generator, device=CUDA)
            for i in range(trainer.steps_per_epoch):
                idx = order[i * bs:(i + 1) * bs]
                trainer.sgd_step(d.x_train.index_select(0, idx), d.y_train.index_select(0, idx))
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_resume_and_rerun_on_cuda_give_identical_records():
    cfg = cuda_config("probe.schedule=steps:5")
    whole = cuda_rows(cfg)
    assert cuda_rows(cfg) == whole  # the same config twice
    first, state = cuda_rows(cfg, stop_after=1)
    state = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in state.items()}  # as read back
    rest = cuda_rows(cfg, state=state)
    assert first + rest == whole


@pytest.mark.parametrize("compile_", [False, True])
def test_the_in_backward_update_is_torch_sgd_bit_for_bit_on_cuda(compile_):
    """The update applied in backward against torch.optim.SGD(foreach=False), whose single-tensor
    path is the same ``param.add_(grad, alpha=-lr)`` per parameter, across an LR milestone."""
    cfg = cuda_config("optim.milestones=[1]", "optim.gamma=0.1", f"compile={compile_}")
    with backend(cfg, CUDA):
        fast = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, CUDA), CUDA)
        plain = Textbook(fast, cfg)
        plain.model.to(CUDA)
        for group in plain.optimizer.param_groups:  # the per-parameter loop: param.add_(grad, alpha=-lr)
            group["foreach"] = False  # as the hooks do; foreach kernels may round differently on CUDA
        plain.generator = torch.Generator(CUDA).manual_seed(cfg.seed)
        if compile_:
            plain.model = torch.compile(plain.model)
        for _ in range(2):
            fast.train_epoch()
            plain.epoch(fast.steps_per_epoch)
            for a, b in zip(fast.model.parameters(), plain.model.parameters()):
                assert torch.equal(a, b)
    if compile_:
        torch._dynamo.reset()


def test_backend_flags_are_unchanged_after_a_probe_and_a_run():
    cudnn = torch.backends.cudnn

    def flags():
        return tf32_flags(), torch.get_float32_matmul_precision(), cudnn.benchmark, cudnn.deterministic

    before = flags()
    cfg = cuda_config("optim.epochs=1")
    with backend(cfg, CUDA):
        trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, CUDA), CUDA)
        inside = flags()
        scalars, _ = trainer.probe()
        assert math.isfinite(scalars["min_cos"]) and flags() == inside
        list(trainer.run())
        assert flags() == inside
    assert flags() == before

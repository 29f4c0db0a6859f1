"""The SGD loop's fast paths against the textbook loop: same weights, same records, bit for bit."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from confusion_cli import config, data
from confusion_cli.train import Trainer


def trainer(*overrides: str) -> Trainer:
    cfg = composed(*overrides)
    return Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))


def params(t: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()]


class Textbook:
    """The reference: its own copy of the model (same config and seed), a plain torch.optim.SGD
    with MultiStepLR and no hooks, zero_grad / backward / step per batch, on the same data and
    the same permutations (its own generator, seeded as the Trainer's)."""

    def __init__(self, t: Trainer, cfg):
        from confusion_cli.models import build_model

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, t.data.input_shape, t.data.num_classes)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.optim.milestones), gamma=cfg.optim.gamma)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.x, self.y, self.bs = t.data.x_train, t.data.y_train, t.batch_size

    def epoch(self, steps: int) -> tuple[float, float]:
        self.model.train()
        order = torch.randperm(self.x.shape[0], generator=self.generator, device=self.generator.device)
        losses, correct = [], 0
        for i in range(steps):
            idx = order[i * self.bs:(i + 1) * self.bs]
            out = self.model(self.x[idx])
            loss = F.cross_entropy(out, self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            correct += int((out.argmax(1) == self.y[idx]).sum())
        self.scheduler.step()
        return math.fsum(losses) / len(losses), correct / (steps * self.bs)


def composed(*overrides: str):
    return config.run_config(["dataset.train_size=200", "dataset.test_size=50", "optim.batch_size=32",
                              "probe=minibatch_pairs", "probe.pairs=3", "probe.batch_size=16", *overrides])


@pytest.mark.slow
def test_update_in_backward_is_torch_sgd_bit_for_bit():
    """Plain SGD applied in backward = a hook-free torch.optim.SGD loop, across an LR milestone."""
    cfg = composed("optim.milestones=[1]", "optim.gamma=0.1")
    fast = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    plain = Textbook(fast, cfg)
    assert fast.update_in_backward
    assert not any(p._post_accumulate_grad_hooks for p in plain.model.parameters())
    for before_a, before_b in zip(params(fast), plain.model.parameters()):
        assert torch.equal(before_a, before_b)
    for epoch in range(2):
        stats = fast.train_epoch()
        loss, acc = plain.epoch(fast.steps_per_epoch)
        assert fast.optimizer.param_groups[0]["lr"] == plain.optimizer.param_groups[0]["lr"]
        for a, b in zip(params(fast), plain.model.parameters()):
            assert torch.equal(a, b), f"epoch {epoch}: weights differ"
        assert stats["train_loss"] == pytest.approx(loss, rel=1e-6)
        assert stats["train_acc"] == pytest.approx(acc, abs=1e-12)
    assert all(p.grad is None for p in fast.model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("update", ["step", "fused"])
def test_the_other_update_paths_are_torch_sgd_too(update):
    """optim.update=step (optimizer.step()) is the reference bit for bit; fused (torch's
    single-kernel SGD) agrees to float32 rounding."""
    cfg = composed(f"optim.update={update}")
    t = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    plain = Textbook(t, cfg)
    assert not t.update_in_backward and t.optimizer.defaults["fused"] is (update == "fused" or None)
    for _ in range(2):
        t.train_epoch()
        plain.epoch(t.steps_per_epoch)
    for a, b in zip(params(t), plain.model.parameters()):
        if update == "step":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_hooks_refuse_momentum_in_one_line():
    from confusion_cli.errors import ConfusionError
    from confusion_cli.train import check_optim

    with pytest.raises(ConfusionError, match="optim.update=hooks applies plain SGD only"):
        check_optim(composed("optim.update=hooks", "optim.momentum=0.9").optim)
    with pytest.raises(ConfusionError, match="unknown optim.update 'adam'"):
        check_optim(composed("optim.update=adam").optim)


def test_a_backward_pass_outside_a_step_updates_nothing():
    """The in-backward update hooks act only inside sgd_step: anyone else's loss.backward() (a
    probe, a user) leaves the weights alone and accumulates .grad as usual."""
    t = trainer()
    assert t.update_in_backward
    before = params(t)
    x, y = t.data.x_train[:16], t.data.y_train[:16]
    t.loss_fn(t.model(x), y).backward()
    for a, b in zip(before, params(t)):
        assert torch.equal(a, b)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.parameters())
    t.sgd_step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, params(t)))


@pytest.mark.slow
def test_momentum_and_weight_decay_take_the_optimizer_path():
    t = trainer("optim.momentum=0.9", "optim.weight_decay=0.0005")
    assert not t.update_in_backward
    before = params(t)
    t.train_epoch()
    assert any(not torch.equal(a, b) for a, b in zip(before, params(t)))
    assert t.optimizer.state  # momentum buffers: optimizer.step() ran


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["minibatch_pairs", "all_pairs", "per_example"])
def test_probing_never_updates_the_weights(probe):
    """The probes' own backward passes run with the update hooks installed: weights stay put."""
    t = trainer(f"probe={probe}", "probe.examples=8", "probe.batches=3")
    t.train_epoch()
    before = params(t)
    scalars, _ = t.probe()
    assert math.isfinite(scalars["min_cos"])
    for a, b in zip(before, params(t)):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in t.model.parameters())


def test_max_steps_stops_mid_epoch_and_counts_only_steps_taken():
    """4 of the epoch's 6 steps: the loss is the mean over those 4 mini-batches and the accuracy
    is over their 4 x 32 examples, as the hook-free reference computes them."""
    cfg = composed("optim.max_steps=4")
    t = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    assert t.steps_per_epoch == 6
    stats = t.train_epoch()
    loss, acc = Textbook(t, cfg).epoch(4)
    assert t.step == 4 and t.optim.max_steps == 4
    assert stats["train_loss"] == pytest.approx(loss, rel=1e-6)
    assert stats["train_acc"] == pytest.approx(acc, abs=1e-12)
    again = t.train_epoch()  # the budget is spent: no step, no numbers
    assert t.step == 4 and math.isnan(again["train_loss"]) and math.isnan(again["train_acc"])


@pytest.mark.slow
def test_a_probe_follows_the_last_step_when_max_steps_ends_the_run_mid_epoch():
    """max_steps=15 of 6-step epochs ends the run in epoch 3: its row is the last, carries a probe
    though probe.every=5 does not ask for one, and no checkpoint follows it; the bench counts the
    same probe events."""
    from confusion_cli.bench.sweeps import probe_events

    cfg = composed("optim.max_steps=15", "optim.epochs=10", "probe.every=5")
    t = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    events = list(t.run())
    assert [(e.row["epoch"], e.row["step"]) for e in events] == [(0, 0), (1, 6), (2, 12), (3, 15)]
    assert ["min_cos" in e.row for e in events] == [True, False, False, True]
    assert [e.last for e in events] == [False, False, False, True] and t.finished
    assert probe_events(cfg.probe, cfg.optim, t.steps_per_epoch) == 2


@pytest.mark.parametrize("key, column, sign", [("stop_loss", "train_loss", 1), ("stop_acc", "train_acc", -1)])
def test_a_stopping_level_ends_the_run_after_the_first_epoch_that_reaches_it_with_a_probe(key, column, sign):
    """optim.stop_loss / stop_acc: the run ends after the first epoch whose mean training loss is
    at or below (accuracy at or above) the level, here the third epoch's, read off an unstopped
    twin; that row is the last and carries a probe though probe.every does not ask for one; a
    trainer resumed from the second epoch's state stops at the same epoch, and an unreachable
    level runs every epoch."""
    base = ("optim.epochs=6", "probe.every=10", "optim.lr=0.2")
    free = list(trainer(*base).run())
    level = free[3].row[column]
    assert all(sign * e.row[column] > sign * level for e in free[1:3])  # else the test says nothing
    stopped = trainer(*base, f"optim.{key}={level!r}")
    events = list(stopped.run())
    assert [e.row["epoch"] for e in events] == [0, 1, 2, 3]
    assert [e.row["train_loss"] for e in events] == [e.row["train_loss"] for e in free[:4]]
    assert ["min_cos" in e.row for e in events] == [True, False, False, True]
    assert [e.last for e in events] == [False, False, False, True] and stopped.finished

    again = trainer(*base, f"optim.{key}={level!r}")
    run = again.run()
    for _ in range(3):  # init, epochs 1 and 2
        next(run)
    resumed = trainer(*base, f"optim.{key}={level!r}")
    resumed.load_state_dict(again.state_dict())
    assert [e.row["epoch"] for e in resumed.run()] == [3]
    unreachable = {"stop_loss": "1e-9", "stop_acc": "1"}[key]
    never = trainer("optim.epochs=3", "probe.every=10", f"optim.{key}={unreachable}")
    assert [e.row["epoch"] for e in never.run()] == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "true", "'low'"])
def test_a_bad_stopping_level_is_one_line(bad):
    from confusion_cli.errors import ConfusionError

    with pytest.raises(ConfusionError, match="optim.stop_loss must be a positive number"):
        config.validate(composed(f"optim.stop_loss={bad}"))
    with pytest.raises(ConfusionError, match=r"optim.stop_acc must be a number in \(0, 1\]"):
        config.validate(composed(f"optim.stop_acc={'2' if bad == 'nan' else bad}"))


def test_an_epoch_reads_back_to_the_host_once_not_per_step(monkeypatch):
    """No host-device synchronisation per step: the reads back do not grow with the steps."""
    short, long = trainer("optim.batch_size=100"), trainer("optim.batch_size=10")
    assert (short.steps_per_epoch, long.steps_per_epoch) == (2, 20)
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k:
                            reads.append(_n) or _o(self, *a, **k))
    short.train_epoch()
    short_reads, reads[:] = list(reads), []
    long.train_epoch()
    assert reads == short_reads and len(reads) <= 2, reads


def test_a_finished_trainer_is_freed():
    """Sweep workers run many runs in one process: a Trainer (its data included) must be garbage
    once dropped. The in-backward SGD hooks live in the autograd graph, out of reach of the
    garbage collector, so they must not hold the Trainer strongly."""
    import gc
    import weakref

    from confusion_cli import data
    from confusion_cli.train import Trainer

    cfg = config.run_config(["optim.epochs=1", "probe.pairs=2", "probe.batch_size=16", "optim.batch_size=16",
                             "dataset.train_size=64", "dataset.test_size=16"])
    trainer = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))
    assert trainer.update_in_backward
    list(trainer.run())
    ref = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert ref() is None


def tf32_readers() -> dict:
    """Every reader of the TF32 settings, legacy and new, as inductor and the kernels use them;
    one that raises ("mix of the legacy and new APIs") fails the test."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    return {"matmul.allow_tf32": matmul.allow_tf32, "cudnn.allow_tf32": cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "matmul.fp32_precision": matmul.fp32_precision,
            "conv": cudnn.conv.fp32_precision, "rnn": cudnn.rnn.fp32_precision}


def assert_tf32(on: bool) -> None:
    readers = tf32_readers()
    assert readers["matmul.allow_tf32"] is on and readers["cudnn.allow_tf32"] is on
    assert readers["float32_matmul_precision"] == ("high" if on else "highest")
    assert readers["matmul.fp32_precision"] == ("tf32" if on else "ieee")
    assert readers["conv"] == readers["rnn"] and (readers["conv"] == "tf32") is on


def test_backend_flags_are_set_for_a_run_and_restored_after():
    """TF32 (through the allow_tf32 flags only, so legacy and new readers all stay readable),
    cuDNN and thread settings hold inside ``backend``, the probes' exact_matmul turns TF32 off
    for matmuls, convolutions and RNNs alike, and all are the process's own again after, also
    when the run fails (flags can be set without a GPU)."""
    from confusion_cli.backend import backend, exact_matmul, tf32

    cudnn = torch.backends.cudnn

    def state():  # matmul.fp32_precision left out: unset ("none") before the first run is "ieee" after
        readers = {k: v for k, v in tf32_readers().items() if k != "matmul.fp32_precision"}
        return torch.get_num_threads(), cudnn.benchmark, cudnn.deterministic, readers

    before = state()
    cfg = OmegaConf.create({"threads": 1, "tf32": True, "deterministic": not cudnn.deterministic})
    with pytest.raises(RuntimeError), backend(cfg, torch.device("cuda")):
        assert torch.get_num_threads() == 1
        assert_tf32(True)
        with exact_matmul(torch.device("cuda")):
            assert_tf32(False)
        assert_tf32(True)
        with exact_matmul(torch.device("cpu")):  # nothing to change on the CPU
            assert_tf32(True)
        assert cudnn.deterministic is cfg.deterministic and cudnn.benchmark is not cfg.deterministic
        raise RuntimeError("a run that fails")
    assert state() == before
    with backend(OmegaConf.create({"threads": None, "tf32": False, "deterministic": True}),
                 torch.device("cuda")):
        assert_tf32(False)
        with tf32(True):
            assert_tf32(True)
        assert_tf32(False)
    assert state() == before


def test_sweep_jobs_spread_over_the_visible_gpus(monkeypatch):
    """With K visible GPUs, sweep job i runs on GPU i mod K (auto or cuda); cuda:N pins one; a
    single run takes the default GPU; one GPU or none changes nothing (device count mocked)."""
    from confusion_cli.backend import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(resolve_device("auto", job)) for job in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert str(resolve_device("cuda", 6)) == "cuda:2"
    assert str(resolve_device("cuda:3", 1)) == "cuda:3"
    assert str(resolve_device("auto")) == "cuda" and str(resolve_device("cpu", 5)) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(resolve_device("auto", 5)) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(resolve_device("auto", 5)) == "cpu"

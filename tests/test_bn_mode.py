"""The probes' BatchNorm convention (probe.bn_mode): in train mode a mini-batch gradient is the
gradient SGD steps on, probing never changes training, and the convention is recorded."""

import json

import pytest
import torch
from fakes import run_cli
from omegaconf import OmegaConf

from confusion_cli import config, data, probes, records
from confusion_cli.probes.naive import bn_mode, flat_gradient
from confusion_cli.train import Trainer

BN_SKIP_MLP = ["model=mlp", "model.depth=3", "model.width=16", "model.batch_norm=true", "model.skip=true"]


def trainer_for(overrides: list[str]) -> Trainer:
    cfg = config.run_config([*BN_SKIP_MLP, "optim.epochs=2", "optim.batch_size=32", "probe.pairs=3",
                             "probe.batches=4", "probe.examples=8", "probe.batch_size=16",
                             "dataset.train_size=256", "dataset.test_size=64", *overrides])
    config.validate(OmegaConf.merge(cfg, {"records_root": "."}))
    return Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, "cpu"), torch.device("cpu"))


@pytest.mark.parametrize("batch_norm", ["true", "false"])
def test_train_mode_gradient_is_the_training_step_gradient(batch_norm):
    """The probe's train-mode mini-batch gradient equals, bit for bit, the gradient the training
    step computes on the same batch before its update (captured by tensor hooks, which run
    before the in-backward SGD update)."""
    trainer = trainer_for([f"model.batch_norm={batch_norm}"])
    model = trainer.model
    x, y = trainer.data.x_train[:32], trainer.data.y_train[:32]
    list(trainer.run())  # trained weights and running statistics, away from initialisation
    with bn_mode(model, "train"):
        probe_gradient = flat_gradient(model, trainer.loss_fn, x, y)
    with bn_mode(model, "eval"):
        eval_gradient = flat_gradient(model, trainer.loss_fn, x, y)
    captured = {}
    handles = [p.register_hook(lambda g, name=name: captured.__setitem__(name, g.clone()))
               for name, p in model.named_parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    trainer.sgd_step(x, y)
    for handle in handles:
        handle.remove()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "the step updated"
    step_gradient = torch.cat([captured[name].reshape(-1) for name, _ in model.named_parameters()])
    assert torch.equal(probe_gradient, step_gradient)
    assert torch.equal(eval_gradient, step_gradient) is (batch_norm == "false")


def metric_rows(trainer: Trainer) -> tuple[list[dict], dict[str, torch.Tensor]]:
    training = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
    rows = [{k: event.row[k] for k in training} for event in trainer.run()]
    return rows, trainer.model.state_dict()


def test_records_and_weights_are_identical_with_and_without_probing():
    """Probing in either convention, every epoch, leaves the training path untouched: the same
    losses and accuracies, and bit-identical weights and BN running statistics at the end."""
    reference_rows, reference_state = metric_rows(trainer_for(["probe=none"]))
    for probe in (["probe=minibatch_pairs"], ["probe=all_pairs", "probe.group=2"],
                  ["probe=minibatch_pairs", "probe.bn_mode=eval"], ["probe=per_example"]):
        rows, state = metric_rows(trainer_for(probe))
        assert rows == reference_rows, probe
        assert state.keys() == reference_state.keys()
        for key, value in reference_state.items():
            assert torch.equal(state[key], value), (probe, key)
    assert reference_state["norms.0.num_batches_tracked"].item() == 2 * 256 // 32


@pytest.mark.slow
def test_defaults_and_the_recorded_convention(tmp_path):
    """Mini-batch probes default to train mode, per_example to eval; run.json says which."""
    for probe, mode in (("minibatch_pairs", "train"), ("all_pairs", "train"), ("per_example", "eval")):
        cfg = config.compose([f"probe={probe}"])
        assert cfg.probe.bn_mode == mode
    done = run_cli(["run", *BN_SKIP_MLP, "optim.epochs=1", "probe.pairs=2",
                    "probe=minibatch_pairs,per_example"], tmp_path)
    assert done.returncode == 0, done.stderr
    conventions = {}
    for run_dir in records.run_dirs(tmp_path / "outputs"):
        meta = json.loads((run_dir / "run.json").read_text())
        mode = OmegaConf.load(run_dir / "config.yaml").probe.mode
        conventions[mode] = meta["bn_convention"]
    assert conventions == {"minibatch_pairs": probes.BN_CONVENTIONS["train"],
                           "per_example": probes.BN_CONVENTIONS["eval"]}


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["probe=per_example", "probe.bn_mode=train"], "per-example gradients are not defined"),
    (["probe.bn_mode=batch"], "unknown probe.bn_mode 'batch'"),
])
def test_bad_bn_mode_is_one_line_before_anything_is_written(tmp_path, overrides, message):
    done = run_cli(["run", *overrides], tmp_path)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "outputs").exists() or not records.run_dirs(tmp_path / "outputs")

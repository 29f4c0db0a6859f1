"""Every option of every config group runs a tiny training in-process (lightning-hydra habit):
compose the real config, load the real data (fake files in the real formats), train and probe."""

import math

import pytest
import torch
from fakes import write_dataset
from omegaconf import OmegaConf

from confusion_cli import config, data
from confusion_cli.train import Trainer

TINY = ["optim.epochs=1", "optim.batch_size=16", "probe.pairs=2", "probe.batches=3",
        "probe.examples=6", "probe.batch_size=8", "dataset.train_size=48", "dataset.test_size=16"]
TORCHVISION = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def tiny_run(overrides: list[str], data_dir) -> list[dict]:
    cfg = config.run_config([*overrides, *TINY, f"data_dir={data_dir}"])
    config.validate(OmegaConf.merge(cfg, {"records_root": str(data_dir)}))
    dataset = data.load(cfg.dataset, cfg.data_dir, "cpu")
    trainer = Trainer.from_config(cfg, dataset, torch.device("cpu"))
    rows = [event.row for event in trainer.run() if not event.diverged]
    assert [r["epoch"] for r in rows] == [0, 1]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("group, option", [(g, o) for g in ("dataset", "model", "probe", "scale", "optim",
                                                             "extra_probes") for o in config.options(g)])
def test_every_option_trains_and_probes(tmp_path, no_md5, group, option):
    overrides = [f"{group}=[{option}]" if group == "extra_probes" else f"{group}={option}"]
    if group == "extra_probes":
        overrides += ["extra_probes.hessian.examples=16"] if option == "hessian" else []
        overrides += ["extra_probes.grad_norm.batch_size=8"] if option == "grad_norm" else []
        overrides += ["model=linear", "model.depth=3", "model.width=16",
                      "extra_probes.canonical.examples=8"] if option == "canonical" else []
    if option in ("example_pairs", "confirm"):
        overrides += ["extra_probes.example_pairs.examples=8"]
    if option == "cifar_shaped":
        overrides += ["dataset.n_train=64", "dataset.n_test=16"]
    if group == "dataset" and option in TORCHVISION:
        write_dataset(tmp_path, option, n_train=64, n_test=16)
    if group == "dataset" and option in ("sphere", "regression"):
        overrides.append("dataset.n_test=16")
    rows = tiny_run(overrides, tmp_path)
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    if option != "none":
        assert all(r["n_pairs"] >= 1 and -1 <= r["min_cos"] <= 1 for r in rows)

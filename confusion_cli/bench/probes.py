"""Speed of the probes, each against a baseline timed in the same run.

Per-example Gram (``gram_rows``), for a batch of 128: an MLP 4x256 on 28x28 inputs (10 classes)
and CNN-16-2 (WideResNet depth 16, width 2, no BN, no skip) on 3x32x32,
``probes.per_example_gram`` against
- the naive loop (one backward pass per example, ``naive_per_example_gram``),
- torch.func vmap(grad) in chunks of 32 (``func.vmap_per_example_gram``),
- one SGD step (forward, backward, update) on the same batch.
ratio = baseline seconds / Gram seconds (> 1: the Gram is faster), but for the step: Gram seconds /
step seconds, the Gram in SGD steps. Goals: MLP Gram >= 80x faster than naive and at most 1.2
SGD steps; CNN-16-2 >= 2x faster than naive (10x on a GPU) and at most 1.5 SGD steps. The Gram,
vmap and the step are timed interleaved. ``gram_breakdown_rows``: where the Gram's time goes, by
stage and layer kind, each against one SGD step, with multiply-add counts beside.

The confusion probe: the paper's probe (100 pairs of mini-batches of 128) against one training
epoch (goal for CNN-16-2: at most PROBE_SHARE_GOAL of an epoch), and its mini-batch gradients
``probe.group`` at a time (vmapped) against one backward pass each. The probe is timed as a run
takes it, TF32 off, on the Trainer's ProbeContext; other pairs or group values are a new probe
built from a copy of the Trainer's probe settings, never an edit of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .. import probes
from ..backend import exact_matmul
from ..models import build_model
from ..probes import gram
from ..probes.func import vmap_per_example_gram
from ..train import Trainer
from .timing import SHARE, Row, best_seconds, interleaved_best_seconds
from .training import MLP, MNIST_STEPS_PER_EPOCH, cifar_like, trainer_for

PROBE_SHARE_GOAL = 0.6  # the paper's probe adds at most 60% to a CNN-16-2 epoch (issue goal)
PAPER_PAIRS = 100
GRAM_STEPS_GOAL = {"mlp4x256": 1.2, "cnn16-2": 1.5}  # the per-example Gram in SGD steps (issue 25)


def sgd_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, backward, update) on (x, y), lr 0: same cost, weights unchanged."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    def sgd_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return sgd_step


def gram_case(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, goals: dict[str, float],
              repeat: int) -> list[Row]:
    """Rows for one model: the per-example Gram on (x, y) against each baseline. The Gram, vmap
    and the SGD step are timed interleaved (best of ``repeat``), the naive loop once; the step row
    is the Gram in SGD steps (Gram / step, lower is better, goal ``goals["one SGD step"]``)."""
    device = x.device
    timed = {"per-example gram": lambda: probes.per_example_gram(model, F.cross_entropy, x, y),
             "torch.func vmap (chunks of 32)": lambda: vmap_per_example_gram(
                 model, F.cross_entropy, x, y, chunk_size=32),
             "one SGD step": sgd_step_fn(model, x, y)}
    seconds = dict(zip(timed, interleaved_best_seconds(list(timed.values()), device, repeat)))
    seconds["naive loop"] = best_seconds(
        lambda: probes.naive_per_example_gram(model, F.cross_entropy, x, y), device, 1)
    gram_seconds, label = seconds.pop("per-example gram"), f"{name} per-example gram (B={x.shape[0]})"
    rows = [Row(label, str(device), gram_seconds, "s", baseline, seconds[baseline],
                goal=goals.get(baseline, math.nan))
            for baseline in ("naive loop", "torch.func vmap (chunks of 32)")]
    return rows + [Row(label, str(device), gram_seconds, "s", "one SGD step", seconds["one SGD step"], SHARE,
                       goal=goals.get("one SGD step", math.nan), lower_is_better=True,
                       note="ratio = Gram / step: the Gram's cost in SGD steps")]


def gram_rows(device: torch.device | str, quick: bool) -> list[Row]:
    """The per-example Gram of the MLP 4x256 and of CNN-16-2 against its baselines."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch = 8 if quick else 128
    cases = {"mlp4x256": ({**MLP, "width": 32 if quick else 256}, (1, 28, 28),
                          {"naive loop": 80.0, "one SGD step": GRAM_STEPS_GOAL["mlp4x256"]}),
             "cnn16-2": ({"name": "cnn", "depth": 16, "width": 1 if quick else 2},
                         (3, 8, 8) if quick else (3, 32, 32),
                         {"naive loop": 10.0 if device.type == "cuda" else 2.0,
                          "one SGD step": GRAM_STEPS_GOAL["cnn16-2"]})}
    rows = []
    for name, (model_cfg, shape, goals) in cases.items():
        model = build_model(OmegaConf.create(model_cfg), shape, 10).to(device)
        x = torch.randn(batch, *shape, generator=generator).to(device)
        y = torch.randint(0, 10, (batch,), generator=generator).to(device)
        rows += gram_case(name, model, x, y, goals, 1 if quick else 30 if name == "mlp4x256" else 3)
    return rows


def layer_macs(captured: gram.Captured) -> tuple[int, int]:
    """Multiply-adds of one Linear/Conv2d layer: (its forward, its Gram term as chosen)."""
    costs = gram.method_costs(captured)
    module, batch = captured.module, captured.inputs.shape[0]
    outputs, fan_in = module.weight.shape[0], module.weight[0].numel()
    positions = captured.output_grad[0].numel() // outputs
    term = (batch * batch * (fan_in + outputs) if isinstance(module, nn.Linear) and captured.inputs.dim() == 2
            else batch * min(costs.values()))
    return batch * outputs * fan_in * positions, term


def gram_breakdown_rows(device: torch.device | str, quick: bool) -> list[Row]:
    """Where the per-example Gram's time goes, CNN-16-2 and MLP 4x256 (B = 128), each stage timed
    interleaved with one SGD step (ratio = stage / step, in SGD steps; best of a few calls):
    the forward alone (no graph), the Gram's hooked pass (forward + backward of the output
    gradients, no weight gradient), and its per-layer terms summed by layer kind (Conv2d:
    per-example weight gradients and their G G^T; Linear: the kernel identity; BatchNorm). The
    note gives each stage's multiply-adds over the step's (forward F, step 3 F less the first
    layer's input gradient): what the arithmetic alone would predict."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch = 8 if quick else 128
    cases = {"cnn16-2": ({"name": "cnn", "depth": 16, "width": 1 if quick else 2},
                         (3, 8, 8) if quick else (3, 32, 32), 1 if quick else 3),
             "mlp4x256": ({**MLP, "width": 32 if quick else 256}, (1, 28, 28), 1 if quick else 30)}
    rows = []
    for name, (model_cfg, shape, repeat) in cases.items():
        model = build_model(OmegaConf.create(model_cfg), shape, 10).to(device)
        x = torch.randn(batch, *shape, generator=generator).to(device)
        y = torch.randint(0, 10, (batch,), generator=generator).to(device)
        rows += breakdown_case(name, model, x, y, repeat)
    return rows


def breakdown_case(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeat: int) -> list[Row]:
    """gram_breakdown_rows for one model on (x, y)."""
    device = x.device
    with gram.eval_mode(model):
        captured = gram.hooked_pass(model, F.cross_entropy, x, y)
    kinds: dict[str, list[gram.Captured]] = {}
    for layer in captured:
        kind = "BatchNorm" if isinstance(layer.module, gram.BATCH_NORMS) else type(layer.module).__name__
        kinds.setdefault(kind, []).append(layer)
    macs = {kind: [layer_macs(c) for c in layers] for kind, layers in kinds.items() if kind != "BatchNorm"}
    forward = sum(f for pairs in macs.values() for f, _ in pairs)
    backward = forward - layer_macs(captured[0])[0]  # output gradients: no input gradient of layer 1
    step_macs = forward + backward + forward  # + the weight gradients

    def forward_only() -> None:
        with torch.no_grad(), gram.eval_mode(model):
            model(x)

    def hooked() -> None:
        with gram.eval_mode(model):
            gram.hooked_pass(model, F.cross_entropy, x, y)

    stages = {"forward (no graph)": (forward_only, forward),
              "hooked pass: forward + output-gradient backward": (hooked, forward + backward)}
    for kind, layers in kinds.items():
        stages[f"{kind} terms ({len(layers)} layers): per-example grads + Gram"] = (
            partial(lambda ls: [gram.layer_gram(c) for c in ls], layers),
            sum(t for _, t in macs.get(kind, [])))
    stages["whole per-example Gram"] = (
        lambda: probes.per_example_gram(model, F.cross_entropy, x, y),
        forward + backward + sum(t for pairs in macs.values() for _, t in pairs))
    fns = [sgd_step_fn(model, x, y)] + [fn for fn, _ in stages.values()]
    step_seconds, *seconds = interleaved_best_seconds(fns, device, repeat)
    return [Row(f"{name} Gram breakdown (B={x.shape[0]}): {stage}", str(device), stage_seconds, "s",
                "one SGD step", step_seconds, SHARE, lower_is_better=True,
                note=f"multiply-adds {stage_macs / 1e9:.3g}G = {stage_macs / step_macs:.2f} of "
                     f"the step's {step_macs / 1e9:.3g}G")
            for (stage, (_, stage_macs)), stage_seconds in zip(stages.items(), seconds)]


def gram_method_rows(device: torch.device | str, quick: bool) -> list[Row]:
    """CNN-16-2, B=128: the per-example Gram's per-layer method as chosen today (a count of
    multiply-adds, tuned on a CPU) against the faster of "kernel" and "materialise" timed layer by
    layer on this device (both exact; a method with 20 times the other's count is not timed).
    ratio >= 1: how much a timed choice would save; near 1, the count already chooses well here.
    The measurement a GPU session needs to decide whether to choose by timing."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch, shape = (8, (3, 8, 8)) if quick else (128, (3, 32, 32))
    model = build_model(OmegaConf.create({"name": "cnn", "depth": 16, "width": 1 if quick else 2}),
                        shape, 10).to(device).eval()
    x = torch.randn(batch, *shape, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    captured = [c for c in gram.hooked_pass(model, F.cross_entropy, x, y)
                if isinstance(c.module, (nn.Linear, nn.Conv2d))]
    rule = best = 0.0
    for layer in captured:
        costs = gram.method_costs(layer)
        # a method with 20 times the other's multiply-adds cannot win: it is not timed
        methods = [m for m in costs if costs[m] <= 20 * min(costs.values())]
        times = {m: best_seconds(partial(gram.layer_gram, layer, method=m), device, 1 if quick else 3)
                 for m in methods}
        rule, best = rule + times[min(costs, key=costs.get)], best + min(times.values())
    return [Row(f"cnn16-2 Gram terms (B={batch}): per-layer method by count vs by timing",
                str(device), best, "s", "chosen by multiply-add count", rule,
                note=f"{len(captured)} Linear/Conv2d layers; ratio > 1: timing would choose better")]


def probe_seconds(trainer: Trainer, device: torch.device, pairs: int, group: int = 1) -> float:
    """Seconds per pair of mini-batches of the Trainer's confusion probe, rebuilt with ``pairs``
    pairs and ``group`` (the Trainer's own probe and its settings untouched), measured on the
    Trainer's ProbeContext with TF32 off, as Trainer.probe runs it."""
    settings = OmegaConf.merge(trainer.probes[0].settings, {"pairs": pairs, "group": group})
    probe = probes.PROBES[settings.mode](settings)

    def measure():
        with exact_matmul(device):
            probe.measure(trainer.probe_context)

    return best_seconds(measure, device, 1) / pairs


def probe_group_row(trainer: Trainer, device: torch.device, name: str, group: int,
                    pairs: int) -> tuple[Row, float]:
    """The probe's mini-batch gradients ``group`` at a time (vmapped) vs one backward pass each
    (the default, probe.group=1): the row, and the seconds per pair at group 1."""
    single = probe_seconds(trainer, device, pairs, group=1)
    grouped = probe_seconds(trainer, device, pairs, group=group)
    return Row(f"{name} probe pairs, group {group} vs 1", str(device), grouped, "s",
               "group=1 (a backward each)", single, note="ratio > 1: grouping is faster"), single


def probe_vs_epoch_row(name: str, epoch: str, device: torch.device, pair_seconds: float,
                       epoch_seconds: float, goal: float = math.nan) -> Row:
    """The paper's probe (PAPER_PAIRS pairs) against one training epoch (ratio = probe/epoch)."""
    return Row(f"{name} probe({PAPER_PAIRS} pairs) vs {epoch}", str(device), PAPER_PAIRS * pair_seconds,
               "s", "one epoch", epoch_seconds, SHARE, goal=goal, lower_is_better=True,
               note="ratio = probe/epoch")


def mlp_probe_rows(trainer: Trainer, images_per_s: float, device: torch.device, quick: bool) -> list[Row]:
    """MNIST MLP 4x256 (``trainer``, training at ``images_per_s``): the paper's probe vs an MNIST
    epoch, and the probe's mini-batch gradients 16 at a time vs one backward pass each."""
    group, single = probe_group_row(trainer, device, "mlp4x256", 16, 4 if quick else 20)
    epoch = 128 / images_per_s * MNIST_STEPS_PER_EPOCH
    return [probe_vs_epoch_row("mlp4x256", "MNIST epoch", device, single, epoch), group]


def cnn_probe_group(device: torch.device, quick: bool, group: int = 8) -> list[Row]:
    """CNN-16-2: the probe's mini-batch gradients ``group`` at a time vs one backward pass each."""
    data = cifar_like(device, 64 if quick else 512, size=8 if quick else 32)
    depth = 10 if quick else 16
    trainer = trainer_for({"name": "cnn", "depth": depth, "width": 2}, data, device,
                          probe={"batch_size": 16} if quick else None)
    return [probe_group_row(trainer, device, f"cnn{depth}-2", group, group // 2)[0]]

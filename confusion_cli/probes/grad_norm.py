"""The gradient norm of mini-batches: |g_B|, the size of the step SGD would take on batch B (times
the LR). ``batches`` mini-batches of ``batch_size`` examples, drawn with the probe generator,
BatchNorm in train mode with running statistics untouched (the gradient an SGD step takes).

Scalars: ``grad_norm`` (the mean over the batches), ``grad_norm_min``, ``grad_norm_max``.
"""

from __future__ import annotations

import torch

from .base import Probe, ProbeContext, Samples, Scalars, fits, positive_int, register
from .naive import flat_gradients, train_mode_frozen_stats


@register("grad_norm")
class GradNorm(Probe):
    def check(self, train_size: int) -> None:
        for key in ("batches", "batch_size"):
            positive_int(self.settings, key, "extra_probes.grad_norm")
        fits(self.settings, "batch_size", "extra_probes.grad_norm", train_size)

    def memory(self, params: int, example_floats: int) -> tuple[int, str]:
        batches = self.settings.batches  # the batches and their flat gradients, all held at once
        floats = batches * (self.settings.batch_size * example_floats + params)
        return 4 * floats, "extra_probes.grad_norm.batches"

    def measure(self, ctx: ProbeContext) -> tuple[Scalars, Samples]:
        batches = [ctx.batch(self.settings.batch_size) for _ in range(self.settings.batches)]
        with train_mode_frozen_stats(ctx.model):
            norms = torch.linalg.vector_norm(flat_gradients(ctx.model, ctx.loss_fn, batches), dim=1)
        norms = norms.double().cpu()
        return {"grad_norm": norms.mean().item(), "grad_norm_min": norms.min().item(),
                "grad_norm_max": norms.max().item()}, {}

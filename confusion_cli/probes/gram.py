"""Per-example Gram matrices <g_i, g_j> without a backward pass per example.

One forward pass (eval mode, see bn_convention) records each layer's input a, one backward pass
of the SUM of the per-example losses, B * loss_fn(out, y), records the gradient d of each
layer's output. Examples being independent in eval mode, d_i is exactly the gradient of
example i's own loss with respect to layer output i, and the Gram matrix is a sum over layers
of exact per-layer terms (the layer's per-example gradient is a function of a_i and d_i only):

- Linear and Conv2d: with A_i the (F, L) input patches of example i (F = fan-in, L positions:
  1 for a Linear on vectors, the unfolded output pixels of a Conv2d) and D_i the (O, L) output
  gradients, the per-example weight gradient is G_i = D_i A_i^T and the bias gradient D_i 1, so

      <G_i, G_j> = sum_{l, l'} (A_i^T A_j)_{l l'} (D_i^T D_j)_{l l'},   <D_i 1, D_j 1>.

  Two exact ways to evaluate the weight term, chosen per layer by multiply-add count:
  "kernel" products of the two (L, L) patch kernels, B^2 L^2 (F + O) (for L = 1 the identity
  (d_i . d_j)(a_i . a_j): no per-example gradient at all), or "materialise" G_i
  and take G G^T, B L O F + B^2 O F (cheaper for convolutions on images). A Conv2d with more
  than PATCH_POSITIONS output pixels computes all G_i in one grouped convolution
  weight-gradient call (examples stacked as groups); one with fewer (the last stages of a
  CNN, where that call is slow on a CPU) one batched matmul of D with channels-last patches,
  gathered by one strided copy (F.unfold is slower still), and its G G^T is built column block by
  column block while each block is in cache (``_patch_gram``). A Linear on vectors takes
  (a_i . a_j + 1)(d_i . d_j) (the 1: its bias). `make bench` times the Gram paths.
- BatchNorm1d/2d in eval mode, y = x_hat * w + b with x_hat = (x - running_mean) /
  sqrt(running_var + eps): per-example gradients sum_l d_il x_hat_il (weight) and
  sum_l d_il (bias), materialised (2 C numbers per example).

Examples are processed ``chunk_size`` at a time within a layer (blocks of the Gram, see
naive.blocked_gram) to bound memory. Models with any other parameterised module, a module
called twice, or convolutions unfold cannot express (groups, padding modes) take the
torch.func path (func.vmap_per_example_gram), as do inputs that are not floating point; a
model holding one module at two places takes the naive loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .func import vmap_per_example_gram
from .naive import LossFn, blocked_gram, eval_mode, naive_per_example_gram

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
CHUNK_BUDGET = 1 << 26  # automatic chunk size: elements of per-chunk intermediates of one layer
PATCH_POSITIONS = 128  # a Conv2d with at most this many output pixels: per-example grads by patches
COLUMN_BLOCK = 1 << 20  # _patch_gram: entries of the per-example gradients formed at once
PATCH_FAN_IN = 32  # a Conv2d with at most this fan-in (a first layer on RGB): by patches too


@dataclass
class Captured:
    """One layer call: its input, and the gradient of the summed loss w.r.t. its output."""

    module: nn.Module
    inputs: torch.Tensor
    input_version: int
    output_grad: torch.Tensor | None = None


def _supported(module: nn.Module) -> bool:
    """Whether the per-layer identities cover ``module``'s own trainable parameters."""
    if not any(p.requires_grad for p in module.parameters(recurse=False)):
        return True
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return isinstance(module, BATCH_NORMS) and module.running_mean is not None


def _flags(module: nn.Module) -> tuple[bool, bool]:
    """(weight trainable, bias present and trainable)."""
    return module.weight.requires_grad, module.bias is not None and module.bias.requires_grad


def _patches(module: nn.Module, inputs: torch.Tensor, output_grad: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, D): inputs as (B, F, L) patches and output gradients as (B, O, L), for Linear/Conv2d."""
    batch = inputs.shape[0]
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding, module.stride)
        return patches, output_grad.reshape(batch, output_grad.shape[1], -1)
    return (inputs.reshape(batch, -1, inputs.shape[-1]).transpose(1, 2),
            output_grad.reshape(batch, -1, output_grad.shape[-1]).transpose(1, 2))


def _weight_grads(module: nn.Module, inputs: torch.Tensor, output_grad: torch.Tensor) -> torch.Tensor:
    """(B, *weight.shape): the per-example weight gradients G_i = D_i A_i^T of a Linear/Conv2d.

    For a Conv2d, one grouped convolution weight-gradient call: the B examples stacked along the
    channels, with B times the layer's groups, give the B per-example gradients at once.
    """
    batch = inputs.shape[0]
    if isinstance(module, nn.Conv2d):
        weight_shape = (batch * module.weight.shape[0], *module.weight.shape[1:])
        grads = torch.nn.grad.conv2d_weight(
            inputs.reshape(1, -1, *inputs.shape[2:]), weight_shape,
            output_grad.reshape(1, -1, *output_grad.shape[2:]), module.stride, module.padding,
            module.dilation, batch * module.groups)
        return grads.view(batch, *module.weight.shape)
    patches, grads = _patches(module, inputs, output_grad)
    return torch.bmm(grads, patches.transpose(1, 2))


def _padded_channels_last(module: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """(B, H + 2 pad_h, W + 2 pad_w, C): a zero-padded channels-last copy of a Conv2d's input."""
    batch, channels, height, width = inputs.shape
    pad_h, pad_w = module.padding
    padded = inputs.new_zeros(batch, height + 2 * pad_h, width + 2 * pad_w, channels)
    padded[:, pad_h:pad_h + height, pad_w:pad_w + width] = inputs.permute(0, 2, 3, 1)
    return padded


def _channels_last_patches(module: nn.Conv2d, inputs: torch.Tensor, positions: tuple[int, int]
                           ) -> torch.Tensor:
    """(B, L, kh kw C) input patches of a Conv2d, each row ordered (kh, kw, C), from a zero-padded
    channels-last copy of the input: one strided copy whose innermost run is C contiguous numbers
    (F.unfold's (C, kh, kw) rows are far slower to gather on a CPU)."""
    batch, channels = inputs.shape[:2]
    padded = _padded_channels_last(module, inputs)
    (dil_h, dil_w), (str_h, str_w) = module.dilation, module.stride
    (k_h, k_w), (out_h, out_w) = module.kernel_size, positions
    row, pixel = padded.stride(1), padded.stride(2)
    view = padded.as_strided((batch, out_h, out_w, k_h, k_w, channels),
                             (padded.stride(0), str_h * row, str_w * pixel, dil_h * row, dil_w * pixel, 1))
    return view.reshape(batch, out_h * out_w, k_h * k_w * channels)


def _offset_patches(module: nn.Conv2d, padded: torch.Tensor, positions: tuple[int, int]
                    ) -> Iterator[torch.Tensor]:
    """The (B, L, C) columns of the channels-last patches (``_channels_last_patches``) for each
    kernel offset in turn, (0, 0), (0, 1), ...: the input pixels that offset reads, gathered from
    ``padded`` (``_padded_channels_last``) one offset at a time."""
    (dil_h, dil_w), (str_h, str_w) = module.dilation, module.stride
    (k_h, k_w), (out_h, out_w) = module.kernel_size, positions
    for i in range(k_h):
        for j in range(k_w):
            rows = slice(i * dil_h, i * dil_h + (out_h - 1) * str_h + 1, str_h)
            cols = slice(j * dil_w, j * dil_w + (out_w - 1) * str_w + 1, str_w)
            yield padded[:, rows, cols].reshape(padded.shape[0], out_h * out_w, padded.shape[3])


def _by_patches(module: nn.Module, output_grad: torch.Tensor) -> bool:
    """Whether a layer's per-example weight gradients are taken from channels-last patches (a
    Conv2d with at most PATCH_POSITIONS output pixels, or with a fan-in of at most PATCH_FAN_IN,
    where the grouped convolution has little work per group) rather than _weight_grads."""
    return (isinstance(module, nn.Conv2d) and module.groups == 1
            and (output_grad.shape[2] * output_grad.shape[3] <= PATCH_POSITIONS
                 or module.weight[0].numel() <= PATCH_FAN_IN))


def _flat_weight_grads(module: nn.Module, inputs: torch.Tensor, output_grad: torch.Tensor) -> torch.Tensor:
    """(B, P): the per-example weight gradients of a Linear/Conv2d as rows, their entries in an
    order of this function's choosing (the same for every example, so inner products are exact).

    A Conv2d with at most PATCH_POSITIONS output pixels: a batched matmul of the output
    gradients with channels-last patches (entries ordered (O, kh, kw, C)); with more, the
    grouped-convolution weight gradient (_weight_grads), faster there.
    """
    batch = inputs.shape[0]
    if _by_patches(module, output_grad):
        patches = _channels_last_patches(module, inputs, tuple(output_grad.shape[2:]))
        grads = output_grad.reshape(batch, output_grad.shape[1], -1)
        return torch.bmm(grads, patches).view(batch, -1)
    return _weight_grads(module, inputs, output_grad).flatten(1)


def _patch_gram(module: nn.Conv2d, inputs: torch.Tensor, output_grad: torch.Tensor) -> torch.Tensor:
    """(B, B) Gram of the per-example weight gradients of a Conv2d taken by patches
    (``_by_patches``), built column block by column block: the gradients' entries for a block of
    patch columns, for every example, then that block's G G^T added in. The same products as
    _flat_weight_grads then G G^T, but each block is multiplied while it is still in cache instead
    of writing all B O F entries out and reading them back (about a third faster on the last stage
    of CNN-16-2 on a CPU, `make bench`). Blocks are the kernel offsets, their patch columns
    gathered one offset at a time, where an offset's block (B O C entries) is at least half of
    COLUMN_BLOCK; else COLUMN_BLOCK / (B O) columns of the whole patch matrix at a time."""
    batch, channels, outputs = inputs.shape[0], inputs.shape[1], output_grad.shape[1]
    positions = tuple(output_grad.shape[2:])
    grads = output_grad.reshape(batch, outputs, -1)
    if batch * outputs * channels >= COLUMN_BLOCK // 2:
        columns = _offset_patches(module, _padded_channels_last(module, inputs), positions)
    else:
        patches = _channels_last_patches(module, inputs, positions)
        width = max(1, COLUMN_BLOCK // (batch * outputs))
        columns = (patches[:, :, start:start + width] for start in range(0, patches.shape[2], width))
    gram = None
    for part in columns:
        block = torch.bmm(grads, part).view(batch, -1)
        gram = block @ block.T if gram is None else gram.addmm_(block, block.T)
    return gram


def method_costs(captured: Captured) -> dict[str, int]:
    """Multiply-adds per example of the two exact ways to a Linear/Conv2d layer's Gram term:
    "kernel" (patch kernels, B L^2 (F + O)) and "materialise" (per-example gradients, O F (L + B))."""
    module, batch = captured.module, captured.inputs.shape[0]
    outputs, fan_in = module.weight.shape[0], module.weight[0].numel()
    positions = captured.output_grad[0].numel() // outputs
    return {"kernel": batch * positions * positions * (fan_in + outputs),
            "materialise": outputs * fan_in * (positions + batch)}


def layer_gram(captured: Captured, chunk_size: int | None = None,
               method: str | None = None) -> torch.Tensor:
    """This layer's term of the (B, B) per-example Gram (see the module docstring).

    ``method``: "kernel" or "materialise" for Linear/Conv2d; None picks the cheaper one.
    """
    module, inputs, output_grad = captured.module, captured.inputs, captured.output_grad
    batch = inputs.shape[0]
    with_weight, with_bias = _flags(module)
    if isinstance(module, BATCH_NORMS):
        shape = (1, -1) + (1,) * (inputs.dim() - 2)
        x_hat = (inputs - module.running_mean.view(shape)) * torch.rsqrt(
            module.running_var + module.eps).view(shape)
        vectors = torch.cat([grad.reshape(batch, grad.shape[1], -1).sum(2) for grad, trained in
                             ((output_grad * x_hat, with_weight), (output_grad, with_bias)) if trained],
                            dim=1)
        return vectors @ vectors.T
    if isinstance(module, nn.Linear) and inputs.dim() == 2 and method != "materialise":
        # one position: <G_i, G_j> = (a_i . a_j)(d_i . d_j), the bias adding 1 to a_i . a_j
        kernel_d = output_grad @ output_grad.T
        if not with_weight:
            return kernel_d
        kernel_a = inputs @ inputs.T
        return (kernel_a.add_(1) if with_bias else kernel_a).mul_(kernel_d)
    outputs, fan_in = module.weight.shape[0], module.weight[0].numel()
    positions = output_grad[0].numel() // outputs
    if method is None:
        costs = method_costs(captured)
        method = min(costs, key=costs.get)
    materialise = method == "materialise"

    def flat_grads(start: int, end: int) -> list[torch.Tensor]:
        """Per-example (weight, bias) gradients as flat rows; kept apart, not concatenated (a
        copy as large as all the per-example weight gradients): their Grams simply add."""
        grads = output_grad[start:end]
        parts = [_flat_weight_grads(module, inputs[start:end], grads)] if with_weight else []
        if with_bias:
            parts.append(grads.reshape(end - start, outputs, -1).sum(2))
        return parts

    def flat_inner(u: list[torch.Tensor], v: list[torch.Tensor]) -> torch.Tensor:
        return sum(a @ b.T for a, b in zip(u, v))

    def patches(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _patches(module, inputs[start:end], output_grad[start:end])

    def kernel_inner(u: tuple[torch.Tensor, torch.Tensor], v: tuple[torch.Tensor, torch.Tensor]
                     ) -> torch.Tensor:
        """sum_{l,l'} (A_i^T A_j)_{ll'} (D_i^T D_j)_{ll'} [+ bias term] for i in u, j in v."""
        (a_u, d_u), (a_v, d_v) = u, v
        block = d_u.sum(2) @ d_v.sum(2).T if with_bias else 0
        if with_weight:
            kernel_a = _positions_first(a_u) @ _positions_first(a_v).T
            kernel_d = _positions_first(d_u) @ _positions_first(d_v).T
            block = block + (kernel_a * kernel_d).view(
                a_u.shape[0], positions, a_v.shape[0], positions).sum((1, 3))
        return block

    if chunk_size is None:
        per_example = (max(outputs, positions) * fan_in if materialise
                       else positions * positions * batch)
        chunk_size = max(1, min(batch, CHUNK_BUDGET // per_example))
    if materialise and with_weight and chunk_size >= batch and _by_patches(module, output_grad):
        bias = output_grad.reshape(batch, outputs, -1).sum(2) if with_bias else None
        weight = _patch_gram(module, inputs, output_grad)
        return weight if bias is None else weight.addmm_(bias, bias.T)
    if materialise:
        return blocked_gram(flat_grads, batch, chunk_size, flat_inner)
    return blocked_gram(patches, batch, chunk_size, kernel_inner)


def _positions_first(patches: torch.Tensor) -> torch.Tensor:
    """(B, F, L) -> (B L, F): one row per (example, position)."""
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def hooked_pass(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
                 ) -> list[Captured] | None:
    """Forward and backward with layer hooks; None where the per-layer identities do not apply."""
    captured: list[Captured] = []

    def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        record = Captured(module, args[0].detach(), args[0]._version)
        captured.append(record)

        def grad_hook(grad: torch.Tensor) -> None:
            # fires with the gradient w.r.t. the output as the layer produced it, even when a later
            # in-place op (an inplace ReLU) modified the tensor: autograd's documented behaviour
            record.output_grad = grad

        output.register_hook(grad_hook)

    layers = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(forward_hook) for m in layers]
    try:
        inputs = x.detach().requires_grad_()
        loss = loss_fn(model(inputs), y) * x.shape[0]  # sum of the per-example losses
        # Output gradients only, no weight gradient: the backward runs down to the first layer's
        # bias when it has one (its gradient is a sum; the first layer's input gradient, a
        # matrix product as large as the layer, is never formed), else down to the input.
        first_bias = getattr(captured[0].module, "bias", None) if captured else None
        if isinstance(first_bias, nn.Parameter) and first_bias.requires_grad:
            torch.autograd.grad(loss, first_bias, retain_graph=True)
        if any(c.output_grad is None for c in captured):  # a layer not downstream of the first
            torch.autograd.grad(loss, inputs)
    finally:
        for handle in handles:
            handle.remove()
    if (len(captured) != len(layers) or any(c.output_grad is None for c in captured)
            or any(c.inputs._version != c.input_version for c in captured)):
        return None
    return captured


def per_example_gram(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                     chunk_size: int | None = None) -> torch.Tensor:
    """(B, B) Gram matrix <g_i, g_j> of per-example gradients, exact, in eval mode.

    g_i is the gradient of ``loss_fn`` (mean-reduced) on example i alone, over the trainable
    parameters. ``chunk_size`` bounds the examples whose per-layer intermediates are held at
    once (None: automatic, from CHUNK_BUDGET); the result does not depend on it.
    """
    with eval_mode(model):
        captured = None
        if x.is_floating_point() and all(_supported(m) for m in model.modules()):
            captured = hooked_pass(model, loss_fn, x, y)
        if captured is not None:
            return sum(layer_gram(c, chunk_size) for c in captured)
        if len(list(model.named_modules(remove_duplicate=False))) != len(list(model.modules())):
            # torch.func.functional_call does not give a module reachable at two paths its
            # parameters back afterwards (torch 2.x): such models take the plain loop
            return naive_per_example_gram(model, loss_fn, x, y)
        return vmap_per_example_gram(model, loss_fn, x, y, chunk_size=chunk_size)
